"""Gateway overhead benchmark: a paced mock upstream called directly and through
``tokenwire serve``, interleaved, in one run.

Three processes besides this one (which only coordinates and sleeps meanwhile):

- **mock upstream** (raw asyncio HTTP/1.1 server, keep-alive, chunked): answers
  ``POST /v1/chat/completions`` with the role chunk at once, then 64 OpenAI content
  chunks 20 ms apart (on an absolute schedule), the finish chunk, the usage chunk when
  asked for, and ``data: [DONE]``. Each content chunk's text carries the mock's
  send time (``t<perf_counter_ns> ``), so the client can also measure each chunk's
  delivery latency.
- **gateway**: ``tokenwire serve --workers 1`` with a temporary ``tokenwire.toml`` that
  routes the model ``mock`` to the mock (``[providers.mock] type = "openai"``).
- **client** (raw asyncio streams, no HTTP library): opens N connections at once,
  POSTs streaming requests, and timestamps every content chunk as its bytes arrive.

The gateway is pinned to core 0, mock, client and this process to core 1 (when the
machine has two cores; ``os.sched_setaffinity``). Rounds alternate between direct and
through-gateway (the order flips every round), at 1, 10 and 100 streams started
together, after a warm-up round of each; at each level the routes take turns round by
round (in a rotating order), so that routes are measured in the same conditions as
each other, not minutes apart. Reported, per level: time to first token
(first content chunk, from the start of the connection), inter-chunk gap, chunk
delivery latency (receive time minus the mock's send time), p50 and p99, direct,
through the gateway and the difference ("added"), and the bunching check: the share
of gaps under 5 ms (the mock's are 20 ms; a gateway that buffers delivers chunks in
bursts).

Routes (``--routes``): chat completions on both sides (pass-through), a Responses client
of the chat-completions upstream (translated; direct = the upstream's own protocol),
Responses on both sides (pass-through, the mock speaking Responses), and the same two for
a Gemini client (``gemini``: translated from chat completions; ``gemini-pass``: the mock
speaking Gemini on ``/v1beta/models/...:streamGenerateContent``). Targets, for each:
1 stream: added TTFT p50 < 1 ms; 100 streams: added TTFT p99 < 10 ms and added gap p99
< 0.5 ms, with no bunching.

Two more routes, not in the default list, measure routing
(:mod:`tokenwire.gateway.routing`) for a chat-completions client: ``routed``, a model
with two deployments of the mock (two providers, the first healthy), ``strategy =
"fallback"``, passed through as ``chat`` is; and ``routed-continue``, the same route
with ``continue_on_failure = true``, whose reply the gateway always re-encodes. When
``chat`` runs too (``--routes chat,routed,routed-continue``), each also gets a "vs plain
route" table: its gateway figures minus the ``chat`` route's from the same rounds,
beside the same difference for the direct path (the same request on all three routes,
so its difference is the run's noise), and a one-line summary. The requirement: no
measurable added latency over the plain route (within noise). What a cut upstream
costs is ``bench_continuation.py``'s to measure.

Run: ``python benchmarks/bench_gateway.py`` (about 2 minutes per route; ``--quick`` for a
shorter, noisier run). Linux (``sched_setaffinity``); elsewhere it runs unpinned.

Before/after a change: ``--baseline DIR`` also runs a gateway from another checkout
of tokenwire (``DIR/src`` first on its ``PYTHONPATH``, e.g. a ``git worktree`` of the
previous commit), pinned like the other and interleaved in the same rounds, so both
are measured against the same direct figures. The two gateways share the configuration
file, so routes the other checkout cannot configure (``routed``, ``routed-continue``
before routing) leave it unable to start.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

CHUNKS = 64
PACE = 0.020
BUNCH_MS = 5.0
LEVELS = (1, 10, 100)
ROUNDS = {1: 20, 10: 8, 100: 6}
QUICK_ROUNDS = {1: 6, 10: 3, 100: 2}

GATEWAY_CORE = 0
LOAD_CORE = 1


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- mock upstream -------------------------------------------------------------------


def _chunk(payload: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_PREFIX = (
    b'{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"mock","system_fingerprint":null,"choices":[{"index":0,'
)
_ROLE = _chunk(
    _PREFIX + b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
)
_FINISH = _chunk(_PREFIX + b'"delta":{},"logprobs":null,"finish_reason":"stop"}]}')
_USAGE = _chunk(
    b'{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"mock","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":8,'
    b'"completion_tokens":64,"total_tokens":72}}'
)
_DONE = _chunk(b"[DONE]") + b"0\r\n\r\n"


def _named(name: bytes, payload: bytes) -> bytes:
    event = b"event: " + name + b"\ndata: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


# The same reply as an OpenAI Responses stream (what a Responses upstream sends).
_R_RESPONSE = (
    b'{"id":"resp_mock","object":"response","created_at":1700000000,"status":"%s",'
    b'"model":"mock","output":[],"usage":null}'
)
_R_START = _named(
    b"response.created",
    b'{"type":"response.created","sequence_number":0,"response":'
    + _R_RESPONSE % b"in_progress"
    + b"}",
) + _named(
    b"response.output_item.added",
    b'{"type":"response.output_item.added","sequence_number":1,"output_index":0,'
    b'"item":{"id":"msg_mock","type":"message","status":"in_progress","role":"assistant",'
    b'"content":[]}}',
)
_R_DELTA = (
    b'{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_mock",'
    b'"output_index":0,"content_index":0,"delta":"t%d ","logprobs":[]}'
)
_R_END = (
    _named(
        b"response.completed",
        b'{"type":"response.completed","sequence_number":%d,"response":{"id":"resp_mock",'
        b'"object":"response","created_at":1700000000,"status":"completed","model":"mock",'
        b'"output":[],"usage":{"input_tokens":8,"input_tokens_details":{"cached_tokens":0},'
        b'"output_tokens":64,"output_tokens_details":{"reasoning_tokens":0},'
        b'"total_tokens":72}}}',
    )
    + b"0\r\n\r\n"
)


# The same reply as a Gemini stream (``:streamGenerateContent?alt=sse``): no start event,
# a GenerateContentResponse per piece of text, the last with the finish reason and usage;
# events end with CRLF CRLF, as the API's do.
def _g_chunk(payload: bytes) -> bytes:
    event = b"data: " + payload + b"\r\n\r\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


_G_DELTA = (
    b'{"candidates":[{"content":{"parts":[{"text":"t%d "}],"role":"model"},"index":0}],'
    b'"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"mock",'
    b'"responseId":"mock-gemini"}'
)
_G_END = (
    _g_chunk(
        b'{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},'
        b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,'
        b'"candidatesTokenCount":64,"totalTokenCount":72},"modelVersion":"mock",'
        b'"responseId":"mock-gemini"}'
    )
    + b"0\r\n\r\n"
)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next request's head and body on a keep-alive connection (Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, await reader.readexactly(length) if length else b""


async def _mock_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    try:
        while True:
            head, body = await _read_request(reader)
            responses = head.startswith(b"POST /v1/responses")
            gemini = head.startswith(b"POST /v1beta/")
            start = loop.time()
            writer.write(_HEAD + (b"" if gemini else _R_START if responses else _ROLE))
            for i in range(CHUNKS):
                delay = start + (i + 1) * PACE - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if gemini:
                    writer.write(_g_chunk(_G_DELTA % clock()))
                    continue
                if responses:
                    writer.write(_named(b"response.output_text.delta", _R_DELTA % (i + 2, clock())))
                    continue
                writer.write(
                    _chunk(
                        _PREFIX
                        + b'"delta":{"content":"t%d "},"logprobs":null,"finish_reason":null}]}'
                        % clock()
                    )
                )
            if gemini:
                writer.write(_G_END)
            elif responses:
                writer.write(_R_END % (CHUNKS + 2))
            else:
                writer.write(_FINISH + (_USAGE if b"include_usage" in body else b"") + _DONE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve_mock(
    connection: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], port: int
) -> None:
    """Serve ``connection`` on ``port``; say ``ready`` once listening."""
    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def _mock_main(port: int) -> None:
    await _serve_mock(_mock_connection, port)


# --- lean client ---------------------------------------------------------------------


async def _events(port: int, request: bytes) -> AsyncIterator[tuple[int, bytes]]:
    """Send ``request`` on a new connection and yield each SSE event of the 200
    response (without its blank line, CRLFs made LFs) with the time its bytes arrived
    (ns), until the body ends; the caller stops at its protocol's end marker."""
    clock = time.perf_counter_ns
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before the response head")
            raw += data
        head, _, raw = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        chunked = b"transfer-encoding: chunked" in head.lower()
        now = clock()
        events = b""
        ended = False
        while True:
            # De-chunk what is complete, then split whole events off.
            if chunked:
                while True:
                    eol = raw.find(b"\r\n")
                    if eol < 0:
                        break
                    size = int(raw[:eol], 16)
                    if size == 0:
                        ended = True
                        break
                    end = eol + 2 + size
                    if len(raw) < end + 2:
                        break
                    events += raw[eol + 2 : end]
                    raw = raw[end + 2 :]
            else:
                events, raw = events + raw, b""
            if b"\r" in events:  # Gemini's events end with CRLF CRLF
                events = events.replace(b"\r\n", b"\n")
            while True:
                cut = events.find(b"\n\n")
                if cut < 0:
                    break
                event, events = events[:cut], events[cut + 2 :]
                yield now, event
            if ended:
                return
            data = await reader.read(65536)
            now = clock()
            if not data:
                return
            raw += data
    finally:
        writer.close()


