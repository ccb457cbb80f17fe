"""A scripted LLM upstream for gateway tests: real HTTP, every wire protocol.

The upstream's behaviour is chosen by the requested model name, so one server covers
every scenario; it records the requests it got and when each stream's producer ended.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.protocol import get_protocol
from tokenwire.server import EventStreamResponse

TEXT = ["Hello", ", ", "world", "!"]
# A reply in Markdown (model "markdown"), streamed word by word at a model's pace.
MARKDOWN = (
    "Here is a **short** example, with `inline code` and a *little* emphasis:\n\n"
    "```python\n"
    "def greet(name: str) -> str:\n"
    '    return f"Hello, {name}! This line is long enough to scroll in its own box."\n'
    "```\n\n"
    "- streamed token by token\n"
    "- rendered as [Markdown](https://commonmark.org/)\n"
)


def script(model: str) -> list[Delta | float]:
    """The deltas (and pauses, as floats) an upstream model produces."""
    start: list[Delta | float] = [
        MessageStart(id="up-1", model=f"{model}-upstream", usage=Usage(input_tokens=11))
    ]
    text: list[Delta | float] = [TextDelta(t) for t in TEXT]
    end: list[Delta | float] = [
        FinishDelta("stop", raw_reason="end_turn"),
        UsageDelta(Usage(input_tokens=11, output_tokens=4)),
    ]
    if model == "tools":
        return [
            *start,
            TextDelta("Let me check."),
            ToolCallDelta(0, id="call_a", name="get_weather", arguments=""),
            ToolCallDelta(0, arguments='{"city":'),
            ToolCallDelta(0, arguments=' "Paris"}'),
            ToolCallDelta(1, id="call_b", name="get_time", arguments='{"tz": "CET"}'),
            FinishDelta("tool_calls", raw_reason="tool_use"),
            UsageDelta(Usage(input_tokens=11, output_tokens=20)),
        ]
    if model == "think":
        return [*start, ReasoningDelta("Pondering."), ReasoningDelta(signature="sig"), *text, *end]
    if model == "slow":
        return [*start, *[x for t in TEXT * 50 for x in (TextDelta(t), 0.05)], *end]
    if model == "late":
        return [*start, 1.5, *text, *end]
    if model == "stall":
        return [*start, TextDelta("Hel"), 30.0, *text, *end]
    if model == "markdown":
        words = [*re.findall(r"\s*\S+", MARKDOWN), "\n"]
        return [
            *start,
            *[x for w in words for x in (TextDelta(w), 0.02)],
            FinishDelta("stop", raw_reason="end_turn"),
            UsageDelta(Usage(input_tokens=11, output_tokens=len(words))),
        ]
    if model == "midfail":
        error: dict[str, object] = {"type": "overloaded_error", "message": "upstream overloaded"}
        return [
            *start,
            TextDelta("Hel"),
            ErrorDelta("overloaded_error", "upstream overloaded", error),
        ]
    return [*start, *text, *end]


@dataclass
class Upstream:
    """State shared between the upstream server and the test."""

    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)
    open_streams: int = 0


def upstream_app(state: Upstream) -> Starlette:
    async def stream(deltas: list[Delta | float], encoder: Any, cut: bool) -> AsyncIterator[bytes]:
        state.open_streams += 1
        try:
            for item in deltas:
                if isinstance(item, float):
                    await asyncio.sleep(item)
                    continue
                out = encoder.encode(item)
                if out:
                    yield out
                if encoder.ended:
                    return
            if not cut:
                yield encoder.done()
        finally:
            state.open_streams -= 1
            state.finished_at.append(time.monotonic())

    async def handle(request: Request, protocol: str) -> Response:
        body = orjson.loads(await request.body())
        state.requests.append((protocol, body, dict(request.headers)))
        # Gemini names the model in the path; the others in the body.
        model = request.path_params.get("model") or body["model"]
        if model == "ratelimit":
            error: dict[str, Any]
            if protocol == "anthropic":
                error = {
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "slow down"},
                }
            elif protocol == "gemini":
                error = {
                    "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
                }
            else:
                error = {
                    "error": {
                        "message": "slow down",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                }
            return Response(
                orjson.dumps(error),
                status_code=429,
                headers={"retry-after": "7"},
                media_type="application/json",
            )
        if model == "echo-key":
            key = _given_key(request)
            error = {
                "error": {
                    "message": f"Incorrect API key provided: {key}",
                    "type": "invalid_request_error",
                }
            }
            return Response(orjson.dumps(error), status_code=401, media_type="application/json")
        deltas = script(model)
        if model == "echo-key-stream":
            # A careless upstream that repeats the caller's credentials in its reply.
            key = _given_key(request)
            bad: dict[str, object] = {"type": "authentication_error", "message": f"bad key {key}"}
            deltas = [
                deltas[0],
                TextDelta(f"your key is {key}"),
                ErrorDelta("authentication_error", f"bad key {key}", bad),
            ]
        encoder: Any
        if protocol == "openai":
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            encoder = OpenAIChunkEncoder(include_usage=include)
        elif protocol == "anthropic":
            encoder = AnthropicEventEncoder()
        else:
            encoder = get_protocol(protocol).encoder()
        return EventStreamResponse(stream(deltas, encoder, cut=model == "cut"), ping=None)

    async def openai_route(request: Request) -> Response:
        return await handle(request, "openai")

    async def anthropic_route(request: Request) -> Response:
        return await handle(request, "anthropic")

    async def responses_route(request: Request) -> Response:
        return await handle(request, "responses")

    async def gemini_route(request: Request) -> Response:
        return await handle(request, "gemini")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", openai_route, methods=["POST"]),
            Route("/v1/messages", anthropic_route, methods=["POST"]),
            Route("/v1/responses", responses_route, methods=["POST"]),
            Route("/v1beta/models/{model}:streamGenerateContent", gemini_route, methods=["POST"]),
        ]
    )


def _given_key(request: Request) -> str | None:
    headers = request.headers
    return headers.get("authorization") or headers.get("x-api-key") or headers.get("x-goog-api-key")


def gateway_config(upstream_url: str, **gateway: Any) -> dict[str, Any]:
    """A configuration routing ``oa/*``, ``an/*``, ``rs/*`` and ``gm/*`` style names to
    the test upstream (OpenAI chat completions, Anthropic Messages, OpenAI Responses,
    Gemini)."""
    return {
        "providers": {
            "oa": {"type": "openai", "base_url": upstream_url + "/v1", "expose": True},
            "an": {
                "type": "anthropic",
                "base_url": upstream_url,
                "api_key_env": "TW_TEST_UPSTREAM_KEY",
                "expose": True,
            },
            "rs": {
                "type": "openai-responses",
                "base_url": upstream_url + "/v1",
                "api_key_env": "TW_TEST_UPSTREAM_KEY",
                "expose": True,
            },
            "gm": {
                "type": "gemini",
                "base_url": upstream_url + "/v1beta",
                "api_key_env": "TW_TEST_UPSTREAM_KEY",
                "expose": True,
            },
            "slowdemo": {"type": "demo", "time_to_first_token": 0.05, "time_per_token": 0.01},
        },
        "models": {
            "first-token-deadline": {
                "provider": "oa",
                "model": "late",
                "timeouts": {"first_token": 0.3},
            },
            "idle-deadline": {"provider": "an", "model": "stall", "timeouts": {"idle": 0.3}},
        },
        "agents": {"paced": {"provider": "slowdemo"}},
        "gateway": gateway,
    }
