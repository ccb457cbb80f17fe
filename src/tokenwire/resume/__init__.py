"""Resumable streams: reconnect to any process and continue with nothing lost.

A resumable stream is produced by a task of its own, independent of the connection
that asked for it. Every event gets an SSE ``id``, goes at once to the readers in the
producer's process and, in the background, to an **event log**. A client that lost its
connection reconnects, to the same process or any other sharing the log, with
``Last-Event-ID`` and receives exactly the events after that id, then the live stream.

Usage (any Starlette/FastAPI route)::

    from tokenwire.resume import ResumableStreams, last_event_id

    streams = ResumableStreams("redis://localhost:6379/0", grace=30)

    async def chat(request):
        resume_from = last_event_id(request)
        if resume_from is not None:
            return await streams.resume(resume_from, protocol="openai")
        return await streams.stream(generate_chunks(), protocol="openai")

    await streams.cancel(stream_id)   # from any process sharing the log

The gateway turns it on with ``[gateway] resume = "memory"`` or ``"redis://..."``.

Event ids
---------
``<stream id>-<seq>``: the stream id is 1-128 characters of ``[A-Za-z0-9_]`` (random
16 hex digits by default; the gateway sends it in ``x-tokenwire-stream-id``), ``seq``
counts the stream's events from 1. Each SSE event of a chunk gets its own id (a chunk
holding several events is split), so a cut between two events of one chunk loses and
repeats nothing. ``Last-Event-ID: <stream id>`` alone means "from the start". The
resume point comes from the ``Last-Event-ID`` header (what a reconnecting
``EventSource`` sends) or, for a browser's first connection, the ``last_event_id``
query parameter; the header wins. Comment lines (heartbeats) are not events and are
not logged.

Outcomes of a resume request, before anything is streamed:

- events follow: ``200``, the events after the id, then the live stream to its end;
- the stream has ended and nothing follows the id: ``204 No Content`` (a browser's
  ``EventSource`` then stops reconnecting);
- unknown or expired stream, or an id past the stream's end: :class:`StreamNotFound`,
  ``404`` with the protocol's error body (``code`` ``stream_not_found`` /
  ``event_not_found``);
- malformed id: ``400`` (``invalid_event_id``);
- the log cannot be reached: :class:`LogUnavailable`, ``503``
  (``resume_store_unavailable``), within about ``2 * connect_timeout`` seconds; after
  that, for ``unavailable_for`` (2 s) requests fail at once.

Producers, grace period, cancellation
-------------------------------------
When the last reader of a running stream in the producer's process goes away, the
producer keeps going for ``grace`` seconds (default 30); if by then nobody reads it
here, nor (Redis) in another process, it is cancelled: its source is closed (an
upstream request is aborted) and the stream ends with a ``cancelled`` error event
(``code`` ``abandoned``). :meth:`ResumableStreams.cancel` (the gateway's
``DELETE /v1/streams/{id}``) stops a producer wherever it runs; its stream ends with a
``cancelled`` error event that every reader receives. A source that fails ends the
stream with the protocol's error event; :meth:`ResumableStreams.aclose` (server
shutdown) ends running streams with ``overloaded`` ("the server is shutting down").
Every ending is an event in the log, so readers elsewhere see it too: nothing is
silently truncated.

Owners
------
:meth:`ResumableStreams.create` takes an ``owner`` (the gateway passes
:func:`owner_of` the client's API key, a digest): resuming or cancelling the stream
with another owner gets the same :class:`StreamNotFound` as an unknown id, and
resuming it through another protocol (an OpenAI stream on ``/v1/messages``)
gets :class:`WrongProtocol` (400).

Logs
----
:class:`MemoryEventLog` (default): one process. The producer's event list is the log;
finished streams are kept ``expiry`` seconds (600), at most ``max_events`` events per
stream (100 000; a reader needing trimmed events gets ``stream_expired``), and at most
``max_bytes`` (256 MiB; the gateway's ``resume_memory_bytes``) for all streams together:
past it the oldest finished streams are forgotten, then the oldest events of the
largest running ones trimmed. A reader returns at most about 64 KiB of events per
step, so a client that does not read never has megabytes queued for it at once.

:class:`~tokenwire.resume.redis.RedisEventLog` (``tokenwire[redis]``): Redis Streams,
shared by any number of processes. Keys (``prefix`` default ``tokenwire``; the
``{stream id}`` hash tag keeps a stream's keys on one cluster slot):

- ``tokenwire:s:{ID}`` - the stream. Each write is one ``XADD`` whose entry id is
  ``<last seq>-0`` and whose fields are ``<seq> -> encoded event`` (``id:`` line
  included, so a replay is a concatenation). Events that accumulate while a write is
  in flight go together in the next one; delivery in the producer's process never waits
  for Redis. The end is an entry ``<last seq>-1`` with field ``end``. ``MAXLEN ~
  max_entries`` caps it; ``PEXPIRE expiry`` (refreshed at most once a second, and at
  the end) cleans it up.
- ``tokenwire:s:{ID}:owner`` - ``<node id> <protocol> <owner digest>``: the producing
  process, and who may read the stream (``SET NX``: creating a stream, same expiry).
- ``tokenwire:s:{ID}:reader`` - refreshed by readers in other processes while they
  read, so that the producer's grace period does not cancel a stream read elsewhere.
- ``tokenwire:node:<node>`` - each process's heartbeat, refreshed every
  ``liveness / 3`` seconds with a ``liveness`` (3 s) expiry.
- channel ``tokenwire:cancel`` - cancellation requests (message: the stream id); each
  process keeps one subscription and stops its own producer.

Writes (``SET NX``, ``XADD``, ``PEXPIRE``) are pipelined on one connection per process
(opened on first use and again after a failure; ``rediss://`` uses redis-py's pool).
A write that gets no reply within ``2 x connect_timeout + 1`` seconds drops that
connection; it is retried, in order and as it was (the same entry ids: an ``XADD``
whose id is not above the stream's top is a write that had landed), with a backoff, for
``write_give_up`` seconds (30), while later events wait behind it. Meanwhile the
producer's heartbeat reports how far behind the log is, and a reader elsewhere that
waits on it gets ``log_behind`` after ``stall`` seconds (10); a stream given up is
reported (and, once Redis takes writes, marked in the stream) ``stream_broken``. A
stream being created while Redis takes no writes fails with
``resume_store_unavailable``. docs/resumable-streams.md lists every guarantee and the
tests that show it.

A reader elsewhere tails the stream with blocking ``XREAD`` (``block``, 1 s, per call;
replay and follow are the same call). Only when a blocking read times out does it
check that the stream still exists and that its producer's heartbeat is alive: if the
producer's process died (SIGKILL, crash), the reader delivers everything it wrote and
ends with an error event (``api_error``, ``code`` ``producer_died``) within about
``2 x liveness + block`` seconds (a missing heartbeat counts only while Redis is seen
taking writes: a write pause lets heartbeats lapse too). A read that gets no answer
``read_timeout`` seconds after its blocking wait ends the reader with
``resume_store_unavailable``. Sequence numbers are checked on every read: events
trimmed by ``MAXLEN`` or lost when Redis restarted without persistence end the reader
with ``stream_expired`` instead of a silent gap. Redis failing while reading ends the
reader with ``resume_store_unavailable``; while writing, the producer's own clients are
not affected (the failed batch is logged and readers elsewhere report the gap).
"""

