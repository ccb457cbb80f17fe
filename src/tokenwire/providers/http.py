"""HTTP providers: any registered wire protocol's endpoint, on aiohttp's client.

One class for every protocol: the :class:`~tokenwire.llm.protocol.WireProtocol` says how
to write the request, where to send it, how to authenticate and how to decode the
stream. Used by agents (``stream``) and the gateway (``open``, with the upstream's wire
bytes for pass-through).

Why aiohttp: its C (llhttp) parser, keep-alive pooling that never reuses a connection
with unread bytes, interim (1xx) responses skipped as HTTP requires, bounded response
heads, and the least CPU per request of the maintained asyncio clients measured
(``benchmarks/bench_upstream_client.py``), which is the gateway's added latency.

Bounds: the response head (``MAX_HEADERS`` lines of at most ``MAX_HEADER_LINE`` bytes),
the body (``max_reply_bytes``: a longer reply ends with an ``api_error``), the time to
connect (``connect_timeout``) and the number of open connections
(``max_connections``). How long to wait for the head and the body is the caller's
deadline (a route's or an agent's first-token, idle and total timeouts). A proxy comes
from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``), looked up once: aiohttp's own
lookup (``trust_env``) reads the environment and ``~/.netrc`` in a worker thread on
every request, which multiplied the added latency under load. Cookies are never kept,
so nothing one reply sets reaches another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.request
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl
from multidict import CIMultiDict

from tokenwire.errors import StreamError
from tokenwire.llm.model import Delta
from tokenwire.llm.protocol import WireProtocol, get_protocol
from tokenwire.llm.requests import ChatRequest, with_extra
from tokenwire.providers.base import Item, ProviderRequest, first_token_items, stream_deltas
from tokenwire.sse import SSEDecoder

if TYPE_CHECKING:
    from tokenwire.config import ProviderConfig

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "HTTPProvider",
    "Secret",
]

DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
MAX_HEADERS = 128  # response head lines an upstream may send
MAX_HEADER_LINE = 8190  # bytes per status or header line (so a head is at most ~1 MiB)
_MAX_ERROR_BODY = 64 * 1024  # of an error reply, read for its message
_MAX_URLS = 256  # parsed URLs kept per provider, for protocols whose URL names the model


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
    """An endpoint that speaks ``protocol`` (a registered protocol's name or object):
    ``base_url`` plus the protocol's path (OpenAI: ``https://api.openai.com/v1`` +
    ``/chat/completions``; Anthropic: ``https://api.anthropic.com`` + ``/v1/messages``;
    protocols that name the model in the path make it per request, see
    :meth:`~tokenwire.llm.protocol.WireProtocol.upstream_url`).

    ``api_key`` is sent the protocol's way (``Authorization: Bearer``, ``x-api-key``,
    ...); ``headers`` are added to every request; ``options`` are the protocol's extra
    provider settings (Anthropic's ``anthropic_version``). The key never appears in a
    repr, log or error, and is scrubbed from errors that echo it.
    """

    def __init__(
        self,
        name: str,
        *,
        protocol: str | WireProtocol,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        connect_timeout: float | None = 10.0,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_connections: int = 0,
    ) -> None:
        self.name = name
        self.wire = protocol if isinstance(protocol, WireProtocol) else get_protocol(protocol)
        self.protocol: str | None = self.wire.name
        self.base_url = base_url.rstrip("/")
        # The endpoint (for a protocol whose URL names the model: its template, which
        # still tells the host).
        self.url = self.base_url + self.wire.upstream_path
        self._key = Secret(api_key) if api_key else None
        self.secret = api_key.encode("utf-8", "surrogateescape") if api_key else None
        # Parsed once, not per request; when the protocol's URL depends on the request,
        # once per model (``_urls``, bounded: clients may name any number of models).
        fixed = type(self.wire).upstream_url is WireProtocol.upstream_url
        self._url: yarl.URL | None = yarl.URL(self.url) if fixed else None
        self._urls: dict[str, yarl.URL] = {}
        # Only opening a connection is bounded here (sock_connect: no timer at all for a
        # pooled one); everything else by the caller's deadlines.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=connect_timeout
        )
        self._max_reply_bytes = max_reply_bytes
        self._max_connections = max_connections
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aiohttp.ClientSession
        ] = weakref.WeakKeyDictionary()
        # Holds the key: built once, never logged.
        self._headers = CIMultiDict(
            {
                **dict(headers or {}),
                **self.wire.auth_headers(api_key, options or {}),
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                # Compression would only delay events (and invite decompression bombs).
                "Accept-Encoding": "identity",
            }
        )
        proxy = _proxy_for(self.url)
        self._proxy = yarl.URL(proxy) if proxy else None

    @classmethod
    def from_config(
        cls,
        config: ProviderConfig,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_connections: int = 0,
    ) -> HTTPProvider:
        """Build from configuration, reading the key from ``api_key_env`` now
        (:class:`~tokenwire.config.ConfigError` if it is unset)."""
        assert config.base_url is not None
        return cls(
            config.name,
            protocol=config.protocol,
            base_url=config.base_url,
            api_key=config.api_key(),
            headers=config.headers,
            options=config.options,
            connect_timeout=config.timeouts.connect,
            max_reply_bytes=max_reply_bytes,
            max_connections=max_connections,
        )

    def __repr__(self) -> str:
        key = "set" if self._key else "none"
        return (
            f"HTTPProvider(name={self.name!r}, protocol={self.protocol!r}, "
            f"base_url={self.base_url!r}, key={key})"
        )

    def _session(self) -> aiohttp.ClientSession:
        # A session belongs to the event loop that made it; agents and tests use several.
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=60
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
                max_headers=MAX_HEADERS,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[loop] = session
        return session

    # -- the provider interface -----------------------------------------------------------

    async def open(
        self,
        request: ChatRequest,
        *,
        raw: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Item]:
        """Send ``request``; once the upstream answered, return its items (see
        :class:`~tokenwire.providers.base.Provider`). ``headers`` are added to this
        request only (the gateway's trace context), over the provider's own."""
        try:
            # Fields written in the upstream's own protocol (vendor extensions) go as sent.
            body = orjson.dumps(
                with_extra(self.wire.write_request(request), request, self.wire.name)
            )
        except orjson.JSONEncodeError as exc:  # e.g. tool schemas nested too deeply
            raise StreamError(
                "invalid_request", f"the request cannot be encoded: {exc}", status=400
            ) from None
        sent = self._headers
        if headers:
            sent = sent.copy()
            sent.update(headers)
        url = self._url
        if url is None:
            url = self._url_for(request)
        try:
            response = await self._session().post(
                url,
                data=body,
                headers=sent,
                allow_redirects=False,
                proxy=self._proxy,
            )
        except aiohttp.ClientError as exc:
            raise self.scrub(_client_error(exc)) from None
        content_type = response.headers.get("content-type", "")
        if response.status != 200 or not content_type.startswith("text/event-stream"):
            try:
                data = await _read_bounded(response, _MAX_ERROR_BODY)
            except aiohttp.ClientError:
                data = b""
            finally:
                response.close()
            if response.status == 200:
                raise StreamError(
                    "api_error",
                    f"upstream answered with {content_type[:100] or 'no content type'}, "
                    "not an event stream",
                    status=502,
                )
            error = StreamError.from_http_response(
                response.status, data, response.headers, provider=self.protocol
            )
            raise self.scrub(error)
        return first_token_items(self._items(response, raw))

    def _url_for(self, request: ChatRequest) -> yarl.URL:
        """The parsed URL for ``request`` on a protocol whose URL names the model."""
        urls = self._urls
        url = urls.get(request.model)
        if url is None:
            if len(urls) >= _MAX_URLS:
                del urls[next(iter(urls))]  # the oldest: a dict keeps insertion order
            url = urls[request.model] = yarl.URL(self.wire.upstream_url(self.base_url, request))
        return url

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[Delta, None]:
        """POST a conversation turn and yield the reply's deltas as they arrive.

        Raises :class:`~tokenwire.errors.StreamError` for a connection failure, an error
        response (categorized from its status, ``Retry-After`` and error body) and a
        stream cut off before its end (``network``); an error reported in the stream
        comes as an ``ErrorDelta``. Closing this generator closes the upstream response.
        """
        chat = request.to_chat(self.wire.max_stop_sequences)
        if not self.wire.accepts_seed:
            chat.seed = None  # the agent's seed is a wish, not part of the request
        async with contextlib.aclosing(stream_deltas(await self.open(chat))) as deltas:
            async for delta in deltas:
                yield delta

    async def _items(
        self, response: aiohttp.ClientResponse, raw: bool
    ) -> AsyncGenerator[Item, None]:
        sse = SSEDecoder()
        decoder = self.wire.decoder()
        feed = decoder.feed
        read = response.content.readany
        left = self._max_reply_bytes
        try:
            while chunk := await read():
                left -= len(chunk)
                if left < 0:
                    raise StreamError(
                        "api_error",
                        f"the upstream's reply is larger than {self._max_reply_bytes} bytes "
                        "(max_reply_bytes)",
                        code="reply_too_large",
                        status=502,
                    )
                for event in sse.feed(chunk):
                    if raw:
                        if event.id is not None:
                            # The client's Last-Event-ID must be the gateway's, never the
                            # upstream's (resumption goes by the gateway's ids).
                            event = dataclasses.replace(event, id=None)
                        yield event.encode(), feed(event)
                    else:
                        yield None, feed(event)
                    if decoder.done:
                        return
            decoder.close()  # a stream cut before its end marker raises StreamError here
        except aiohttp.ClientError as exc:
            raise _client_error(exc) from None
        finally:
            # A finished body returns the connection to the pool; anything else closes it.
            if decoder.done and response.content.at_eof():
                response.release()
            else:
                response.close()

    async def aclose(self) -> None:
        """Close the connection pool of the current event loop."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def scrub(self, exc: StreamError) -> StreamError:
        """``exc`` without this provider's key in it. Some servers echo the credentials
        they rejected; those never pass on (nor the cause, whose text holds the body)."""
        key = self._key.reveal() if self._key is not None else None
        if key and _mentions(exc, key):
            return _scrubbed(exc, key)
        return exc


def _proxy_for(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, minus ``NO_PROXY``), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (an error body is only for the message)."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (chunk := await response.content.readany()):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)[:limit]


def _client_error(exc: aiohttp.ClientError) -> StreamError:
    """aiohttp's errors as stream errors: the upstream could not be reached or timed out
    connecting (network / timeout, 502 / 504), or it sent something that is not HTTP
    (api_error, 502)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return StreamError("timeout", f"connecting to the upstream timed out: {exc}", status=504)
    if isinstance(exc, aiohttp.ClientResponseError):
        # The response parser refused the head (too long, too many lines, malformed).
        return StreamError(
            "api_error", f"invalid HTTP response from the upstream: {exc.message}", status=502
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return StreamError("network", f"the upstream's reply was cut off: {exc}")
    return StreamError("network", f"the upstream cannot be reached: {exc}", status=502)


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
