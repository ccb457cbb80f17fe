"""Gateway overhead benchmark: a paced mock upstream called directly and through
``tokenwire serve``, interleaved, in one run.

Three processes besides this one (which only coordinates and sleeps meanwhile):

- **mock upstream** (raw asyncio HTTP/1.1 server, keep-alive, chunked): answers
  ``POST /v1/chat/completions`` with the role chunk at once, then 64 OpenAI content
  chunks 20 ms apart (on an absolute schedule), the finish chunk, the usage chunk when
  asked for, and ``data: [DONE]``. Each content chunk's text carries the mock's
  send time (``t<perf_counter_ns> ``), so the client can also measure each chunk's
  delivery latency.
- **gateway**: ``tokenwire serve --workers 1`` (``--workers``) with a temporary
  ``tokenwire.toml`` that routes the model ``mock`` to the mock (``[providers.mock]
  type = "openai"``).
- **client** (raw asyncio streams, no HTTP library): opens N connections at once,
  POSTs streaming requests, and timestamps every content chunk as its bytes arrive.

The gateway is pinned to core 0, mock, client and this process to core 1 (when the
machine has two cores; ``os.sched_setaffinity``; with a core to spare, the mock and the
client get one each). Rounds alternate between direct and through-gateway (the order
flips every round), at 1, 10 and 100 streams started together (``--levels``), after a
warm-up round of each; at each level the routes take turns round by round (in a
rotating order), so that routes are measured in the same conditions as each other, not
minutes apart; after a server's round, the next waits until that server is idle.
Reported, per level: time to first token (first content chunk, from the start of the
connection), inter-chunk gap, chunk delivery latency (receive time minus the mock's
send time), p50 and p99, direct, through the gateway and the difference ("added"), the
bunching check: the share of gaps under 5 ms (the mock's are 20 ms; a gateway that
buffers delivers chunks in bursts), failed streams, the gateway's resident memory per
open stream, and how busy the mock and the client were (their core's CPU time over a
round's duration, the largest: near 100%, they are what limits the figures, and the
direct path bunches too).

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
shorter, noisier run). Linux (``sched_setaffinity``, ``/proc``); elsewhere it runs unpinned
and without memory figures.

Before/after a change: ``--baseline DIR`` also runs a gateway from another checkout
of tokenwire (``DIR/src`` first on its ``PYTHONPATH``, e.g. a ``git worktree`` of the
previous commit), pinned like the other and interleaved in the same rounds, so both
are measured against the same direct figures. The two gateways share the configuration
file, so routes the other checkout cannot configure (``routed``, ``routed-continue``
before routing) leave it unable to start.

Load levels (``--levels``, default ``1,10,100``): any list of stream counts, e.g.
``--levels 500`` or ``--levels 1,10,100,500,1000``; 500 streams get 4 rounds and 1,000
get 3 (``--quick``: 1 each). The file descriptor limit is raised to its hard limit
(inherited by every process started), the mock listens with a backlog of 4096, and the
configuration sets ``[gateway] max_connections`` (which also bounds each provider's
upstream connection pool) well above the largest level, so that nothing but the
gateway itself limits the streams. Every level also reports the gateway's memory: the
resident set of its process tree (the workers included) is sampled every 10 ms during
each round; "per open stream" is the largest sample at that level minus the resident
set of the idle gateway after the warm-up, divided by the number of streams (a round's
own growth is shown beside it, but understates: memory an earlier round freed stays
with the process and is reused). Targets at 500 streams, one worker: added TTFT p99
< 20 ms, added gap p99 < 2 ms, no bunching, no failed stream, and less than 40 KiB per
open stream.

Workers (``--workers N``, default 1): ``tokenwire serve --workers N``, pinned to cores
0 to N-1 when the machine has a core left for the mock and the client, else not pinned
(two cores, two workers: they may use both, the mock and the client stay on core 1).
The target is at 1,000 streams: added TTFT p99 < 20 ms, added gap p99 < 2 ms, no
bunching, no failed stream (``--workers 2 --levels 1,10,100,1000``).

The floor (``--floor``): ``_floor_proxy.py``, a bare-ASGI proxy on the same uvicorn
settings that POSTs the body upstream with aiohttp and writes the bytes back as they
arrive (no validation, deadlines, decoding or metrics), pinned like the gateway, on the
chat route: what any gateway on this server and HTTP client costs at least. Every
server's report also prints its CPU per stream (its process tree, median of rounds).

granian (``--granian``): the same gateway (``tokenwire.gateway.app:create_app``) served by
granian instead of uvicorn (``pip install granian``; not a tokenwire dependency),
pinned like the gateway and interleaved, with the number of tracebacks its workers
logged.

LiteLLM (``--litellm``): a third target in the same rounds, the LiteLLM proxy with one
worker (``litellm --num_workers 1``), pinned like a one-worker gateway (core 0),
routing the model ``mock`` to the same mock as an OpenAI-compatible provider; chat
completions on both sides, so it runs on the ``chat`` route only, and at the levels up
to ``--litellm-max-streams`` (default 100: 1, 10 and 100 streams), with an "added"
table of its own. It runs from a virtualenv of its own, ``--litellm-venv DIR`` (default
``.venv-litellm`` in the repository root), made with ``python -m venv`` and the pinned
``litellm[proxy]`` (see ``_litellm.py``) the first time. Its telemetry is off and it
reads its bundled price list instead of downloading one; it has no master key, as the
gateway has no API keys.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import _litellm
from _proc import cpu_seconds

CHUNKS = 64
PACE = 0.020
BUNCH_MS = 5.0
LEVELS = (1, 10, 100)
ROUNDS = {1: 20, 10: 8, 100: 6, 500: 4, 1000: 3}
QUICK_ROUNDS = {1: 6, 10: 3, 100: 2, 500: 1, 1000: 1}
STREAM_TIMEOUT = 120.0  # seconds: a stream stuck this long is a failure, not a hang
RSS_INTERVAL = 0.010  # seconds between two samples of a server's resident set

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
    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=4096)
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
        *(
            asyncio.wait_for(_one_stream(port, request, marker), STREAM_TIMEOUT)
            for _ in range(streams)
        ),
        return_exceptions=True,
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


def _serve_cmd(config: Path, port: int, workers: int = 1) -> list[str]:
    """``tokenwire serve`` with ``workers`` workers on ``port``."""
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
        str(workers),
        "--log-level",
        "warning",
    ]


def _granian_cmd(port: int, workers: int) -> list[str]:
    """The gateway on granian (its fastest settings for this: one single-threaded
    runtime per worker, uvloop), one worker unless told."""
    exe = Path(sys.executable).with_name("granian")
    if not exe.exists():
        raise SystemExit("--granian: granian is not installed (pip install granian)")
    return [
        str(exe),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--runtime-mode",
        "st",
        "--no-ws",
        "--backlog",
        "4096",
        "--log-level",
        "warning",
        "tokenwire.gateway.app:create_app",
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


class _Placement:
    """Which cores the processes run on (Linux, two cores or more; else unpinned). Two
    cores: a one-worker gateway on core 0, the mock, the client and this process on
    core 1; more workers than that leaves room for: the gateway on every core, the rest
    still on core 1. With a core to spare, the gateway gets one core per worker and the
    mock and the client one each; LiteLLM (one worker) shares the gateway's first."""

    def __init__(self, workers: int) -> None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
        self.gateway: set[int] | None = None
        self.mock: int | None = None
        self.client: int | None = None
        self.litellm: int | None = None
        self.workers = workers
        if len(cores) < 2:
            return
        if len(cores) >= workers + 2:
            self.gateway = set(cores[:workers])
            self.mock, self.client = cores[workers], cores[workers + 1]
        elif len(cores) == workers + 1:
            self.gateway = set(cores[:workers])
            self.mock = self.client = cores[-1]
        else:
            self.gateway = set(cores)
            self.mock = self.client = cores[-1]
        self.litellm = cores[0]
        os.sched_setaffinity(0, {self.client})  # this process only waits: with the client

    def describe(self, litellm: bool) -> str:
        if self.gateway is None:
            return "off"
        cores = ",".join(map(str, sorted(self.gateway)))
        if self.mock in self.gateway:
            gateway = f"gateway ({self.workers} workers) not pinned, on every core"
        else:
            plural = "s" if len(self.gateway) > 1 else ""
            gateway = f"gateway on core{plural} {cores}"
        if self.mock == self.client:
            load = f"mock, client on core {self.mock}"
        else:
            load = f"mock on core {self.mock}, client on core {self.client}"
        return f"{gateway}; {load}" + (f"; litellm on core {self.litellm}" if litellm else "")


