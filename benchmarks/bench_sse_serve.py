"""Serving benchmark: tokenwire's EventStreamResponse vs sse-starlette's EventSourceResponse.

Both run on the same ASGI server (``--server``: uvicorn with uvloop + httptools, or
granian, one worker, no access log), with the same features switched on (15 s heartbeat,
30 s send timeout), and are read by the same fast raw-socket client running in another
process (pinned to another core when there are two). Each server streams the same
182-byte OpenAI-style chunk, given as ``str`` data (``--item``: or as each library's event
object with an id, as a dict encoded to JSON, or as pre-encoded bytes), as fast as it can.

Measured per implementation:

- events/s on 1 stream and on ``--unpaced-streams`` (50) concurrent streams (best of
  ``--repeat`` runs);
  a fast client on loopback reads whole socket buffers, so unpaced writes batch up;
- server CPU-seconds per 100k events (user + system time of the server's threads, in
  nanoseconds from ``/proc/PID/task/*/schedstat``, summed over the server's process
  tree: granian serves from a worker process it forks, with Rust threads of its own):
  over the unpaced many-stream runs, where writes batch up in the kernel, and paced (200
  streams, one event every 20 ms each: one write per event, the LLM case). Paced
  figures are the median of ``--paced-rounds`` rounds; every implementation's server
  stays up and the rounds are interleaved (in a rotating order), so that a noisy spell
  on the shared machine hits all of them alike rather than one. The ratios are per
  round (sse-starlette and tokenwire measured back to back), and their median is
  reported with the range. Where ``perf stat`` can count instructions, each paced round
  also counts the server's instructions per event (user + kernel): on a shared VM, CPU
  time moves by tens of percent between rounds for the same instructions; the count
  does not;
- RSS per idle open stream: the server's resident memory (all its processes) with 1,000
  idle streams open, minus before they were opened, divided by 1,000.

For reference, also: ``raw-asgi`` (the same generator written with bare ASGI sends:
no heartbeat, timeout or disconnect handling, i.e. the floor), and the LLM senders,
each streaming text deltas (``" word"``) as its protocol's events: ``tokenwire-sender``
(``OpenAISender``), ``tokenwire-anthropic-sender`` (``AnthropicSender``) and
``tokenwire-responses-sender`` (``ResponsesSender``): a producer task, a bounded channel
and the encoding of every delta; unpaced, a sender writes whatever has queued up in one
piece. Each is compared with sse-starlette replaying the very same stream as
pre-encoded strings (``sse-starlette-openai``, ``sse-starlette-anthropic``,
``sse-starlette-responses``: start events, one event per delta, finish events), or with
plain ``sse-starlette`` when its replay is not run. Events counted for the senders
and their replays are the text deltas; the few start and finish events around them
(3 for OpenAI, 6 for Anthropic, 8 for Responses) are sent by both sides and not counted.

``--server both`` runs every implementation on both servers (``tokenwire@granian``,
``tokenwire@uvicorn``...) in the same interleaved rounds: the fairest server comparison.

Run: ``python benchmarks/bench_sse_serve.py`` (about 4 minutes). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import selectors
import signal
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
# The senders, and the sse-starlette replay of each one's stream, by protocol.
SENDERS = {
    "tokenwire-sender": "openai",
    "tokenwire-anthropic-sender": "anthropic",
    "tokenwire-responses-sender": "responses",
}
REPLAYS = {f"sse-starlette-{protocol}": protocol for protocol in SENDERS.values()}
# The message id and model each sender and its replay's encoder are made with.
IDENTITIES = {
    "openai": ("chatcmpl-9tXjg9DdaOfymTPDrSLfxslQEH0C2", "gpt-4o-2024-08-06"),
    "anthropic": ("msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-5"),
    "responses": ("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b4", "gpt-4o"),
}
CREATED = 1723024748  # the OpenAI chunks' "created"
SERVERS = ("uvicorn", "granian")
DELTA = " word"


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


def create_sender(protocol: str) -> tuple[Any, Any]:
    """A sender of ``protocol`` and its response, as an LLM endpoint would create them."""
    from tokenwire.server import AnthropicSender, OpenAISender, ResponsesSender

    message_id, model = IDENTITIES[protocol]
    if protocol == "openai":
        return OpenAISender.create(message_id, model, created=CREATED)
    if protocol == "anthropic":
        return AnthropicSender.create(message_id, model)
    return ResponsesSender.create(message_id, model)


def protocol_stream(protocol: str, n: int) -> tuple[list[Any], list[list[Any]], list[Any]]:
    """The events a sender of ``protocol`` sends for ``n`` text deltas, as ``(event
    name or None, data)`` string pairs: its start events, the events of each delta
    (the first opens the text block or item too) and its finish events. Built with the
    sender's own encoder, so that the replay puts the same events on the wire."""
    from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
    from tokenwire.llm.model import FinishDelta
    from tokenwire.llm.openai_encode import OpenAIChunkEncoder
    from tokenwire.llm.openai_responses import ResponsesEventEncoder
    from tokenwire.sse import SSEDecoder

    message_id, model = IDENTITIES[protocol]
    encoder: Any
    if protocol == "openai":
        encoder = OpenAIChunkEncoder(message_id, model, CREATED)
        finish = FinishDelta("stop")
    elif protocol == "anthropic":
        encoder = AnthropicEventEncoder(message_id, model)
        finish = FinishDelta("stop", "end_turn")  # what AnthropicSender.send_finish() sends
    else:
        encoder = ResponsesEventEncoder(message_id, model)
        finish = FinishDelta("stop")

    def events(data: bytes) -> list[Any]:
        decoder = SSEDecoder()
        # The encoders never name an event "message": that is the name of unnamed ones.
        return [
            (None if event.event == "message" else event.event, event.data)
            for event in decoder.feed(data) + decoder.close()
        ]

    start = events(encoder.start())
    deltas = [events(encoder.encode_text(DELTA)) for _ in range(n)]
    return start, deltas, events(encoder.encode(finish) + encoder.done(None))


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

    elif impl in REPLAYS:
        from sse_starlette import EventSourceResponse, ServerSentEvent

        protocol = REPLAYS[impl]
        streams: dict[int, Any] = {}

        def item_of(name: str | None, data: str) -> Any:
            # Plain data is yielded as a str, as with plain sse-starlette.
            return data if name is None else ServerSentEvent(data=data, event=name)

        async def replay(n: int, pace: float) -> Any:
            if n not in streams:  # pre-encoded once per length, by its first request
                streams[n] = protocol_stream(protocol, max(n, 1))
            start, deltas, finish = streams[n]
            for name, data in start:
                yield item_of(name, data)
            if not n:
                await asyncio.sleep(3600)
            for delta in deltas:
                for name, data in delta:
                    yield item_of(name, data)
                if pace:
                    await asyncio.sleep(pace)
            for name, data in finish:
                yield item_of(name, data)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            response = EventSourceResponse(replay(n, pace), ping=15, send_timeout=30)
            await response(scope, receive, send)

    elif impl == "tokenwire":
        from tokenwire.server import EventStreamResponse

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            source = events(n, pace) if n else idle()
            response = EventStreamResponse(source, ping=15, send_timeout=30)
            await response(scope, receive, send)

    elif impl in SENDERS:
        protocol = SENDERS[impl]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            n, pace = params(scope)
            sender, response = create_sender(protocol)

            async def produce() -> None:
                async with sender:
                    if not n:
                        await asyncio.sleep(3600)
                    send_text = sender.send
                    for _ in range(n):
                        await send_text(DELTA)
                        if pace:
                            await asyncio.sleep(pace)

            sender.produce(produce())
            await response(scope, receive, send)

    else:
        raise SystemExit(f"unknown implementation {impl!r}")

    return app


