"""EventSource and AsyncEventSource: reconnecting event streams over httpx2."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import suppress
from functools import cache
from types import TracebackType
from typing import Any, Literal, Self

import httpx2

from tokenwire.client._actions import Fault, Start
from tokenwire.client._policy import DEFAULT_TIMEOUT, Backoff, SourceCore
from tokenwire.client._response import (
    SSEConnectionError,
    abort_socket,
    aread_bounded,
    is_transport_error,
    read_bounded,
)
from tokenwire.sse import DEFAULT_MAX_EVENT_SIZE, Comment, ServerSentEvent, SSEDecodeError

__all__ = ["AsyncEventSource", "EventSource", "Item"]

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
    ``Cache-Control: no-cache`` (what browsers send) and, when the last event ID is not
    empty, ``Last-Event-ID``. ``json`` (encoded once) or ``content`` (bytes or str) is the
    request body, resent on every reconnection. ``client`` is an httpx2 client to use
    (by default one is made and closed with the source). ``last_event_id`` resumes from
    a known event.

    ``reconnect``: when the stream ends or the network fails, reconnect after the
    server's ``retry`` (a minimum, clamped to ``backoff.maximum``) with exponential
    backoff and jitter (see :class:`Backoff`); reset after a connection that stayed up
    ``backoff.reset_after`` seconds. ``max_reconnects`` bounds the reconnections in a row
    that bring no event, ``max_retry_time`` the seconds spent reconnecting since the
    last event (``None``: no bound). When no reconnection is allowed or left, a clean
    end of stream ends the iteration and a network failure raises
    :class:`SSEConnectionError` (``status=None``, the failure as ``__cause__``; the
    message names the limit that was reached). An event that was not terminated when
    its connection ended is never delivered. :meth:`restart` drops the connection and
    reconnects at once with the same ``Last-Event-ID``.

    Redirects (301, 302, 303, 307, 308) are followed as browsers follow them
    (``follow_redirects``): 303, and 301/302 after a POST, continue as GET without the
    body, 307/308 keep both; credentials are not sent to another origin; at most the
    client's ``max_redirects`` hops (20, the Fetch standard's bound, for a client the
    source makes). Reconnections go to where the last redirect led.

    Plain iteration yields events only. :meth:`all` yields everything that happens,
    in order: :class:`Start` when a connection opens, each
    :class:`~tokenwire.sse.ServerSentEvent`, each :class:`~tokenwire.sse.Comment` (the
    heartbeats), and a :class:`Fault` when a connection is lost (the error, the attempt
    that follows and its delay) before the wait for the next attempt begins. Use one
    of the two per source. Each event's ``last_event_id`` is the last event ID in force
    when it was dispatched, as a browser's ``MessageEvent.lastEventId``.

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


Item = ServerSentEvent | Comment | Start | Fault
"""What :meth:`EventSource.all` yields."""

_GIVE_UP = -1.0  # the planned wait when no reconnection follows


class _SourceBase:
    __slots__ = (
        "_actions",
        "_batch",
        "_core",
        "_failure",
        "_fed",
        "_lock",
        "_own_client",
        "_pending",
        "_pos",
        "_reason",
        "_response",
        "_restarting",
        "_state",
        "_wait",
    )

    def __init__(self, core: SourceCore) -> None:
        self._core = core
        self._response: httpx2.Response | None = None
        self._state = "new"
        self._batch: list[Any] = []  # events, and comments in all() mode
        self._pos = 0
        self._pending: SSEDecodeError | None = None  # raised once the batch is delivered
        self._failure: BaseException | None = None  # why the last connection was lost
        self._reason: Literal["end", "error", "restart"] = "end"
        self._wait: float | None = None  # the planned wait before the next attempt
        self._restarting = False
        self._fed = False  # bytes were read (all() is too late then)
        # Starts and faults to report, in all() mode (None: plain iteration).
        self._actions: deque[Item] | None = None
        # Orders close() against a connection being installed by another thread.
        self._lock = threading.Lock()

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

    def _all_mode(self) -> None:
        if self._actions is not None:
            return
        if self._fed:
            raise RuntimeError("all() must be called before the source is iterated")
        self._actions = deque()
        self._core.decoder.keep_comments = True
        if self._response is not None:  # opened by `with`: report that connection
            self._actions.append(self._start_of(self._response, False))

    def _start_of(self, response: httpx2.Response, restarted: bool) -> Start:
        return Start(
            status=response.status_code,
            headers=response.headers,
            url=self._core.target,
            attempt=self._core.quiet,
            restarted=restarted,
        )

    def _feed(self, chunk: bytes) -> None:
        self._fed = True
        decoder = self._core.decoder
        try:
            batch: list[Any] = decoder.feed(chunk)
        except SSEDecodeError as exc:
            batch = exc.events
            self._pending = exc
        if batch:
            self._core.quiet = 0
        if self._actions is not None and decoder.comments:
            merged: list[Any] = []
            at = 0
            for index, comment in decoder.comments:
                merged += batch[at:index]
                merged.append(comment)
                at = index
            batch = merged + batch[at:]
        self._batch = batch
        self._pos = 0

    def _install(self, response: httpx2.Response) -> bool:
        """Make an opened connection the current one; False if the source was closed
        meanwhile (the caller closes the response)."""
        core = self._core
        with self._lock:
            if self._state == "closed":
                return False
            self._response = response
            self._state = "open"
        core.opened(_monotonic(), response)
        restarted, self._restarting = self._restarting, False
        if self._actions is not None:
            self._actions.append(self._start_of(response, restarted))
        return True

    def _lost_state(self, exc: BaseException | None) -> None:
        """Note a lost connection (after it was dropped)."""
        if self._state == "closed":
            return
        self._state = "lost"
        self._failure = exc
        self._wait = None
        if self._restarting:
            self._reason = "restart"
        else:
            self._reason = "end" if exc is None else "error"

    def _plan(self) -> None:
        """Decide the next attempt after a loss, and report it in all() mode."""
        core = self._core
        delay = 0.0 if self._restarting else core.next_delay()
        self._wait = _GIVE_UP if delay is None else delay
        if self._actions is not None:
            attempt = core.quiet if delay is not None else None
            self._actions.append(Fault(self._failure, self._reason, attempt, delay))

    def _take_wait(self) -> float | None:
        """After a loss: the seconds to wait before the next attempt, or None to go
        back to the loop first (the attempt was just planned, and is reported before
        any wait; or the source gave up and ended)."""
        if self._wait is None:
            self._plan()
            return None
        wait, self._wait = self._wait, None
        if self._restarting:
            return 0.0
        if wait == _GIVE_UP:
            self._give_up()
            return None
        return wait

    def _attempt_failed(self, exc: Exception) -> None:
        """A reconnection attempt failed: a network failure plans the next one."""
        if self._state == "closed":
            return
        if not is_transport_error(exc):
            raise exc
        self._failure = exc
        self._reason = "error"
        self._restarting = False

    def _give_up(self) -> None:
        self._state = "ended"
        exc = self._failure
        # A reconnecting source only gives up at a limit: say which, even after a clean end.
        if exc is not None or self._core.reconnect:
            raise self._core.gave_up(exc) from exc

    def _first_failure(self, exc: BaseException) -> SSEConnectionError:
        self._state = "ended"
        return SSEConnectionError(
            f"could not open event stream {self._core.url}: {exc!r}", url=self._core.url
        )

    def _redirects_error(self, exc: BaseException) -> SSEConnectionError:
        self._state = "ended"
        return SSEConnectionError(
            f"event stream {self._core.url}: too many redirects ({exc})", url=self._core.url
        )

    def _begin_restart(self) -> httpx2.Response | None:
        if self._state in ("new", "closed", "ended"):
            return None
        self._restarting = True
        return self._response


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
        max_retry_time: float | None = None,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        idle_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        backoff: Backoff = _DEFAULT_BACKOFF,
        follow_redirects: bool = True,
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
                follow_redirects=follow_redirects,
                max_retry_time=max_retry_time,
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
            event: ServerSentEvent = batch[pos]
            return event
        return self._next()  # type: ignore[return-value]  # events only, outside all()

    def all(self) -> Iterator[Item]:
        """Everything the source does, in order: :class:`Start`, events, comments and
        :class:`Fault` (see the class docstring). Call it before reading any event
        (right after ``with`` is fine)."""
        self._all_mode()
        while True:
            try:
                yield self._next()
            except StopIteration:
                return

    def _next(self) -> Item:
        while True:
            actions = self._actions
            if actions:
                return actions.popleft()
            batch = self._batch
            pos = self._pos
            if pos < len(batch):
                self._pos = pos + 1
                item: Item = batch[pos]
                return item
            if self._pending is not None:
                error, self._pending = self._pending, None
                raise error
            chunks = self._chunks
            if chunks is None:
                state = self._state
                if state == "new":
                    self._connect_first()
                elif state == "lost":
                    self._reconnect_step()
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
                if self._restarting:
                    self._lost(None)
                    continue
                if not is_transport_error(exc):
                    raise
                self._lost(exc)
                continue
            self._feed(chunk)

    def _open(self) -> bool:
        core = self._core
        request = self._client.build_request(
            core.method,
            core.target,
            headers=core.request_headers(),
            content=core.body,
            timeout=core.timeout,
        )
        try:
            response = self._client.send(
                request, stream=True, follow_redirects=core.follow_redirects
            )
        except httpx2.TooManyRedirects as exc:
            raise self._redirects_error(exc) from exc
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
        if not self._install(response):
            response.close()
            return False
        self._chunks = response.iter_bytes()
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
        self._lost_state(exc)

    def _drop(self) -> None:
        with self._lock:
            response = self._response
            self._response = None
        self._chunks = None
        self._core.lost(_monotonic())
        if response is not None:
            with suppress(Exception):
                response.close()

    def _reconnect_step(self) -> None:
        """One step after a loss: plan the next attempt (reported first in all()
        mode), then wait for it and make it."""
        wait = self._take_wait()
        if wait is None:
            return
        if wait > 0:
            self._wake.wait(wait)
        self._wake.clear()
        if self._state == "closed":
            return
        try:
            self._open()
        except SSEConnectionError:
            raise
        except Exception as exc:
            self._attempt_failed(exc)

    def restart(self) -> None:
        """Drop the current connection and reconnect at once, with the same
        ``Last-Event-ID`` (from any thread; a wait for a reconnection is cut short).
        Not counted against the reconnection limits."""
        response = self._begin_restart()
        self._wake.set()
        if response is not None:
            abort_socket(response)

    def close(self) -> None:
        """Close the connection (at once, even if another thread is blocked reading it)
        and the client if the source made it. Safe to call more than once."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            # Cleared before the reader is woken: when it sees the source closed, the
            # source has no connection any more.
            response, self._response = self._response, None
        self._wake.set()
        if response is not None:
            abort_socket(response)
        self._batch = []
        self._pos = 0
        self._chunks = None
        self._core.lost(_monotonic())
        if response is not None:
            with suppress(Exception):
                response.close()
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
        max_retry_time: float | None = None,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        idle_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        backoff: Backoff = _DEFAULT_BACKOFF,
        follow_redirects: bool = True,
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
                follow_redirects=follow_redirects,
                max_retry_time=max_retry_time,
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
            event: ServerSentEvent = batch[pos]
            return event
        return await self._next()  # type: ignore[return-value]  # events only, outside all()

    async def all(self) -> AsyncIterator[Item]:
        """Everything the source does, in order: :class:`Start`, events, comments and
        :class:`Fault` (see the class docstring). Call it before reading any event
        (right after ``with`` is fine)."""
        self._all_mode()
        while True:
            try:
                yield await self._next()
            except StopAsyncIteration:
                return

    async def _next(self) -> Item:
        while True:
            actions = self._actions
            if actions:
                return actions.popleft()
            batch = self._batch
            pos = self._pos
            if pos < len(batch):
                self._pos = pos + 1
                item: Item = batch[pos]
                return item
            if self._pending is not None:
                error, self._pending = self._pending, None
                raise error
            chunks = self._chunks
            if chunks is None:
                state = self._state
                if state == "new":
                    await self._connect_first()
                elif state == "lost":
                    await self._reconnect_step()
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
                if self._restarting:
                    await self._lost(None)
                    continue
                if not is_transport_error(exc):
                    raise
                await self._lost(exc)
                continue
            self._feed(chunk)

    async def _open(self) -> bool:
        core = self._core
        request = self._client.build_request(
            core.method,
            core.target,
            headers=core.request_headers(),
            content=core.body,
            timeout=core.timeout,
        )
        try:
            response = await self._client.send(
                request, stream=True, follow_redirects=core.follow_redirects
            )
        except httpx2.TooManyRedirects as exc:
            raise self._redirects_error(exc) from exc
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
        if not self._install(response):
            await response.aclose()
            return False
        self._chunks = response.aiter_bytes()
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
        self._lost_state(exc)

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

    async def _reconnect_step(self) -> None:
        """One step after a loss: plan the next attempt (reported first in all()
        mode), then wait for it and make it."""
        wait = self._take_wait()
        if wait is None:
            return
        if wait > 0:
            await self._sleep(wait)
        if self._state == "closed":
            return
        try:
            await self._open()
        except SSEConnectionError:
            raise
        except Exception as exc:
            self._attempt_failed(exc)

    def restart(self) -> None:
        """Drop the current connection and reconnect at once, with the same
        ``Last-Event-ID`` (a wait for a reconnection is cut short). Not counted against
        the reconnection limits."""
        response = self._begin_restart()
        if self._wake is not None:
            self._wake.set()
        if response is not None:
            abort_socket(response)

    async def aclose(self) -> None:
        """Close the connection (at once, even if another task is blocked reading it)
        and the client if the source made it. Safe to call more than once."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._wake is not None:
            self._wake.set()
        response, self._response = self._response, None
        if response is not None:
            abort_socket(response)
        self._batch = []
        self._pos = 0
        self._chunks = None
        self._core.lost(_monotonic())
        if response is not None:
            with suppress(Exception):
                await response.aclose()
        if self._own_client:
            await self._client.aclose()
