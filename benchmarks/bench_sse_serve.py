"""Serving benchmark: tokenwire's EventStreamResponse vs sse-starlette's EventSourceResponse.

Both run on the same uvicorn settings (uvloop + httptools, one worker, no access log),
with the same features switched on (15 s heartbeat, 30 s send timeout), and are read by
the same fast raw-socket client running in another process (pinned to another core
when there are two). Each server streams the same 182-byte OpenAI-style chunk, given
as ``str`` data (``--item``: or as each library's event object with an id, as a dict
encoded to JSON, or as pre-encoded bytes), as fast as it can.

Measured per implementation:

- events/s on 1 stream and on 100 concurrent streams (best of ``--repeat`` runs);
  a fast client on loopback reads whole socket buffers, so unpaced writes batch up;
- server CPU-seconds per 100k events (user + system time of the server process's
  threads, in nanoseconds from ``/proc/PID/task/*/schedstat``): over the unpaced
  100-stream runs, where writes batch up in the kernel, and paced (200 streams, one
  event every 20 ms each: one write per event, the LLM case). Paced figures are the
  median of ``--paced-rounds`` rounds; every implementation's server stays up and the
  rounds are interleaved (in a rotating order), so that a noisy spell on the shared
  machine hits all of them alike rather than one. The ratios are per round (sse-starlette
  and tokenwire measured back to back), and their median is reported with the range.
  Where ``perf stat`` can count instructions, each paced round also counts the
  server's instructions per event (user + kernel): on a shared VM, CPU time moves by
  tens of percent between rounds for the same instructions; the count does not;
- RSS per idle open stream: the server's resident memory with 1,000 idle streams open,
  minus before they were opened, divided by 1,000.

For reference, also: ``raw-asgi`` (the same generator written with bare ASGI sends:
no heartbeat, timeout or disconnect handling, i.e. the floor) and ``tokenwire-sender``
(an ``OpenAISender``: a producer task, a bounded channel and JSON encoding of every
delta; unpaced, it writes whatever has queued up in one piece).

Run: ``python benchmarks/bench_sse_serve.py`` (about 4 minutes). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from _proc import Counter, cpu_seconds, perf_usable, pin

CHUNK = (
    '{"id":"chatcmpl-9tXjg9DdaOfymTPDrSLfxslQEH0C2","object":"chat.completion.chunk",'
    '"created":1723024748,"model":"gpt-4o-2024-08-06","choices":[{"index":0,'
    '"delta":{"content":" word"},"finish_reason":null}]}'
)
IMPLS = ["raw-asgi", "sse-starlette", "tokenwire", "tokenwire-sender"]


# -- server process -------------------------------------------------------------------------


ITEMS = ("str", "sse", "json", "bytes")


def item_maker(impl: str, item: str) -> Any:
    """What a user of ``impl`` yields for the ``i``-th event of an ``item`` stream:
    ``str``: the chunk; ``sse``: the library's own event object, with an id;
    ``json``: the chunk as a dict (tokenwire encodes it; sse-starlette's users pass
    ``json.dumps(obj)``, as its documentation does); ``bytes``: the whole event,
    pre-encoded (both send bytes as they are)."""
    if item == "str":
        return lambda i: CHUNK
    if item == "bytes":
        whole = b"data: " + CHUNK.encode() + b"\n\n"
        return lambda i: whole
    if item == "json":
        obj = json.loads(CHUNK)
        if impl == "sse-starlette":
            dumps = json.dumps
            return lambda i: dumps(obj, separators=(",", ":"))
        return lambda i: obj
    if impl == "sse-starlette":
        from sse_starlette import ServerSentEvent as StarletteEvent

        return lambda i: StarletteEvent(data=CHUNK, id=str(i))
    from tokenwire.sse import ServerSentEvent

    return lambda i: ServerSentEvent(CHUNK, id=str(i))


def make_app(impl: str, item: str = "str") -> Any:
    """A bare ASGI app (no router or middleware, so only the response classes differ):
    ``?n=N&pace=MS`` streams N events MS ms apart; ``n=0`` one event, then idle."""
    from urllib.parse import parse_qs

    make = item_maker(impl, item)

    async def events(n: int, pace: float) -> Any:
        if pace:
            for i in range(n):
                yield make(i)
                await asyncio.sleep(pace)
        else:
            for i in range(n):
                yield make(i)

    async def idle() -> Any:
        yield make(0)
        await asyncio.sleep(3600)

    def params(scope: Any) -> tuple[int, float]:
        query = parse_qs(scope["query_string"].decode())
        return int(query.get("n", ["0"])[0]), float(query.get("pace", ["0"])[0]) / 1000

    tasks: set[asyncio.Task[None]] = set()

    if impl == "raw-asgi":
        # The floor: the same generator written with bare ASGI sends (no heartbeat,
        # no send timeout, no disconnect handling).
        import orjson

        # The most direct encoding of each item type (the same items as tokenwire's).
        encode: Any = {
            "str": lambda x: b"data: " + x.encode() + b"\n\n",
            "sse": lambda x: x.encode(),
            "json": lambda x: b"data: " + orjson.dumps(x) + b"\n\n",
            "bytes": lambda x: x,
        }[item]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for x in events(n, pace) if n else idle():
                body = encode(x)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    elif impl == "sse-starlette":
        from sse_starlette import EventSourceResponse

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            source = events(n, pace) if n else idle()
            response = EventSourceResponse(source, ping=15, send_timeout=30)
            await response(scope, receive, send)

    elif impl == "tokenwire":
        from tokenwire.server import EventStreamResponse

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            source = events(n, pace) if n else idle()
            response = EventStreamResponse(source, ping=15, send_timeout=30)
            await response(scope, receive, send)

    else:
        from tokenwire.server import OpenAISender

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            sender, response = OpenAISender.create(
                "chatcmpl-9tXjg9DdaOfymTPDrSLfxslQEH0C2", "gpt-4o-2024-08-06", created=1
            )

            async def produce() -> None:
                async with sender:
                    if not n:
                        await asyncio.sleep(3600)
                    send_text = sender.send
                    for _ in range(n):
                        await send_text(" word")
                        if pace:
                            await asyncio.sleep(pace)

            task = asyncio.get_running_loop().create_task(produce())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await response(scope, receive, send)

    return app


def run_server(impl: str, fd: int, item: str) -> None:
    import uvicorn

    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        make_app(impl, item),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        # raw-asgi never notices a disconnect: its idle streams are cancelled at exit.
        log_level="critical" if impl == "raw-asgi" else "warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


# -- client process ---------------------------------------------------------------------------


def _request(port: int, n: int, pace: int = 0) -> bytes:
    return f"GET /?n={n}&pace={pace} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def run_client(port: int, streams: int, n: int, pace: int) -> None:
    """Open ``streams`` connections, each asking for ``n`` events ``pace`` ms apart;
    read them all."""
    sel = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    total = 0
    start = time.perf_counter()
    for _ in range(streams):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(_request(port, n, pace))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        tails[s] = b""
    while tails:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            data = s.recv(1 << 18)
            total += len(data)
            tail = (tails[s] + data)[-5:]
            if not data or tail == b"0\r\n\r\n":
                sel.unregister(s)
                s.close()
                del tails[s]
            else:
                tails[s] = tail
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "bytes": total}), flush=True)


def run_idle_client(port: int, streams: int) -> None:
    """Open ``streams`` idle streams (read their first event), then hold them until
    stdin closes."""
    socks = []
    for _ in range(streams):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(_request(port, 0))
        socks.append(s)
    for s in socks:
        data = b""
        while b"null}]}" not in data:  # the end of the first event's data
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("idle stream closed early")
            data += chunk
    print("ready", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


# -- driver -----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, impl: str, item: str = "str") -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(2048)
        self.port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        cmd = [sys.executable, __file__, "--server", impl, "--fd", str(fd), "--item", item]
        self.proc = subprocess.Popen(pin(0) + cmd, pass_fds=[fd])
        self.listener.close()
        run_client_once(self.port, 1, 10, 0)  # waits until the server answers

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client_cmd(*args: str) -> list[str]:
    return [*pin(1), sys.executable, __file__, *args]


def run_client_once(port: int, streams: int, n: int, pace: int) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.run(
            client_cmd("--client", str(port), str(streams), str(n), str(pace)),
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout)  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(proc.stderr)
        time.sleep(0.1)


def throughput(
    server: Server, streams: int, n: int, repeat: int, pace: int = 0
) -> tuple[float, float]:
    """Best events/s over ``repeat`` runs, and server CPU-seconds per 100k events."""
    best = 0.0
    cpu_per = float("inf")
    for _ in range(repeat):
        cpu0 = cpu_seconds(server.proc.pid)
        result = run_client_once(server.port, streams, n, pace)
        cpu = cpu_seconds(server.proc.pid) - cpu0
        events = streams * n
        best = max(best, events / result["seconds"])
        cpu_per = min(cpu_per, cpu / events * 100_000)
    return best, cpu_per


def paced_round(
    server: Server, streams: int, n: int, pace: int, count: bool
) -> tuple[float, float | None]:
    """One paced run: server CPU-seconds per 100k events and, with ``count``, the
    server's instructions per event (user + kernel, from ``perf stat``)."""
    counter = Counter([server.proc.pid], count)
    run_client_once(server.port, streams, n, pace)
    (cpu,), (instructions,) = counter.stop()
    events = streams * n
    return cpu / events * 100_000, None if instructions is None else instructions / events


