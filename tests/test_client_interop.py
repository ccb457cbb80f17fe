"""Interop: the client consumes streams served by sse-starlette and by tokenwire's own
server (EventStreamResponse and the OpenAI/Anthropic senders), on real uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sse_starlette.sse import EventSourceResponse
from sse_starlette.sse import ServerSentEvent as StarletteEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tokenwire.client import (
    AsyncEventSource,
    Backoff,
    EventSource,
    aiter_sse,
    astream_chat,
    stream_chat,
)
from tokenwire.llm import ToolCallDelta, Usage
from tokenwire.server import AnthropicSender, EventStreamResponse, OpenAISender
from tokenwire.sse import ServerSentEvent

from .conftest import serve

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.01, jitter=0.0)


def _resume_from(request: Request) -> int:
    return int(request.headers.get("last-event-id") or 0)


async def starlette_stream(request: Request) -> EventSourceResponse:
    """Events 1..6 with ids; the first connection stops after 3 (a clean end), so the
    client has to reconnect with Last-Event-ID; then 204."""
    first = _resume_from(request)
    if first >= 6:
        from starlette.responses import Response

        return Response(status_code=204)  # type: ignore[return-value]

    async def events() -> AsyncIterator[StarletteEvent]:
        yield StarletteEvent(retry=20, comment="hello")
        await asyncio.sleep(0.15)  # long enough for a ping comment in between
        for i in range(first + 1, min(first + 3, 6) + 1):
            yield StarletteEvent(data=f"line 1 of {i}\nline 2", id=str(i), event="tick")

    return EventSourceResponse(events(), ping=0.05)


STARLETTE = Starlette(routes=[Route("/sse", starlette_stream)])


def _check_ticks(events: list[Any]) -> None:
    assert [e.id for e in events] == ["1", "2", "3", "4", "5", "6"]
    assert {e.event for e in events} == {"tick"}
    assert events[0].data == "line 1 of 1\nline 2"


def test_sse_starlette_sync() -> None:
    with serve(STARLETTE) as url, EventSource(url + "/sse", backoff=FAST) as source:
        events = list(source)
        assert source.retry == 20
    _check_ticks(events)


async def test_sse_starlette_async_and_aiter_sse() -> None:
    with serve(STARLETTE) as url:
        async with AsyncEventSource(url + "/sse", backoff=FAST) as source:
            events = [e async for e in source]
        _check_ticks(events)
        async with httpx.AsyncClient() as client, client.stream("GET", url + "/sse") as response:
            first = [e.data async for e in aiter_sse(response)]
        assert first == [f"line 1 of {i}\nline 2" for i in (1, 2, 3)]


def tokenwire_app(stall: float = 0.0, ping: float = 0.45) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        first = int(headers.get(b"last-event-id", b"0"))

        async def events() -> AsyncIterator[Any]:
            for i in range(first + 1, first + 3):
                if stall and i == 2:
                    await asyncio.sleep(stall)  # only heartbeats meanwhile
                yield ServerSentEvent(f"event {i}", event="n", id=str(i), retry=15)
            if first >= 2:
                yield {"json": True}

        response = EventStreamResponse(events(), ping=ping if stall else None)
        await response(scope, receive, send)

    return app


def test_tokenwire_server_resume() -> None:
    with serve(tokenwire_app()) as url:
        with EventSource(url, backoff=FAST, max_reconnects=1) as source:
            events = [next(source) for _ in range(5)]
        assert [e.data for e in events] == [
            "event 1",
            "event 2",
            "event 3",
            "event 4",
            '{"json":true}',
        ]
        assert [e.id for e in events[:4]] == ["1", "2", "3", "4"]
        assert source.last_event_id == "4"


async def test_tokenwire_server_heartbeats_keep_an_idle_stream_alive() -> None:
    """The source waits 1 s between events, longer than idle_timeout (0.75 s), but a
    `: ping` comment comes 0.45 s into the silence: it counts, so no reconnection."""
    with serve(tokenwire_app(stall=1.0)) as url:
        async with AsyncEventSource(url, idle_timeout=0.75, reconnect=False) as source:
            events = [e.data async for e in source]
    assert events == ["event 1", "event 2"]


def openai_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        sender, response = OpenAISender.create(model="gpt-x", ping=None)

        async def produce() -> None:
            async with sender:
                await sender.send("Hel")
                await sender.send("lo")
                await sender.send_delta(ToolCallDelta(0, id="call_1", name="f", arguments='{"a"'))
                await sender.send_delta(ToolCallDelta(0, arguments=":1}"))
                await sender.send_finish("tool_calls", usage=Usage(input_tokens=3, output_tokens=4))

        task = asyncio.create_task(produce())
        await response(scope, receive, send)
        await task

    return app


def anthropic_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        sender, response = AnthropicSender.create(
            model="claude-x", ping=None, usage=Usage(input_tokens=3)
        )

        async def produce() -> None:
            async with sender:
                await sender.send_thinking("hmm", signature="sig")
                await sender.send("Hel")
                await sender.send("lo")
                await sender.send_tool_call(0, id="toolu_1", name="f", arguments='{"a":1}')
                await sender.send_finish("tool_use", usage=Usage(output_tokens=4))

        task = asyncio.create_task(produce())
        await response(scope, receive, send)
        await task

    return app


@pytest.mark.parametrize("make", [openai_app, anthropic_app], ids=["openai", "anthropic"])
def test_tokenwire_senders_to_stream_chat(make: Any) -> None:
    with serve(make()) as url:
        stream = stream_chat(url, json={})
        list(stream)
    msg = stream.message
    assert msg.text == "Hello"
    assert next((c.id, c.name, c.arguments) for c in msg.tool_calls)[1:] == ("f", '{"a":1}')
    assert msg.finish_reason == "tool_calls"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (3, 4)
    if make is anthropic_app:
        assert (msg.reasoning, msg.reasoning_signature) == ("hmm", "sig")


async def test_tokenwire_senders_to_astream_chat() -> None:
    with serve(anthropic_app()) as url:
        async with astream_chat(url, json={}, protocol="anthropic") as stream:
            async for _ in stream:
                pass
    assert stream.message.model == "claude-x"
    assert stream.message.raw_finish_reason == "tool_use"