async def _one_stream(port: int, request: bytes, marker: bytes) -> tuple[int, list[int], list[int]]:
    """One streaming request: (start, [receive times], [mock send times]) in ns, for
    the content chunks: the events with ``marker`` (where a piece of text starts, in
    the protocol's field for it; a Responses stream's done and completed events carry
    the whole text in ``"text"`` fields, which are not chunks)."""
    started = time.perf_counter_ns()
    received: list[int] = []
    sent: list[int] = []
    skip = len(marker)  # the send time follows the marker (which ends with its "t")
    async for now, event in _events(port, request):
        at = event.find(marker)
        if at >= 0:
            stop = event.index(b" ", at)
            received.append(now)
            sent.append(int(event[at + skip : stop]))
        elif event.startswith(b"data: [DONE]") or b"response.completed" in event:
            break
    if len(received) != CHUNKS:
        raise ConnectionError(f"got {len(received)} of {CHUNKS} content chunks")
    return started, received, sent


async def _client_round(port: int, streams: int, route: str = "chat") -> dict[str, Any]:
    # route: "chat" (chat completions both sides), "responses" (a Responses client of a
    # chat-completions upstream: translated), "responses-pass" (Responses both sides),
    # "gemini" and "gemini-pass" (the same for a Gemini client; a Gemini stream ends with
    # its body, which the client reads to the end), "routed" and "routed-continue" (chat
    # completions to a model with two deployments).
    if route in ("gemini", "gemini-pass"):
        gemini_model = b"mockg" if route == "gemini-pass" else b"mock"
        path = b"/v1beta/models/%s:streamGenerateContent?alt=sse" % gemini_model
        payload: dict[str, Any] = {
            "contents": [{"role": "user", "parts": [{"text": "count to sixty-four"}]}]
        }
        marker = b'"text":"t'
    elif route in _CHAT_MODELS:
        path = b"/v1/chat/completions"
        payload = {
            "model": _CHAT_MODELS[route],
            "messages": [{"role": "user", "content": "count to sixty-four"}],
            "stream": True,
        }
        marker = b'"content":"t'
    else:
        path = b"/v1/responses"
        model = "mockr" if route == "responses-pass" else "mock"
        payload = {"model": model, "input": "count to sixty-four", "stream": True}
        marker = b'"delta":"t'
    body = json.dumps(payload).encode()
    request = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (path, port, len(body), body)
    )
    results = await asyncio.gather(
        *(_one_stream(port, request, marker) for _ in range(streams)), return_exceptions=True
    )
    ttft: list[float] = []
    gaps: list[float] = []
    latency: list[float] = []
    errors: list[str] = []
    for result in results:
        if isinstance(result, BaseException):
            errors.append(repr(result))
            continue
        started, received, sent = result
        ttft.append((received[0] - started) / 1e6)
        gaps.extend((b - a) / 1e6 for a, b in itertools.pairwise(received))
        latency.extend((r - s) / 1e6 for r, s in zip(received, sent, strict=True))
    return {"ttft": ttft, "gaps": gaps, "latency": latency, "errors": errors}


