"""End-to-end client throughput: OpenAI chat-completion chunks and OpenAI Responses
events from a local server.

One local uvicorn server (a separate process, raw ASGI, pre-encoded chunks written 64
events per write so that the server is not the bottleneck) streams ``--chunks`` OpenAI
chunks per request on ``/v1/chat/completions``, and the same text as a Responses stream
(``response.output_text.delta`` events) on ``/v1/responses``. For chat completions the
clients are, in interleaved rounds:

- tokenwire: ``tokenwire.client.stream_chat(url)`` (httpx2, SSEDecoder, orjson) -> deltas
- tokenwire (async): the same with ``astream_chat`` (for information)
- httpx-sse: ``httpx_sse.connect_sse`` over httpx, ``json.loads`` per event, content
  pulled out of the dict by hand
- openai: the official SDK's streaming iterator (``chat.completions.create(stream=True)``)

For Responses: tokenwire's ``stream_chat`` (the protocol detected from the stream),
httpx-sse with ``json.loads`` per event, and the SDK's ``responses.create(stream=True)``.

Each keeps one HTTP client (connection pool) across runs. Reported: content deltas per
second for each (best of ``--rounds``), and the ratios.
On Linux the server is pinned to CPU 0 and the clients to CPU 1 when there are two.

    python benchmarks/bench_sse_client.py [--chunks 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

CHUNK = (
    '{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk",'
    '"created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd",'
    '"choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}]}'
)
WORDS = ["Hello", " world", ",", " this", " is", " a", " token", " stream", "!", " é"]


def build_body(n: int) -> list[bytes]:
    role = CHUNK.replace('{"content":"%s"}', '{"role":"assistant","content":""}')
    finish = CHUNK.replace('{"content":"%s"}', "{}").replace(
        '"finish_reason":null', '"finish_reason":"stop"'
    )
    usage = (
        '{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk",'
        '"created":1727346168,"model":"gpt-4o-2024-08-06","choices":[],'
        f'"usage":{{"prompt_tokens":10,"completion_tokens":{n},"total_tokens":{n + 10}}}}}'
    )
    events = [role] + [CHUNK % WORDS[i % len(WORDS)] for i in range(n)] + [finish, usage]
    encoded = [f"data: {e}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    return [b"".join(encoded[i : i + 64]) for i in range(0, len(encoded), 64)]


def build_responses_body(n: int) -> list[bytes]:
    """The same reply as a Responses API stream (written by tokenwire's encoder, which
    the SDK's own tests accept)."""
    from tokenwire.llm.model import Usage
    from tokenwire.llm.openai_responses import ResponsesEventEncoder

    encoder = ResponsesEventEncoder("resp_bench", "gpt-4o-2024-08-06")
    events = [encoder.start()]
    events += [encoder.encode_text(WORDS[i % len(WORDS)]) for i in range(n)]
    events.append(encoder.done(Usage(input_tokens=10, output_tokens=n)))
    return [b"".join(events[i : i + 64]) for i in range(0, len(events), 64)]


def serve(n: int) -> None:
    """The server process: print the port, then serve until killed."""
    import uvicorn

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    bodies = {"/v1/chat/completions": build_body(n), "/v1/responses": build_responses_body(n)}

    async def app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        pieces = bodies[scope["path"]]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", loop="uvloop", http="httptools"
    )
    uvicorn.Server(config).run(sockets=[sock])


def make_tokenwire() -> Callable[[str], int]:
    import httpx2

    from tokenwire.client import stream_chat
    from tokenwire.llm import TextDelta

    client = httpx2.Client()

    def run(url: str) -> int:
        count = 0
        stream = stream_chat(url + "/v1/chat/completions", json={"stream": True}, client=client)
        for delta in stream:
            if type(delta) is TextDelta:
                count += 1
        return count

    return run


def make_tokenwire_async() -> Callable[[str], int]:
    import asyncio

    import httpx2

    from tokenwire.client import astream_chat
    from tokenwire.llm import TextDelta

    loop = asyncio.new_event_loop()
    client = httpx2.AsyncClient()

    async def consume(url: str) -> int:
        count = 0
        stream = astream_chat(url + "/v1/chat/completions", json={"stream": True}, client=client)
        async for delta in stream:
            if type(delta) is TextDelta:
                count += 1
        return count

    return lambda url: loop.run_until_complete(consume(url))


