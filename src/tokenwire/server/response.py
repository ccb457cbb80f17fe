"""The ASGI event-stream response: :class:`EventStreamResponse`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tokenwire.errors import DropConnection, public_error
from tokenwire.server import shutdown as _shutdown
from tokenwire.sse import ServerSentEvent, encode_comment

__all__ = ["EventStreamResponse", "encode_item"]

logger = logging.getLogger("tokenwire.server")

_DISCONNECT: Final = "disconnect"
_TIMEOUT: Final = "send_timeout"
_SHUTDOWN: Final = "shutdown"

_BOUNDARIES = (b"\n\n", b"\r\r", b"\r\n\r\n", b"\n\r\n", b"\r\n\n")
_dumps = orjson.dumps

OnDisconnect = Callable[[], Awaitable[None] | None]


def encode_item(item: object) -> bytes:
    """One source item as SSE bytes.

    ``ServerSentEvent`` -> its encoding; ``str`` -> the data of one event; ``dict`` /
    ``list`` -> one event with the compact JSON as data; ``bytes`` / ``bytearray`` /
    ``memoryview`` -> sent as is, and must be whole events: they must end with a
    blank line (or be comment lines only), so that nothing can be spliced into an
    event. Anything else raises ``TypeError``; invalid bytes, or an event field that
    would inject lines, raise ``ValueError``.
    """
    cls = type(item)
    if cls is str:
        assert isinstance(item, str)
        if "\n" in item or "\r" in item:
            return ServerSentEvent(item).encode()
        return b"data: " + item.encode() + b"\n\n"
    if cls is dict or cls is list:
        return b"data: " + _dumps(item) + b"\n\n"
    if cls is ServerSentEvent:
        assert isinstance(item, ServerSentEvent)
        return item.encode()
    if cls is bytes:
        assert isinstance(item, bytes)
        if item.endswith(_BOUNDARIES) or not item:
            return item
        return _check_bytes(item)
    if isinstance(item, ServerSentEvent):
        return item.encode()
    if isinstance(item, str):
        return ServerSentEvent(str(item)).encode()
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        return data if data.endswith(_BOUNDARIES) or not data else _check_bytes(data)
    if isinstance(item, dict | list | tuple):
        return b"data: " + _dumps(item) + b"\n\n"
    raise TypeError(
        f"cannot send a {cls.__name__} as a server-sent event: expected ServerSentEvent, "
        "str, dict, list or bytes"
    )


def _check_bytes(data: bytes) -> bytes:
    # Comment lines alone (``: keepalive\n``) also end at an event boundary.
    if data.endswith((b"\n", b"\r")):
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")[:-1]
        # Only the lines after the last blank line matter: they must all be comments.
        tail = lines[len(lines) - lines[::-1].index(b"") :] if b"" in lines else lines
        if all(line.startswith(b":") for line in tail):
            return data
    raise ValueError(
        "bytes sent on an event stream must be whole events ending with a blank line "
        f"(or comment lines only); got {data[-40:]!r} at the end"
    )


class _ThreadSource:
    """A sync iterable consumed on one dedicated thread (not one thread hop per item):
    items are encoded there and handed over through a small bounded buffer; the loop
    side gets everything buffered as one bytes chunk. Closing stops the thread after
    its current item and closes the iterator (a generator's ``finally`` runs there)."""

    __slots__ = ("_buf", "_cond", "_done", "_error", "_iterable", "_loop", "_stop", "_waiter")

    _CAPACITY = 32

    def __init__(self, iterable: Iterable[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._iterable = iterable
        self._loop = loop
        self._buf: deque[bytes] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="tokenwire-sync-source", daemon=True).start()

    def _run(self) -> None:
        it: Any = None
        error: BaseException | None = None
        try:
            it = iter(self._iterable)
            for item in it:
                data = encode_item(item)
                with self._cond:
                    while len(self._buf) >= self._CAPACITY and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        break
                    self._buf.append(data)
                    wake = self._waiter is not None
                if wake:
                    self._wake()
        except BaseException as exc:
            error = exc
        finally:
            if it is not None and hasattr(it, "close"):
                try:
                    it.close()
                except BaseException as exc:  # a finally that raised: report it
                    error = error or exc
            with self._cond:
                self._error = error
                self._done = True
            self._wake()

    def _wake(self) -> None:
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._set_waiter)

    def _set_waiter(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(None)

    def __aiter__(self) -> _ThreadSource:
        return self

    async def __anext__(self) -> bytes:
        while True:
            with self._cond:
                if self._buf:
                    data = b"".join(self._buf)
                    self._buf.clear()
                    self._cond.notify()
                    return data
                if self._done:
                    if self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()


class _Stream:
    """Per-response state shared by the streaming loop, the disconnect watcher, the
    heartbeat/send-timeout timer and the shutdown registry."""

    __slots__ = (
        "active",
        "cancelled_task",
        "heartbeat_bytes",
        "loop",
        "ping",
        "ping_task",
        "reason",
        "receive",
        "send",
        "send_start",
        "send_timeout",
        "sending",
        "task",
        "timer",
        "watcher",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        receive: Receive,
        send: Send,
        ping: float | None,
        send_timeout: float | None,
        heartbeat: bytes,
    ) -> None:
        self.loop = loop
        self.task = task
        self.heartbeat_bytes = heartbeat
        self.receive: Receive | None = receive
        self.send = send
        self.watcher: asyncio.Future[Message] | None = None
        self.ping = ping
        self.send_timeout = send_timeout
        self.reason: str | None = None
        self.active = False  # the main task may be cancelled to stop the source
        self.cancelled_task = False
        self.sending = False
        self.send_start = loop.time()  # start of the last write (heartbeats count from it)
        self.timer: asyncio.TimerHandle | None = None
        self.ping_task: asyncio.Task[None] | None = None

    def stop(self, reason: str) -> None:
        """Stop the stream (called on the loop): cancel whatever the main task awaits."""
        if self.reason is not None:
            return
        self.reason = reason
        if self.active:
            self.cancelled_task = True
            self.task.cancel()
        ping_task = self.ping_task
        if ping_task is not None and reason != _SHUTDOWN:
            ping_task.cancel()

    def on_shutdown(self) -> None:
        self.stop(_SHUTDOWN)

    # One timer per stream serves both the heartbeat and the send timeout: the hot
    # path only stamps ``send_start``/``sending``; the timer looks at them.
    def arm(self) -> None:
        if self.ping is None and self.send_timeout is None:
            return
        now = self.loop.time()
        if self.sending:
            deadline = self.send_start + (self.send_timeout or 3600.0)
            if self.ping is not None:
                # Look again after a ping interval: this write (often a heartbeat) is
                # usually long done by then, and the next heartbeat may be due.
                deadline = min(deadline, now + self.ping)
        else:
            deadline = self.send_start + self.ping if self.ping is not None else now + 3600.0
            if self.send_timeout is not None:
                # A write may start (and block) before the next heartbeat is due.
                deadline = min(deadline, now + self.send_timeout / 2)
        self.timer = self.loop.call_at(max(deadline, now + 0.001), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.reason is not None or not self.active:
            return
        now = self.loop.time()
        if self.sending:
            if self.send_timeout is not None and now - self.send_start >= self.send_timeout:
                self.stop(_TIMEOUT)
                return
        elif self.ping is not None and now - self.send_start >= self.ping:
            # The main task is waiting for the source, so this is an event boundary.
            self.sending = True
            self.send_start = now
            self.ping_task = self.loop.create_task(self.heartbeat())
        self.arm()

    async def heartbeat(self) -> None:
        try:
            body = self.heartbeat_bytes
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            self.stop(_DISCONNECT)
        finally:
            self.sending = False
            self.ping_task = None

    # The disconnect watcher is the server's own receive() run as a task, with a
    # done-callback (no wrapper coroutine where receive() gives a coroutine, as on
    # uvicorn: less memory per open stream).
    def watch(self, receive: Receive) -> None:
        awaitable = receive()
        if not asyncio.iscoroutine(awaitable):
            # Another server's own awaitable (granian's is future-like, yet gather()
            # fails on it once cancelled): awaited from a task, it behaves like a task.
            awaitable = _awaited(awaitable)
        watcher = self.watcher = self.loop.create_task(awaitable)
        watcher.add_done_callback(self.on_receive)

    def on_receive(self, watcher: asyncio.Future[Message]) -> None:
        if watcher.cancelled():
            return
        if watcher.exception() is not None or watcher.result()["type"] == "http.disconnect":
            self.watcher = None
            self.stop(_DISCONNECT)
        elif self.reason is None and self.receive is not None:
            self.watch(self.receive)  # a request body chunk nobody read: keep listening

    def close_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def _awaited(awaitable: Awaitable[Message]) -> Message:
    return await awaitable


_PING = encode_comment("ping")
_DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def _abort(scope: Scope) -> None:
    """Drop the connection (the ``tokenwire.abort`` extension of tokenwire's uvicorn
    protocol). Elsewhere the response is left unfinished, which servers answer by
    closing the connection."""
    abort = scope.get("extensions", {}).get("tokenwire.abort")
    if abort is not None:
        abort()


class EventStreamResponse(Response):
    """A streaming ``text/event-stream`` response; also a plain ASGI app.

    ``source`` is an async iterable, or a sync iterable (consumed on one dedicated
    thread, never on the event loop), of :class:`~tokenwire.sse.ServerSentEvent`,
    ``str`` (data), ``dict``/``list`` (JSON data) or ``bytes`` (already-encoded whole
    events); see :func:`encode_item`.

    - ``ping``: seconds of silence after which a heartbeat (``heartbeat``, by default
      a ``: ping`` comment line) is sent, from the start of the response (so before
      the first event) and only between events. ``None`` disables heartbeats.
    - ``send_timeout``: seconds any write (heartbeats too) may take before the client
      is taken to be stuck and dropped. ``None`` disables it.
    - ``on_disconnect``: called (and awaited if it returns an awaitable) after the
      source was stopped because the client went away or stopped reading.
    - ``headers`` are added to (and override) ``Content-Type: text/event-stream;
      charset=utf-8``, ``Cache-Control: no-cache`` and ``X-Accel-Buffering: no``.
    - ``background`` runs after a stream that ended normally, as in Starlette.
    - ``expose_errors``: tell the client an exception's own text. By default an
      exception from the source that is not a :class:`~tokenwire.errors.StreamError`
      ends the stream with a generic message and a reference id, logged with the
      traceback (:func:`~tokenwire.errors.public_error`).

    When the client disconnects (``http.disconnect``, or a failed write) the source is
    stopped at once: what it awaits is cancelled, an async generator is ``aclose()``\\ d
    so its ``finally`` blocks run, and no task is left behind. An exception from the
    source (or an item that cannot be encoded) is logged and ends the stream with an
    ``event: error`` event (:meth:`tokenwire.errors.StreamError.to_sse_event`), never
    in the middle of an event. A source that raises
    :class:`~tokenwire.errors.DropConnection` has the connection dropped instead,
    unfinished (a simulated network cut). On server shutdown (see :mod:`tokenwire.server`)
    the source is stopped and the body ends cleanly.
    """

    media_type = "text/event-stream"
    # How an error event is rendered, and what a shutdown writes last; the protocol
    # senders set these for their wire format.
    error_protocol: str = "generic"  # "generic" or a wire protocol's name
    shutdown_event: bytes | None = None
    expose_errors: bool = False
    #: What a heartbeat writes: an SSE comment, or for clients that take every line but
    #: a blank one for data, a blank line (a WireProtocol's ``heartbeat``).
    heartbeat: bytes = _PING

    def __init__(
        self,
        source: AsyncIterable[Any] | Iterable[Any],
        *,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
        on_disconnect: OnDisconnect | None = None,
        background: BackgroundTask | None = None,
        expose_errors: bool = False,
    ) -> None:
        if not isinstance(source, AsyncIterable | Iterable) or isinstance(
            source, str | bytes | bytearray | dict
        ):
            raise TypeError(
                f"source must be an (async) iterable of events, got {type(source).__name__}"
            )
        if ping is not None and not ping > 0:
            raise ValueError(f"ping must be a positive number of seconds or None, got {ping!r}")
        if send_timeout is not None and not send_timeout > 0:
            raise ValueError(
                f"send_timeout must be a positive number of seconds or None, got {send_timeout!r}"
            )
        self.source = source
        self.ping = ping
        self.send_timeout = send_timeout
        self.on_disconnect = on_disconnect
        self.status_code = status_code
        self.background = background
        if expose_errors:
            self.expose_errors = True
        self.body = b""
        if not headers:
            self.raw_headers = list(_DEFAULT_HEADERS)
            return
        merged = dict(_DEFAULT_HEADERS)
        for key, value in headers.items():
            merged[key.lower().encode("latin-1")] = value.encode("latin-1")
        self.raw_headers = list(merged.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"EventStreamResponse serves HTTP only, not {scope['type']!r}")
        # One coroutine frame for the whole stream (helpers run only at the ends), so
        # an idle open stream holds as little as possible.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stream = _Stream(loop, task, receive, send, self.ping, self.send_timeout, self.heartbeat)
        registered = _shutdown.register(loop, stream.on_shutdown)
        if registered is None:
            stream.reason = _SHUTDOWN
        stream.watch(receive)
        error: BaseException | None = None
        iterator: AsyncIterator[Any] | None = None
        try:
            start: Message = {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
            await send(start)
            iterator, raw = self._open_source(loop)
            if stream.reason is not None:
                raise asyncio.CancelledError  # shutdown had begun before we started
            anext = iterator.__anext__
            loop_time = loop.time
            stream.active = True
            stream.send_start = loop_time()
            stream.arm()
            while True:
                try:
                    item = await anext()
                except StopAsyncIteration:
                    break
                if stream.reason is not None:  # the source swallowed our cancellation
                    raise asyncio.CancelledError
                # The commonest item is encoded inline: a call would cost as much again.
                if raw:
                    body = item
                elif type(item) is str and "\n" not in item and "\r" not in item:
                    body = b"data: " + item.encode() + b"\n\n"
                else:
                    body = encode_item(item)
                if stream.ping_task is not None:
                    await stream.ping_task  # finish the heartbeat being written first
                stream.send_start = loop_time()
                stream.sending = True
                # A fresh dict per write: servers may keep a reference to what was sent.
                await send({"type": "http.response.body", "body": body, "more_body": True})
                stream.sending = False
        except asyncio.CancelledError:
            stream.active = False
            if stream.cancelled_task:
                stream.cancelled_task = False
                task.uncancel()
            if stream.reason is None or task.cancelling():
                # Cancelled from outside (e.g. the server's forced shutdown).
                await self._cleanup(stream, registered, iterator)
                raise
        except OSError:  # a failed write: the client is gone (ASGI 2.4 servers)
            stream.reason = _DISCONNECT
        except DropConnection:
            stream.reason = _DISCONNECT
            _abort(scope)
        except Exception as exc:
            error = exc
        finally:
            stream.active = False
            stream.sending = False
            stream.close_timer()
            if stream.cancelled_task:  # our cancellation was swallowed by the source
                stream.cancelled_task = False
                task.uncancel()
        try:
            completed = await self._end(stream, iterator, error)
        finally:
            await self._cleanup(stream, registered, None)
        if completed and self.background is not None:
            await self.background()

    def _open_source(self, loop: asyncio.AbstractEventLoop) -> tuple[AsyncIterator[Any], bool]:
        """The source as an async iterator, and whether its items are raw bytes already."""
        source = self.source
        if isinstance(source, AsyncIterable):
            return source.__aiter__(), getattr(source, "_tokenwire_bytes", False)
        return _ThreadSource(source, loop), True

    async def _end(
        self, stream: _Stream, iterator: AsyncIterator[Any] | None, error: BaseException | None
    ) -> bool:
        """Close the source and end the response; True when it ended normally."""
        reason = stream.reason
        await self._close_source(iterator)
        if reason in (_DISCONNECT, _TIMEOUT):
            if reason == _TIMEOUT:
                logger.warning(
                    "event stream dropped: a write took longer than send_timeout=%ss",
                    self.send_timeout,
                )
            await self._disconnected()
            return False
        tail = b""
        if error is not None:
            told = public_error(error, expose=self.expose_errors)
            if told.reference is None:  # (public_error logged what it hid)
                logger.error("event stream source failed; ending the stream", exc_info=error)
            tail = told.to_sse_event(self.error_protocol)
        elif reason == _SHUTDOWN and self.shutdown_event is not None:
            tail = self.shutdown_event
        try:
            # The timer is off by now; the last write gets its own send_timeout.
            async with asyncio.timeout(self.send_timeout):
                if stream.ping_task is not None:
                    await asyncio.gather(stream.ping_task, return_exceptions=True)
                last: Message = {"type": "http.response.body", "body": tail, "more_body": False}
                await stream.send(last)
        except OSError:  # TimeoutError included
            await self._disconnected()
            return False
        return reason is None and error is None

    async def _cleanup(
        self,
        stream: _Stream,
        registered: _shutdown._LoopState | None,
        iterator: AsyncIterator[Any] | None,
    ) -> None:
        """Leave nothing behind: registry entry, timer, watcher and heartbeat tasks."""
        if registered is not None:
            registered.streams.discard(stream.on_shutdown)
        stream.close_timer()
        stream.receive = None
        tasks = [t for t in (stream.watcher, stream.ping_task) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if iterator is not None:
            await self._close_source(iterator)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_source(self, iterator: AsyncIterator[Any] | None) -> None:
        if iterator is None:
            return
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except Exception:
            logger.exception("closing the event stream source failed")

    async def _disconnected(self) -> None:
        callback = self.on_disconnect
        if callback is None:
            return
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_disconnect callback failed")
