"""The Redis event log: resumable streams shared by many processes (``tokenwire[redis]``).

See :mod:`tokenwire.resume` for the key layout, the entry format and the failure modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, cast

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from tokenwire.errors import StreamError
from tokenwire.resume.log import (
    CancelResult,
    EventBuffer,
    EventLog,
    LogUnavailable,
    Protocol,
    StreamNotFound,
    WrongProtocol,
    format_event_id,
)

__all__ = ["RedisEventLog"]

logger = logging.getLogger("tokenwire.resume")

_FAILURES = (RedisError, OSError)  # TimeoutError and ConnectionError are OSErrors


def _pack(args: list[bytes]) -> bytes:
    """One command in RESP (the protocol's array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def _xadd_head(key: bytes, maxlen: bytes) -> bytes:
    """The constant middle of a stream's ``XADD key MAXLEN ~ maxlen`` in RESP."""
    return b"$4\r\nXADD\r\n$%d\r\n%s\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%s\r\n" % (
        len(key),
        key,
        len(maxlen),
        maxlen,
    )


def _pack_xadd(head: bytes, events: list[tuple[int, bytes]]) -> bytes:
    """``XADD key MAXLEN ~ maxlen <last seq>-0 seq data [seq data ...]`` in RESP, with
    ``head`` from :func:`_xadd_head` (this runs for every event written)."""
    last = b"%d" % events[-1][0]
    if len(events) == 1:  # the usual case when tokens are paced
        data = events[0][1]
        return b"*8\r\n%s$%d\r\n%s-0\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            head,
            len(last) + 2,
            last,
            len(last),
            last,
            len(data),
            data,
        )
    parts = [b"*%d\r\n" % (6 + 2 * len(events)), head, b"$%d\r\n%s-0\r\n" % (len(last) + 2, last)]
    for seq, data in events:
        number = b"%d" % seq
        parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(number), number, len(data), data))
    return b"".join(parts)


_END = b"end"
_BROKEN = b"broken"  # field of the entry that ends a stream its producer gave up


def _already_there(reply: bytes) -> bool:
    """An XADD refused because its entry id is not above the stream's top: a retry of
    a write that had landed."""
    return b"equal or smaller than the target stream top item" in reply


def _scan_replies(buf: bytes, pos: int, want: int, out: list[bytes]) -> int:
    """Append up to ``want`` whole RESP2 replies found in ``buf`` from ``pos`` to
    ``out`` (each as its first line: ``+OK``, ``:1``, ``$-1``, ``-ERR ...``; a bulk
    string's payload is skipped) and return the position after them. Only the reply
    kinds of the commands the writer sends can occur; anything else (an array, or
    a stray byte) is a protocol error."""
    n = len(buf)
    while want:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        kind = buf[pos]
        stop = end + 2
        if kind == 36:  # $: a bulk string, its payload follows
            size = int(buf[pos + 1 : end])
            if size >= 0:
                stop += size + 2
                if stop > n:
                    break
        elif kind not in (43, 45, 58):  # +, -, :
            raise ValueError(f"unexpected reply from Redis: {buf[pos : end + 2][:80]!r}")
        out.append(buf[pos:end])
        pos = stop
        want -= 1
    return pos