def make_httpx_sse() -> Callable[[str], int]:
    import httpx
    from httpx_sse import connect_sse

    client = httpx.Client(timeout=None)

    def run(url: str) -> int:
        count = 0
        with connect_sse(client, "POST", url + "/v1/chat/completions", json={"stream": True}) as es:
            for sse in es.iter_sse():
                if sse.data.startswith("[DONE]"):
                    break
                chunk = json.loads(sse.data)
                for choice in chunk["choices"]:
                    if choice["delta"].get("content"):
                        count += 1
        return count

    return run


def make_openai(url: str) -> Callable[[str], int]:
    import openai

    client = openai.OpenAI(api_key="bench", base_url=url + "/v1", max_retries=0)

    def run(_: str) -> int:
        count = 0
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    count += 1
        return count

    return run


def make_tokenwire_responses() -> Callable[[str], int]:
    import httpx2

    from tokenwire.client import stream_chat
    from tokenwire.llm import TextDelta

    client = httpx2.Client()

    def run(url: str) -> int:
        count = 0
        for delta in stream_chat(url + "/v1/responses", json={"stream": True}, client=client):
            if type(delta) is TextDelta:
                count += 1
        return count

    return run


def make_httpx_sse_responses() -> Callable[[str], int]:
    import httpx
    from httpx_sse import connect_sse

    client = httpx.Client(timeout=None)

    def run(url: str) -> int:
        count = 0
        with connect_sse(client, "POST", url + "/v1/responses", json={"stream": True}) as es:
            for sse in es.iter_sse():
                event = json.loads(sse.data)
                kind = event["type"]
                if kind == "response.output_text.delta" and event["delta"]:
                    count += 1
                elif kind == "response.completed":
                    break
        return count

    return run


def make_openai_responses(url: str) -> Callable[[str], int]:
    import openai

    client = openai.OpenAI(api_key="bench", base_url=url + "/v1", max_retries=0)

    def run(_: str) -> int:
        count = 0
        for event in client.responses.create(model="gpt-4o", input="hi", stream=True):
            if event.type == "response.output_text.delta" and event.delta:
                count += 1
        return count

    return run


def _race(
    clients: dict[str, Callable[[str], int]], url: str, rounds: int, n: int
) -> dict[str, float]:
    for run in clients.values():  # warm up (imports, connection setup)
        run(url)
    best: dict[str, float] = dict.fromkeys(clients, 0.0)
    for _ in range(rounds):
        for name, run in clients.items():
            t0 = time.perf_counter()
            count = run(url)
            elapsed = time.perf_counter() - t0
            assert count == n, (name, count)
            best[name] = max(best[name], count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.chunks)
        return

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--chunks", str(args.chunks)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {1})
        # Each client keeps one HTTP client (connection pool) across runs.
        clients: dict[str, Callable[[str], int]] = {
            "tokenwire": make_tokenwire(),
            "tokenwire (async)": make_tokenwire_async(),
            "httpx-sse + json.loads": make_httpx_sse(),
            "openai SDK": make_openai(url),
        }
        best = _race(clients, url, args.rounds, args.chunks)
        print(f"{args.chunks} content chunks per stream, best of {args.rounds} rounds")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        for name, rate in best.items():
            print(f"  {name:<24} {rate:>10,.0f} deltas/s")
        tw = best["tokenwire"]
        print(
            f"  tokenwire / openai SDK:             {tw / best['openai SDK']:.2f}x  (target >= 2)"
        )
        print(
            f"  tokenwire / httpx-sse + json.loads: "
            f"{tw / best['httpx-sse + json.loads']:.2f}x  (target >= 1.5)"
        )
        responses = _race(
            {
                "tokenwire": make_tokenwire_responses(),
                "httpx-sse + json.loads": make_httpx_sse_responses(),
                "openai SDK": make_openai_responses(url),
            },
            url,
            args.rounds,
            args.chunks,
        )
        print("Responses API streams (response.output_text.delta events):")
        for name, rate in responses.items():
            print(f"  {name:<24} {rate:>10,.0f} deltas/s")
        tw = responses["tokenwire"]
        print(f"  tokenwire / openai SDK:             {tw / responses['openai SDK']:.2f}x")
        print(
            f"  tokenwire / httpx-sse + json.loads: {tw / responses['httpx-sse + json.loads']:.2f}x"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
