"""EventSource and AsyncEventSource: reconnecting event streams over httpx2."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import suppress
from functools import cache
from types import TracebackType
from typing import Any, Self

import httpx2

from tokenwire.client._policy import DEFAULT_TIMEOUT, Backoff, SourceCore
from tokenwire.client._response import (
    SSEConnectionError,
    abort_socket,
    aread_bounded,
    is_transport_error,
    read_bounded,
)
from tokenwire.sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecodeError

__all__ = ["AsyncEventSource", "EventSource"]

# "new" -> "open" <-> "lost" -> "ended"; any -> "closed"
_DEFAULT_BACKOFF = Backoff()
_monotonic = time.monotonic


@cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~30 ms; the clients a source makes for itself share one
    # context (SSLContext is safe to share) instead of paying that per stream.
    return httpx2.create_ssl_context()


_DOC_PARAMS = """
    ``url`` and ``method`` say what to request; ``headers`` are sent along (the caller's
    mapping is copied, never changed) with ``Accept: text/event-stream``,
    ``Cache-Control: no-store`` and, when the last event ID is not empty,
    ``Last-Event-ID``. ``json`` (encoded once) or ``content`` (bytes or str) is the
    request body, resent on every reconnection. ``client`` is an httpx2 client to use
    (by default one is made and closed with the source). ``last_event_id`` resumes from
    a known event.

    ``reconnect``: when the stream ends or the network fails, reconnect after the
    server's ``retry`` (a minimum, clamped to ``backoff.maximum``) with exponential
    backoff and jitter (see :class:`Backoff`); reset after a connection that stayed up
    ``backoff.reset_after`` seconds. ``max_reconnects`` bounds the reconnections in a row
    that bring no event (``None``: no bound). When no reconnection is allowed or left, a
    clean end of stream ends the iteration and a network failure raises
    :class:`SSEConnectionError` (``status=None``, the failure as ``__cause__``). An event
    that was not terminated when its connection ended is never delivered.

    The first connection is not retried: a failure there raises at once (a wrong URL or
    a server that is down should be seen, not waited on). A response with a status
    other than 200, or a ``Content-Type`` other than ``text/event-stream`` (parameters
    ignored), raises :class:`SSEConnectionError` with the status, headers and bounded
    body, and is never retried; 204 ends the stream for good.

    ``timeout`` (seconds or an ``httpx2.Timeout``) bounds connecting, writing and pool
    waits. ``idle_timeout``: if no bytes at all arrive for that many seconds (heartbeat
    comments count), the connection is taken for dead and a reconnection follows.
    ``max_event_size`` bounds one event; a larger one is dropped and
    :class:`~tokenwire.sse.SSEDecodeError` raised after the events before it, and the
    source stays usable (iterate on to continue).

    ``last_event_id`` and ``retry`` (milliseconds, ``None`` until the server sends one)
    are live properties, ``response`` is the current response (``None`` between
    connections). Closing the source closes the connection at once, also while another
    thread or task is blocked reading it.
"""


class _SourceBase:
    __slots__ = (
        "_batch",
        "_core",
        "_failure",
        "_own_client",
        "_pending",
        "_pos",
        "_response",
        "_state",
    )

    def __init__(self, core: SourceCore) -> None:
        self._core = core
        self._response: httpx2.Response | None = None
        self._state = "new"
        self._batch: list[ServerSentEvent] = []
        self._pos = 0
        self._pending: SSEDecodeError | None = None  # raised once the batch is delivered
        self._failure: BaseException | None = None  # why the last connection was lost

    @property
    def url(self) -> str:
        """The stream's URL."""
        return self._core.url

    @property
    def last_event_id(self) -> str:
        """The last event ID (``""`` if none), sent as ``Last-Event-ID`` on reconnection."""
        return self._core.decoder.last_event_id

    @property
    def retry(self) -> int | None:
        """The server's reconnection time in milliseconds, ``None`` if it sent none."""
        return self._core.decoder.retry

    @property
    def response(self) -> httpx2.Response | None:
        """The response of the current connection (``None`` between connections)."""
        return self._response

    @property
    def closed(self) -> bool:
        """``close()`` was called."""
        return self._state == "closed"

    def _feed(self, chunk: bytes) -> None:
        try:
            batch = self._core.decoder.feed(chunk)
        except SSEDecodeError as exc:
            batch = exc.events
            self._pending = exc
        self._batch = batch
        self._pos = 0
        if batch:
            self._core.quiet = 0

    def _lost_without_reconnect(self, exc: BaseException | None) -> None:
        if not self._core.reconnect:
            self._state = "ended"
            if exc is not None:
                raise self._core.gave_up(exc) from exc

    def _give_up(self) -> None:
        self._state = "ended"
        exc = self._failure
        if exc is not None:
            raise self._core.gave_up(exc) from exc

    def _first_failure(self, exc: BaseException) -> SSEConnectionError:
        self._state = "ended"
        return SSEConnectionError(
            f"could not open event stream {self._core.url}: {exc!r}", url=self._core.url
        )


