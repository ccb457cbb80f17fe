"""Third-party clients whose default is the OpenAI Responses API, through the gateway.

- The OpenAI Agents SDK (``openai-agents``) with its default model, the Responses one:
  a tool loop (the model calls a ``@function_tool``, the SDK runs it and sends the
  result back, the model answers in text), the same loop streamed, and a plain text
  reply from ``demo``.
- The Vercel AI SDK (``ai`` + ``@ai-sdk/openai``, whose default model is the Responses
  one) calling ``streamText`` from a Node script (``tests/js/stream_text.mjs``).

The clients talk to the gateway's ``POST /v1/responses``; the model ``toolbot`` is
routed to a scripted chat-completions upstream defined here, so the gateway translates
the Responses requests to chat completions and the chunks back to Responses events.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from agents import (
    Agent,
    FunctionTool,
    ItemHelpers,
    MessageOutputItem,
    RawResponsesStreamEvent,
    RunConfig,
    RunItemStreamEvent,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
)
from agents.models.openai_provider import OpenAIProvider
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from openai.types.responses import ResponseFunctionToolCall, ResponseTextDeltaEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app
from tokenwire.llm.model import (
    Delta,
    FinishDelta,
    MessageStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.server import EventStreamResponse

from .conftest import JS, serve

pytestmark = pytest.mark.integration

STREAM_TEXT = JS / "stream_text.mjs"

TOOL = "get_weather"
CITY = "Paris"
CALL_ID = "call_weather_1"
QUESTION = f"What is the weather in {CITY}?"
# What the scripted model says once it has the tool's result (the result goes between).
ANSWER_HEAD = ["In ", CITY, " it is "]
ANSWER_TAIL = [" today", "."]
# Usage (input, output tokens) of the two upstream replies: the tool call, then the answer.
CALL_USAGE = (17, 9)
ANSWER_USAGE = (31, 8)
TOTAL_USAGE = (CALL_USAGE[0] + ANSWER_USAGE[0], CALL_USAGE[1] + ANSWER_USAGE[1])
CLIENT_TIMEOUT = 120  # seconds: a bound for one client request or Node run, not a pace


def weather(city: str) -> str:
    return f"sunny and 21 C in {city}"


# --- a scripted chat-completions upstream that calls the tool ------------------------------


@dataclass
class ToolUpstream:
    """The chat-completions requests the scripted upstream got, in order."""

    requests: list[dict[str, Any]] = field(default_factory=list)


def _text(content: Any) -> str:
    """A chat message's content as text (a string, or a list of text parts)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The content of the last ``tool`` message for our call, if any."""
    for message in reversed(messages):
        if message.get("role") == "tool" and message.get("tool_call_id") == CALL_ID:
            return _text(message.get("content"))
    return None


def _offered(body: dict[str, Any]) -> str | None:
    """Why the request does not offer the tool as the script expects (None if it does)."""
    for tool in body.get("tools") or []:
        function = tool.get("function") or {}
        if tool.get("type") == "function" and function.get("name") == TOOL:
            properties = (function.get("parameters") or {}).get("properties") or {}
            if "city" not in properties:
                return f"tool {TOOL} has no 'city' parameter: {function!r}"
            return None
    return f"tool {TOOL} is not offered; tools: {body.get('tools')!r}"


def tool_upstream_app(state: ToolUpstream) -> Starlette:
    """``POST /v1/chat/completions`` for the model ``toolbot``: without our tool's result
    in the messages it calls the tool (arguments in two fragments, finish
    ``tool_calls``); with it, it answers in several text deltas that include the
    result (finish ``stop``)."""

    async def stream(deltas: list[Delta], encoder: OpenAIChunkEncoder) -> AsyncIterator[bytes]:
        for delta in deltas:
            out = encoder.encode(delta)
            if out:
                yield out
        yield encoder.done()

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.requests.append(body)
        turn = len(state.requests)
        result = _tool_result(body.get("messages") or [])
        if result is None:
            problem = _offered(body)
            if problem is not None:
                error = {"message": problem, "type": "invalid_request_error", "code": None}
                return JSONResponse({"error": error}, status_code=400)
            usage = CALL_USAGE
            deltas: list[Delta] = [
                ToolCallDelta(0, id=CALL_ID, name=TOOL, arguments='{"city": '),
                ToolCallDelta(0, arguments=json.dumps(CITY) + "}"),
                FinishDelta("tool_calls"),
            ]
        else:
            usage = ANSWER_USAGE
            pieces = [*ANSWER_HEAD, result, *ANSWER_TAIL]
            deltas = [*(TextDelta(p) for p in pieces), FinishDelta("stop")]
        start = MessageStart(
            id=f"chatcmpl-toolbot-{turn}", model=body["model"], usage=Usage(input_tokens=usage[0])
        )
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        encoder = OpenAIChunkEncoder(include_usage=include)
        script = [start, *deltas, UsageDelta(Usage(input_tokens=usage[0], output_tokens=usage[1]))]
        return EventStreamResponse(stream(script, encoder), ping=None)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


# --- the gateway, with what its clients sent and got ------------------------------------------