def _affinity(cores: set[int] | None) -> Any:
    """A ``preexec_fn`` moving the child onto ``cores`` (None: as inherited)."""
    if cores is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin


def _raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit, for it and every process
    it starts (they inherit it; a common default, 1,024, is too few for 1,000 streams),
    and return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's worker processes), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        tree.append(parent)
        todo.extend(children.get(parent, ()))
    return tree


def _rss(pids: list[int]) -> int:
    """The resident set of ``pids`` together, in bytes (0 without ``/proc``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class _RssPeak:
    """The largest resident set of ``pids`` from now until :meth:`stop`, sampled every
    :data:`RSS_INTERVAL` by a thread (the coordinator only waits for the client
    meanwhile)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = _rss(pids)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(RSS_INTERVAL):
            self.peak = max(self.peak, _rss(self.pids))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, _rss(self.pids))


def _cpu(pids: list[int]) -> float:
    """CPU seconds ``pids`` have used (those still there; NaN without ``/proc``)."""
    if not os.path.isdir("/proc"):
        return float("nan")
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:  # gone
            continue
    return total


def _settle(pids: list[int], window: float = 0.02, limit: float = 2.0) -> None:
    """Wait (at most ``limit`` s) until ``pids`` are about idle over ``window`` s: what
    a server still does after its round's streams ended (closing connections, its
    records, LiteLLM's callbacks) would otherwise fall into the next round, on the core
    the other server shares."""
    deadline = time.monotonic() + limit
    last = _cpu(pids)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = _cpu(pids)
        if not now - last >= window * 0.05:  # about idle (or no /proc: no waiting)
            return
        last = now


