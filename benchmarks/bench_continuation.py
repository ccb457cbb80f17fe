"""Continuation benchmark: how long a client waits when its upstream dies mid-reply
and ``tokenwire serve`` continues the reply on another deployment, against what a fresh
direct request costs, in one run.

Three processes besides this one (which only coordinates and sleeps meanwhile):

- **mock upstream** (raw asyncio HTTP/1.1, keep-alive, chunked; OpenAI chat
  completions): a reply is the role chunk at once, then 20 numbered content chunks
  (``"w0 "``, ``"w1 "``, ...) 20 ms apart on an absolute schedule, the finish chunk,
  the usage chunk when asked for, and ``data: [DONE]``. For the model ``cut`` it sends
  the first 10 content chunks and closes the connection, without the finish chunk,
  ``[DONE]`` or the last HTTP chunk (an upstream dying mid-reply). A request whose last
  message is the assistant's with ``continue_final_message: true`` (vLLM's option) is
  continued where that text ends: only the rest of the reply, the first piece at once
  (with the role chunk), the others 20 ms apart; a text that is not a start of the
  reply gets a 400.
- **gateway**: ``tokenwire serve --workers 1`` with a route ``continued`` of two
  deployments of the mock, ``cut`` first (a provider without ``prefill``) and ``ok``
  second (``prefill = { continue_final_message = true, add_generation_prompt = false }``),
  ``strategy = "fallback"``, ``continue_on_failure = true`` and ``cooldown = 0`` (the
  cut deployment stays first: every request is cut and continued); and a plain route
  ``ok`` to the second deployment's provider.
- **client** (raw asyncio streams, no HTTP library): opens N connections at once,
  POSTs streaming requests, and timestamps every content chunk as its bytes arrive.

Measured, at 1, 10 and 50 streams started together (so their cuts, and their
continuations, come together), in rounds that rotate (a different path first every
round) between:

- **continued** (cut to continued token): through the gateway's ``continued`` route,
  from the client's receipt of the last chunk before the cut to its receipt of the
  first continued chunk (the gateway sees the cut, asks the next deployment to
  continue, relays its first piece);
- **direct** (fresh direct request): the baseline a client pays without the gateway's
  continuation, i.e. when it reconnects itself: a new connection to the mock, the
  continuation request (the text so far as the final assistant message, the one the
  gateway sends, with ``continue_final_message``) and its first content chunk;
- **relayed**: the same fresh request through the gateway's plain route ``ok`` (the
  gateway passes the extra fields on), i.e. a client behind the gateway reconnecting
  itself; the difference from **continued** is what continuing costs beyond the
  gateway's ordinary per-request work (which ``bench_gateway.py`` measures).

p50 and p99 of each, the differences continued - direct and continued - relayed and
the ratio continued / direct. Every reply is also checked: the text of a continued
reply must be the uncut reply exactly (no chunk repeated or lost where the
continuation joins, whitespace included), with one finish reason and ``[DONE]``; a
fresh continuation must be the rest of it. Failures are counted and reported with an
example (their times are left out).

The gateway is pinned to core 0, mock, client and this process to core 1 (when the
machine has two cores; ``os.sched_setaffinity``), as in ``bench_gateway.py``.

Run: ``python benchmarks/bench_continuation.py`` (about a minute; ``--quick`` for
fewer rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gateway import (
    _DONE,
    _FINISH,
    _HEAD,
    _PREFIX,
    _ROLE,
    _chunk,
    _Client,
    _events,
    _free_port,
    _percentile,
    _pin,
    _pinning,
    _read_request,
    _run_role,
    _serve_cmd,
    _serve_mock,
    _serve_rounds,
    _start_mock,
    _stop,
    _wait_http,
)

CHUNKS = 20
CUT = 10  # the cut deployment's upstream dies after this many content chunks
PACE = 0.020
LEVELS = (1, 10, 50)
ROUNDS = {1: 30, 10: 10, 50: 4}
QUICK_ROUNDS = {1: 6, 10: 2, 50: 1}

TEXTS = [f"w{i} " for i in range(CHUNKS)]
FULL = "".join(TEXTS)
SO_FAR = "".join(TEXTS[:CUT])  # what the client has when the upstream dies
PREFILL = SO_FAR.rstrip()  # what the gateway sends as the assistant's message
QUESTION = [{"role": "user", "content": "count from w0 to w19"}]


# --- mock upstream -------------------------------------------------------------------


def _content(text: str) -> bytes:
    return _chunk(
        _PREFIX
        + b'"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}'
        % json.dumps(text).encode()
    )


def _usage(completion: int) -> bytes:
    return _chunk(
        b'{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"mock","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":8,'
        b'"completion_tokens":%d,"total_tokens":%d}}' % (completion, completion + 8)
    )


def _rest(prefill: str) -> list[str] | None:
    """The pieces of the reply after ``prefill`` (None: not a start of the reply). A
    prefill ending inside a chunk leaves that chunk's rest; whitespace alone is sent
    with the next chunk (a model continuing ``w9`` writes `` w10``)."""
    if not FULL.startswith(prefill):
        return None
    pieces: list[str] = []
    at = 0
    for text in TEXTS:
        end = at + len(text)
        if end > len(prefill):
            pieces.append(text[max(len(prefill) - at, 0) :])
        at = end
    if len(pieces) > 1 and not pieces[0].strip():
        pieces[:2] = [pieces[0] + pieces[1]]
    return pieces


def _prefill_of(body: dict[str, Any]) -> str | None:
    """The final assistant message's text when the request asks to continue it."""
    messages = body.get("messages") or []
    if not body.get("continue_final_message") or not messages:
        return None
    last = messages[-1]
    if last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


