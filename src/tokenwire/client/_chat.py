"""From a URL or a response straight to LLM deltas: :func:`stream_chat`, :func:`astream_chat`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import suppress
from types import TracebackType
from typing import Any, Self

import httpx2
import orjson

from tokenwire.client._policy import DEFAULT_TIMEOUT, Backoff
from tokenwire.client._response import (
    AsyncStreamResponse,
    SSEConnectionError,
    StreamResponse,
    aiter_sse,
    aread_bounded,
    content_type_ok,
    is_transport_error,
    iter_sse,
    read_bounded,
    response_error,
)
from tokenwire.client._source import AsyncEventSource, EventSource
from tokenwire.errors import StreamError, retry_after_from_headers
from tokenwire.llm.accumulate import error_from_delta
from tokenwire.llm.decode import Protocol, StreamDecoder
from tokenwire.llm.model import Delta, ErrorDelta, Message
from tokenwire.sse import ServerSentEvent

__all__ = ["AsyncChatStream", "ChatStream", "astream_chat", "stream_chat"]

_NO_BACKOFF = Backoff()


def stream_error(exc: SSEConnectionError, protocol: str | None) -> StreamError:
    """The :class:`~tokenwire.errors.StreamError` for a failed connection: an HTTP error
    response is read like the provider's error (its JSON error object when there is one),
    a lost connection becomes ``network`` / ``timeout``."""
    if exc.status is None:
        return StreamError.from_exception(exc.__cause__ or exc)
    status = exc.status if exc.status >= 400 else None
    body: Any = None
    with suppress(orjson.JSONDecodeError):
        body = orjson.loads(exc.body) if exc.body else None
    provider = protocol
    if isinstance(body, dict) and (
        isinstance(body.get("error"), Mapping | str) or isinstance(body.get("message"), str)
    ):
        if provider is None:
            provider = "anthropic" if body.get("type") == "error" else "openai"
        error = StreamError.from_provider_error(body, provider=provider, status=status)
    else:
        error = StreamError.from_provider_error(
            {"message": exc.message}, provider=provider or "unknown", status=status
        )
    if error.retry_after is None:
        error.retry_after = retry_after_from_headers({k.lower(): v for k, v in exc.headers.items()})
    return error


class _ChatBase:
    __slots__ = ("_batch", "_decoder", "_finished", "_pos", "_protocol")

    def __init__(self, protocol: Protocol) -> None:
        self._decoder = StreamDecoder(protocol)
        self._protocol: str | None = None if protocol == "auto" else protocol
        self._batch: list[Delta] = []
        self._pos = 0
        self._finished = False

    @property
    def decoder(self) -> StreamDecoder:
        """The underlying :class:`~tokenwire.llm.StreamDecoder`."""
        return self._decoder

    @property
    def message(self) -> Message:
        """The reply (choice 0) as accumulated so far; complete once iteration ends."""
        return self._decoder.message

    @property
    def messages(self) -> dict[int, Message]:
        """Every choice as accumulated so far, by index (OpenAI ``n>1``)."""
        return self._decoder.messages

    def _provider(self) -> str | None:
        return self._decoder.protocol or self._protocol

    def _error(self, delta: ErrorDelta) -> StreamError:
        return error_from_delta(delta, self._provider())

    def _failure(self, exc: BaseException) -> StreamError:
        if isinstance(exc, SSEConnectionError):
            return stream_error(exc, self._provider())
        return StreamError.from_exception(exc)


_CHAT_DOC = """
    ``target`` is a URL (the request is sent with ``method``, ``json``/``content`` and
    ``headers``, through an event source: see :class:`EventSource` for ``client``,
    ``timeout``, ``idle_timeout``, ``reconnect``, ``max_reconnects``, ``last_event_id``
    and ``backoff``) or an already streamed ``httpx2``/``httpx`` response. Reconnection is
    off by default: an LLM API re-runs a POST from the start; turn it on for servers that
    resume by ``Last-Event-ID``.

    Iterating yields :data:`~tokenwire.llm.model.Delta` values until the protocol's end
    marker (reading stops there), and ``message`` / ``messages`` hold the accumulated
    reply. Errors raise :class:`~tokenwire.errors.StreamError`: an error the provider
    reported in the stream (``StreamError.from_provider_error``, with its type and
    message), an HTTP error response (its status and JSON error body), a lost connection
    (``network``/``timeout``) and a stream cut off before its end (``network``). Each
    keeps the original exception as ``__cause__`` where there is one. Event data that is
    not JSON raises :class:`~tokenwire.llm.StreamDecodeError`; an oversize event
    :class:`~tokenwire.sse.SSEDecodeError`.
