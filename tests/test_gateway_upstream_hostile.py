"""The gateway in front of a hostile upstream: interim responses, silence, endless heads,
huge replies, echoed keys. A real gateway (uvicorn, loopback), a raw TCP upstream that
can break HTTP at will, and the official SDKs or raw sockets as clients."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app

from .conftest import serve
from .hostile_helpers import (
    Exchange,
    RawUpstream,
    openai_sse,
    raw_upstream,
    sse_head,
    wait_until,
)

pytestmark = pytest.mark.integration


def config_for(upstream: RawUpstream, **extra: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"provider": "raw", "model": "raw-model"}
    if "timeouts" in extra:
        route["timeouts"] = extra.pop("timeouts")
    return {
        "providers": {"raw": {"type": "openai", "base_url": upstream.url + "/v1"}},
        "models": {"raw": route},
        "gateway": extra,
    }


def client(url: str, **kw: Any) -> openai.OpenAI:
    kw.setdefault("timeout", 30)
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, **kw)


def ask(url: str, text: str, *, stream: bool = True) -> str:
    messages = [{"role": "user", "content": text}]
    if not stream:
        reply = client(url).chat.completions.create(model="raw", messages=messages)  # type: ignore[arg-type]
        return reply.choices[0].message.content or ""
    chunks = client(url).chat.completions.create(model="raw", messages=messages, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def gateway_for() -> Iterator[Any]:
    """``gateway_for(handler, **gateway settings)`` -> (upstream, gateway URL)."""
    stack: list[Any] = []

    def start(handler: Any, **settings: Any) -> tuple[RawUpstream, str]:
        up_cm = raw_upstream(handler)
        upstream = up_cm.__enter__()
        stack.append(up_cm)
        gw_cm = serve(create_app(from_mapping(config_for(upstream, **settings))))
        url = gw_cm.__enter__()
        stack.append(gw_cm)
        return upstream, url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


# --- 1. interim (1xx) responses ----------------------------------------------------------


async def interim_then_reply(exchange: Exchange) -> None:
    body = openai_sse(f"reply to {exchange.last_user_text()}")
    # Interim responses in their own packets, as a server sends them while it works.
    for interim in (
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\n\r\n",
    ):
        await exchange.send(interim)
        await asyncio.sleep(0.02)
    await exchange.send(sse_head(length=len(body)) + body)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_interim_responses_never_cross_clients(gateway_for: Any, stream: bool) -> None:
    upstream, url = gateway_for(interim_then_reply)
    # Each request's connection is reused by the next: every reply must be its own.
    for name in ("alpha", "beta", "gamma", "delta"):
        assert ask(url, name, stream=stream) == f"reply to {name}"
    assert upstream.connections == 1  # keep-alive reuse happened, safely


# --- 2. deadlines from acceptance, clients leaving while the upstream is silent ----------


async def silent(exchange: Exchange) -> None:
    await exchange.closed_by_peer()


def test_silent_upstream_gets_a_504_within_the_first_token_deadline(gateway_for: Any) -> None:
    upstream, url = gateway_for(silent, timeouts={"first_token": 0.5, "total": 20})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(url, "anyone there?")
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert "first_chunk_timeout" in str(caught.value)
    assert elapsed < 10  # the deadline is 0.5 s; before, the wait was unbounded
    assert wait_until(lambda: upstream.open_connections == 0, 10)


async def late_head_then_late_token(exchange: Exchange) -> None:
    await asyncio.sleep(0.6)
    await exchange.send(sse_head(b"transfer-encoding: identity\r\nconnection: close\r\n"))
    await asyncio.sleep(0.6)
    await exchange.send(openai_sse("too late"))
    exchange.writer.close()


def test_first_token_deadline_counts_the_wait_for_the_head(gateway_for: Any) -> None:
    # Head after 0.6 s, first token 0.6 s later: 1.2 s from the request, over 1 s.
    _, url = gateway_for(late_head_then_late_token, timeouts={"first_token": 1.0})
    with pytest.raises(openai.APIError) as caught:
        ask(url, "hi")
    assert "first_chunk_timeout" in str(caught.value) or "timed out" in str(caught.value)


def raw_post(port: int, body: dict[str, Any]) -> socket.socket:
    data = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    return sock


def test_clients_leaving_during_the_wait_close_the_upstream_at_once(gateway_for: Any) -> None:
    upstream, url = gateway_for(silent, timeouts={"first_token": 120})
    port = int(url.rsplit(":", 1)[1])
    bodies = [
        {"model": "raw", "messages": [{"role": "user", "content": "x"}], "stream": stream}
        for stream in (True, False)
    ]
    sockets = [raw_post(port, bodies[i % 2]) for i in range(20)]
    assert wait_until(lambda: len(upstream.requests) == 20), "the upstream did not get them"
    assert upstream.open_connections == 20
    for sock in sockets:
        sock.close()
    assert wait_until(lambda: upstream.open_connections == 0, 10), (
        f"{upstream.open_connections} upstream connections still open"
    )
    # ... and they are counted, as client disconnects (499).
    metrics = httpx2.get(url + "/metrics").text
    counted = re.findall(r'tokenwire_requests_total\{[^}]*status="499"\} (\d+)', metrics)
    assert sum(int(n) for n in counted) == 20, metrics


async def start_then_stall(exchange: Exchange) -> None:
    await exchange.send(sse_head(b"transfer-encoding: chunked\r\n"))
    chunk = openai_sse("partial").split(b"\n\n")[1] + b"\n\n"
    await exchange.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await exchange.closed_by_peer()


def test_client_leaving_a_whole_reply_in_progress_closes_the_upstream(gateway_for: Any) -> None:
    upstream, url = gateway_for(start_then_stall)
    port = int(url.rsplit(":", 1)[1])
    sock = raw_post(port, {"model": "raw", "messages": [{"role": "user", "content": "x"}]})
    assert wait_until(lambda: len(upstream.requests) == 1)
    sock.close()
    assert wait_until(lambda: upstream.open_connections == 0, 10)


def endless_head(line: bytes, count: int) -> Any:
    async def handler(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        sent = 0
        try:
            for i in range(count):
                exchange.writer.write(b"x-pad-%d: %s\r\n" % (i, line))
                sent += len(line)
                if i % 64 == 0:
                    await exchange.writer.drain()
        except ConnectionError:
            pass
        handler.sent = sent  # type: ignore[attr-defined]

    return handler


@pytest.mark.parametrize(
    ("line", "count"),
    [(b"a" * 1000, 64 * 1024), (b"b" * (16 * 1024 * 1024), 1)],
    ids=["64-MiB-of-lines", "one-16-MiB-line"],
)
def test_upstream_response_heads_are_bounded(gateway_for: Any, line: bytes, count: int) -> None:
    handler = endless_head(line, count)
    upstream, url = gateway_for(handler)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(url, "hi")
    assert caught.value.status_code == 502
    assert "invalid HTTP response" in str(caught.value)
    assert time.monotonic() - started < 10
    # The gateway stopped reading after about a megabyte and closed the connection.
    assert wait_until(lambda: upstream.open_connections == 0, 10)


# --- 7. reply size ---------------------------------------------------------------------------


async def huge_reply(exchange: Exchange) -> None:
    part = openai_sse("x" * 10_000).split(b"\n\n")[1] + b"\n\n"
    await exchange.send(sse_head(b"connection: close\r\n"))
    try:
        for _ in range(500):  # 5 MB
            exchange.writer.write(part)
            await exchange.writer.drain()
        await exchange.send(b"data: [DONE]\n\n")
    except ConnectionError:
        pass
    exchange.writer.close()


def test_replies_over_max_reply_bytes_end_with_a_clear_error(gateway_for: Any) -> None:
    _, url = gateway_for(huge_reply, max_reply_bytes=200_000)
    with pytest.raises(openai.APIError, match="max_reply_bytes"):
        ask(url, "hi")
    with pytest.raises(openai.APIStatusError, match="max_reply_bytes") as caught:
        ask(url, "hi", stream=False)
    assert caught.value.status_code == 502


# --- 8. odd Retry-After values --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [b"retry-after: 1e308\r\n", b"retry-after-ms: nan\r\nretry-after: 9e999\r\n"],
    ids=["huge", "nan-and-inf"],
)
def test_absurd_retry_after_is_clamped_not_a_500(gateway_for: Any, headers: bytes) -> None:
    async def limited(exchange: Exchange) -> None:
        body = b'{"error": {"message": "slow down", "type": "requests"}}'
        await exchange.send(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
            + headers
            + b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )

    _, url = gateway_for(limited)
    response = httpx2.post(
        url + "/v1/chat/completions",
        json={"model": "raw", "messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    assert response.status_code == 429
    retry_after = response.headers.get("retry-after")
    assert retry_after is None or 0 <= int(retry_after) <= 86400
