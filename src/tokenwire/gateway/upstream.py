"""Upstreams: where the gateway's requests go, as streams of (event, deltas).

An HTTP upstream (OpenAI-compatible or Anthropic) is read with aiohttp's client and
tokenwire's SSE and LLM decoders; each item carries the upstream's wire bytes when
asked for them (so a same-protocol route can pass them through untouched) and the
deltas they decoded to (for translation and metrics). The demo provider yields deltas
only.

What comes before the first token (OpenAI's role chunk, Anthropic's ``message_start``
and ``ping``) is held and delivered together with it, so that a route's first-token
deadline measures the time to the first token, as its name says.

:meth:`Upstream.open` returns only once the upstream answered: a failure before that
(connection refused, an HTTP error status) raises :class:`~tokenwire.errors.StreamError`
so that the gateway can still answer with a proper HTTP status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl
from multidict import CIMultiDict

from tokenwire.agent.config import ProviderConfig
from tokenwire.agent.options import StreamOptions
from tokenwire.agent.providers import DemoProvider, ProviderRequest, Turn, make_provider
from tokenwire.agent.providers._http import HTTPProvider
from tokenwire.errors import StreamError
from tokenwire.llm.decode import StreamDecoder
from tokenwire.llm.model import Delta, MessageStart, UsageDelta
from tokenwire.llm.requests import ChatRequest, ToolResultPart
from tokenwire.sse import SSEDecoder

__all__ = ["DEFAULT_MAX_REPLY_BYTES", "Item", "Upstream", "make_upstream"]

DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
MAX_HEADERS = 128  # response head lines an upstream may send
MAX_HEADER_LINE = 8190  # bytes per status or header line (so a head is at most ~1 MiB)
_MAX_ERROR_BODY = 64 * 1024  # of an error reply, read for its message

Item = tuple[bytes | None, list[Delta]]
"""The upstream's SSE bytes for the deltas (pass-through only, else None) and the deltas."""

_PREAMBLE = (MessageStart, UsageDelta)


class Upstream:
    """One configured provider, ready to stream requests."""

    name: str
    protocol: str | None  # "openai" / "anthropic" for HTTP upstreams, None for demo
    secret: bytes | None = None  # the upstream's key: never forwarded to a client

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        """Send ``request``; once the upstream answered, return its items (with the wire
        bytes if ``raw``). Raises :class:`StreamError` if it failed before that."""
        raise NotImplementedError  # pragma: no cover

    async def aclose(self) -> None:  # pragma: no cover
        raise NotImplementedError


