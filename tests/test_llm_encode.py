"""Sans-I/O encoders: deltas -> OpenAI chunk bytes and Anthropic event bytes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import recorded_dir
from tokenwire.errors import StreamError
from tokenwire.llm.anthropic_encode import AnthropicEventEncoder, anthropic_usage
from tokenwire.llm.model import (
    ErrorDelta,
    FinishDelta,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.openai_encode import OpenAIChunkEncoder, openai_usage
from tokenwire.sse import decode


def events(data: bytes) -> list[tuple[str, Any]]:
    out = []
    for ev in decode(data):
        out.append((ev.event, ev.data if ev.data == "[DONE]" else orjson.loads(ev.data)))
    return out


# -- OpenAI ------------------------------------------------------------------------------


def test_openai_text_stream_exact_bytes() -> None:
    enc = OpenAIChunkEncoder(id="chatcmpl-1", model="gpt-4o", created=1700000000)
    out = enc.encode(TextDelta("Hi")) + enc.encode(FinishDelta("stop")) + enc.done()
    head = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    head += b'"model":"gpt-4o","choices":[{"index":0,"delta":'
    assert out == (
        head + b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
        b"" + head + b'{"content":"Hi"},"logprobs":null,"finish_reason":null}]}\n\n'
        b"" + head + b'{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )


def test_openai_id_and_created_constant_and_role_first() -> None:
    enc = OpenAIChunkEncoder(model="m")
    out = b"".join(enc.encode(TextDelta(t)) for t in "abc") + enc.done(Usage(1, 2))
    chunks = [d for _, d in events(out) if d != "[DONE]"]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["a", "b", "c"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_openai_message_start_supplies_id_model_and_usage() -> None:
    enc = OpenAIChunkEncoder()
    out = enc.encode(MessageStart(id="msg_1", model="claude", usage=Usage(input_tokens=5)))
    out += enc.encode(UsageDelta(Usage(output_tokens=7))) + enc.done()
    chunks = [d for _, d in events(out) if d != "[DONE]"]
    assert chunks[0]["id"] == "msg_1" and chunks[0]["model"] == "claude"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_openai_matches_recorded_parallel_tool_calls_byte_for_byte() -> None:
    """Re-encode a real recorded stream from its deltas: every chunk after the role
    chunk comes out byte-identical (key order, compact JSON, constant id/created)."""
    path = recorded_dir("openai") / "tool-calls-parallel.sse"
    raw = path.read_bytes()
    recorded = [ev.data for ev in decode(raw)]
    first = orjson.loads(recorded[0])
    enc = OpenAIChunkEncoder(
        first["id"],
        first["model"],
        first["created"],
        system_fingerprint=first["system_fingerprint"],
    )
    ours = [enc.start()]
    usage: Any = None
    for data in recorded[1:]:
        if data == "[DONE]":
            break
        chunk = orjson.loads(data)
        if not chunk["choices"]:
            usage = chunk["usage"]
            continue
        choice = chunk["choices"][0]
        if choice["finish_reason"]:
            ours.append(enc.encode(FinishDelta(choice["finish_reason"])))
            continue
        call = choice["delta"]["tool_calls"][0]
        fn = call["function"]
        ours.append(
            enc.encode(
                ToolCallDelta(call["index"], call.get("id"), fn.get("name"), fn["arguments"])
            )
        )
    ours.append(enc.done(usage))
    expected = [b"data: " + d.encode() + b"\n\n" for d in recorded]
    got = b"".join(ours).split(b"\n\n")
    got = [g + b"\n\n" for g in got if g]
    assert len(got) == len(expected)
    assert got[1:] == expected[1:]
    # The recorded role delta has content null (tools); ours says "" — both valid.
    assert orjson.loads(got[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_openai_tool_call_indexes_renumbered_per_choice() -> None:
    enc = OpenAIChunkEncoder(id="c", model="m", created=1)
    out = enc.encode(ToolCallDelta(5, "call_a", "f", "{}"))
    out += enc.encode(ToolCallDelta(9, "call_b", "g", "{"))
    out += enc.encode(ToolCallDelta(9, arguments="}"))
    calls = [d["choices"][0]["delta"]["tool_calls"][0] for _, d in events(out)[1:]]
    assert [c["index"] for c in calls] == [0, 1, 1]
    assert calls[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    assert calls[2] == {"index": 1, "function": {"arguments": "}"}}


def test_openai_reasoning_refusal_and_choices() -> None:
    enc = OpenAIChunkEncoder(id="c", model="m", created=1)
    out = enc.encode(ReasoningDelta("think"))
    assert enc.encode(ReasoningDelta(signature="sig")) == b""
    out += enc.encode(RefusalDelta("no", choice=1))
    out += enc.encode(FinishDelta("content_filter", choice=1))
    deltas = [(d["choices"][0]["index"], d["choices"][0]["delta"]) for _, d in events(out)]
    assert deltas[1] == (0, {"reasoning_content": "think"})
    assert deltas[2] == (1, {"role": "assistant", "content": ""})
    assert deltas[3] == (1, {"refusal": "no"})
    assert deltas[4] == (1, {})
    no_reasoning = OpenAIChunkEncoder(reasoning_field=None)
    assert no_reasoning.encode(ReasoningDelta("x")) == b""


def test_openai_usage_mapping_passes_through() -> None:
    assert openai_usage({"prompt_tokens": 1, "completion_tokens": 2}) == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }
    full = openai_usage(Usage(3, 4, cache_read_input_tokens=1, reasoning_tokens=2))
    assert full["prompt_tokens_details"] == {"cached_tokens": 1}
    assert full["completion_tokens_details"] == {"reasoning_tokens": 2}
    with pytest.raises(TypeError, match="usage must be"):
        openai_usage(5)  # type: ignore[arg-type]


def test_openai_include_usage_false_drops_usage_chunk() -> None:
    enc = OpenAIChunkEncoder(include_usage=False)
    enc.encode(UsageDelta(Usage(1, 1)))
    out = enc.done({"prompt_tokens": 1, "completion_tokens": 1})
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")


def test_openai_error_ends_stream_and_openai_sdk_shape() -> None:
    enc = OpenAIChunkEncoder(id="c", model="m", created=1)
    enc.encode(TextDelta("a"))
    out = enc.error(ValueError("boom"))
    assert out == StreamError.from_exception(ValueError("boom")).to_sse_event("openai")
    assert "boom" in orjson.loads(out[6:])["error"]["message"]
    assert enc.ended
    with pytest.raises(RuntimeError, match="already ended"):
        enc.encode(TextDelta("late"))
    with pytest.raises(RuntimeError, match="already ended"):
        enc.done()


def test_openai_error_delta() -> None:
    enc = OpenAIChunkEncoder(error_provider="anthropic")
    out = enc.encode(ErrorDelta("overloaded_error", "Overloaded"))
    body = orjson.loads(out[6:])
    assert body["error"]["message"] == "Overloaded"
    assert enc.ended


def test_openai_bad_input_raises_and_changes_nothing() -> None:
    enc = OpenAIChunkEncoder(id="c", model="m", created=1)
    with pytest.raises(ValueError, match="id and name"):
        enc.encode(ToolCallDelta(0, arguments="{}"))
    with pytest.raises(TypeError, match="text must be a str"):
        enc.encode_text(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a tokenwire delta"):
        enc.encode("text")  # type: ignore[arg-type]
    enc.encode(FinishDelta("stop"))
    with pytest.raises(ValueError, match="already finished"):
        enc.encode(FinishDelta("stop"))
    with pytest.raises(ValueError, match="already finished"):
        enc.encode(TextDelta("late"))
    # The state is intact: the stream still ends normally.
    assert enc.done().endswith(b"data: [DONE]\n\n")


# -- Anthropic ---------------------------------------------------------------------------


def test_anthropic_text_stream_exact_bytes() -> None:
    enc = AnthropicEventEncoder(id="msg_1", model="claude-x", usage=Usage(input_tokens=3))
    out = enc.encode(TextDelta("Hi")) + enc.encode(FinishDelta("stop", "end_turn"))
    out += enc.done(Usage(output_tokens=2))
    assert out == (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_1","type":"message",'
        b'"role":"assistant","model":"claude-x","content":[],"stop_reason":null,'
        b'"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b"event: content_block_start\n"
        b'data: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":{"input_tokens":3,"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_anthropic_every_event_named_and_typed() -> None:
    enc = AnthropicEventEncoder()
    out = enc.encode(MessageStart("msg_2", "m", usage=Usage(10, 1, 2, 3)))
    out += enc.encode(ReasoningDelta("hmm")) + enc.encode(ReasoningDelta(signature="c2ln"))
    out += enc.encode(TextDelta("ok"))
    out += enc.encode(ToolCallDelta(0, "toolu_1", "f", '{"a":'))
    out += enc.encode(ToolCallDelta(0, arguments="1}"))
    out += enc.encode(FinishDelta("tool_calls")) + enc.done()
    evs = events(out)
    for name, data in evs:
        assert name == data["type"]
    names = [n for n, _ in evs]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = evs[0][1]["message"]
    assert start["id"] == "msg_2"
    assert start["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 2,
        "output_tokens": 1,
    }
    assert evs[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert evs[4][1]["delta"] == {"type": "signature_delta", "signature": "c2ln"}
    assert evs[9][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "f",
        "input": {},
    }
    assert [e[1]["index"] for e in evs[2:13]] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert evs[13][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_anthropic_parallel_tool_calls_stay_open_and_interleave() -> None:
    enc = AnthropicEventEncoder(id="m", model="m")
    out = enc.encode(ToolCallDelta(0, "t0", "a", "{"))
    out += enc.encode(ToolCallDelta(1, "t1", "b", "{"))
    out += enc.encode(ToolCallDelta(0, arguments="}"))
    out += enc.encode(ToolCallDelta(1, arguments="}"))
    out += enc.done()
    evs = [(n, d.get("index")) for n, d in events(out)]
    assert evs[2:8] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 0),
        ("content_block_delta", 1),
    ]
    assert evs[8:10] == [("content_block_stop", 0), ("content_block_stop", 1)]


def test_anthropic_stop_reason_mapping() -> None:
    def stop(delta: FinishDelta) -> Any:
        enc = AnthropicEventEncoder()
        out = enc.encode(delta) + enc.done()
        return next(d for n, d in events(out) if n == "message_delta")["delta"]

    assert stop(FinishDelta("length")) == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert stop(FinishDelta("stop", stop_sequence="END"))["stop_reason"] == "stop_sequence"
    assert stop(FinishDelta("stop", "pause_turn"))["stop_reason"] == "pause_turn"
    assert stop(FinishDelta("weird"))["stop_reason"] == "end_turn"


def test_anthropic_matches_recorded_tool_use_events() -> None:
    """The content events of a recorded real stream re-encode byte for byte."""
    raw = (recorded_dir("anthropic") / "tool_use_response.sse").read_bytes()
    recorded = decode(raw)
    start = orjson.loads(recorded[0].data)["message"]
    enc = AnthropicEventEncoder(start["id"], start["model"])
    ours: list[bytes] = [enc.start()]
    tool_index = -1
    for ev in recorded:
        data = orjson.loads(ev.data)
        if ev.event == "content_block_start" and data["content_block"]["type"] == "tool_use":
            block = data["content_block"]
            tool_index += 1
            ours.append(enc.encode(ToolCallDelta(tool_index, block["id"], block["name"])))
        elif ev.event == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                ours.append(enc.encode(TextDelta(delta["text"])))
            else:
                ours.append(enc.encode(ToolCallDelta(tool_index, arguments=delta["partial_json"])))
        elif ev.event == "message_delta":
            reason = data["delta"]["stop_reason"]
            ours.append(enc.encode(FinishDelta("tool_calls", reason)))
            ours.append(enc.done(data["usage"]))
    expected = {
        ev.encode()
        for ev in recorded
        if ev.event
        in ("content_block_delta", "content_block_stop", "message_delta", "message_stop")
        and ev.data
        != '{"type":"content_block_delta","index":1,"delta":'
        '{"type":"input_json_delta","partial_json":""}}'
    }
    ours_events = {ev.encode() for ev in decode(b"".join(ours))}
    assert expected <= ours_events


def test_anthropic_usage_helpers() -> None:
    assert anthropic_usage({"input_tokens": 1}) == {"input_tokens": 1, "output_tokens": 0}
    assert anthropic_usage(Usage(output_tokens=4)) == {"output_tokens": 4}
    with pytest.raises(TypeError, match="usage must be"):
        anthropic_usage([1])  # type: ignore[arg-type]


def test_anthropic_error_and_end() -> None:
    enc = AnthropicEventEncoder()
    enc.encode(TextDelta("a"))
    out = enc.error(StreamError("overloaded", "busy"))
    assert out.startswith(b"event: error\ndata: ")
    assert orjson.loads(out.split(b"data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
    with pytest.raises(RuntimeError, match="already ended"):
        enc.encode(TextDelta("late"))
    enc2 = AnthropicEventEncoder()
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out2 = enc2.encode(ErrorDelta("overloaded_error", "Overloaded", body))
    assert orjson.loads(out2.split(b"data: ", 1)[1]) == body


def test_anthropic_bad_input_raises_and_changes_nothing() -> None:
    enc = AnthropicEventEncoder(id="m", model="m")
    with pytest.raises(ValueError, match="single choice"):
        enc.encode(TextDelta("x", choice=1))
    with pytest.raises(ValueError, match="id and name"):
        enc.encode(ToolCallDelta(0, arguments="{}"))
    with pytest.raises(TypeError, match="text must be a str"):
        enc.encode_text(b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a tokenwire delta"):
        enc.encode(object())  # type: ignore[arg-type]
    names = [n for n, _ in events(enc.encode(TextDelta("x")) + enc.done())]
    assert names[0] == "message_start"  # nothing was emitted by the failed calls