"""


class ChatStream(_ChatBase):
    """The deltas of one LLM stream (synchronous); made by :func:`stream_chat`.

    Iterable once; a context manager that closes the connection on exit (it is also
    closed when iteration ends or fails).
    """

    __slots__ = ("_events", "_response", "_source")

    def __init__(
        self,
        events: Iterator[ServerSentEvent],
        protocol: Protocol,
        *,
        source: EventSource | None = None,
        response: StreamResponse | None = None,
    ) -> None:
        super().__init__(protocol)
        self._events = events
        self._source = source
        self._response = response

    @property
    def response(self) -> Any:
        """The HTTP response being read (``None`` before connecting / between connections)."""
        return self._source.response if self._source is not None else self._response

    def __enter__(self) -> Self:
        if self._source is not None:
            try:
                self._source.__enter__()
            except SSEConnectionError as exc:
                self.close()
                raise self._failure(exc) from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Delta:
        pos = self._pos
        batch = self._batch
        while pos >= len(batch):
            if self._finished:
                raise StopIteration
            try:
                event = next(self._events)
            except StopIteration:
                self._end()
                raise
            except Exception as exc:
                self.close()
                if isinstance(exc, SSEConnectionError) or is_transport_error(exc):
                    raise self._failure(exc) from exc
                raise
            try:
                batch = self._batch = self._decoder.feed(event)
            except Exception:
                self.close()
                raise
            pos = 0
            # The end markers ([DONE], message_stop) carry no deltas: only then look.
            if not batch and self._decoder.done:
                self._end()
                raise StopIteration
        self._pos = pos + 1
        delta = batch[pos]
        if type(delta) is ErrorDelta:
            self.close()
            raise self._error(delta)
        return delta

    def _end(self) -> None:
        self._finished = True
        try:
            self._decoder.close()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection. Safe to call more than once."""
        self._finished = True
        self._batch = []
        self._pos = 0
        if self._source is not None:
            self._source.close()
        elif self._response is not None:
            self._response.close()


