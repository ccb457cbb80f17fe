"""EventSource / AsyncEventSource against real local servers: reconnection with
Last-Event-ID, retry, backoff, POST resumption, idle timeout, closing."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tokenwire.client import AsyncEventSource, Backoff, EventSource, SSEConnectionError
from tokenwire.client._policy import SourceCore
from tokenwire.sse import ServerSentEvent

from .client_helpers import (
    SSE_HEAD,
    ResumableApp,
    Seen,
    body,
    raw_server,
    read_head,
    read_request,
    start,
)
from .conftest import serve

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.01, maximum=1.0, jitter=0.0)


def collect_sync(url: str, **kwargs: Any) -> tuple[list[ServerSentEvent], EventSource]:
    with EventSource(url, **kwargs) as source:
        return list(source), source


def collect_async(url: str, **kwargs: Any) -> tuple[list[ServerSentEvent], AsyncEventSource]:
    async def run() -> tuple[list[ServerSentEvent], AsyncEventSource]:
        async with AsyncEventSource(url, **kwargs) as source:
            return [event async for event in source], source

    # Its own loop in a thread: the sync and async twins are driven the same way here.
    result: list[Any] = []
    error: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(run()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    if error:
        raise error[0]
    return result[0]  # type: ignore[no-any-return]


Collect = Callable[..., tuple[list[ServerSentEvent], Any]]
BOTH = pytest.mark.parametrize("collect", [collect_sync, collect_async], ids=["sync", "async"])


def gaps(seen: list[Seen]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(seen)]


@BOTH
@pytest.mark.parametrize("end", ["drop", "eof"])
def test_resume_without_loss_or_duplicates(collect: Collect, end: str) -> None:
    app = ResumableApp(total=9, per_connection=3, retry=40, end=end)
    with serve(app) as url:
        events, source = collect(url + "/stream", backoff=FAST)
    assert [e.data for e in events] == [f"event {i}" for i in range(1, 10)]
    assert [e.id for e in events] == [str(i) for i in range(1, 10)]
    assert "never terminated" not in {e.data for e in events}
    assert [s.headers.get("last-event-id") for s in app.seen] == [None, "3", "6", "9"]
    assert all(s.headers["accept"] == "text/event-stream" for s in app.seen)
    assert all(s.headers["cache-control"] == "no-cache" for s in app.seen)
    assert (source.last_event_id, source.retry) == ("9", 40)
    # the server's retry (40 ms) is the minimum wait: lower bounds only
    assert all(gap >= 0.036 for gap in gaps(app.seen))


@BOTH
def test_post_stream_resumes_with_the_same_body(collect: Collect) -> None:
    app = ResumableApp(total=4, per_connection=2, retry=10)
    headers = {"Authorization": "Bearer t", "X-Trace": "1"}
    with serve(app) as url:
        events, _ = collect(
            url + "/chat", method="POST", json={"q": "hi", "n": 1}, headers=headers, backoff=FAST
        )
    assert [e.data for e in events] == ["event 1", "event 2", "event 3", "event 4"]
    assert headers == {"Authorization": "Bearer t", "X-Trace": "1"}  # not mutated
    assert [s.method for s in app.seen] == ["POST"] * 3
    assert {s.body for s in app.seen} == {b'{"q":"hi","n":1}'}
    assert {s.headers["content-type"] for s in app.seen} == {"application/json"}
    assert {s.headers["authorization"] for s in app.seen} == {"Bearer t"}
    assert [s.headers.get("last-event-id") for s in app.seen] == [None, "2", "4"]


@BOTH
def test_last_event_id_to_start_from(collect: Collect) -> None:
    app = ResumableApp(total=6, per_connection=10, retry=10)
    with serve(app) as url:
        events, _ = collect(url, last_event_id="4", backoff=FAST)
        assert [e.data for e in events] == ["event 5", "event 6"]
        app.seen.clear()
        events, _ = collect(url, headers={"Last-Event-ID": "5"}, backoff=FAST)
        assert [e.data for e in events] == ["event 6"]
    assert app.seen[0].headers["last-event-id"] == "5"


@BOTH
def test_backoff_grows_and_max_reconnects_ends_a_quiet_stream(collect: Collect) -> None:
    seen: list[Seen] = []

    async def empty(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_request(scope, receive))
        await start(send)
        await body(send, b"", more=False)

    backoff = Backoff(initial=0.04, multiplier=2.0, maximum=0.2, jitter=0.0)
    with serve(empty) as url, pytest.raises(SSEConnectionError) as caught:
        collect(url, backoff=backoff, max_reconnects=4)
    # The limit ends the source with an error that names it.
    assert "after 4 reconnection attempts" in str(caught.value)
    assert "max_reconnects=4" in str(caught.value)
    assert len(seen) == 5
    for gap, floor in zip(gaps(seen), [0.04, 0.08, 0.16, 0.2], strict=True):
        assert gap >= floor * 0.9


@BOTH
def test_server_retry_is_honoured_as_a_minimum(collect: Collect) -> None:
    seen: list[Seen] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_request(scope, receive))
        await start(send)
        await body(send, b"retry: 250\n\n", more=False)

    with serve(app) as url, pytest.raises(SSEConnectionError, match="max_reconnects=1"):
        collect(url, backoff=Backoff(initial=0.0, jitter=0.0), max_reconnects=1)
    assert len(seen) == 2
    assert gaps(seen)[0] >= 0.225


@BOTH
def test_network_failures_exhaust_reconnects_and_raise(collect: Collect) -> None:
    seen: list[Seen] = []

    async def dropper(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_request(scope, receive))
        await start(send)
        await body(send, b"data: partial")  # then the connection is cut

    with serve(dropper) as url, pytest.raises(SSEConnectionError) as info:
        collect(url, backoff=FAST, max_reconnects=2)
    assert info.value.status is None
    assert isinstance(info.value.__cause__, httpx2.TransportError)
    assert len(seen) == 3


@BOTH
def test_no_reconnect(collect: Collect) -> None:
    for end, raises in (("eof", False), ("drop", True)):
        app = ResumableApp(total=9, per_connection=3, end=end)
        with serve(app) as url:
            if raises:
                with pytest.raises(SSEConnectionError, match="lost"):
                    collect(url, reconnect=False)
            else:
                events, _ = collect(url, reconnect=False)
                assert [e.data for e in events] == ["event 1", "event 2", "event 3"]
        assert len(app.seen) == 1


@BOTH
def test_204_ends_for_good(collect: Collect) -> None:
    app = ResumableApp(total=0)
    with serve(app) as url:
        events, source = collect(url, backoff=FAST)
    assert events == [] and len(app.seen) == 1
    assert source.response is None


def _stalling_server(conn: Any, n: int) -> None:
    """0: one event, then silence; 1: accepts, never sends a byte; 2: resumes from the
    Last-Event-ID it got; 3: 204."""
    head = read_head(conn)
    if n == 0:
        conn.sendall(SSE_HEAD + b"id: 1\ndata: a\n\n")
        time.sleep(30)
    elif n == 1:
        time.sleep(30)
    elif n == 2:
        assert b"\r\nlast-event-id: 1\r\n" in head.lower()
        conn.sendall(SSE_HEAD + b"id: 2\ndata: b\n\n")
        conn.close()
    else:
        conn.sendall(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        conn.close()


@BOTH
def test_idle_timeout_reconnects_on_silence(collect: Collect) -> None:
    with raw_server(_stalling_server) as url:
        t0 = time.monotonic()
        events, source = collect(url, idle_timeout=0.3, backoff=FAST)
        elapsed = time.monotonic() - t0
    assert [e.data for e in events] == ["a", "b"]
    assert source.last_event_id == "2"
    assert elapsed < 20  # liveness only: the silences were 30 s long


@BOTH
def test_first_connection_that_never_answers_fails_with_idle_timeout(collect: Collect) -> None:
    with (
        raw_server(lambda conn, n: time.sleep(30)) as url,
        pytest.raises(SSEConnectionError) as info,
    ):
        collect(url, idle_timeout=0.2)
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)


def _hanging_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_request(scope, receive)
        await start(send)
        await body(send, b"retry: 60000\ndata: one\n\n")
        # Hold the stream open until the client goes away.
        while (await receive())["type"] != "http.disconnect":
            pass

    return app


def test_close_from_another_thread_interrupts_a_blocked_read() -> None:
    with serve(_hanging_app()) as url, EventSource(url) as source:
        assert next(source).data == "one"
        timer = threading.Timer(0.2, source.close)
        timer.start()
        t0 = time.monotonic()
        assert list(source) == []
        assert time.monotonic() - t0 < 10
        assert source.closed and source.response is None


async def test_aclose_from_another_task_interrupts_a_blocked_read() -> None:
    with serve(_hanging_app()) as url:
        async with AsyncEventSource(url) as source:
            assert (await source.__anext__()).data == "one"

            async def closer() -> None:
                await asyncio.sleep(0.2)
                await source.aclose()

            task = asyncio.create_task(closer())
            t0 = time.monotonic()
            assert [e async for e in source] == []
            assert time.monotonic() - t0 < 10
            await task
            assert source.closed


def test_close_interrupts_the_wait_before_reconnecting() -> None:
    app = ResumableApp(total=9, per_connection=1, retry=60000)
    with serve(app) as url, EventSource(url) as source:
        assert next(source).data == "event 1"
        threading.Timer(0.3, source.close).start()
        t0 = time.monotonic()
        assert list(source) == []
        assert time.monotonic() - t0 < 10
    assert len(app.seen) == 1


async def test_async_close_interrupts_the_wait_before_reconnecting() -> None:
    app = ResumableApp(total=9, per_connection=1, retry=60000)
    with serve(app) as url:
        source = AsyncEventSource(url)
        assert (await source.__anext__()).data == "event 1"  # connects lazily
        task = asyncio.create_task(source.__anext__())
        await asyncio.sleep(0.3)
        await source.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(task, 10)
    assert len(app.seen) == 1


# --- the non-I/O policy, as units ---------------------------------------------------


def test_backoff_delays() -> None:
    b = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.5)
    assert b.delay(0, None, 0.9) == 1.0  # first: the initial wait, no jitter
    assert b.delay(0, 3000, 0.9) == 3.0  # ... or the server's retry
    assert b.delay(0, 10**12, 0.0) == 30.0  # clamped
    assert b.delay(3, None, 0.0) == 8.0  # doubling
    assert b.delay(3, None, 0.999) == pytest.approx(4.004)  # minus up to half
    assert b.delay(10, None, 0.0) == 30.0
    assert b.delay(2, 3000, 0.0) == 12.0  # backoff from the server's retry
    assert Backoff(jitter=1.0).delay(1, 5000, 0.999) == 5.0  # retry is a floor
    assert b.delay(5, 0, 0.0) == 30.0  # retry 0 still backs off from `initial`
    with pytest.raises(ValueError):
        Backoff(jitter=2)
    with pytest.raises(ValueError):
        Backoff(multiplier=0.5)


def _core(**kwargs: Any) -> SourceCore:
    args: dict[str, Any] = dict(
        url="http://x/",
        method="get",
        headers=None,
        json=None,
        content=None,
        last_event_id=None,
        reconnect=True,
        max_reconnects=None,
        timeout=5.0,
        idle_timeout=None,
        max_event_size=1024,
        backoff=Backoff(initial=1.0, jitter=0.0, reset_after=60.0),
    )
    args.update(kwargs)
    return SourceCore(**args)


def test_backoff_resets_after_a_healthy_period_and_events_reset_the_count() -> None:
    core = _core(max_reconnects=2)
    assert [core.next_delay(), core.next_delay()] == [1.0, 2.0]
    assert core.next_delay() is None  # two reconnections in a row without an event
    core.quiet = 0  # an event arrived
    core.opened(100.0)
    core.lost(130.0)  # 30 s: not long enough to reset the backoff
    assert core.next_delay() == 4.0
    core.opened(200.0)
    core.lost(260.0)  # 60 s: healthy, start over
    assert core.next_delay() == 1.0


def test_source_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="json or content"):
        _core(json={}, content=b"x")
    with pytest.raises(TypeError, match="resent"):
        _core(content=iter([b"x"]))
    with pytest.raises(ValueError):
        _core(max_reconnects=-1)
    with pytest.raises(ValueError):
        _core(idle_timeout=0)
    core = _core(headers={"accept": "application/json", "last-event-id": "7"}, content="hé")
    headers = core.request_headers()
    assert headers["accept"] == "text/event-stream"
    assert headers["last-event-id"] == "7"
    assert core.body == "hé".encode()
    assert core.timeout.read is None and core.timeout.connect == 5.0
    assert _core(idle_timeout=2.0).timeout.read == 2.0
    assert _core(timeout=httpx2.Timeout(3.0), idle_timeout=1.0).timeout.read == 1.0


@BOTH
def test_error_status_on_reconnection_is_raised_not_retried(collect: Collect) -> None:
    seen: list[Seen] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_request(scope, receive))
        if len(seen) == 1:
            await start(send)
            await body(send, b"id: 1\ndata: one\n\n", more=False)
        else:
            await start(send, 503, b"application/json")
            await body(send, b'{"error": "maintenance"}', more=False)

    with serve(app) as url, pytest.raises(SSEConnectionError) as info:
        collect(url, backoff=FAST)
    assert (info.value.status, info.value.json()) == (503, {"error": "maintenance"})
    assert len(seen) == 2
    assert seen[1].headers["last-event-id"] == "1"


@BOTH
def test_an_empty_id_resets_and_no_last_event_id_is_sent(collect: Collect) -> None:
    seen: list[Seen] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_request(scope, receive))
        if len(seen) == 1:
            await start(send)
            await body(send, b"id: 1\ndata: one\n\nid:\ndata: two\n\n", more=False)
        else:
            await start(send, 204, b"")
            await body(send, b"", more=False)

    with serve(app) as url:
        events, source = collect(url, backoff=FAST)
    assert [(e.data, e.id) for e in events] == [("one", "1"), ("two", "")]
    assert source.last_event_id == ""
    assert "last-event-id" not in seen[1].headers