@dataclass
class Exchange:
    """One request to the gateway and its reply, as bytes."""

    method: str
    path: str
    body: bytes = b""
    status: int | None = None
    reply: bytearray = field(default_factory=bytearray)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def excerpt(self, limit: int = 3000) -> str:
        return (
            f"{self.method} {self.path}\n{self.body[:limit].decode(errors='replace')}\n"
            f"--> {self.status}\n{bytes(self.reply[:limit]).decode(errors='replace')}"
        )


class Recorder:
    """ASGI middleware keeping every HTTP exchange of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"])
        self.exchanges.append(exchange)

        async def recv() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.body += message.get("body", b"")
            return message

        async def snd(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body":
                exchange.reply += message.get("body", b"")
            await send(message)

        await self.app(scope, recv, snd)

    def responses_calls(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST" and e.path == "/v1/responses"]

    def report(self) -> str:
        """Every exchange, for an assertion message."""
        return "\n\n".join(e.excerpt() for e in self.exchanges) or "(no requests)"


@dataclass
class Setup:
    url: str
    upstream: ToolUpstream
    recorder: Recorder


@pytest.fixture
def setup() -> Iterator[Setup]:
    upstream = ToolUpstream()
    with serve(tool_upstream_app(upstream)) as upstream_url:
        config = {
            "providers": {"scripted": {"type": "openai", "base_url": upstream_url + "/v1"}},
            "models": {"toolbot": {"provider": "scripted", "model": "toolbot-upstream"}},
        }
        recorder = Recorder(create_app(from_mapping(config)))
        with serve(recorder) as url:
            yield Setup(url, upstream, recorder)


# --- OpenAI Agents SDK --------------------------------------------------------------------


def weather_tool(calls: list[str]) -> FunctionTool:
    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city.

        Args:
            city: The city's name.
        """
        calls.append(city)
        return weather(city)

    return get_weather


@pytest.fixture
async def run_config(setup: Setup) -> AsyncIterator[RunConfig]:
    """The SDK's own OpenAI provider at the gateway, with the SDK's default API."""
    client = AsyncOpenAI(
        base_url=setup.url + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    try:
        yield RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
    finally:
        await client.close()


def weather_agent(calls: list[str]) -> Agent[Any]:
    return Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model="toolbot",
        tools=[weather_tool(calls)],
    )


def check_tool_loop_requests(setup: Setup) -> None:
    """Two Responses requests reached the gateway and two chat requests its upstream: the
    question with the tool offered, then the question, the call and the tool's result."""
    report = setup.recorder.report()
    calls = setup.recorder.responses_calls()
    assert len(calls) == 2, report
    assert [e.status for e in calls] == [200, 200], report
    first, second = (e.json() for e in calls)
    assert first["model"] == second["model"] == "toolbot"
    assert [t["name"] for t in first["tools"]] == [TOOL], report
    kinds = [item.get("type", "message") for item in second["input"]]
    assert kinds[-2:] == ["function_call", "function_call_output"], report
    assert second["input"][-1]["call_id"] == CALL_ID
    assert second["input"][-1]["output"] == weather(CITY)

    assert len(setup.upstream.requests) == 2
    up_first, up_second = setup.upstream.requests
    assert up_first["model"] == "toolbot-upstream"
    question = up_first["messages"][-1]
    assert (question["role"], _text(question["content"])) == ("user", QUESTION)
    call = up_second["messages"][-2]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == (CALL_ID, TOOL)
    assert json.loads(call["function"]["arguments"]) == {"city": CITY}
    result = up_second["messages"][-1]
    assert (result["role"], result["tool_call_id"]) == ("tool", CALL_ID)
    assert _text(result["content"]) == weather(CITY)


async def test_agents_sdk_tool_loop(setup: Setup, run_config: RunConfig) -> None:
    # Nothing here picks the API: the provider's default model is the Responses one.
    assert isinstance(run_config.model_provider.get_model("toolbot"), OpenAIResponsesModel)
    calls: list[str] = []
    result = await Runner.run(weather_agent(calls), QUESTION, run_config=run_config)
    report = setup.recorder.report()

    assert calls == [CITY], report  # the SDK ran the tool once, with the model's arguments
    assert result.final_output == "".join([*ANSWER_HEAD, weather(CITY), *ANSWER_TAIL]), report
    kinds = [type(item) for item in result.new_items]
    assert kinds == [ToolCallItem, ToolCallOutputItem, MessageOutputItem], report
    call = result.new_items[0].raw_item
    assert isinstance(call, ResponseFunctionToolCall), call
    assert (call.call_id, call.name, json.loads(call.arguments)) == (CALL_ID, TOOL, {"city": CITY})
    output = result.new_items[1]
    assert isinstance(output, ToolCallOutputItem) and output.output == weather(CITY)
    check_tool_loop_requests(setup)
    assert all(not e.json().get("stream") for e in setup.recorder.responses_calls())

    # The usage of both upstream replies, carried through the Responses replies.
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, *TOTAL_USAGE)
    per_reply = [(r.usage.input_tokens, r.usage.output_tokens) for r in result.raw_responses]
    assert per_reply == [CALL_USAGE, ANSWER_USAGE]
    # Each model reply has its own Responses id, in the Responses form.
    ids = [r.response_id or "" for r in result.raw_responses]
    assert all(i.startswith("resp_") for i in ids) and len(set(ids)) == 2, ids