from tokenwire.resume.log import (
    EventBuffer,
    EventLog,
    LogUnavailable,
    MemoryEventLog,
    StreamNotFound,
    WrongProtocol,
    check_stream_id,
    format_event_id,
    parse_event_id,
)
from tokenwire.resume.streams import (
    Producer,
    ResumableStreams,
    last_event_id,
    make_log,
    owner_of,
)

__all__ = [
    "EventBuffer",
    "EventLog",
    "LogUnavailable",
    "MemoryEventLog",
    "Producer",
    "ResumableStreams",
    "StreamNotFound",
    "WrongProtocol",
    "cancel_stream",
    "check_stream_id",
    "format_event_id",
    "last_event_id",
    "make_log",
    "owner_of",
    "parse_event_id",
]


async def cancel_stream(log: EventLog | str, stream_id: str) -> str:
    """Cancel a stream from any process that can reach its log (e.g. a maintenance
    script): ``log`` is an :class:`EventLog` or a ``redis://`` URL (a temporary
    connection is made and closed). Returns ``"cancelled"`` or ``"finished"``; raises
    :class:`StreamNotFound` or :class:`LogUnavailable`."""
    own = not isinstance(log, EventLog)
    event_log = make_log(log)
    try:
        await event_log.connect()
        return await event_log.cancel(check_stream_id(stream_id))
    finally:
        if own:
            await event_log.aclose()