def _serve_rounds(run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """The client process: rounds on request, one JSON line in (the order), one out."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            result = await run(json.loads(line))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()

    asyncio.run(serve())


def _client_main() -> None:
    """Rounds of ``{"port", "streams", "route"}``."""
    _serve_rounds(lambda order: _client_round(order["port"], order["streams"], order["route"]))


def _run_role(
    role: str | None,
    port: int | None,
    mock_main: Callable[[int], Coroutine[Any, Any, None]],
    client_main: Callable[[], None],
) -> bool:
    """Run this process as the mock or the client if ``role`` says so (True then)."""
    if role == "mock":
        assert port is not None
        _use_uvloop()
        asyncio.run(mock_main(port))
        return True
    if role == "client":
        _use_uvloop()
        client_main()
        return True
    return False


def _pinning() -> tuple[int | None, int | None]:
    """(gateway core, load core) on a machine with two cores or more, this process
    moved to the load core; (None, None) elsewhere."""
    if not (hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2):
        return None, None
    os.sched_setaffinity(0, {LOAD_CORE})
    return GATEWAY_CORE, LOAD_CORE


def _start_mock(script: str, port: int, core: int | None) -> subprocess.Popen[str]:
    """``script --role mock`` on ``core``, once it says it is ready."""
    mock = subprocess.Popen(
        [sys.executable, script, "--role", "mock", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(core),
    )
    assert mock.stdout is not None and mock.stdout.readline().strip() == "ready"
    return mock


class _Client:
    """The client process (``script --role client`` on ``core``), one round per call."""

    def __init__(self, script: str, core: int | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, "--role", "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_pin(core),
        )

    def round(self, order: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(order) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise SystemExit("the client process died")
        result: dict[str, Any] = json.loads(line)
        return result


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """Terminate ``procs`` (the last started first), killing what does not exit."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_cmd(config: Path, port: int) -> list[str]:
    """``tokenwire serve`` with one worker on ``port``."""
    return [
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]


# --- coordinator ---------------------------------------------------------------------


def _pin(core: int | None) -> Any:
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(
                    b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode()
                )
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing answered on port {port} within {timeout:.0f} s")
        time.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["mock", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    parser.add_argument(
        "--routes",
        default="chat,responses,responses-pass,gemini,gemini-pass",
        help="comma-separated: chat (chat completions both sides), responses (a Responses "
        "client, translated to a chat-completions upstream), responses-pass (Responses "
        "both sides), gemini and gemini-pass (the same for a Gemini client), routed (chat, "
        "a model with two deployments, fallback, passed through) and routed-continue "
        "(the same with continue_on_failure: re-encoded); default: all but the routed ones",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the gateway of another tokenwire checkout (before/after)",
    )
    args = parser.parse_args()
    if _run_role(args.role, args.port, _mock_main, _client_main):
        return

    gateway_core, load_core = _pinning()
    pinned = gateway_core is not None
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    here = str(Path(__file__).resolve())
    mock_port, gateway_port, baseline_port = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tokenwire.toml"
        config.write_text(
            "[providers.mock]\n"
            'type = "openai"\n'
            f'base_url = "http://127.0.0.1:{mock_port}/v1"\n\n'
            "[models.mock]\n"
            'provider = "mock"\n\n'
        )
        routes = [r for r in args.routes.split(",") if r]
        unknown = set(routes) - set(_ROUTE_TITLES)
        if unknown:
            raise SystemExit(f"unknown routes: {', '.join(sorted(unknown))}")
        if "responses-pass" in routes:
            with config.open("a") as f:
                f.write(
                    "[providers.mockr]\n"
                    'type = "openai-responses"\n'
                    f'base_url = "http://127.0.0.1:{mock_port}/v1"\n\n'
                    '[models.mockr]\nprovider = "mockr"\n\n'
                )
        if "gemini-pass" in routes:
            with config.open("a") as f:
                f.write(
                    "[providers.mockg]\n"
                    'type = "gemini"\n'
                    f'base_url = "http://127.0.0.1:{mock_port}/v1beta"\n\n'
                    '[models.mockg]\nprovider = "mockg"\n\n'
                )
        if {"routed", "routed-continue"} & set(routes):
            # Two deployments of the same mock (a second provider), the first healthy.
            deployments = (
                'deployments = [ { provider = "mock", model = "mock" }, '
                '{ provider = "mock2", model = "mock" } ]\nstrategy = "fallback"\n'
            )
            with config.open("a") as f:
                f.write(
                    "[providers.mock2]\n"
                    'type = "openai"\n'
                    f'base_url = "http://127.0.0.1:{mock_port}/v1"\n\n'
                    f"[models.mockf]\n{deployments}\n"
                    f"[models.mockc]\n{deployments}continue_on_failure = true\n\n"
                )
        try:
            procs.append(_start_mock(here, mock_port, load_core))

            def start_gateway(port: int, src: str | None) -> list[str]:
                cmd = _serve_cmd(config, port)
                env = dict(os.environ)
                if src is not None:
                    env["PYTHONPATH"] = str(Path(src).resolve() / "src")
                proc = subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    text=True,
                    preexec_fn=_pin(gateway_core),
                    cwd=tmp,
                    env=env,
                )
                procs.append(proc)
                _wait_http(port, "/healthz")
                return cmd

            gateway_cmd = start_gateway(gateway_port, None)
            if args.baseline:
                start_gateway(baseline_port, args.baseline)
            _wait_http(gateway_port, "/healthz")
            client = _Client(here, load_core)
            procs.append(client.proc)

            def run_round(port: int, streams: int, route: str) -> dict[str, Any]:
                return client.round({"port": port, "streams": streams, "route": route})

            print(
                f"gateway: {' '.join(['tokenwire', *gateway_cmd[3:]])}\n"
                f"pinning: {'gateway on core 0; mock, client on core 1' if pinned else 'off'}; "
                f"mock: {CHUNKS} chunks {PACE * 1000:.0f} ms apart; "
                f"rounds per path: {', '.join(f'{k} streams x{v}' for k, v in rounds.items())}",
                flush=True,
            )
            targets = {"direct": mock_port, "gateway": gateway_port}
            if args.baseline:
                targets["baseline"] = baseline_port
                print(f"baseline: the gateway of {args.baseline}, interleaved", flush=True)
            names = list(targets)

            def direct_route(route: str) -> str:
                # What the upstream speaks: the direct path's client speaks it too.
                return route if route.endswith("-pass") else "chat"

            for route in routes:
                for streams in (10, 1):  # warm-up: imports, connection pools, caches
                    for name, port in targets.items():
                        run_round(port, streams, direct_route(route) if name == "direct" else route)
            collected: dict[tuple[str, int, str], dict[str, list[Any]]] = {}
            began = time.monotonic()
            for streams in LEVELS:
                for r in range(rounds[streams]):
                    # Rotating, routes and paths alike: nobody always first.
                    turn = r % len(routes)
                    for route in routes[turn:] + routes[:turn]:
                        shift = r % len(names)
                        order = names[shift:] + names[:shift]
                        for name in order:
                            wire = direct_route(route) if name == "direct" else route
                            result = run_round(targets[name], streams, wire)
                            bucket = collected.setdefault(
                                (route, streams, name),
                                {"ttft": [], "gaps": [], "latency": [], "errors": []},
                            )
                            for key, values in result.items():
                                bucket[key].extend(values)
                            time.sleep(0.05)
            elapsed = time.monotonic() - began
        finally:
            _stop(procs)
    for route in routes:
        print(f"\n=== route: {_ROUTE_TITLES[route]} ===")
        _report(collected, elapsed, route, "gateway")
        if route in _ROUTED and "chat" in routes:
            _versus_plain(collected, route, "gateway")
        if args.baseline:
            print(f"\n=== route: {route}; baseline: the gateway of {args.baseline} ===")
            _report(collected, elapsed, route, "baseline")
            if route in _ROUTED and "chat" in routes:
                _versus_plain(collected, route, "baseline")


_ROUTE_TITLES = {
    "chat": "chat completions, client and upstream (pass-through)",
    "responses": "a Responses client, a chat-completions upstream (translated)",
    "responses-pass": "Responses, client and upstream (pass-through)",
    "gemini": "a Gemini client, a chat-completions upstream (translated)",
    "gemini-pass": "Gemini, client and upstream (pass-through)",
    "routed": "chat completions, a model with two deployments, fallback (pass-through)",
    "routed-continue": "chat completions, two deployments, continue_on_failure (re-encoded)",
}
# The chat-completions client's routes and the model each asks for.
_CHAT_MODELS = {"chat": "mock", "routed": "mockf", "routed-continue": "mockc"}
_ROUTED = ("routed", "routed-continue")


def _report(
    collected: dict[tuple[str, int, str], dict[str, list[Any]]],
    elapsed: float,
    route: str,
    name: str,
) -> None:
    print(f"\nmeasured in {elapsed:.0f} s; times in ms; added = gateway - direct\n")
    header = f"{'streams':>7}  {'metric':<16}{'direct':>9}{'gateway':>9}{'added':>9}   samples"
    print(header)
    print("-" * len(header))
    summary: dict[tuple[int, str], float] = {}
    for streams in LEVELS:
        direct = collected[(route, streams, "direct")]
        gateway = collected[(route, streams, name)]
        rows = [
            ("TTFT p50", "ttft", 0.50),
            ("TTFT p99", "ttft", 0.99),
            ("gap p50", "gaps", 0.50),
            ("gap p99", "gaps", 0.99),
            ("chunk lat. p50", "latency", 0.50),
            ("chunk lat. p99", "latency", 0.99),
        ]
        for label, key, q in rows:
            d = _percentile(direct[key], q)
            g = _percentile(gateway[key], q)
            summary[(streams, label)] = g - d
            print(
                f"{streams:>7}  {label:<16}{d:>9.2f}{g:>9.2f}{g - d:>+9.2f}"
                f"   {len(direct[key])}/{len(gateway[key])}"
            )
        bunched_d = _share_below(direct["gaps"], BUNCH_MS)
        bunched_g = _share_below(gateway["gaps"], BUNCH_MS)
        summary[(streams, "bunched")] = bunched_g - bunched_d
        print(f"{streams:>7}  {'gaps < 5 ms':<16}{bunched_d:>8.2%}{bunched_g:>9.2%}")
        errors = direct["errors"] + gateway["errors"]
        if errors:
            print(f"{streams:>7}  ERRORS: {len(errors)} streams failed, e.g. {errors[0]}")
        print()
    checks = [
        ("1 stream: added TTFT p50 < 1 ms", summary[(1, "TTFT p50")], 1.0),
        ("100 streams: added TTFT p99 < 10 ms", summary[(100, "TTFT p99")], 10.0),
        ("100 streams: added gap p99 < 0.5 ms", summary[(100, "gap p99")], 0.5),
    ]
    print("targets:")
    for label, value, bound in checks:
        print(f"  {label:<40} {value:+8.2f} ms  {'ok' if value < bound else 'MISSED'}")
    bunched = summary[(100, "bunched")]
    print(
        f"  {'100 streams: no chunk bunching':<40} {bunched:+8.2%} more gaps < 5 ms  "
        f"{'ok' if bunched < 0.01 else 'MISSED'}"
    )


def _versus_plain(
    collected: dict[tuple[str, int, str], dict[str, list[Any]]], route: str, name: str
) -> None:
    """A routed route against the plain ``chat`` route of the same rounds: the gateway's
    figures minus chat's, and for scale the same difference of the direct path (the
    same request on both routes' rounds: what the run's noise alone makes of it)."""
    print(f"\nvs plain route (chat), same rounds: {route} - chat, ms\n")
    header = f"{'streams':>7}  {'metric':<16}{'gateway':>9}{'direct (noise)':>16}"
    print(header)
    print("-" * len(header))
    rows = [
        ("TTFT p50", "ttft", 0.50),
        ("TTFT p99", "ttft", 0.99),
        ("gap p99", "gaps", 0.99),
        ("chunk lat. p50", "latency", 0.50),
        ("chunk lat. p99", "latency", 0.99),
    ]
    for streams in LEVELS:
        for label, key, q in rows:
            diffs = [
                _percentile(collected[(route, streams, who)][key], q)
                - _percentile(collected[("chat", streams, who)][key], q)
                for who in (name, "direct")
            ]
            print(f"{streams:>7}  {label:<16}{diffs[0]:>+9.2f}{diffs[1]:>+16.2f}")
        print()
    parts = []
    for streams, label, key, q in (
        (1, "TTFT p50", "ttft", 0.50),
        (100, "TTFT p99", "ttft", 0.99),
        (100, "gap p99", "gaps", 0.99),
    ):
        g, d = (
            _percentile(collected[(route, streams, who)][key], q)
            - _percentile(collected[("chat", streams, who)][key], q)
            for who in (name, "direct")
        )
        level = "1 stream" if streams == 1 else f"{streams} streams"
        parts.append(f"{level} {label} {g:+.2f} ms (direct {d:+.2f})")
    print("vs plain route: " + "; ".join(parts))


def _share_below(values: list[float], bound: float) -> float:
    return sum(1 for v in values if v < bound) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
