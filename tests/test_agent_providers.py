"""Agents over HTTP: real local servers speaking the OpenAI and Anthropic protocols
(tokenwire's own senders on uvicorn), read by the ``openai`` / ``anthropic`` providers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import serve
from tokenwire.agent import Agent, get_agent
from tokenwire.errors import StreamError
from tokenwire.llm.model import TextDelta, Usage
from tokenwire.providers import HTTPProvider
from tokenwire.server import AnthropicSender, OpenAISender

SECRET = "sk-test-never-show-me-0123456789"
PROTOCOLS = ["openai", "anthropic"]


@dataclass
class Upstream:
    """What the fake upstream should send, and what it saw."""

    pieces: list[str] = field(default_factory=lambda: ["Once", " upon", " a time."])
    pause: float = 0.0
    fail_after: int | None = None
    stall_after: int | None = None
    error_status: int | None = None
    error_body: dict[str, Any] | None = None
    error_headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


def make_app(up: Upstream) -> Starlette:
    tasks: set[asyncio.Task[None]] = set()

    async def produce(sender: Any, protocol: str) -> None:
        async with sender:
            for i, piece in enumerate(up.pieces):
                if up.fail_after is not None and i == up.fail_after:
                    await sender.send_error(StreamError("overloaded", "Upstream overloaded"))
                    return
                if up.stall_after is not None and i == up.stall_after:
                    await asyncio.sleep(30)
                if up.pause:
                    await asyncio.sleep(up.pause)
                await sender.send(piece)
            usage = Usage(input_tokens=11, output_tokens=len(up.pieces))
            if protocol == "openai":
                await sender.send_finish("stop", usage=usage)
            else:
                await sender.send_finish("end_turn", usage=usage)
            up.finished.set()

    async def handle(request: Request, protocol: str) -> Response:
        up.requests.append(await request.json())
        up.headers.append(dict(request.headers))
        if up.error_status is not None:
            return JSONResponse(up.error_body, up.error_status, headers=up.error_headers)
        kind = OpenAISender if protocol == "openai" else AnthropicSender
        sender, response = kind.create(
            model=up.requests[-1]["model"], on_disconnect=up.disconnected.set
        )
        task = asyncio.create_task(produce(sender, protocol))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return response

    async def openai(request: Request) -> Response:
        return await handle(request, "openai")

    async def anthropic(request: Request) -> Response:
        return await handle(request, "anthropic")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", openai, methods=["POST"]),
            Route("/v1/messages", anthropic, methods=["POST"]),
        ]
    )


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream()
    with serve(make_app(up)) as url:
        yield up, url


def agent_for(protocol: str, url: str, **kwargs: Any) -> Agent:
    provider: Any
    if protocol == "openai":
        provider = HTTPProvider("openai", protocol="openai", base_url=url + "/v1", api_key=SECRET)
    else:
        provider = HTTPProvider("anthropic", protocol="anthropic", base_url=url, api_key=SECRET)
    return Agent(provider, model=f"{protocol}-test", **kwargs)


def wait_for(event: threading.Event, seconds: float = 2.0) -> bool:
    return event.wait(seconds)


async def until(event: threading.Event, seconds: float = 2.0) -> bool:
    """``wait_for`` without blocking the event loop (closing a connection completes on
    the loop's next turn)."""
    return await asyncio.to_thread(event.wait, seconds)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reply_streams_over_http(protocol: str, upstream) -> None:
    up, url = upstream
    agent = agent_for(protocol, url, system="Be kind.")
    async with agent.stream("Tell me a story") as stream:
        chunks = [d.text async for d in stream if isinstance(d, TextDelta)]
    assert chunks == ["Once", " upon", " a time."]
    message = stream.message
    assert message.text == "Once upon a time."
    assert message.finish_reason == "stop"
    assert message.usage.output_tokens == 3 and message.usage.input_tokens == 11
    body, headers = up.requests[0], up.headers[0]
    assert body["stream"] is True and body["model"] == f"{protocol}-test"
    if protocol == "openai":
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"] == [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Tell me a story"},
        ]
    else:
        assert headers["x-api-key"] == SECRET and headers["anthropic-version"] == "2023-06-01"
        assert body["system"] == "Be kind." and body["max_tokens"] == 4096
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Tell me a story"}]}
        ]
    await agent.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_multi_turn_history_is_sent(protocol: str, upstream) -> None:
    up, url = upstream
    agent = agent_for(protocol, url)
    assert await agent.chat("Hi") == "Once upon a time."
    assert await agent.chat("Go on") == "Once upon a time."
    sent = up.requests[1]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "user"]
    text = [m["content"] if protocol == "openai" else m["content"][0]["text"] for m in sent]
    assert text == ["Hi", "Once upon a time.", "Go on"]
    assert len(agent.history) == 4
    await agent.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_options_are_passed_through(protocol: str, upstream) -> None:
    up, url = upstream
    agent = agent_for(protocol, url)
    stops = ["a1", "b2", "c3", "d4", "e5"]
    await agent.chat(
        "x", {"temperature": 0.5, "max_tokens": 77, "stop_sequences": stops, "seed": 9}
    )
    body = up.requests[0]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 77
    if protocol == "openai":
        assert body["stop"] == stops[:4] and body["seed"] == 9
    else:
        assert body["stop_sequences"] == stops
    await agent.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stop_sequence_enforced_when_upstream_ignores_it(protocol: str, upstream) -> None:
    up, url = upstream
    up.pieces = ["Hello", " there\n", "\nBye", *(f" {i}" for i in range(100))]
    up.pause = 0.01
    agent = agent_for(protocol, url)
    chunks = [c async for c in agent.chat_stream("x", {"stop_sequences": ["\n\n"]})]
    assert chunks == ["Hello", " there"]
    assert agent.history[-1].content == "Hello there"
    # Reading stopped and the connection was closed: the upstream sees the client leave.
    assert await until(up.disconnected)
    assert not up.finished.is_set()
    await agent.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancellation_mid_stream_closes_the_upstream_connection(
    protocol: str, upstream
) -> None:
    up, url = upstream
    up.pieces = [f"w{i} " for i in range(200)]
    up.pause = 0.02
    agent = agent_for(protocol, url)
    cancel = asyncio.Event()
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x", cancel=cancel):
            got.append(chunk)
            if len(got) == 3:
                cancel.set()
    assert info.value.type == "cancelled"
    assert got == ["w0 ", "w1 ", "w2 "]
    assert await asyncio.to_thread(wait_for, up.disconnected)
    assert agent.history == []
    await agent.aclose()


