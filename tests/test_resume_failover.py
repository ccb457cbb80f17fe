"""Resumable streams when Redis misbehaves: write pauses (what FAILOVER and managed-Redis
maintenance do), writes refused for one stream but not another, a producer that gives
up, an emptied Redis and a stopped one. Real redis-server; each "process" is a
ResumableStreams with a RedisEventLog of its own (its own node id), so a reader on one
tails a stream produced by the other exactly as two gateway processes do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.resume_helpers import RedisServer, redis_server
from tokenwire.resume import ResumableStreams, StreamNotFound
from tokenwire.sse import ServerSentEvent, SSEDecoder

pytestmark = pytest.mark.integration
__all__ = ["redis_server"]


def process(redis: RedisServer, **options: Any) -> ResumableStreams:
    """One gateway process's view of the shared log (quick liveness for the tests)."""
    options.setdefault("liveness", 1.0)
    options.setdefault("block", 0.2)
    return ResumableStreams(redis.url, grace=30, **options)


async def events_of(reader: AsyncIterator[bytes] | None) -> list[ServerSentEvent]:
    assert reader is not None
    decoder = SSEDecoder()
    out: list[ServerSentEvent] = []
    async for chunk in reader:
        out += decoder.feed(chunk)
    return out


def source(n: int, gate: asyncio.Event | None = None, at: int = -1) -> AsyncIterator[str]:
    """``n`` events ``"0"`` .. ``"n-1"``; with ``gate``, waits for it before event ``at``
    (the test opens it once Redis is in the state it wants)."""

    async def produce() -> AsyncIterator[str]:
        for i in range(n):
            if gate is not None and i == at:
                await gate.wait()
            yield str(i)
            await asyncio.sleep(0)

    return produce()


def data(events: list[ServerSentEvent]) -> list[str]:
    return [e.data for e in events if e.event == "message"]


async def admin(redis: RedisServer) -> Redis:
    return Redis.from_url(redis.url)


