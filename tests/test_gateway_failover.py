"""Two ``tokenwire serve`` processes sharing a real Redis, when Redis pauses writes (what
FAILOVER and managed-Redis maintenance do) and when the producing process dies under
its clients: a browser's EventSource and tokenwire's AsyncEventSource reconnecting
through a load balancer get the rest from the other process, and a clear end."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from redis.asyncio import Redis

from tests.resume_helpers import Proxy, RedisServer, read, redis_server, serve_process
from tokenwire.client import AsyncEventSource

pytestmark = pytest.mark.integration
__all__ = ["redis_server"]

BODY = {
    "model": "paced",
    "messages": [{"role": "user", "content": "Tell me a fable."}],
    "stream": True,
    "temperature": 0,
}


@contextmanager
def gateway(tmp: Path, redis: RedisServer, name: str) -> Iterator[tuple[str, Any]]:
    """``tokenwire serve`` with resume on ``redis`` and a slow demo model (~50 events,
    30 ms apart)."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        '[providers.slow]\ntype = "demo"\ntime_per_token = 0.03\nseed = 1\n'
        '[models.paced]\nprovider = "slow"\nmodel = "demo"\n'
        '[agents.paced]\nprovider = "slow"\noptions = { temperature = 0 }\n'
        f'[gateway]\nresume = "{redis.url}"\nresume_grace = 10\nresume_stall = 5\n'
    )
    with serve_process(cfg) as served:
        yield served


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Any, Any, RedisServer]]:
    with gateway(tmp_path, redis_server, "a") as a, gateway(tmp_path, redis_server, "b") as b:
        yield a, b, redis_server


def text_of(events: list[Any]) -> str:
    out = []
    for event in events:
        if event.data.startswith("{"):
            for choice in orjson.loads(event.data).get("choices", []):
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


async def test_a_write_pause_while_streams_run_and_end(pair: Any) -> None:
    (a, _), (b, _), redis = pair
    control = Redis.from_url(redis.url)
    try:
        async with httpx2.AsyncClient(timeout=30) as client:
            _, whole, _ = await read(client, a + "/v1/chat/completions", json=BODY)
            # Two readers of a new stream: one stays on A; one drops after five events.
            staying = asyncio.create_task(read(client, a + "/v1/chat/completions", json=BODY))
            _, first, _ = await read(client, a + "/v1/chat/completions", json=BODY, cut_events=5)
            await control.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
            started = time.monotonic()
            # ... and resumes on B while Redis takes no writes; the stream ends meanwhile.
            status, rest, _ = await read(
                client, b + "/v1/chat/completions", {"Last-Event-ID": first[-1].id}, json=BODY
            )
            assert status == 200, status
            _, stayed, _ = await staying
            assert time.monotonic() - started < 20
        for events in (first + rest, stayed):
            assert text_of(events) == text_of(whole) and events[-1].data == "[DONE]"
        ids = [e.id for e in first + rest]
        sid = ids[0].rsplit("-", 1)[0]
        assert ids == [f"{sid}-{i}" for i in range(1, len(ids) + 1)]  # each exactly once
        # The other protocol's endpoint does not resume it (400 in its own shape).
        wrong = httpx2.post(
            b + "/v1/messages",
            json={**BODY, "max_tokens": 50},
            headers={"Last-Event-ID": ids[3], "anthropic-version": "2023-06-01"},
            timeout=10,
        )
        assert wrong.status_code == 400
        assert wrong.json()["error"]["type"] == "invalid_request_error"
        assert "openai stream" in wrong.json()["error"]["message"]
    finally:
        await control.execute_command("CLIENT", "UNPAUSE")
        await control.aclose()


async def test_async_event_source_reconnects_to_the_other_process(pair: Any) -> None:
    (a, proc_a), (b, _), _ = pair
    proxy = Proxy(int(a.rsplit(":", 1)[1]))  # the load balancer in front of both
    received: list[Any] = []
    try:
        async with AsyncEventSource(
            proxy.url + "/v1/chat/completions", "POST", json=BODY, timeout=30
        ) as source:
            async for event in source:
                received.append(event)
                if len(received) == 5:
                    # A dies under its client; the balancer sends the reconnect to B.
                    proxy.target = int(b.rsplit(":", 1)[1])
                    proc_a.send_signal(signal.SIGKILL)
                if event.data.startswith('{"error"'):
                    break
    finally:
        proxy.close()
    ids = [e.id for e in received[:-1]]
    sid = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{sid}-{i}" for i in range(1, len(ids) + 1)]  # replayed, nothing twice
    assert len(ids) >= 5
    error = orjson.loads(received[-1].data)["error"]
    assert error["code"] == "producer_died"


def test_the_browser_reconnects_to_the_other_process(pair: Any, browser: Any) -> None:
    (a, proc_a), (b, _), _ = pair
    proxy = Proxy(int(a.rsplit(":", 1)[1]))
    page = browser.new_page()
    try:
        page.goto(proxy.url + "/healthz")
        page.evaluate(
            """() => {
                window.got = [];
                const source = new EventSource("/chat/stream?message=hello&agent=paced");
                source.onmessage = e => window.got.push({id: e.lastEventId, data: e.data});
                source.addEventListener("error", e => {
                    if (e.data) { window.got.push({id: "", data: e.data, error: true});
                                  source.close(); }
                });
            }"""
        )
        page.wait_for_function("() => window.got.length >= 5", timeout=20_000)
        proxy.target = int(b.rsplit(":", 1)[1])
        proc_a.send_signal(signal.SIGKILL)
        page.wait_for_function(
            "() => window.got.length && window.got[window.got.length - 1].error",
            timeout=30_000,
        )
        got = page.evaluate("() => window.got")
    finally:
        page.close()
        proxy.close()
    chunks, error = got[:-1], orjson.loads(got[-1]["data"])
    ids = [g["id"] for g in chunks]
    sid = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{sid}-{i}" for i in range(1, len(ids) + 1)]
    assert "died" in error["message"] and error["type"] == "api_error"
