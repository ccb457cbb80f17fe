"""EventStreamResponse on a real uvicorn server: wire format, heartbeats, errors,
disconnects, send timeouts, sync sources, and use as a plain ASGI app."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import shutil
import subprocess
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import serve
from tests.server_helpers import dechunk, open_stream, read_body_end, read_until, wait_for
from tokenwire.server import EventStreamResponse, encode_item, request_shutdown
from tokenwire.sse import ServerSentEvent, decode

pytestmark = pytest.mark.integration


def app_for(make: Any) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return make(request)  # type: ignore[no-any-return]

    return Starlette(routes=[Route("/", endpoint)])


# -- wire format -------------------------------------------------------------------------


def test_headers_and_every_item_type() -> None:
    async def source() -> AsyncIterator[Any]:
        yield ServerSentEvent("a", event="update", id="1", retry=500)
        yield "plain"
        yield "two\nlines"
        yield {"k": "é", "n": [1, 2]}
        yield [1, 2]
        yield b"event: raw\ndata: bytes\n\n"
        yield b": just a comment\n"

    app = app_for(lambda r: EventStreamResponse(source(), headers={"X-Extra": "1"}))
    with serve(app) as url:
        response = httpx.get(url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-extra"] == "1"
    assert "content-length" not in response.headers
    assert response.content == (
        b"event: update\nid: 1\nretry: 500\ndata: a\n\n"
        b"data: plain\n\n"
        b"data: two\ndata: lines\n\n"
        b'data: {"k":"\xc3\xa9","n":[1,2]}\n\n'
        b"data: [1,2]\n\n"
        b"event: raw\ndata: bytes\n\n"
        b": just a comment\n"
    )


def test_plain_asgi_app_without_starlette() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def source() -> AsyncIterator[str]:
            for i in range(3):
                yield str(i)

        await EventStreamResponse(source())(scope, receive, send)

    with serve(app) as url:
        body = httpx.get(url + "/").text
    assert [e.data for e in decode(body.encode())] == ["0", "1", "2"]


def test_fastapi_route_and_gzip_middleware_leave_the_stream_alone() -> None:
    gate = threading.Event()

    async def source() -> AsyncIterator[str]:
        yield "first"
        # The client must see "first" before the rest exists: nothing buffers it.
        await asyncio.to_thread(gate.wait, 10)
        yield "second"

    api = FastAPI()
    api.add_middleware(GZipMiddleware, minimum_size=1)

    @api.get("/")
    async def stream() -> EventStreamResponse:
        return EventStreamResponse(source())

    with (
        serve(api) as url,
        httpx.stream("GET", url + "/", headers={"accept-encoding": "gzip"}) as r,
    ):
        assert "content-encoding" not in r.headers
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        gate.set()
        rest = list(lines)
    assert "data: second" in rest


def test_encode_item_rules() -> None:
    assert encode_item("x") == b"data: x\n\n"
    assert encode_item(bytearray(b"data: y\n\n")) == b"data: y\n\n"
    assert encode_item(b": c1\n: c2\n") == b": c1\n: c2\n"
    assert encode_item(b"data: a\r\n\r\n") == b"data: a\r\n\r\n"
    assert encode_item(("t",)) == b'data: ["t"]\n\n'
    with pytest.raises(TypeError, match="cannot send a int"):
        encode_item(5)
    with pytest.raises(ValueError, match="whole events"):
        encode_item(b"data: half")
    with pytest.raises(ValueError, match="whole events"):
        encode_item(b"data: half\n")
    with pytest.raises(ValueError, match="must not contain"):
        encode_item(ServerSentEvent("x", event="a\nb"))


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="iterable of events"):
        EventStreamResponse("not a stream")
    with pytest.raises(TypeError, match="iterable of events"):
        EventStreamResponse(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ping"):
        EventStreamResponse([], ping=0)
    with pytest.raises(ValueError, match="send_timeout"):
        EventStreamResponse([], send_timeout=-1)


# -- errors --------------------------------------------------------------------------------


def test_source_error_ends_with_error_event_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def source() -> AsyncIterator[str]:
        yield "ok"
        raise RuntimeError("upstream broke")

    caplog.set_level(logging.ERROR)

    def make(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source(), expose_errors="expose" in request.query_params)

    with serve(app_for(make)) as url:
        body = httpx.get(url + "/").content
        exposed = httpx.get(url + "/?expose").content
    events = decode(body)
    assert events[0].data == "ok"
    assert events[-1].event == "error"
    told = events[-1].json()
    # The client gets the category and a reference, the log the text and traceback.
    assert told["type"] == "api_error" and "upstream broke" not in told["message"]
    reference = re.fullmatch(
        r"Internal server error\. \(reference ([0-9a-f]{12})\)", told["message"]
    )
    assert reference is not None
    assert body.endswith(b"\n\n")
    logged = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert len(logged) == 1 and "upstream broke" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert "upstream broke" in decode(exposed)[-1].json()["message"]


def test_bad_items_end_with_error_event_and_keep_earlier_events() -> None:
    def make(request: Request) -> EventStreamResponse:
        kind = request.query_params["kind"]

        async def source() -> AsyncIterator[Any]:
            yield "kept"
            yield object() if kind == "object" else b"data: half an event"
            yield "never"

        # Exposed: the test reads why the item was refused.
        return EventStreamResponse(source(), expose_errors=True)

    with serve(app_for(make)) as url:
        for kind, text in [("object", "cannot send"), ("bytes", "whole events")]:
            events = decode(httpx.get(url + "/", params={"kind": kind}).content)
            assert [e.data for e in events[:1]] == ["kept"]
            assert events[1].event == "error" and text in events[1].json()["message"]
            assert len(events) == 2


# -- sync sources -------------------------------------------------------------------------


def test_sync_iterable_runs_on_its_own_thread_and_stays_ordered() -> None:
    threads: set[str] = set()
    loop_threads: set[str] = set()

    def source() -> Iterator[Any]:
        for i in range(500):
            threads.add(threading.current_thread().name)
            if i % 100 == 0:
                time.sleep(0.01)  # blocking is fine here: not on the event loop
            yield {"i": i}

    def make(request: Request) -> EventStreamResponse:
        loop_threads.add(threading.current_thread().name)
        return EventStreamResponse(source())

    with serve(app_for(make)) as url:
        events = decode(httpx.get(url + "/").content)
        lists = decode(httpx.get(url + "/").content)
    assert [e.json()["i"] for e in events] == list(range(500))
    assert len(lists) == 500
    assert threads == {"tokenwire-sync-source"}
    assert not threads & loop_threads


def test_sync_generator_closed_when_client_leaves() -> None:
    closed = threading.Event()

    def source() -> Iterator[str]:
        try:
            while True:
                yield "tick"
                time.sleep(0.01)
        finally:
            closed.set()

    with serve(app_for(lambda r: EventStreamResponse(source()))) as url:
        sock = open_stream(url)
        read_until(sock, b"data: tick")
        sock.close()
        assert closed.wait(5), "the sync generator's finally did not run"


def test_sync_source_error_becomes_error_event() -> None:
    def source() -> Iterator[str]:
        yield "a"
        raise KeyError("gone")

    with serve(app_for(lambda r: EventStreamResponse(source()))) as url:
        events = decode(httpx.get(url + "/").content)
    assert events[0].data == "a"
    assert events[1].event == "error" and "reference" in events[1].json()["message"]


# -- heartbeats -----------------------------------------------------------------------------


def test_heartbeat_starts_before_first_event() -> None:
    gate = threading.Event()

    async def source() -> AsyncIterator[str]:
        await asyncio.to_thread(gate.wait, 10)  # a long time to first token
        yield "late"

    with serve(app_for(lambda r: EventStreamResponse(source(), ping=0.05))) as url:
        sock = open_stream(url)
        head = b""
        while head.count(b": ping\n") < 3:  # they keep coming while the source is silent
            head += read_until(sock, b": ping\n")
        assert b"data:" not in head
        gate.set()
        raw = read_body_end(sock, head)
    _, body, complete = dechunk(raw)
    assert complete
    assert body.startswith(b": ping\n: ping\n: ping\n")
    assert [e.data for e in decode(body)] == ["late"]


def test_heartbeats_only_between_events() -> None:
    async def source() -> AsyncIterator[str]:
        for i in range(40):
            yield f"event {i}\nsecond line"  # two data lines per event
            await asyncio.sleep(0.002 * (i % 7))

    with serve(app_for(lambda r: EventStreamResponse(source(), ping=0.005))) as url:
        body = httpx.get(url + "/").content
    assert body.count(b": ping\n") >= 1
    for piece in body.split(b": ping\n")[:-1]:
        assert piece == b"" or piece.endswith(b"\n\n")
    assert [e.data for e in decode(body)] == [f"event {i}\nsecond line" for i in range(40)]


# -- disconnects and timeouts --------------------------------------------------------------


def test_disconnect_cancels_producer_and_calls_on_disconnect() -> None:
    finally_at: list[float] = []
    callbacks: list[str] = []

    async def source() -> AsyncIterator[str]:
        try:
            yield "hello"
            await asyncio.sleep(3600)  # an upstream that is slow to answer
            yield "never"
        finally:
            finally_at.append(time.perf_counter())

    async def on_disconnect() -> None:
        callbacks.append("async")

    def make(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source(), on_disconnect=on_disconnect)

    with serve(app_for(make)) as url:
        sock = open_stream(url)
        read_until(sock, b"data: hello")
        closed_at = time.perf_counter()
        sock.close()
        assert wait_for(lambda: bool(finally_at) and bool(callbacks), 5)
    delay = finally_at[0] - closed_at
    print(f"producer finally ran {delay * 1000:.1f} ms after the client closed")
    assert delay < 2.0
    assert callbacks == ["async"]


def test_thousand_disconnects_leave_no_task_or_memory_behind() -> None:
    finished = 0
    loops: list[asyncio.AbstractEventLoop] = []
    lock = threading.Lock()

    async def source() -> AsyncIterator[str]:
        nonlocal finished
        try:
            yield "hi"
            while True:
                await asyncio.sleep(1)
                yield "tick"
        finally:
            with lock:
                finished += 1

    def make(request: Request) -> EventStreamResponse:
        if not loops:
            loops.append(asyncio.get_running_loop())
        return EventStreamResponse(source(), on_disconnect=lambda: None)

    async def count_tasks() -> int:
        return len(asyncio.all_tasks())

    def churn(url: str, n: int) -> None:
        for start in range(0, n, 50):
            socks = [open_stream(url) for _ in range(min(50, n - start))]
            for sock in socks:
                read_until(sock, b"data: hi")
            for sock in socks:
                sock.close()

    with serve(app_for(make)) as url:
        churn(url, 100)  # warm up: imports, caches, free lists
        assert wait_for(lambda: finished == 100, 10)
        time.sleep(0.2)
        tasks_before = asyncio.run_coroutine_threadsafe(count_tasks(), loops[0]).result(5)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            churn(url, 1000)
            assert wait_for(lambda: finished == 1100, 20), f"only {finished} finally blocks ran"
            time.sleep(0.2)
            tasks_after = asyncio.run_coroutine_threadsafe(count_tasks(), loops[0]).result(5)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    growth = after - before
    print(f"tasks {tasks_before} -> {tasks_after}; traced memory growth {growth / 1024:.1f} KiB")
    assert tasks_after <= tasks_before
    assert growth < 1024 * 1024  # generous: ~1 KiB per stream would already be a leak


def test_send_timeout_drops_a_client_that_stops_reading() -> None:
    stopped = threading.Event()
    dropped = threading.Event()
    big = "x" * 65536

    async def source() -> AsyncIterator[str]:
        try:
            while True:
                yield big
        finally:
            stopped.set()

    def make(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source(), send_timeout=0.3, on_disconnect=dropped.set)

    with serve(app_for(make)) as url:
        sock = open_stream(url, rcvbuf=4096)
        read_until(sock, b"data: x")  # then never read again
        try:
            assert stopped.wait(20), "the stuck client was not dropped"
            assert dropped.wait(5)
        finally:
            sock.close()


def test_send_timeout_covers_heartbeats() -> None:
    """A heartbeat blocked on a full socket is also dropped after send_timeout."""
    stopped = threading.Event()
    gate = threading.Event()

    async def source() -> AsyncIterator[str]:
        try:
            for _ in range(400):
                yield "y" * 65536  # fill the socket buffers...
            gate.set()
            await asyncio.sleep(3600)  # ...then go quiet: only heartbeats are due
        finally:
            stopped.set()

    def make(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source(), ping=0.05, send_timeout=0.3)

    with serve(app_for(make)) as url:
        sock = open_stream(url, rcvbuf=4096)
        try:
            # The 400 events cannot all fit in the buffers: either the data write or
            # a later heartbeat stalls, and either way the client is dropped.
            assert stopped.wait(20), "the stuck client was not dropped"
        finally:
            sock.close()


def test_external_cancellation_closes_source_and_propagates() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "a"
            await asyncio.sleep(3600)
        finally:
            closed.set()

    async def main() -> None:
        sent: list[Any] = []
        never = asyncio.Event()
        streaming = asyncio.Event()

        async def receive() -> Any:
            await never.wait()

        async def send(message: Any) -> None:
            sent.append(message)
            if len(sent) >= 2:
                streaming.set()

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        task = asyncio.create_task(EventStreamResponse(source())(scope, receive, send))
        await streaming.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert closed.is_set()
        assert len(asyncio.all_tasks()) == 1  # only this test's task: no watcher left

    asyncio.run(main())


def test_failed_write_counts_as_disconnect() -> None:
    """Servers that raise OSError on a write to a closed connection (ASGI 2.4)."""
    closed: list[bool] = []
    gone: list[bool] = []

    async def source() -> AsyncIterator[str]:
        try:
            while True:
                yield "a"
        finally:
            closed.append(True)

    async def main() -> None:
        writes = 0
        never = asyncio.Event()

        async def receive() -> Any:
            await never.wait()

        async def send(message: Any) -> None:
            nonlocal writes
            writes += 1
            if writes > 3:
                raise OSError("connection reset")

        scope = {"type": "http"}
        response = EventStreamResponse(source(), on_disconnect=lambda: gone.append(True))
        await response(scope, receive, send)

    asyncio.run(main())
    assert closed == [True] and gone == [True]


# -- shutdown (in process; the signal path is tested in test_server_shutdown.py) ----------


def test_request_shutdown_ends_open_streams_cleanly() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    closed = threading.Event()

    async def source() -> AsyncIterator[str]:
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0.05)
        finally:
            closed.set()

    def make(request: Request) -> EventStreamResponse:
        loops.append(asyncio.get_running_loop())
        return EventStreamResponse(source())

    with serve(app_for(make)) as url:
        sock = open_stream(url)
        raw = read_until(sock, b"data: tick")
        request_shutdown(loops[0])
        raw = read_body_end(sock, raw)
        assert closed.wait(5)
        _, body, complete = dechunk(raw)
        assert complete, "the body did not end with its terminating chunk"
        assert b"error" not in body  # a plain stream just ends
        # A stream that starts once shutdown has begun ends at once.
        assert httpx.get(url + "/").content == b""


# -- curl -------------------------------------------------------------------------------------


def test_curl_sees_each_event_as_it_is_produced() -> None:
    curl = shutil.which("curl") or "/usr/bin/curl"
    if not shutil.which(curl):
        pytest.fail("curl is required for this test (install curl)")
    gate = threading.Event()

    async def source() -> AsyncIterator[str]:
        yield "first"
        await asyncio.to_thread(gate.wait, 10)
        yield "second"

    with serve(app_for(lambda r: EventStreamResponse(source()))) as url:
        proc = subprocess.Popen(
            [curl, "-sS", "-N", "-w", "\nTTFB %{time_starttransfer}\n", url + "/"],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            # If anything buffered the stream, this line would never come (the second
            # event is only produced after the test has read the first).
            first = proc.stdout.readline()
            assert first == b"data: first\n"
            gate.set()
            rest = proc.stdout.read()
            assert proc.wait(10) == 0
        finally:
            proc.kill()
    assert b"data: second\n" in rest
    ttfb = float(rest.rsplit(b"TTFB ", 1)[1])
    print(f"curl time to first byte: {ttfb * 1000:.1f} ms")
