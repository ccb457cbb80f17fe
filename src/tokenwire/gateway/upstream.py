"""Upstreams: where the gateway's requests go, as streams of (event, deltas).

An HTTP upstream (OpenAI-compatible or Anthropic) is read with tokenwire's own client
and LLM decoder; each item carries the upstream's wire bytes when asked for them (so a
same-protocol route can pass them through untouched) and the deltas they decoded to
(for translation and metrics). The demo provider yields deltas only.

What comes before the first token (OpenAI's role chunk, Anthropic's ``message_start``
and ``ping``) is held and delivered together with it, so that a route's first-token
deadline measures the time to the first token, as its name says.

:meth:`Upstream.open` returns only once the upstream answered: a failure before that
(connection refused, an HTTP error status) raises :class:`~tokenwire.errors.StreamError`
so that the gateway can still answer with a proper HTTP status.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator
from urllib.parse import urlsplit

import httpx2
import orjson

from tokenwire.agent.config import ProviderConfig
from tokenwire.agent.options import StreamOptions
from tokenwire.agent.providers import DemoProvider, ProviderRequest, Turn, make_provider
from tokenwire.agent.providers._http import HTTPProvider
from tokenwire.client import AsyncEventSource, SSEConnectionError
from tokenwire.client._chat import stream_error
from tokenwire.errors import StreamError
from tokenwire.gateway.http11 import ConnectionPool, UpstreamResponse, encode_headers
from tokenwire.llm.decode import StreamDecoder
from tokenwire.llm.model import Delta, MessageStart, UsageDelta
from tokenwire.llm.requests import ChatRequest, ToolResultPart
from tokenwire.sse import SSEDecoder

__all__ = ["Item", "Upstream", "make_upstream"]

Item = tuple[bytes | None, list[Delta]]
"""The upstream's SSE bytes for the deltas (pass-through only, else None) and the deltas."""

_PREAMBLE = (MessageStart, UsageDelta)


class Upstream:
    """One configured provider, ready to stream requests."""

    name: str
    protocol: str | None  # "openai" / "anthropic" for HTTP upstreams, None for demo

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        """Send ``request``; once the upstream answered, return its items (with the wire
        bytes if ``raw``). Raises :class:`StreamError` if it failed before that."""
        raise NotImplementedError  # pragma: no cover

    async def aclose(self) -> None:  # pragma: no cover
        raise NotImplementedError


class HTTPUpstream(Upstream):
    """An OpenAI-compatible or Anthropic endpoint (the agent providers' HTTP layer: its
    URL, authentication and key scrubbing), read with the lean client of
    :mod:`tokenwire.gateway.http11`, or with httpx2 when a proxy applies."""

    def __init__(self, provider: HTTPProvider, config: ProviderConfig) -> None:
        self.name = config.name
        self.protocol = provider.protocol
        self._provider = provider
        connect = config.timeouts.connect
        # Reads are bounded by the route's idle/first-token deadlines, not by the client.
        self._timeout = httpx2.Timeout(connect=connect, read=None, write=connect, pool=connect)
        url = urlsplit(provider.url)
        self._path = url.path + (f"?{url.query}" if url.query else "")
        self._pool: ConnectionPool | None = None
        if not _proxied(provider.url):
            self._pool = ConnectionPool(provider.url, connect_timeout=connect)
        # Holds the key: built once, never logged.
        self._headers = encode_headers(
            {
                **provider.request_headers(),
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
            }
        )

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        if self._pool is None:
            return await self._open_httpx(request, raw)
        body = orjson.dumps(self._provider.encode_request(request))
        try:
            response = await self._pool.post(self._path, self._headers, body)
        except (OSError, TimeoutError) as exc:
            raise StreamError.from_exception(exc) from exc
        content_type = response.headers.get("content-type", "")
        if response.status != 200 or not content_type.startswith("text/event-stream"):
            try:
                data = await response.read_body()
            finally:
                response.close(finished=response.read_all)
            if response.status == 200:
                raise StreamError(
                    "api_error",
                    f"upstream answered with {content_type or 'no content type'}, "
                    "not an event stream",
                    status=502,
                )
            error = StreamError.from_http_response(
                response.status, data, response.headers, provider=self.protocol
            )
            raise self._provider.scrub(error)
        return _from_first_token(self._items(response, raw))

    async def _items(self, response: UpstreamResponse, raw: bool) -> AsyncGenerator[Item, None]:
        sse = SSEDecoder()
        decoder = StreamDecoder(self.protocol)  # type: ignore[arg-type]
        feed = decoder.feed
        try:
            async for chunk in response.chunks():
                for event in sse.feed(chunk):
                    yield (event.encode() if raw else None), feed(event)
                    if decoder.done:
                        return
            decoder.close()  # a stream cut before its end marker raises StreamError here
        finally:
            response.close(finished=decoder.done)

    async def _open_httpx(self, request: ChatRequest, raw: bool) -> AsyncIterator[Item]:
        provider = self._provider
        source = AsyncEventSource(
            provider.url,
            "POST",
            json=provider.encode_request(request),
            headers=provider.request_headers(),
            client=provider.client(),
            reconnect=False,
            timeout=self._timeout,
        )
        try:
            await source.__aenter__()
        except SSEConnectionError as exc:
            await source.aclose()
            raise provider.scrub(stream_error(exc, self.protocol)) from None
        except BaseException:
            await source.aclose()
            raise
        return _from_first_token(self._httpx_items(source, raw))

    async def _httpx_items(self, source: AsyncEventSource, raw: bool) -> AsyncGenerator[Item, None]:
        decoder = StreamDecoder(self.protocol)  # type: ignore[arg-type]
        try:
            async for event in source:
                yield (event.encode() if raw else None), decoder.feed(event)
                if decoder.done:
                    return
            decoder.close()
        finally:
            await source.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await self._provider.aclose()


def _proxied(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy (HTTP(S)_PROXY, NO_PROXY)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


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


def make_upstream(config: ProviderConfig) -> Upstream:
    """The upstream for a provider configuration (reads its API key now)."""
    provider = make_provider(config)
    if isinstance(provider, DemoProvider):
        return DemoUpstream(provider)
    assert isinstance(provider, HTTPProvider)
    return HTTPUpstream(provider, config)