class _Pipe(asyncio.Protocol):
    """One connection of the log's own for its writes, pipelined: callers write packed
    commands and get a future of their replies, resolved in order as the replies
    arrive. Replies are only split and checked (no reply objects, no coroutine per
    reply), which is what makes a write cost a fraction of a redis-py round trip."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        # (replies wanted, replies so far, future) per call, oldest first
        self._calls: deque[tuple[int, list[bytes], asyncio.Future[list[bytes]]]] = deque()
        self._lost: BaseException | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and self._lost is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def call(self, data: bytes, count: int) -> asyncio.Future[list[bytes]]:
        """Send ``count`` packed commands; the future gets their replies' first lines."""
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        if self._lost is not None or self.transport is None:
            future.set_exception(ConnectionError("the connection to Redis is closed"))
            return future
        self._calls.append((count, [], future))
        self.transport.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        calls = self._calls
        try:
            while calls:
                want, replies, future = calls[0]
                pos = _scan_replies(buf, pos, want - len(replies), replies)
                if len(replies) < want:
                    break
                calls.popleft()
                if not future.done():
                    future.set_result(replies)
            if not calls and pos < len(buf):
                raise ValueError("Redis sent a reply nobody asked for")
        except ValueError as exc:
            self.close(ConnectionError(str(exc)))
            return
        self._buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("Redis closed the connection"))

    def close(self, exc: BaseException | None = None) -> None:
        self._fail(exc or ConnectionError("the connection to Redis was closed"))
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        calls, self._calls = self._calls, deque()
        for _, _, future in calls:
            if not future.done():
                future.set_exception(ConnectionError(str(exc) or type(exc).__name__))


