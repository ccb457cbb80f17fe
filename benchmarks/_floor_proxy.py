"""The floor of a streaming proxy in Python: bare ASGI on uvicorn (uvloop, httptools),
the upstream called with aiohttp, its body bytes written to the client as they arrive.

No request validation, no deadlines, no decoding, no metrics, no error handling: what
any gateway built on the same server and HTTP client costs at least. ``bench_gateway.py
--floor`` runs it beside the gateway, so the gateway's figures can be read against it.

Run: ``python benchmarks/_floor_proxy.py PORT UPSTREAM_BASE_URL [WORKERS]`` (it serves
``POST /v1/chat/completions`` and ``GET /healthz``).
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn

_UPSTREAM = sys.argv[2] if len(sys.argv) > 2 else ""
_session: aiohttp.ClientSession | None = None


async def app(scope: Any, receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if _session is None:
        # Unbounded pool, like the gateway's (the benchmark opens up to 1,000 streams).
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with _session.post(
        _UPSTREAM + "/chat/completions",
        data=body,
        headers={"content-type": "application/json"},
    ) as response:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    uvicorn.run(
        "_floor_proxy:app" if workers > 1 else app,
        port=int(sys.argv[1]),
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