def _levels(text: str) -> tuple[int, ...]:
    """``--levels``, in increasing order: a level's memory peak then never includes what
    a larger level left allocated."""
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--levels: comma-separated numbers of streams, not {text!r}") from None
    if not levels or levels[0] < 1:
        raise SystemExit("--levels: at least one number of streams, each 1 or more")
    return tuple(levels)


def _rounds(streams: int, quick: bool) -> int:
    """Rounds at a level: the table's, else the next larger level's (or the largest's)."""
    table = QUICK_ROUNDS if quick else ROUNDS
    larger = [n for n in table if n >= streams]
    return table[min(larger)] if larger else table[max(table)]


def _write_config(config: Path, mock_port: int, routes: list[str], connections: int) -> None:
    """The gateway's ``tokenwire.toml``: the mock as the providers ``routes`` need, and
    ``max_connections`` (client connections per worker and each provider's upstream
    pool) at ``connections``, so that it does not cap a level."""
    config.write_text(
        f"[gateway]\nmax_connections = {connections}\n\n"
        "[providers.mock]\n"
        'type = "openai"\n'
        f'base_url = "http://127.0.0.1:{mock_port}/v1"\n\n'
        "[models.mock]\n"
        'provider = "mock"\n\n'
    )
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


def _start_litellm(
    litellm: Path,
    tmp: str,
    mock_port: int,
    port: int,
    core: int | None,
    connections: int,
    procs: list[subprocess.Popen[str]],
) -> subprocess.Popen[str]:
    """The LiteLLM proxy on ``port`` (added to ``procs`` at once), once it answers."""
    config = Path(tmp) / "litellm.yaml"
    _litellm.write_config(config, mock_port)
    log = Path(tmp) / "litellm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            _litellm.command(litellm, config, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_pin(core),
            cwd=tmp,
            env=_litellm.environment(connections),
        )
    procs.append(proc)
    deadline = time.monotonic() + 180  # it imports a lot: tens of seconds on a busy machine
    while True:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise SystemExit(f"the LiteLLM proxy exited ({proc.returncode}):\n{tail}")
        try:
            _wait_http(port, "/health/liveliness", timeout=1.0)
            return proc
        except SystemExit:
            if time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise SystemExit(
                    f"the LiteLLM proxy did not answer within 180 s:\n{tail}"
                ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["mock", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds (noisier; one at 500 streams or more)"
    )
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
        "--levels",
        default=",".join(map(str, LEVELS)),
        help="comma-separated numbers of streams started together, e.g. 1,10,100,500,1000 "
        "(default: 1,10,100)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway worker processes (default 1, pinned to core 0; more than the machine "
        "has cores to spare for: not pinned)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the gateway of another tokenwire checkout (before/after)",
    )
    parser.add_argument(
        "--granian",
        action="store_true",
        help="also measure the same gateway served by granian (pip install granian) "
        "instead of uvicorn, interleaved",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor of a Python proxy (_floor_proxy.py: bare ASGI on "
        "uvicorn, aiohttp to the upstream, bytes passed on), on the chat route",
    )
    parser.add_argument(
        "--litellm",
        action="store_true",
        help="also measure the LiteLLM proxy (one worker), on the chat route",
    )
    parser.add_argument(
        "--litellm-venv",
        metavar="DIR",
        type=Path,
        default=_litellm.DEFAULT_VENV,
        help=f"LiteLLM's virtualenv, made with litellm[proxy]=={_litellm.VERSION} if missing "
        "(default: .venv-litellm in the repository root)",
    )
    parser.add_argument(
        "--litellm-max-streams",
        type=int,
        default=100,
        metavar="N",
        help="the levels with LiteLLM: those up to N streams (default 100)",
    )
    args = parser.parse_args()
    if _run_role(args.role, args.port, _mock_main, _client_main):
        return

    levels = _levels(args.levels)
    if args.workers < 1:
        raise SystemExit("--workers: 1 or more")
    routes = [r for r in args.routes.split(",") if r]
    unknown = set(routes) - set(_ROUTE_TITLES)
    if unknown:
        raise SystemExit(f"unknown routes: {', '.join(sorted(unknown))}")
    litellm_levels = tuple(n for n in levels if n <= args.litellm_max_streams)
    litellm_exe: Path | None = None
    litellm_version = ""
    if args.litellm:
        if "chat" not in routes:
            raise SystemExit("--litellm compares chat completions: --routes must include chat")
        if not litellm_levels:
            raise SystemExit(f"--litellm: no level of at most {args.litellm_max_streams} streams")
        venv = args.litellm_venv.resolve()
        litellm_exe = _litellm.ensure_venv(venv)
        litellm_version = _litellm.installed_version(venv)

    fd_limit = _raise_fd_limit()
    place = _Placement(args.workers)
    rounds = {n: _rounds(n, args.quick) for n in levels}
    servers = 1 + bool(args.baseline) + bool(args.litellm) + bool(args.floor) + bool(args.granian)
    # The mock holds the most: the direct streams, and each server's upstream pool.
    fd_needed = levels[-1] * (servers + 1) + 256
    connections = max(4096, 4 * levels[-1])
    here = str(Path(__file__).resolve())
    ports = {
        "direct": _free_port(),
        "gateway": _free_port(),
        "baseline": _free_port(),
        "litellm": _free_port(),
        "floor": _free_port(),
        "granian": _free_port(),
    }
    procs: list[subprocess.Popen[str]] = []
    serving: dict[str, subprocess.Popen[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tokenwire.toml"
        _write_config(config, ports["direct"], routes, connections)
        try:
            mock = _start_mock(here, ports["direct"], place.mock)
            procs.append(mock)

            def start_gateway(name: str, src: str | None) -> list[str]:
                cmd = _serve_cmd(config, ports[name], args.workers)
                env = dict(os.environ)
                if src is not None:
                    env["PYTHONPATH"] = str(Path(src).resolve() / "src")
                proc = subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    text=True,
                    preexec_fn=_affinity(place.gateway),
                    cwd=tmp,
                    env=env,
                )
                procs.append(proc)
                serving[name] = proc
                _wait_http(ports[name], "/healthz")
                return cmd

            gateway_cmd = start_gateway("gateway", None)
            if args.baseline:
                start_gateway("baseline", args.baseline)
            granian_log = Path(tmp) / "granian.log"
            if args.granian:
                # The gateway's app factory, its configuration from the environment.
                served = subprocess.Popen(
                    _granian_cmd(ports["granian"], args.workers),
                    stdout=subprocess.DEVNULL,
                    stderr=granian_log.open("w"),
                    text=True,
                    preexec_fn=_affinity(place.gateway),
                    cwd=tmp,
                    env={**os.environ, "TOKENWIRE_CONFIG": str(config)},
                )
                procs.append(served)
                serving["granian"] = served
                _wait_http(ports["granian"], "/healthz")
            if args.floor:
                floor = subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(here).with_name("_floor_proxy.py")),
                        str(ports["floor"]),
                        f"http://127.0.0.1:{ports['direct']}/v1",
                        str(args.workers),
                    ],
                    stdout=subprocess.DEVNULL,
                    text=True,
                    preexec_fn=_affinity(place.gateway),
                )
                procs.append(floor)
                serving["floor"] = floor
                _wait_http(ports["floor"], "/healthz")
            if litellm_exe is not None:
                serving["litellm"] = _start_litellm(
                    litellm_exe,
                    tmp,
                    ports["direct"],
                    ports["litellm"],
                    place.litellm,
                    connections,
                    procs,
                )
            _wait_http(ports["gateway"], "/healthz")
            client = _Client(here, place.client)
            procs.append(client.proc)

            def direct_route(route: str) -> str:
                # What the upstream speaks: the direct path's client speaks it too.
                return route if route.endswith("-pass") else "chat"

            # The load processes by core (one group when they share one).
            load = (
                [[mock.pid, client.proc.pid]]
                if place.mock == place.client
                else [[mock.pid], [client.proc.pid]]
            )

            trees: dict[str, list[int]] = {}  # each server's processes, once all are up

            def run_round(name: str, streams: int, route: str) -> dict[str, Any]:
                wire = direct_route(route) if name == "direct" else route
                order = {"port": ports[name], "streams": streams, "route": wire}
                # The server's memory while the streams are open (its workers' too).
                pids = trees.get(name) or (_tree(serving[name].pid) if name in serving else [])
                before = _rss(pids)
                sampler = _RssPeak(pids) if pids else None
                cpu = [_cpu(group) for group in load]
                served = _cpu(pids) if pids else float("nan")
                began = time.monotonic()
                result = client.round(order)
                # How busy the load's busiest core was: near 100%, the load is the limit.
                wall = time.monotonic() - began
                result["load"] = [max((_cpu(g) - c) / wall for g, c in zip(load, cpu, strict=True))]
                if sampler is not None:
                    result["rss"] = [[before, sampler.stop()]]
                    # The server's CPU per stream (its workers' too), for the floor's scale.
                    result["cpu"] = [(_cpu(pids) - served) / streams]
                return result

            def targets(route: str, streams: int) -> list[str]:
                names = ["direct", "gateway"]
                if args.baseline:
                    names.append("baseline")
                if args.litellm and route == "chat" and streams <= args.litellm_max_streams:
                    names.append("litellm")
                if args.floor and route == "chat":
                    names.append("floor")
                if args.granian:
                    names.append("granian")
                return names

            where = place.describe(args.litellm)
            print(
                f"gateway: {' '.join(['tokenwire', *gateway_cmd[3:]])}\n"
                f"pinning: {where}; "
                f"mock: {CHUNKS} chunks {PACE * 1000:.0f} ms apart; "
                f"rounds per path: {', '.join(f'{k} streams x{v}' for k, v in rounds.items())}\n"
                f"open files: {fd_limit} per process; [gateway] max_connections = {connections}",
                flush=True,
            )
            if fd_limit < fd_needed:
                print(
                    f"WARNING: {levels[-1]} streams may need {fd_needed} open files in one "
                    f"process, more than the limit ({fd_limit}): raise the hard limit "
                    "(ulimit -Hn) if streams fail",
                    flush=True,
                )
            if args.baseline:
                print(f"baseline: the gateway of {args.baseline}, interleaved", flush=True)
            if args.litellm:
                pin = (
                    f" (pinned: {_litellm.VERSION})" if litellm_version != _litellm.VERSION else ""
                )
                print(
                    f"litellm: LiteLLM {litellm_version}{pin} proxy, litellm --num_workers 1, "
                    f"from {args.litellm_venv}; chat route only, at "
                    f"{', '.join(map(str, litellm_levels))} streams; interleaved",
                    flush=True,
                )

            for route in routes:
                for streams in (10, 1):  # warm-up: imports, connection pools, caches
                    for name in targets(route, 1):
                        run_round(name, streams, route)
            trees.update((name, _tree(proc.pid)) for name, proc in serving.items())
            # Each server's memory, idle but warmed up: what its open streams add to.
            idle = {name: _rss(tree) for name, tree in trees.items()}
            collected: dict[tuple[str, int, str], dict[str, list[Any]]] = {}
            began = time.monotonic()
            for streams in levels:
                for r in range(rounds[streams]):
                    # Rotating, routes and paths alike: nobody always first.
                    turn = r % len(routes)
                    for route in routes[turn:] + routes[:turn]:
                        names = targets(route, streams)
                        shift = r % len(names)
                        for name in names[shift:] + names[:shift]:
                            result = run_round(name, streams, route)
                            bucket = collected.setdefault(
                                (route, streams, name),
                                {
                                    k: []
                                    for k in (
                                        "ttft",
                                        "gaps",
                                        "latency",
                                        "errors",
                                        "rss",
                                        "load",
                                        "cpu",
                                    )
                                },
                            )
                            for key, values in result.items():
                                bucket[key].extend(values)
                            if name in trees:
                                _settle(trees[name])
                            time.sleep(0.05)
            elapsed = time.monotonic() - began
            # What granian's workers logged (tracebacks: errors in the app under it).
            granian_errors = granian_log.read_text().count("Traceback") if args.granian else 0
        finally:
            _stop(procs)
    tail = "one worker" if args.workers == 1 else f"--workers {args.workers}"
    for route in routes:
        print(f"\n=== route: {_ROUTE_TITLES[route]} ===")
        _report(collected, elapsed, route, "gateway", levels, idle["gateway"], args.workers)
        if route in _ROUTED and "chat" in routes:
            _versus_plain(collected, route, "gateway", levels)
        if args.baseline:
            print(f"\n=== route: {route}; baseline: the gateway of {args.baseline} ===")
            _report(collected, elapsed, route, "baseline", levels, idle["baseline"], args.workers)
            if route in _ROUTED and "chat" in routes:
                _versus_plain(collected, route, "baseline", levels)
        if args.granian:
            print(
                f"\n=== route: {route}; granian: the same gateway served by granian ({tail}); "
                f"{granian_errors} tracebacks in its log ==="
            )
            _report(collected, elapsed, route, "granian", levels, idle["granian"], args.workers)
        if args.floor and route == "chat":
            print(f"\n=== route: {route}; floor: a bare-ASGI aiohttp proxy ({tail}) ===")
            _report(collected, elapsed, route, "floor", levels, idle["floor"], None)
        if args.litellm and route == "chat":
            print(
                f"\n=== route: {route}; litellm: the LiteLLM {litellm_version} proxy, one worker "
                f"(the gateway: {tail}) ==="
            )
            _report(collected, elapsed, route, "litellm", litellm_levels, idle["litellm"], None)


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
    levels: tuple[int, ...],
    idle: int,
    workers: int | None,
) -> None:
    """``name``'s table against direct at ``levels``, its memory per open stream (over
    ``idle``, its resident set after the warm-up), and the targets for a gateway with
    ``workers`` workers (None: none, it is not tokenwire)."""
    print(f"\nmeasured in {elapsed:.0f} s; times in ms; added = {name} - direct\n")
    header = f"{'streams':>7}  {'metric':<16}{'direct':>9}{name:>9}{'added':>9}   samples"
    print(header)
    print("-" * len(header))
    summary: dict[tuple[int, str], float] = {}
    for streams in levels:
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
        load_d, load_g = (max(who["load"], default=float("nan")) for who in (direct, gateway))
        print(
            f"{streams:>7}  {'load CPU, max':<16}{load_d:>8.0%}{load_g:>9.0%}   mock, client's core"
        )
        if bunched_d > 0.01:
            print(
                f"{streams:>7}  NOTE: the direct path bunches too: the mock and the client "
                "cannot keep up at this level (load CPU), so its figures are theirs as much "
                f"as the {name}'s"
            )
        errors = direct["errors"] + gateway["errors"]
        summary[(streams, "errors")] = len(errors)
        if errors:
            print(f"{streams:>7}  ERRORS: {len(errors)} streams failed, e.g. {errors[0]}")
        summary[(streams, "rss")] = _memory(streams, gateway["rss"], idle)
        if gateway.get("cpu"):
            cpu = sorted(gateway["cpu"])[len(gateway["cpu"]) // 2] * 1000
            print(
                f"{streams:>7}  {'CPU per stream':<16}{cpu:>9.2f} ms ({name}'s, median of rounds)"
            )
        print()
    if workers is not None:
        _targets(summary, levels, workers)


def _memory(streams: int, samples: list[list[int]], idle: int) -> float:
    """Print a level's memory line (``samples``: each round's resident set before it
    and its peak, bytes); return the resident set per open stream, KiB."""
    if not samples or not idle:
        print(f"{streams:>7}  {'RSS per stream':<16}{'n/a':>9}")
        return float("nan")
    peak = max(p for _, p in samples)
    per_stream = (peak - idle) / streams / 1024
    own = max(p - b for b, p in samples) / streams / 1024
    print(
        f"{streams:>7}  {'RSS per stream':<16}{per_stream:>9.1f} KiB (idle {idle / 2**20:.1f} "
        f"MiB, peak {peak / 2**20:.1f} MiB; one round's own growth at most {own:.1f} KiB)"
    )
    return per_stream


def _targets(summary: dict[tuple[int, str], float], levels: tuple[int, ...], workers: int) -> None:
    """The targets that the levels run have, for a gateway with ``workers`` workers: at 1
    and 100 streams, and the high-load one (500 streams with one worker, 1,000 with more)."""
    checks: list[tuple[str, str, bool]] = []
    who = "" if workers == 1 else f" (--workers {workers})"

    def added(streams: int, where: str, label: str, bound: float) -> None:
        value = summary[(streams, label)]
        checks.append(
            (f"{where}: added {label} < {bound:g} ms", f"{value:+8.2f} ms", value < bound)
        )

    def unbunched(streams: int, where: str) -> None:
        bunched = summary[(streams, "bunched")]
        checks.append(
            (f"{where}: no chunk bunching", f"{bunched:+8.2%} more gaps < 5 ms", bunched < 0.01)
        )

    if 1 in levels:
        added(1, f"1 stream{who}", "TTFT p50", 1.0)
    if 100 in levels:
        added(100, f"100 streams{who}", "TTFT p99", 10.0)
        added(100, f"100 streams{who}", "gap p99", 0.5)
        unbunched(100, f"100 streams{who}")
    high = 500 if workers == 1 else 1000
    if high in levels:
        where = f"{high} streams{' (one worker)' if workers == 1 else who}"
        added(high, where, "TTFT p99", 20.0)
        added(high, where, "gap p99", 2.0)
        unbunched(high, where)
        failed = int(summary[(high, "errors")])
        checks.append((f"{where}: no failures", f"{failed:>8d} failed", failed == 0))
        if workers == 1:
            kib = summary[(high, "rss")]
            checks.append((f"{where}: RSS per open stream < 40 KiB", f"{kib:8.1f} KiB", kib < 40))
    print("targets:")
    if not checks:
        print("  none at these levels (they are at 1, 100 and, with one worker, 500 streams;")
        print("  with more workers, 1000 streams)")
    for label, value, ok in checks:
        print(f"  {label:<52} {value}  {'ok' if ok else 'MISSED'}")


def _versus_plain(
    collected: dict[tuple[str, int, str], dict[str, list[Any]]],
    route: str,
    name: str,
    levels: tuple[int, ...],
) -> None:
    """A routed route against the plain ``chat`` route of the same rounds: the gateway's
    figures minus chat's, and for scale the same difference of the direct path (the
    same request on both routes' rounds: what the run's noise alone makes of it)."""
    print(f"\nvs plain route (chat), same rounds: {route} - chat, ms\n")
    header = f"{'streams':>7}  {'metric':<16}{name:>9}{'direct (noise)':>16}"
    print(header)
    print("-" * len(header))
    rows = [
        ("TTFT p50", "ttft", 0.50),
        ("TTFT p99", "ttft", 0.99),
        ("gap p99", "gaps", 0.99),
        ("chunk lat. p50", "latency", 0.50),
        ("chunk lat. p99", "latency", 0.99),
    ]
    for streams in levels:
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
        if streams not in levels:
            continue
        g, d = (
            _percentile(collected[(route, streams, who)][key], q)
            - _percentile(collected[("chat", streams, who)][key], q)
            for who in (name, "direct")
        )
        level = "1 stream" if streams == 1 else f"{streams} streams"
        parts.append(f"{level} {label} {g:+.2f} ms (direct {d:+.2f})")
    if parts:
        print("vs plain route: " + "; ".join(parts))


def _share_below(values: list[float], bound: float) -> float:
    return sum(1 for v in values if v < bound) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
