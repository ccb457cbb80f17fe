"""The event log interface, the per-process event buffer and the in-memory log.

An :class:`EventLog` stores the events of resumable streams so that a reader can
replay them after a given sequence number and then follow the live stream. Events are
stored already encoded (``id:`` line included), so a replay is a concatenation.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Final, Literal

from tokenwire.errors import StreamError

__all__ = [
    "EventBuffer",
    "EventLog",
    "LogUnavailable",
    "MemoryEventLog",
    "StreamNotFound",
    "check_stream_id",
    "format_event_id",
    "parse_event_id",
]

Protocol = Literal["generic", "openai", "anthropic"]
CancelResult = Literal["cancelled", "finished"]

_STREAM_ID = re.compile(r"[A-Za-z0-9_]{1,128}")
_PAST: Final = 1 << 62  # a reader position after every event: the reader is over


class StreamNotFound(StreamError):
    """No stream has this id (it never existed, or it expired and was cleaned up), or
    the event id is not one of its events. HTTP 404; ``code`` is ``stream_not_found``
    or ``event_not_found``."""

    def __init__(self, message: str, *, code: str = "stream_not_found") -> None:
        super().__init__("not_found", message, status=404, code=code)


class LogUnavailable(StreamError):
    """The event log (Redis) cannot be reached or failed. HTTP 503, ``code``
    ``resume_store_unavailable``; requests fail fast with it instead of hanging."""

    def __init__(self, message: str) -> None:
        super().__init__("overloaded", message, status=503, code="resume_store_unavailable")


def check_stream_id(stream_id: str) -> str:
    """``stream_id`` if it is 1-128 characters of ``[A-Za-z0-9_]``; else ``ValueError``
    (stream ids become parts of Redis keys and SSE ids)."""
    if type(stream_id) is not str or _STREAM_ID.fullmatch(stream_id) is None:
        raise ValueError(f"a stream id is 1-128 characters of [A-Za-z0-9_], got {stream_id!r}")
    return stream_id


def format_event_id(stream_id: str, seq: int) -> str:
    """The SSE ``id`` of event number ``seq`` (from 1) of a stream: ``<stream id>-<seq>``."""
    return f"{stream_id}-{seq}"


def parse_event_id(event_id: str) -> tuple[str, int]:
    """``(stream id, sequence)`` from an SSE id ``<stream id>-<seq>``.

    ``<stream id>`` alone means "from the start" (sequence 0). Raises
    :class:`~tokenwire.errors.StreamError` (``invalid_request``, HTTP 400) for anything
    else."""
    sid, sep, seq = event_id.strip().rpartition("-")
    if not sep:
        sid, seq = seq, "0"
    if _STREAM_ID.fullmatch(sid) is None or not seq.isascii() or not seq.isdigit():
        raise StreamError(
            "invalid_request",
            f"malformed Last-Event-ID {event_id[:200]!r}: expected <stream id>-<sequence>",
            status=400,
            code="invalid_event_id",
        )
    return sid, int(seq)


class EventBuffer:
    """The events of one stream held in this process, in order, with the readers
    waiting for more. Event ``seq`` (from 1) is ``entries[seq - 1 - base]``; ``base``
    grows when old events are trimmed (``max_events``). ``end`` is the sequence number
    of the last event once the stream ended, else ``None``."""

    __slots__ = ("_waiters", "base", "end", "entries", "max_events", "on_idle", "readers")

    def __init__(self, max_events: int | None = None) -> None:
        self.entries: list[bytes] = []
        self.base = 0
        self.end: int | None = None
        self.max_events = max_events
        self.readers = 0
        # Called when the last reader leaves a stream that has not ended (grace period).
        self.on_idle: Callable[[], None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def last(self) -> int:
        """Sequence number of the newest event (0 if none)."""
        return self.base + len(self.entries)

    def add(self, data: bytes) -> None:
        entries = self.entries
        entries.append(data)
        cap = self.max_events
        # Trim in steps of a quarter so that the cost is amortized.
        if cap is not None and len(entries) > cap + (cap >> 2):
            drop = len(entries) - cap
            del entries[:drop]
            self.base += drop
        if self._waiters:
            self._wake()

    def close(self) -> None:
        if self.end is None:
            self.end = self.last
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future done when an event is added or the stream ends (awaiting it costs
        one coroutine less than :meth:`wait`: readers use it for every event)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def wait(self) -> None:
        """Wait until an event is added or the stream ends."""
        await self.waiter()

    def detach(self) -> None:
        self.readers -= 1
        if self.readers == 0 and self.end is None and self.on_idle is not None:
            self.on_idle()


class LocalReader:
    """Reads an :class:`EventBuffer` of this process from event ``after + 1``: each step
    returns every event available, joined. Ends after the last event; an event that was
    trimmed away ends the stream with an error event instead."""

    __slots__ = ("_buffer", "_closed", "_error", "_pos", "_protocol")

    _tokenwire_bytes = True  # whole encoded events: EventStreamResponse sends them as is

    def __init__(self, buffer: EventBuffer, after: int, protocol: Protocol) -> None:
        self._buffer = buffer
        self._pos = after
        self._closed = False
        self._error: bytes | None = None
        self._protocol = protocol
        buffer.readers += 1

    def __aiter__(self) -> LocalReader:
        return self

    async def __anext__(self) -> bytes:
        buffer = self._buffer
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                self._pos = _PAST
                return error
            last = buffer.base + len(buffer.entries)
            pos = self._pos
            if pos < last:
                start = pos - buffer.base
                if start < 0:
                    self._error = StreamNotFound(
                        f"events after {pos} were trimmed from the log (max_events)",
                        code="stream_expired",
                    ).to_sse_event(self._protocol)
                    continue
                entries = buffer.entries
                self._pos = last
                return entries[start] if last - pos == 1 else b"".join(entries[start:])
            if buffer.end is not None or pos >= _PAST:
                raise StopAsyncIteration
            await buffer.waiter()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer.detach()


class EventLog(ABC):
    """Where resumable streams' events are kept, for readers in this or other processes.

    The producer's own process reads its :class:`EventBuffer` directly; the log serves
    reconnects (after the producer finished, or in another process). Implementations:
    :class:`MemoryEventLog` (one process) and
    :class:`~tokenwire.resume.redis.RedisEventLog` (many processes, Redis Streams).
    """

    #: The log keeps the producer's :class:`EventBuffer` itself (no writes needed).
    shares_buffer: bool = False
    #: This process's id (the producer identity readers check for liveness).
    node: str = "local"
    _cancel_callback: Callable[[str], None] | None = None

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Connect and start background work; idempotent. Raises :class:`LogUnavailable`."""

    @abstractmethod
    async def create(self, stream_id: str, buffer: EventBuffer, protocol: Protocol) -> None:
        """Register a new stream produced by this process. Raises ``ValueError`` if the
        id is taken, :class:`LogUnavailable` if the log cannot be reached."""

    @abstractmethod
    async def write(self, stream_id: str, events: list[tuple[int, bytes]], end: int | None) -> None:
        """Append ``(seq, encoded event)`` pairs in order; ``end`` (the last sequence
        number) marks the stream finished after them."""

    async def write_many(
        self, batches: list[tuple[str, list[tuple[int, bytes]], int | None]]
    ) -> None:
        """:meth:`write` for several streams ``(stream id, events, end)`` at once (one
        round trip where the log allows it)."""
        for stream_id, events, end in batches:
            await self.write(stream_id, events, end)

    @abstractmethod
    async def discard(self, stream_id: str) -> None:
        """Forget a stream that was created but never started (e.g. its upstream failed)."""

    @abstractmethod
    async def open(
        self, stream_id: str, after: int, protocol: Protocol
    ) -> AsyncIterator[bytes] | None:
        """A reader of the events after ``after``, following the live stream until its end.

        Returns ``None`` when the stream has ended and nothing follows ``after``. Raises
        :class:`StreamNotFound` for an unknown or expired stream or an event id past its
        end, :class:`LogUnavailable` when the log cannot be reached. Failures while
        reading (the producer died, the log was lost) end the reader with an error event
        in ``protocol``'s shape."""

    @abstractmethod
    async def cancel(self, stream_id: str) -> CancelResult:
        """Ask the producer of a running stream, wherever it runs, to stop. Returns
        ``"cancelled"`` (requested) or ``"finished"`` (nothing to stop); raises
        :class:`StreamNotFound`."""

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Register the function called (on this process's loop) with a stream id when a
        cancellation is requested through the log, from any process."""
        self._cancel_callback = callback

    async def reader_elsewhere(self, stream_id: str) -> bool:
        """Whether a reader in another process read this stream recently."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and close connections."""


class MemoryEventLog(EventLog):
    """Keeps each stream's :class:`EventBuffer` in this process (the default log).

    A finished stream is forgotten ``expiry`` seconds after its end; ``max_events``
    bounds the events kept per stream (older ones are trimmed; a reader that needs them
    gets a ``stream_expired`` error)."""

    shares_buffer = True

    def __init__(self, *, expiry: float = 600.0, max_events: int | None = 100_000) -> None:
        if not expiry > 0:
            raise ValueError(f"expiry must be a positive number of seconds, got {expiry!r}")
        self.expiry = expiry
        self.max_events = max_events
        self._streams: dict[str, EventBuffer] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def create(self, stream_id: str, buffer: EventBuffer, protocol: Protocol) -> None:
        if stream_id in self._streams:
            raise ValueError(f"stream id {stream_id!r} is already in use")
        buffer.max_events = self.max_events
        self._streams[stream_id] = buffer

    async def write(self, stream_id: str, events: list[tuple[int, bytes]], end: int | None) -> None:
        # The buffer is shared with the producer: events are there already.
        if end is not None and stream_id in self._streams:
            loop = asyncio.get_running_loop()
            self._timers[stream_id] = loop.call_later(self.expiry, self._expire, stream_id)

    def _expire(self, stream_id: str) -> None:
        self._timers.pop(stream_id, None)
        self._streams.pop(stream_id, None)

    async def discard(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        timer = self._timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()

    async def open(
        self, stream_id: str, after: int, protocol: Protocol
    ) -> AsyncIterator[bytes] | None:
        buffer = self._streams.get(stream_id)
        if buffer is None:
            raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
        return open_buffer(buffer, stream_id, after, protocol)

    async def cancel(self, stream_id: str) -> CancelResult:
        buffer = self._streams.get(stream_id)
        if buffer is None:
            raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
        if buffer.end is not None:
            return "finished"
        if self._cancel_callback is not None:
            self._cancel_callback(stream_id)
        return "cancelled"

    async def aclose(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._streams.clear()


def open_buffer(
    buffer: EventBuffer, stream_id: str, after: int, protocol: Protocol
) -> LocalReader | None:
    """A :class:`LocalReader` of ``buffer`` after event ``after`` (see :meth:`EventLog.open`)."""
    last = buffer.last
    if after > last:
        raise StreamNotFound(
            f"event {format_event_id(stream_id, after)} does not exist (the stream has {last})",
            code="event_not_found",
        )
    if buffer.end is not None and after == buffer.end:
        return None
    return LocalReader(buffer, after, protocol)
