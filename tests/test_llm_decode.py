"""The LLM stream decoders as units: protocol variants, errors, truncation, inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenwire.errors import StreamError
from tokenwire.llm import (
    AnthropicStreamDecoder,
    ErrorDelta,
    FinishDelta,
    MessageBuilder,
    MessageStart,
    OpenAIStreamDecoder,
    ReasoningDelta,
    RefusalDelta,
    StreamDecodeError,
    StreamDecoder,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
    accumulate,
    accumulate_choices,
    detect_protocol,
)
from tokenwire.sse import ServerSentEvent


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    choice: dict[str, Any] = {"index": extra.pop("index", 0), "delta": delta or {}}
    choice["finish_reason"] = finish
    choice.update(extra.pop("choice_extra", {}))
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    body.update(extra)
    return "data: " + json.dumps(body) + "\n\n"


def openai_body(*parts: str, done: bool = True) -> bytes:
    return ("".join(parts) + ("data: [DONE]\n\n" if done else "")).encode()


def ant(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: " + json.dumps({"type": kind, **fields}) + "\n\n"


def ant_start(**usage: Any) -> str:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude"}
    message.update(content=[], stop_reason=None, stop_sequence=None)
    if usage:
        message["usage"] = usage
    return ant("message_start", message=message)


def ant_text(index: int, text: str) -> str:
    return ant("content_block_delta", index=index, delta={"type": "text_delta", "text": text})


def feed_all(decoder: Any, body: bytes) -> list[Any]:
    from tokenwire.sse import decode

    return [d for ev in decode(body) for d in decoder.feed(ev)]


# --- OpenAI ----------------------------------------------------------------------


def test_openai_deltas_in_order() -> None:
    body = openai_body(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(finish="stop"),
        'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
        '"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}\n\n',
    )
    decoder = StreamDecoder("openai")
    deltas = feed_all(decoder, body)
    assert deltas[0] == MessageStart(id="c1", model="m", role="assistant")
    assert deltas[1:3] == [TextDelta("Hel"), TextDelta("lo")]
    assert deltas[3] == FinishDelta("stop", "stop")
    assert isinstance(deltas[4], UsageDelta) and deltas[4].usage.input_tokens == 3
    assert decoder.done
    msg = decoder.message
    assert (msg.text, msg.finish_reason, msg.usage.output_tokens) == ("Hello", "stop", 2)
    assert msg.usage.cache_read_input_tokens == 1
    assert decoder.close() == []


def test_openai_parallel_tool_calls_interleaved() -> None:
    def call(index: int, **fn: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "function": fn}
        if "name" in fn:
            out.update(id=f"call_{index}", type="function")
        return {"tool_calls": [out]}

    body = openai_body(
        chunk({"role": "assistant", "content": None}),
        chunk(call(0, name="a", arguments="")),
        chunk(call(1, name="b", arguments='{"y"')),
        chunk(call(0, arguments='{"x":')),
        chunk(call(1, arguments=":2}")),
        chunk(call(0, arguments="1}")),
        chunk(finish="tool_calls"),
    )
    decoder = OpenAIStreamDecoder()
    deltas = feed_all(decoder, body)
    assert ToolCallDelta(0, id="call_0", name="a") in deltas
    assert ToolCallDelta(0, arguments="1}") in deltas
    calls = decoder.message.tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (0, "call_0", "a", '{"x":1}'),
        (1, "call_1", "b", '{"y":2}'),
    ]
    assert decoder.message.finish_reason == "tool_calls"


def test_ollama_variant() -> None:
    """Role on every delta, reasoning in `delta.reasoning`, a whole tool call in one chunk
    (arguments complete, no index), finish forced to tool_calls, no [DONE]."""
    call = {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    body = openai_body(
        chunk({"role": "assistant", "content": "", "reasoning": "Think"}),
        chunk({"role": "assistant", "content": "", "reasoning": "ing."}),
        chunk({"role": "assistant", "content": "Hi"}),
        chunk({"role": "assistant", "content": "", "tool_calls": [call]}),
        chunk({"role": "assistant", "content": ""}, finish="tool_calls"),
        done=False,
    )
    msg = accumulate(body)
    assert (msg.reasoning, msg.text, msg.finish_reason) == ("Thinking.", "Hi", "tool_calls")
    assert [(c.id, c.name, c.arguments) for c in msg.tool_calls] == [("call_x", "f", '{"a":1}')]


def test_ollama_two_whole_calls_without_index_are_two_calls() -> None:
    def call(i: int) -> dict[str, Any]:
        return {"id": f"c{i}", "function": {"name": f"f{i}", "arguments": {"i": i}}}

    body = openai_body(chunk({"tool_calls": [call(0), call(1)]}), chunk(finish="tool_calls"))
    msg = accumulate(body)
    # arguments sent as an object are turned into JSON text
    assert [(c.index, c.name, c.arguments) for c in msg.tool_calls] == [
        (0, "f0", '{"i":0}'),
        (1, "f1", '{"i":1}'),
    ]


def test_vllm_variant() -> None:
    """reasoning_content, usage on every chunk (only changes are passed on), stop_reason."""
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    later = {**usage, "completion_tokens": 2, "total_tokens": 7}
    body = openai_body(
        chunk({"role": "assistant", "reasoning_content": "r"}, usage=usage),
        chunk({"content": "a"}, usage=usage),
        chunk({"content": "b"}, finish="stop", usage=later, choice_extra={"stop_reason": "END"}),
    )
    decoder = OpenAIStreamDecoder()
    deltas = feed_all(decoder, body)
    assert [d.usage.output_tokens for d in deltas if isinstance(d, UsageDelta)] == [1, 2]
    assert ReasoningDelta("r") in deltas
    msg = decoder.message
    assert (msg.reasoning, msg.text, msg.stop_sequence) == ("r", "ab", "END")
    assert msg.usage.output_tokens == 2


def test_openai_refusal_and_legacy_function_call() -> None:
    body = openai_body(
        chunk({"role": "assistant", "refusal": "No"}),
        chunk({"refusal": "pe."}),
        chunk(finish="stop"),
    )
    assert accumulate(body).refusal == "Nope."
    deltas = feed_all(OpenAIStreamDecoder(), body)
    assert [d for d in deltas if isinstance(d, RefusalDelta)] == [
        RefusalDelta("No"),
        RefusalDelta("pe."),
    ]
    legacy = openai_body(
        chunk({"function_call": {"name": "f", "arguments": "{}"}}),
        chunk(finish="function_call"),
    )
    msg = accumulate(legacy)
    assert (msg.tool_calls[0].name, msg.tool_calls[0].arguments) == ("f", "{}")
    assert msg.finish_reason == "function_call"


def test_openai_unknown_finish_reason_is_normalized() -> None:
    msg = accumulate(openai_body(chunk({"content": "x"}, finish="eos")))
    assert (msg.finish_reason, msg.raw_finish_reason) == ("stop", "eos")
    msg = accumulate(openai_body(chunk({"content": "x"}, finish="max_tokens")))
    assert (msg.finish_reason, msg.raw_finish_reason) == ("length", "max_tokens")


def test_openai_n_choices_kept_apart() -> None:
    body = openai_body(
        chunk({"content": "a"}, index=0),
        chunk({"content": "b"}, index=1),
        chunk({"content": "c"}, index=0, finish="stop"),
        chunk(index=1, finish="length"),
    )
    choices = accumulate_choices(body)
    assert [(m.text, m.finish_reason) for m in choices.values()] == [
        ("ac", "stop"),
        ("b", "length"),
    ]
    assert accumulate(body).text == "ac"


@pytest.mark.parametrize(
    ("event", "kind", "message"),
    [
        (
            'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}',
            "server_error",
            "boom",
        ),
        ('event: error\ndata: {"type":"api_error","message":"bad"}', "api_error", "bad"),
        (
            'data: {"object":"error","message":"old vllm","type":"BadRequestError"}',
            "BadRequestError",
            "old vllm",
        ),
        ('data: {"error":"plain text"}', "api_error", "plain text"),
    ],
)
def test_openai_in_band_errors(event: str, kind: str, message: str) -> None:
    body = (chunk({"content": "partial"}) + event + "\n\ndata: [DONE]\n\n").encode()
    decoder = OpenAIStreamDecoder()
    deltas = feed_all(decoder, body)
    errors = [d for d in deltas if isinstance(d, ErrorDelta)]
    assert [(e.type, e.message) for e in errors] == [(kind, message)]
    assert decoder.error == errors[0]
    assert decoder.message.text == "partial"  # nothing before the error is lost
    with pytest.raises(StreamError) as info:
        accumulate(body)
    assert info.value.provider == "openai"
    assert info.value.message == message


def test_openai_missing_done_tolerated_after_finish_but_cut_stream_raises() -> None:
    assert accumulate(openai_body(chunk({"content": "x"}, finish="stop"), done=False)).text == "x"
    with pytest.raises(StreamError) as info:
        accumulate(openai_body(chunk({"content": "x"}), done=False))
    assert info.value.type == "network"
    assert "incomplete" in info.value.message


def test_openai_events_without_data_are_ignored_bad_data_raises() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(ServerSentEvent("", event="ping")) == []
    with pytest.raises(StreamDecodeError, match="not JSON") as info:
        decoder.feed(ServerSentEvent("{oops"))
    assert info.value.event == ServerSentEvent("{oops")
    with pytest.raises(StreamDecodeError, match="not a JSON object"):
        decoder.feed(ServerSentEvent('"a string"'))
    # still usable afterwards
    assert decoder.feed(ServerSentEvent(chunk({"content": "ok"})[6:-2]))[-1] == TextDelta("ok")


def test_openai_message_mid_stream_and_long_text() -> None:
    decoder = OpenAIStreamDecoder()
    from tokenwire.sse import decode

    pieces = [f"w{i} " for i in range(5000)]
    for i, piece in enumerate(pieces):
        for ev in decode(chunk({"content": piece}).encode()):
            decoder.feed(ev)
        if i == 10:
            assert decoder.message.text == "".join(pieces[:11])
    assert decoder.message.text == "".join(pieces)


# --- Anthropic -------------------------------------------------------------------


def test_anthropic_thinking_text_tools_usage() -> None:
    body = (
        ant_start(input_tokens=10, output_tokens=1, cache_read_input_tokens=4)
        + ant(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        )
        + ant("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Hmm"})
        + ant(
            "content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig=="}
        )
        + ant("content_block_stop", index=0)
        + ant("ping")
        + ant("content_block_start", index=1, content_block={"type": "text", "text": ""})
        + ant_text(1, "Hi")
        + ant("content_block_stop", index=1)
        + ant(
            "content_block_start",
            index=2,
            content_block={"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        )
        + ant(
            "content_block_delta",
            index=2,
            delta={"type": "input_json_delta", "partial_json": '{"a":'},
        )
        + ant(
            "content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": "1}"}
        )
        + ant("content_block_stop", index=2)
        + ant(
            "content_block_start",
            index=3,
            content_block={"type": "tool_use", "id": "t2", "name": "g", "input": {}},
        )
        + ant("content_block_stop", index=3)
        + ant(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 30},
        )
        + ant("some_future_event", x=1)
        + ant("message_stop")
    ).encode()
    decoder = AnthropicStreamDecoder()
    deltas = feed_all(decoder, body)
    assert isinstance(deltas[0], MessageStart) and deltas[0].usage is not None
    assert ReasoningDelta("Hmm") in deltas
    assert ReasoningDelta(signature="sig==") in deltas
    assert ToolCallDelta(0, id="t1", name="f") in deltas
    assert ToolCallDelta(1, arguments="{}") in deltas  # no streamed input: "{}"
    assert FinishDelta("tool_calls", "tool_use") in deltas
    assert decoder.done
    msg = decoder.message
    assert (msg.text, msg.reasoning, msg.reasoning_signature) == ("Hi", "Hmm", "sig==")
    assert [(c.index, c.id, c.name, c.arguments) for c in msg.tool_calls] == [
        (0, "t1", "f", '{"a":1}'),
        (1, "t2", "g", "{}"),
    ]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 30)
    assert msg.usage.cache_read_input_tokens == 4
    builder = MessageBuilder()
    for delta in deltas:
        builder.feed(delta)
    assert builder.message == msg


def test_anthropic_output_tokens_are_cumulative() -> None:
    body = (
        ant_start(input_tokens=1, output_tokens=1)
        + ant("message_delta", delta={"stop_reason": None}, usage={"output_tokens": 5})
        + ant("message_delta", delta={"stop_reason": "max_tokens"}, usage={"output_tokens": 9})
        + ant("message_stop")
    ).encode()
    msg = accumulate(body)
    assert (msg.usage.output_tokens, msg.finish_reason, msg.raw_finish_reason) == (
        9,
        "length",
        "max_tokens",
    )


def test_anthropic_error_event() -> None:
    error = {
        "type": "error",
        "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"},
    }
    body = (
        ant_start() + ant_text(0, "par") + "event: error\ndata: " + json.dumps(error) + "\n\n"
    ).encode()
    decoder = AnthropicStreamDecoder()
    deltas = feed_all(decoder, body)
    assert deltas[-1] == ErrorDelta("overloaded_error", "Overloaded", error["error"])
    assert decoder.close() == []  # the error explains the end; no second error
    with pytest.raises(StreamError) as info:
        accumulate(body)
    assert (info.value.provider, info.value.message) == ("anthropic", "Overloaded")


def test_anthropic_cut_before_message_stop_is_an_error() -> None:
    body = (
        ant_start()
        + ant("content_block_start", index=0, content_block={"type": "text", "text": ""})
        + ant_text(0, "Hal")
    ).encode()
    decoder = AnthropicStreamDecoder()
    feed_all(decoder, body)
    assert decoder.message.text == "Hal"  # what arrived is kept
    with pytest.raises(StreamError) as info:
        decoder.close()
    assert info.value.type == "network"
    assert "message_stop" in info.value.message
    with pytest.raises(StreamError):
        accumulate(body)


def test_anthropic_tolerates_untyped_deltas_and_skips_foreign_blocks() -> None:
    body = (
        ant_start()
        + ant("content_block_start", index=0, content_block={"type": "text", "text": ""})
        + ant("content_block_delta", index=0, delta={"text": "Potato"})  # no delta type
        + ant(
            "content_block_start",
            index=1,
            content_block={"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
        )
        + ant(
            "content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": "{}"}
        )
        + ant("content_block_delta", index=1, delta={"type": "text_delta", "text": "ignored"})
        + ant("message_stop")
    ).encode()
    msg = accumulate(body)
    assert (msg.text, msg.tool_calls) == ("Potato", [])


def test_anthropic_bad_data_raises() -> None:
    with pytest.raises(StreamDecodeError):
        AnthropicStreamDecoder().feed(ServerSentEvent("nope", event="message_start"))
    assert AnthropicStreamDecoder().feed(ServerSentEvent("", event="ping")) == []


# --- detection and inputs ----------------------------------------------------------


def test_detect_protocol() -> None:
    assert (
        detect_protocol(ServerSentEvent('{"type":"message_start"}', event="message_start"))
        == "anthropic"
    )
    assert detect_protocol(ServerSentEvent('{"type":"message_start","message":{}}')) == "anthropic"
    assert (
        detect_protocol(ServerSentEvent('{"type":"error","error":{"type":"x"}}', event="error"))
        == "anthropic"
    )
    assert detect_protocol(ServerSentEvent('{"choices":[]}')) == "openai"
    assert detect_protocol(ServerSentEvent('{"error":{"message":"m"}}')) == "openai"
    assert detect_protocol(ServerSentEvent("[DONE]")) == "openai"
    assert detect_protocol(ServerSentEvent("", event="ping")) is None
    assert detect_protocol(ServerSentEvent('{"type": "ping"}', event="ping")) is None
    assert detect_protocol(ServerSentEvent('{"type": "ping"}')) is None
    assert detect_protocol(ServerSentEvent("")) is None


def test_stream_decoder_auto_and_bad_protocol() -> None:
    decoder = StreamDecoder()
    assert decoder.protocol is None and decoder.message.text == "" and decoder.messages == {}
    assert decoder.feed(ServerSentEvent("")) == []
    decoder.feed(ServerSentEvent(chunk({"content": "x"})[6:-2]))
    assert decoder.protocol == "openai"
    with pytest.raises(ValueError, match="protocol"):
        StreamDecoder("bogus")  # type: ignore[arg-type]
    with pytest.raises(StreamError):
        StreamDecoder().close()  # nothing at all arrived


def test_accumulate_inputs() -> None:
    body = openai_body(chunk({"content": "x"}), chunk(finish="stop"))
    from tokenwire.sse import decode

    assert accumulate(body.decode()).text == "x"
    assert accumulate(bytearray(body)).text == "x"
    assert accumulate(decode(body)).text == "x"
    assert accumulate(iter([body[:7], body[7:]])).text == "x"
    with pytest.raises(TypeError, match="ServerSentEvent objects or bytes"):
        accumulate([1, 2])  # type: ignore[list-item]


def test_accumulate_chunks_keep_the_sse_rule_whole_body_does_not() -> None:
    """A final event without its blank line: a whole body counts it, a chunk stream
    discards it (it may have been cut), so the Anthropic stream is then incomplete."""
    body = (ant_start() + ant_text(0, "x") + ant("message_stop")).encode().rstrip(b"\n")
    assert accumulate(body).text == "x"
    with pytest.raises(StreamError):
        accumulate([body])
