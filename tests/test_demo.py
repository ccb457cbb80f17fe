"""The demo model as a unit: pacing, length, tools, structured output, reasoning, faults."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.config import ConfigError, from_mapping
from tokenwire.errors import DropConnection, StreamError
from tokenwire.llm.accumulate import MessageBuilder
from tokenwire.llm.model import Delta, ErrorDelta, Message, ReasoningDelta, TextDelta, ToolCallDelta
from tokenwire.llm.requests import (
    ChatMessage,
    ChatRequest,
    ResponseFormat,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
)
from tokenwire.providers import demo as demo_module
from tokenwire.providers.demo import DemoProvider, parse_speed
from tokenwire.providers.demo_faults import Fault, parse_fault
from tokenwire.providers.demo_json import value_for_schema

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90}},
            "required": ["lat"],
        },
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    ToolSpec("get_weather", "the weather", WEATHER),
    ToolSpec("get_time", "the time", {"type": "object", "properties": {"tz": {"type": "string"}}}),
]


def ask(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(model="demo", messages=[ChatMessage("user", [TextPart(text)])], **fields)


def deltas(request: ChatRequest, provider: DemoProvider | None = None) -> list[Delta]:
    async def run() -> list[Delta]:
        items = await (provider or DemoProvider(speed="max")).open(request)
        return [d async for _, ds in items for d in ds]

    return asyncio.run(run())


def reply(request: ChatRequest, provider: DemoProvider | None = None) -> Message:
    builder = MessageBuilder()
    for delta in deltas(request, provider):
        builder.feed(delta)
    return builder.message


# -- pacing -----------------------------------------------------------------------------


def paused(provider: DemoProvider, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the provider takes for one reply (asyncio.sleep recorded, not slept)."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(demo_module.asyncio, "sleep", sleep)
    deltas(ask("hello", max_tokens=50), provider)
    return pauses


def test_paced_like_a_real_model_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENWIRE_DEMO_SPEED", raising=False)
    pauses = paused(DemoProvider(), monkeypatch)
    assert 0.2 <= pauses[0] <= 0.4  # first token after about 300 ms
    rates = [1 / p for p in pauses[1:]]
    # One pause per piece, and a reply has at least 25 pieces; about 40 tokens/s.
    assert len(rates) >= 24 and all(28 <= r <= 60 for r in rates)
    assert len(set(pauses[1:])) > 1  # jittered


def test_speed_scales_pacing_and_max_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert max(paused(DemoProvider(speed=2), monkeypatch)[1:]) <= 1 / 40 / 2 * 1.25 + 1e-9
    assert paused(DemoProvider(speed="max"), monkeypatch) == []
    monkeypatch.setenv("TOKENWIRE_DEMO_SPEED", "4")
    assert DemoProvider().speed == 4.0
    assert DemoProvider(speed=1).speed == 1.0  # configured beats the variable
    exact = paused(DemoProvider(time_to_first_token=0.5, time_per_token=0.1), monkeypatch)
    assert exact[0] == 0.5 and set(exact[1:]) == {0.1}  # exact pacing: no jitter


def test_speed_settings_are_checked() -> None:
    assert parse_speed("max") == 0 and parse_speed(" 2.5 ") == 2.5 and parse_speed(3) == 3
    for bad in ("fast", -1, True, "0.0x"):
        with pytest.raises(ValueError, match="positive number or 'max'"):
            parse_speed(bad)
    config = from_mapping({"providers": {"slow": {"type": "demo", "speed": 0.5}}})
    assert config.providers["slow"].demo["speed"] == 0.5
    with pytest.raises(ConfigError, match=r"providers.slow.*speed"):
        from_mapping({"providers": {"slow": {"type": "demo", "speed": "fast"}}})


# -- length -----------------------------------------------------------------------------


def test_max_tokens_lengthens_replies_and_cuts_with_length() -> None:
    lengths, reasons = [], set()
    for seed in range(8):
        message = reply(ask("a long story", max_tokens=3000, seed=seed))
        assert message.usage.output_tokens is not None
        lengths.append(message.usage.output_tokens)
        reasons.add(message.finish_reason)
        if message.finish_reason == "length":
            assert message.usage.output_tokens == 3000
    assert min(lengths) >= 2250 and max(lengths) <= 3000
    assert reasons == {"stop", "length"}
    short = reply(ask("hello", seed=1))
    assert short.usage.output_tokens is not None and short.usage.output_tokens <= 110
    assert reply(ask("hello", max_tokens=5, seed=1)).usage.output_tokens == 5


# -- tools ------------------------------------------------------------------------------


def test_required_tool_choice_calls_a_tool_with_valid_arguments() -> None:
    for choice in ("required", "get_weather"):
        message = reply(ask("what is it like out?", tools=TOOLS, tool_choice=choice, seed=3))
        assert message.finish_reason == "tool_calls" and message.text == ""
        assert len(message.tool_calls) == 1
        call = message.tool_calls[0]
        if choice == "get_weather":
            assert call.name == "get_weather"
        spec = next(t for t in TOOLS if t.name == call.name)
        jsonschema.validate(json.loads(call.arguments), spec.parameters)


def test_auto_calls_the_tools_the_user_names_in_parallel_unless_told_not_to() -> None:
    request = ask("Use get_time, then get_weather for Paris", tools=TOOLS, tool_choice="auto")
    message = reply(request)
    assert [c.name for c in message.tool_calls] == ["get_time", "get_weather"]
    assert message.tool_calls[0].id != message.tool_calls[1].id
    request.parallel_tool_calls = False
    assert [c.name for c in reply(request).tool_calls] == ["get_time"]
    assert reply(ask("just chat", tools=TOOLS)).tool_calls == []  # auto, no tool named
    assert reply(ask("get_weather", tools=TOOLS, tool_choice="none")).tool_calls == []


def test_tool_arguments_stream_in_fragments_and_are_deterministic_for_a_seed() -> None:
    request = ask("call get_weather", tools=TOOLS, tool_choice="required", seed=9)
    fragments = [d for d in deltas(request) if isinstance(d, ToolCallDelta) and d.arguments]
    assert len(fragments) > 5
    assert reply(request).tool_calls[0].arguments == reply(request).tool_calls[0].arguments
    first = reply(request).tool_calls[0].arguments
    request.seed = 10
    assert reply(request).tool_calls[0].arguments != first


def test_after_a_tool_result_it_answers_with_the_result() -> None:
    request = ChatRequest(
        model="demo",
        messages=[
            ChatMessage("user", [TextPart("weather in Paris? use get_weather")]),
            ChatMessage("assistant", [ToolCallPart("call_1", "get_weather", '{"city":"Paris"}')]),
            ChatMessage("user", [ToolResultPart("call_1", '{"temperature": 21}')]),
        ],
        tools=TOOLS,
    )
    message = reply(request)
    assert message.finish_reason == "stop" and not message.tool_calls
    assert message.text.startswith('get_weather returned {"temperature": 21}.')


# -- structured output and reasoning ----------------------------------------------------


def test_json_response_formats_give_conforming_json_in_fragments() -> None:
    schema_format = ResponseFormat("json_schema", name="weather", schema=WEATHER, strict=True)
    request = ask("weather?", response_format=schema_format, seed=4)
    texts = [d for d in deltas(request) if isinstance(d, TextDelta)]
    assert len(texts) > 5
    jsonschema.validate(json.loads(reply(request).text), WEATHER)
    free = reply(ask("anything", response_format=ResponseFormat("json_object")))
    assert isinstance(json.loads(free.text), dict)


def test_reasoning_comes_first_and_is_signed() -> None:
    for fields in ({"reasoning_effort": "high"}, {"reasoning_budget": 2048}):
        out = deltas(ask("think", seed=2, **fields))
        kinds = [type(d) for d in out if isinstance(d, TextDelta | ReasoningDelta)]
        first_text = kinds.index(TextDelta)
        assert first_text > 8 and set(kinds[:first_text]) == {ReasoningDelta}
        message = reply(ask("think", seed=2, **fields))
        assert message.reasoning and message.reasoning_signature
        assert message.usage.reasoning_tokens is not None and message.usage.reasoning_tokens > 8


def test_usage_counts_the_conversation_and_the_output() -> None:
    request = ask("one two three four", system="be brief", temperature=0)
    message = reply(request)
    assert message.usage.input_tokens == 6
    assert message.usage.output_tokens == sum(isinstance(d, TextDelta) for d in deltas(request))


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "status"),
    [
        ("rate_limit", "rate_limit", 429),
        ("auth", "authentication", 401),
        ("permission", "permission", 403),
        ("not_found", "not_found", 404),
        ("bad_request", "invalid_request", 400),
        ("server_error", "api_error", 500),
    ],
)
def test_http_faults_raise_before_the_first_byte(spec: str, kind: str, status: int) -> None:
    with pytest.raises(StreamError) as caught:
        deltas(ChatRequest(model=f"demo:{spec}", messages=[]))
    assert caught.value.type == kind and caught.value.http_status("openai") == status
    if spec == "rate_limit":
        assert ("retry-after", "1") in caught.value.response_headers()


def test_overloaded_is_529_for_anthropic_and_503_otherwise() -> None:
    fault = parse_fault("overloaded")
    assert isinstance(fault, StreamError)
    assert fault.http_status("anthropic") == 529 and fault.http_status("openai") == 503


def test_in_stream_faults_and_unknown_names() -> None:
    assert parse_fault("cut@20") == Fault("cut", 20)
    for bad in ("nope", "cut@", "cut@x", "stall@-1", "rate_limit@3"):
        fault = parse_fault(bad)
        assert isinstance(fault, StreamError) and fault.http_status() == 400
        assert "rate_limit" in fault.message and "cut@N" in fault.message
    out = deltas(
        ChatRequest(model="demo:error@4", messages=[ChatMessage("user", [TextPart("hi")])])
    )
    assert sum(isinstance(d, TextDelta) for d in out) == 4 and isinstance(out[-1], ErrorDelta)
    with pytest.raises(DropConnection):
        deltas(ChatRequest(model="demo:cut@3", messages=[]))
    # A reply is made long enough for the fault to happen.
    long = deltas(ChatRequest(model="demo:error@500", messages=[], seed=1, temperature=1))
    assert sum(isinstance(d, TextDelta) for d in long) == 500 and isinstance(long[-1], ErrorDelta)


def test_faults_route_through_any_demo_route() -> None:
    config = from_mapping({"models": {"fast": {"provider": "demo"}}})
    provider, model, _ = config.route("fast:rate_limit")
    assert provider.type == "demo" and model == "fast:rate_limit"
    with pytest.raises(ConfigError):
        config.route("gpt:rate_limit")


# -- JSON Schema values -----------------------------------------------------------------


def test_schemas_as_pydantic_writes_them() -> None:
    schema = {
        "$defs": {
            "Item": {
                "properties": {
                    "name": {"type": "string"},
                    "size": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                    "kind": {"$ref": "#/$defs/Kind"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                },
                "required": ["name", "kind", "children"],
                "type": "object",
            },
            "Kind": {"enum": ["a", "b"], "type": "string"},
        },
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "when": {"type": "string", "format": "date-time"},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "count": {"type": "integer", "multipleOf": 5, "minimum": 7, "maximum": 40},
        },
        "required": ["items", "when", "score", "count"],
        "type": "object",
    }
    for seed in range(30):
        value = value_for_schema(schema, random.Random(seed), lambda r, n: "word " * n)
        jsonschema.validate(value, schema)


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    integer = st.tuples(st.integers(-50, 50), st.integers(0, 50)).map(
        lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
    )
    return st.one_of(
        st.just({"type": "string"}),
        st.integers(1, 20).map(lambda n: {"type": "string", "minLength": n, "maxLength": n + 5}),
        integer,
        st.just({"type": "number", "minimum": 0.5, "maximum": 2.5}),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True).map(
            lambda v: {"enum": v}
        ),
        st.just({"format": "email", "type": "string"}),
        st.just({"const": 42}),
    )


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaf(),
        lambda inner: st.one_of(
            st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4).flatmap(
                lambda props: st.sets(
                    st.sampled_from(sorted(props)) if props else st.nothing()
                ).map(
                    lambda req: {
                        "type": "object",
                        "properties": props,
                        "required": sorted(req),
                        "additionalProperties": False,
                    }
                )
            ),
            st.tuples(inner, st.integers(0, 3)).map(
                lambda t: {"type": "array", "items": t[0], "minItems": t[1]}
            ),
            st.lists(inner, min_size=1, max_size=3).map(lambda opts: {"anyOf": opts}),
            inner.map(
                lambda s: (
                    {**s, "type": [s["type"], "null"]}
                    if isinstance(s.get("type"), str) and s["type"] != "null"
                    else s
                )
            ),
        ),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(schema=schemas(), seed=st.integers(0, 2**32))
def test_any_schema_gets_a_value_it_accepts(schema: dict[str, Any], seed: int) -> None:
    value = value_for_schema(schema, random.Random(seed), lambda r, n: " ".join(["fox"] * n))
    jsonschema.validate(value, schema)
    assert value == value_for_schema(
        schema, random.Random(seed), lambda r, n: " ".join(["fox"] * n)
    )


def test_after_tool_results_a_required_call_moves_on_and_json_stays_json() -> None:
    history = [
        ChatMessage("user", [TextPart("use get_weather")]),
        ChatMessage("assistant", [ToolCallPart("call_1", "get_weather", '{"city":"Paris"}')]),
        ChatMessage("user", [ToolResultPart("call_1", "sunny")]),
    ]
    moved_on = reply(
        ChatRequest(model="demo", messages=history, tools=TOOLS, tool_choice="required")
    )
    assert [c.name for c in moved_on.tool_calls] == ["get_time"]  # not called yet
    fmt = ResponseFormat("json_schema", name="weather", schema=WEATHER)
    answer = reply(ChatRequest(model="demo", messages=history, tools=TOOLS, response_format=fmt))
    jsonschema.validate(json.loads(answer.text), WEATHER)