class RedisEventLog(EventLog):
    """Resumable streams in Redis Streams, shared by every process using the same
    server and ``prefix``.

    - ``url``: ``redis://``, ``rediss://`` or ``unix://`` (see redis-py).
    - ``expiry``: seconds a stream is kept after its last write (its keys expire).
    - ``max_entries``: length cap of one stream key (``XADD MAXLEN ~``); an entry holds
      the events one write carried (one or more).
    - ``connect_timeout``: seconds to connect before failing with
      :class:`~tokenwire.resume.log.LogUnavailable` (no retry loop: requests fail fast).
    - ``liveness``: seconds after which a producer whose process stopped refreshing its
      heartbeat is taken for dead by readers elsewhere.
    - ``block``: seconds one blocking ``XREAD`` waits before the reader checks the
      producer's heartbeat and the stream's existence.
    - ``read_timeout``: seconds a reader waits for an answer beyond its blocking wait
      before it reports the log unavailable (default: ``connect_timeout``).
    - ``stall``: seconds a reader waits on a stream whose live producer reports the log
      behind (or while Redis takes no writes) before it ends with an error.
    - ``max_connections``: connections for checks (more wait for one); every reader
      tailing a stream produced elsewhere holds one more connection. Writes
      (creating streams, appending events) share one pipelined connection of their
      own; over TLS (``rediss://``) they use the checks' connections instead.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "tokenwire",
        expiry: float = 600.0,
        max_entries: int = 10_000,
        connect_timeout: float = 1.0,
        liveness: float = 3.0,
        block: float = 1.0,
        max_connections: int = 32,
        read_timeout: float | None = None,
        stall: float = 10.0,
    ) -> None:
        if not expiry > 0 or not liveness > 0 or not block > 0 or not connect_timeout > 0:
            raise ValueError("expiry, liveness, block and connect_timeout must be > 0")
        if not stall > 0 or (read_timeout is not None and not read_timeout > 0):
            raise ValueError("stall and read_timeout must be > 0")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.url = url
        self.prefix = prefix
        self.expiry = expiry
        self.max_entries = max_entries
        self.connect_timeout = connect_timeout
        self.liveness = liveness
        self.block = block
        self.read_timeout = connect_timeout if read_timeout is None else read_timeout
        self.stall = stall
        self.node = secrets.token_hex(6)
        # One quick retry on a fresh connection (a pooled one may be stale after a
        # server restart); no backoff, so that an unreachable server fails fast.
        common: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 1),
            "decode_responses": False,
        }
        # Writes and checks share a bounded pool (they wait for a free connection);
        # each blocked XREAD of a reader holds a connection of its own, from another pool.
        self._redis: Redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=connect_timeout + 1.0,
                socket_timeout=block + connect_timeout + 2.0,
                **common,
            )
        )
        # Readers' blocking XREADs: a stopped Redis shows as a read that gets no answer
        # read_timeout after the blocking wait, once (no retry: the reader reports it).
        self._read_redis: Redis = Redis.from_url(
            url,
            max_connections=1_000_000,
            socket_timeout=block + self.read_timeout,
            **{**common, "retry": Retry(NoBackoff(), 0)},
        )
        # Pub/sub waits indefinitely for messages; keepalive notices a dead peer.
        self._sub_redis: Redis = Redis.from_url(url, socket_timeout=None, **common)
        self._op_timeout = 2 * connect_timeout + 1.0
        self._lock = asyncio.Lock()
        self._connected = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._expire_due: dict[str, float] = {}
        self._xadd_heads: dict[str, bytes] = {}  # per stream being written
        self._node_key = f"{prefix}:node:{self.node}".encode()
        self._channel = f"{prefix}:cancel".encode()
        # Writes (XADD, PEXPIRE, SET NX) go through a lean pipelined connection of
        # the log's own; over TLS they use redis-py's pooled connections instead.
        target: dict[str, Any] = dict(parse_url(url))
        self._pipe_target: dict[str, Any] | None = (
            None
            if target.get("connection_class") not in (None, UnixDomainSocketConnection)
            else target
        )
        self._pipe: _Pipe | None = None
        self._pipe_lock = asyncio.Lock()
        # What the heartbeat tells readers elsewhere (EventLog.report / mark_broken).
        self._behind: dict[str, tuple[int, int]] = {}
        self._broken: dict[str, tuple[int, float]] = {}  # stream -> (written, when)
        self._unmarked: set[str] = set()  # broken, marker not written to the stream yet

    def __repr__(self) -> str:
        return f"RedisEventLog({self.url!r}, prefix={self.prefix!r}, node={self.node!r})"

    # Keys share the {stream id} hash tag, so a stream's keys live on one cluster slot.
    def _key(self, stream_id: str) -> str:
        return f"{self.prefix}:s:{{{stream_id}}}"

    def _unavailable(self, what: str, exc: BaseException) -> LogUnavailable:
        detail = str(exc) or type(exc).__name__
        return LogUnavailable(f"the resume store (Redis) is unreachable: {what}: {detail}")

    async def connect(self) -> None:
        if self._connected:
            return
        async with self._lock:
            if self._connected:
                return
            if self._closed:
                raise LogUnavailable("the event log is closed")
            pubsub = self._sub_redis.pubsub()
            try:
                async with asyncio.timeout(self._op_timeout):
                    await self._redis.ping()
                    await pubsub.subscribe(self._channel)
                # Best effort: during a write pause readers still work here, and the
                # heartbeat task keeps trying (creating a stream needs a write anyway).
                with contextlib.suppress(*_FAILURES, TimeoutError):
                    async with asyncio.timeout(self.read_timeout):
                        await self._redis.set(self._node_key, b"1", px=self._liveness_ms)
            except (*_FAILURES, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise self._unavailable("connect", exc) from None
            self._tasks = [
                asyncio.create_task(self._heartbeat(), name="tokenwire-resume-heartbeat"),
                asyncio.create_task(self._listen(pubsub), name="tokenwire-resume-cancel"),
            ]
            self._connected = True

    @property
    def _liveness_ms(self) -> int:
        return max(1, round(self.liveness * 1000))

    def report(self, behind: dict[str, tuple[int, int]]) -> None:
        self._behind = behind

    def mark_broken(self, stream_id: str, written: int) -> None:
        self._broken[stream_id] = (written, time.monotonic())
        self._unmarked.add(stream_id)

    def _node_value(self) -> bytes:
        """The heartbeat's value: ``1``, or which of this process's streams the log is
        behind on (``behind``: last written, last produced) and which were given up
        (``broken``: last written)."""
        if self._broken:
            cutoff = time.monotonic() - self.expiry
            self._broken = {s: v for s, v in self._broken.items() if v[1] > cutoff}
        if not self._behind and not self._broken:
            return b"1"
        value: bytes = orjson.dumps(
            {
                "behind": {s: list(v) for s, v in self._behind.items()},
                "broken": {s: v[0] for s, v in self._broken.items()},
            }
        )
        return value

    async def _heartbeat(self) -> None:
        """Keep this process's node key alive: readers elsewhere take its absence for the
        death of every producer here. It also carries what the log is behind on, and
        writes the markers of given-up streams once Redis takes writes again."""
        interval = self.liveness / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._redis.set(self._node_key, self._node_value(), px=self._liveness_ms)
                for stream_id in list(self._unmarked):
                    broken = self._broken.get(stream_id)
                    if broken is not None:
                        # An id above every sequence-numbered entry: the marker comes last.
                        await self._redis.xadd(
                            self._key(stream_id),
                            {_BROKEN: b"%d" % broken[0]},
                            maxlen=self.max_entries,
                        )
                    self._unmarked.discard(stream_id)
            except _FAILURES as exc:
                logger.warning("resume heartbeat failed: %s", exc)

    async def _listen(self, pubsub: Any) -> None:
        """Receive cancellation requests (stream ids) published by any process."""
        delay = 0.1
        while True:
            try:
                async for message in pubsub.listen():
                    delay = 0.1
                    if message.get("type") == b"message" or message.get("type") == "message":
                        callback = self._cancel_callback
                        if callback is not None:
                            callback(bytes(message["data"]).decode("ascii", "replace"))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                logger.warning("resume cancel subscription lost (%s); resubscribing", exc)
            # The subscription broke (e.g. Redis restarted): resubscribe, backing off.
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            pubsub = self._sub_redis.pubsub()
            with contextlib.suppress(Exception):
                await pubsub.subscribe(self._channel)

    async def create(self, stream_id: str, buffer: EventBuffer, protocol: Protocol) -> None:
        await self.connect()
        key = self._key(stream_id)
        # The owner key says who produces the stream (node), and who may read it.
        tag = b"%s %s %s" % (self.node.encode(), buffer.protocol.encode(), buffer.owner.encode())
        try:
            if self._pipe_target is None:
                async with asyncio.timeout(self._op_timeout):
                    created = await self._redis.set(
                        key + ":owner", tag, nx=True, px=round(self.expiry * 1000)
                    )
            else:
                owner = (key + ":owner").encode()
                ttl = b"%d" % round(self.expiry * 1000)
                command = _pack([b"SET", owner, tag, b"NX", b"PX", ttl])
                (reply,) = await self._execute([command])
                created = reply == b"+OK"
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable("create stream", exc) from None
        if not created:
            raise ValueError(f"stream id {stream_id!r} is already in use")

    async def write(self, stream_id: str, events: list[tuple[int, bytes]], end: int | None) -> None:
        await self.write_many([(stream_id, events, end)])

    async def write_many(
        self, batches: list[tuple[str, list[tuple[int, bytes]], int | None]]
    ) -> set[str]:
        """One round trip for everything: per stream one ``XADD`` of its events, the
        end marker, and the expiry (refreshed at most once a second per stream).

        The commands are packed here, in one formatting step per event: redis-py's
        per-command packing and reply parsing cost more CPU than plain streaming does
        per event. Returns the streams whose ``XADD`` failed (an entry id at or below
        the stream's top means the same write landed before: a success); raises
        ``ConnectionError``/``TimeoutError`` when Redis fails."""
        now = time.monotonic()
        ttl = b"%d" % round(self.expiry * 1000)
        due = self._expire_due
        heads = self._xadd_heads
        maxlen = b"%d" % self.max_entries
        commands: list[bytes] = []
        writers: list[str | None] = []  # the stream each command's success matters to
        for stream_id, events, end in batches:
            if events:
                head = heads.get(stream_id)
                if head is None:
                    head = heads[stream_id] = _xadd_head(self._key(stream_id).encode(), maxlen)
                commands.append(_pack_xadd(head, events))
                writers.append(stream_id)
            if end is not None:
                key = self._key(stream_id).encode()
                commands.append(
                    _pack([b"XADD", key, b"MAXLEN", b"~", maxlen, b"%d-1" % end, _END, b"1"])
                )
                writers.append(stream_id)
                due.pop(stream_id, None)
            elif now < due.get(stream_id, 0.0):
                continue
            else:
                due[stream_id] = now + 1.0
                key = self._key(stream_id).encode()
            for name in (key, key + b":owner", key + b":record"):
                commands.append(_pack([b"PEXPIRE", name, ttl]))
                writers.append(None)
        if not commands:
            return set()
        if self._pipe_target is not None:
            replies = await self._execute(commands, check=False)
        else:
            replies = await self._execute_pooled(commands)
        failed: set[str] = set()
        for writer, reply in zip(writers, replies, strict=True):
            if writer is not None and reply[:1] == b"-" and not _already_there(reply):
                failed.add(writer)
        for stream_id, _, end in batches:
            if end is not None and stream_id not in failed:
                heads.pop(stream_id, None)
        if failed:
            logger.warning("resume: the log refused writes of %d stream(s)", len(failed))
        return failed

    async def _execute_pooled(self, commands: list[bytes]) -> list[bytes]:
        """The replies' first lines of ``commands`` on one of redis-py's pooled
        connections (``rediss://``), error replies as ``-message``."""
        pool = self._redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        replies: list[bytes] = []
        try:
            async with asyncio.timeout(self._op_timeout):
                await conn.send_packed_command(commands, check_health=False)
                for _ in commands:
                    try:
                        reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
                    except ResponseError as exc:
                        reply = exc
                    if isinstance(reply, Exception):
                        replies.append(b"-" + str(reply).encode())
                    else:
                        replies.append(b"+OK")
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return replies

    async def _execute(self, commands: list[bytes], *, check: bool = True) -> list[bytes]:
        """Send packed commands on the lean connection (opened on first use, and again
        after a failure) and return their replies' first lines; with ``check``, an
        error reply raises ``ResponseError`` once all replies are in."""
        pipe: _Pipe | None = None
        try:
            async with asyncio.timeout(self._op_timeout):
                pipe = await self._open_pipe()
                replies = await pipe.call(b"".join(commands), len(commands))
        except TimeoutError:
            if pipe is not None:
                pipe.close()  # replies may still come: the connection's state is unknown
            raise
        if check:
            for reply in replies:
                if reply[:1] == b"-":
                    raise ResponseError(reply[1:].decode("utf-8", "replace"))
        return replies

    async def _open_pipe(self) -> _Pipe:
        pipe = self._pipe
        if pipe is not None and pipe.usable:
            return pipe
        async with self._pipe_lock:
            pipe = self._pipe
            if pipe is not None and pipe.usable:
                return pipe
            if self._closed:
                raise ConnectionError("the event log is closed")
            target = self._pipe_target
            assert target is not None
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.connect_timeout):
                if "path" in target:
                    _, pipe = await loop.create_unix_connection(_Pipe, target["path"])
                else:
                    _, pipe = await loop.create_connection(
                        _Pipe, target.get("host") or "localhost", target.get("port") or 6379
                    )
                hello = []
                password = target.get("password")
                if password is not None:
                    username = target.get("username")
                    auth = [b"AUTH", password.encode()]
                    if username:
                        auth.insert(1, username.encode())
                    hello.append(_pack(auth))
                if target.get("db"):
                    hello.append(_pack([b"SELECT", b"%d" % int(target["db"])]))
                if hello:
                    for reply in await pipe.call(b"".join(hello), len(hello)):
                        if reply[:1] == b"-":
                            pipe.close()
                            raise ConnectionError(reply[1:].decode("utf-8", "replace"))
            self._pipe = pipe
            return pipe

    async def discard(self, stream_id: str) -> None:
        key = self._key(stream_id)
        self._expire_due.pop(stream_id, None)
        self._xadd_heads.pop(stream_id, None)
        with contextlib.suppress(*_FAILURES, TimeoutError):
            async with asyncio.timeout(self._op_timeout):
                await self._redis.delete(key, key + ":owner", key + ":record")

    async def _state(
        self, stream_id: str, what: str, owner_digest: str
    ) -> tuple[bytes, bytes, int | None, int]:
        """The producing node, the protocol, the end (last sequence number, if the
        stream ended) and the newest stored sequence number. Raises StreamNotFound
        (also when ``owner_digest`` is not the stream's owner) / LogUnavailable."""
        await self.connect()
        key = self._key(stream_id)
        try:
            async with asyncio.timeout(self._op_timeout):
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(key + ":owner")
                pipe.xrevrange(key, count=1)
                owner, newest = await pipe.execute()
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable(what, exc) from None
        node, _, rest = (owner or b"").partition(b" ")
        protocol, _, digest = rest.partition(b" ")
        if owner is None or not hmac.compare_digest(digest, owner_digest.encode()):
            raise StreamNotFound(f"no stream {stream_id!r} (unknown, or expired)")
        end: int | None = None
        last = 0
        if newest:
            entry_id, fields = newest[0]
            last = int(entry_id.split(b"-", 1)[0])
            if _END in fields:
                end = last
        return node, protocol, end, last

    async def open(
        self, stream_id: str, after: int, protocol: Protocol, owner: str = ""
    ) -> AsyncIterator[bytes] | None:
        node, created_as, end, _ = await self._state(stream_id, "open stream", owner)
        if created_as.decode() != protocol:
            raise WrongProtocol(stream_id, created_as.decode(), protocol)
        if end is not None:
            if after > end:
                raise StreamNotFound(
                    f"event {format_event_id(stream_id, after)} does not exist "
                    f"(the stream has {end})",
                    code="event_not_found",
                )
            if after == end:
                return None
        # A running stream may be behind an id its client already got from the producer
        # (the log is written just after delivery), so a later id waits for its events.
        return _Reader(self._read(stream_id, after, node, protocol))

    async def _read(
        self, stream_id: str, after: int, owner: bytes, protocol: Protocol
    ) -> AsyncGenerator[bytes, None]:
        r = self._redis
        reader = self._read_redis
        key = self._key(stream_id)
        presence = key + ":reader"
        node_key = f"{self.prefix}:node:{owner.decode()}"
        block_ms = max(1, round(self.block * 1000))
        presence_ms = round(max(self.liveness, 3 * self.block) * 1000)
        start: bytes | str = f"{after}-0"
        last = after
        presence_due = 0.0
        missing_since: float | None = None  # missing while Redis took writes, since
        behind_since: float | None = None  # the producer says the log is behind
        unwritable_since: float | None = None  # Redis refuses writes (a pause, a failover)
        while True:
            now = time.monotonic()
            try:
                if now >= presence_due:
                    # Tell the producer's grace timer that someone reads (once a second).
                    # A write pause must not end the reader: reads still work.
                    presence_due = now + self.block
                    with contextlib.suppress(*_FAILURES, TimeoutError):
                        async with asyncio.timeout(self.read_timeout):
                            await r.set(presence, b"1", px=presence_ms)
                response: Any = await reader.xread({key: start}, count=1000, block=block_ms)
                if not response:
                    pipe = r.pipeline(transaction=False)
                    pipe.exists(key + ":owner")
                    pipe.get(node_key)
                    owned, beat = await pipe.execute()
                    if not owned:
                        yield _error(
                            StreamNotFound(
                                f"stream {stream_id!r} expired or was lost from the log "
                                "(was the log restarted?)",
                                code="stream_expired",
                            ),
                            protocol,
                        )
                        return
                    now = time.monotonic()
                    if beat is not None:
                        missing_since = unwritable_since = None
                        broken, produced = _reported(beat, stream_id)
                        if broken is not None:
                            yield _error(_broken(stream_id, broken), protocol)
                            return
                        if produced is not None and produced > last:
                            behind_since = behind_since or now
                            if now - behind_since > self.stall:
                                yield _error(_stalled(stream_id, last, produced), protocol)
                                return
                        else:
                            behind_since = None
                        continue
                    # No heartbeat: the producer's process died, or Redis lets no write
                    # through (a pause, a failover) and the heartbeat lapsed meanwhile.
                    # Dead only when it stays missing for a liveness period after Redis
                    # was seen taking writes again (the producer had time to beat).
                    if missing_since is None:
                        missing_since = now
                    if not await self._writable():
                        missing_since = now
                        unwritable_since = unwritable_since or now
                        if now - unwritable_since > self.stall:
                            yield _error(
                                self._unavailable(
                                    "reading the stream",
                                    TimeoutError(f"no write accepted for {self.stall:g}s"),
                                ),
                                protocol,
                            )
                            return
                        continue
                    unwritable_since = None
                    if now - missing_since < self.liveness:
                        continue
                    # Read once more without blocking, in case the end was written just
                    # before the producer's process stopped.
                    response = await r.xread({key: start}, count=1000)
                    if not response:
                        yield _error(
                            StreamError(
                                "api_error",
                                f"the producer of stream {stream_id!r} died (its process "
                                f"stopped without finishing the stream); events up to "
                                f"{format_event_id(stream_id, last)} were delivered",
                                status=502,
                                code="producer_died",
                            ),
                            protocol,
                        )
                        return
            except _FAILURES as exc:
                if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
                    # The stream's key now holds something else: the stream is lost.
                    lost = StreamNotFound(
                        f"stream {stream_id!r} was lost from the log (its key was replaced)",
                        code="stream_expired",
                    )
                    yield _error(lost, protocol)
                else:
                    yield _error(self._unavailable("reading the stream", exc), protocol)
                return
            behind_since = None
            out: list[bytes] = []
            for entry_id, fields in response[0][1]:
                start = entry_id
                for name, value in fields.items():
                    if name == _END:
                        if last != int(entry_id.split(b"-", 1)[0]):
                            out.append(_gap(stream_id, last, protocol, after))
                        yield b"".join(out)
                        return
                    if name == _BROKEN:
                        out.append(_error(_broken(stream_id, int(value)), protocol))
                        yield b"".join(out)
                        return
                    seq = int(name)
                    if seq <= last:
                        continue  # written twice (a retried write that had landed)
                    if seq != last + 1:
                        out.append(_gap(stream_id, last, protocol, after))
                        yield b"".join(out)
                        return
                    out.append(value)
                    last = seq
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)

    async def _writable(self) -> bool:
        """Whether Redis takes a write now (within ``read_timeout``)."""
        try:
            async with asyncio.timeout(self.read_timeout):
                await self._redis.set(f"{self.prefix}:probe:{self.node}", b"1", px=1000)
        except (*_FAILURES, TimeoutError):
            return False
        return True

    async def cancel(self, stream_id: str, owner: str = "") -> CancelResult:
        _, _, end, _ = await self._state(stream_id, "cancel stream", owner)
        if end is not None:
            return "finished"
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._redis.publish(self._channel, stream_id)
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable("cancel stream", exc) from None
        return "cancelled"

    async def snapshot(self, stream_id: str, owner: str = "") -> tuple[bytes, bool]:
        await self._state(stream_id, "read the stream", owner)
        try:
            async with asyncio.timeout(self._op_timeout):
                entries: Any = await self._redis.xrange(self._key(stream_id))
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable("read the stream", exc) from None
        events: dict[int, bytes] = {}
        ended = False
        for _, fields in entries:
            for name, value in fields.items():
                if name == _END:
                    ended = True
                else:
                    events[int(name)] = value
        return b"".join(events[seq] for seq in sorted(events)), ended

    async def put_record(self, stream_id: str, data: bytes) -> None:
        key = self._key(stream_id) + ":record"
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._redis.set(key, data, px=round(self.expiry * 1000))
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable("keep the request", exc) from None

    async def get_record(self, stream_id: str, owner: str = "") -> bytes | None:
        await self._state(stream_id, "read the request", owner)  # exists, and is owner's
        try:
            async with asyncio.timeout(self._op_timeout):
                data = await self._redis.get(self._key(stream_id) + ":record")
        except (*_FAILURES, TimeoutError) as exc:
            raise self._unavailable("read the request", exc) from None
        return data if isinstance(data, bytes) else None

    async def reader_elsewhere(self, stream_id: str) -> bool:
        try:
            async with asyncio.timeout(self._op_timeout):
                return bool(await self._redis.exists(self._key(stream_id) + ":reader"))
        except (*_FAILURES, TimeoutError):
            return False  # cannot tell: the grace period decides

    async def memory_usage(self, stream_id: str) -> int:
        """Bytes Redis uses for the stream's keys (``MEMORY USAGE``), for benchmarks."""
        key = self._key(stream_id)
        total = 0
        for name in (key, key + ":owner"):
            total += int(await self._redis.memory_usage(name, samples=0) or 0)
        return total

    async def aclose(self) -> None:
        self._closed = True
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._connected:
            self._connected = False
            with contextlib.suppress(*_FAILURES, TimeoutError):
                async with asyncio.timeout(self._op_timeout):
                    await self._redis.delete(self._node_key)
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()
        await self._read_redis.aclose()
        await self._sub_redis.aclose()