class HTTPUpstream(Upstream):
    """An OpenAI-compatible or Anthropic endpoint (the agent providers' HTTP layer: its
    URL, authentication and key scrubbing), read with aiohttp's client.

    Why aiohttp: its C (llhttp) parser, keep-alive pooling that never reuses a connection
    with unread bytes, interim (1xx) responses skipped as HTTP requires, bounded response
    heads, and about 50 µs per request and a few µs per body chunk, which keeps the
    gateway's added latency under a millisecond.

    Bounds: the response head (``MAX_HEADERS`` lines of at most ``MAX_HEADER_LINE``
    bytes), the body (``max_reply_bytes``: a longer reply ends with an ``api_error``),
    the connection time (``timeouts.connect``) and the number of open connections
    (``max_connections``). How long to wait for the head and the body is the caller's
    deadline (the route's first-token, idle and total timeouts). A proxy comes from the
    environment (``HTTP(S)_PROXY``, ``NO_PROXY``), looked up once here: aiohttp's own
    lookup (``trust_env``) reads the environment and ``~/.netrc`` in a worker thread on
    every request, which multiplied the added latency under load. Cookies are never
    kept, so nothing one reply sets reaches another request."""

    def __init__(
        self,
        provider: HTTPProvider,
        config: ProviderConfig,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_connections: int = 0,
    ) -> None:
        self.name = config.name
        self.protocol = provider.protocol
        self._provider = provider
        self._url = yarl.URL(provider.url)  # parsed once, not per request
        # Only opening a connection is bounded here (sock_connect: no timer at all for a
        # pooled one); everything else by the route's deadlines.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=config.timeouts.connect
        )
        self._max_reply_bytes = max_reply_bytes
        self._max_connections = max_connections
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aiohttp.ClientSession
        ] = weakref.WeakKeyDictionary()
        # Holds the key: built once, never logged.
        self._headers = CIMultiDict(
            {
                **provider.request_headers(),
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                # Compression would only delay events (and invite decompression bombs).
                "Accept-Encoding": "identity",
            }
        )
        self.secret = provider.secret
        proxy = _proxy_for(provider.url)
        self._proxy = yarl.URL(proxy) if proxy else None

    def _session(self) -> aiohttp.ClientSession:
        # A session belongs to the event loop that made it; tests and agents use several.
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

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        try:
            body = orjson.dumps(self._provider.encode_request(request))
        except orjson.JSONEncodeError as exc:  # e.g. tool schemas nested too deeply
            raise StreamError(
                "invalid_request", f"the request cannot be encoded: {exc}", status=400
            ) from None
        try:
            response = await self._session().post(
                self._url,
                data=body,
                headers=self._headers,
                allow_redirects=False,
                proxy=self._proxy,
            )
        except aiohttp.ClientError as exc:
            raise self._provider.scrub(_client_error(exc)) from None
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
            raise self._provider.scrub(error)
        return _from_first_token(self._items(response, raw))

    async def _items(
        self, response: aiohttp.ClientResponse, raw: bool
    ) -> AsyncGenerator[Item, None]:
        sse = SSEDecoder()
        decoder = StreamDecoder(self.protocol)  # type: ignore[arg-type]
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
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()
        await self._provider.aclose()


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
    """aiohttp's errors as gateway errors: the upstream could not be reached or
    timed out connecting (network / timeout, 502 / 504), or it sent something that is
    not HTTP (api_error, 502)."""
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


class DemoUpstream(Upstream):
    """The built-in demo model (text only: tools are not offered to it)."""

    protocol = None

    def __init__(self, provider: DemoProvider) -> None:
        self.name = provider.name
        self._provider = provider

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        turns = []
        for message in request.messages:
            text = message.text or "\n".join(
                p.content for p in message.parts if isinstance(p, ToolResultPart)
            )
            turns.append(Turn(message.role, text))
        try:
            options = StreamOptions(
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                stop_sequences=tuple(request.stop) or None,
            )
        except (TypeError, ValueError) as exc:
            raise StreamError("invalid_request", str(exc), status=400) from None
        deltas = self._provider.stream(
            ProviderRequest(request.model, turns, request.system, options)
        )
        return _from_first_token(_demo_items(deltas))

    async def aclose(self) -> None:
        await self._provider.aclose()


async def _demo_items(deltas: AsyncIterator[Delta]) -> AsyncGenerator[Item, None]:
    try:
        async for delta in deltas:
            yield None, [delta]
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


async def _from_first_token(items: AsyncGenerator[Item, None]) -> AsyncGenerator[Item, None]:
    """``items``, with everything before the first token held and merged into it."""
    try:
        held_raw: list[bytes] = []
        held: list[Delta] = []
        async for raw, deltas in items:
            if all(type(d) in _PREAMBLE for d in deltas):
                held.extend(deltas)
                if raw is not None:
                    held_raw.append(raw)
                continue
            yield (b"".join([*held_raw, raw]) if raw is not None else None), held + deltas
            break
        else:
            if held or held_raw:
                yield (b"".join(held_raw) if held_raw else None), held
            return
        async for item in items:
            yield item
    finally:
        await items.aclose()


def make_upstream(
    config: ProviderConfig,
    *,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    max_connections: int = 0,
) -> Upstream:
    """The upstream for a provider configuration (reads its API key now).
    ``max_connections`` bounds its open connections (0: no bound)."""
    provider = make_provider(config)
    if isinstance(provider, DemoProvider):
        return DemoUpstream(provider)
    assert isinstance(provider, HTTPProvider)
    return HTTPUpstream(
        provider, config, max_reply_bytes=max_reply_bytes, max_connections=max_connections
    )
