"""The Redis log's own write connection: replies split at any byte, packing, passwords,
ACL users and databases, reconnects, timeouts, and redis-py's connections as the path
for TLS (real redis-server)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.resume_helpers import RedisServer, redis_server
from tests.server_helpers import free_port
from tokenwire.resume import EventBuffer, LogUnavailable
from tokenwire.resume.redis import RedisEventLog, _pack, _pack_xadd, _Pipe, _xadd_head

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

# What Redis answers to the writer's commands: SET NX (+OK, or a null bulk string),
# PEXPIRE (:1), XADD (the entry id), an error, and a bulk payload holding a CRLF.
WIRE = b"+OK\r\n:1\r\n$-1\r\n$3\r\n7-0\r\n-ERR boom\r\n$6\r\na\r\nb\r\n\r\n:0\r\n"
FIRST_LINES = [b"+OK", b":1", b"$-1", b"$3", b"-ERR boom", b"$6", b":0"]


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


def make_pipe() -> tuple[_Pipe, FakeTransport]:
    pipe = _Pipe()
    transport = FakeTransport()
    pipe.connection_made(transport)  # type: ignore[arg-type]
    return pipe, transport


async def test_replies_split_at_any_two_points() -> None:
    for i in range(len(WIRE) + 1):
        for j in range(i, len(WIRE) + 1):
            pipe, transport = make_pipe()
            first = pipe.call(b"a", 3)
            second = pipe.call(b"b", 4)
            for part in (WIRE[:i], WIRE[i:j], WIRE[j:]):
                if part:
                    pipe.data_received(part)
            assert first.result() == FIRST_LINES[:3], (i, j)
            assert second.result() == FIRST_LINES[3:], (i, j)
            assert transport.written == [b"a", b"b"] and not transport.aborted


async def test_a_cancelled_caller_does_not_shift_the_replies() -> None:
    pipe, _ = make_pipe()
    first = pipe.call(b"a", 1)
    first.cancel()
    second = pipe.call(b"b", 1)
    pipe.data_received(b":1\r\n+OK\r\n")
    assert second.result() == [b"+OK"]


@pytest.mark.parametrize(
    "wire", [b"*2\r\n:1\r\n:2\r\n", b"?\r\n", b":1\r\n:2\r\n"], ids=["array", "junk", "extra"]
)
async def test_unexpected_bytes_close_the_connection(wire: bytes) -> None:
    """Anything but the replies asked for means the connection can no longer be
    trusted: pending calls fail, the connection is dropped, later calls fail at once."""
    pipe, transport = make_pipe()
    call = pipe.call(b"a", 1)
    pipe.data_received(wire)
    if wire.startswith(b":1"):  # the reply asked for came, then one nobody asked for
        assert call.result() == [b":1"]
    else:
        with pytest.raises(ConnectionError, match="unexpected reply"):
            call.result()
    assert transport.aborted and not pipe.usable
    with pytest.raises(ConnectionError):
        pipe.call(b"b", 1).result()


async def test_connection_lost_fails_pending_calls() -> None:
    pipe, _ = make_pipe()
    call = pipe.call(b"a", 2)
    pipe.data_received(b"+OK\r\n")
    pipe.connection_lost(None)
    with pytest.raises(ConnectionError):
        call.result()
    assert not pipe.usable


@given(
    seqs=st.lists(st.integers(1, 10**12), min_size=1, max_size=5),
    data=st.lists(st.binary(max_size=40), min_size=5, max_size=5),
    key=st.binary(min_size=1, max_size=30),
)
def test_hand_packed_xadd_is_the_generic_encoding(
    seqs: list[int], data: list[bytes], key: bytes
) -> None:
    events = list(zip(seqs, data, strict=False))
    args = [b"XADD", key, b"MAXLEN", b"~", b"10000", b"%d-0" % seqs[-1]]
    for seq, value in events:
        args += [b"%d" % seq, value]
    assert _pack_xadd(_xadd_head(key, b"10000"), events) == _pack(args)


# -- against a real redis-server -------------------------------------------------------------


async def round_trip(log: RedisEventLog, stream_id: str) -> None:
    """Create a stream, write it in two batches with an end, read it back."""
    events = [
        (seq, b"id: %s-%d\ndata: %d\n\n" % (stream_id.encode(), seq, seq)) for seq in (1, 2, 3)
    ]
    await log.connect()
    await log.create(stream_id, EventBuffer(), "generic")
    await log.write(stream_id, events[:1], None)
    await log.write(stream_id, events[1:], 3)
    reader = await log.open(stream_id, 0, "generic")
    assert reader is not None
    got = b"".join([chunk async for chunk in reader])
    assert got == b"".join(data for _, data in events)
    with pytest.raises(ValueError, match="already in use"):
        await log.create(stream_id, EventBuffer(), "generic")


@pytest.fixture
def secured_redis() -> Iterator[RedisServer]:
    server = RedisServer(
        args=("--requirepass", "s3cret", "--user", "alice", "on", ">pw2", "~*", "&*", "+@all")
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.integration
async def test_password_user_and_database(secured_redis: RedisServer) -> None:
    port = secured_redis.port
    for url in (f"redis://:s3cret@127.0.0.1:{port}/3", f"redis://alice:pw2@127.0.0.1:{port}/3"):
        log = RedisEventLog(url)
        try:
            stream_id = "pw" if url.startswith("redis://:") else "acl"
            await round_trip(log, stream_id)
        finally:
            await log.aclose()
    # Both streams were written to database 3, none to database 0.
    for db, expected in ((3, 1), (0, 0)):
        client = Redis(host="127.0.0.1", port=port, db=db, password="s3cret")
        try:
            assert await client.exists("tokenwire:s:{pw}", "tokenwire:s:{acl}") == 2 * expected
        finally:
            await client.aclose()


@pytest.mark.integration
async def test_wrong_password_is_unavailable(secured_redis: RedisServer) -> None:
    log = RedisEventLog(f"redis://:wrong@127.0.0.1:{secured_redis.port}/0")
    try:
        with pytest.raises(LogUnavailable):
            await log.create("x", EventBuffer(), "generic")
    finally:
        await log.aclose()


@pytest.mark.integration
async def test_pooled_writes_as_used_over_tls(redis_server: RedisServer) -> None:
    """``rediss://`` logs write through redis-py's connections: the same results."""
    log = RedisEventLog(redis_server.url)
    log._pipe_target = None  # what a rediss:// URL gives
    try:
        await round_trip(log, "pooled")
        assert log._pipe is None
    finally:
        await log.aclose()


