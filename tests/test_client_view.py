"""EventSource / AsyncEventSource as a browser's EventSource: request headers,
redirects, and what callers can see of the connection (``all()``: starts, comments,
faults), ``restart()``, retry limits and ``last_event_id``, against real local servers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx2
import pytest

from tokenwire.client import (
    AsyncEventSource,
    Backoff,
    Comment,
    EventSource,
    Fault,
    SSEConnectionError,
    Start,
)
from tokenwire.sse import ServerSentEvent

from .client_helpers import ResumableApp, Seen, body, read_request, start
from .conftest import serve

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0)


def test_request_headers_are_what_browsers_send() -> None:
    app = ResumableApp(total=1, per_connection=1)
    with serve(app) as url, EventSource(url, backoff=FAST) as source:
        assert [e.data for e in source] == ["event 1"]
    assert app.seen[0].headers["accept"] == "text/event-stream"
    assert app.seen[0].headers["cache-control"] == "no-cache"


class RedirectApp:
    """``/r/STATUS/N`` redirects N more times with STATUS, then to ``/stream``, which
    sends one event per connection (ids 1, 2, ...) and cuts the connection."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        self.seen.append(req)
        parts = req.path.strip("/").split("/")
        if parts[0] == "r":
            status, left = int(parts[1]), int(parts[2])
            target = f"/r/{status}/{left - 1}" if left > 1 else "/stream"
            await start(send, status, b"text/plain", location=target.encode())
            await body(send, b"", more=False)
            return
        if parts[0] == "loop":
            await start(send, 302, b"text/plain", location=b"/loop")
            await body(send, b"", more=False)
            return
        n = sum(1 for s in self.seen if s.path == "/stream")
        if n > 2:
            await start(send, 204, b"")
            await body(send, b"", more=False)
            return
        await start(send)
        await body(send, f"id: {n}\ndata: {req.method} {req.body.decode()}\n\n".encode())
        await body(send, b"", more=False)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_followed_with_each_status_rules(status: int) -> None:
    app = RedirectApp()
    with serve(app) as url:
        source = EventSource(url + f"/r/{status}/3", method="POST", content="hello", backoff=FAST)
        with source:
            events = [e.data for e in source]
    keeps = status in (307, 308)
    first = "POST hello" if keeps else "GET "
    # Two connections to /stream (then 204): the reconnection goes where the redirects
    # led, with the method they ended with, and the Last-Event-ID.
    assert events == [first, first]
    paths = [s.path for s in app.seen]
    assert paths == [
        f"/r/{status}/3",
        f"/r/{status}/2",
        f"/r/{status}/1",
        "/stream",
        "/stream",
        "/stream",
    ]
    assert app.seen[4].headers.get("last-event-id") == "1"
    assert {s.method for s in app.seen[3:]} == {"POST" if keeps else "GET"}


def test_redirect_loops_end_with_a_clear_error() -> None:
    with (
        serve(RedirectApp()) as url,
        pytest.raises(SSEConnectionError, match="too many redirects"),
        EventSource(url + "/loop"),
    ):
        pass
    with (
        serve(RedirectApp()) as url,
        pytest.raises(SSEConnectionError) as caught,
        EventSource(url + "/r/302/1", follow_redirects=False),
    ):
        pass
    assert caught.value.status == 302


def test_redirects_are_followed_by_the_async_source_too() -> None:
    async def run(url: str) -> list[str]:
        async with AsyncEventSource(url + "/r/307/2", backoff=FAST) as source:
            return [e.data async for e in source]

    with serve(RedirectApp()) as url:
        assert asyncio.run(run(url)) == ["GET ", "GET "]


async def heartbeat_app(scope: Any, receive: Any, send: Any) -> None:
    """Comments, then two events (one with an id), then the connection ends."""
    if scope["type"] != "http":
        return
    await read_request(scope, receive)
    await start(send)
    await body(send, b": hello\n\n:ping\ndata: a\n\n")
    await body(send, b": keep-alive\nid: 7\ndata: b\n\ndata: c\n\n", more=False)


def test_all_reports_starts_events_comments_and_faults_in_order() -> None:
    with serve(heartbeat_app) as url:
        source = EventSource(url, reconnect=False)
        items = list(source.all())
        source.close()
    kinds = [type(i).__name__ for i in items]
    assert kinds == [
        "Start", "Comment", "Comment", "ServerSentEvent", "Comment",
        "ServerSentEvent", "ServerSentEvent", "Fault",
    ]  # fmt: skip
    start_, fault = items[0], items[-1]
    assert isinstance(start_, Start) and start_.status == 200 and start_.attempt == 0
    assert start_.headers["content-type"] == "text/event-stream"
    comments = [i.text for i in items if isinstance(i, Comment)]
    assert comments == ["hello", "ping", "keep-alive"]
    events = [i for i in items if isinstance(i, ServerSentEvent)]
    assert [(e.data, e.id, e.last_event_id) for e in events] == [
        ("a", None, ""),
        ("b", "7", "7"),
        ("c", None, "7"),
    ]
    assert isinstance(fault, Fault) and fault.reason == "end" and fault.delay is None