async def test_agents_sdk_streamed_tool_loop(setup: Setup, run_config: RunConfig) -> None:
    calls: list[str] = []
    result = Runner.run_streamed(weather_agent(calls), QUESTION, run_config=run_config)
    deltas: list[str] = []
    raw_kinds: list[str] = []
    items: list[str] = []
    async for event in result.stream_events():
        if isinstance(event, RawResponsesStreamEvent):
            raw_kinds.append(event.data.type)
            if isinstance(event.data, ResponseTextDeltaEvent):
                deltas.append(event.data.delta)
        elif isinstance(event, RunItemStreamEvent):
            items.append(event.name)
    report = setup.recorder.report()

    assert calls == [CITY], report
    # The answer's text arrived piece by piece, as the upstream sent it.
    assert deltas == [*ANSWER_HEAD, weather(CITY), *ANSWER_TAIL], report
    assert result.final_output == "".join(deltas)
    assert items == ["tool_called", "tool_output", "message_output_created"], report
    assert raw_kinds.count("response.created") == 2, raw_kinds
    assert raw_kinds.count("response.completed") == 2, raw_kinds
    assert raw_kinds.count("response.function_call_arguments.delta") == 2, raw_kinds
    check_tool_loop_requests(setup)
    assert all(e.json()["stream"] is True for e in setup.recorder.responses_calls())
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, *TOTAL_USAGE)


async def test_agents_sdk_plain_text_from_demo(setup: Setup, run_config: RunConfig) -> None:
    agent = Agent(name="plain", instructions="Tell a short fable.", model="demo")
    result = await Runner.run(agent, "Tell me a fable.", run_config=run_config)
    report = setup.recorder.report()

    assert isinstance(result.final_output, str) and result.final_output.strip(), report
    assert [type(item) for item in result.new_items] == [MessageOutputItem], report
    assert ItemHelpers.text_message_outputs(result.new_items) == result.final_output
    (call,) = setup.recorder.responses_calls()
    body = call.json()
    assert body["model"] == "demo" and not body.get("tools"), report
    assert body["instructions"] == "Tell a short fable."
    (response,) = result.raw_responses
    assert response.usage.requests == 1 and response.usage.output_tokens > 0
    assert setup.upstream.requests == []  # demo runs inside the gateway


# --- Vercel AI SDK (Node) -----------------------------------------------------------------


def stream_text(node: str, url: str, model: str, *args: str) -> list[dict[str, Any]]:
    """Run ``stream_text.mjs``; its JSON lines, the finish last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AI_GATEWAY_"))}
    done = subprocess.run(
        [node, str(STREAM_TEXT), url, model, *args],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, f"stream_text.mjs exited {done.returncode}\n{output}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert lines and lines[-1]["type"] == "finish", output
    return lines


def test_vercel_ai_sdk_stream_text_from_demo(node: str, setup: Setup) -> None:
    *events, finish = stream_text(node, setup.url, "demo", "Tell me a fable.")
    report = setup.recorder.report()
    deltas = [e["text"] for e in events if e["type"] == "text-delta"]
    assert len(deltas) >= 3, report
    assert finish["text"] == "".join(deltas) and finish["text"].strip(), finish
    assert finish["finishReason"] == "stop", finish
    usage = finish["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0, usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"], usage
    assert finish["warnings"] == [], finish
    (call,) = setup.recorder.responses_calls()
    assert (call.json()["model"], call.json()["stream"]) == ("demo", True), report


def test_vercel_ai_sdk_tool_loop_through_chat_upstream(node: str, setup: Setup) -> None:
    *events, finish = stream_text(node, setup.url, "toolbot", QUESTION, "--tool")
    report = setup.recorder.report()
    calls = [
        (e["toolCallId"], e["toolName"], e["input"]) for e in events if e["type"] == "tool-call"
    ]
    assert calls == [(CALL_ID, TOOL, {"city": CITY})], report
    results = [e["output"] for e in events if e["type"] == "tool-result"]
    assert results == [weather(CITY)], report
    # The answer, one delta per upstream chunk.
    deltas = [e["text"] for e in events if e["type"] == "text-delta"]
    assert deltas == [*ANSWER_HEAD, weather(CITY), *ANSWER_TAIL], report
    assert finish["finishReason"] == "stop", finish
    assert [s["finishReason"] for s in finish["steps"]] == ["tool-calls", "stop"], finish
    usage = finish["usage"]  # both steps together
    assert (usage["inputTokens"], usage["outputTokens"]) == TOTAL_USAGE, usage
    steps = [(s["usage"]["inputTokens"], s["usage"]["outputTokens"]) for s in finish["steps"]]
    assert steps == [CALL_USAGE, ANSWER_USAGE], finish
    assert finish["warnings"] == [], finish
    check_tool_loop_requests(setup)
