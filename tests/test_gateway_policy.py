"""What the gateway lets clients reach and see: exposed providers only, bounded metric
labels, upstream keys scrubbed from everything forwarded, keys checked safely,
resumable streams bound to their key, and no traceback for odd input. Real gateway and
upstream on loopback; the official SDKs or raw HTTP as clients."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app
from tokenwire.gateway.app import Gateway
from tokenwire.sse import SSEDecoder

from .conftest import serve
from .gateway_helpers import Upstream, gateway_config, upstream_app
from .hostile_helpers import Exchange, gateway_process, openai_sse, raw_upstream, sse_head

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-upstream-secret-123"
KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"


@pytest.fixture
def upstream() -> Iterator[str]:
    with serve(upstream_app(Upstream())) as url:
        yield url


def gateway_of(app: Any) -> Gateway:
    """The Gateway behind an app from create_app (its routes are its bound methods)."""
    inner = app if hasattr(app, "routes") else app.app  # behind CORSMiddleware
    return next(r.endpoint.__self__ for r in inner.routes if hasattr(r.endpoint, "__self__"))


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}


# --- 4. PROVIDER/MODEL is opt-in --------------------------------------------------------


def test_provider_models_are_reachable_only_where_exposed(
    upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    config = gateway_config(upstream)
    config["providers"]["private"] = {"type": "openai", "base_url": upstream + "/v1"}
    config["providers"]["listed"] = {
        "type": "openai",
        "base_url": upstream + "/v1",
        "expose": ["text"],
    }
    config["agents"]["internal"] = {"provider": "private", "model": "text"}
    with serve(create_app(from_mapping(config))) as url:
        oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        for model in ("private/text", "listed/tools", "openai/gpt-4o", "anthropic/claude-x"):
            with pytest.raises(openai.NotFoundError):
                oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        reply = oa.chat.completions.create(
            model="listed/text", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content == "Hello, world!"
        # The agent still uses its provider.
        with httpx2.stream(
            "GET", url + "/chat/stream", params={"message": "hi", "agent": "internal"}
        ) as r:
            assert r.status_code == 200
            assert any(line == "data: [DONE]" for line in r.iter_lines())


# --- 5. client-chosen names do not grow metrics, memory or logs -----------------------------


def test_unknown_and_long_model_names_do_not_grow_metrics(
    upstream: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    app = create_app(from_mapping(gateway_config(upstream)))
    caplog.set_level(logging.INFO, logger="tokenwire.gateway.access")
    with serve(app) as url, httpx2.Client(base_url=url) as http:
        size_before = len(http.get("/metrics").text)
        for i in range(300):
            name = f"zz{i}-" + "q" * 20_000
            assert http.post("/v1/chat/completions", json=chat_body(name)).status_code == 404
        metrics = http.get("/metrics").text
        assert "zz1-" not in metrics
        assert len(metrics) < size_before + 2_000
        # Routed names are labels, truncated; an exposed provider's names are capped.
        for i in range(30):
            http.post("/v1/chat/completions", json=chat_body(f"oa/text-{i}-" + "w" * 500))
        metrics = http.get("/metrics").text
        labels = re.findall(r'model="([^"]*)"', metrics)
        assert labels and max(map(len, labels)) <= 100
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert max(len(line["model"]) for line in lines) <= 100
    assert "q" * 200 not in caplog.text


def test_metric_series_are_capped() -> None:
    from tokenwire.gateway.metrics import Counter, Histogram

    counter = Counter("c", "help", ("model",), max_series=3)
    histogram = Histogram("h", "help", (1.0,), ("model",), max_series=3)
    for i in range(10):
        counter.inc(f"m{i}")
        histogram.observe(0.5, f"m{i}")
    assert len(counter.values) == 4 and counter.get("other") == 7
    assert len(histogram.data) == 4 and histogram.count("other") == 7


# --- 6. the upstream's key never reaches a client -------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/messages", {"anthropic-version": "2023-06-01"}, {"max_tokens": 5, "stream": True}),
        ("/v1/chat/completions", {}, {"stream": True}),
        ("/v1/chat/completions", {}, {"stream": False}),
        ("/v1/messages", {"anthropic-version": "2023-06-01"}, {"max_tokens": 5}),
    ],
    ids=["passthrough", "translated", "whole-translated", "whole-same"],
)
def test_the_upstream_key_is_scrubbed_from_every_reply(
    upstream: str,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    with serve(create_app(from_mapping(gateway_config(upstream)))) as url:
        response = httpx2.post(
            url + path, json=chat_body("an/echo-key-stream", **body), headers=headers
        )
    assert UPSTREAM_KEY not in response.text
    assert "***" in response.text, response.text


# --- 8. odd input gets a clear 4xx, never a traceback -----------------------------------------


@pytest.fixture
def keyed_gateway(upstream: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("TW_TEST_KEYS", f"{KEY_A},{KEY_B}")
    config = gateway_config(upstream, api_keys_env="TW_TEST_KEYS", resume="memory")
    app = create_app(from_mapping(config))
    with serve(app) as url:
        yield url, app


def raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_non_ascii_keys_get_401(
    keyed_gateway: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = keyed_gateway
    for value in ("Bearer caf\xe9".encode("latin-1"), "Bearer café".encode()):
        head = raw_request(
            url,
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n",
        )
        assert head.startswith(b"HTTP/1.1 401"), head
    assert "Traceback" not in caplog.text


def test_absurd_last_event_ids_get_400(keyed_gateway: tuple[str, Any]) -> None:
    url, _ = keyed_gateway
    response = httpx2.post(
        url + "/v1/chat/completions",
        json=chat_body("oa/text", stream=True),
        headers={"authorization": f"Bearer {KEY_A}", "last-event-id": "abc-" + "9" * 5000},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event_id"


def test_deeply_nested_tools_get_400_and_leave_no_stream_behind(
    keyed_gateway: tuple[str, Any],
) -> None:
    url, app = keyed_gateway
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    response = httpx2.post(
        url + "/v1/chat/completions",
        json=chat_body("oa/text", stream=True, tools=tools),
        headers={"authorization": f"Bearer {KEY_A}"},
    )
    assert response.status_code == 400, response.text
    streams = gateway_of(app).streams
    assert streams is not None and not streams._local


def test_clients_leaving_mid_body_log_no_traceback(
    keyed_gateway: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = keyed_gateway
    port = int(url.rsplit(":", 1)[1])
    caplog.set_level(logging.INFO)
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + KEY_A.encode() + b"\r\n"
                b"Content-Length: 10000\r\n\r\n" + b'{"model": "oa/text", '
            )
    # The gateway sees every one of them leave (logged as disconnects, status 499).
    metrics_url = url + "/metrics"

    def disconnects() -> int:
        text = httpx2.get(metrics_url).text
        return sum(
            int(n) for n in re.findall(r'tokenwire_requests_total\{[^}]*status="499"\} (\d+)', text)
        )

    from .hostile_helpers import wait_until

    assert wait_until(lambda: disconnects() == 50, 10)
    assert "Traceback" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text


# --- 9. what clients can learn, and whose streams they can touch ------------------------------


def test_agents_list_needs_a_key_and_shows_names_only(keyed_gateway: tuple[str, Any]) -> None:
    url, _ = keyed_gateway
    assert httpx2.get(url + "/v1/agents").status_code == 401
    data = httpx2.get(url + "/v1/agents", headers={"x-api-key": KEY_A}).json()["data"]
    assert {"id": "paced", "object": "agent"} in data
    assert "slowdemo" not in str(data)


def start_stream(url: str, key: str) -> tuple[str, list[str]]:
    """A resumable stream made with ``key``: its id, and its events' ids."""
    with httpx2.stream(
        "POST",
        url + "/v1/chat/completions",
        json=chat_body("oa/text", stream=True),
        headers={"authorization": f"Bearer {key}"},
    ) as response:
        assert response.status_code == 200
        stream_id = response.headers["x-tokenwire-stream-id"]
        decoder = SSEDecoder()
        ids = [e.id for chunk in response.iter_bytes() for e in decoder.feed(chunk) if e.id]
    return stream_id, ids  # type: ignore[return-value]