async def test_task_cancellation_closes_the_upstream_connection(upstream) -> None:
    up, url = upstream
    up.pieces = [f"w{i} " for i in range(200)]
    up.pause = 0.02
    agent = agent_for("openai", url)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in agent.chat_stream("x"):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(wait_for, up.disconnected)
    await agent.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_error_mid_stream_raises_after_the_chunks_received(protocol: str, upstream) -> None:
    up, url = upstream
    up.pieces = ["one ", "two ", "three"]
    up.fail_after = 2
    agent = agent_for(protocol, url)
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x"):
            got.append(chunk)
    assert got == ["one ", "two "]
    assert info.value.type == "overloaded"
    assert "Upstream overloaded" in info.value.message
    assert agent.history == []
    await agent.aclose()


async def test_idle_timeout_over_http_closes_the_connection(upstream) -> None:
    up, url = upstream
    up.stall_after = 1
    agent = agent_for("openai", url, options={"idle_timeout": 0.3})
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x"):
            got.append(chunk)
    assert info.value.type == "timeout" and got == ["Once"]
    assert await asyncio.to_thread(wait_for, up.disconnected)
    await agent.aclose()


async def test_error_response_is_categorized(upstream) -> None:
    up, url = upstream
    up.error_status = 429
    up.error_headers = {"retry-after": "3"}
    up.error_body = {
        "error": {"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}
    }
    agent = agent_for("openai", url)
    with pytest.raises(StreamError) as info:
        await agent.chat("x")
    assert info.value.type == "rate_limit" and info.value.status == 429
    assert info.value.retry_after == 3
    assert "Slow down" in info.value.message
    await agent.aclose()


async def test_rejected_key_is_never_shown(upstream, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    up, url = upstream
    up.error_status = 401
    up.error_body = {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"invalid x-api-key {SECRET}"},
    }
    agent = agent_for("anthropic", url)
    with pytest.raises(StreamError) as info:
        await agent.chat("x")
    err = info.value
    assert err.type == "authentication" and err.status == 401
    shown = "\n".join([str(err), repr(err), err.message, str(err.to_dict()), repr(agent)])
    chain: BaseException | None = err
    while chain is not None:
        shown += str(chain) + repr(getattr(chain, "body", ""))
        chain = chain.__cause__ or chain.__context__
    assert SECRET not in shown
    assert SECRET not in caplog.text
    await agent.aclose()


async def test_connection_refused_is_a_network_error() -> None:
    agent = agent_for("openai", "http://127.0.0.1:9")
    with pytest.raises(StreamError) as info:
        await agent.chat("x")
    assert info.value.type == "network"


async def test_configured_agent_end_to_end(upstream, tmp_path: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    up, url = upstream
    monkeypatch.setenv("LOCAL_LLM_KEY", SECRET)
    config = tmp_path / "tokenwire.toml"
    config.write_text(
        f"""
[providers.local]
type = "openai"
base_url = "{url}/v1"
api_key_env = "LOCAL_LLM_KEY"
headers = {{ "X-Team" = "docs" }}

[providers.claude]
type = "anthropic"
base_url = "{url}"
api_key_env = "LOCAL_LLM_KEY"

[agents.assistant]
provider = "local"
model = "local-model"
options = {{ max_tokens = 64 }}

[agents.writer]
provider = "claude"
model = "claude-test"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("TOKENWIRE_CONFIG", str(config))
    agent = await get_agent()
    assert "".join([c async for c in agent.chat_stream("hi")]) == "Once upon a time."
    assert up.headers[0]["x-team"] == "docs" and up.requests[0]["max_tokens"] == 64
    writer = await get_agent("writer")
    assert await writer.chat("hi") == "Once upon a time."
    assert up.requests[1]["model"] == "claude-test"
    assert SECRET not in caplog.text and SECRET not in repr(agent) + repr(writer)
    await agent.aclose()
    await writer.aclose()


def test_chat_stream_sync_over_http(upstream) -> None:
    up, url = upstream
    agent = agent_for("openai", url)
    assert list(agent.chat_stream_sync("x")) == ["Once", " upon", " a time."]
    assert list(agent.chat_stream_sync("again")) == ["Once", " upon", " a time."]
    assert len(up.requests) == 2 and len(agent.history) == 4


def test_chat_stream_sync_close_early_closes_the_upstream(upstream) -> None:
    up, url = upstream
    up.pieces = [f"w{i} " for i in range(200)]
    up.pause = 0.02
    agent = agent_for("anthropic", url)
    start = time.monotonic()
    for chunk in agent.chat_stream_sync("x"):
        assert chunk == "w0 "
        break
    assert wait_for(up.disconnected, 5), time.monotonic() - start
