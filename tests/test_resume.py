"""Resumable streams (tokenwire.resume) on real uvicorn servers, with the in-memory log
and with a real redis-server: ids, replay, random cuts, grace period, cancellation from
another server, expiry, trimming, Redis outages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx2
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import serve
from tests.resume_helpers import RedisServer, pairs, read, redis_server
from tests.server_helpers import free_port
from tokenwire.errors import StreamError
from tokenwire.resume import (
    LogUnavailable,
    MemoryEventLog,
    ResumableStreams,
    StreamNotFound,
    cancel_stream,
    format_event_id,
    last_event_id,
    parse_event_id,
)
from tokenwire.resume.streams import _split
from tokenwire.sse import ServerSentEvent, SSEDecoder

pytestmark = pytest.mark.integration
__all__ = ["redis_server"]  # the fixture, re-exported for pytest

DONE = "[DONE]"


class Tracker:
    """What the sources did, per tag: events produced, when they were closed."""

    def __init__(self) -> None:
        self.produced: dict[str, int] = {}
        self.closed: dict[str, float] = {}


def make_app(streams: ResumableStreams, tracker: Tracker) -> Starlette:
    async def source(tag: str, n: int, delay: float, fail: bool) -> AsyncIterator[Any]:
        try:
            for i in range(n):
                tracker.produced[tag] = i + 1
                if i % 7 == 3:  # several events in one chunk: each gets its own id
                    yield b'data: {"i":%d}\n\nevent: note\ndata: x\n\n' % i
                else:
                    yield {"i": i}
                if delay:
                    await asyncio.sleep(delay)
            if fail:
                raise RuntimeError("the source broke")
            yield DONE
        finally:
            tracker.closed[tag] = time.monotonic()

    async def stream(request: Request) -> Response:
        params = request.query_params
        try:
            resume_from = last_event_id(request)
            if resume_from is not None:
                return await streams.resume(resume_from)
            return await streams.stream(
                source(
                    params.get("tag", "t"),
                    int(params.get("n", "20")),
                    float(params.get("delay", "0")),
                    params.get("fail") == "1",
                ),
                stream_id=params.get("id"),
            )
        except StreamError as err:
            return Response(err.to_response_body(), status_code=err.http_status())

    async def cancel(request: Request) -> Response:
        try:
            status = await streams.cancel(request.path_params["id"])
        except StreamError as err:
            return Response(err.to_response_body(), status_code=err.http_status())
        return Response(orjson.dumps({"status": status}))

    return Starlette(
        routes=[
            Route("/stream", stream),
            Route("/streams/{id}", cancel, methods=["DELETE"]),
        ]
    )


@contextmanager
def servers(
    kind: str, redis: RedisServer | None, count: int = 1, **options: Any
) -> Iterator[tuple[list[str], Tracker, list[ResumableStreams]]]:
    """``count`` uvicorn servers, each with its own ResumableStreams (so, with Redis,
    they are separate producers sharing one log, as separate processes would be)."""
    tracker = Tracker()
    all_streams = []
    with ExitStack() as stack:
        urls = []
        for _ in range(count):
            log: Any = "memory" if kind == "memory" else redis.url  # type: ignore[union-attr]
            if kind == "memory":
                log = MemoryEventLog(expiry=options.pop("expiry", 600.0))
            streams = ResumableStreams(log, ping=None, **options)
            all_streams.append(streams)
            urls.append(stack.enter_context(serve(make_app(streams, tracker))))
        yield urls, tracker, all_streams


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> tuple[str, RedisServer | None]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_server")
    return "memory", None


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait (a bounded time) for a condition set by a server thread."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - set by another thread's loop
            await asyncio.sleep(0.01)


def expected(n: int, fail: bool = False) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(n):
        out.append(("message", orjson.dumps({"i": i}).decode()))
        if i % 7 == 3:
            out.append(("note", "x"))
    if not fail:
        out.append(("message", DONE))
    return out


# -- units -------------------------------------------------------------------------------


def test_event_ids() -> None:
    assert format_event_id("abc", 7) == "abc-7"
    assert parse_event_id("abc-7") == ("abc", 7)
    assert parse_event_id("a_b-0") == ("a_b", 0)
    assert parse_event_id("abc") == ("abc", 0)  # the stream id alone: from the start
    for bad in ("", "abc-x", "a b-1", "abc-1-", "-1", "abc--1", "é-1"):
        with pytest.raises(StreamError) as info:
            parse_event_id(bad)
        assert info.value.type == "invalid_request" and info.value.http_status() == 400


def test_split_into_events() -> None:
    assert _split(b"data: a\n\n") == [b"data: a\n\n"]
    assert _split(b"data: a\n\nevent: e\ndata: b\n\n") == [b"data: a\n\n", b"event: e\ndata: b\n\n"]
    assert _split(b": ping\n") == []
    assert _split(b": c\ndata: a\n\n: only comment\n\n") == [b": c\ndata: a\n\n"]
    assert _split(b"data: a\r\n\r\ndata: b\r\r") == [b"data: a\n\n", b"data: b\n\n"]


async def test_bad_arguments() -> None:
    streams = ResumableStreams()
    with pytest.raises(ValueError, match="stream id"):
        await streams.create("no spaces")
    with pytest.raises(ValueError, match="protocol"):
        await streams.create(protocol="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        ResumableStreams(grace=-1)
    with pytest.raises(ValueError, match="resume must be"):
        ResumableStreams("postgres://x")
    producer = await streams.create("taken")
    with pytest.raises(ValueError, match="in use"):
        await streams.create("taken")
    await producer.discard()
    with pytest.raises(StreamNotFound):
        await streams.open("taken")
    await streams.aclose()


# -- replay ------------------------------------------------------------------------------


async def test_ids_replay_and_errors(kind: tuple[str, RedisServer | None]) -> None:
    with servers(*kind) as (urls, _, _):
        url = urls[0]
        async with httpx2.AsyncClient(timeout=10) as client:
            status, events, headers = await read(client, url + "/stream?n=20&id=s1")
            assert status == 200
            assert pairs(events) == expected(20)
            assert headers["x-tokenwire-stream-id"] == "s1"
            assert [e.id for e in events] == [f"s1-{i}" for i in range(1, len(events) + 1)]
            # Resume after any event: exactly the rest, same bytes, same ids.
            for k in (0, 1, 5, len(events) - 1):
                status, rest, _ = await read(client, url + "/stream", {"Last-Event-ID": f"s1-{k}"})
                assert status == 200 and rest == events[k:]
            # The stream id alone: from the start. The query parameter works too.
            assert (await read(client, url + "/stream", {"Last-Event-ID": "s1"}))[1] == events
            rest = (await read(client, url + "/stream?last_event_id=s1-3"))[1]
            assert rest == events[3:]
            # The header wins over the query parameter.
            rest = (
                await read(client, url + "/stream?last_event_id=s1-3", {"Last-Event-ID": "s1-9"})
            )[1]
            assert rest == events[9:]
            # Nothing after the last event of a finished stream: 204, EventSource stops.
            last = events[-1].id
            assert (await read(client, url + "/stream", {"Last-Event-ID": last}))[0] == 204
            # Unknown stream, an id past the end, a malformed id.
            response = await client.get(url + "/stream", headers={"Last-Event-ID": "nope-3"})
            assert response.status_code == 404
            assert response.json()["type"] == "not_found"
            past = f"s1-{len(events) + 1}"
            response = await client.get(url + "/stream", headers={"Last-Event-ID": past})
            assert response.status_code == 404 and "does not exist" in response.json()["message"]
            response = await client.get(url + "/stream", headers={"Last-Event-ID": "s1-x"})
            assert response.status_code == 400


async def test_source_failure_is_the_last_event(kind: tuple[str, RedisServer | None]) -> None:
    with servers(*kind) as (urls, _, _):
        async with httpx2.AsyncClient(timeout=10) as client:
            _, events, _ = await read(client, urls[0] + "/stream?n=5&id=f1&fail=1")
            assert pairs(events[:-1]) == expected(5, fail=True)
            assert events[-1].event == "error" and events[-1].json()["type"] == "api_error"
            assert events[-1].id == f"f1-{len(events)}"
            _, again, _ = await read(client, urls[0] + "/stream", {"Last-Event-ID": "f1-2"})
            assert again == events[2:]


async def test_random_cuts_lose_and_repeat_nothing(kind: tuple[str, RedisServer | None]) -> None:
    """8 concurrent streams, 200 cuts at random bytes; with Redis every reconnect goes
    to the other server (a different producer process)."""
    rng = random.Random(8)
    count = 2 if kind[0] == "redis" else 1
    n_streams, cuts_wanted = 8, 200
    cuts = 0
    with servers(*kind, count=count) as (urls, _, _):
        async with httpx2.AsyncClient(timeout=10) as client:

            async def one(sid: str) -> None:
                nonlocal cuts
                got: list[ServerSentEvent] = []
                status, events, _ = await read(
                    client,
                    f"{urls[0]}/stream?n=60&delay=0.003&id={sid}",
                    cut_after=rng.randint(1, 300),
                )
                got += events
                turn = 1
                while True:
                    last = got[-1].id if got else sid
                    assert last is not None
                    cut = rng.randint(1, 400) if cuts < cuts_wanted else None
                    if cut is not None:
                        cuts += 1
                    status, events, _ = await read(
                        client, f"{urls[turn % count]}/stream", {"Last-Event-ID": last}, cut
                    )
                    turn += 1
                    if status == 204:
                        break
                    assert status == 200
                    got += events
                    if events and events[-1].data == DONE:
                        break
                assert pairs(got) == expected(60), sid
                assert [e.id for e in got] == [f"{sid}-{i}" for i in range(1, len(got) + 1)]

            rounds = 0
            while cuts < cuts_wanted:
                rounds += 1
                await asyncio.gather(*(one(f"r{rounds}_{i}") for i in range(n_streams)))
    assert cuts >= cuts_wanted


# -- grace period and cancellation ----------------------------------------------------------


async def test_grace_period_then_cancel(kind: tuple[str, RedisServer | None]) -> None:
    with servers(*kind, grace=0.6) as (urls, tracker, _):
        url = urls[0]
        async with httpx2.AsyncClient(timeout=10) as client:
            # The client leaves after a few events; generation goes on meanwhile.
            _, first, _ = await read(
                client, url + "/stream?n=400&delay=0.01&id=g1&tag=g1", cut_after=60
            )
            produced = tracker.produced["g1"]
            await asyncio.sleep(0.3)
            assert tracker.produced["g1"] > produced and "g1" not in tracker.closed
            # A reconnect within the grace period resumes with nothing lost.
            _, more, _ = await read(
                client, url + "/stream", {"Last-Event-ID": first[-1].id or "g1"}, cut_after=300
            )
            assert pairs(first + more) == expected(400)[: len(first) + len(more)]
            left = time.monotonic()
            # Nobody comes back: the producer is stopped once the grace period is over.
            deadline = time.monotonic() + 5
            while "g1" not in tracker.closed:
                assert time.monotonic() < deadline, "the producer was not cancelled"
                await asyncio.sleep(0.05)
            assert tracker.closed["g1"] - left >= 0.5
            assert tracker.produced["g1"] < 400
            # The stream ends with a cancelled error event, for anyone resuming later.
            _, rest, _ = await read(client, url + "/stream", {"Last-Event-ID": more[-1].id or ""})
            assert rest[-1].event == "error"
            assert rest[-1].json()["type"] == "cancelled"
            assert "no client read it" in rest[-1].json()["message"]


async def test_grace_zero_cancels_at_once() -> None:
    with servers("memory", None, grace=0) as (urls, tracker, _):
        async with httpx2.AsyncClient(timeout=10) as client:
            await read(client, urls[0] + "/stream?n=400&delay=0.01&id=z1&tag=z1", cut_after=50)
            left = time.monotonic()
            deadline = left + 2
            while "z1" not in tracker.closed:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)


async def test_cancel_from_another_server(redis_server: RedisServer) -> None:
    with servers("redis", redis_server, count=2) as (urls, tracker, _):
        a, b = urls
        async with httpx2.AsyncClient(timeout=10) as client:
            reader = asyncio.create_task(read(client, a + "/stream?n=1000&delay=0.01&id=c1&tag=c1"))
            await wait_until(lambda: tracker.produced.get("c1", 0) >= 5)
            response = await client.delete(b + "/streams/c1")
            assert response.json() == {"status": "cancelled"}
            _, events, _ = await asyncio.wait_for(reader, 5)
            assert "c1" in tracker.closed and tracker.produced["c1"] < 1000
            assert events[-1].event == "error" and events[-1].json()["type"] == "cancelled"
            # Also seen by a reader on the other server, which ends too.
            _, rest, _ = await read(client, b + "/stream", {"Last-Event-ID": "c1-1"})
            assert rest == events[1:]
            # Cancelling again: finished; unknown: 404; the library call from "anywhere".
            assert (await client.delete(b + "/streams/c1")).json() == {"status": "finished"}
            assert (await client.delete(b + "/streams/none")).status_code == 404
            assert await cancel_stream(redis_server.url, "c1") == "finished"
            with pytest.raises(StreamNotFound):
                await cancel_stream(redis_server.url, "nope")


# -- expiry, trimming, outages ---------------------------------------------------------------


async def test_expired_stream(kind: tuple[str, RedisServer | None]) -> None:
    with servers(*kind, expiry=0.3) as (urls, _, _):
        async with httpx2.AsyncClient(timeout=10) as client:
            _, events, _ = await read(client, urls[0] + "/stream?n=3&id=e1")
            assert (await read(client, urls[0] + "/stream", {"Last-Event-ID": "e1-1"}))[
                1
            ] == events[1:]
            await asyncio.sleep(0.8)
            response = await client.get(urls[0] + "/stream", headers={"Last-Event-ID": "e1-1"})
            assert response.status_code == 404
            assert "unknown, or expired" in response.json()["message"]


async def test_trimmed_events_are_an_error_not_a_gap() -> None:
    streams = ResumableStreams(MemoryEventLog(max_events=10))

    async def source() -> AsyncIterator[str]:
        for i in range(50):
            yield str(i)

    producer = await streams.create("t1")
    producer.start(source())
    reader = producer.reader(0)
    assert reader is not None
    await asyncio.sleep(0.05)
    data = b"".join([chunk async for chunk in reader])
    events = SSEDecoder().feed(data)
    assert events[-1].event == "error" and events[-1].json()["type"] == "not_found"
    assert "trimmed" in events[-1].json()["message"]
    late = await streams.open("t1", 45)
    assert late is not None
    assert [e.data for e in SSEDecoder().feed(b"".join([c async for c in late]))] == [
        "45",
        "46",
        "47",
        "48",
        "49",
    ]
    await streams.aclose()


async def test_the_memory_log_holds_at_most_its_byte_budget() -> None:
    log = MemoryEventLog(max_bytes=100_000)
    streams = ResumableStreams(log)
    payload = "x" * 1000

    async def source(n: int) -> AsyncIterator[str]:
        for _ in range(n):
            yield payload

    finished = []
    for i in range(5):  # 5 finished streams of ~50 KB: the oldest are forgotten
        producer = await streams.create(f"done{i}")
        producer.start(source(50))
        await producer._task  # type: ignore[misc]
        finished.append(producer.id)
        assert log.bytes_held <= 100_000
    with pytest.raises(StreamNotFound):
        await streams.open("done0", 0)
    assert await streams.open("done4", 0) is not None
    # A running stream that nobody reads is trimmed from its oldest events.
    producer = await streams.create("running")
    producer.start(source(300))
    await producer._task  # type: ignore[misc]
    assert log.bytes_held <= 100_000
    late = await streams.open("running", 0)
    assert late is not None
    events = SSEDecoder().feed(b"".join([chunk async for chunk in late]))
    assert events[-1].event == "error" and "memory budget" in events[-1].json()["message"]
    await streams.aclose()
    assert log.bytes_held == 0


async def test_redis_unreachable_fails_fast() -> None:
    streams = ResumableStreams(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LogUnavailable) as info:
        await streams.create()
    assert time.monotonic() - started < 5
    assert info.value.http_status() == 503 and "unreachable" in info.value.message
    # Within unavailable_for, at once.
    started = time.monotonic()
    with pytest.raises(LogUnavailable):
        await streams.open("abc", 1)
    assert time.monotonic() - started < 0.5
    await streams.aclose()


async def test_redis_restart(redis_server: RedisServer) -> None:
    """Redis goes away mid-stream: the producer's own client is not affected, a reader
    on another server ends with a clear error (no hang), new streams fail fast; once
    Redis is back, streams work again and the lost stream says so."""
    with servers("redis", redis_server, count=2, unavailable_for=0.2) as (urls, tracker, _):
        a, b = urls
        async with httpx2.AsyncClient(timeout=20) as client:
            own = asyncio.create_task(read(client, a + "/stream?n=150&delay=0.01&id=x1&tag=x1"))
            await wait_until(lambda: tracker.produced.get("x1", 0) >= 5)
            other = asyncio.create_task(read(client, b + "/stream", {"Last-Event-ID": "x1-1"}))
            await asyncio.sleep(0.2)
            redis_server.stop()
            status, events, _ = await asyncio.wait_for(other, 10)
            assert status == 200
            error = events[-1]
            assert error.event == "error", events[-3:]
            assert error.json()["type"] in ("overloaded", "not_found")
            # The producer's own reader got every event, live.
            _, mine, _ = await asyncio.wait_for(own, 10)
            assert pairs(mine) == expected(150)
            response = await client.get(b + "/stream?n=2&id=x2")
            assert response.status_code == 503
            assert "unreachable" in response.json()["message"]
            redis_server.start()
            await asyncio.sleep(0.3)
            deadline = time.monotonic() + 5
            while True:
                status, events, _ = await read(client, b + "/stream?n=2&id=x3")
                if status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert status == 200 and pairs(events) == expected(2)
            # The stream written before the restart is gone (no persistence): 404.
            response = await client.get(b + "/stream", headers={"Last-Event-ID": "x1-1"})
            assert response.status_code == 404