def test_resumable_streams_belong_to_the_key_that_made_them(
    keyed_gateway: tuple[str, Any],
) -> None:
    url, _ = keyed_gateway
    stream_id, ids = start_stream(url, KEY_A)
    assert ids and all(i.startswith(stream_id + "-") for i in ids)
    resume = {"last-event-id": ids[0]}
    other = httpx2.post(
        url + "/v1/chat/completions",
        json=chat_body("oa/text", stream=True),
        headers={"authorization": f"Bearer {KEY_B}", **resume},
    )
    assert other.status_code == 404
    own = httpx2.post(
        url + "/v1/chat/completions",
        json=chat_body("oa/text", stream=True),
        headers={"authorization": f"Bearer {KEY_A}", **resume},
    )
    assert own.status_code == 200 and "[DONE]" in own.text
    # The other protocol's endpoint does not serve it either.
    wrong = httpx2.post(
        url + "/v1/messages",
        json=chat_body("oa/text", stream=True, max_tokens=5),
        headers={"x-api-key": KEY_A, "anthropic-version": "2023-06-01", **resume},
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "invalid_request_error"
    for key, status in ((KEY_B, 404), (KEY_A, 200)):
        cancel = httpx2.delete(
            f"{url}/v1/streams/{stream_id}", headers={"authorization": f"Bearer {key}"}
        )
        assert cancel.status_code == status


def test_upstream_event_ids_never_replace_the_gateways(tmp_path: Path) -> None:
    async def with_ids(exchange: Exchange) -> None:
        body = openai_sse("hello there", event_id="upstream-7")
        await exchange.send(sse_head(length=len(body)) + body)

    with raw_upstream(with_ids) as up:
        config = {
            "providers": {"raw": {"type": "openai", "base_url": up.url + "/v1"}},
            "models": {"raw": {"provider": "raw"}},
            "gateway": {"resume": "memory"},
        }
        with serve(create_app(from_mapping(config))) as url:
            stream_id, ids = start_stream_plain(url)
            assert ids and all(i.startswith(stream_id + "-") for i in ids)
            oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            # Resuming after the first event gives exactly the rest.
            resumed = oa.chat.completions.create(
                model="raw",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                extra_headers={"last-event-id": ids[0]},
            )
            assert "".join(c.choices[0].delta.content or "" for c in resumed if c.choices) == (
                "hello there"
            )


def start_stream_plain(url: str) -> tuple[str, list[str]]:
    with httpx2.stream(
        "POST", url + "/v1/chat/completions", json=chat_body("raw", stream=True)
    ) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        decoder = SSEDecoder()
        ids = [e.id for chunk in response.iter_bytes() for e in decoder.feed(chunk) if e.id]
    return stream_id, ids  # type: ignore[return-value]


def test_errors_and_access_log_show_no_paths_or_secrets(tmp_path: Path) -> None:
    config = '[gateway]\napi_keys_env = "TW_TEST_KEYS"\n'
    env = {"TW_TEST_KEYS": KEY_A}
    with gateway_process(config, tmp_path, "--access-log", env=env) as gw:
        headers = {"authorization": f"Bearer {KEY_A}"}
        missing = httpx2.post(
            gw.url + "/v1/chat/completions", json=chat_body("nope"), headers=headers
        )
        assert missing.status_code == 404
        assert str(tmp_path) not in missing.text and "tokenwire.toml" not in missing.text
        with httpx2.stream(
            "GET", gw.url + "/chat/stream", params={"message": "hi", "api_key": KEY_A}
        ) as r:
            assert r.status_code == 200
            r.read()
        gw.proc.send_signal(2)
        out, err = gw.proc.communicate(timeout=15)
    logged = out + err
    assert "/chat/stream?message=hi&api_key=***" in logged
    assert KEY_A not in logged


def test_anthropic_sdk_against_a_keyed_resumable_gateway(keyed_gateway: tuple[str, Any]) -> None:
    url, _ = keyed_gateway
    client = anthropic.Anthropic(base_url=url, api_key=KEY_B, max_retries=0)
    with client.messages.stream(
        model="an/text", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        assert stream.get_final_text() == "Hello, world!"