@pytest.mark.integration
async def test_reconnects_after_the_connection_was_killed(redis_server: RedisServer) -> None:
    log = RedisEventLog(redis_server.url)
    admin = Redis.from_url(redis_server.url)
    try:
        await log.connect()
        await log.create("k", EventBuffer(), "generic")
        await log.write("k", [(1, b"id: k-1\ndata: 1\n\n")], None)
        first = log._pipe
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await asyncio.sleep(0.2)
        assert first is not None and not first.usable
        await log.write("k", [(2, b"id: k-2\ndata: 2\n\n")], 2)
        assert log._pipe is not first
        reader = await log.open("k", 0, "generic")
        assert reader is not None
        assert b"".join([c async for c in reader]) == b"id: k-1\ndata: 1\n\nid: k-2\ndata: 2\n\n"
    finally:
        await admin.aclose()
        await log.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for sock in held:
            sock.close()
        listener.close()


@pytest.mark.integration
async def test_a_hung_redis_times_out_a_write(silent_server: int) -> None:
    log = RedisEventLog(f"redis://127.0.0.1:{silent_server}/0", connect_timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await log.write("h", [(1, b"id: h-1\ndata: 1\n\n")], None)
        elapsed = time.monotonic() - started
        assert 1.0 < elapsed < 5, elapsed  # the operation timeout: 2 x connect_timeout + 1 s
        assert log._pipe is not None and not log._pipe.usable  # dropped, not reused
    finally:
        await log.aclose()


@pytest.mark.integration
async def test_unreachable_redis_fails_a_write_fast() -> None:
    log = RedisEventLog(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            await log.write("u", [(1, b"id: u-1\ndata: 1\n\n")], None)
        assert time.monotonic() - started < 2
    finally:
        await log.aclose()
