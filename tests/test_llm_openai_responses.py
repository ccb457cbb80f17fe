"""The OpenAI Responses protocol: decoder, encoder, requests, whole replies, detection.

The oracle is the ``openai`` SDK: its event and response types (strict validation) and
its own stream accumulation (``client.responses.stream(...)``), fed our bytes through an
httpx2 MockTransport, and, once, through a real uvicorn server.
"""

from __future__ import annotations

import copy
import itertools
import string
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent, response_create_params
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from tokenwire.errors import StreamError
from tokenwire.llm import MessageBuilder, StreamDecodeError, StreamDecoder, accumulate
from tokenwire.llm.decode import detect_protocol
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    Message,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.openai_responses import (
    OPENAI_RESPONSES,
    OpenAIResponses,
    ResponsesEventEncoder,
    ResponsesStreamDecoder,
    from_responses,
    responses_object,
    responses_usage,
    to_responses,
)
from tokenwire.llm.protocol import EventDecoder, EventEncoder, get_protocol
from tokenwire.llm.requests import (
    REASONING_EFFORTS,
    ChatMessage,
    ChatRequest,
    ImagePart,
    Part,
    RequestError,
    ResponseFormat,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    from_anthropic,
    from_openai,
)
from tokenwire.server import EventStreamResponse
from tokenwire.sse import ServerSentEvent, SSEDecoder, decode