def test_all_reports_each_failed_attempt_and_the_limit_ends_with_an_error() -> None:
    connections: list[int] = []

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_request(scope, receive)
        connections.append(1)
        await start(send)
        await body(send, b"id: 1\ndata: one\n\n")
        await body(send, b"data: cut")  # then the connection is cut

    seen: list[Any] = []
    with serve(flaky) as url:
        source = EventSource(url, backoff=FAST, max_reconnects=3)
        iterator = source.all()
        seen.append(next(iterator))  # Start
        seen.append(next(iterator))  # the event
    # The server is gone now: every reconnection fails until the limit.
    with pytest.raises(
        SSEConnectionError, match=r"after 3 reconnection attempts.*max_reconnects=3"
    ):
        for item in iterator:
            seen.append(item)
    source.close()
    faults = [i for i in seen if isinstance(i, Fault)]
    assert [f.attempt for f in faults] == [1, 2, 3, None]
    assert all(f.reason == "error" and f.error is not None for f in faults)
    assert [f.delay for f in faults[:3]] == [0.01, 0.02, 0.04]


def test_a_read_timeout_is_reported_as_a_fault() -> None:
    stall = threading.Event()

    async def quiet(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_request(scope, receive)
        await start(send)
        await body(send, b"data: x\n\n")
        await asyncio.get_running_loop().run_in_executor(None, stall.wait, 30)

    with serve(quiet) as url:
        source = EventSource(url, idle_timeout=0.3, backoff=FAST)
        items = source.all()
        assert isinstance(next(items), Start)
        assert next(items) == ServerSentEvent("x")
        fault = next(items)
        stall.set()
        source.close()
    assert isinstance(fault, Fault) and fault.reason == "error"
    assert isinstance(fault.error, httpx2.ReadTimeout)
    assert fault.attempt == 1 and fault.delay == 0.01


def test_max_retry_time_bounds_the_time_spent_reconnecting() -> None:
    app = ResumableApp(total=1000, per_connection=0, end="eof")  # never an event
    with serve(app) as url:
        backoff = Backoff(initial=0.05, multiplier=1.0, jitter=0.0)
        with (
            pytest.raises(SSEConnectionError, match=r"max_retry_time=0.3"),
            EventSource(url, backoff=backoff, max_retry_time=0.3) as source,
        ):
            list(source)
    assert 2 <= len(app.seen) <= 8  # 0.3 s of 0.05 s waits, give or take the first


class RestartApp:
    """Each connection sends the event after its Last-Event-ID, then waits until a
    resumed connection arrived (so only a restart moves it on)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.resumed = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        self.seen.append(req)
        await start(send)
        last = int(req.headers.get("last-event-id") or 0)
        await body(send, f"id: {last + 1}\ndata: {last + 1}\n\n".encode())
        if last:
            self.resumed.set()
        await asyncio.get_running_loop().run_in_executor(None, self.resumed.wait, 30)
        await body(send, b"", more=False)


def check_restart(app: RestartApp, items: list[Any]) -> None:
    assert [type(i).__name__ for i in items] == [
        "Start", "ServerSentEvent", "Fault", "Start", "ServerSentEvent",
    ]  # fmt: skip
    first, event, fault, again, resumed = items
    assert isinstance(first, Start) and not first.restarted
    assert isinstance(event, ServerSentEvent) and event.data == "1"
    assert isinstance(fault, Fault) and fault.reason == "restart" and fault.delay == 0.0
    assert isinstance(again, Start) and again.restarted and again.attempt == 0
    assert isinstance(resumed, ServerSentEvent) and resumed.data == "2"
    assert app.seen[1].headers["last-event-id"] == "1"


def test_restart_reconnects_at_once_with_the_same_last_event_id() -> None:
    app = RestartApp()
    with serve(app) as url:
        # A minute's backoff: only a restart reconnects within the test.
        source = EventSource(url, backoff=Backoff(initial=60.0, jitter=0.0))
        items = source.all()
        got = [next(items), next(items)]
        threading.Timer(0.1, source.restart).start()  # while a read is blocked
        got += [next(items), next(items), next(items)]
        source.close()
        app.resumed.set()
    check_restart(app, got)


def test_async_restart() -> None:
    async def run(url: str) -> list[Any]:
        got: list[Any] = []
        async with AsyncEventSource(url, backoff=Backoff(initial=60.0, jitter=0.0)) as source:
            items = source.all()
            got += [await anext(items), await anext(items)]
            asyncio.get_running_loop().call_later(0.1, source.restart)
            got += [await anext(items), await anext(items), await anext(items)]
        return got

    app = RestartApp()
    with serve(app) as url:
        got = asyncio.run(run(url))
        app.resumed.set()
    check_restart(app, got)


def test_all_must_come_before_iteration_and_may_follow_with() -> None:
    app = ResumableApp(total=2, per_connection=2)
    with serve(app) as url, EventSource(url) as source:
        assert isinstance(next(source.all()), Start)  # the connection `with` opened
    with serve(app) as url, EventSource(url) as source:
        next(source)
        with pytest.raises(RuntimeError, match="before"):
            next(source.all())
