"""SSE decoding speed: tokenwire against the Python peers, same corpus, one run.

Every decoder goes from raw bytes (as read from a socket) to event objects. Text-based
peers get the same incremental UTF-8 decoding an HTTP client would do for them.

    python benchmarks/bench_sse_decode.py [--events 50000] [--repeat 5]

Corpus: realistic OpenAI chat-completion chunks (~200 bytes each), delivered one event
per read and in 64 KiB reads; plus one 8 MiB event in 1 KiB reads. Prints events/s (best
of --repeat runs) and the ratio of tokenwire to the fastest peer.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tokenwire.sse import SSEDecoder

Decoder = Callable[[list[bytes]], int]  # chunks -> number of events decoded


def corpus(n: int) -> bytes:
    words = ["Hello", " world", ",", " this", " is", " a", " streamed", " reply", "!", " 日本"]
    parts = []
    for i in range(n):
        chunk = {
            "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
            "object": "chat.completion.chunk",
            "created": 1727346168,
            "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_5050236cbd",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": words[i % len(words)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        parts.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    return b"".join(parts)


def fixed_reads(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _utf8_text(chunks: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            yield text


# --- the decoders under test --------------------------------------------------------


def run_tokenwire(chunks: list[bytes]) -> int:
    decoder = SSEDecoder(max_event_size=64 * 1024 * 1024)
    n = 0
    feed = decoder.feed
    for chunk in chunks:
        n += len(feed(chunk))
    return n


def run_tokenwire_pure(chunks: list[bytes]) -> int:
    """tokenwire without its optional C accelerator (what a no-compiler install gets)."""
    import tokenwire.sse as sse

    saved = sse._scan_simple
    sse._scan_simple = sse._scan_simple_py
    try:
        return run_tokenwire(chunks)
    finally:
        sse._scan_simple = saved


def run_httpx_sse(chunks: list[bytes]) -> int:
    from httpx_sse._decoders import SSEDecoder as Dec
    from httpx_sse._decoders import SSELineDecoder

    lines = SSELineDecoder()
    decoder = Dec()
    n = 0
    for text in _utf8_text(chunks):
        for line in lines.decode(text):
            if decoder.decode(line) is not None:
                n += 1
    return n


def run_httpx2(chunks: list[bytes]) -> int:
    from httpx2._sse import _SSEParser

    parser = _SSEParser(max_event_size=64 * 1024 * 1024)
    n = 0
    for text in _utf8_text(chunks):
        for _ in parser.decode(text):
            n += 1
    return n


def run_openai(chunks: list[bytes]) -> int:
    from openai._streaming import SSEDecoder as Dec

    return sum(1 for _ in Dec().iter_bytes(iter(chunks)))


def run_anthropic(chunks: list[bytes]) -> int:
    from anthropic._streaming import SSEDecoder as Dec

    return sum(1 for _ in Dec().iter_bytes(iter(chunks)))


def run_sseclient(chunks: list[bytes]) -> int:
    import sseclient

    return sum(1 for _ in sseclient.SSEClient(iter(chunks)).events())


PEERS: dict[str, Decoder] = {
    "httpx-sse": run_httpx_sse,
    "httpx2": run_httpx2,
    "openai": run_openai,
    "anthropic": run_anthropic,
    "sseclient-py": run_sseclient,
}


def best_time(fn: Decoder, chunks: list[bytes], repeat: int, expect: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        got = fn(chunks)
        elapsed = time.perf_counter() - started
        if got != expect:
            raise SystemExit(f"{fn.__name__} decoded {got} events, expected {expect}")
        best = min(best, elapsed)
    return best


def throughput_table(title: str, chunks: list[bytes], n: int, repeat: int) -> float:
    print(f"\n{title}: {n} events, {len(chunks)} reads")
    rates: dict[str, float] = {}
    for name, fn in {
        "tokenwire": run_tokenwire,
        "tokenwire-py": run_tokenwire_pure,
        **PEERS,
    }.items():
        rates[name] = n / best_time(fn, chunks, repeat, n)
        print(f"  {name:<13} {rates[name] / 1e6:6.3f} M events/s")
    fastest = max((r, name) for name, r in rates.items() if not name.startswith("tokenwire"))
    ratio = rates["tokenwire"] / fastest[0]
    print(f"  tokenwire / fastest peer ({fastest[1]}): {ratio:.2f}x")
    print(f"  tokenwire-py / fastest peer: {rates['tokenwire-py'] / fastest[0]:.2f}x")
    return ratio


def big_event_table(repeat: int) -> None:
    payload = b"x" * (8 * 1024 * 1024)
    chunks = fixed_reads(b"data: " + payload + b"\n\n", 1024)
    print(f"\none 8 MiB event in 1 KiB reads ({len(chunks)} reads)")
    for name, fn in {
        "tokenwire": run_tokenwire,
        "tokenwire-py": run_tokenwire_pure,
        **PEERS,
    }.items():
        # The quadratic peers take seconds here; one run each is enough to show it.
        runs = (
            repeat if name in ("tokenwire", "tokenwire-py", "httpx-sse", "httpx2", "openai") else 1
        )
        print(f"  {name:<13} {best_time(fn, chunks, runs, 1) * 1000:9.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-big", action="store_true", help="skip the 8 MiB event")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}")
    data = corpus(args.events)
    print(f"corpus: {len(data) / args.events:.0f} bytes per event")
    per_event = [p + b"\n\n" for p in data.split(b"\n\n")[:-1]]
    r1 = throughput_table("one event per read", per_event, args.events, args.repeat)
    r2 = throughput_table("64 KiB reads", fixed_reads(data, 64 * 1024), args.events, args.repeat)
    if not args.skip_big:
        big_event_table(args.repeat)
    print(f"\nsummary: {r1:.2f}x (one event per read), {r2:.2f}x (64 KiB reads) vs fastest peer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
