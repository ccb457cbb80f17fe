"""Resumable streams benchmark: plain vs resumable (memory log, Redis log), in one run.

A server process (uvicorn + uvloop, this file with ``--serve``) has three routes that
stream the same source, N events of a small JSON object:

- ``/plain``: :class:`tokenwire.server.EventStreamResponse` over the source;
- ``/memory``: :class:`tokenwire.resume.ResumableStreams` with the in-memory log;
- ``/redis``: the same with a :class:`~tokenwire.resume.redis.RedisEventLog` on a
  throwaway ``redis-server`` (started here, no persistence).

Measured, per route (rounds interleaved):

- **throughput**: one stream of 20 000 events produced as fast as possible: events/s at
  the client, and the **server's CPU time per event** (``/proc/PID/stat``; for Redis also
  redis-server's own CPU per event, reported separately);
- **paced**: 50 concurrent streams of 200 events 5 ms apart (each event its own write,
  as with a real model), each event carrying its send time (``perf_counter_ns``, same
  machine): server (and redis-server) CPU per event, delivery latency p50/p99 and the
  difference from plain ("added");
- **bytes per open stream** (in this process, 200 streams of 20 events each held open):
  Python memory (tracemalloc) for memory and Redis producers, and Redis ``used_memory``.

Target: Redis-backed resumable streaming costs less than 2x the server CPU per event
of plain streaming.

Run: ``python benchmarks/bench_resume.py`` (about 30 s; ``--quick`` for fewer rounds).
Needs ``redis-server`` on PATH (or ``--redis-server PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

THROUGHPUT_EVENTS = 20_000
LATENCY_EVENTS = 200
LATENCY_STREAMS = 50
PACE = 0.005
OPEN_STREAMS = 200
ROUTES = ("plain", "memory", "redis")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the server ---------------------------------------------------------------------------


def serve(port: int, redis_url: str) -> None:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, Router

    from tokenwire.resume import ResumableStreams
    from tokenwire.server import EventStreamResponse

    memory = ResumableStreams("memory", ping=None, grace=0)
    redis = ResumableStreams(redis_url, ping=None, grace=0)

    async def source(n: int, pace: float) -> Any:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            if pace:
                delay = start + i * pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield {"i": i, "t": time.perf_counter_ns(), "text": " lorem"}
        yield "[DONE]"

    def params(request: Request) -> tuple[int, float]:
        q = request.query_params
        return int(q["n"]), float(q["pace"])

    async def plain(request: Request) -> Response:
        return EventStreamResponse(source(*params(request)), ping=None)

    async def with_memory(request: Request) -> Response:
        return await memory.stream(source(*params(request)))

    async def with_redis(request: Request) -> Response:
        return await redis.stream(source(*params(request)))

    app = Router(
        routes=[
            Route("/plain", plain),
            Route("/memory", with_memory),
            Route("/redis", with_redis),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop")


# -- the client ------------------------------------------------------------------------------


async def fetch(url: str) -> tuple[int, list[float], float]:
    """Events received, their delivery latencies (s) and the elapsed time."""
    import orjson

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(url.split(":")[2].split("/")[0])
    )
    path = "/" + url.split("/", 3)[3]
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    started = time.perf_counter()
    latencies: list[float] = []
    count = 0
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        now = time.perf_counter_ns()
        buf += chunk
        while True:
            i = buf.find(b'{"i":')
            if i == -1:
                break
            j = buf.find(b"}", i)
            if j == -1:
                break
            data = orjson.loads(buf[i : j + 1])
            latencies.append((now - data["t"]) / 1e9)
            count += 1
            buf = buf[j + 1 :]
    writer.close()
    return count, latencies, time.perf_counter() - started


async def fetch_many(url: str) -> list[tuple[int, list[float], float]]:
    return await asyncio.gather(*(fetch(url) for _ in range(LATENCY_STREAMS)))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def open_streams_memory(redis_url: str) -> dict[str, float]:
    """Bytes per open stream: 200 producers of 20 events each, held open."""
    from tokenwire.resume import ResumableStreams
    from tokenwire.resume.redis import RedisEventLog

    out: dict[str, float] = {}
    for kind in ("memory", "redis"):
        gate = asyncio.Event()

        async def source(gate: asyncio.Event = gate) -> Any:
            for i in range(20):
                yield {"i": i, "text": " lorem ipsum dolor"}
            await gate.wait()

        streams = ResumableStreams("memory" if kind == "memory" else redis_url, grace=3600)
        await streams.log.connect()
        used_before = 0
        if kind == "redis":
            assert isinstance(streams.log, RedisEventLog)
            used_before = int((await streams.log._redis.info("memory"))["used_memory"])
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        producers = []
        for _ in range(OPEN_STREAMS):
            producer = await streams.create()
            producer.start(source())
            producers.append(producer)
        await asyncio.sleep(0.5)  # every event produced and written
        py = (tracemalloc.get_traced_memory()[0] - base) / OPEN_STREAMS
        tracemalloc.stop()
        out[f"{kind}_python"] = py
        if kind == "redis":
            log = streams.log
            assert isinstance(log, RedisEventLog)
            used = int((await log._redis.info("memory"))["used_memory"])
            out["redis_server"] = (used - used_before) / OPEN_STREAMS
            out["redis_keys"] = await log.memory_usage(producers[0].id)
        gate.set()
        await asyncio.sleep(0.2)
        await streams.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    rounds = 2 if args.quick else 5
    tmp = tempfile.mkdtemp(prefix="tw-bench-redis-")
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            args.redis_server,
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), redis_url])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                socket.create_connection(("127.0.0.1", redis_port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        results: dict[str, dict[str, list[float]]] = {
            r: {
                "rate": [],
                "cpu": [0.0],
                "redis_cpu": [0.0],
                "events": [0.0],
                "lat": [],
                "pcpu": [0.0],
                "predis_cpu": [0.0],
                "pevents": [0.0],
            }
            for r in ROUTES
        }
        # Warm up every route once.
        for route in ROUTES:
            asyncio.run(fetch(f"{base}/{route}?n=2000&pace=0"))
        for i in range(rounds):
            order = ROUTES if i % 2 == 0 else ROUTES[::-1]
            for route in order:
                cpu0, rcpu0 = cpu_seconds(server.pid), cpu_seconds(redis_proc.pid)
                count, _, elapsed = asyncio.run(
                    fetch(f"{base}/{route}?n={THROUGHPUT_EVENTS}&pace=0")
                )
                time.sleep(0.3)  # let background log writes finish (counted)
                cpu1, rcpu1 = cpu_seconds(server.pid), cpu_seconds(redis_proc.pid)
                assert count == THROUGHPUT_EVENTS, (route, count)
                r = results[route]
                r["rate"].append(count / elapsed)
                r["cpu"][0] += cpu1 - cpu0
                r["redis_cpu"][0] += rcpu1 - rcpu0
                r["events"][0] += count
                cpu0, rcpu0 = cpu_seconds(server.pid), cpu_seconds(redis_proc.pid)
                paced = asyncio.run(fetch_many(f"{base}/{route}?n={LATENCY_EVENTS}&pace={PACE}"))
                time.sleep(0.3)
                cpu1, rcpu1 = cpu_seconds(server.pid), cpu_seconds(redis_proc.pid)
                for count, lat, _ in paced:
                    assert count == LATENCY_EVENTS, (route, count)
                    r["lat"] += lat
                    r["pevents"][0] += count
                r["pcpu"][0] += cpu1 - cpu0
                r["predis_cpu"][0] += rcpu1 - rcpu0
        memory = asyncio.run(open_streams_memory(redis_url))
    finally:
        server.terminate()
        server.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    plain = results["plain"]
    plain_cpu = plain["cpu"][0] / plain["events"][0]
    plain_pcpu = plain["pcpu"][0] / plain["pevents"][0]
    plain_p50, plain_p99 = pct(plain["lat"], 0.5), pct(plain["lat"], 0.99)
    print(
        f"throughput: one stream of {THROUGHPUT_EVENTS} events as fast as possible, {rounds} rounds"
    )
    print(
        f"{'route':8} {'events/s':>10} {'server CPU/event':>17} {'x plain':>8} "
        f"{'redis-server CPU/event':>23}"
    )
    for route in ROUTES:
        r = results[route]
        cpu = r["cpu"][0] / r["events"][0]
        print(
            f"{route:8} {statistics.median(r['rate']):>10.0f} {cpu * 1e6:>14.2f} us "
            f"{cpu / plain_cpu:>8.2f} {r['redis_cpu'][0] / r['events'][0] * 1e6:>20.2f} us"
        )
    print(
        f"\npaced: {LATENCY_STREAMS} concurrent streams of {LATENCY_EVENTS} events "
        f"{PACE * 1000:g} ms apart, {rounds} rounds"
    )
    print(
        f"{'route':8} {'server CPU/event':>17} {'x plain':>8} {'redis CPU/ev':>13} "
        f"{'p50':>8} {'p99':>8} {'added p50':>10} {'added p99':>10}"
    )
    for route in ROUTES:
        r = results[route]
        lat = r["lat"]
        p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
        cpu = r["pcpu"][0] / r["pevents"][0]
        print(
            f"{route:8} {cpu * 1e6:>14.1f} us {cpu / plain_pcpu:>8.2f} "
            f"{r['predis_cpu'][0] / r['pevents'][0] * 1e6:>10.1f} us "
            f"{p50 * 1e6:>5.0f} us {p99 * 1e6:>5.0f} us "
            f"{(p50 - plain_p50) * 1e6:>7.0f} us {(p99 - plain_p99) * 1e6:>7.0f} us"
        )
    print(f"\nbytes per open stream ({OPEN_STREAMS} streams of 20 events, held open)")
    print(f"  memory log, Python:          {memory['memory_python']:>8.0f}")
    print(f"  Redis log, Python (producer): {memory['redis_python']:>8.0f}")
    print(f"  Redis log, redis-server:     {memory['redis_server']:>8.0f}")
    print(f"  Redis MEMORY USAGE of keys:  {memory['redis_keys']:>8.0f}")


if __name__ == "__main__":
    main()
