"""Resumable streams through the gateway: ``[gateway] resume``. In-process gateways for
the protocols and settings; two ``tokenwire serve`` processes sharing a real Redis for
resuming elsewhere, SIGKILL and cancellation; headless Chromium for the chat page."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.conftest import serve
from tests.resume_helpers import Proxy, RedisServer, read, redis_server, serve_process
from tests.server_helpers import free_port
from tokenwire.config import ConfigError, from_mapping
from tokenwire.gateway import create_app
from tokenwire.sse import ServerSentEvent

pytestmark = pytest.mark.integration
__all__ = ["redis_server"]

PROMPT = [{"role": "user", "content": "Tell me a fable."}]
OPENAI_BODY = {"model": "paced", "messages": PROMPT, "stream": True, "temperature": 0}
ANTHROPIC_BODY = {**OPENAI_BODY, "max_tokens": 200}
PROVIDERS = {
    "slow": {"type": "demo", "time_per_token": 0.02},
}
MODELS = {"paced": {"provider": "slow", "model": "demo"}}
AGENTS = {"paced": {"provider": "slow", "options": {"temperature": 0}}}


def config(**gateway: Any) -> Any:
    return from_mapping(
        {"providers": PROVIDERS, "models": MODELS, "agents": AGENTS, "gateway": gateway}
    )


def normalized(events: list[ServerSentEvent]) -> list[tuple[str, Any]]:
    """Events without what differs between two runs of the same reply (ids, times)."""
    out = []
    for event in events:
        data: Any = event.data
        if data.startswith("{"):
            data = orjson.loads(data)
            data.pop("id", None)
            data.pop("created", None)
            if isinstance(data.get("message"), dict):
                data["message"].pop("id", None)
        out.append((event.event, data))
    return out


# -- in-process ------------------------------------------------------------------------------


def test_config_settings() -> None:
    assert config().gateway.resume is None
    settings = config(resume="redis://h:1/0", resume_grace=2, resume_fallback=True).gateway
    assert (settings.resume, settings.resume_grace, settings.resume_fallback) == (
        "redis://h:1/0",
        2.0,
        True,
    )
    for bad in (
        {"resume": "postgres://x"},
        {"resume": 1},
        {"resume_fallback": "yes"},
        {"resume_expiry": 0},
        {"resume_grace": -1},
    ):
        with pytest.raises(ConfigError, match=r"\[gateway\]"):
            config(**bad)


def test_sdks_read_resumable_streams() -> None:
    with serve(create_app(config(resume="memory"))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x")
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="paced",
                messages=PROMPT,
                stream=True,
                max_tokens=200,  # as below: the demo model's reply length follows it
                temperature=0,  # type: ignore[arg-type]
            )
            if c.choices
        )
        assert len(text.split()) > 10
        claude = anthropic.Anthropic(base_url=url, api_key="x")
        events = claude.messages.create(
            model="paced",
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=200,
            stream=True,
            extra_body={"temperature": 0},
        )
        pieces = [
            e.delta.text
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        ]
        assert "".join(pieces) == text
        # Every event carries an id of its stream.
        raw = httpx2.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        sid = raw.headers["x-tokenwire-stream-id"]
        assert f"id: {sid}-1\n" in raw.text and raw.text.endswith("data: [DONE]\n\n")


async def test_resume_in_both_protocols_and_errors() -> None:
    with serve(create_app(config(resume="memory"))) as url:
        async with httpx2.AsyncClient(timeout=10) as client:
            for path, body in (
                ("/v1/chat/completions", OPENAI_BODY),
                ("/v1/messages", ANTHROPIC_BODY),
            ):
                _, whole, _ = await read(client, url + path, json=body)
                _, first, headers = await read(client, url + path, json=body, cut_events=5)
                sid = headers["x-tokenwire-stream-id"]
                assert first[-1].id == f"{sid}-5"
                _, rest, _ = await read(
                    client, url + path, {"Last-Event-ID": first[-1].id or ""}, json=body
                )
                assert normalized(first + rest) == normalized(whole)
                assert [e.id for e in first + rest] == [
                    f"{sid}-{i}" for i in range(1, len(whole) + 1)
                ]
            # Unknown stream: 404 in each protocol's own error shape.
            response = await client.post(
                url + "/v1/chat/completions", json=OPENAI_BODY, headers={"Last-Event-ID": "zz-1"}
            )
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found_error"
            response = await client.post(
                url + "/v1/messages", json=ANTHROPIC_BODY, headers={"Last-Event-ID": "zz-1"}
            )
            assert response.status_code == 404 and response.json()["type"] == "error"
            response = await client.get(url + "/chat/stream?message=hi&last_event_id=bad id")
            assert response.status_code == 400


async def test_delete_cancels_and_resume_off_keeps_old_behaviour() -> None:
    with serve(create_app(config(resume="memory"))) as url:
        async with httpx2.AsyncClient(timeout=10) as client:
            task = asyncio.create_task(read(client, url + "/v1/chat/completions", json=OPENAI_BODY))
            await asyncio.sleep(0.3)
            metrics = await client.get(url + "/metrics")
            assert "tokenwire_active_streams 1" in metrics.text
            # The stream id is known from the header of the response being read.
            _, probe, headers = await read(
                client, url + "/v1/chat/completions", json=OPENAI_BODY, cut_events=1
            )
            sid = headers["x-tokenwire-stream-id"]
            response = await client.delete(f"{url}/v1/streams/{sid}")
            assert response.json() == {"id": sid, "object": "stream", "status": "cancelled"}
            _, rest, _ = await read(
                client,
                url + "/v1/chat/completions",
                {"Last-Event-ID": probe[0].id or ""},
                json=OPENAI_BODY,
            )
            assert rest[-1].json()["error"]["code"] == "cancelled"
            assert (await client.delete(f"{url}/v1/streams/{sid}")).json()["status"] == "finished"
            assert (await client.delete(f"{url}/v1/streams/nothere")).status_code == 404
            assert (await client.delete(f"{url}/v1/streams/bad-id")).status_code == 400
            await task
    with serve(create_app(config())) as url:
        response = httpx2.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        assert "\nid: " not in response.text and not response.text.startswith("id:")
        assert httpx2.delete(url + "/v1/streams/abc").status_code == 404
        # Last-Event-ID is ignored when resume is off: a new reply.
        again = httpx2.post(
            url + "/v1/chat/completions",
            json=OPENAI_BODY,
            headers={"Last-Event-ID": "abc-1"},
            timeout=10,
        )
        assert again.status_code == 200 and again.text.endswith("data: [DONE]\n\n")


def test_redis_unreachable_fails_fast_or_falls_back() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    with serve(create_app(config(resume=down))) as url:
        started = time.monotonic()
        response = httpx2.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=30)
        assert time.monotonic() - started < 10
        assert response.status_code == 503
        assert "unreachable" in response.json()["error"]["message"]
        response = httpx2.get(url + "/chat/stream?message=hi", timeout=30)
        assert response.status_code == 503
    with serve(create_app(config(resume=down, resume_fallback=True))) as url:
        response = httpx2.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=30)
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
        assert "id: " not in response.text


# -- two processes sharing Redis ---------------------------------------------------------------


@contextmanager
def gateway_process(tmp: Path, redis: RedisServer, name: str) -> Iterator[tuple[str, Any]]:
    """``tokenwire serve`` in a subprocess with resume on ``redis``."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        '[providers.slow]\ntype = "demo"\ntime_per_token = 0.02\n'
        '[models.paced]\nprovider = "slow"\nmodel = "demo"\n'
        '[agents.paced]\nprovider = "slow"\noptions = { temperature = 0 }\n'
        f'[gateway]\nresume = "{redis.url}"\nresume_grace = 5\n'
    )
    with serve_process(cfg, stderr=True) as served:
        yield served


