"""Resumable streams benchmark: plain vs resumable (memory log, Redis log), in one run.

A server process (uvicorn + uvloop, this file with ``--serve``, pinned to CPU 0) has
three routes that stream the same source, N events of a small JSON object:

- ``/plain``: :class:`tokenwire.server.EventStreamResponse` over the source;
- ``/memory``: :class:`tokenwire.resume.ResumableStreams` with the in-memory log;
- ``/redis``: the same with a :class:`~tokenwire.resume.redis.RedisEventLog` on a
  throwaway ``redis-server`` (started here, no persistence, on CPU 1 with the client).

Measured, per route (rounds interleaved, in a rotating order, after a warm-up round):

- **throughput**: one stream of 20 000 events produced as fast as possible: events/s at
  the client, and the server's CPU time per event;
- **paced**: 50 concurrent streams of 200 events 5 ms apart (each event its own write,
  as with a real model), each event carrying its send time (``perf_counter_ns``, same
  machine): the **server's CPU time per event** (user + system, to the nanosecond from
  ``/proc/PID/task/*/schedstat``) and redis-server's, delivery latency p50/p99 and the
  difference from plain ("added"). The "x plain" ratios are taken per round (each
  route against plain in the same round) and their median is printed with the range.
  Where ``perf stat`` can count instructions, the paced rounds also count the
  server's and redis-server's instructions per event: on a shared VM, CPU time
  moves by tens of percent between rounds for the same instructions; the count
  does not;
- **bytes per open stream** (in this process, 200 streams of 20 events each held open):
  Python memory (tracemalloc) for memory and Redis producers, and Redis ``used_memory``.

Target: Redis-backed resumable streaming costs less than 2x the CPU per event of plain
streaming (the server's own, and with redis-server's added).

Run: ``python benchmarks/bench_resume.py`` (about 1 minute; ``--quick`` for fewer
rounds). Needs ``redis-server`` on PATH (or ``--redis-server PATH``).
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

from _proc import Counter, cpu_seconds, perf_usable, pin

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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    rounds = 2 if args.quick else args.rounds
    count = perf_usable()
    tmp = tempfile.mkdtemp(prefix="tw-bench-redis-")
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            *pin(1),
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
    server = subprocess.Popen([*pin(0), sys.executable, __file__, "--serve", str(port), redis_url])
    if pin(1):
        os.sched_setaffinity(0, {1})
    base = f"http://127.0.0.1:{port}"
    # per route: lists of per-round figures
    rate: dict[str, list[float]] = {r: [] for r in ROUTES}
    cpu: dict[str, list[float]] = {r: [] for r in ROUTES}  # unpaced, per event
    pcpu: dict[str, list[float]] = {r: [] for r in ROUTES}  # paced, per event
    prcpu: dict[str, list[float]] = {r: [] for r in ROUTES}  # redis-server, paced
    pins: dict[str, list[float]] = {r: [] for r in ROUTES}  # instructions, paced
    prins: dict[str, list[float]] = {r: [] for r in ROUTES}
    lat: dict[str, list[float]] = {r: [] for r in ROUTES}
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
        # Warm up every route once, both ways (connections, pools, caches).
        for route in ROUTES:
            asyncio.run(fetch(f"{base}/{route}?n=2000&pace=0"))
            asyncio.run(fetch_many(f"{base}/{route}?n=20&pace={PACE}"))
        for i in range(rounds):
            shift = i % len(ROUTES)
            for route in ROUTES[shift:] + ROUTES[:shift]:
                cpu0 = cpu_seconds(server.pid)
                n, _, elapsed = asyncio.run(fetch(f"{base}/{route}?n={THROUGHPUT_EVENTS}&pace=0"))
                time.sleep(0.3)  # let background log writes finish (counted)
                assert n == THROUGHPUT_EVENTS, (route, n)
                cpu[route].append((cpu_seconds(server.pid) - cpu0) / n)
                rate[route].append(n / elapsed)
                counter = Counter([server.pid, redis_proc.pid], count)
                paced = asyncio.run(fetch_many(f"{base}/{route}?n={LATENCY_EVENTS}&pace={PACE}"))
                time.sleep(0.3)
                (server_cpu, redis_cpu), (server_ins, redis_ins) = counter.stop()
                events = 0
                for n, latencies, _ in paced:
                    assert n == LATENCY_EVENTS, (route, n)
                    lat[route] += latencies
                    events += n
                pcpu[route].append(server_cpu / events)
                prcpu[route].append(redis_cpu / events)
                if server_ins is not None and redis_ins is not None:
                    pins[route].append(server_ins / events)
                    prins[route].append(redis_ins / events)
        memory = asyncio.run(open_streams_memory(redis_url))
    finally:
        server.terminate()
        server.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median

    def ratio(values: dict[str, list[float]], route: str) -> str:
        per_round = [a / b for a, b in zip(values[route], values["plain"], strict=True)]
        return f"{med(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f})"

    print(
        f"throughput: one stream of {THROUGHPUT_EVENTS} events as fast as possible, "
        f"{rounds} rounds (medians)"
    )
    print(f"{'route':8} {'events/s':>10} {'server CPU/event':>17} {'x plain':>8}")
    for route in ROUTES:
        print(
            f"{route:8} {med(rate[route]):>10.0f} {med(cpu[route]) * 1e6:>14.2f} us "
            f"{med(cpu[route]) / med(cpu['plain']):>8.2f}"
        )
    print(
        f"\npaced: {LATENCY_STREAMS} concurrent streams of {LATENCY_EVENTS} events "
        f"{PACE * 1000:g} ms apart, {rounds} rounds; CPU per event (medians), x plain "
        "(median of the rounds' ratios, with their range)"
    )
    both = {r: [a + b for a, b in zip(pcpu[r], prcpu[r], strict=True)] for r in ROUTES}
    print(
        f"{'route':8} {'server CPU':>11} {'x plain':>18} {'+redis-server':>14} "
        f"{'x plain':>18} {'p50':>7} {'p99':>7} {'added p50':>10} {'added p99':>10}"
    )
    plain_p50, plain_p99 = pct(lat["plain"], 0.5), pct(lat["plain"], 0.99)
    for route in ROUTES:
        p50, p99 = pct(lat[route], 0.5), pct(lat[route], 0.99)
        print(
            f"{route:8} {med(pcpu[route]) * 1e6:>8.2f} us {ratio(pcpu, route):>18} "
            f"{med(both[route]) * 1e6:>11.2f} us {ratio(both, route):>18} "
            f"{p50 * 1e6:>4.0f} us {p99 * 1e6:>4.0f} us "
            f"{(p50 - plain_p50) * 1e6:>7.0f} us {(p99 - plain_p99) * 1e6:>7.0f} us"
        )
    if all(pins[r] for r in ROUTES):
        print("\npaced, instructions per event (perf stat, user + kernel; medians)")
        print(f"{'route':8} {'server':>9} {'x plain':>8} {'+redis-server':>14} {'x plain':>8}")
        plain_ins = med(pins["plain"]) + med(prins["plain"])
        for route in ROUTES:
            own = med(pins[route])
            total = own + med(prins[route])
            print(
                f"{route:8} {own:>9,.0f} {own / med(pins['plain']):>8.2f} "
                f"{total:>14,.0f} {total / plain_ins:>8.2f}"
            )
    print(f"\nbytes per open stream ({OPEN_STREAMS} streams of 20 events, held open)")
    print(f"  memory log, Python:          {memory['memory_python']:>8.0f}")
    print(f"  Redis log, Python (producer): {memory['redis_python']:>8.0f}")
    print(f"  Redis log, redis-server:     {memory['redis_server']:>8.0f}")
    print(f"  Redis MEMORY USAGE of keys:  {memory['redis_keys']:>8.0f}")


if __name__ == "__main__":
    main()
