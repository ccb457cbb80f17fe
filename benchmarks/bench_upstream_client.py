"""The gateway's upstream HTTP client, against the other maintained asyncio clients.

What the gateway pays per upstream request and per streamed chunk is its added
latency, so this measures exactly that path for each client, in one run: POST a small
JSON body, wait for the response head, read the chunked SSE body chunk by chunk.

- **server** (its own process, core 1): a raw asyncio HTTP/1.1 server with keep-alive;
  each response is one HTTP chunk per SSE event, written one event per loop iteration
  so that a client sees one chunk per read, as with a paced LLM stream.
- **clients** (this process, core 0), interleaved by round: ``aiohttp`` (configured as
  ``tokenwire.gateway.upstream`` configures it), ``httpx2`` and ``httpx`` (each its
  ``AsyncClient`` streaming ``aiter_raw``).

Reported per client: CPU time of this process per request (a 1-event reply, 100
requests at a time), per chunk (100 replies of 200 events at a time), and the median
time from request to response head for one request at a time. Medians of the rounds.

Run: ``python benchmarks/bench_upstream_client.py`` (about a minute).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROUNDS = 7
CONCURRENT = 100
LONG = 200
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "text/event-stream",
    "Accept-Encoding": "identity",
}


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            events = 1
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                elif line.startswith(b"POST /long"):
                    events = LONG
            await reader.readexactly(length)
            writer.write(HEAD)
            for _ in range(events):
                writer.write(CHUNK)
                await writer.drain()
                await asyncio.sleep(0)  # one chunk per loop iteration, so one per read
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _server_main(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    _use_uvloop()
    asyncio.run(main())


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- clients: each a factory returning (request coroutine function, close) ------------------

Request = Callable[[str], Awaitable[int]]


async def _aiohttp(base: str) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import aiohttp
    import yarl
    from multidict import CIMultiDict

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )
    headers = CIMultiDict(HEADERS)
    urls = {path: yarl.URL(base + path) for path in ("/short", "/long")}

    async def request(path: str) -> int:
        response = await session.post(urls[path], data=BODY, headers=headers)
        read = response.content.readany
        chunks = 0
        while await read():
            chunks += 1
        response.release()
        return chunks

    return request, session.close


def _httpx_like(module: str) -> Callable[[str], Awaitable[tuple[Request, Any]]]:
    async def make(base: str) -> tuple[Request, Callable[[], Awaitable[None]]]:
        mod = __import__(module)
        limits = mod.Limits(max_connections=None, max_keepalive_connections=1000)
        client = mod.AsyncClient(base_url=base, limits=limits, timeout=None)

        async def request(path: str) -> int:
            chunks = 0
            async with client.stream("POST", path, content=BODY, headers=HEADERS) as response:
                async for _ in response.aiter_raw():
                    chunks += 1
            return chunks

        return request, client.aclose

    return make


CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Request, Any]]]] = {
    "aiohttp": _aiohttp,
    "httpx2": _httpx_like("httpx2"),
    "httpx": _httpx_like("httpx"),
}


async def _measure(base: str) -> dict[str, dict[str, list[float]]]:
    made = {name: await factory(base) for name, factory in CLIENTS.items()}
    results: dict[str, dict[str, list[float]]] = {
        name: {"request_us": [], "chunk_us": [], "head_ms": []} for name in made
    }
    for request, _ in made.values():  # warm-up: connections, imports
        await asyncio.gather(*(request("/short") for _ in range(CONCURRENT)))
    names = list(made)
    for round_ in range(ROUNDS):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            request, _ = made[name]
            started = time.process_time()
            await asyncio.gather(*(request("/short") for _ in range(CONCURRENT)))
            per_request = (time.process_time() - started) / CONCURRENT
            started = time.process_time()
            counts = await asyncio.gather(*(request("/long") for _ in range(CONCURRENT)))
            spent = time.process_time() - started
            reads = sum(counts)
            results[name]["request_us"].append(per_request * 1e6)
            results[name]["chunk_us"].append((spent - per_request * CONCURRENT) / reads * 1e6)
            heads = []
            for _ in range(20):
                began = time.perf_counter()
                await request("/short")
                heads.append(time.perf_counter() - began)
            results[name]["head_ms"].append(statistics.median(heads) * 1000)
    for _, close in made.values():
        await close()
    return results


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        _pin(1)
        _server_main(int(sys.argv[2]))
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--server", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        _pin(0)
        _use_uvloop()
        results = asyncio.run(_measure(f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"{CONCURRENT} requests at a time; {LONG} chunks per long reply; medians of "
        f"{ROUNDS} interleaved rounds\n"
    )
    print(f"{'client':<10}{'CPU/request':>14}{'CPU/chunk':>12}{'head, 1 at a time':>20}")
    for name, figures in results.items():
        print(
            f"{name:<10}{statistics.median(figures['request_us']):>11.0f} us"
            f"{statistics.median(figures['chunk_us']):>9.1f} us"
            f"{statistics.median(figures['head_ms']):>17.3f} ms"
        )


if __name__ == "__main__":
    main()