def idle_memory(server: Server, streams: int) -> float:
    """Bytes of server RSS per idle open stream."""
    # Warm up: open and close a batch, so one-time allocations are not counted.
    for count in (100, streams):
        client = subprocess.Popen(
            client_cmd("--idle", str(server.port), str(count)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        before = rss_bytes(server.proc.pid)
        assert client.stdout is not None and client.stdin is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("idle client failed")
        time.sleep(0.5)
        after = rss_bytes(server.proc.pid)
        client.stdin.close()
        client.wait(30)
        time.sleep(0.5)
    return (after - before) / streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server")
    parser.add_argument("--fd", type=int)
    parser.add_argument("--client", nargs=4, type=int, metavar=("PORT", "STREAMS", "N", "PACE"))
    parser.add_argument("--idle", nargs=2, type=int, metavar=("PORT", "STREAMS"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", type=int, default=100_000, help="events on the 1-stream run")
    parser.add_argument("--many", type=int, default=1_000, help="events per stream, 100 streams")
    parser.add_argument("--idle-streams", type=int, default=1_000)
    parser.add_argument("--paced-streams", type=int, default=200)
    parser.add_argument("--paced-events", type=int, default=150)
    parser.add_argument("--pace-ms", type=int, default=20)
    parser.add_argument("--paced-rounds", type=int, default=11)
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument(
        "--item",
        choices=ITEMS,
        default="str",
        help="what the stream yields: str, sse (event objects with an id), json (dicts), "
        "bytes (whole events); tokenwire-sender always sends text deltas",
    )
    args = parser.parse_args()
    if args.server:
        run_server(args.server, args.fd, args.item)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client:
        run_client(*args.client)
        return
    if args.idle:
        run_idle_client(*args.idle)
        return

    import platform

    import sse_starlette
    import uvicorn

    print(
        f"Python {platform.python_version()}, uvicorn {uvicorn.__version__} (uvloop, httptools), "
        f"sse-starlette {getattr(sse_starlette, '__version__', '?')}, {os.cpu_count()} CPUs; "
        f"server on CPU 0, client on CPU 1; items: {args.item}"
    )
    impls = args.impls.split(",")
    servers: dict[str, Server] = {}
    rows: dict[str, dict[str, float]] = {}
    paced: dict[str, list[float]] = {impl: [] for impl in impls}
    instructions: dict[str, list[float]] = {impl: [] for impl in impls}
    try:
        for impl in impls:
            servers[impl] = server = Server(impl, args.item)
            idle = idle_memory(server, args.idle_streams)
            one, _ = throughput(server, 1, args.one, args.repeat)
            many, cpu = throughput(server, 100, args.many, args.repeat)
            rows[impl] = {"one": one, "many": many, "cpu": cpu, "idle": idle}
            print(
                f"{impl:16} 1 stream {one:>9,.0f} ev/s | 100 streams {many:>9,.0f} ev/s | "
                f"CPU-s/100k ev unpaced {cpu:5.2f} | {idle / 1024:5.1f} KiB/idle stream",
                flush=True,
            )
        count = perf_usable()
        for r in range(args.paced_rounds):
            shift = r % len(impls)
            for impl in impls[shift:] + impls[:shift]:
                cpu, ins = paced_round(
                    servers[impl], args.paced_streams, args.paced_events, args.pace_ms, count
                )
                paced[impl].append(cpu)
                if ins is not None:
                    instructions[impl].append(ins)
    finally:
        for server in servers.values():
            server.close()
    print(
        f"paced ({args.paced_streams} streams, one event every {args.pace_ms} ms each), "
        f"CPU-s per 100k events, median of {args.paced_rounds} interleaved rounds [range]:"
    )
    for impl in impls:
        runs = paced[impl]
        rows[impl]["paced"] = statistics.median(runs)
        line = f"  {impl:16} {rows[impl]['paced']:5.2f} [{min(runs):.2f}-{max(runs):.2f}]"
        if instructions[impl]:
            rows[impl]["ins"] = statistics.median(instructions[impl])
            line += f" | {rows[impl]['ins']:8,.0f} instructions per event (perf stat)"
        print(line)
    base = rows.get("sse-starlette")
    if base:
        for impl, row in rows.items():
            if impl in ("sse-starlette", "raw-asgi"):
                continue
            ratios = [b / t for b, t in zip(paced["sse-starlette"], paced[impl], strict=True)]
            print(
                f"{impl} / sse-starlette: events/s x{row['one'] / base['one']:.2f} (1 stream), "
                f"x{row['many'] / base['many']:.2f} (100 streams); "
                f"events per CPU-second x{base['cpu'] / row['cpu']:.2f} (unpaced), "
                f"x{statistics.median(ratios):.2f} paced (median of the rounds' ratios; "
                f"range {min(ratios):.2f}-{max(ratios):.2f}); "
                + (
                    f"x{base['ins'] / row['ins']:.2f} fewer instructions per event paced; "
                    if "ins" in row and "ins" in base
                    else ""
                )
                + f"idle memory x{row['idle'] / base['idle']:.2f}"
            )


if __name__ == "__main__":
    main()