class _Reader:
    """An async generator of whole encoded events, marked as such for the response."""

    __slots__ = ("_gen",)

    _tokenwire_bytes = True

    def __init__(self, gen: AsyncGenerator[bytes, None]) -> None:
        self._gen = gen

    def __aiter__(self) -> _Reader:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()


def _error(err: StreamError, protocol: Protocol) -> bytes:
    return err.to_sse_event(protocol)


def _reported(beat: bytes, stream_id: str) -> tuple[int | None, int | None]:
    """From a producer's heartbeat: the last written event of ``stream_id`` if it was
    given up, and the last produced one if the log is behind on it."""
    if beat[:1] != b"{":
        return None, None
    try:
        report = orjson.loads(beat)
        broken = report.get("broken", {}).get(stream_id)
        behind = report.get("behind", {}).get(stream_id)
        return (
            int(broken) if broken is not None else None,
            int(behind[1]) if behind is not None else None,
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, IndexError):
        return None, None


def _broken(stream_id: str, written: int) -> StreamError:
    return StreamError(
        "api_error",
        f"stream {stream_id!r} broke: its producer could not write it to the log after "
        f"{format_event_id(stream_id, written)} and gave up",
        status=502,
        code="stream_broken",
    )


def _stalled(stream_id: str, last: int, produced: int) -> StreamError:
    return StreamError(
        "overloaded",
        f"the log of stream {stream_id!r} stopped at event {last} while its producer has "
        f"produced {produced}: the resume store is not taking its writes",
        status=503,
        code="log_behind",
    )


def _gap(stream_id: str, last: int, protocol: Protocol, after: int) -> bytes:
    if last == after:
        message = f"the events after {format_event_id(stream_id, after)} are no longer in the log"
    else:
        message = (
            f"events after {format_event_id(stream_id, last)} are missing from the log "
            "(trimmed, expired, or lost in a restart of the log)"
        )
    return _error(StreamNotFound(message, code="stream_expired"), protocol)
