"""The event log interface, the per-process event buffer and the in-memory log.

An :class:`EventLog` stores the events of resumable streams so that a reader can
replay them after a given sequence number and then follow the live stream. Events are
stored already encoded (``id:`` line included), so a replay is a concatenation.
"""

from __future__ import annotations

import asyncio
import hmac
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
    "WrongProtocol",
    "check_stream_id",
    "format_event_id",
    "parse_event_id",
]

Protocol = str
"""``"generic"`` or a registered wire protocol's name: the shape of a stream's events."""
CancelResult = Literal["cancelled", "finished"]

_STREAM_ID = re.compile(r"[A-Za-z0-9_]{1,128}")
_PAST: Final = 1 << 62  # a reader position after every event: the reader is over
_MAX_SEQ_DIGITS: Final = 18  # below _PAST; longer numbers are malformed ids
_JOIN: Final = 64 * 1024  # bytes of events a reader returns at once


class StreamNotFound(StreamError):
    """No stream has this id (it never existed, or it expired and was cleaned up), or
    the event id is not one of its events. HTTP 404; ``code`` is ``stream_not_found``
    or ``event_not_found``."""

    def __init__(self, message: str, *, code: str = "stream_not_found") -> None:
        super().__init__("not_found", message, status=404, code=code)


class WrongProtocol(StreamError):
    """A stream resumed through another protocol's endpoint than the one that created
    it (an OpenAI stream resumed on ``/v1/messages``). HTTP 400, ``code``
    ``wrong_protocol``."""

    def __init__(self, stream_id: str, stream_protocol: str, asked: str) -> None:
        super().__init__(
            "invalid_request",
            f"stream {stream_id!r} is a {stream_protocol} stream; resume it on the "
            f"endpoint that created it, not as {asked}",
            status=400,
            code="wrong_protocol",
        )


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
    if (
        _STREAM_ID.fullmatch(sid) is None
        or not seq.isascii()
        or not seq.isdigit()
        or len(seq) > _MAX_SEQ_DIGITS
    ):
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
    grows when old events are trimmed (``max_events``, or the log's memory budget).
    ``end`` is the sequence number of the last event once the stream ended, else
    ``None``; ``size`` the bytes of the events held. ``protocol`` and ``owner`` (a
    digest of the API key that created it, or ``""``) are who may read it."""

    __slots__ = (
        "_waiters",
        "base",
        "budget",
        "end",
        "entries",
        "max_events",
        "on_idle",
        "owner",
        "protocol",
        "readers",
        "record",
        "size",
    )

    def __init__(
        self, max_events: int | None = None, *, protocol: Protocol = "generic", owner: str = ""
    ) -> None:
        self.entries: list[bytes] = []
        self.base = 0
        self.end: int | None = None
        self.max_events = max_events
        self.readers = 0
        self.size = 0
        self.protocol: Protocol = protocol
        self.owner = owner
        # Shared by the buffers of a log with a memory budget (MemoryEventLog).
        self.budget: _Budget | None = None
        self.record: bytes | None = None  # EventLog.put_record
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
        size = len(data)
        self.size += size
        cap = self.max_events
        # Trim in steps of a quarter so that the cost is amortized.
        if cap is not None and len(entries) > cap + (cap >> 2):
            self.trim(len(entries) - cap)
        budget = self.budget
        if budget is not None:
            budget.used += size
            if budget.used > budget.limit:
                budget.shed()
        if self._waiters:
            self._wake()

    def trim(self, count: int) -> int:
        """Drop the oldest ``count`` events; returns the bytes freed. A reader that
        still needed them ends with ``stream_expired``."""
        dropped = self.entries[:count]
        del self.entries[:count]
        self.base += len(dropped)
        freed = sum(map(len, dropped))
        self.size -= freed
        if self.budget is not None:
            self.budget.used -= freed
        return freed

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
                        f"events after {pos} were trimmed from the log (max_events, or "
                        "the memory budget of resumable streams)",
                        code="stream_expired",
                    ).to_sse_event(self._protocol)
                    continue
                entries = buffer.entries
                if last - pos == 1:
                    self._pos = last
                    return entries[start]
                # Join what is there, up to about _JOIN bytes: a client that does not
                # read must not get megabytes written into its transport at once.
                end = start
                size = 0
                stop = last - buffer.base
                while end < stop and size < _JOIN:
                    size += len(entries[end])
                    end += 1
                self._pos = buffer.base + end
                return b"".join(entries[start:end])
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
        """Register a new stream produced by this process (its reader's protocol and
        owner are ``buffer.protocol`` and ``buffer.owner``). Raises ``ValueError`` if
        the id is taken, :class:`LogUnavailable` if the log cannot be reached."""

    @abstractmethod
    async def write(self, stream_id: str, events: list[tuple[int, bytes]], end: int | None) -> None:
        """Append ``(seq, encoded event)`` pairs in order; ``end`` (the last sequence
        number) marks the stream finished after them."""

    async def write_many(
        self, batches: list[tuple[str, list[tuple[int, bytes]], int | None]]
    ) -> set[str]:
        """:meth:`write` for several streams ``(stream id, events, end)`` at once (one
        round trip where the log allows it). Returns the streams whose write did not
        land (to be retried as it was); raises when the log could not be reached."""
        failed = set()
        for stream_id, events, end in batches:
            try:
                await self.write(stream_id, events, end)
            except Exception:
                failed.add(stream_id)
        return failed

    def report(self, behind: dict[str, tuple[int, int]]) -> None:  # noqa: B027
        """Learn which streams of this process the log is behind on: ``{stream id:
        (last written, last produced)}``, replacing the previous report (a shared log
        tells readers elsewhere, so they can tell a stalled log from a slow producer)."""

    def mark_broken(self, stream_id: str, written: int) -> None:  # noqa: B027
        """The producer gave up writing ``stream_id``: the log has its events up to
        ``written`` only, and readers elsewhere must be told."""

    @abstractmethod
    async def discard(self, stream_id: str) -> None:
        """Forget a stream that was created but never started (e.g. its upstream failed)."""

    @abstractmethod
    async def open(
        self, stream_id: str, after: int, protocol: Protocol, owner: str = ""
    ) -> AsyncIterator[bytes] | None:
        """A reader of the events after ``after``, following the live stream until its end.

        Returns ``None`` when the stream has ended and nothing follows ``after``. Raises
        :class:`StreamNotFound` for an unknown or expired stream, one that ``owner``
        did not create, or an event id past its end; :class:`WrongProtocol` for a
        stream of another protocol; :class:`LogUnavailable` when the log cannot be
        reached. Failures while reading (the producer died, the log was lost) end the
        reader with an error event in ``protocol``'s shape."""

    @abstractmethod
    async def cancel(self, stream_id: str, owner: str = "") -> CancelResult:
        """Ask the producer of a running stream, wherever it runs, to stop. Returns
        ``"cancelled"`` (requested) or ``"finished"`` (nothing to stop); raises
        :class:`StreamNotFound` (also for a stream ``owner`` did not create)."""

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Register the function called (on this process's loop) with a stream id when a
        cancellation is requested through the log, from any process."""
        self._cancel_callback = callback

    async def reader_elsewhere(self, stream_id: str) -> bool:
        """Whether a reader in another process read this stream recently."""
        return False

    @abstractmethod
    async def snapshot(self, stream_id: str, owner: str = "") -> tuple[bytes, bool]:
        """The events of a stream of ``owner`` stored so far, joined, and whether the
        stream has ended; :class:`StreamNotFound` for an unknown stream or another
        owner's."""

    @abstractmethod
    async def put_record(self, stream_id: str, data: bytes) -> None:
        """Keep ``data`` with the stream, as long as the stream is kept (a gateway
        keeps the request a reply answered, so that a later request can continue the
        conversation). Raises :class:`LogUnavailable`."""

    @abstractmethod
    async def get_record(self, stream_id: str, owner: str = "") -> bytes | None:
        """The record kept with a stream of ``owner`` (``None`` if there is none);
        :class:`StreamNotFound` for an unknown stream or another owner's."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and close connections."""


class _Budget:
    """The bytes all buffers of one log may hold; ``shed`` brings ``used`` back under
    ``limit`` when an event takes it over."""

    __slots__ = ("limit", "shed", "used")

    def __init__(self, limit: int, shed: Callable[[], None]) -> None:
        self.limit = limit
        self.used = 0
        self.shed = shed


class MemoryEventLog(EventLog):
    """Keeps each stream's :class:`EventBuffer` in this process (the default log).

    A finished stream is forgotten ``expiry`` seconds after its end; ``max_events``
    bounds the events kept per stream (older ones are trimmed; a reader that needs them
    gets a ``stream_expired`` error). ``max_bytes`` bounds the events of all streams
    together: past it, finished streams are forgotten, oldest first, and then the
    oldest events of the largest running streams are trimmed, down to 3/4 of it."""

    shares_buffer = True

    def __init__(
        self,
        *,
        expiry: float = 600.0,
        max_events: int | None = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if not expiry > 0:
            raise ValueError(f"expiry must be a positive number of seconds, got {expiry!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.expiry = expiry
        self.max_events = max_events
        self._budget = _Budget(max_bytes, self._shed)
        self._streams: dict[str, EventBuffer] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def bytes_held(self) -> int:
        """Bytes of the events held for all streams."""
        return self._budget.used

    async def create(self, stream_id: str, buffer: EventBuffer, protocol: Protocol) -> None:
        if stream_id in self._streams:
            raise ValueError(f"stream id {stream_id!r} is already in use")
        buffer.max_events = self.max_events
        buffer.budget = self._budget
        self._budget.used += buffer.size
        self._streams[stream_id] = buffer

    def _forget(self, stream_id: str) -> None:
        buffer = self._streams.pop(stream_id, None)
        timer = self._timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()
        if buffer is not None:
            # Readers still attached lose the events too (they get stream_expired):
            # a forgotten stream holds no memory.
            buffer.trim(len(buffer.entries))
            buffer.budget = None

    def _shed(self) -> None:
        budget = self._budget
        goal = budget.limit - (budget.limit >> 2)
        for stream_id in [sid for sid, b in self._streams.items() if b.end is not None]:
            if budget.used <= goal:
                return
            self._forget(stream_id)  # dicts keep creation order: oldest first
        for buffer in sorted(self._streams.values(), key=lambda b: b.size, reverse=True):
            if budget.used <= goal:
                return
            excess = budget.used - goal
            count = 0
            freed = 0
            for data in buffer.entries:
                if freed >= excess:
                    break
                freed += len(data)
                count += 1
            buffer.trim(count)

    async def write(self, stream_id: str, events: list[tuple[int, bytes]], end: int | None) -> None:
        # The buffer is shared with the producer: events are there already.
        if end is not None and stream_id in self._streams:
            loop = asyncio.get_running_loop()
            self._timers[stream_id] = loop.call_later(self.expiry, self._expire, stream_id)

    def _expire(self, stream_id: str) -> None:
        self._timers.pop(stream_id, None)
        self._forget(stream_id)

    async def discard(self, stream_id: str) -> None:
        self._forget(stream_id)

    def _buffer(self, stream_id: str, owner: str) -> EventBuffer:
        buffer = self._streams.get(stream_id)
        if buffer is None or not hmac.compare_digest(buffer.owner, owner):
            raise _not_found(stream_id)
        return buffer

    async def open(
        self, stream_id: str, after: int, protocol: Protocol, owner: str = ""
    ) -> AsyncIterator[bytes] | None:
        buffer = self._buffer(stream_id, owner)
        return open_buffer(buffer, stream_id, after, protocol)

    async def snapshot(self, stream_id: str, owner: str = "") -> tuple[bytes, bool]:
        return buffer_snapshot(self._buffer(stream_id, owner))

    async def put_record(self, stream_id: str, data: bytes) -> None:
        buffer = self._streams.get(stream_id)
        if buffer is not None:
            buffer.record = data

    async def get_record(self, stream_id: str, owner: str = "") -> bytes | None:
        return self._buffer(stream_id, owner).record

    async def cancel(self, stream_id: str, owner: str = "") -> CancelResult:
        buffer = self._buffer(stream_id, owner)
        if buffer.end is not None:
            return "finished"
        if self._cancel_callback is not None:
            self._cancel_callback(stream_id)
        return "cancelled"

    async def aclose(self) -> None:
        for stream_id in list(self._streams):
            self._forget(stream_id)


def buffer_snapshot(buffer: EventBuffer) -> tuple[bytes, bool]:
    """A buffer's events so far, joined, and whether its stream has ended."""
    return b"".join(buffer.entries), buffer.end is not None


def _not_found(stream_id: str) -> StreamNotFound:
    # The same answer for a stream that does not exist and one of another owner, so
    # that ids cannot be probed.
    return StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")


def open_buffer(
    buffer: EventBuffer, stream_id: str, after: int, protocol: Protocol
) -> LocalReader | None:
    """A :class:`LocalReader` of ``buffer`` after event ``after`` (see :meth:`EventLog.open`):
    ``protocol`` must be the stream's (:class:`WrongProtocol`)."""
    if protocol != buffer.protocol:
        raise WrongProtocol(stream_id, buffer.protocol, protocol)
    last = buffer.last
    if after > last:
        raise StreamNotFound(
            f"event {format_event_id(stream_id, after)} does not exist (the stream has {last})",
            code="event_not_found",
        )
    if buffer.end is not None and after == buffer.end:
        return None
    return LocalReader(buffer, after, protocol)