async def until(predicate: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("when", ["mid-stream", "at-the-end"])
async def test_a_write_pause_loses_nothing(redis_server: RedisServer, when: str) -> None:
    a, b = process(redis_server), process(redis_server)
    control = await admin(redis_server)
    gate = asyncio.Event()
    n = 80
    try:
        producer = await a.create("paused")
        producer.start(source(n, gate, at=30 if when == "mid-stream" else n - 1))
        local = producer.reader(0)
        # A reader elsewhere, from the start; it tails what A writes.
        elsewhere = asyncio.create_task(events_of(await b.open("paused", 0)))
        await until(lambda: producer.buffer.last >= (30 if when == "mid-stream" else n - 1))
        await control.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        gate.set()  # the rest (or the end) is produced while Redis takes no writes
        started = time.monotonic()
        mine = await events_of(local)
        theirs = await asyncio.wait_for(elsewhere, 30)
        # Every event exactly once, in order, and the real end, on both processes.
        assert data(mine) == data(theirs) == [str(i) for i in range(n)]
        assert [e.id for e in theirs] == [f"paused-{i}" for i in range(1, n + 1)]
        assert time.monotonic() - started < 20
        # And a resume from the middle, after the pause, on the other process.
        again = await events_of(await b.open("paused", 29))
        assert data(again) == [str(i) for i in range(29, n)]
    finally:
        with contextlib.suppress(Exception):
            await control.execute_command("CLIENT", "UNPAUSE")
        await control.aclose()
        await a.aclose()
        await b.aclose()


async def test_one_stream_refused_the_other_lands_then_both_complete(
    redis_server: RedisServer,
) -> None:
    a, b = process(redis_server), process(redis_server)
    control = await admin(redis_server)
    try:
        ok = await a.create("lands")
        refused = await a.create("refused")
        # The second stream's key is taken by a value of another type: its XADDs fail
        # (WRONGTYPE) in the same pipelines in which the first's succeed.
        await control.set("tokenwire:s:{refused}", b"in the way")
        gate = asyncio.Event()
        ok.start(source(40))
        refused.start(source(40, gate, at=20))
        tailing = asyncio.create_task(events_of(await b.open("lands", 0)))
        assert data(await asyncio.wait_for(tailing, 20)) == [str(i) for i in range(40)]
        await until(lambda: refused.buffer.last >= 20)
        assert await control.type("tokenwire:s:{refused}") == b"string"  # nothing landed
        await control.delete("tokenwire:s:{refused}")
        gate.set()
        refused_events = await asyncio.wait_for(
            events_of(await b.open("refused", 0)), 20
        )  # the retries landed, in order: nothing lost, nothing twice
        assert data(refused_events) == [str(i) for i in range(40)]
    finally:
        await control.aclose()
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("give_up", [False, True], ids=["stalled", "given-up"])
async def test_a_log_that_stops_taking_a_producers_writes_is_an_error_not_silence(
    redis_server: RedisServer, give_up: bool
) -> None:
    # A producer whose Redis user may not XADD (a misconfigured ACL): its heartbeat and
    # reports get through, its events do not. Readers elsewhere must not wait forever.
    control = await admin(redis_server)
    await control.execute_command(
        "ACL", "SETUSER", "producer", "on", ">pw", "~*", "&*", "+@all", "-xadd"
    )
    url = redis_server.url.replace("redis://", "redis://producer:pw@")
    options: dict[str, Any] = {"liveness": 1.0, "block": 0.2}
    a = ResumableStreams(
        url, grace=30, write_give_up=0.5 if give_up else 60.0, stall=1.0, **options
    )
    b = process(redis_server, stall=1.0)
    try:
        producer = await a.create("held")
        producer.start(source(30))
        started = time.monotonic()
        events = await asyncio.wait_for(events_of(await b.open("held", 0)), 30)
        assert time.monotonic() - started < 15
        assert data(await events_of(producer.reader(0))) == [str(i) for i in range(30)]
        assert data(events) == [] and events[-1].event == "error"
        error = events[-1].json()
        if give_up:
            assert error["type"] == "api_error" and "gave up" in error["message"]
        else:
            assert error["type"] == "overloaded" and "stopped at event 0" in error["message"]
    finally:
        await control.aclose()
        await a.aclose()
        await b.aclose()


async def test_an_emptied_redis_is_an_error_for_readers(redis_server: RedisServer) -> None:
    a, b = process(redis_server), process(redis_server)
    control = await admin(redis_server)
    try:
        producer = await a.create("flushed")
        gate = asyncio.Event()
        producer.start(source(40, gate, at=15))
        tail = asyncio.create_task(events_of(await b.open("flushed", 0)))
        await until(lambda: producer.buffer.last >= 15)
        await control.flushall()  # a restart without persistence, a promoted empty replica
        # A reader arriving now: the stream is gone, and it is told so.
        with pytest.raises(StreamNotFound):
            await b.open("flushed", 5)
        gate.set()
        events = await asyncio.wait_for(tail, 20)
        # The reader that was tailing: the whole stream, or an error; never short and silent.
        assert data(events) == [str(i) for i in range(40)] or events[-1].event == "error"
    finally:
        await control.aclose()
        await a.aclose()
        await b.aclose()


async def test_readers_notice_a_stopped_redis_within_the_bound(redis_server: RedisServer) -> None:
    a = process(redis_server)
    b = process(redis_server, connect_timeout=0.5, read_timeout=0.5)
    try:
        producer = await a.create("frozen")
        gate = asyncio.Event()
        producer.start(source(10, gate, at=5))
        tail = asyncio.create_task(events_of(await b.open("frozen", 0)))
        await until(lambda: producer.buffer.last >= 5)
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)  # up, but answering nothing
        started = time.monotonic()
        try:
            events = await asyncio.wait_for(tail, 20)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        elapsed = time.monotonic() - started
        assert events[-1].event == "error" and "unreachable" in events[-1].json()["message"]
        assert elapsed < 5, elapsed  # block (0.2 s) + read_timeout (0.5 s), loosely
        gate.set()
    finally:
        await a.aclose()
        await b.aclose()
