"""The gateway, as users meet it: the official SDKs against a real gateway in front of a
real upstream, in both directions of translation."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app

from .conftest import ARTIFACTS, serve
from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app

UPSTREAM_KEY = "sk-upstream-secret-123"


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()
    with serve(upstream_app(state)) as url:
        yield state, url


@pytest.fixture
def gateway(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Upstream, str]]:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    state, url = upstream
    with serve(create_app(from_mapping(gateway_config(url, ping=0.2)))) as gateway_url:
        yield state, gateway_url


def openai_client(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw
    )


def anthropic_client(url: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw
    )


TOOLS_OPENAI = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
TOOLS_ANTHROPIC = [
    {"name": "get_weather", "input_schema": {"type": "object"}},
    {"name": "get_time", "input_schema": {"type": "object"}},
]


# --- OpenAI clients ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["oa/text", "an/text"], ids=["passthrough", "from-anthropic"])
def test_openai_sdk_streams_text_and_usage(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    client = openai_client(url)
    chunks = list(
        client.chat.completions.create(
            model=route,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TEXT)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 4)
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("route", ["oa/tools", "an/tools"], ids=["passthrough", "from-anthropic"])
def test_openai_sdk_stream_helper_accumulates_tool_calls(
    gateway: tuple[Upstream, str], route: str
) -> None:
    state, url = gateway
    client = openai_client(url)
    with client.chat.completions.stream(
        model=route,
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS_OPENAI,
        stream_options={"include_usage": True},
    ) as stream:
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Let me check."
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert calls == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.completion_tokens == 20
    # The tools reached the upstream in its own protocol.
    protocol, body, _ = state.requests[-1]
    if route.startswith("an/"):
        assert protocol == "anthropic"
        assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]
        assert body["max_tokens"] == 4096
    else:
        assert body["tools"] == TOOLS_OPENAI


def test_openai_sdk_non_streaming(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    completion = openai_client(url).chat.completions.create(
        model="an/tools", messages=[{"role": "user", "content": "x"}], tools=TOOLS_OPENAI
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert completion.usage is not None and completion.usage.prompt_tokens == 11


def test_openai_sdk_reasoning_from_anthropic_thinking(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    chunks = list(
        openai_client(url).chat.completions.create(
            model="an/think", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "Pondering."
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)


# --- Anthropic clients ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["an/tools", "oa/tools"], ids=["passthrough", "from-openai"])
def test_anthropic_sdk_streams_tool_use(gateway: tuple[Upstream, str], route: str) -> None:
    state, url = gateway
    client = anthropic_client(url)
    with client.messages.stream(
        model=route,
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS_ANTHROPIC,
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Let me check."
    tool_uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tool_uses == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 20
    assert message.usage.input_tokens == 11
    protocol, body, headers = state.requests[-1]
    if route.startswith("oa/"):
        assert protocol == "openai"
        assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert headers["x-api-key"] == UPSTREAM_KEY  # the upstream key from the environment
        assert headers["anthropic-version"]


@pytest.mark.parametrize("route", ["an/text", "oa/text"], ids=["passthrough", "from-openai"])
def test_anthropic_sdk_text_and_non_streaming(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    client = anthropic_client(url)
    with client.messages.stream(
        model=route, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream) == "".join(TEXT)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 4)
    whole = client.messages.create(
        model=route, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.content[0].text == "".join(TEXT)
    assert whole.stop_reason == "end_turn"


def test_stop_sequences_and_system_are_translated(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    openai_client(url).chat.completions.create(
        model="an/text",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}],
        stop=["END"],
        temperature=0.5,
    )
    _, body, _ = state.requests[-1]
    assert body["system"] == "be brief"
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.5


# --- failures -----------------------------------------------------------------------------------


def test_upstream_error_status_before_first_byte(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(url).chat.completions.create(
            model="oa/ratelimit", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client(url).messages.create(
            model="oa/ratelimit",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )


def test_unreachable_upstream_is_a_gateway_error(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here
    config = gateway_config(f"http://127.0.0.1:{port}")
    with serve(create_app(from_mapping(config))) as url:
        with pytest.raises(openai.APIStatusError) as info:
            openai_client(url).chat.completions.create(
                model="oa/text", messages=[{"role": "user", "content": "x"}], stream=True
            )
        assert info.value.status_code == 502


def test_in_band_error_after_first_byte(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    received = []
    with pytest.raises(openai.APIError, match="upstream overloaded"):
        for chunk in openai_client(url).chat.completions.create(
            model="an/midfail", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "Hel" in received
    with (
        pytest.raises(anthropic.APIStatusError, match="upstream overloaded"),
        anthropic_client(url).messages.stream(
            model="oa/midfail", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        list(stream.text_stream)


def test_anthropic_stream_cut_before_message_stop_gets_an_error_event(
    gateway: tuple[Upstream, str],
) -> None:
    _, url = gateway
    # Without the gateway's error event the SDK would return a short message silently.
    with (
        pytest.raises(anthropic.APIStatusError, match=r"message_stop|ended|cut"),
        anthropic_client(url).messages.stream(
            model="an/cut", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_first_token_deadline_and_heartbeats(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    body = {
        "model": "first-token-deadline",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    started = time.monotonic()
    with httpx2.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_raw())
    assert time.monotonic() - started < 5
    # Heartbeats kept the connection alive while waiting; then the deadline's error.
    assert raw.startswith(b": ping")
    assert raw.index(b": ping") < raw.index(b'"error"')
    assert b'"code":"first_chunk_timeout"' in raw
    with pytest.raises(openai.APIError, match="first"):
        list(
            openai_client(url).chat.completions.create(
                model="first-token-deadline",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
            )
        )


def test_idle_deadline_on_anthropic_route(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    with (
        pytest.raises(anthropic.APIStatusError, match="idle"),
        anthropic_client(url).messages.stream(
            model="idle-deadline", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        list(stream.text_stream)


def test_heartbeat_before_first_token(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    body = {"model": "oa/late", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx2.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
        first = next(response.iter_raw())
    assert first.startswith(b": ping") or first.startswith(b":")


def test_client_disconnect_closes_the_upstream(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    body = {"model": "oa/slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
    for _ in range(3):
        count = len(state.finished_at)
        with httpx2.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
            for chunk in response.iter_raw():
                if b"Hello" in chunk:
                    break
            closed_at = time.monotonic()
        deadline = time.monotonic() + 5
        while len(state.finished_at) == count and time.monotonic() < deadline:
            time.sleep(0.002)
        assert len(state.finished_at) == count + 1, "the upstream stream was not closed"
        lag = state.finished_at[-1] - closed_at
        assert lag < 2.0, f"upstream closed {lag * 1000:.0f} ms after the client left"
    assert state.open_streams == 0


def test_upstream_key_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, upstream: tuple[Upstream, str]
) -> None:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    _, up = upstream
    with serve(create_app(from_mapping(gateway_config(up)))) as url:
        response = httpx2.post(
            url + "/v1/messages",
            json={
                "model": "an/echo-key",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
    assert response.status_code == 401
    assert UPSTREAM_KEY not in response.text
    assert "***" in response.text


# --- gateway settings ---------------------------------------------------------------


def test_gateway_api_keys(upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_GATEWAY_KEYS", "gw-key-1,gw-key-2")
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    _, up = upstream
    config = gateway_config(up, api_keys_env="TW_TEST_GATEWAY_KEYS")
    with serve(create_app(from_mapping(config))) as url:
        with pytest.raises(openai.AuthenticationError):
            openai_client(url, api_key="wrong").chat.completions.create(
                model="oa/text", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.AuthenticationError):
            anthropic_client(url, api_key="wrong").messages.create(
                model="oa/text", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        ok = openai_client(url, api_key="gw-key-2").chat.completions.create(
            model="oa/text", messages=[{"role": "user", "content": "x"}]
        )
        assert ok.choices[0].message.content == "".join(TEXT)
        ok2 = anthropic_client(url, api_key="gw-key-1").messages.create(
            model="an/text", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        assert ok2.content[0].text == "".join(TEXT)
        assert httpx2.get(url + "/chat/stream?message=hi").status_code == 401
        assert httpx2.get(url + "/healthz").status_code == 200


def test_cors_preflight(upstream: tuple[Upstream, str]) -> None:
    _, up = upstream
    config = gateway_config(up, cors_origins=["http://app.example"])
    with serve(create_app(from_mapping(config))) as url:
        response = httpx2.options(
            url + "/v1/chat/completions",
            headers={
                "origin": "http://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://app.example"
        denied = httpx2.options(
            url + "/v1/chat/completions",
            headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in denied.headers


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "demo"}', 400, "messages"),
        (
            "/v1/chat/completions",
            b'{"model":"demo","messages":[{"role":"user","content":"x"}],"temperature":9}',
            400,
            "temperature",
        ),
        (
            "/v1/chat/completions",
            b'{"model":"nope","messages":[{"role":"user","content":"x"}]}',
            404,
            "unknown model",
        ),
        (
            "/v1/messages",
            b'{"model":"demo","messages":[{"role":"user","content":"x"}]}',
            400,
            "max_tokens",
        ),
        ("/v1/messages", b"x" * 2_000_000, 413, "larger than"),
    ],
)
def test_malformed_requests_get_protocol_errors(
    path: str, body: bytes, status: int, needle: str
) -> None:
    with serve(create_app(from_mapping({}))) as url:
        response = httpx2.post(
            url + path, content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    error = response.json()
    if path == "/v1/messages":
        assert error["type"] == "error" and needle in error["error"]["message"]
    else:
        assert needle in error["error"]["message"]


def test_models_metrics_health_and_access_log(
    gateway: tuple[Upstream, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = gateway
    caplog.set_level(logging.INFO, logger="tokenwire.gateway.access")
    models = openai_client(url).models.list()
    assert "demo" in [m.id for m in models]
    assert [m.id for m in anthropic_client(url).models.list()]
    list(
        openai_client(url).chat.completions.create(
            model="an/text", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    with pytest.raises(openai.NotFoundError):
        openai_client(url).chat.completions.create(
            model="missing", messages=[{"role": "user", "content": "x"}]
        )
    metrics = httpx2.get(url + "/metrics").text
    assert (
        'tokenwire_requests_total{endpoint="/v1/chat/completions",model="an/text",status="200"} 1'
        in metrics
    )
    assert 'tokenwire_time_to_first_token_seconds_count{model="an/text",upstream="an"} 1' in metrics
    assert 'tokenwire_tokens_total{model="an/text",upstream="an",direction="output"} 4' in metrics
    assert 'tokenwire_errors_total{category="not_found",upstream="-"} 1' in metrics
    assert "tokenwire_active_streams 0" in metrics
    assert httpx2.get(url + "/healthz").json() == {"status": "ok"}
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenwire.gateway.access"
    ]
    ok = next(line for line in lines if line["model"] == "an/text")
    assert ok["upstream"] == "an" and ok["outcome"] == "ok" and ok["ttft_ms"] is not None
    assert ok["output_tokens"] == 4 and len(ok["stream_id"]) == 16
    assert UPSTREAM_KEY not in caplog.text


def test_browser_format_stream_and_agents(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    with httpx2.stream(
        "GET", url + "/chat/stream", params={"message": "hi", "agent": "paced"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all("chunk" in json.loads(e[6:]) for e in events[:-1])
    assert len(events) > 3
    # Agents are listed by name only: providers and models are the server's business.
    assert {"id": "paced", "object": "agent"} in httpx2.get(url + "/v1/agents").json()["data"]
    unknown = httpx2.get(url + "/chat/stream", params={"message": "hi", "agent": "nobody"})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]
    assert httpx2.get(url + "/chat/stream").status_code == 400


def test_chat_page_in_chromium(browser: Any) -> None:
    config = from_mapping(
        {
            "providers": {
                "paced": {"type": "demo", "time_to_first_token": 0.05, "time_per_token": 0.01},
                "broken": {"type": "demo", "fail_after": 3},
            },
            "agents": {"assistant": {"provider": "paced"}, "broken": {"provider": "broken"}},
        }
    )
    with serve(create_app(config)) as url:
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.wait_for_selector("#agent option[value=broken]", state="attached")
            page.fill("#message", "Tell me a story")
            page.click("#send")
            page.wait_for_selector(".assistant[data-state=done]", timeout=15_000)
            reply = page.inner_text(".assistant .text")
            stats = page.inner_text(".assistant .stats")
            assert len(reply.split()) > 5
            assert "time to first token" in stats and "tokens/s" in stats
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)
            # An error mid-reply is shown, not swallowed.
            page.select_option("#agent", "broken")
            page.fill("#message", "again")
            page.click("#send")
            page.wait_for_selector(".assistant[data-state=error]", timeout=15_000)
            assert "overloaded" in page.inner_text(".assistant.error .stats")
        finally:
            page.close()