@pytest.fixture
def two_gateways(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[tuple[tuple[str, Any], tuple[str, Any]]]:
    with (
        gateway_process(tmp_path, redis_server, "a") as a,
        gateway_process(tmp_path, redis_server, "b") as b,
    ):
        yield a, b


async def test_cut_on_one_process_resume_on_another(two_gateways: Any) -> None:
    (a, _), (b, _) = two_gateways
    async with httpx2.AsyncClient(timeout=20) as client:
        for path, body in (("/v1/chat/completions", OPENAI_BODY), ("/v1/messages", ANTHROPIC_BODY)):
            _, whole, _ = await read(client, a + path, json=body)
            _, first, headers = await read(client, a + path, json=body, cut_events=7)
            sid = headers["x-tokenwire-stream-id"]
            _, rest, headers = await read(
                client, b + path, {"Last-Event-ID": first[-1].id or ""}, json=body
            )
            assert headers["x-tokenwire-stream-id"] == sid
            assert normalized(first + rest) == normalized(whole)
            ids = [e.id for e in first + rest]
            assert ids == [f"{sid}-{i}" for i in range(1, len(whole) + 1)]
            # And once more from the start, on B, after the end: the same events.
            _, again, _ = await read(client, b + path, {"Last-Event-ID": sid}, json=body)
            assert again == first + rest


async def test_sigkill_producer_then_resume_elsewhere(two_gateways: Any) -> None:
    (a, proc_a), (b, _) = two_gateways
    async with httpx2.AsyncClient(timeout=20) as client:
        _, first, _ = await read(client, a + "/v1/chat/completions", json=OPENAI_BODY, cut_events=5)
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait()
        started = time.monotonic()
        _, rest, _ = await read(
            client,
            b + "/v1/chat/completions",
            {"Last-Event-ID": first[-1].id or ""},
            json=OPENAI_BODY,
        )
        assert time.monotonic() - started < 15
        # What A wrote before it died, then a clear error: nothing silently truncated.
        assert rest and all(e.id for e in rest[:-1])
        error = rest[-1].json()["error"]
        assert error["code"] == "producer_died" and "died" in error["message"]
        assert not any(e.data == "[DONE]" for e in rest)


async def test_cancel_from_the_other_process(two_gateways: Any) -> None:
    (a, _), (b, _) = two_gateways
    async with httpx2.AsyncClient(timeout=20) as client:
        decoder_events: list[ServerSentEvent] = []
        async with client.stream("POST", a + "/v1/messages", json=ANTHROPIC_BODY) as response:
            sid = response.headers["x-tokenwire-stream-id"]
            cancelled = False
            from tokenwire.sse import SSEDecoder

            decoder = SSEDecoder()
            async for chunk in response.aiter_raw():
                decoder_events += decoder.feed(chunk)
                if len(decoder_events) >= 4 and not cancelled:
                    cancelled = True
                    reply = await client.delete(f"{b}/v1/streams/{sid}")
                    assert reply.json()["status"] == "cancelled"
        last = decoder_events[-1]
        assert last.event == "error" and last.json()["type"] == "error"
        assert "cancelled" in last.json()["error"]["message"]
        assert not any(e.event == "message_stop" for e in decoder_events)


# -- the browser -------------------------------------------------------------------------------


def test_chat_page_resumes_through_a_dropped_connection(browser: Any) -> None:
    with serve(create_app(config(resume="memory"))) as url:
        whole = httpx2.get(url + "/chat/stream?message=hello&agent=paced", timeout=20)
        expected = "".join(
            orjson.loads(line[6:])["chunk"]
            for line in whole.text.splitlines()
            if line.startswith('data: {"chunk"')
        )
        proxy = Proxy(int(url.rsplit(":", 1)[1]))
        try:
            page = browser.new_page()
            page.goto(proxy.url + "/")
            page.wait_for_function("document.querySelectorAll('#agent option').length > 0")
            page.select_option("#agent", "paced")
            page.fill("#message", "hello")
            page.click("#send")
            page.wait_for_function(
                "(document.querySelector('.assistant .text')?.textContent || '').length > 20"
            )
            before = proxy.connections
            proxy.cut()
            page.wait_for_selector(".assistant[data-state=done]", timeout=20000)
            text = page.text_content(".assistant .text")
            assert proxy.connections > before  # the browser reconnected by itself
            assert text == expected
            page.close()
        finally:
            proxy.close()