from .conftest import serve

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
REQUEST = pydantic.TypeAdapter(response_create_params.ResponseCreateParamsNonStreaming)
FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def wire(raw: bytes) -> list[dict[str, Any]]:
    """The events of one of our streams, each checked: named as its data's ``type``,
    accepted by the SDK's event types strictly, numbered 0, 1, 2, ..."""
    out = []
    for event in decode(raw):
        obj = orjson.loads(event.data)
        assert event.event == obj["type"]
        EVENTS.validate_python(obj, strict=True)
        out.append(obj)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def body_of(events: list[dict[str, Any]], *, names: bool = True) -> bytes:
    """Wire bytes for event dicts (numbered here), with or without ``event:`` lines."""
    out = []
    for seq, event in enumerate(events):
        data = orjson.dumps({**event, "sequence_number": seq})
        out.append((b"event: " + event["type"].encode() + b"\n" if names else b"") + b"data: ")
        out.append(data + b"\n\n")
    return b"".join(out)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` cut at the given offsets (taken modulo its length)."""
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


# --- the SDK as oracle -------------------------------------------------------------------


class FakeAPI:
    """``openai`` clients whose transport answers every request with ``chunks``: one
    validating every event strictly (for our encoder's streams), one as shipped (for
    streams with events the SDK has no type for)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            headers = {"content-type": "text/event-stream"}
            return httpx2.Response(200, headers=headers, content=iter(list(self.chunks)))

        def client(strict: bool) -> openai.OpenAI:
            http = httpx2.Client(transport=httpx2.MockTransport(handler))
            return openai.OpenAI(
                api_key="x", http_client=http, max_retries=0, _strict_response_validation=strict
            )

        self.strict = client(True)
        self.lenient = client(False)


@pytest.fixture(scope="module")
def api() -> FakeAPI:
    return FakeAPI()


def summarize_response(resp: Any) -> dict[str, Any]:
    """What a whole SDK response says, in the terms of :class:`Message`."""
    if resp.status == "failed":
        return {"error": resp.error.message}
    text, refusal, reasoning, calls = "", None, "", []
    for item in resp.output:
        if item.type == "message":
            for part in item.content:
                if part.type == "output_text":
                    text += part.text
                elif part.type == "refusal":
                    refusal = (refusal or "") + part.refusal
        elif item.type == "function_call":
            calls.append((item.call_id, item.name, item.arguments))
        elif item.type == "reasoning":
            texts = [s.text for s in item.summary] + [c.text for c in item.content or []]
            reasoning += "\n\n".join(t for t in texts if t)
    if resp.status == "incomplete":
        finish = {"max_output_tokens": "length", "content_filter": "content_filter"}[
            resp.incomplete_details.reason
        ]
    else:
        finish = "tool_calls" if calls else "stop"
    u = resp.usage
    usage = None
    if u is not None:
        inp, out = u.input_tokens_details, u.output_tokens_details
        usage = (
            u.input_tokens,
            u.output_tokens,
            inp.cached_tokens,
            inp.cache_write_tokens,
            out.reasoning_tokens,
        )
    return {
        "id": resp.id,
        "model": resp.model,
        "text": text,
        "refusal": refusal,
        "reasoning": reasoning,
        "calls": calls,
        "finish": finish,
        "usage": usage,
    }


def summarize_message(msg: Message) -> dict[str, Any]:
    u = msg.usage
    counts = (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.reasoning_tokens,
    )
    return {
        "id": msg.id,
        "model": msg.model,
        "text": msg.text,
        "refusal": msg.refusal,
        "reasoning": msg.reasoning,
        "calls": [(c.id, c.name, c.arguments) for c in msg.tool_calls],
        "finish": msg.finish_reason,
        "usage": None if all(c is None for c in counts) else tuple(c or 0 for c in counts),
    }


def sdk_result(client: openai.OpenAI) -> dict[str, Any]:
    """What ``client.responses.stream(...)`` makes of the stream: the final response
    (for an incomplete one, the ``response.incomplete`` event's), or the error it raised
    or reported."""
    final = None
    try:
        with client.responses.stream(model="m", input="hi") as stream:
            for event in stream:
                if event.type == "error":  # the documented shape: yielded, not raised
                    return {"error": event.message}
                if event.type in ("response.incomplete", "response.failed"):
                    final = event.response
            if final is None:
                final = stream.get_final_response()
    except openai.APIError as exc:
        return {"error": exc.message}
    return summarize_response(final)


def our_result(chunks: list[bytes]) -> dict[str, Any]:
    """What our decoder makes of the stream read in ``chunks`` (through an SSEDecoder)."""
    sse = SSEDecoder()
    events = [event for chunk in chunks for event in sse.feed(chunk)] + sse.close()
    try:
        msg = accumulate(events, protocol="responses")
    except StreamError as exc:
        return {"error": exc.message}
    return summarize_message(msg)


def decoded(raw: bytes) -> tuple[ResponsesStreamDecoder, list[Delta]]:
    decoder = ResponsesStreamDecoder()
    deltas = [d for event in decode(raw) for d in decoder.feed(event)]
    return decoder, deltas


# --- encoder: exact events -----------------------------------------------------------------


def test_encoder_text_stream_exact_events() -> None:
    enc = ResponsesEventEncoder(id="resp_1", model="gpt-5", created_at=1700000000)
    raw = enc.encode(TextDelta("Hel")) + enc.encode(TextDelta("lo")) + enc.done(Usage(3, 2))
    events = wire(raw)
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["id"] == "resp_1" and created["model"] == "gpt-5"
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert created["created_at"] == 1700000000
    assert events[1]["response"] == {**created}
    added = events[2]
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_") and added["output_index"] == 0
    assert added["item"] == {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    assert events[3] == {
        "type": "response.content_part.added",
        **where,
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        "sequence_number": 3,
    }
    assert events[4] == {
        "type": "response.output_text.delta",
        **where,
        "delta": "Hel",
        "logprobs": [],
        "sequence_number": 4,
    }
    assert events[6] == {
        "type": "response.output_text.done",
        **where,
        "text": "Hello",
        "logprobs": [],
        "sequence_number": 6,
    }
    assert events[7]["part"]["text"] == "Hello"
    item = events[8]["item"]
    assert (item["status"], item["content"][0]["text"]) == ("completed", "Hello")
    final = events[9]["response"]
    assert final["status"] == "completed" and final["output"] == [item]
    assert final["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    Response.model_validate(final, strict=True)
    # the bytes: compact JSON, "type" first, the sequence number last
    assert raw.split(b"\n\n")[4] == (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"item_id":"' + item_id.encode() + b'","output_index":0,"content_index":0,'
        b'"delta":"Hel","logprobs":[],"sequence_number":4}'
    )
    assert not raw.endswith(b"[DONE]\n\n") and enc.ended


def test_encoder_items_in_order_with_parallel_calls_reasoning_and_refusal() -> None:
    enc = ResponsesEventEncoder(model="m", created_at=1)
    raw = enc.encode(MessageStart(id="resp_start", model="m2", usage=Usage(input_tokens=9)))
    raw += enc.encode(ReasoningDelta("Think"))
    raw += enc.encode(ReasoningDelta("ing", signature="sig"))
    raw += enc.encode(TextDelta("Sure"))
    raw += enc.encode(RefusalDelta("No"))
    raw += enc.encode(RefusalDelta("pe"))
    raw += enc.encode(ToolCallDelta(0, "call_a", "f", '{"x":'))
    raw += enc.encode(ToolCallDelta(1, "call_b", "g", ""))
    raw += enc.encode(ToolCallDelta(0, arguments="1}"))
    raw += enc.encode(ToolCallDelta(1, arguments="{}"))
    raw += enc.encode(UsageDelta(Usage(output_tokens=5, reasoning_tokens=2)))
    raw += enc.encode(FinishDelta("tool_calls"))
    raw += enc.done()
    events = wire(raw)
    assert events[0]["response"]["id"] == "resp_start"  # from MessageStart
    assert events[0]["response"]["model"] == "m"  # the constructor's wins
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "reasoning"),
        (1, "message"),
        (2, "function_call"),
        (3, "function_call"),
    ]
    ids = [e["item"]["id"] for e in added]
    assert [i.split("_")[0] for i in ids] == ["rs", "msg", "fc", "fc"] and len(set(ids)) == 4
    assert added[0]["item"]["summary"] == []
    assert added[2]["item"] == {
        "id": ids[2],
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_a",
        "name": "f",
    }
    # reasoning: one summary part
    summary = [e for e in events if e["type"].startswith("response.reasoning_summary")]
    assert kinds(summary) == [
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    assert summary[3]["text"] == "Thinking" and summary[4]["part"]["text"] == "Thinking"
    # refusal: a second content part of the same message item
    parts = [e for e in events if e["type"] == "response.content_part.added"]
    assert [(p["content_index"], p["part"]["type"]) for p in parts] == [
        (0, "output_text"),
        (1, "refusal"),
    ]
    done = next(e for e in events if e["type"] == "response.refusal.done")
    assert (done["refusal"], done["content_index"], done["output_index"]) == ("Nope", 1, 1)
    # parallel calls: interleaved fragments, each call finished with its whole arguments
    fragments = [
        (e["output_index"], e["delta"])
        for e in events
        if e["type"] == "response.function_call_arguments.delta"
    ]
    assert fragments == [(2, '{"x":'), (2, "1}"), (3, "{}")]
    args_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["item_id"], e["arguments"]) for e in args_done] == [
        (ids[2], '{"x":1}'),
        (ids[3], "{}"),
    ]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    kinds_out = [i["type"] for i in final["output"]]
    assert kinds_out == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][1]["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "Sure"},
        {"type": "refusal", "refusal": "Nope"},
    ]
    assert final["usage"]["input_tokens"] == 9
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 2}
    # every output_item.done carries the item as it is in the final response
    finished = {e["output_index"]: e["item"] for e in events if e["type"].endswith("item.done")}
    assert [finished[i] for i in range(4)] == final["output"]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        (FinishDelta("length"), "max_output_tokens"),
        (FinishDelta("content_filter"), "content_filter"),
        (FinishDelta("stop", raw_reason="max_output_tokens"), "max_output_tokens"),
    ],
)
def test_encoder_incomplete(finish: FinishDelta, reason: str) -> None:
    enc = ResponsesEventEncoder(id="resp_1", model="m")
    raw = enc.encode(TextDelta("cut")) + enc.encode(finish) + enc.done()
    events = wire(raw)
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": reason}
    assert last["response"]["output"][0]["status"] == "incomplete"
    msg = accumulate(raw, protocol="responses")
    expected = "length" if reason == "max_output_tokens" else "content_filter"
    assert (msg.text, msg.finish_reason, msg.raw_finish_reason) == ("cut", expected, reason)


def test_encoder_errors_end_the_stream() -> None:
    enc = ResponsesEventEncoder(id="resp_1", model="m")
    raw = enc.encode(TextDelta("partial")) + enc.error(StreamError("rate_limit", "slow down"))
    events = wire(raw)
    assert kinds(events)[-2:] == ["error", "response.failed"]
    error, failed = events[-2:]
    assert error == {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "slow down",
        "param": None,
        "error": {
            "message": "slow down",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        "sequence_number": len(events) - 2,
    }
    response = failed["response"]
    assert response["status"] == "failed" and response["id"] == "resp_1"
    assert response["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    assert response["output"][0]["content"][0]["text"] == "partial"
    assert enc.ended
    with pytest.raises(RuntimeError, match="already ended"):
        enc.encode(TextDelta("x"))
    with pytest.raises(RuntimeError, match="already ended"):
        enc.done()
    with pytest.raises(RuntimeError, match="already ended"):
        enc.error(ValueError("x"))
    # decoded: one error (the response.failed after it is the same error)
    decoder, deltas = decoded(raw)
    errors = [d for d in deltas if isinstance(d, ErrorDelta)]
    assert len(errors) == 1 and errors[0].message == "slow down" and decoder.done
    with pytest.raises(StreamError) as info:
        accumulate(raw, protocol="responses")
    assert (info.value.type, info.value.message) == ("rate_limit", "slow down")


def test_encoder_error_delta_keeps_the_provider_error() -> None:
    enc = ResponsesEventEncoder()
    body = {"type": "server_error", "code": "server_is_overloaded", "message": "Busy."}
    raw = enc.encode(ErrorDelta("server_error", "Busy.", body))
    events = wire(raw)
    assert kinds(events) == ["response.created", "response.in_progress", "error", "response.failed"]
    assert events[2]["error"] == {
        "message": "Busy.",
        "type": "server_error",
        "param": None,
        "code": "server_is_overloaded",
    }
    # the failed response's code must be one the SDK's ResponseError allows
    assert events[3]["response"]["error"] == {"code": "server_error", "message": "Busy."}
    assert enc.ended
    # an Anthropic error through the same encoder: rendered in OpenAI's vocabulary
    enc = ResponsesEventEncoder(error_provider="anthropic")
    raw = enc.encode(ErrorDelta("overloaded_error", "Overloaded", None))
    assert wire(raw)[2]["error"]["code"] == "overloaded"


def test_encoder_options_and_bad_input() -> None:
    enc = ResponsesEventEncoder(include_usage=False)
    assert enc.encode(UsageDelta(Usage(1, 2))) == b""
    assert enc.encode(ReasoningDelta(signature="sig")) == b""  # no place for a signature
    raw = enc.encode(TextDelta("x")) + enc.done()
    events = wire(raw)
    assert events[0]["response"]["id"].startswith("resp_") and events[0]["response"]["model"] == ""
    assert events[-1]["response"]["usage"] is None
    enc = ResponsesEventEncoder(id="r", model="m")
    out = enc.encode(TextDelta("a"))
    with pytest.raises(ValueError, match="single reply"):
        enc.encode(TextDelta("x", choice=1))
    with pytest.raises(ValueError, match="id and name"):
        enc.encode(ToolCallDelta(0, arguments="{}"))
    with pytest.raises(ValueError, match="not a tokenwire delta"):
        enc.encode("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        enc.encode_text(5)  # type: ignore[arg-type]
    out += enc.encode(ToolCallDelta(0, "c", "f", "{"))
    out += enc.encode(TextDelta("b"))
    # a call's fragments cannot come back after other content closed it
    with pytest.raises(ValueError, match="id and name"):
        enc.encode(ToolCallDelta(0, arguments="}"))
    out += enc.encode(TextDelta("c")) + enc.done()
    # the rejected deltas changed nothing: the same events, numbered without gaps
    assert kinds(wire(out)) == kinds(wire(_replay()))
    msg = accumulate(out, protocol="responses")
    assert msg.text == "abc" and msg.tool_calls == [ToolCall("c", "f", "{", 0)]


def _replay() -> bytes:
    enc = ResponsesEventEncoder(id="r", model="m")
    return (
        enc.encode(TextDelta("a"))
        + enc.encode(ToolCallDelta(0, "c", "f", "{"))
        + enc.encode(TextDelta("b"))
        + enc.encode(TextDelta("c"))
        + enc.done()
    )


def test_encoder_empty_stream_and_encode_text() -> None:
    enc = ResponsesEventEncoder(id="resp_e", model="m")
    first = enc.start()
    assert enc.start() == b""
    raw = first + enc.done()
    events = wire(raw)
    assert kinds(events) == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == []
    msg = accumulate(raw, protocol="responses")
    assert (msg.id, msg.text, msg.finish_reason) == ("resp_e", "", "stop")
    enc = ResponsesEventEncoder(id="resp_t", model="m")
    raw = enc.encode_text("a") + enc.encode_text("") + enc.encode_text("b") + enc.done()
    assert accumulate(raw, protocol="responses").text == "ab"
    assert sum(1 for e in wire(raw) if e["type"] == "response.output_text.delta") == 2


def test_encoder_satisfies_the_protocol_interfaces() -> None:
    assert isinstance(ResponsesEventEncoder(), EventEncoder)
    assert isinstance(ResponsesStreamDecoder(), EventDecoder)
    assert isinstance(OPENAI_RESPONSES.encoder(), ResponsesEventEncoder)
    assert isinstance(OPENAI_RESPONSES.decoder(), ResponsesStreamDecoder)


# --- the SDK's accumulator over our encoder's bytes ----------------------------------------


def test_sdk_accumulates_our_stream_and_raises_on_our_errors(api: FakeAPI) -> None:
    enc = ResponsesEventEncoder(id="resp_sdk", model="gpt-5")
    raw = b"".join(
        enc.encode(d)
        for d in [
            ReasoningDelta("Plan."),
            TextDelta("Hi "),
            TextDelta("there"),
            ToolCallDelta(0, "call_1", "f", '{"a":'),
            ToolCallDelta(1, "call_2", "g", '{"b":'),
            ToolCallDelta(0, arguments="1}"),
            ToolCallDelta(1, arguments="2}"),
            UsageDelta(Usage(10, 20, cache_read_input_tokens=4, reasoning_tokens=6)),
            FinishDelta("tool_calls"),
        ]
    )
    raw += enc.done()
    api.chunks = [raw]
    with api.strict.responses.stream(model="gpt-5", input="hi") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen == kinds(wire(raw))
    assert final.output_text == "Hi there"
    assert summarize_response(final) == summarize_message(accumulate(raw, protocol="responses"))
    assert summarize_response(final)["calls"] == [
        ("call_1", "f", '{"a":1}'),
        ("call_2", "g", '{"b":2}'),
    ]
    assert summarize_response(final)["usage"] == (10, 20, 4, 0, 6)
    # an error ending: both ways of streaming raise the SDK's APIError
    enc = ResponsesEventEncoder(id="resp_err", model="gpt-5")
    api.chunks = [enc.encode(TextDelta("x")) + enc.error(StreamError("overloaded", "Busy now"))]
    with pytest.raises(openai.APIError, match="Busy now") as info:
        for _ in api.strict.responses.create(model="gpt-5", input="hi", stream=True):
            pass
    assert info.value.body == {
        "message": "Busy now",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }
    assert StreamError.from_exception(info.value).type == "overloaded"
    with (
        pytest.raises(openai.APIError, match="Busy now"),
        api.strict.responses.stream(model="gpt-5", input="hi") as stream,
    ):
        stream.get_final_response()
    # what would not raise: the documented flat error event alone (no "error" key)
    flat = {"type": "error", "code": "server_error", "message": "flat", "param": None}
    api.chunks = [body_of([flat])]
    events = list(api.strict.responses.create(model="gpt-5", input="hi", stream=True))
    assert [e.type for e in events] == ["error"]
    # ... which our decoder still reports as an error
    with pytest.raises(StreamError, match="flat"):
        accumulate(body_of([flat]), protocol="responses")


def test_protocol_error_event_alone_makes_the_sdk_raise(api: FakeAPI) -> None:
    err = StreamError("invalid_request", "bad input", param="input")
    raw = OPENAI_RESPONSES.error_event(err)
    events = wire(raw)
    assert kinds(events) == ["error", "response.failed"]
    assert [e["sequence_number"] for e in events] == [0, 1]
    assert events[0]["param"] == "input" and events[1]["response"]["status"] == "failed"
    assert err.to_sse_event("responses").startswith(b"event: error\n")
    api.chunks = [raw]
    with pytest.raises(openai.APIError, match="bad input"):
        list(api.strict.responses.create(model="m", input="hi", stream=True))
    # auto-detection: whoever claims the first event, the error is what comes out
    with pytest.raises(StreamError, match="bad input"):
        accumulate(raw)
    with pytest.raises(StreamError, match="bad input"):
        accumulate(raw, protocol="responses")


TEXT = st.text(max_size=8)


@st.composite
def delta_runs(draw: st.DrawFn) -> tuple[list[Delta], str]:
    """A random reply as deltas, in an order an encoder can take (a call's fragments
    come while it is open: before any other content), and how it ends."""
    deltas: list[Delta] = []
    usages = st.builds(
        Usage,
        st.none() | st.integers(0, 999),
        st.none() | st.integers(0, 999),
        st.none() | st.integers(0, 99),
        st.none() | st.integers(0, 99),
        st.none() | st.integers(0, 99),
    )
    if draw(st.booleans()):
        deltas.append(MessageStart(id="resp_other", model="other", usage=draw(usages)))
    open_calls: list[int] = []
    calls = 0

    def new_call() -> None:
        nonlocal calls
        name = draw(st.text(min_size=1, max_size=6))
        deltas.append(ToolCallDelta(calls, f"call_{calls}", name, draw(TEXT)))
        open_calls.append(calls)
        calls += 1

    steps = ["text", "text", "refusal", "reason", "call", "parallel", "frag", "frag", "use"]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(steps))
        if kind == "frag" and not open_calls:
            kind = "call"
        if kind == "text":
            deltas.append(TextDelta(draw(TEXT)))
        elif kind == "refusal":
            deltas.append(RefusalDelta(draw(TEXT)))
        elif kind == "reason":
            text = draw(TEXT)
            deltas.append(ReasoningDelta(text))
            if not text:
                continue  # makes no event: open calls stay open
        elif kind == "call":
            new_call()
            continue
        elif kind == "parallel":  # several calls open, their fragments interleaved
            for _ in range(draw(st.integers(2, 3))):
                new_call()
            for _ in range(draw(st.integers(1, 5))):
                index = draw(st.sampled_from(open_calls))
                deltas.append(ToolCallDelta(index, arguments=draw(TEXT)))
            continue
        elif kind == "frag":
            deltas.append(ToolCallDelta(draw(st.sampled_from(open_calls)), arguments=draw(TEXT)))
            continue
        else:
            deltas.append(UsageDelta(draw(usages)))
            continue
        open_calls = []
    ending = draw(
        st.sampled_from(["done", "stop", "tool_calls", "length", "content_filter", "err", "exc"])
    )
    if ending in ("stop", "tool_calls", "length", "content_filter"):
        deltas.append(FinishDelta(ending))
    return deltas, ending


def expected_from(deltas: list[Delta], ending: str) -> dict[str, Any]:
    """What the deltas add up to, as the Responses stream can say it: the finish is
    decided by the response's status, usage counts are always sent (0 when unknown)."""
    if ending in ("err", "exc"):
        return {"error": "went wrong"}
    builder = MessageBuilder()
    for delta in deltas:
        builder.feed(delta)
    msg = builder.message
    out = summarize_message(msg)
    out["id"], out["model"] = "resp_h", "m"
    if msg.finish_reason not in ("length", "content_filter"):
        out["finish"] = "tool_calls" if msg.tool_calls else "stop"
    u = msg.usage
    out["usage"] = tuple(
        c or 0
        for c in (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
            u.reasoning_tokens,
        )
    )
    return out


@FAST
@given(run=delta_runs(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_sdk_and_our_decoder_agree_on_random_encoder_streams(
    api: FakeAPI, run: tuple[list[Delta], str], cuts: list[int]
) -> None:
    deltas, ending = run
    enc = ResponsesEventEncoder(id="resp_h", model="m", created_at=5)
    raw = b"".join(enc.encode(d) for d in deltas)
    if ending == "err":
        raw += enc.encode(ErrorDelta("server_error", "went wrong"))
    elif ending == "exc":
        raw += enc.error(StreamError("overloaded", "went wrong"))
    else:
        raw += enc.done()
    wire(raw)  # every event valid for the SDK's types, numbered in order
    chunks = split(raw, cuts)
    expected = expected_from(deltas, ending)
    assert our_result(chunks) == expected
    assert our_result([raw]) == expected
    api.chunks = chunks
    assert sdk_result(api.strict) == expected
    if "error" not in expected:
        # every response object on the wire is a valid Response, strictly
        for event in wire(raw):
            if "response" in event:
                Response.model_validate(event["response"], strict=True)
        # auto-detection picks this protocol; the deltas carry the whole message
        assert accumulate(raw) == accumulate(raw, protocol="responses")
        decoder, our_deltas = decoded(raw)
        builder = MessageBuilder()
        for delta in our_deltas:
            builder.feed(delta)
        assert builder.message == decoder.message


# --- streams written independently of our encoder -------------------------------------------


RESPONSE_BASE: dict[str, Any] = {
    "object": "response",
    "created_at": 1741290958,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "output": [],
    "usage": None,
}


@st.composite
def api_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool]:
    """A stream in the API's shapes (as event dicts, numbered later), with variations:
    queued, unknown events, hosted-tool items, annotations, text or arguments only in
    ``.done`` events, interleaved argument fragments of parallel calls, several summary
    parts, reasoning_text, and each way of ending. Also whether to send event names."""
    rid = "resp_" + draw(st.text(string.hexdigits, min_size=4, max_size=8))
    base = {**RESPONSE_BASE, "id": rid, "model": draw(st.sampled_from(["gpt-5", "o3"]))}
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(copy.deepcopy({"type": kind, **fields}))

    def noise() -> None:
        if draw(st.integers(0, 5)) == 0:
            emit("response.some_new_feature.delta", output_index=0, item_id="x", delta="zz")

    def chunks_of() -> list[str]:
        return draw(st.lists(st.text(min_size=1, max_size=5), max_size=4))

    emit("response.created", response={**base, "status": "in_progress"})
    if draw(st.booleans()):
        emit("response.queued", response={**base, "status": "queued"})
    emit("response.in_progress", response={**base, "status": "in_progress"})
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["message", "calls", "reasoning"] * 2 + ["web_search"]))
        noise()
        if kind == "message":
            index = len(items)
            item: dict[str, Any] = {
                "id": f"msg_{index}",
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
            items.append(item)
            emit("response.output_item.added", output_index=index, item=item)
            where = {"item_id": item["id"], "output_index": index}
            for ci, ptype in enumerate(
                draw(st.lists(st.sampled_from(["output_text", "refusal"]), max_size=2))
            ):
                pieces, only_done = chunks_of(), draw(st.booleans())
                full = "".join(pieces)
                at = {**where, "content_index": ci}
                if ptype == "output_text":
                    emit("response.content_part.added", **at, part=_out_text(""))
                    for piece in [] if only_done else pieces:
                        emit("response.output_text.delta", **at, delta=piece, logprobs=[])
                        noise()
                    if draw(st.booleans()):
                        emit(
                            "response.output_text.annotation.added",
                            **at,
                            annotation_index=0,
                            annotation={
                                "type": "url_citation",
                                "url": "https://example.com",
                                "title": "t",
                                "start_index": 0,
                                "end_index": 0,
                            },
                        )
                    emit("response.output_text.done", **at, text=full, logprobs=[])
                    part = _out_text(full)
                else:
                    emit("response.content_part.added", **at, part=_refusal(""))
                    for piece in [] if only_done else pieces:
                        emit("response.refusal.delta", **at, delta=piece)
                    emit("response.refusal.done", **at, refusal=full)
                    part = _refusal(full)
                emit("response.content_part.done", **at, part=part)
                item["content"].append(part)
            item["status"] = "completed"
            emit("response.output_item.done", output_index=index, item=item)
        elif kind == "calls":
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                index = len(items)
                item = {
                    "id": f"fc_{index}",
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": f"call_{index}",
                    "name": draw(st.sampled_from(["get_weather", "search", "f"])),
                }
                items.append(item)
                emit("response.output_item.added", output_index=index, item=item)
                calls.append((index, item, chunks_of(), draw(st.booleans())))
            # fragments of the open calls, interleaved (each call's in order)
            pending = {index: list(p) for index, _, p, only_done in calls if not only_done}
            slots = [index for index, pieces in pending.items() for _ in pieces]
            for index in draw(st.permutations(slots)):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=f"fc_{index}",
                    output_index=index,
                    delta=pending[index].pop(0),
                )
            for index, item, pieces, _ in calls:
                item.update(arguments="".join(pieces), status="completed")
                emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
                emit("response.output_item.done", output_index=index, item=item)
        elif kind == "reasoning":
            index = len(items)
            item = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
            items.append(item)
            emit("response.output_item.added", output_index=index, item=item)
            where = {"item_id": item["id"], "output_index": index}
            if draw(st.booleans()):
                for si in range(draw(st.sampled_from([1, 2, 2, 3]))):
                    pieces, only_done = chunks_of(), draw(st.booleans())
                    full = "".join(pieces)
                    at = {**where, "summary_index": si}
                    emit("response.reasoning_summary_part.added", **at, part=_summary(""))
                    for piece in [] if only_done else pieces:
                        emit("response.reasoning_summary_text.delta", **at, delta=piece)
                    emit("response.reasoning_summary_text.done", **at, text=full)
                    emit("response.reasoning_summary_part.done", **at, part=_summary(full))
                    item["summary"].append(_summary(full))
            else:
                pieces = chunks_of()
                at = {**where, "content_index": 0}
                part = {"type": "reasoning_text", "text": ""}
                emit("response.content_part.added", **at, part=part)
                for piece in pieces:
                    emit("response.reasoning_text.delta", **at, delta=piece)
                full = "".join(pieces)
                emit("response.reasoning_text.done", **at, text=full)
                emit("response.content_part.done", **at, part={**part, "text": full})
                item["content"] = [{**part, "text": full}]
            emit("response.output_item.done", output_index=index, item=item)
        else:  # a hosted tool: neither the SDK's text nor ours
            index = len(items)
            item = {"id": f"ws_{index}", "type": "web_search_call", "status": "in_progress"}
            item["action"] = {"type": "search", "query": "weather"}
            items.append(item)
            emit("response.output_item.added", output_index=index, item=item)
            for step in ("in_progress", "searching", "completed"):
                emit(f"response.web_search_call.{step}", item_id=item["id"], output_index=index)
            item["status"] = "completed"
            emit("response.output_item.done", output_index=index, item=item)
    usage = {
        "input_tokens": draw(st.integers(0, 500)),
        "input_tokens_details": {
            "cached_tokens": draw(st.integers(0, 50)),
            "cache_write_tokens": 0,
        },
        "output_tokens": draw(st.integers(0, 500)),
        "output_tokens_details": {"reasoning_tokens": draw(st.integers(0, 50))},
    }
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    final = {**base, "output": items, "usage": usage}
    ending = draw(
        st.sampled_from(["completed"] * 4 + ["incomplete", "failed", "error", "flat_error"])
    )
    if ending == "completed":
        emit("response.completed", response={**final, "status": "completed"})
    elif ending == "incomplete":
        reason = draw(st.sampled_from(["max_output_tokens", "content_filter"]))
        details = {"reason": reason}
        emit(
            "response.incomplete",
            response={**final, "status": "incomplete"} | {"incomplete_details": details},
        )
    else:
        error = {"code": "server_error", "message": "The server had an error."}
        if ending == "error":  # what the API sends: the error object nested
            inner = {"type": "server_error", **error, "param": None}
            emit("error", error=inner)
        elif ending == "flat_error":  # the documented shape
            emit("error", **error, param=None)
        if ending == "failed" or draw(st.booleans()):
            emit("response.failed", response={**final, "status": "failed", "error": error})
    return events, draw(st.booleans())


def _out_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _refusal(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


@FAST
@given(stream=api_streams(), cuts=st.lists(st.integers(0, 100_000), max_size=12))
def test_sdk_and_our_decoder_agree_on_independent_streams(
    api: FakeAPI, stream: tuple[list[dict[str, Any]], bool], cuts: list[int]
) -> None:
    events, names = stream
    raw = body_of(events, names=names)
    chunks = split(raw, cuts)
    api.chunks = chunks
    oracle = sdk_result(api.lenient)
    assert our_result(chunks) == oracle
    if "error" not in oracle:
        assert accumulate(raw) == accumulate(raw, protocol="responses")  # auto-detection
        decoder, deltas = decoded(raw)
        builder = MessageBuilder()
        for delta in deltas:
            builder.feed(delta)
        assert builder.message == decoder.message
        starts = [d for d in deltas if isinstance(d, MessageStart)]
        assert len(starts) == 1 and starts[0].id == events[0]["response"]["id"]


# --- decoder units ---------------------------------------------------------------------------


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def created() -> dict[str, Any]:
    return ev("response.created", response={**RESPONSE_BASE, "id": "resp_1", "model": "gpt-5"})


def completed(output: list[dict[str, Any]] | None = None, **response: Any) -> dict[str, Any]:
    body = {**RESPONSE_BASE, "id": "resp_1", "model": "gpt-5", "status": "completed"}
    return ev("response.completed", response={**body, "output": output or [], **response})


def test_decoder_deltas_in_order() -> None:
    text_at = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 8},
        "total_tokens": 42,
    }
    raw = body_of(
        [
            created(),
            ev("response.in_progress", response={**RESPONSE_BASE, "id": "resp_1"}),
            ev("response.output_item.added", output_index=0, item=_rs("rs_1")),
            ev(
                "response.reasoning_summary_text.delta",
                item_id="rs_1",
                output_index=0,
                summary_index=0,
                delta="Hm",
            ),
            ev("response.output_item.added", output_index=1, item=_msg("msg_1")),
            ev("response.content_part.added", **text_at, part=_out_text("")),
            ev("response.output_text.delta", **text_at, delta="Hi", logprobs=[]),
            ev("response.output_item.added", output_index=2, item=_fc("fc_1", "call_1", "f")),
            ev(
                "response.function_call_arguments.delta",
                item_id="fc_1",
                output_index=2,
                delta="{}",
            ),
            completed(usage=usage),
        ]
    )
    decoder, deltas = decoded(raw)
    assert deltas == [
        MessageStart(id="resp_1", model="gpt-5"),
        ReasoningDelta("Hm"),
        TextDelta("Hi"),
        ToolCallDelta(0, id="call_1", name="f"),
        ToolCallDelta(0, arguments="{}"),
        FinishDelta("tool_calls", "completed"),
        UsageDelta(Usage(12, 30, 4, 2, 8)),
    ]
    assert decoder.done and decoder.close() == [] and decoder.error is None
    msg = decoder.message
    assert msg == Message(
        id="resp_1",
        model="gpt-5",
        text="Hi",
        reasoning="Hm",
        tool_calls=[ToolCall("call_1", "f", "{}", 0)],
        finish_reason="tool_calls",
        raw_finish_reason="completed",
        usage=Usage(12, 30, 4, 2, 8),
    )
    assert decoder.messages == {0: msg}


def _msg(id: str, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status = "completed" if content is not None else "in_progress"
    return {
        "id": id,
        "type": "message",
        "status": status,
        "content": content or [],
        "role": "assistant",
    }


def _fc(id: str, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    return {"id": id, "type": "function_call", "status": "in_progress", "arguments": arguments} | {
        "call_id": call_id,
        "name": name,
    }


def _rs(id: str, summary: list[str] | None = None) -> dict[str, Any]:
    return {"id": id, "type": "reasoning", "summary": [_summary(t) for t in summary or []]}


def test_decoder_completes_from_done_events_items_and_the_final_response() -> None:
    """Text or arguments that only a .done event, a finished item or the final response
    carries still come out as deltas, exactly once."""
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    raw = body_of(
        [
            created(),
            ev("response.output_item.added", output_index=0, item=_msg("msg_1")),
            ev("response.content_part.added", **at, part=_out_text("")),
            ev("response.output_text.delta", **at, delta="Hel", logprobs=[]),
            ev("response.output_text.done", **at, text="Hello", logprobs=[]),
            ev("response.content_part.done", **at, part=_out_text("Hello")),
            ev(
                "response.output_item.done",
                output_index=0,
                item=_msg("msg_1", [_out_text("Hello")]),
            ),
            ev("response.output_item.added", output_index=1, item=_fc("fc_1", "call_1", "f")),
            ev(
                "response.function_call_arguments.done",
                item_id="fc_1",
                output_index=1,
                arguments='{"a":1}',
            ),
            ev("response.output_item.added", output_index=2, item=_rs("rs_1")),
            ev(
                "response.reasoning_summary_text.done",
                item_id="rs_1",
                output_index=2,
                summary_index=0,
                text="One.",
            ),
            ev(
                "response.reasoning_summary_part.done",
                item_id="rs_1",
                output_index=2,
                summary_index=1,
                part=_summary("Two."),
            ),
            # an item only the final response shows
            completed(
                [
                    _msg("msg_1", [_out_text("Hello")]),
                    _fc("fc_1", "call_1", "f", '{"a":1}'),
                    _rs("rs_1", ["One.", "Two."]),
                    _msg("msg_2", [_out_text("!"), _refusal("no")]),
                ]
            ),
        ]
    )
    decoder, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, TextDelta)] == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta("!"),
    ]
    assert [d for d in deltas if isinstance(d, ToolCallDelta)] == [
        ToolCallDelta(0, id="call_1", name="f"),
        ToolCallDelta(0, arguments='{"a":1}'),
    ]
    # the parts of one reasoning item are paragraphs
    assert [d for d in deltas if isinstance(d, ReasoningDelta)] == [
        ReasoningDelta("One."),
        ReasoningDelta("\n\nTwo."),
    ]
    assert [d for d in deltas if isinstance(d, RefusalDelta)] == [RefusalDelta("no")]
    msg = decoder.message
    assert (msg.text, msg.refusal, msg.reasoning) == ("Hello!", "no", "One.\n\nTwo.")
    assert msg.tool_calls == [ToolCall("call_1", "f", '{"a":1}', 0)]


def test_decoder_deltas_of_items_never_added_are_not_doubled_by_the_final_response() -> None:
    at = {"item_id": "msg_9", "output_index": 0, "content_index": 0}
    raw = body_of(
        [
            created(),
            ev("response.output_text.delta", **at, delta="Hi", logprobs=[]),
            completed([_msg("msg_9", [_out_text("Hi there")])]),
        ]
    )
    decoder, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, TextDelta)] == [TextDelta("Hi"), TextDelta(" there")]
    assert decoder.message.text == "Hi there"


def test_decoder_only_a_final_response() -> None:
    raw = body_of([completed([_msg("m", [_out_text("whole")]), _fc("fc", "c", "f", "{}")])])
    msg = accumulate(raw, protocol="responses")
    assert (msg.id, msg.text, msg.finish_reason) == ("resp_1", "whole", "tool_calls")
    assert msg.tool_calls == [ToolCall("c", "f", "{}", 0)]


def test_decoder_refusal_and_empty_refusal() -> None:
    at = {"item_id": "m", "output_index": 0, "content_index": 0}
    raw = body_of(
        [
            created(),
            ev("response.output_item.added", output_index=0, item=_msg("m")),
            ev("response.content_part.added", **at, part=_refusal("")),
            completed([_msg("m", [_refusal("")])]),
        ]
    )
    decoder, deltas = decoded(raw)
    assert RefusalDelta("") in deltas and decoder.message.refusal == ""
    raw = body_of(
        [
            created(),
            ev("response.output_item.added", output_index=0, item=_msg("m")),
            ev("response.content_part.added", **at, part=_refusal("")),
            ev("response.refusal.delta", **at, delta="I can't"),
            ev("response.refusal.delta", **at, delta=" help."),
            ev("response.refusal.done", **at, refusal="I can't help."),
            completed(),
        ]
    )
    decoder, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, RefusalDelta)] == [
        RefusalDelta(""),  # the part was added: there is a refusal
        RefusalDelta("I can't"),
        RefusalDelta(" help."),
    ]
    assert decoder.message.refusal == "I can't help." and decoder.message.text == ""


def test_decoder_function_calls_numbered_in_order_of_appearance() -> None:
    raw = body_of(
        [
            created(),
            ev("response.output_item.added", output_index=3, item=_fc("fc_b", "call_b", "g")),
            ev("response.output_item.added", output_index=1, item=_fc("fc_a", "call_a", "f")),
            ev("response.function_call_arguments.delta", item_id="fc_a", output_index=1, delta="{"),
            ev("response.function_call_arguments.delta", item_id="fc_b", output_index=3, delta="["),
            ev("response.function_call_arguments.delta", item_id="fc_a", output_index=1, delta="}"),
            ev("response.function_call_arguments.delta", item_id="fc_b", output_index=3, delta="]"),
            # a fragment for an item never added: no id to go with, dropped
            ev("response.function_call_arguments.delta", item_id="fc_x", output_index=9, delta="?"),
            completed(),
        ]
    )
    decoder, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, ToolCallDelta)] == [
        ToolCallDelta(0, id="call_b", name="g"),
        ToolCallDelta(1, id="call_a", name="f"),
        ToolCallDelta(1, arguments="{"),
        ToolCallDelta(0, arguments="["),
        ToolCallDelta(1, arguments="}"),
        ToolCallDelta(0, arguments="]"),
    ]
    assert [(c.index, c.id, c.arguments) for c in decoder.message.tool_calls] == [
        (0, "call_b", "[]"),
        (1, "call_a", "{}"),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), ("new", "length")],
)
def test_decoder_incomplete(reason: str, finish: str) -> None:
    body = {**RESPONSE_BASE, "id": "resp_1", "model": "m", "status": "incomplete"}
    raw = body_of(
        [
            created(),
            ev("response.incomplete", response=body | {"incomplete_details": {"reason": reason}}),
        ]
    )
    decoder, deltas = decoded(raw)
    assert deltas[-1] == FinishDelta(finish, reason)
    assert decoder.done and decoder.message.raw_finish_reason == reason


def test_decoder_errors() -> None:
    nested = ev(
        "error", error={"type": "server_error", "code": "server_is_overloaded", "message": "Busy"}
    )
    failed = ev(
        "response.failed",
        response={
            **RESPONSE_BASE,
            "id": "r",
            "status": "failed",
            "error": {"code": "server_error", "message": "Busy"},
        },
    )
    decoder, deltas = decoded(body_of([created(), nested, failed]))
    assert deltas[1:] == [ErrorDelta("server_error", "Busy", nested["error"])]
    assert decoder.error == deltas[1] and decoder.done and decoder.close() == []
    # response.failed alone
    decoder, deltas = decoded(body_of([created(), failed]))
    assert deltas[1:] == [
        ErrorDelta("server_error", "Busy", {"code": "server_error", "message": "Busy"})
    ]
    # the documented flat error event
    flat = ev("error", code="rate_limit_exceeded", message="Slow down", param=None)
    decoder, deltas = decoded(body_of([flat]))
    assert deltas == [
        ErrorDelta(
            "rate_limit_exceeded",
            "Slow down",
            {"code": "rate_limit_exceeded", "message": "Slow down", "param": None},
        )
    ]
    with pytest.raises(StreamError) as info:
        accumulate(body_of([created(), flat]), protocol="responses")
    assert (info.value.type, info.value.message) == ("rate_limit", "Slow down")
    assert info.value.provider == "responses"


def test_decoder_cut_stream_unknown_events_bad_data() -> None:
    at = {"item_id": "m", "output_index": 0, "content_index": 0}
    decoder, _ = decoded(
        body_of(
            [
                created(),
                ev("response.output_item.added", output_index=0, item=_msg("m")),
                ev("response.output_text.delta", **at, delta="half", logprobs=[]),
            ]
        )
    )
    assert not decoder.done and decoder.message.text == "half"
    with pytest.raises(StreamError) as info:
        decoder.close()
    assert info.value.type == "network" and info.value.provider == "responses"
    with pytest.raises(StreamError, match="incomplete"):
        StreamDecoder("responses").close()
    decoder = ResponsesStreamDecoder()
    assert decoder.feed(ServerSentEvent("")) == []
    assert decoder.feed(ServerSentEvent('{"type":"response.mcp_call.in_progress"}')) == []
    assert decoder.feed(ServerSentEvent('{"type":"keepalive"}', event="keepalive")) == []
    # data without a type is dispatched by its event name
    assert decoder.feed(ServerSentEvent('{"response":{"id":"r"}}', event="response.created")) == [
        MessageStart(id="r")
    ]
    with pytest.raises(StreamDecodeError, match="not JSON"):
        decoder.feed(ServerSentEvent("{oops", event="response.output_text.delta"))
    with pytest.raises(StreamDecodeError, match="not a JSON object"):
        decoder.feed(ServerSentEvent("[1]"))
    # after the terminal event, nothing more is read
    decoder.feed(ServerSentEvent(orjson.dumps(completed()).decode()))
    assert decoder.done
    assert decoder.feed(ServerSentEvent('{"type":"response.output_text.delta","delta":"x"}')) == []


def test_decoder_tolerates_wrong_shapes() -> None:
    decoder = ResponsesStreamDecoder()
    for obj in [
        ev("response.created", response=None),
        ev("response.output_item.added", output_index=0, item="x"),
        ev("response.output_item.added", output_index=0, item={"type": "message", "content": "x"}),
        ev("response.content_part.added", output_index=0, content_index=0, part=None),
        ev("response.output_text.delta", output_index=0, content_index=0, delta=5),
        ev("response.output_text.delta", delta="free"),  # no indexes at all
        ev("response.refusal.delta", output_index=0, content_index=1, delta=None),
        ev("response.reasoning_summary_part.added", output_index=1, summary_index=0, part=5),
        ev("response.reasoning_text.delta", output_index=2, content_index=0, delta="r"),
        ev("response.completed", response={"output": ["x", {"type": "unknown"}], "usage": 3}),
    ]:
        decoder.feed(ServerSentEvent(orjson.dumps(obj).decode()))
    msg = decoder.message
    assert (msg.id, msg.text, msg.reasoning, msg.finish_reason) == (None, "free", "r", "stop")


# --- detection -------------------------------------------------------------------------------


def test_detect_protocol() -> None:
    def detect(obj: dict[str, Any], event: str = "message") -> str | None:
        return detect_protocol(ServerSentEvent(orjson.dumps(obj).decode(), event=event))

    assert detect(created(), "response.created") == "responses"
    assert detect(created()) == "responses"  # no event names: the data's type tells
    delta = ev("response.output_text.delta", delta="x", sequence_number=3)
    assert detect(delta) == "responses"
    flat = ev("error", code="x", message="m", param=None, sequence_number=0)
    assert detect(flat, "error") == "responses"
    assert detect(flat) == "responses"
    # the existing protocols keep theirs
    assert detect({"type": "error", "error": {"type": "overloaded_error"}}, "error") == "anthropic"
    assert detect({"type": "message_start", "message": {}}) == "anthropic"
    assert detect({"object": "chat.completion.chunk", "choices": []}) == "openai"
    assert detect({"error": {"message": "m"}}) == "openai"
    protocol = get_protocol("responses")
    assert protocol is OPENAI_RESPONSES
    # this protocol's own answer for the API's nested error event, and what it never claims
    nested = ev("error", error={"type": "server_error", "message": "m"}, sequence_number=2)
    assert protocol.detect(ServerSentEvent("", event="error"), nested)
    assert not protocol.detect(ServerSentEvent("", event="error"), {"type": "error", "error": {}})
    assert not protocol.detect(ServerSentEvent(""), {"object": "chat.completion.chunk"})
    assert not protocol.detect(ServerSentEvent(""), None)
    assert not protocol.detect(
        ServerSentEvent("", event="message_start"), {"type": "message_start"}
    )
    decoder = StreamDecoder()
    decoder.feed(ServerSentEvent(orjson.dumps(created()).decode(), event="response.created"))
    assert decoder.protocol == "responses"


# --- whole replies and the protocol object ---------------------------------------------------


def test_responses_object_is_a_valid_response() -> None:
    msg = Message(
        text="Hello",
        reasoning="think",
        refusal="no",
        tool_calls=[ToolCall("call_1", "f", '{"a":1}'), ToolCall("call_2", "g", "")],
        finish_reason="tool_calls",
        usage=Usage(
            5, 7, cache_read_input_tokens=1, cache_creation_input_tokens=2, reasoning_tokens=3
        ),
    )
    obj = responses_object(msg, id="resp_w", model="gpt-5", created_at=10)
    resp = Response.model_validate(obj, strict=True)
    assert (resp.id, resp.model, resp.status, resp.created_at) == (
        "resp_w",
        "gpt-5",
        "completed",
        10,
    )
    assert resp.output_text == "Hello"
    assert summarize_response(resp) == {
        "id": "resp_w",
        "model": "gpt-5",
        "text": "Hello",
        "refusal": "no",
        "reasoning": "think",
        "calls": [("call_1", "f", '{"a":1}'), ("call_2", "g", "{}")],
        "finish": "tool_calls",
        "usage": (5, 7, 1, 2, 3),
    }
    assert [item["id"][:3] for item in obj["output"]] == ["rs_", "msg", "fc_", "fc_"]
    # an incomplete reply, an empty one, an explicit status
    cut = responses_object(Message(text="x", finish_reason="length"), id="r", model="m")
    assert (
        Response.model_validate(cut, strict=True).incomplete_details.reason == "max_output_tokens"
    )
    assert cut["status"] == "incomplete" and cut["output"][-1]["status"] == "incomplete"
    empty = responses_object(Message(), id="r", model="m")
    assert Response.model_validate(empty, strict=True).output_text == ""
    forced = responses_object(
        Message(finish_reason="length"), id="r", model="m", status="completed"
    )
    assert (forced["status"], forced["incomplete_details"]) == ("completed", None)
    assert OPENAI_RESPONSES.whole_reply(msg, id="r", model="m")["output"][1]["content"][0] == {
        "type": "output_text",
        "annotations": [],
        "logprobs": [],
        "text": "Hello",
    }
    assert responses_usage(Usage())["total_tokens"] == 0


def test_protocol_attributes_and_errors() -> None:
    p = OPENAI_RESPONSES
    assert isinstance(p, OpenAIResponses)
    assert (p.name, p.title, p.provider_type) == (
        "responses",
        "OpenAI Responses",
        "openai-responses",
    )
    assert (p.endpoints, p.upstream_path) == (("/v1/responses",), "/responses")
    assert (p.default_base_url, p.default_key_env) == (
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
    )
    assert p.max_stop_sequences == 0
    assert p.auth_headers("sk-1", {}) == {"authorization": "Bearer sk-1"}
    assert p.auth_headers(None, {}) == {}
    err = StreamError("overloaded", "Busy")
    assert p.error_object(err) == {
        "error": {"message": "Busy", "type": "server_error", "param": None, "code": "overloaded"}
    }
    assert orjson.loads(p.error_body(err)) == p.error_object(err)
    assert err.to_response_body("responses") == p.error_body(err)
    assert p.http_status(err) == 503
    # a Responses error keeps its own type and code when rendered again
    own = StreamError.from_provider_error(
        {"type": "invalid_request_error", "code": "bad_thing", "message": "m"}, provider="responses"
    )
    assert p.error_object(own)["error"]["code"] == "bad_thing"
    assert isinstance(p.parse_request({"model": "m", "input": "hi"}), ChatRequest)
    assert p.write_request(ChatRequest("m", []))["input"] == []


# --- requests ----------------------------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
FULL_BODY: dict[str, Any] = {
    "model": "gpt-5",
    "instructions": "Be brief.",
    "input": [
        {"role": "developer", "content": "Use metric units."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather in Paris and Rome?"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "get_weather",
            "arguments": '{"city":"Rome"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "rain"}],
        },
        {"role": "user", "content": "Thanks"},
        {"role": "system", "content": [{"type": "input_text", "text": "Answer in French."}]},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER,
            "strict": True,
        }
    ],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "parallel_tool_calls": False,
    "max_output_tokens": 500,
    "temperature": 1.5,
    "top_p": 0.9,
    "reasoning": {"effort": "low", "summary": "auto"},
    "text": {
        "format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True},
        "verbosity": "low",
    },
    "metadata": {"trace": "t1"},
    "stream": True,
    "store": False,
    "previous_response_id": "resp_prev",
    "truncation": "auto",
}


def test_from_responses_reads_every_field() -> None:
    req = from_responses(FULL_BODY)
    assert req == ChatRequest(
        model="gpt-5",
        system="Be brief.\n\nUse metric units.\n\nAnswer in French.",
        messages=[
            ChatMessage(
                "user",
                [
                    TextPart("Weather in Paris and Rome?"),
                    ImagePart(url="https://example.com/a.png"),
                    ImagePart(media_type="image/png", data="AAAA"),
                ],
            ),
            ChatMessage(
                "assistant",
                [
                    TextPart("Checking."),
                    ToolCallPart("call_1", "get_weather", '{"city":"Paris"}'),
                    ToolCallPart("call_2", "get_weather", '{"city":"Rome"}'),
                ],
            ),
            ChatMessage(
                "user", [ToolResultPart("call_1", "sunny"), ToolResultPart("call_2", "rain")]
            ),
            ChatMessage("user", [TextPart("Thanks")]),
        ],
        max_tokens=500,
        temperature=1.5,
        top_p=0.9,
        tools=[ToolSpec("get_weather", "Weather for a city", WEATHER, strict=True)],
        tool_choice="get_weather",
        stream=True,
        include_usage=True,
        parallel_tool_calls=False,
        reasoning_effort="low",
        response_format=ResponseFormat("json_schema", name="weather", schema=WEATHER, strict=True),
        metadata={"trace": "t1"},
        extra={"truncation": "auto"},  # not modelled: forwarded to a Responses upstream
        extra_protocol="responses",
    )
    simple = from_responses({"model": "m", "input": "Hi", "tool_choice": "none"})
    assert simple.messages == [ChatMessage("user", [TextPart("Hi")])]
    assert (simple.tool_choice, simple.stream, simple.include_usage) == ("none", False, True)
    assert simple.system is None and simple.stop == []
    fmt = from_responses({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    assert fmt.response_format == ResponseFormat("json_object")
    plain = from_responses({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})
    assert plain.response_format is None
    # a continuation needs no input; background false is fine
    cont = from_responses({"model": "m", "previous_response_id": "resp_1", "background": False})
    assert cont.messages == []
    raw_args = {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}
    assert from_responses({"model": "m", "input": [raw_args]}).messages[0].parts == [
        ToolCallPart("c", "f", '{"a":1}')
    ]


def test_the_sdk_accepts_what_to_responses_writes() -> None:
    body = to_responses(from_responses(FULL_BODY))
    REQUEST.validate_python({k: v for k, v in body.items() if k != "stream"}, strict=True)
    assert body["instructions"] == "Be brief.\n\nUse metric units.\n\nAnswer in French."
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather in Paris and Rome?"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64,AAAA",
                    "detail": "auto",
                },
            ],
        },
        {"type": "message", "role": "assistant", "content": "Checking."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "get_weather",
            "arguments": '{"city":"Rome"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER,
            "strict": True,
        }
    ]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}
    }
    assert body["reasoning"] == {"effort": "low"}
    assert (body["max_output_tokens"], body["temperature"], body["top_p"]) == (500, 1.5, 0.9)
    assert (body["parallel_tool_calls"], body["metadata"], body["stream"]) == (
        False,
        {"trace": "t1"},
        True,
    )


def test_translation_from_the_other_protocols() -> None:
    chat = from_openai(
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
            "response_format": {"type": "json_object"},
            "reasoning_effort": "high",
        }
    )
    body = to_responses(chat)
    assert body["instructions"] == "sys"
    assert [i["type"] for i in body["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert body["text"] == {"format": {"type": "json_object"}} and body["reasoning"] == {
        "effort": "high"
    }
    claude = from_anthropic(
        {
            "model": "claude",
            "max_tokens": 3000,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    assert to_responses(claude)["reasoning"] == {
        "effort": "low"
    }  # reasoning_effort read from budget
    budget_only = ChatRequest("m", [], reasoning_budget=20000)
    assert to_responses(budget_only)["reasoning"] == {"effort": "high"}


def test_to_responses_refuses_what_the_api_cannot_take() -> None:
    with pytest.raises(RequestError) as info:
        to_responses(ChatRequest("m", [], stop=["\n"]))
    assert info.value.param == "stop" and "stop" in str(info.value)
    with pytest.raises(RequestError) as info:
        to_responses(ChatRequest("m", [], seed=3))
    assert info.value.param == "seed" and "seed" in str(info.value)
    image = ChatMessage("assistant", [ImagePart(url="https://x")])
    with pytest.raises(RequestError) as info:
        to_responses(ChatRequest("m", [ChatMessage("user", []), image]))
    assert info.value.param == "messages[1]"
    no_schema = ResponseFormat("json_schema", name="n")
    with pytest.raises(RequestError) as info:
        to_responses(ChatRequest("m", [], response_format=no_schema))
    assert info.value.param == "response_format" and "schema" in str(info.value)


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


def _items(*items: Any) -> dict[str, Any]:
    return {"model": "m", "input": list(items)}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "", "input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": 5}, "input"),
        (_items("hi"), "input[0]"),
        (_items({"type": "web_search_call", "id": "ws"}), "input[0].type"),
        (_items({"type": "item_reference", "id": "x"}), "input[0].type"),
        (_items({"role": "tool", "content": "x"}), "input[0].role"),
        (_items({"role": "user", "content": 5}), "input[0].content"),
        (
            _items({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}),
            "input[0].content[0].type",
        ),
        (
            _items({"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}),
            "input[0].content[0].image_url",
        ),
        (
            _items({"role": "user", "content": [{"type": "input_text", "text": 1}]}),
            "input[0].content[0].text",
        ),
        (_items({"type": "function_call", "name": "f", "arguments": "{}"}), "input[0].call_id"),
        (_items({"type": "function_call", "call_id": "c", "arguments": "{}"}), "input[0].name"),
        (_items({"type": "function_call_output", "output": "x"}), "input[0].call_id"),
        (
            _items(
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image"}],
                }
            ),
            "input[0].output[0].type",
        ),
        (_items({"type": "function_call_output", "call_id": "c", "output": 5}), "input[0].output"),
        (_body(instructions=5), "instructions"),
        (_body(tools={"type": "function"}), "tools"),
        (_body(tools=[{"type": "web_search"}]), "tools[0].type"),
        (_body(tools=[{"type": "file_search", "vector_store_ids": []}]), "tools[0].type"),
        (_body(tools=[{"type": "function"}]), "tools[0].name"),
        (_body(tools=[{"type": "function", "name": "f", "strict": "yes"}]), "tools[0].strict"),
        (_body(tools=[{"type": "function", "name": "f", "parameters": []}]), "tools[0].parameters"),
        (
            _body(tools=[{"type": "function", "name": "f", "description": 3}]),
            "tools[0].description",
        ),
        (_body(tool_choice="sometimes"), "tool_choice"),
        (_body(tool_choice={"type": "web_search_preview"}), "tool_choice.type"),
        (_body(tool_choice={"type": "function"}), "tool_choice.name"),
        (_body(parallel_tool_calls="yes"), "parallel_tool_calls"),
        (_body(max_output_tokens=0), "max_output_tokens"),
        (_body(max_output_tokens=True), "max_output_tokens"),
        (_body(temperature=2.5), "temperature"),
        (_body(temperature="1"), "temperature"),
        (_body(top_p=1.5), "top_p"),
        (_body(reasoning="high"), "reasoning"),
        (_body(reasoning={"effort": "extreme"}), "reasoning.effort"),
        (_body(text="json"), "text"),
        (_body(text={"format": "json"}), "text.format"),
        (_body(text={"format": {"type": "xml"}}), "text.format.type"),
        (
            _body(text={"format": {"type": "json_schema", "name": "n", "strict": 1}}),
            "text.format.strict",
        ),
        (_body(metadata={"a": 1}), "metadata"),
        (_body(stream="yes"), "stream"),
        (_body(store="no"), "store"),
        (_body(previous_response_id=5), "previous_response_id"),
        (_body(background=True), "background"),
        (_body(background="yes"), "background"),
    ],
)
def test_from_responses_errors_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        from_responses(body)
    assert info.value.param == param
    assert param.split(".")[0].split("[")[0] in str(info.value)


# --- requests: the round trip ------------------------------------------------------------------

NONEMPTY = st.text(min_size=1, max_size=8)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
SCHEMAS = st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3)
IMAGES = st.builds(
    ImagePart, url=st.text(string.ascii_letters, max_size=6).map("https://x/".__add__)
) | (
    st.builds(
        ImagePart,
        media_type=st.sampled_from(["image/png", "image/jpeg"]),
        data=st.text(string.ascii_letters + string.digits + "+/=", min_size=1, max_size=8),
    )
)
CALLS = st.builds(ToolCallPart, id=NONEMPTY, name=NONEMPTY, arguments=st.text(max_size=8))


@st.composite
def chat_messages(draw: st.DrawFn) -> list[ChatMessage]:
    """Conversations in the form the Responses items can say: an assistant turn is its
    text then its calls, a user turn holds content or tool results; turns that the
    items could not tell apart (calls with no text right after an assistant turn,
    results right after results) are not made."""
    messages: list[ChatMessage] = []
    for _ in range(draw(st.integers(1, 5))):
        prev = messages[-1] if messages else None
        kind = draw(st.sampled_from(["user", "results", "assistant"]))
        results_before = (
            prev is not None
            and prev.role == "user"
            and bool(prev.parts)
            and all(isinstance(p, ToolResultPart) for p in prev.parts)
        )
        if kind == "results" and results_before:
            kind = "user"
        parts: list[Part] = []
        if kind == "user":
            parts.extend(
                draw(st.lists(st.builds(TextPart, st.text(max_size=8)) | IMAGES, max_size=3))
            )
            messages.append(ChatMessage("user", parts))
        elif kind == "results":
            results = st.builds(ToolResultPart, NONEMPTY, st.text(max_size=8))
            parts.extend(draw(st.lists(results, min_size=1, max_size=3)))
            messages.append(ChatMessage("user", parts))
        else:
            text = draw(st.none() | NONEMPTY)
            calls = draw(st.lists(CALLS, max_size=3))
            if text is None and calls and prev is not None and prev.role == "assistant":
                text = "and"
            if text:
                parts.append(TextPart(text))
            parts.extend(calls)
            messages.append(ChatMessage("assistant", parts))
    return messages


FORMATS = (
    st.none()
    | st.just(ResponseFormat("json_object"))
    | st.builds(
        ResponseFormat,
        st.just("json_schema"),
        name=NONEMPTY,
        schema=SCHEMAS,
        strict=st.none() | st.booleans(),
        description=st.none() | NONEMPTY,
    )
)
TOOL_NAMES = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)


def _consistent_choice(req: ChatRequest) -> ChatRequest:
    """A tool choice the API accepts: with tools to choose from, naming one of them."""
    if req.tool_choice == "<first>":
        req.tool_choice = req.tools[0].name if req.tools else None
    elif not req.tools and req.tool_choice not in (None, "none"):
        req.tool_choice = None
    return req


CHAT_REQUESTS = st.builds(
    ChatRequest,
    model=NONEMPTY,
    messages=chat_messages(),
    system=st.none() | NONEMPTY,
    max_tokens=st.none() | st.integers(16, 10**6),
    temperature=st.none() | st.floats(0, 2),
    top_p=st.none() | st.floats(0, 1),
    tools=st.lists(
        st.builds(
            ToolSpec,
            name=TOOL_NAMES,
            description=st.none() | NONEMPTY,
            parameters=SCHEMAS,
            strict=st.booleans(),  # the wire always says one or the other
        ),
        max_size=3,
    ),
    tool_choice=st.none() | st.sampled_from(["auto", "none", "required", "<first>"]),
    stream=st.booleans(),
    include_usage=st.just(True),
    parallel_tool_calls=st.none() | st.booleans(),
    reasoning_effort=st.none() | st.sampled_from(REASONING_EFFORTS),
    response_format=FORMATS,
    metadata=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
    extra_protocol=st.just("responses"),
).map(_consistent_choice)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(req=CHAT_REQUESTS)
def test_requests_round_trip(req: ChatRequest) -> None:
    """Everything the Responses API can carry survives writing and reading back."""
    body = to_responses(req)
    assert from_responses(orjson.loads(orjson.dumps(body))) == req
    REQUEST.validate_python({k: v for k, v in body.items() if k != "stream"}, strict=True)


# --- end to end: a real server and the real SDK --------------------------------------------------


def test_end_to_end_with_the_openai_sdk() -> None:
    seen: list[ChatRequest] = []
    lock = threading.Lock()

    def reply(req: ChatRequest) -> list[Delta]:
        return [
            MessageStart(id="resp_e2e", model=req.model),
            ReasoningDelta("The user wants weather."),
            TextDelta("Let me "),
            TextDelta("check."),
            ToolCallDelta(0, "call_1", "get_weather", '{"city":'),
            ToolCallDelta(0, arguments='"Paris"}'),
        ]

    async def endpoint(request: Request) -> StarletteResponse:
        body = await request.json()
        req = from_responses(body)
        with lock:
            seen.append(req)
        if not req.stream:
            builder = MessageBuilder()
            for delta in [*reply(req), FinishDelta("tool_calls"), UsageDelta(Usage(9, 4))]:
                builder.feed(delta)
            return JSONResponse(
                OPENAI_RESPONSES.whole_reply(builder.message, id="resp_whole", model=req.model)
            )
        failing = (req.metadata or {}).get("mode") == "fail"

        def events() -> Iterator[bytes]:
            enc = ResponsesEventEncoder(created_at=1)
            for delta in reply(req):
                yield enc.encode(delta)
            if failing:
                yield enc.error(StreamError("overloaded", "The upstream is overloaded."))
                return
            yield enc.encode(
                UsageDelta(Usage(21, 13, cache_read_input_tokens=5, reasoning_tokens=4))
            )
            yield enc.encode(FinishDelta("tool_calls"))
            yield enc.done()

        return EventStreamResponse(events(), ping=None)

    app = Starlette(routes=[Route("/v1/responses", endpoint, methods=["POST"])])
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER,
        "strict": True,
    }
    ask: dict[str, Any] = {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [tool],
    }
    with serve(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        # create(stream=True): the raw events, in order, each one typed
        events = list(client.responses.create(stream=True, **ask))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "Let me check."
        done = events[-1].response
        assert done.id == "resp_e2e" and done.output_text == "Let me check."
        # stream(): the SDK's accumulation
        with client.responses.stream(**ask) as stream:
            final = stream.get_final_response()
        assert summarize_response(final) == {
            "id": "resp_e2e",
            "model": "gpt-5",
            "text": "Let me check.",
            "refusal": None,
            "reasoning": "The user wants weather.",
            "calls": [("call_1", "get_weather", '{"city":"Paris"}')],
            "finish": "tool_calls",
            "usage": (21, 13, 5, 0, 4),
        }
        # an error ending: raised by both ways of streaming
        with pytest.raises(openai.APIError, match="overloaded") as info:
            for _ in client.responses.create(stream=True, metadata={"mode": "fail"}, **ask):
                pass
        assert StreamError.from_exception(info.value).type == "overloaded"
        with (
            pytest.raises(openai.APIError, match="overloaded"),
            client.responses.stream(metadata={"mode": "fail"}, **ask) as stream,
        ):
            stream.get_final_response()
        # stream: false: the whole reply
        whole = client.responses.create(**ask)
        assert (whole.id, whole.output_text, whole.status) == (
            "resp_whole",
            "Let me check.",
            "completed",
        )
        assert whole.usage is not None and whole.usage.total_tokens == 13
    # what the SDK sent, as we read it
    req = seen[0]
    assert req.model == "gpt-5" and req.system == "Be brief." and req.stream
    assert req.messages == [ChatMessage("user", [TextPart("Weather in Paris?")])]
    assert req.tools == [ToolSpec("get_weather", "Weather for a city", WEATHER, strict=True)]
    assert not seen[-1].stream and len(seen) == 5