class EventSource(_SourceBase):
    __doc__ = (
        """A reconnecting event stream over httpx2 (synchronous).

    ``with EventSource(url) as source: for event in source: ...`` yields
    :class:`~tokenwire.sse.ServerSentEvent` objects. Used without ``with``, it connects
    on first iteration; call :meth:`close` when done.
"""
        + _DOC_PARAMS
    )

    __slots__ = ("_chunks", "_client", "_wake")

    def __init__(
        self,
        url: str | httpx2.URL,
        method: str = "GET",
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        client: httpx2.Client | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        idle_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        backoff: Backoff = _DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(
            SourceCore(
                url,
                method,
                headers,
                json,
                content,
                last_event_id,
                reconnect,
                max_reconnects,
                timeout,
                idle_timeout,
                max_event_size,
                backoff,
            )
        )
        self._client = client if client is not None else httpx2.Client(verify=_ssl_context())
        self._own_client = client is None
        self._chunks: Iterator[bytes] | None = None
        self._wake = threading.Event()

    def __enter__(self) -> Self:
        if self._state == "new":
            self._connect_first()
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

    def __next__(self) -> ServerSentEvent:
        pos = self._pos
        batch = self._batch
        if pos < len(batch):
            self._pos = pos + 1
            return batch[pos]
        return self._next()

    def _next(self) -> ServerSentEvent:
        while True:
            batch = self._batch
            pos = self._pos
            if pos < len(batch):
                self._pos = pos + 1
                return batch[pos]
            if self._pending is not None:
                error, self._pending = self._pending, None
                raise error
            chunks = self._chunks
            if chunks is None:
                state = self._state
                if state == "new":
                    self._connect_first()
                elif state == "lost":
                    self._reconnect()
                else:
                    raise StopIteration
                continue
            try:
                chunk = next(chunks)
            except StopIteration:
                self._lost(None)
                continue
            except Exception as exc:
                if self._state == "closed":
                    raise StopIteration from None
                if not is_transport_error(exc):
                    raise
                self._lost(exc)
                continue
            self._feed(chunk)

    def _open(self) -> bool:
        core = self._core
        request = self._client.build_request(
            core.method,
            core.url,
            headers=core.request_headers(),
            content=core.body,
            timeout=core.timeout,
        )
        response = self._client.send(request, stream=True)
        if self._state == "closed":
            response.close()
            return False
        verdict = core.classify(response)
        if verdict == "end":
            response.close()
            self._state = "ended"
            return False
        if verdict == "error":
            self._state = "ended"
            raise core.error(response, read_bounded(response))
        self._response = response
        self._chunks = response.iter_bytes()
        self._state = "open"
        core.opened(_monotonic())
        return True

    def _connect_first(self) -> None:
        try:
            self._open()
        except SSEConnectionError:
            raise
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise self._first_failure(exc) from exc

    def _lost(self, exc: BaseException | None) -> None:
        self._drop()
        if self._state == "closed":
            return
        self._state = "lost"
        self._failure = exc
        self._lost_without_reconnect(exc)

    def _drop(self) -> None:
        response = self._response
        self._response = None
        self._chunks = None
        self._core.lost(_monotonic())
        if response is not None:
            with suppress(Exception):
                response.close()

    def _reconnect(self) -> None:
        core = self._core
        while True:
            delay = core.next_delay()
            if delay is None:
                self._give_up()
                return
            if delay > 0:
                self._wake.wait(delay)
            if self._state == "closed":
                return
            try:
                self._open()
                return
            except SSEConnectionError:
                raise
            except Exception as exc:
                if self._state == "closed":
                    return
                if not is_transport_error(exc):
                    raise
                self._failure = exc

    def close(self) -> None:
        """Close the connection (at once, even if another thread is blocked reading it)
        and the client if the source made it. Safe to call more than once."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._wake.set()
        response = self._response
        if response is not None:
            abort_socket(response)
        self._batch = []
        self._pos = 0
        self._drop()
        if self._own_client:
            self._client.close()


class AsyncEventSource(_SourceBase):
    __doc__ = (
        """A reconnecting event stream over httpx2 (asyncio).

    ``async with AsyncEventSource(url) as source: async for event in source: ...`` yields
    :class:`~tokenwire.sse.ServerSentEvent` objects. Used without ``async with``, it
    connects on first iteration; call :meth:`aclose` when done.
"""
        + _DOC_PARAMS
    )

    __slots__ = ("_chunks", "_client", "_wake")

    def __init__(
        self,
        url: str | httpx2.URL,
        method: str = "GET",
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        client: httpx2.AsyncClient | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        idle_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        backoff: Backoff = _DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(
            SourceCore(
                url,
                method,
                headers,
                json,
                content,
                last_event_id,
                reconnect,
                max_reconnects,
                timeout,
                idle_timeout,
                max_event_size,
                backoff,
            )
        )
        self._client = client if client is not None else httpx2.AsyncClient(verify=_ssl_context())
        self._own_client = client is None
        self._chunks: AsyncIterator[bytes] | None = None
        self._wake: asyncio.Event | None = None

    async def __aenter__(self) -> Self:
        if self._state == "new":
            await self._connect_first()
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

    async def __anext__(self) -> ServerSentEvent:
        pos = self._pos
        batch = self._batch
        if pos < len(batch):
            self._pos = pos + 1
            return batch[pos]
        return await self._next()

    async def _next(self) -> ServerSentEvent:
        while True:
            batch = self._batch
            pos = self._pos
            if pos < len(batch):
                self._pos = pos + 1
                return batch[pos]
            if self._pending is not None:
                error, self._pending = self._pending, None
                raise error
            chunks = self._chunks
            if chunks is None:
                state = self._state
                if state == "new":
                    await self._connect_first()
                elif state == "lost":
                    await self._reconnect()
                else:
                    raise StopAsyncIteration
                continue
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                await self._lost(None)
                continue
            except Exception as exc:
                if self._state == "closed":
                    raise StopAsyncIteration from None
                if not is_transport_error(exc):
                    raise
                await self._lost(exc)
                continue
            self._feed(chunk)

    async def _open(self) -> bool:
        core = self._core
        request = self._client.build_request(
            core.method,
            core.url,
            headers=core.request_headers(),
            content=core.body,
            timeout=core.timeout,
        )
        response = await self._client.send(request, stream=True)
        if self._state == "closed":
            await response.aclose()
            return False
        verdict = core.classify(response)
        if verdict == "end":
            await response.aclose()
            self._state = "ended"
            return False
        if verdict == "error":
            self._state = "ended"
            raise core.error(response, await aread_bounded(response))
        self._response = response
        self._chunks = response.aiter_bytes()
        self._state = "open"
        core.opened(_monotonic())
        return True

    async def _connect_first(self) -> None:
        try:
            await self._open()
        except SSEConnectionError:
            raise
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise self._first_failure(exc) from exc

    async def _lost(self, exc: BaseException | None) -> None:
        await self._drop()
        if self._state == "closed":
            return
        self._state = "lost"
        self._failure = exc
        self._lost_without_reconnect(exc)

    async def _drop(self) -> None:
        response = self._response
        self._response = None
        self._chunks = None
        self._core.lost(_monotonic())
        if response is not None:
            with suppress(Exception):
                await response.aclose()

    async def _sleep(self, delay: float) -> None:
        wake = self._wake = asyncio.Event()
        with suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()

    async def _reconnect(self) -> None:
        core = self._core
        while True:
            delay = core.next_delay()
            if delay is None:
                self._give_up()
                return
            if delay > 0:
                await self._sleep(delay)
            if self._state == "closed":
                return
            try:
                await self._open()
                return
            except SSEConnectionError:
                raise
            except Exception as exc:
                if self._state == "closed":
                    return
                if not is_transport_error(exc):
                    raise
                self._failure = exc

    async def aclose(self) -> None:
        """Close the connection (at once, even if another task is blocked reading it)
        and the client if the source made it. Safe to call more than once."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._wake is not None:
            self._wake.set()
        response = self._response
        if response is not None:
            abort_socket(response)
        self._batch = []
        self._pos = 0
        await self._drop()
        if self._own_client:
            await self._client.aclose()
