"""Stream control: deadlines and cancellation for any async iterable.

:func:`guard` wraps a stream (an httpx2 body iterator, an SDK stream, an async
generator) so that it ends with a :class:`~tokenwire.errors.StreamError` when a deadline
passes or a cancel event is set, even while a read is blocked, and so that the wrapped
stream is always closed: its ``aclose()`` runs, and with it the ``finally`` blocks that
release the upstream connection.

How it stays cheap per item: all deadlines share one ``loop.call_at`` timer that is
re-armed lazily. Each item only records a new idle deadline; when the timer fires early
because items kept arriving, it moves itself to the current deadline, so it fires about
once per ``idle_timeout`` instead of being re-created per item. A blocked read is
interrupted by cancelling the task that waits on it and turning that cancellation back
into a ``StreamError`` (with ``Task.uncancel``, as ``asyncio.timeout`` does), so no task
is created per item either. A ``cancel`` event costs one watcher task per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import sys
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, TypeVar

from tokenwire.errors import DropConnection, StreamError

__all__ = ["guard"]

T = TypeVar("T")

_INF = math.inf
# Why the guard stopped a stream; also the `code` of the StreamError it raises.
_TOTAL = "timeout"
_FIRST = "first_chunk_timeout"
_IDLE = "idle_timeout"
_CANCEL = "cancelled"


def guard(
    stream: AsyncIterable[T],
    *,
    timeout: float | None = None,
    first_chunk_timeout: float | None = None,
    idle_timeout: float | None = None,
    cancel: asyncio.Event | None = None,
    started: float | None = None,
) -> AsyncGenerator[T, None]:
    """Wrap ``stream`` with deadlines and cancellation; returns an async generator.

    - ``timeout``: seconds for the whole stream, counted from the first ``__anext__``
      (or from ``started``).
    - ``first_chunk_timeout``: seconds from the first ``__anext__`` (or from
      ``started``) to the first item.
    - ``started``: the event loop time (``loop.time()``) the two deadlines above count
      from, when that is earlier than the first read: e.g. when the request was
      accepted, so that the time spent waiting for the stream to open counts too.
    - ``idle_timeout``: seconds to wait for each next item (time the consumer spends
      between items does not count).
    - ``cancel``: an ``asyncio.Event``; once it is set no further item is delivered.

    When a deadline passes, the pending read is interrupted and
    ``StreamError("timeout", ...)`` is raised; its message and ``code`` name the deadline
    (``"timeout"``, ``"first_chunk_timeout"`` or ``"idle_timeout"``). A set ``cancel``
    raises ``StreamError("cancelled", ...)``. An exception from the stream itself is
    raised as ``StreamError.from_exception(exc)`` chained to the original (a
    ``StreamError`` from the stream passes through as is, and so does
    :class:`~tokenwire.errors.DropConnection`). If the consuming task is
    cancelled from outside, ``asyncio.CancelledError`` propagates unchanged.

    In every one of these cases the wrapped stream is closed before the error leaves
    the guard: its iterator's and then its own ``aclose()`` (or ``close()``, as the
    ``openai``/``anthropic`` SDK streams have) is called and awaited. To close at once
    when leaving an ``async for`` early, use
    ``async with contextlib.aclosing(guard(...)) as items:``; otherwise an abandoned
    guard is closed by asyncio's async-generator finalizer soon after it is
    garbage-collected. To stop a stream from another task, set ``cancel``: an async
    generator cannot be closed while a read is in progress.

    Raises ``TypeError`` if ``stream`` is not an async iterable or a timeout is not a
    number, and ``ValueError`` for a negative or NaN timeout, here, before iteration.
    """
    if not hasattr(stream, "__aiter__"):
        raise TypeError(f"guard() needs an async iterable, got {type(stream).__name__}")
    if cancel is not None and not isinstance(cancel, asyncio.Event):
        raise TypeError(f"cancel must be an asyncio.Event or None, not {type(cancel).__name__}")
    control = _Control(
        _check_timeout("timeout", timeout),
        _check_timeout("first_chunk_timeout", first_chunk_timeout),
        _check_timeout("idle_timeout", idle_timeout),
    )
    control.started = started
    return _guarded(stream, control, cancel)


def _check_timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds or None, got {value!r}")
    return float(value)


class _Control:
    """Deadline and cancellation state of one guarded stream, shared with the loop's
    timer and the cancel watcher. Holds no reference to the generator, so an abandoned
    guard can still be garbage-collected and finalized."""

    __slots__ = (
        "end",
        "fired",
        "first",
        "first_deadline",
        "handle",
        "idle",
        "idle_deadline",
        "loop",
        "pending",
        "received",
        "started",
        "task",
        "total",
        "when",
    )

    def __init__(self, total: float | None, first: float | None, idle: float | None) -> None:
        self.total = total
        self.first = first
        self.idle = idle
        self.loop: asyncio.AbstractEventLoop | None = None
        self.end = _INF  # absolute deadline of `timeout`
        self.first_deadline = _INF
        self.idle_deadline = _INF
        self.handle: asyncio.TimerHandle | None = None
        self.when = _INF  # when the timer is armed for
        self.task: asyncio.Task[Any] | None = None  # the task awaiting the source, if any
        self.fired: str | None = None  # why we cancelled self.task
        self.pending: str | None = None  # what expired while no read was waiting
        self.received = False
        self.started: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        now = loop.time() if self.started is None else self.started
        if self.total is not None:
            self.end = now + self.total
        if self.first is not None:
            self.first_deadline = now + self.first
        deadline = min(self.end, self.first_deadline)
        if deadline < _INF:
            self.arm(deadline)

    def arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.when = when
        self.handle = self.loop.call_at(when, self.on_timer)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.when = _INF
        self.task = None

    def deadline(self) -> tuple[float, str]:
        """The deadline that applies now, and its name."""
        deadline, reason = self.end, _TOTAL
        if not self.received and self.first_deadline < deadline:
            deadline, reason = self.first_deadline, _FIRST
        if self.task is not None and self.idle is not None and self.idle_deadline < deadline:
            deadline, reason = self.idle_deadline, _IDLE
        return deadline, reason

    def on_timer(self) -> None:
        when = self.when
        self.handle = None
        self.when = _INF
        deadline, reason = self.deadline()
        if deadline == _INF:
            return  # only an idle deadline was due, and no read is waiting now
        if deadline > when:
            self.arm(deadline)  # items arrived meanwhile: move on to the current deadline
        else:
            self.expire(reason)

    def on_cancel(self, watcher: asyncio.Task[Any]) -> None:
        if not watcher.cancelled():
            self.expire(_CANCEL)

    def expire(self, reason: str) -> None:
        if self.fired is not None:
            return
        task = self.task
        if task is not None:
            self.fired = reason
            task.cancel()
        elif self.pending is None:
            self.pending = reason

    def converted(self, task: asyncio.Task[Any] | None, exc: BaseException | None) -> BaseException:
        """Our own cancellation ended the read: undo it, and return the StreamError to
        raise; but if the task was also cancelled from outside, a CancelledError."""
        reason = self.fired or _CANCEL
        self.fired = None
        if task is not None and task.uncancel() > 0:
            return exc if isinstance(exc, asyncio.CancelledError) else asyncio.CancelledError()
        return self.error(reason)

    def error(self, reason: str) -> StreamError:
        if reason == _CANCEL:
            return StreamError("cancelled", "The stream was cancelled.", code=_CANCEL)
        if reason == _FIRST:
            message = f"The stream timed out: no first item within {self.first:g} s"
        elif reason == _IDLE:
            message = f"The stream timed out: no new item within {self.idle:g} s"
        else:
            message = f"The stream timed out: it ran longer than {self.total:g} s"
        return StreamError("timeout", f"{message} ({reason}).", code=reason)


async def _guarded(
    stream: AsyncIterable[T], control: _Control, cancel: asyncio.Event | None
) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    source = stream.__aiter__()
    watcher: asyncio.Task[Any] | None = None
    current_task = asyncio.current_task
    try:
        control.start(loop)
        if cancel is not None:
            if cancel.is_set():
                raise control.error(_CANCEL)
            watcher = loop.create_task(cancel.wait())
            watcher.add_done_callback(control.on_cancel)
        anext = source.__anext__
        idle = control.idle
        # With no deadline and no cancel event nothing can interrupt a read, so the
        # task lookup (the main per-item cost) is skipped.
        interruptible = cancel is not None or control.handle is not None or idle is not None
        while True:
            if control.pending is not None:
                raise control.error(control.pending)
            if cancel is not None and cancel.is_set():
                raise control.error(_CANCEL)
            if idle is not None:
                deadline = loop.time() + idle
                control.idle_deadline = deadline
                if deadline < control.when:
                    control.arm(deadline)
            # Looked up per item: a consumer may drive us from a new task each time
            # (e.g. asyncio.wait_for(anext(g), ...)), and only that task can be cancelled.
            task = current_task(loop) if interruptible else None
            control.task = task
            try:
                item = await anext()
            except StopAsyncIteration as exc:
                control.task = None
                if control.fired is not None:
                    raise control.converted(task, exc) from None
                return
            except asyncio.CancelledError as exc:
                control.task = None
                if control.fired is not None:
                    raise control.converted(task, exc) from None
                raise
            except Exception as exc:
                control.task = None
                if control.fired is not None:
                    raise control.converted(task, exc) from None
                if type(exc) is DropConnection:
                    raise  # for the server to act on, not an error of the stream
                err = StreamError.from_exception(exc)
                if err is exc:
                    raise
                raise err from exc
            except BaseException:
                control.task = None
                raise
            control.task = None
            if control.fired is not None:
                # The source swallowed our cancellation and produced an item anyway; the
                # deadline has still passed.
                raise control.converted(task, None) from None
            control.received = True
            yield item
    finally:
        control.stop()
        if watcher is not None:
            watcher.cancel()
        if sys.exc_info()[1] is None:
            await _close(source, stream)
        else:
            # Another error is already on its way out; it is the one that matters.
            with contextlib.suppress(Exception):
                await _close(source, stream)


async def _close(source: object, stream: object) -> None:
    """Close the iterator, then the iterable if it is another object: ``aclose()``, or
    else ``close()`` (awaited if it returns an awaitable). The official SDKs' streams
    have only ``close()``, and closing their iterator does not close their response."""
    for obj in (source,) if stream is source else (source, stream):
        close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
