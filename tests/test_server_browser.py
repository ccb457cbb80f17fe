"""Headless Chromium's EventSource receives every event of the generic format and of
the simple browser format (``{"chunk": ...}`` then ``[DONE]``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.conftest import serve
from tokenwire.server import ChunkSender, EventStreamResponse
from tokenwire.sse import ServerSentEvent

pytestmark = pytest.mark.integration


PAGE = """<!doctype html><meta charset="utf-8"><script>
window.received = {generic: [], chunks: []};
window.done = {generic: false, chunks: false};
const g = new EventSource("/generic");
const log = (type) => (e) => window.received.generic.push([type, e.data, e.lastEventId]);
g.onmessage = log("message");
g.addEventListener("update", log("update"));
g.addEventListener("end", (e) => { g.close(); window.done.generic = true; });
const c = new EventSource("/chunks");
c.onmessage = (e) => {
  if (e.data === "[DONE]") { c.close(); window.done.chunks = true; }
  else window.received.chunks.push(JSON.parse(e.data).chunk);
};
</script>"""

CHUNKS = ["Hello", ", ", 'the "quoted"', " ünïcödé ☃ 😀", "\nnew line", "</script>"]


def generic_events() -> list[Any]:
    events: list[Any] = [f"number {i}" for i in range(100)]
    events += [
        "two\nlines",
        {"json": [1, "é"]},
        ServerSentEvent("u1", event="update", id="42"),
        b"data: raw bytes\n\n",
        "after an id",  # lastEventId persists
        ServerSentEvent("bye", event="end"),
    ]
    return events


def expected_generic() -> list[list[str]]:
    out = [["message", f"number {i}", ""] for i in range(100)]
    out += [
        ["message", "two\nlines", ""],
        ["message", '{"json":[1,"é"]}', ""],
        ["update", "u1", "42"],
        ["message", "raw bytes", "42"],
        ["message", "after an id", "42"],
    ]
    return out


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def generic(request: Request) -> Response:
    async def source() -> AsyncIterator[Any]:
        for i, event in enumerate(generic_events()):
            if i % 25 == 0:
                await asyncio.sleep(0.06)  # let heartbeats in between events
            yield event

    return EventStreamResponse(source(), ping=0.02)


_tasks: set[asyncio.Task[None]] = set()


async def chunks(request: Request) -> Response:
    sender, response = ChunkSender.create(buffer_size=2)

    async def produce() -> None:
        async with sender:
            for text in CHUNKS:
                await sender.send(text)
                await asyncio.sleep(0.01)

    task = asyncio.ensure_future(produce())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return response


def test_chromium_event_source_receives_every_event(browser: Any) -> None:
    app = Starlette(routes=[Route("/", page), Route("/generic", generic), Route("/chunks", chunks)])
    with serve(app) as url:
        tab = browser.new_page()
        try:
            tab.goto(url + "/")
            tab.wait_for_function("window.done.generic && window.done.chunks", timeout=20000)
            received = tab.evaluate("window.received")
        finally:
            tab.close()
    assert received["generic"] == expected_generic()
    assert received["chunks"] == CHUNKS
