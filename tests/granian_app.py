"""An app of EventStreamResponse streams for granian (tests/test_server_granian.py runs
it in a granian subprocess): what the streams saw is read back from ``/seen``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import orjson

from tokenwire.server import EventStreamResponse, OpenAISender

seen = {"disconnects": 0, "closed": 0}


async def events(n: int, end: bool) -> AsyncIterator[str]:
    try:
        for i in range(n):
            yield f"e{i}"
        if not end:
            await asyncio.Event().wait()  # only a disconnect ends this stream
    finally:
        seen["closed"] += 1


def on_disconnect() -> None:
    seen["disconnects"] += 1


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["path"] == "/seen":
        body = orjson.dumps(seen)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] == "/sender":
        # An OpenAI stream that only the server's shutdown (or the client) ends.
        sender, chat = OpenAISender.create("chatcmpl-granian", "gpt-4o")

        async def produce() -> None:
            async with sender:
                await sender.send("hi")
                await asyncio.Event().wait()

        sender.produce(produce())
        await chat(scope, receive, send)
        return
    response = EventStreamResponse(
        events(int(query.get("n", "3")), query.get("end") == "1"),
        ping=float(query.get("ping", "15")),
        on_disconnect=on_disconnect,
    )
    await response(scope, receive, send)