async def _mock_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            _, raw = await _read_request(reader)
            body = json.loads(raw) if raw else {}
            prefill = _prefill_of(body)
            pieces = TEXTS if prefill is None else _rest(prefill)
            if pieces is None:
                error = b'{"error":{"message":"not a start of the reply","type":"invalid"}}'
                writer.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(error), error)
                )
                continue
            cut = body.get("model") == "cut"
            if cut:
                pieces = pieces[:CUT]
            # A fresh reply's first chunk comes a pace after the role chunk; a
            # continuation's at once, with it.
            first = 0 if prefill is not None else 1
            start = loop.time()
            writer.write(_HEAD + _ROLE)
            for i, text in enumerate(pieces):
                delay = start + (i + first) * PACE - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(_content(text))
            if cut:  # the upstream dies: no finish, no [DONE], no last HTTP chunk
                await writer.drain()
                return
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            writer.write(_FINISH + (_usage(len(pieces)) if include_usage else b"") + _DONE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _mock_main(port: int) -> None:
    await _serve_mock(_mock_connection, port)


# --- lean client ---------------------------------------------------------------------


async def _one_stream(port: int, request: bytes) -> dict[str, Any]:
    """One streaming request: its start, the content pieces and their receive times
    (ns), the finish reasons, whether ``[DONE]`` came, and any error event."""
    started = time.perf_counter_ns()
    received: list[int] = []
    texts: list[str] = []
    finishes: list[str] = []
    errors: list[str] = []
    done = False
    async for now, event in _events(port, request):
        data_at = event.find(b"data: ")
        if data_at < 0:
            continue  # a comment (heartbeat)
        payload = event[data_at + 6 :]
        if payload == b"[DONE]":
            done = True
            break
        obj = json.loads(payload)
        if "error" in obj:
            errors.append(json.dumps(obj["error"])[:200])
            continue
        for choice in obj.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                received.append(now)
                texts.append(text)
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    return {
        "started": started,
        "received": received,
        "texts": texts,
        "finishes": finishes,
        "done": done,
        "errors": errors,
    }


def _request(port: int, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )


async def _client_round(port: int, streams: int, path: str) -> dict[str, Any]:
    """``path``: "continued" (the continued route: cut to continued token), "direct" (a
    fresh continuation request to the mock: its first token) or "relayed" (the same
    request through the gateway's plain route ``ok``)."""
    if path == "continued":
        payload: dict[str, Any] = {"model": "continued", "messages": QUESTION, "stream": True}
        expected, before = FULL, len(SO_FAR)
    else:
        payload = {
            "model": "ok",
            "messages": [*QUESTION, {"role": "assistant", "content": PREFILL}],
            "stream": True,
            "continue_final_message": True,
            "add_generation_prompt": False,
        }
        expected, before = FULL[len(PREFILL) :], 0
    request = _request(port, payload)
    results = await asyncio.gather(
        *(_one_stream(port, request) for _ in range(streams)), return_exceptions=True
    )
    waits: list[float] = []
    failures: list[str] = []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(repr(result))
            continue
        text = "".join(result["texts"])
        if result["errors"]:
            failures.append(f"error event {result['errors'][0]} after {text!r}")
            continue
        if text != expected:
            failures.append(f"text {text!r}, expected {expected!r}")
            continue
        if result["finishes"] != ["stop"] or not result["done"]:
            failures.append(f"finish reasons {result['finishes']}, [DONE]: {result['done']}")
            continue
        # The first piece that goes beyond what the client had before the cut.
        received, length = result["received"], 0
        for i, piece in enumerate(result["texts"]):
            length += len(piece)
            if length > before:
                if path != "continued":
                    waits.append((received[i] - result["started"]) / 1e6)
                elif i > 0:
                    waits.append((received[i] - received[i - 1]) / 1e6)
                break
    return {"waits": waits, "failures": failures}


def _client_main() -> None:
    """Rounds of ``{"port", "streams", "path"}``."""
    _serve_rounds(lambda order: _client_round(order["port"], order["streams"], order["path"]))


# --- coordinator ---------------------------------------------------------------------


def _config(mock_port: int) -> str:
    base = f'base_url = "http://127.0.0.1:{mock_port}/v1"\n'
    return (
        '[providers.cutter]\ntype = "openai"\n'
        + base
        + '\n[providers.healthy]\ntype = "openai"\n'
        + base
        + "prefill = { continue_final_message = true, add_generation_prompt = false }\n\n"
        "[models.continued]\n"
        'deployments = [ { provider = "cutter", model = "cut" }, '
        '{ provider = "healthy", model = "ok" } ]\n'
        'strategy = "fallback"\n'
        "continue_on_failure = true\n"
        "cooldown = 0\n\n"
        '[models.ok]\nprovider = "healthy"\n'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["mock", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    args = parser.parse_args()
    if _run_role(args.role, args.port, _mock_main, _client_main):
        return

    gateway_core, load_core = _pinning()
    pinned = gateway_core is not None
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    here = str(Path(__file__).resolve())
    mock_port, gateway_port = _free_port(), _free_port()
    procs: list[subprocess.Popen[str]] = []
    collected: dict[tuple[int, str], dict[str, list[Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tokenwire.toml"
        config.write_text(_config(mock_port))
        try:
            procs.append(_start_mock(here, mock_port, load_core))
            gateway_cmd = _serve_cmd(config, gateway_port)
            procs.append(
                subprocess.Popen(
                    gateway_cmd,
                    stdout=subprocess.DEVNULL,
                    text=True,
                    preexec_fn=_pin(gateway_core),
                    cwd=tmp,
                )
            )
            _wait_http(gateway_port, "/healthz")
            client = _Client(here, load_core)
            procs.append(client.proc)

            def run_round(path: str, streams: int) -> dict[str, Any]:
                port = mock_port if path == "direct" else gateway_port
                return client.round({"port": port, "streams": streams, "path": path})

            print(
                f"gateway: {' '.join(['tokenwire', *gateway_cmd[3:]])}\n"
                f"route: [cut (dies after {CUT} chunks), ok (prefill)], "
                "fallback, continue_on_failure\n"
                f"pinning: {'gateway on core 0; mock, client on core 1' if pinned else 'off'}; "
                f"mock: {CHUNKS} chunks {PACE * 1000:.0f} ms apart; "
                f"rounds per path: {', '.join(f'{k} streams x{v}' for k, v in rounds.items())}",
                flush=True,
            )
            paths = ["continued", "direct", "relayed"]
            for streams in (10, 1):  # warm-up: imports, connection pools, caches
                for path in paths:
                    run_round(path, streams)
            began = time.monotonic()
            for streams in LEVELS:
                for r in range(rounds[streams]):
                    shift = r % len(paths)
                    for path in paths[shift:] + paths[:shift]:  # rotating: nobody always first
                        result = run_round(path, streams)
                        bucket = collected.setdefault(
                            (streams, path), {"waits": [], "failures": []}
                        )
                        for key, values in result.items():
                            bucket[key].extend(values)
                        time.sleep(0.05)
            elapsed = time.monotonic() - began
        finally:
            _stop(procs)
    _report(collected, elapsed, rounds)


def _report(
    collected: dict[tuple[int, str], dict[str, list[Any]]],
    elapsed: float,
    rounds: dict[int, int],
) -> None:
    print(
        f"\nmeasured in {elapsed:.0f} s; times in ms\n"
        "continued: through the gateway, the last chunk before the cut to the first "
        "continued chunk\n"
        "direct:    a fresh continuation request to the mock (new connection, request, "
        "first chunk)\n"
        "relayed:   the same request through the gateway (its plain route to the healthy "
        "deployment)\n"
    )
    header = (
        f"{'streams':>7}  {'pct':<4}{'continued':>10}{'direct':>9}{'relayed':>9}"
        f"{'cont.-direct':>14}{'cont./direct':>14}{'cont.-relayed':>15}   samples"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for streams in LEVELS:
        continued = collected[(streams, "continued")]["waits"]
        direct = collected[(streams, "direct")]["waits"]
        relayed = collected[(streams, "relayed")]["waits"]
        for label, q in (("p50", 0.50), ("p99", 0.99)):
            c = _percentile(continued, q)
            d = _percentile(direct, q)
            r = _percentile(relayed, q)
            ratio = c / d if d else float("nan")
            print(
                f"{streams:>7}  {label:<4}{c:>10.2f}{d:>9.2f}{r:>9.2f}"
                f"{c - d:>+14.2f}{ratio:>13.2f}x{c - r:>+15.2f}"
                f"   {len(continued)}/{len(direct)}/{len(relayed)}"
            )
        total = streams * rounds[streams]
        for path in ("continued", "direct", "relayed"):
            failures = collected[(streams, path)]["failures"]
            if failures:
                failed = True
                print(
                    f"{streams:>7}  FAILED ({path}): {len(failures)} of {total} replies, "
                    f"e.g. {failures[0]}"
                )
        print()
    if not failed:
        print(
            "check: every continued reply was the uncut reply exactly (no chunk repeated "
            "or lost), with one finish reason and [DONE]; every fresh continuation was the "
            "rest of it"
        )


if __name__ == "__main__":
    main()
