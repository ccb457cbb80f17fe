"""What the HTTP providers share: a connection pool per event loop, the request, and
the stream (tokenwire's own client, :func:`tokenwire.client.astream_chat`)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, Literal

import httpx2

from tokenwire.agent.config import ProviderConfig
from tokenwire.agent.providers.base import ProviderRequest
from tokenwire.client import astream_chat
from tokenwire.errors import StreamError
from tokenwire.llm.model import Delta
from tokenwire.llm.requests import ChatMessage, ChatRequest, TextPart

__all__ = ["HTTPProvider", "Secret"]


class Secret:
    """An API key that never shows itself in a repr, str or traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class HTTPProvider:
    """Base of the OpenAI and Anthropic providers (see their docstrings)."""

    protocol: ClassVar[Literal["openai", "anthropic"]]
    path: ClassVar[str]

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float | None = 10.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._key = Secret(api_key) if api_key else None
        self._extra_headers = dict(headers or {})
        self._timeout = httpx2.Timeout(
            connect=connect_timeout, read=None, write=connect_timeout, pool=connect_timeout
        )
        # httpx2 connections belong to the event loop that opened them, and agents are
        # used from several loops (chat_stream_sync runs on its own): one pool per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    @classmethod
    def from_config(cls, config: ProviderConfig) -> HTTPProvider:
        """Build from configuration, reading the key from ``api_key_env`` now
        (:class:`~tokenwire.agent.config.ConfigError` if it is unset)."""
        assert config.base_url is not None
        return cls(
            config.name,
            base_url=config.base_url,
            api_key=config.api_key(),
            headers=config.headers,
            connect_timeout=config.timeouts.connect,
        )

    def __repr__(self) -> str:
        key = "set" if self._key else "none"
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, key={key})"

    # -- per protocol -----------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def encode_request(self, request: ChatRequest) -> dict[str, Any]:
        """The protocol's request body for a neutral :class:`ChatRequest`."""
        raise NotImplementedError

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------

    @staticmethod
    def _neutral(request: ProviderRequest, max_stops: int | None = None) -> ChatRequest:
        opts = request.options
        stops = list(opts.stop_sequences or ())
        return ChatRequest(
            model=request.model,
            messages=[ChatMessage(t.role, [TextPart(t.content)]) for t in request.messages],
            system=request.system,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            stop=stops[:max_stops] if max_stops is not None else stops,
            stream=True,
            include_usage=True,
        )

    @property
    def url(self) -> str:
        """The streaming endpoint: ``base_url`` plus the protocol's path."""
        return self.base_url + self.path

    @property
    def secret(self) -> bytes | None:
        """The key as bytes (``None`` without one), for scrubbing upstream text that is
        forwarded to clients."""
        return self._key.reveal().encode("utf-8", "surrogateescape") if self._key else None

    def request_headers(self) -> dict[str, str]:
        """Configured headers plus authentication (holds the key: never log these)."""
        return {**self._extra_headers, **self._auth_headers()}

    def client(self) -> httpx2.AsyncClient:
        """The connection pool for the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx2.AsyncClient(timeout=self._timeout)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the connection pool of the current event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[Delta, None]:
        """POST the request and yield the reply's deltas as they arrive.

        Read with :func:`tokenwire.client.astream_chat` (tokenwire's SSE client and LLM
        decoder). Raises :class:`~tokenwire.errors.StreamError` for a connection
        failure, an error response (categorized from its status, ``Retry-After`` and
        error body), an error reported in the stream (after the deltas before it) and
        a stream cut off before its end (``network``). Closing this generator closes
        the HTTP response, i.e. the upstream connection.
        """
        chat = astream_chat(
            self.url,
            json=self._body(request),
            headers=self.request_headers(),
            protocol=self.protocol,
            client=self.client(),
            timeout=self._timeout,
        )
        try:
            async with chat:
                async for delta in chat:
                    yield delta
        except StreamError as exc:
            raise self.scrub(exc) from exc.__cause__

    def scrub(self, exc: StreamError) -> StreamError:
        """``exc`` without this provider's key in it. Some servers echo the credentials
        they rejected; those never pass on (nor the cause, whose text holds the body)."""
        key = self._key.reveal() if self._key is not None else None
        if key and _mentions(exc, key):
            return _scrubbed(exc, key)
        return exc


def _mentions(exc: BaseException, key: str) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if key in str(seen) or key in repr(getattr(seen, "body", "")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _scrubbed(exc: StreamError, key: str) -> StreamError:
    exc.message = exc.message.replace(key, "***")
    exc.args = (exc.message,)
    if hasattr(exc, "body"):
        exc.body = None
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc
