"""Request translation between OpenAI chat-completions and Anthropic messages bodies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.llm.openai_responses import from_responses
from tokenwire.llm.requests import (
    RequestError,
    ToolCallPart,
    ToolResultPart,
    dropped_fields,
    from_anthropic,
    from_openai,
    refused_fields,
    to_anthropic,
    to_openai,
    with_extra,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

OPENAI_BODY = {
    "model": "gpt-x",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "max_tokens": 100,
    "temperature": 1.5,
    "stop": "\n\n",
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_openai_to_anthropic() -> None:
    req = from_openai(OPENAI_BODY)
    assert req.system == "Be brief."
    assert req.stop == ["\n\n"] and req.include_usage and req.stream
    body = to_anthropic(req)
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 100
    assert body["temperature"] == 1.0  # clamped to Anthropic's range
    assert body["stop_sequences"] == ["\n\n"]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
    ]


def test_anthropic_to_openai_and_back() -> None:
    body = to_anthropic(from_openai(OPENAI_BODY))
    again = from_anthropic(body)
    out = to_openai(again)
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][2]["tool_calls"][1]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Rome"}',
    }
    assert out["messages"][3:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ]
    assert out["tools"][0] == WEATHER_TOOL
    assert out["stop"] == ["\n\n"]


def test_anthropic_request_reading() -> None:
    req = from_anthropic(
        {
            "model": "claude-x",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "ok"}],
                            "is_error": True,
                        }
                    ],
                },
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "stop_sequences": ["END"],
        }
    )
    assert req.system == "sys"
    assert req.tool_choice == "f"
    assert req.messages[1].parts == [ToolCallPart("t1", "f", '{"a":1}')]
    assert req.messages[2].parts == [ToolResultPart("t1", "ok", is_error=True)]
    out = to_openai(req)
    assert out["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAA"},
    }
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_default_max_tokens_for_anthropic() -> None:
    body = to_anthropic(from_openai({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    assert body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "x"}]}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
    ],
)
def test_openai_validation_names_the_field(body: dict, param: str) -> None:
    with pytest.raises(RequestError) as info:
        from_openai(body)
    assert info.value.param == param
    assert param.split(".")[0].split("[")[0] in str(info.value)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "bogus"}]}],
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 1.5,
            },
            "temperature",
        ),
    ],
)
def test_anthropic_validation_names_the_field(body: dict, param: str) -> None:
    with pytest.raises(RequestError) as info:
        from_anthropic(body)
    assert info.value.param == param


def test_bad_tool_arguments_are_reported() -> None:
    req = from_openai(
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ],
        }
    )
    with pytest.raises(RequestError, match="arguments"):
        to_anthropic(req)


# --- strict types, extra fields ---------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
_READERS = {
    "openai": lambda b: from_openai(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **b}
    ),
    "anthropic": lambda b: from_anthropic(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **b}
    ),
    "responses": lambda b: from_responses({"model": "m", "input": "x", **b}),
}


@settings(max_examples=200, deadline=None)
@given(protocol=st.sampled_from(sorted(_READERS)), value=_JSON)
def test_stream_is_a_boolean_or_a_400(protocol: str, value: Any) -> None:
    """No truthiness: only true, false and null are taken."""
    read = _READERS[protocol]
    if value is None or isinstance(value, bool):
        assert read({"stream": value}).stream is bool(value)
    else:
        with pytest.raises(RequestError) as info:
            read({"stream": value})
        assert info.value.param == "stream"


@settings(max_examples=200, deadline=None)
@given(
    protocol=st.sampled_from(sorted(_READERS)),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8).map(lambda k: "x_" + k), _JSON, max_size=4
    ),
)
def test_unknown_fields_are_kept_exactly_and_forwarded_to_their_own_protocol(
    protocol: str, extra: dict[str, Any]
) -> None:
    req = _READERS[protocol](extra)
    assert req.extra == extra and req.extra_protocol == protocol
    assert dropped_fields(req, protocol) == []
    others = [p for p in _READERS if p != protocol]
    assert dropped_fields(req, others[0]) == sorted(extra)
    body = with_extra({"model": "m"}, req, protocol)
    assert {k: body[k] for k in extra} == extra
    assert with_extra({"model": "m"}, req, others[0]) == {"model": "m"}


def test_refused_fields_are_the_ones_that_change_the_reply() -> None:
    req = from_openai(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "logprobs": True,
            "frequency_penalty": 0.5,
            "modalities": ["text"],
        }
    )
    assert refused_fields(req, "anthropic") == ["logprobs"]
    assert refused_fields(req, "openai") == []
    quiet = from_openai(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": False}
    )
    assert refused_fields(quiet, "anthropic") == []
