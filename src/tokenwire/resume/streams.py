"""Resumable responses: producers that outlive their connection, readers that resume."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenwire.errors import DropConnection, StreamError, public_error
from tokenwire.llm.protocol import protocol_names
from tokenwire.resume.log import (
    CancelResult,
    EventBuffer,
    EventLog,
    LogUnavailable,
    MemoryEventLog,
    Protocol,
    StreamNotFound,
    buffer_snapshot,
    check_stream_id,
    open_buffer,
    parse_event_id,
)
from tokenwire.server import EventStreamResponse, encode_item
from tokenwire.sse import ServerSentEvent

__all__ = ["Producer", "ResumableStreams", "last_event_id", "make_log", "owner_of"]

logger = logging.getLogger("tokenwire.resume")


def make_log(spec: str | EventLog | None, **options: Any) -> EventLog:
    """An :class:`~tokenwire.resume.log.EventLog` from a setting: ``None`` or
    ``"memory"`` -> :class:`~tokenwire.resume.log.MemoryEventLog`; a ``redis://``,
    ``rediss://`` or ``unix://`` URL -> :class:`~tokenwire.resume.redis.RedisEventLog`
    (needs ``tokenwire[redis]``). ``options`` go to the log's constructor (``expiry``
    for both; ``max_events`` and ``max_bytes`` for memory; ``max_entries``,
    ``connect_timeout``, ``read_timeout``, ``stall``, ``liveness``, ``block``, ``prefix``
    for Redis). Anything else: ``ValueError``."""
    if isinstance(spec, EventLog):
        return spec
    if spec is None or spec == "memory":
        memory_keys = ("expiry", "max_events", "max_bytes")
        return MemoryEventLog(**{k: v for k, v in options.items() if k in memory_keys})
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            from tokenwire.resume.redis import RedisEventLog
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ValueError(
                "a Redis event log needs the redis package: pip install 'tokenwire[redis]'"
            ) from exc
        options = {k: v for k, v in options.items() if k not in ("max_events", "max_bytes")}
        return RedisEventLog(spec, **options)
    raise ValueError(f'resume must be "memory" or a redis:// URL, not {spec!r}')


def owner_of(credential: str | bytes | None) -> str:
    """The owner a stream is bound to for a credential (an API key): a digest, never
    the key itself, since it is stored in the log. ``""`` for no credential."""
    if not credential:
        return ""
    if isinstance(credential, str):
        credential = credential.encode("utf-8", "surrogateescape")
    return hashlib.sha256(b"tokenwire-stream-owner:" + credential).hexdigest()[:32]


def last_event_id(request: Request) -> str | None:
    """The id a client resumes from: the ``Last-Event-ID`` header (what a reconnecting
    ``EventSource`` sends), else the ``last_event_id`` query parameter (a browser's
    first connection cannot set headers). ``None`` when neither is given; the header
    wins when both are."""
    value = request.headers.get("last-event-id")
    if value is None or not value.strip():
        value = request.query_params.get("last_event_id")
    if value is None or not value.strip():
        return None
    return value


class _Prefixed:
    """A reader with bytes sent before its first events (a ``retry:`` field)."""

    __slots__ = ("_prefix", "_reader")

    _tokenwire_bytes = True

    def __init__(self, reader: AsyncIterator[bytes], prefix: bytes) -> None:
        self._reader = reader
        self._prefix = prefix

    def __aiter__(self) -> _Prefixed:
        return self

    async def __anext__(self) -> bytes:
        prefix = self._prefix
        if prefix:
            self._prefix = b""
            return prefix
        return await self._reader.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._reader, "aclose", None)
        if aclose is not None:
            await aclose()


def _comment_only(block: bytes) -> bool:
    return all(not line or line[0] == 58 for line in block.split(b"\n"))


def _split(chunk: bytes) -> list[bytes]:
    """Whole encoded events -> one bytes per event (each gets its own id); comment-only
    blocks (heartbeats) are dropped: they are not events and need no replay."""
    n = len(chunk)
    if n > 2 and chunk[0] != 58 and chunk.find(b"\n\n") == n - 2 and b"\r" not in chunk:
        return [chunk]  # one event: what encoders produce for most deltas
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return [part + b"\n\n" for part in chunk.split(b"\n\n") if part and not _comment_only(part)]


class _Pending:
    """One stream's events not yet in the log: the batch being written (sent at least
    once, retried as it is: the same entry ids) and the events that came after it."""

    __slots__ = ("done", "end", "events", "failing_since", "head", "head_end", "written")

    def __init__(self) -> None:
        self.head: list[tuple[int, bytes]] | None = None
        self.head_end: int | None = None
        self.events: list[tuple[int, bytes]] = []
        self.end: int | None = None
        self.done: asyncio.Future[None] | None = None
        self.written = 0  # the last sequence number known to be in the log
        self.failing_since: float | None = None

    @property
    def produced(self) -> int:
        """The last sequence number the producer handed over."""
        for batch in (self.events, self.head):
            if batch:
                return batch[-1][0]
        return max(self.end or 0, self.head_end or 0, self.written)


class _Flusher:
    """Appends the events of every producer of this process to the log in the
    background: whatever accumulated during ``interval`` seconds (and during the write
    before) goes in one ``EventLog.write_many`` call (with Redis: one pipeline, one
    round trip, one ``XADD`` per stream). Delivery to readers in this process never
    waits for it.

    A write that fails is retried, in order, as it was (the same entry ids, so that a
    retry of a write that did land changes nothing), with a backoff, until it lands or
    ``give_up`` seconds have passed; events that came meanwhile wait behind it. A stream
    whose writes are behind is reported to the log (``EventLog.report``), so that
    readers elsewhere can tell a stalled log from a slow producer; one given up is
    reported broken."""

    __slots__ = ("_broken", "_give_up", "_interval", "_log", "_pending", "_task", "_wake")

    def __init__(self, log: EventLog, interval: float, give_up: float) -> None:
        self._log = log
        self._interval = interval
        self._give_up = give_up
        self._pending: dict[str, _Pending] = {}
        self._broken: set[str] = set()  # given up: nothing more of them is written
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, stream_id: str, seq: int, data: bytes) -> None:
        pending = self._pending.get(stream_id)
        if pending is None:
            if stream_id in self._broken:
                return  # after a gap, later events would only mislead readers
            pending = self._pending[stream_id] = _Pending()
            pending.events.append((seq, data))
            self._poke()
        else:
            pending.events.append((seq, data))

    def end(self, stream_id: str, last: int) -> asyncio.Future[None]:
        """Mark the stream finished after its events; the future is done once written
        (or given up)."""
        done = asyncio.get_running_loop().create_future()
        if stream_id in self._broken:
            self._broken.discard(stream_id)
            done.set_result(None)
            return done
        pending = self._pending.get(stream_id)
        if pending is None:
            pending = self._pending[stream_id] = _Pending()
        pending.end = last
        pending.done = done
        self._poke()
        return done

    def _poke(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tokenwire-resume-flusher"
            )
            return
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            if not self._pending:
                self._wake = loop.create_future()
                await self._wake
            if backoff:
                await asyncio.sleep(backoff)
            elif self._interval:
                await asyncio.sleep(self._interval)
            batches = []
            for sid, pending in self._pending.items():
                if pending.head is None:
                    if not pending.events and pending.end is None:
                        continue
                    # Frozen from now on: a retry writes exactly this again.
                    pending.head, pending.events = pending.events, []
                    pending.head_end, pending.end = pending.end, None
                batches.append((sid, pending.head, pending.head_end))
            try:
                failed = await self._log.write_many(batches)
            except Exception as exc:
                failed = {sid for sid, _, _ in batches}
                logger.warning(
                    "resume: writing %d stream(s) to the log failed (retrying): %r",
                    len(batches),
                    exc,
                )
            now = loop.time()
            for sid, events, end in batches:
                pending = self._pending[sid]
                if sid in failed:
                    if pending.failing_since is None:
                        pending.failing_since = now
                    elif now - pending.failing_since > self._give_up:
                        self._abandon(sid, pending)
                    continue
                pending.failing_since = None
                pending.head = None
                pending.written = end if end is not None else events[-1][0]
                if end is not None:
                    del self._pending[sid]
                    if pending.done is not None and not pending.done.done():
                        pending.done.set_result(None)
            backoff = min(max(backoff * 2, 0.1), 1.0) if failed else 0.0
            self._log.report(
                {
                    sid: (pending.written, pending.produced)
                    for sid, pending in self._pending.items()
                    if pending.failing_since is not None
                }
            )

    def _abandon(self, stream_id: str, pending: _Pending) -> None:
        logger.error(
            "resume: gave up writing stream %s to the log after %gs: events after %d are "
            "lost there (readers elsewhere are told)",
            stream_id,
            self._give_up,
            pending.written,
        )
        del self._pending[stream_id]
        self._log.mark_broken(stream_id, pending.written)
        if pending.done is not None and not pending.done.done():
            pending.done.set_result(None)
        else:
            self._broken.add(stream_id)  # until its producer ends it


class Producer:
    """One resumable stream being produced in this process.

    Created by :meth:`ResumableStreams.create`; :meth:`start` runs the source in its
    own task, independent of any connection. Every event gets the SSE id
    ``<id>-<seq>`` (``seq`` from 1) and goes to this process's readers at once and to
    the log in the background."""

    __slots__ = (
        "_cancel_error",
        "_grace_timer",
        "_manager",
        "_task",
        "buffer",
        "id",
        "protocol",
    )

    def __init__(
        self, manager: ResumableStreams, stream_id: str, protocol: Protocol, owner: str = ""
    ) -> None:
        self.id = stream_id
        self.protocol: Protocol = protocol
        self.buffer = EventBuffer(protocol=protocol, owner=owner)
        self.buffer.on_idle = self._idle
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._cancel_error: StreamError | None = None
        self._grace_timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended (finished, failed or cancelled)."""
        return self.buffer.end is not None

    def start(self, source: AsyncIterable[Any]) -> None:
        """Start producing ``source`` (items as :class:`~tokenwire.server.EventStreamResponse`
        takes them: events, str, dict/list, whole-event bytes). Ids are assigned here:
        a :class:`~tokenwire.sse.ServerSentEvent`'s own ``id`` is dropped, and bytes must
        not contain ``id:`` fields."""
        if self._task is not None:
            raise RuntimeError(f"stream {self.id!r} was already started")
        self._task = asyncio.create_task(self._run(source), name=f"tokenwire-resume-{self.id}")

    async def discard(self) -> None:
        """Forget a stream that will not be started (e.g. its upstream failed)."""
        self._manager._local.pop(self.id, None)
        await self._manager.log.discard(self.id)

    def reader(self, after: int = 0) -> AsyncIterator[bytes] | None:
        """A reader of this stream's events after ``after``, in this process."""
        return open_buffer(self.buffer, self.id, after, self.protocol)

    def cancel(self, error: StreamError | None = None) -> bool:
        """Stop the producer; the stream ends with ``error`` (default: ``cancelled``) as
        its last event. False if it had already ended."""
        task = self._task
        if self.done or task is None or task.done() or self._cancel_error is not None:
            return False
        self._cancel_error = error or StreamError(
            "cancelled", f"stream {self.id!r} was cancelled", code="cancelled"
        )
        task.cancel()
        return True

    def _idle(self) -> None:
        """The last reader in this process left: cancel after the grace period unless
        someone reads again (here or, with a shared log, elsewhere)."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        grace = self._manager.grace
        if grace <= 0:
            self._cancel_unread()
            return
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(grace, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_timer = None
        if self.done or self.buffer.readers > 0:
            return
        if self._manager.log.shares_buffer:
            self._cancel_unread()
        else:
            asyncio.get_running_loop().create_task(self._check_elsewhere())

    async def _check_elsewhere(self) -> None:
        if await self._manager.log.reader_elsewhere(self.id):
            if not self.done and self.buffer.readers == 0:
                self._idle()  # someone reads in another process: look again later
        elif self.buffer.readers == 0:
            self._cancel_unread()

    def _cancel_unread(self) -> None:
        self.cancel(
            StreamError(
                "cancelled",
                f"stream {self.id!r} was stopped: no client read it for "
                f"{self._manager.grace:g}s after its client disconnected",
                code="abandoned",
            )
        )

    async def _run(self, source: AsyncIterable[Any]) -> None:
        buffer = self.buffer
        add = buffer.add
        manager = self._manager
        flusher = manager._flusher
        sid = self.id
        prefix = f"id: {self.id}-".encode()
        raw = getattr(source, "_tokenwire_bytes", False)
        iterator = source.__aiter__()
        anext = iterator.__anext__
        seq = 0
        tail: bytes | None = None
        external = False
        try:
            while True:
                try:
                    item = await anext()
                except StopAsyncIteration:
                    break
                cls = type(item)
                if raw:
                    events = _split(item)
                elif cls is str or cls is dict or cls is list:
                    events = [encode_item(item)]  # one event, no comments: nothing to split
                else:
                    if cls is ServerSentEvent and item.id is not None:
                        item = replace(item, id=None)
                    events = _split(encode_item(item))
                for event in events:
                    seq += 1
                    data = b"%s%d\n%s" % (prefix, seq, event)
                    add(data)
                    if flusher is not None:
                        flusher.add(sid, seq, data)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancel_error is not None and task is not None:
                task.uncancel()
                tail = self._cancel_error.to_sse_event(self.protocol)
            else:
                external = True  # e.g. the loop is shutting down
                tail = StreamError("cancelled", "the stream was cancelled").to_sse_event(
                    self.protocol
                )
        except DropConnection:
            # A simulated cut (the demo model's cut@N): readers are other connections,
            # so the log ends there as a cut-off stream would.
            tail = StreamError("network", "the stream's connection was cut").to_sse_event(
                self.protocol
            )
        except Exception as exc:
            told = public_error(exc, expose=self._manager.expose_errors)
            if told.reference is None:  # (public_error logged what it hid)
                logger.error("resumable stream %s: source failed", self.id, exc_info=exc)
            tail = told.to_sse_event(self.protocol)
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        external = True
                    logger.warning("resumable stream %s: closing the source failed", self.id)
            if tail is not None:
                seq += 1
                data = b"%s%d\n%s" % (prefix, seq, tail)
                add(data)
                if flusher is not None:
                    flusher.add(sid, seq, data)
            buffer.close()
            if flusher is not None:
                written = flusher.end(sid, seq)
                if not external:
                    await asyncio.shield(written)
            else:
                await manager.log.write(self.id, [], seq)
            if manager._local.get(self.id) is self:
                del manager._local[self.id]
        if external:
            raise asyncio.CancelledError


class ResumableStreams:
    """Resumable event streams on top of an :class:`~tokenwire.resume.log.EventLog`.

    - ``log``: an event log, ``"memory"`` (default) or a ``redis://`` URL (see
      :func:`make_log`; ``log_options`` go to it).
    - ``grace``: seconds a stream keeps being produced after its last reader left, so a
      reconnect can pick it up; then it is cancelled (its source is closed). 0 cancels
      at once, like a plain stream.
    - ``ping``, ``send_timeout``: as for :class:`~tokenwire.server.EventStreamResponse`.
    - ``log_interval``: seconds events are gathered before they are written to a
      shared log (all streams of this process in one write). Readers in the producer's
      process get every event at once; readers elsewhere see it up to about this much
      later, and the events of the last ``log_interval`` are not in the log if the
      process dies (a reader elsewhere then ends with ``producer_died``).
    - ``unavailable_for``: after the log failed to connect, requests fail at once (with
      the same :class:`~tokenwire.resume.log.LogUnavailable`) for this many seconds
      instead of trying again each time.
    - ``write_give_up``: seconds a write to a shared log is retried (in order, as it
      was) before the stream is given up there and marked broken for readers elsewhere
      (the producer's own readers still get everything).
    - ``expose_errors``: as for :class:`~tokenwire.server.EventStreamResponse` (by
      default a source's exception is told as a generic message with a reference id).

    Typical use in a route::

        resume_from = last_event_id(request)
        if resume_from is not None:
            return await streams.resume(resume_from, protocol="openai")
        return await streams.stream(generate(), protocol="openai")
    """

    def __init__(
        self,
        log: EventLog | str | None = None,
        *,
        grace: float = 30.0,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        unavailable_for: float = 2.0,
        log_interval: float = 0.02,
        write_give_up: float = 30.0,
        expose_errors: bool = False,
        **log_options: Any,
    ) -> None:
        if not grace >= 0:
            raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
        self.log = make_log(log, **log_options)
        self.grace = float(grace)
        self.expose_errors = expose_errors
        self.ping = ping
        self.send_timeout = send_timeout
        self.unavailable_for = unavailable_for
        self._local: dict[str, Producer] = {}
        self._flusher = (
            None if self.log.shares_buffer else _Flusher(self.log, log_interval, write_give_up)
        )
        self._down_until = 0.0
        self._down_error: LogUnavailable | None = None
        self.log.on_cancel(self._cancel_requested)

    def __repr__(self) -> str:
        return f"ResumableStreams({self.log!r}, grace={self.grace:g})"

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._down_error is not None and loop.time() < self._down_until:
            raise self._down_error
        try:
            await self.log.connect()
        except LogUnavailable as err:
            self._down_error = err
            self._down_until = loop.time() + self.unavailable_for
            raise
        self._down_error = None

    async def create(
        self, stream_id: str | None = None, *, protocol: Protocol = "generic", owner: str = ""
    ) -> Producer:
        """Register a new stream (``stream_id``: 1-128 of ``[A-Za-z0-9_]``, default
        random) and return its :class:`Producer`, not started yet. Only callers that
        give the same ``owner`` (e.g. a digest of the API key, see :func:`owner_of`)
        may resume or cancel it, and only through ``protocol``. Raises
        :class:`~tokenwire.resume.log.LogUnavailable` when the log cannot be reached
        (fast: nothing was started), ``ValueError`` for a bad or taken id."""
        if protocol != "generic" and protocol not in protocol_names():
            known = ", ".join(protocol_names())
            raise ValueError(f"protocol must be generic or one of {known}, not {protocol!r}")
        stream_id = check_stream_id(stream_id) if stream_id is not None else secrets.token_hex(8)
        if stream_id in self._local:
            raise ValueError(f"stream id {stream_id!r} is already in use")
        await self._connect()
        producer = Producer(self, stream_id, protocol, owner)
        try:
            await self.log.create(stream_id, producer.buffer, protocol)
        except LogUnavailable as err:
            self._down_error = err
            self._down_until = asyncio.get_running_loop().time() + self.unavailable_for
            raise
        self._local[stream_id] = producer
        return producer

    def producer(self, stream_id: str) -> Producer | None:
        """The running producer of ``stream_id`` in this process, if any."""
        return self._local.get(stream_id)

    async def open(
        self, stream_id: str, after: int = 0, *, protocol: Protocol = "generic", owner: str = ""
    ) -> AsyncIterator[bytes] | None:
        """A reader of the events after ``after``, wherever the stream is produced;
        ``None`` if the stream ended and nothing follows. Raises
        :class:`~tokenwire.resume.log.StreamNotFound` (unknown or expired stream, one of
        another ``owner``, or an event past its end),
        :class:`~tokenwire.resume.log.WrongProtocol` or
        :class:`~tokenwire.resume.log.LogUnavailable`."""
        producer = self._local.get(stream_id)
        if producer is not None:
            if not hmac.compare_digest(producer.buffer.owner, owner):
                raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
            return open_buffer(producer.buffer, stream_id, after, protocol)
        if not self.log.shares_buffer:
            await self._connect()
        return await self.log.open(stream_id, after, protocol, owner)

    def response(
        self,
        reader: AsyncIterator[bytes] | None,
        stream_id: str,
        *,
        protocol: Protocol = "generic",
        headers: Mapping[str, str] | None = None,
        retry: int | None = None,
    ) -> Response:
        """The HTTP response for a reader: ``text/event-stream`` with the stream id in
        ``x-tokenwire-stream-id``; ``204 No Content`` when ``reader`` is ``None`` (the
        stream is over: a browser's ``EventSource`` stops reconnecting). ``retry``
        (milliseconds) is sent first as a lone ``retry:`` field (for browsers; SDK
        clients of the LLM protocols may not expect an event without data)."""
        merged = {"x-tokenwire-stream-id": stream_id}
        if headers:
            merged.update(headers)
        if reader is None:
            return Response(status_code=204, headers=merged)
        source: AsyncIterator[bytes] = reader
        if retry is not None:
            source = _Prefixed(reader, b"retry: %d\n\n" % retry)
        response = EventStreamResponse(
            source, ping=self.ping, send_timeout=self.send_timeout, headers=merged
        )
        response.error_protocol = protocol
        if protocol != "generic":
            stopping = StreamError("overloaded", "the server is shutting down", status=503)
            response.shutdown_event = stopping.to_sse_event(protocol)
        return response

    async def stream(
        self,
        source: AsyncIterable[Any],
        *,
        stream_id: str | None = None,
        protocol: Protocol = "generic",
        headers: Mapping[str, str] | None = None,
        retry: int | None = None,
    ) -> Response:
        """Create a stream, start producing ``source`` and return the response that
        reads it from the start."""
        producer = await self.create(stream_id, protocol=protocol)
        producer.start(source)
        return self.response(
            producer.reader(0), producer.id, protocol=protocol, headers=headers, retry=retry
        )

    async def resume(
        self,
        event_id: str,
        *,
        protocol: Protocol = "generic",
        owner: str = "",
        headers: Mapping[str, str] | None = None,
        retry: int | None = None,
    ) -> Response:
        """The response replaying the events after ``event_id`` (``<stream id>-<seq>``,
        as in ``Last-Event-ID``) and following the stream to its end. Raises
        :class:`~tokenwire.errors.StreamError` before anything is sent: ``invalid_request``
        (400) for a malformed id, :class:`~tokenwire.resume.log.StreamNotFound` (404),
        :class:`~tokenwire.resume.log.LogUnavailable` (503)."""
        stream_id, after = parse_event_id(event_id)
        reader = await self.open(stream_id, after, protocol=protocol, owner=owner)
        return self.response(reader, stream_id, protocol=protocol, headers=headers, retry=retry)

    async def cancel(self, stream_id: str, *, owner: str = "") -> CancelResult:
        """Stop a stream's producer wherever it runs (this process, or any process
        sharing the log). Returns ``"cancelled"`` or ``"finished"`` (it had ended);
        raises :class:`~tokenwire.resume.log.StreamNotFound` for an unknown stream or
        one of another ``owner`` (or ``ValueError`` for a malformed id) and
        :class:`~tokenwire.resume.log.LogUnavailable`."""
        check_stream_id(stream_id)
        producer = self._local.get(stream_id)
        if producer is not None:
            if not hmac.compare_digest(producer.buffer.owner, owner):
                raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
            if producer.cancel():
                return "cancelled"
        if not self.log.shares_buffer:
            await self._connect()
        return await self.log.cancel(stream_id, owner)

    async def snapshot(self, stream_id: str, *, owner: str = "") -> tuple[bytes, bool]:
        """A stream's events so far, joined, and whether it has ended, wherever it is
        produced (see :meth:`~tokenwire.resume.log.EventLog.snapshot`)."""
        check_stream_id(stream_id)
        producer = self._local.get(stream_id)
        if producer is not None:
            if not hmac.compare_digest(producer.buffer.owner, owner):
                raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
            return buffer_snapshot(producer.buffer)
        if not self.log.shares_buffer:
            await self._connect()
        return await self.log.snapshot(stream_id, owner)

    async def put_record(self, stream_id: str, data: bytes) -> None:
        """Keep ``data`` with a stream of this process as long as the stream is kept
        (see :meth:`~tokenwire.resume.log.EventLog.put_record`)."""
        await self.log.put_record(stream_id, data)

    async def get_record(self, stream_id: str, *, owner: str = "") -> bytes | None:
        """The record kept with a stream of ``owner``, wherever it was produced; raises
        :class:`~tokenwire.resume.log.StreamNotFound` or
        :class:`~tokenwire.resume.log.LogUnavailable`."""
        check_stream_id(stream_id)
        if not self.log.shares_buffer:
            await self._connect()
        return await self.log.get_record(stream_id, owner)

    def _cancel_requested(self, stream_id: str) -> None:
        producer = self._local.get(stream_id)
        if producer is not None:
            producer.cancel()

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Stop every producer in this process (their streams end with an
        ``overloaded`` error event: "the server is shutting down"), let their last
        writes reach the log (up to ``timeout`` seconds), and close the log."""
        stopping = StreamError("overloaded", "the server is shutting down", status=503)
        tasks = []
        for producer in list(self._local.values()):
            producer.cancel(stopping)
            if producer._task is not None:
                tasks.append(producer._task)
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*tasks, return_exceptions=True)
        await self.log.aclose()