def run_uvicorn(impl: str, fd: int, item: str) -> None:
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


def run_granian(impl: str, port: int, item: str) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    server = Granian(
        "bench_sse_serve:app",  # a name only: the app is built by the loader below
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGINL,  # no lifespan, as on uvicorn
        workers=1,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        # Requests served at once per worker (granian's default: backlog / workers).
        backpressure=4096,
        log_level=LogLevels.warning,
        # Stopped by SIGTERM; streams the app never ends (raw-asgi's idle ones) are not
        # waited for longer than this.
        workers_kill_timeout=1,
    )

    def load(_target: str) -> Any:
        return make_app(impl, item)

    # The worker (forked) builds the app itself: nothing is pickled.
    server.serve(target_loader=load)


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
            if not data or tail == b"0\r\n\r\n":  # the end of a chunked body
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
        s.settimeout(60)  # a server that never sends fails the run instead of hanging it
        socks.append(s)
    for s in socks:
        data = b""
        # The end of the head, then the end of the first event (sse-starlette ends lines
        # with CRLF).
        while (head := data.find(b"\r\n\r\n")) < 0 or not (
            b"\n\n" in data[head + 4 :] or b"\r\n\r\n" in data[head + 4 :]
        ):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("idle stream closed early")
            data += chunk
    print("ready", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


# -- driver -----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian's worker, forked by its main process)."""
    pids = [pid]
    i = 0
    while i < len(pids):
        for tid in os.listdir(f"/proc/{pids[i]}/task"):
            with open(f"/proc/{pids[i]}/task/{tid}/children") as f:
                pids.extend(int(child) for child in f.read().split())
        i += 1
    return pids


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    """A loopback port free now (granian binds its own socket, it does not take one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, impl: str, item: str = "str", on: str = "uvicorn") -> None:
        cmd = [sys.executable, __file__, "--serve", impl, "--on", on, "--item", item]
        if on == "granian":
            self.port = free_port()
            # Pinned before granian starts: its worker and Rust threads inherit the CPU.
            self.proc = subprocess.Popen([*pin(0), *cmd, "--port", str(self.port)])
        else:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(2048)
            self.port = listener.getsockname()[1]
            fd = listener.fileno()
            self.proc = subprocess.Popen([*pin(0), *cmd, "--fd", str(fd)], pass_fds=[fd])
            listener.close()
        run_client_once(self.port, 1, 10, 0)  # waits until the server answers
        self.pids = process_tree(self.proc.pid)  # granian's worker is up by now

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            for pid in reversed(self.pids):  # granian's worker too, not only its parent
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()


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
        cpu0 = server.cpu()
        result = run_client_once(server.port, streams, n, pace)
        cpu = server.cpu() - cpu0
        events = streams * n
        best = max(best, events / result["seconds"])
        cpu_per = min(cpu_per, cpu / events * 100_000)
    return best, cpu_per


def paced_round(
    server: Server, streams: int, n: int, pace: int, count: bool
) -> tuple[float, float | None]:
    """One paced run: server CPU-seconds per 100k events and, with ``count``, the
    server's instructions per event (user + kernel, from ``perf stat``)."""
    counter = Counter(server.pids, count)
    run_client_once(server.port, streams, n, pace)
    cpus, counts = counter.stop()
    events = streams * n
    cpu = sum(cpus) / events * 100_000
    if None in counts:
        return cpu, None
    return cpu, sum(c for c in counts if c is not None) / events


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
        before = server.rss()
        assert client.stdout is not None and client.stdin is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("idle client failed")
        time.sleep(0.5)
        after = server.rss()
        client.stdin.close()
        client.wait(30)
        time.sleep(0.5)
    return (after - before) / streams


def baseline_of(impl: str, have: set[str]) -> str | None:
    """What ``impl`` is compared with: its protocol's replay if run, else sse-starlette."""
    if impl == "raw-asgi" or impl == "sse-starlette" or impl in REPLAYS:
        return None
    replay = f"sse-starlette-{SENDERS[impl]}" if impl in SENDERS else None
    if replay in have:
        return replay
    return "sse-starlette" if "sse-starlette" in have else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the server process: its impl
    parser.add_argument("--on", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=4, type=int, metavar=("PORT", "STREAMS", "N", "PACE"))
    parser.add_argument("--idle", nargs=2, type=int, metavar=("PORT", "STREAMS"))
    parser.add_argument(
        "--server",
        choices=[*SERVERS, "both"],
        default="uvicorn",
        help="the ASGI server; both: every implementation on each, in the same rounds",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", type=int, default=100_000, help="events on the 1-stream run")
    parser.add_argument("--many", type=int, default=1_000, help="events per stream, unpaced")
    parser.add_argument("--unpaced-streams", type=int, default=50)
    parser.add_argument("--idle-streams", type=int, default=1_000)
    parser.add_argument("--paced-streams", type=int, default=200)
    parser.add_argument("--paced-events", type=int, default=150)
    parser.add_argument("--pace-ms", type=int, default=20)
    parser.add_argument("--paced-rounds", type=int, default=11)
    parser.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help="comma-separated, of: "
        + ", ".join(["raw-asgi", "sse-starlette", "tokenwire", *SENDERS, *REPLAYS]),
    )
    parser.add_argument(
        "--item",
        choices=ITEMS,
        default="str",
        help="what the stream yields: str, sse (event objects with an id), json (dicts), "
        "bytes (whole events); the senders and their replays always send text deltas",
    )
    args = parser.parse_args()
    if args.serve:
        if args.on == "granian":
            run_granian(args.serve, args.port, args.item)
        else:
            run_uvicorn(args.serve, args.fd, args.item)
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

    ons = list(SERVERS) if args.server == "both" else [args.server]
    versions = []
    if "uvicorn" in ons:
        import uvicorn

        versions.append(f"uvicorn {uvicorn.__version__} (uvloop, httptools)")
    if "granian" in ons:
        import granian

        versions.append(f"granian {granian.__version__} (uvloop, HTTP/1)")
    print(
        f"Python {platform.python_version()}, {', '.join(versions)}, "
        f"sse-starlette {getattr(sse_starlette, '__version__', '?')}, {os.cpu_count()} CPUs; "
        f"server on CPU 0, client on CPU 1; items: {args.item}"
    )
    # One key per implementation and server: "tokenwire", or "tokenwire@granian" with both.
    keys = [
        (f"{impl}@{on}" if len(ons) > 1 else impl, impl, on)
        for impl in args.impls.split(",")
        for on in ons
    ]
    width = max(16, *(len(key) for key, _, _ in keys))
    servers: dict[str, Server] = {}
    rows: dict[str, dict[str, float]] = {}
    names = [key for key, _, _ in keys]
    paced: dict[str, list[float]] = {key: [] for key in names}
    instructions: dict[str, list[float]] = {key: [] for key in names}
    try:
        for key, impl, on in keys:
            servers[key] = server = Server(impl, args.item, on)
            idle = idle_memory(server, args.idle_streams)
            one, _ = throughput(server, 1, args.one, args.repeat)
            many, cpu = throughput(server, args.unpaced_streams, args.many, args.repeat)
            rows[key] = {"one": one, "many": many, "cpu": cpu, "idle": idle}
            print(
                f"{key:{width}} 1 stream {one:>9,.0f} ev/s | "
                f"{args.unpaced_streams} streams {many:>9,.0f} ev/s | "
                f"CPU-s/100k ev unpaced {cpu:5.2f} | {idle / 1024:5.1f} KiB/idle stream",
                flush=True,
            )
        count = perf_usable()
        for r in range(args.paced_rounds):
            shift = r % len(names)
            for key in names[shift:] + names[:shift]:
                cpu, ins = paced_round(
                    servers[key], args.paced_streams, args.paced_events, args.pace_ms, count
                )
                paced[key].append(cpu)
                if ins is not None:
                    instructions[key].append(ins)
    finally:
        for server in servers.values():
            server.close()
    print(
        f"paced ({args.paced_streams} streams, one event every {args.pace_ms} ms each), "
        f"CPU-s per 100k events, median of {args.paced_rounds} interleaved rounds [range]:"
    )
    for key in names:
        runs = paced[key]
        rows[key]["paced"] = statistics.median(runs)
        line = f"  {key:{width}} {rows[key]['paced']:5.2f} [{min(runs):.2f}-{max(runs):.2f}]"
        if instructions[key]:
            rows[key]["ins"] = statistics.median(instructions[key])
            line += f" | {rows[key]['ins']:8,.0f} instructions per event (perf stat)"
        print(line)

    def compare(key: str, base: str, label: str) -> str:
        row, ref = rows[key], rows[base]
        ratios = [b / t for b, t in zip(paced[base], paced[key], strict=True)]
        return (
            f"{key} / {label}: events/s x{row['one'] / ref['one']:.2f} (1 stream), "
            f"x{row['many'] / ref['many']:.2f} ({args.unpaced_streams} streams); "
            f"events per CPU-second x{ref['cpu'] / row['cpu']:.2f} (unpaced), "
            f"x{statistics.median(ratios):.2f} paced (median of the rounds' ratios; "
            f"range {min(ratios):.2f}-{max(ratios):.2f}); "
            + (
                f"x{ref['ins'] / row['ins']:.2f} fewer instructions per event paced; "
                if "ins" in row and "ins" in ref
                else ""
            )
            + f"idle memory x{row['idle'] / ref['idle']:.2f}"
        )

    def key_of(impl: str, on: str) -> str:
        return f"{impl}@{on}" if len(ons) > 1 else impl

    for on in ons:
        have = {impl for key, impl, o in keys if o == on}
        for key, impl, o in keys:
            if o != on:
                continue
            base = baseline_of(impl, have)
            if base is not None:
                print(compare(key, key_of(base, on), key_of(base, on)))
            floor = key_of("raw-asgi", on)
            if impl != "raw-asgi" and "raw-asgi" in have:
                ratios = [t / f for f, t in zip(paced[floor], paced[key], strict=True)]
                print(
                    f"  {key}: CPU per event x{rows[key]['cpu'] / rows[floor]['cpu']:.2f} "
                    f"the floor's unpaced, x{statistics.median(ratios):.2f} paced "
                    f"(range {min(ratios):.2f}-{max(ratios):.2f})"
                )
    if len(ons) > 1:
        for impl in dict.fromkeys(impl for _, impl, _ in keys):
            print(compare(f"{impl}@granian", f"{impl}@uvicorn", f"{impl}@uvicorn"))


if __name__ == "__main__":
    main()