class AsyncChatStream(_ChatBase):
    """The deltas of one LLM stream (asyncio); made by :func:`astream_chat`.

    Async-iterable once; an async context manager that closes the connection on exit
    (it is also closed when iteration ends or fails).
    """

    __slots__ = ("_events", "_response", "_source")

    def __init__(
        self,
        events: AsyncIterator[ServerSentEvent],
        protocol: Protocol,
        *,
        source: AsyncEventSource | None = None,
        response: AsyncStreamResponse | None = None,
    ) -> None:
        super().__init__(protocol)
        self._events = events
        self._source = source
        self._response = response

    @property
    def response(self) -> Any:
        """The HTTP response being read (``None`` before connecting / between connections)."""
        return self._source.response if self._source is not None else self._response

    async def __aenter__(self) -> Self:
        if self._source is not None:
            try:
                await self._source.__aenter__()
            except SSEConnectionError as exc:
                await self.aclose()
                raise self._failure(exc) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        pos = self._pos
        batch = self._batch
        while pos >= len(batch):
            if self._finished:
                raise StopAsyncIteration
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:
                await self._end()
                raise
            except Exception as exc:
                await self.aclose()
                if isinstance(exc, SSEConnectionError) or is_transport_error(exc):
                    raise self._failure(exc) from exc
                raise
            try:
                batch = self._batch = self._decoder.feed(event)
            except Exception:
                await self.aclose()
                raise
            pos = 0
            # The end markers ([DONE], message_stop) carry no deltas: only then look.
            if not batch and self._decoder.done:
                await self._end()
                raise StopAsyncIteration
        self._pos = pos + 1
        delta = batch[pos]
        if type(delta) is ErrorDelta:
            await self.aclose()
            raise self._error(delta)
        return delta

    async def _end(self) -> None:
        self._finished = True
        try:
            self._decoder.close()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection. Safe to call more than once."""
        self._finished = True
        self._batch = []
        self._pos = 0
        if self._source is not None:
            await self._source.aclose()
        elif self._response is not None:
            await self._response.aclose()


def _is_url(target: object) -> bool:
    return isinstance(target, str | httpx2.URL)


def _checked_events(response: StreamResponse) -> Iterator[ServerSentEvent]:
    if response.status_code != 200 or not content_type_ok(response.headers):
        raise response_error(response.status_code, response.headers, read_bounded(response))
    return iter_sse(response)


async def _achecked_events(response: AsyncStreamResponse) -> AsyncIterator[ServerSentEvent]:
    if response.status_code != 200 or not content_type_ok(response.headers):
        body = await aread_bounded(response)
        raise response_error(response.status_code, response.headers, body)
    async for event in aiter_sse(response):
        yield event


def stream_chat(
    target: str | httpx2.URL | StreamResponse,
    *,
    json: Any = None,
    content: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    protocol: Protocol = "auto",
    client: httpx2.Client | None = None,
    timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
    idle_timeout: float | None = None,
    reconnect: bool = False,
    max_reconnects: int | None = None,
    last_event_id: str | None = None,
    backoff: Backoff = _NO_BACKOFF,
) -> ChatStream:
    """Stream an LLM reply as deltas (synchronous): ``for delta in stream_chat(url,
    json=body, headers=auth): ...``; returns a :class:`ChatStream`.
    """
    if _is_url(target):
        source = EventSource(
            target,  # type: ignore[arg-type]
            method,
            headers=headers,
            json=json,
            content=content,
            client=client,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            timeout=timeout,
            idle_timeout=idle_timeout,
            backoff=backoff,
        )
        return ChatStream(source, protocol, source=source)
    response: StreamResponse = target  # type: ignore[assignment]
    return ChatStream(_lazy(response), protocol, response=response)


def _lazy(response: StreamResponse) -> Iterator[ServerSentEvent]:
    yield from _checked_events(response)


def astream_chat(
    target: str | httpx2.URL | AsyncStreamResponse,
    *,
    json: Any = None,
    content: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    protocol: Protocol = "auto",
    client: httpx2.AsyncClient | None = None,
    timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
    idle_timeout: float | None = None,
    reconnect: bool = False,
    max_reconnects: int | None = None,
    last_event_id: str | None = None,
    backoff: Backoff = _NO_BACKOFF,
) -> AsyncChatStream:
    """Stream an LLM reply as deltas (asyncio): ``async for delta in astream_chat(url,
    json=body, headers=auth): ...``; returns an :class:`AsyncChatStream`.
    """
    if _is_url(target):
        source = AsyncEventSource(
            target,  # type: ignore[arg-type]
            method,
            headers=headers,
            json=json,
            content=content,
            client=client,
            last_event_id=last_event_id,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            timeout=timeout,
            idle_timeout=idle_timeout,
            backoff=backoff,
        )
        return AsyncChatStream(source, protocol, source=source)
    response: AsyncStreamResponse = target  # type: ignore[assignment]
    return AsyncChatStream(_achecked_events(response), protocol, response=response)


stream_chat.__doc__ = (stream_chat.__doc__ or "") + _CHAT_DOC
astream_chat.__doc__ = (astream_chat.__doc__ or "") + _CHAT_DOC
