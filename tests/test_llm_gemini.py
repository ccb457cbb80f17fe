"""The Gemini protocol: requests, decoder, encoder, whole replies, errors, detection.

The oracle is the ``google-genai`` SDK: its types (``extra="forbid"``: a misspelled or
misplaced field fails), the JSON it builds for chunks (``model_dump(mode="json",
by_alias=True, exclude_none=True)``), what it sends for a request, and what
``generate_content_stream`` / ``generate_content`` make of our bytes, fed through an
httpx2 MockTransport.
"""

from __future__ import annotations

import base64
import itertools
import string
from typing import Any

import httpx2
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenwire.errors import ProviderError, StreamError
from tokenwire.llm import MessageBuilder, StreamDecodeError, StreamDecoder, accumulate
from tokenwire.llm.anthropic_messages import ANTHROPIC_MESSAGES
from tokenwire.llm.decode import detect_protocol
from tokenwire.llm.gemini import (
    GEMINI,
    SYNTHETIC_ID,
    Gemini,
    GeminiEventEncoder,
    GeminiStreamDecoder,
    from_gemini,
    gemini_response,
    gemini_usage,
    json_schema,
    model_list,
    to_gemini,
    usage_from_gemini,
)
from tokenwire.llm.gemini.objects import reply_tag
from tokenwire.llm.gemini.requests import SKIP_SIGNATURE
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
from tokenwire.llm.protocol import EventDecoder, EventEncoder, get_protocol, protocol_names
from tokenwire.llm.requests import (
    EFFORT_BUDGETS,
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
    effort_for_budget,
    from_anthropic,
    from_openai,
    to_anthropic,
    to_openai,
    with_extra,
)
from tokenwire.sse import ServerSentEvent, decode

FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def sdk_chunk(**fields: Any) -> dict[str, Any]:
    """A chunk as the SDK's own types write it."""
    dumped: dict[str, Any] = types.GenerateContentResponse(**fields).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return dumped


def text_chunk(
    text: str, *, thought: bool | None = None, finish_reason: str | None = None, **fields: Any
) -> dict[str, Any]:
    part = types.Part(text=text, thought=thought)
    content = types.Content(role="model", parts=[part])
    cand = types.Candidate(content=content, index=0, finish_reason=finish_reason)
    return sdk_chunk(candidates=[cand], **fields)


def body_of(chunks: list[dict[str, Any]]) -> bytes:
    """Wire bytes for chunks, framed as the API frames them."""
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """The chunks of one of our streams, each checked: ``data: `` lines only (no event
    names, ids or comments, which the SDK cannot read) and accepted by the SDK's
    response type."""
    assert all(line.startswith(b"data: ") for line in raw.split(b"\r\n") if line)
    out = []
    for event in decode(raw):
        assert event.event == "message" and event.id is None
        obj = orjson.loads(event.data)
        if "error" not in obj:
            types.GenerateContentResponse.model_validate_json(event.data)
        out.append(obj)
    return out


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` cut at the given offsets (taken modulo its length)."""
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """A thought signature's bytes (the SDK's JSON writes them URL-safe)."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_" if "-" in text or "_" in text else None)


# --- the SDK as oracle -------------------------------------------------------------------


class FakeAPI:
    """A ``google-genai`` client whose transport answers every request with ``status``
    and ``body`` (a stream, a whole reply or an error), recording the requests."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.content_type = "text/event-stream"
        self.requests: list[httpx2.Request] = []

        def handler(request: httpx2.Request) -> httpx2.Response:
            self.requests.append(request)
            headers = {"content-type": self.content_type}
            return httpx2.Response(self.status, headers=headers, content=self.body)

        http = httpx2.Client(transport=httpx2.MockTransport(handler))
        self.client = genai.Client(
            api_key="g-key",
            http_options=types.HttpOptions(
                base_url="http://gemini.test",
                api_version="v1beta",
                httpx_client=http,
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def stream(self, body: bytes, model: str = "gemini-2.5-flash") -> list[Any]:
        self.body, self.status, self.content_type = body, 200, "text/event-stream"
        return list(self.client.models.generate_content_stream(model=model, contents="hi"))

    def last_body(self) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(self.requests[-1].content)
        return body


@pytest.fixture(scope="module")
def api() -> FakeAPI:
    return FakeAPI()


def _finish_word(raw: str | None, called: bool) -> str | None:
    """The finish reason a finishReason amounts to, written out independently of the
    module's table (what the module documents)."""
    if raw is None:
        return None
    if raw == "MAX_TOKENS":
        return "length"
    filtered = {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
    if raw in filtered:
        return "content_filter"
    return "tool_calls" if raw == "STOP" and called else "stop"


def sdk_assembled(chunks: list[Any]) -> dict[str, Any]:
    """What the SDK's chunks of one streamed reply add up to, in the terms of
    :class:`Message` (the SDK has no stream accumulator of its own): ``response.text``
    of every chunk joined, the text of ``thought`` parts joined, every chunk's
    ``response.function_calls`` in order (id, name, args), the first finish reason of
    candidate 0 (or the prompt's block reason), the usage of the last chunk that has
    one (output = candidates + thoughts), the last thought signature (its bytes), and
    the first chunk's ``responseId`` and ``modelVersion``."""
    text, reasoning, calls = "", "", []
    finish: str | None = None
    usage = None
    signature = None
    for ch in chunks:
        if ch.text is not None:
            text += ch.text
        for part in ch.parts or []:
            if part.thought and part.text:
                reasoning += part.text
            if part.thought_signature:
                signature = part.thought_signature
        for call in ch.function_calls or []:
            calls.append((call.id, call.name, call.args or {}))
        if finish is None and ch.candidates and ch.candidates[0].finish_reason is not None:
            finish = ch.candidates[0].finish_reason.value
        if finish is None and ch.prompt_feedback and ch.prompt_feedback.block_reason:
            finish = ch.prompt_feedback.block_reason.value
        if ch.usage_metadata is not None:
            u = ch.usage_metadata
            counted = (u.candidates_token_count, u.thoughts_token_count)
            usage = (
                u.prompt_token_count,
                None if counted == (None, None) else sum(c or 0 for c in counted),
                u.cached_content_token_count,
                u.thoughts_token_count,
            )
    blocked = bool(chunks and chunks[0].prompt_feedback and not chunks[0].candidates)
    return {
        "id": chunks[0].response_id if chunks else None,
        "model": chunks[0].model_version if chunks else None,
        "text": text,
        "reasoning": reasoning,
        "signature": signature,
        "calls": calls,
        "raw_finish": finish,
        "finish": "content_filter" if blocked else _finish_word(finish, bool(calls)),
        "usage": usage,
    }


def summarize(msg: Message) -> dict[str, Any]:
    """A message in the terms of :func:`sdk_assembled` (made-up call ids as ``None``)."""
    u = msg.usage
    usage = (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.reasoning_tokens)
    return {
        "id": msg.id,
        "model": msg.model,
        "text": msg.text,
        "reasoning": msg.reasoning,
        "signature": None if msg.reasoning_signature is None else unb64(msg.reasoning_signature),
        "calls": [
            (
                None if SYNTHETIC_ID.fullmatch(c.id) else c.id,
                c.name,
                orjson.loads(c.arguments),
            )
            for c in msg.tool_calls
        ],
        "raw_finish": msg.raw_finish_reason,
        "finish": msg.finish_reason,
        "usage": None if usage == (None, None, None, None) else usage,
    }


def decoded(raw: bytes) -> tuple[GeminiStreamDecoder, list[Delta]]:
    decoder = GeminiStreamDecoder()
    deltas: list[Delta] = []
    for event in decode(raw):
        deltas.extend(decoder.feed(event))
    deltas.extend(decoder.close())
    return decoder, deltas


# --- the protocol object -------------------------------------------------------------------


def test_protocol_attributes_paths_and_keys() -> None:
    p = GEMINI
    assert isinstance(p, Gemini) and get_protocol("gemini") is p
    assert protocol_names()[-1] == "gemini"
    assert (p.name, p.title, p.provider_type) == ("gemini", "Google Gemini", "gemini")
    assert p.endpoints == ("/v1beta/models/{model:path}:{method}",)
    assert p.upstream_path == "/models/{model}:streamGenerateContent?alt=sse"
    assert p.models_path == "/v1beta/models"
    assert (p.resumable, p.heartbeat, p.telemetry_name) == (False, b"\n", "gcp.gemini")
    assert p.max_tokens_fields[0] == "generationConfig.maxOutputTokens"
    assert (p.default_base_url, p.default_key_env) == (
        "https://generativelanguage.googleapis.com/v1beta",
        "GEMINI_API_KEY",
    )
    assert (p.max_stop_sequences, p.accepts_seed, p.id_prefix, p.reply_path) == (
        5,
        True,
        "",
        None,
    )
    base = "https://generativelanguage.googleapis.com/v1beta"
    req = ChatRequest("gemini-2.5-flash", [])
    assert p.upstream_url(base, req) == (
        base + "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    # a models/ prefix is the API's resource name, not part of the model; others are quoted
    assert (
        p.upstream_url("B", ChatRequest("models/m", []))
        == "B/models/m:streamGenerateContent?alt=sse"
    )
    assert p.upstream_url("B", ChatRequest("a/b c", [])) == (
        "B/models/a%2Fb%20c:streamGenerateContent?alt=sse"
    )
    assert p.server_base_path == "/v1beta"
    assert p.server_url("http://h:1", req) == (
        "http://h:1/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert p.auth_headers("g-1", {}) == {"x-goog-api-key": "g-1"}
    assert p.auth_headers(None, {}) == {}
    # where Gemini clients put their key, and the other protocols' places as well
    assert p.client_key({"x-goog-api-key": "k1"}, {}) == "k1"
    assert p.client_key({}, {"key": "k2"}) == "k2"
    assert p.client_key({"x-goog-api-key": "k1"}, {"key": "k2"}) == "k1"
    assert p.client_key({"authorization": "Bearer k3"}, {}) == "k3"
    assert p.client_key({"x-api-key": "k4"}, {}) == "k4"
    assert p.client_key({}, {}) is None
    # what the SDK sends tells its requests apart
    assert p.recognizes({"x-goog-api-key": "k"})
    assert p.recognizes({"x-goog-api-client": "google-genai-sdk/3.6.1 gl-python/3.11"})
    assert p.recognizes({"user-agent": "google-genai-sdk/3.6.1 gl-python/3.11"})
    assert not p.recognizes({"user-agent": "OpenAI/Python 2.0", "authorization": "Bearer k"})
    assert not p.recognizes({"anthropic-version": "2023-06-01"})


def test_the_sdk_request_is_recognized_and_read(api: FakeAPI) -> None:
    api.stream(body_of([text_chunk("x", finish_reason=None)]))
    request = api.requests[-1]
    assert request.url.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.url.params["alt"] == "sse"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert GEMINI.recognizes(headers)
    assert GEMINI.client_key(headers, dict(request.url.params)) == "g-key"
    params = {"model": "gemini-2.5-flash", "method": "streamGenerateContent"}
    req = GEMINI.parse_request(api.last_body(), params)
    assert req.model == "gemini-2.5-flash" and req.stream and req.include_usage
    assert req.messages == [ChatMessage("user", [TextPart("hi")])]


def test_parse_request_takes_model_and_method_from_the_path() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    streamed = GEMINI.parse_request(body, {"model": "models/g", "method": "streamGenerateContent"})
    assert (streamed.model, streamed.stream) == ("g", True)
    whole = GEMINI.parse_request(body, {"model": "g", "method": "generateContent"})
    assert (whole.model, whole.stream) == ("g", False)
    with pytest.raises(RequestError) as info:
        GEMINI.parse_request(body, {"model": "g", "method": "countTokens"})
    assert info.value.param == "method" and "countTokens" in str(info.value)
    # without path parameters: the body's model, not streamed
    assert GEMINI.parse_request({**body, "model": "models/b"}).model == "b"
    with pytest.raises(RequestError) as info:
        GEMINI.parse_request(body)
    assert info.value.param == "model"
    assert GEMINI.write_request(streamed)["contents"] == body["contents"]


# --- requests: reading -----------------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
FULL_BODY: dict[str, Any] = {
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "Weather in Paris and Rome?"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"fileUri": "https://example.com/a.jpg", "mimeType": "image/jpeg"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Let me think.", "thought": True},
                {"text": "Checking."},
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                        "id": "fc-1",
                    },
                    "thoughtSignature": "c2ln",
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "id": "fc-1",
                        "response": {"output": "sunny"},
                    }
                },
                {"functionResponse": {"name": "get_weather", "response": {"temp": 20}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Sunny and 20."}]},
        {"parts": [{"text": "Thanks"}, {"text": ""}]},
    ],
    "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER,
                },
                {
                    "name": "get_time",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"zone": {"type": "STRING", "nullable": True}},
                        "propertyOrdering": ["zone"],
                    },
                },
            ]
        }
    ],
    "toolConfig": {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    },
    "generationConfig": {
        "temperature": 1.5,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 500,
        "stopSequences": ["END"],
        "candidateCount": 1,
        "responseMimeType": "application/json",
        "responseJsonSchema": WEATHER,
        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
        "seed": 7,
        "presencePenalty": 0.5,
    },
    "safetySettings": SAFETY,
    "cachedContent": "cachedContents/abc",
}
FULL_REQUEST = ChatRequest(
    model="gemini-2.5-flash",
    messages=[
        ChatMessage(
            "user",
            [
                TextPart("Weather in Paris and Rome?"),
                ImagePart(media_type="image/png", data="AAAA"),
                ImagePart(url="https://example.com/a.jpg"),
            ],
        ),
        ChatMessage(
            "assistant",
            [
                TextPart("Checking."),
                ToolCallPart("fc-1", "get_weather", '{"city":"Paris"}'),
                ToolCallPart("call_1", "get_weather", '{"city":"Rome"}'),
            ],
        ),
        ChatMessage(
            "user",
            [ToolResultPart("fc-1", "sunny"), ToolResultPart("call_1", '{"temp":20}')],
        ),
        ChatMessage("assistant", [TextPart("Sunny and 20.")]),
        ChatMessage("user", [TextPart("Thanks")]),
    ],
    system="Be brief.\n\nUse metric units.",
    max_tokens=500,
    temperature=1.5,
    top_p=0.9,
    stop=["END"],
    tools=[
        ToolSpec("get_weather", "Weather for a city", WEATHER),
        ToolSpec(
            "get_time",
            None,
            {"type": "object", "properties": {"zone": {"type": ["string", "null"]}}},
        ),
    ],
    tool_choice="get_weather",
    stream=True,
    include_usage=True,
    reasoning_effort="low",
    reasoning_budget=2048,
    response_format=ResponseFormat("json_schema", schema=WEATHER),
    seed=7,
    extra={
        "safetySettings": SAFETY,
        "cachedContent": "cachedContents/abc",
        "generationConfig": {"topK": 40, "presencePenalty": 0.5},
    },
    extra_protocol="gemini",
)

# The fields of FULL_BODY whose names have a snake_case spelling.
_CAMEL = frozenset(
    {
        "systemInstruction",
        "functionDeclarations",
        "parametersJsonSchema",
        "toolConfig",
        "functionCallingConfig",
        "allowedFunctionNames",
        "generationConfig",
        "topP",
        "topK",
        "maxOutputTokens",
        "stopSequences",
        "candidateCount",
        "responseMimeType",
        "responseJsonSchema",
        "thinkingConfig",
        "thinkingBudget",
        "includeThoughts",
        "presencePenalty",
        "safetySettings",
        "cachedContent",
        "inlineData",
        "mimeType",
        "fileData",
        "fileUri",
        "functionCall",
        "functionResponse",
        "thoughtSignature",
        "propertyOrdering",
    }
)


def snake_case(value: Any) -> Any:
    """``value`` with every field name of :data:`_CAMEL` in snake_case."""
    if isinstance(value, list):
        return [snake_case(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in value.items():
        if key in _CAMEL:
            key = "".join("_" + c.lower() if c.isupper() else c for c in key)
        out[key] = snake_case(sub)
    return out


def test_from_gemini_reads_every_field_in_either_spelling() -> None:
    assert from_gemini(FULL_BODY, model="gemini-2.5-flash", stream=True) == FULL_REQUEST
    snake = snake_case(FULL_BODY)
    assert "system_instruction" in snake and "inline_data" in str(snake)
    assert from_gemini(snake, model="models/gemini-2.5-flash", stream=True) == FULL_REQUEST


def test_from_gemini_reads_what_the_sdk_sends(api: FakeAPI) -> None:
    """The SDK writes some nested fields in snake_case (``parameters_json_schema``,
    ``thinking_budget``): both spellings are read."""
    config = types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.5,
        top_p=0.8,
        top_k=20,
        max_output_tokens=100,
        stop_sequences=["x"],
        seed=3,
        response_mime_type="application/json",
        response_json_schema=WEATHER,
        thinking_config=types.ThinkingConfig(thinking_budget=4096, include_thoughts=True),
        safety_settings=[
            types.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_NONE")
        ],
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather", description="Weather", parameters_json_schema=WEATHER
                    ),
                    types.FunctionDeclaration(
                        name="get_time",
                        parameters=types.Schema(
                            type="OBJECT", properties={"zone": types.Schema(type="STRING")}
                        ),
                    ),
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="AUTO")
        ),
    )
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather?")]),
        types.Content(
            role="model",
            parts=[
                types.Part(
                    function_call=types.FunctionCall(name="get_weather", args={"city": "Oslo"}),
                    thought_signature=b"sig",
                )
            ],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        name="get_weather", response={"output": "cold"}
                    )
                ),
                types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG")),
            ],
        ),
    ]
    api.body, api.status, api.content_type = body_of([text_chunk("ok")]), 200, "text/event-stream"
    list(api.client.models.generate_content_stream(model="m", contents=contents, config=config))
    req = from_gemini(api.last_body(), model="m")
    assert req.system == "Be brief."
    assert (req.temperature, req.top_p, req.max_tokens, req.stop, req.seed) == (
        0.5,
        0.8,
        100,
        ["x"],
        3,
    )
    assert (req.reasoning_budget, req.reasoning_effort) == (4096, "medium")
    assert req.response_format == ResponseFormat("json_schema", schema=WEATHER)
    assert req.tool_choice == "auto"
    assert req.tools == [
        ToolSpec("get_weather", "Weather", WEATHER),
        ToolSpec("get_time", None, {"type": "object", "properties": {"zone": {"type": "string"}}}),
    ]
    assert req.messages == [
        ChatMessage("user", [TextPart("Weather?")]),
        ChatMessage("assistant", [ToolCallPart("call_0", "get_weather", '{"city":"Oslo"}')]),
        ChatMessage(
            "user",
            [
                ToolResultPart("call_0", "cold"),
                ImagePart(media_type="image/png", data=b64(b"\x89PNG")),
            ],
        ),
    ]
    assert req.extra["generationConfig"] == {"topK": 20}
    assert req.extra["safetySettings"] == [
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}
    ]


def test_function_responses_pair_with_calls() -> None:
    """A response without an id answers the first unanswered call of its name, latest
    model turn first; with an id, the call of that id."""

    def call(name: str, id: str | None = None) -> dict[str, Any]:
        return {"functionCall": {"name": name, **({"id": id} if id else {})}}

    def response(name: str, id: str | None = None) -> dict[str, Any]:
        fields = {"name": name, "response": {"output": name}, **({"id": id} if id else {})}
        return {"functionResponse": fields}

    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [call("a"), call("b"), call("a")]},
            {"role": "user", "parts": [response("a"), response("a"), response("b")]},
            {"role": "model", "parts": [call("a", "x1"), call("c")]},
            {"role": "user", "parts": [response("c"), response("a", "x1")]},
        ]
    }
    req = from_gemini(body, model="m")
    assert [p.tool_call_id for p in req.messages[2].parts if isinstance(p, ToolResultPart)] == [
        "call_0",
        "call_2",
        "call_1",
    ]
    assert [p.tool_call_id for p in req.messages[4].parts if isinstance(p, ToolResultPart)] == [
        "call_4",
        "x1",
    ]
    # written back: names from the calls, made-up ids left out, real ones kept
    out = to_gemini(req)
    assert out["contents"][1]["parts"] == [
        {"functionCall": {"name": n, "args": {}}} for n in ("a", "b", "a")
    ]
    assert out["contents"][2]["parts"][2] == {
        "functionResponse": {"name": "b", "response": {"output": "b"}}
    }
    assert out["contents"][4]["parts"][1] == {
        "functionResponse": {"name": "a", "response": {"output": "a"}, "id": "x1"}
    }
    assert from_gemini(orjson.loads(orjson.dumps(out)), model="m") == req
    # a response no call explains
    for bad, param in [
        (response("a"), "contents[1].parts[0].functionResponse.name"),
        (response("a", "nope"), "contents[1].parts[0].functionResponse.id"),
    ]:
        with pytest.raises(RequestError) as info:
            from_gemini(
                {"contents": [{"role": "model", "parts": [call("b")]}, {"parts": [bad]}]},
                model="m",
            )
        assert info.value.param == param


def test_function_response_bodies() -> None:
    def result(response: dict[str, Any]) -> ToolResultPart:
        body = {
            "contents": [
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"parts": [{"functionResponse": {"name": "f", "response": response}}]},
            ]
        }
        part = from_gemini(body, model="m").messages[1].parts[0]
        assert isinstance(part, ToolResultPart)
        return part

    assert result({"output": "fine"}) == ToolResultPart("call_0", "fine")
    assert result({"error": "broke"}) == ToolResultPart("call_0", "broke", is_error=True)
    assert result({"output": {"t": 1}}).content == '{"output":{"t":1}}'
    assert result({"result": "x", "more": [1]}).content == '{"result":"x","more":[1]}'
    assert result({}).content == "{}"


def test_tool_config_modes() -> None:
    tools = [
        {"name": "a", "parametersJsonSchema": {"type": "object"}},
        {"name": "b"},
        {"name": "c"},
    ]

    def read(fc: dict[str, Any]) -> tuple[str | None, list[str]]:
        body = {
            "contents": [{"parts": [{"text": "x"}]}],
            "tools": [{"functionDeclarations": tools}],
            "toolConfig": {"functionCallingConfig": fc},
        }
        req = from_gemini(body, model="m")
        return req.tool_choice, [t.name for t in req.tools]

    assert read({"mode": "AUTO"}) == ("auto", ["a", "b", "c"])
    assert read({"mode": "auto"}) == ("auto", ["a", "b", "c"])
    assert read({"mode": "NONE"}) == ("none", ["a", "b", "c"])
    assert read({"mode": "ANY"}) == ("required", ["a", "b", "c"])
    assert read({"mode": "VALIDATED"}) == ("auto", ["a", "b", "c"])
    assert read({"mode": "MODE_UNSPECIFIED"}) == (None, ["a", "b", "c"])
    assert read({}) == (None, ["a", "b", "c"])
    assert read({"mode": "ANY", "allowedFunctionNames": ["b"]}) == ("b", ["a", "b", "c"])
    # several allowed: the tools narrowed down to them
    assert read({"mode": "ANY", "allowedFunctionNames": ["c", "a"]}) == ("required", ["a", "c"])
    assert read({"mode": "VALIDATED", "allowedFunctionNames": ["b"]}) == ("auto", ["b"])
    assert read({"mode": "ANY", "allowed_function_names": ["b"]}) == ("b", ["a", "b", "c"])
    # a declaration without parameters takes none
    body = {"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": tools}]}
    assert from_gemini(body, model="m").tools[1].parameters == {"type": "object", "properties": {}}


def test_thinking_config() -> None:
    def read(thinking: dict[str, Any]) -> tuple[int | None, str | None, dict[str, Any]]:
        body = {
            "contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"thinkingConfig": thinking},
        }
        req = from_gemini(body, model="m")
        return req.reasoning_budget, req.reasoning_effort, req.extra

    assert read({"thinkingBudget": 1000, "includeThoughts": True}) == (1000, "minimal", {})
    assert read({"thinkingBudget": 30000, "includeThoughts": True}) == (30000, "high", {})
    # what the neutral fields cannot say is kept for a Gemini upstream, as sent
    assert read({"thinkingBudget": 8000}) == (
        8000,
        "medium",
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": 8000}}},
    )
    assert read({"thinkingBudget": 0}) == (
        None,
        None,
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
    )
    assert read({"thinking_budget": -1, "include_thoughts": True}) == (
        None,
        None,
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": -1, "includeThoughts": True}}},
    )
    assert read({"thinkingLevel": "HIGH"})[:2] == (None, "high")
    assert read({"thinkingLevel": "low"})[:2] == (None, "low")
    # and it goes back as it came to Gemini, as its budget to the others
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH"}, "topK": 3},
    }
    req = from_gemini(body, model="m")
    assert to_gemini(req)["generationConfig"] == {
        "thinkingConfig": {"thinkingLevel": "HIGH"},
        "topK": 3,
    }
    assert to_anthropic(req)["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert to_openai(req)["reasoning_effort"] == "high"


def test_json_schema_from_gemini_schemas() -> None:
    openapi = {
        "type": "OBJECT",
        "properties": {
            "type": {"type": "STRING", "format": "enum", "enum": ["a", "b"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "max_items": "3"},
            "n": {"type": "INTEGER", "nullable": True, "minimum": 1},
            "any": {"any_of": [{"type": "NUMBER"}, {"type": "BOOLEAN"}]},
        },
        "required": ["type"],
        "propertyOrdering": ["type", "tags"],
        "description": "d",
    }
    assert json_schema(openapi) == {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "n": {"type": ["integer", "null"], "minimum": 1},
            "any": {"anyOf": [{"type": "number"}, {"type": "boolean"}]},
        },
        "required": ["type"],
        "description": "d",
    }
    assert json_schema({"type": "TYPE_UNSPECIFIED"}) == {}
    assert json_schema(True) is True
    # responseSchema is converted too
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": openapi},
    }
    fmt = from_gemini(body, model="m").response_format
    assert fmt is not None and fmt.schema == json_schema(openapi)
    json_only = {**body, "generationConfig": {"responseMimeType": "application/json"}}
    assert from_gemini(json_only, model="m").response_format == ResponseFormat("json_object")
    plain = {**body, "generationConfig": {"responseMimeType": "text/plain"}}
    assert from_gemini(plain, model="m").response_format is None


def _body(**fields: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **fields}


def _parts(*parts: Any, role: str = "user") -> dict[str, Any]:
    return {"contents": [{"role": role, "parts": list(parts)}]}


def _gen(**config: Any) -> dict[str, Any]:
    return _body(generationConfig=config)


def _tools(*decls: Any, **tool: Any) -> dict[str, Any]:
    return _body(tools=[{"functionDeclarations": list(decls), **tool}])


def _mode(**fc: Any) -> dict[str, Any]:
    body = _tools({"name": "f"})
    body["toolConfig"] = {"functionCallingConfig": fc}
    return body


_CALL_THEN = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({}, "contents"),
        ({"contents": []}, "contents"),
        ({"contents": ["x"]}, "contents[0]"),
        ({"contents": [{"role": "assistant", "parts": []}]}, "contents[0].role"),
        ({"contents": [{"role": "user"}]}, "contents[0].parts"),
        ({"contents": [{"parts": "hi"}]}, "contents[0].parts"),
        (_parts(5), "contents[0].parts[0]"),
        (_parts({"text": 5}), "contents[0].parts[0].text"),
        (_parts({"text": "x", "thought": "yes"}), "contents[0].parts[0].thought"),
        (_parts({"text": "x", "thoughtSignature": 5}), "contents[0].parts[0].thoughtSignature"),
        (_parts({"text": "x", "inlineData": {}}), "contents[0].parts[0]"),
        (_parts({"inlineData": {"data": "AA"}}), "contents[0].parts[0].inlineData.mimeType"),
        (
            _parts({"inlineData": {"mimeType": "audio/wav", "data": "AA"}}),
            "contents[0].parts[0].inlineData.mimeType",
        ),
        (
            _parts({"inline_data": {"mime_type": "image/png", "data": 5}}),
            "contents[0].parts[0].inline_data.data",
        ),
        (
            _parts({"fileData": {"fileUri": "gs://x", "mimeType": "application/pdf"}}),
            "contents[0].parts[0].fileData.mimeType",
        ),
        (_parts({"fileData": {"mimeType": "image/png"}}), "contents[0].parts[0].fileData.fileUri"),
        (_parts({"executableCode": {"code": "1"}}), "contents[0].parts[0].executableCode"),
        (_parts({"functionCall": {"name": "f"}}), "contents[0].parts[0].functionCall"),
        (
            _parts({"functionCall": {"name": "f", "args": [1]}}, role="model"),
            "contents[0].parts[0].functionCall.args",
        ),
        (
            _parts({"functionCall": {"args": {}}}, role="model"),
            "contents[0].parts[0].functionCall.name",
        ),
        (
            _parts({"functionResponse": {"name": "f", "response": {}}}, role="model"),
            "contents[0].parts[0].functionResponse",
        ),
        (
            {"contents": [_CALL_THEN, {"parts": [{"functionResponse": {"name": 5}}]}]},
            "contents[1].parts[0].functionResponse.name",
        ),
        (
            {
                "contents": [
                    _CALL_THEN,
                    {"parts": [{"functionResponse": {"name": "f", "response": 1}}]},
                ]
            },
            "contents[1].parts[0].functionResponse.response",
        ),
        (
            {
                "contents": [
                    _CALL_THEN,
                    {"parts": [{"functionResponse": {"name": "f", "parts": [{"text": "x"}]}}]},
                ]
            },
            "contents[1].parts[0].functionResponse.parts",
        ),
        (_body(systemInstruction="Be brief."), "systemInstruction"),
        (_body(systemInstruction={"parts": [{"text": 1}]}), "systemInstruction.parts[0].text"),
        (_body(tools={"functionDeclarations": []}), "tools"),
        (_body(tools=[{"googleSearch": {}}]), "tools[0].googleSearch"),
        (_body(tools=[{"codeExecution": {}}]), "tools[0].codeExecution"),
        (_tools({"name": "1abc"}), "tools[0].functionDeclarations[0].name"),
        (_tools({"name": "f", "description": 3}), "tools[0].functionDeclarations[0].description"),
        (
            _tools({"name": "f", "parameters": {}, "parametersJsonSchema": {}}),
            "tools[0].functionDeclarations[0].parametersJsonSchema",
        ),
        (
            _tools({"name": "f", "parameters_json_schema": "x"}),
            "tools[0].functionDeclarations[0].parameters_json_schema",
        ),
        (_body(tools=[{"functionDeclarations": {}}]), "tools[0].functionDeclarations"),
        (_body(toolConfig=[]), "toolConfig"),
        (_mode(mode="SOMETIMES"), "toolConfig.functionCallingConfig.mode"),
        (
            _mode(mode="AUTO", allowedFunctionNames=["f"]),
            "toolConfig.functionCallingConfig.allowedFunctionNames",
        ),
        (
            _mode(mode="ANY", allowedFunctionNames=["g"]),
            "toolConfig.functionCallingConfig.allowedFunctionNames[0]",
        ),
        (
            _body(toolConfig={"functionCallingConfig": {"mode": "ANY"}}),
            "toolConfig.functionCallingConfig.mode",
        ),
        (_body(generationConfig=[]), "generationConfig"),
        (_gen(temperature=3), "generationConfig.temperature"),
        (_body(generation_config={"temperature": "hot"}), "generation_config.temperature"),
        (_gen(topP=1.5), "generationConfig.topP"),
        (_gen(top_p=-1), "generationConfig.top_p"),
        (_gen(maxOutputTokens=0), "generationConfig.maxOutputTokens"),
        (_gen(maxOutputTokens=1.5), "generationConfig.maxOutputTokens"),
        (_gen(stopSequences=["a"] * 6), "generationConfig.stopSequences"),
        (_gen(stopSequences="a"), "generationConfig.stopSequences"),
        (_gen(stopSequences=[1]), "generationConfig.stopSequences[0]"),
        (_gen(candidateCount=2), "generationConfig.candidateCount"),
        (_gen(candidateCount=0), "generationConfig.candidateCount"),
        (_gen(seed="7"), "generationConfig.seed"),
        (_gen(responseMimeType="text/x.enum"), "generationConfig.responseMimeType"),
        (_gen(responseJsonSchema={"type": "object"}), "generationConfig.responseMimeType"),
        (
            _gen(responseMimeType="application/json", responseSchema={}, responseJsonSchema={}),
            "generationConfig.responseJsonSchema",
        ),
        (
            _gen(responseMimeType="application/json", responseJsonSchema=[]),
            "generationConfig.responseJsonSchema",
        ),
        (_gen(thinkingConfig=1), "generationConfig.thinkingConfig"),
        (
            _gen(thinkingConfig={"thinkingBudget": -2}),
            "generationConfig.thinkingConfig.thinkingBudget",
        ),
        (
            _gen(thinking_config={"thinking_budget": "x"}),
            "generationConfig.thinking_config.thinking_budget",
        ),
        (
            _gen(thinkingConfig={"thinkingLevel": "ultra"}),
            "generationConfig.thinkingConfig.thinkingLevel",
        ),
        (
            _gen(thinkingConfig={"includeThoughts": "yes"}),
            "generationConfig.thinkingConfig.includeThoughts",
        ),
        (_gen(topK=0), "generationConfig.topK"),
        (_gen(top_k="x"), "generationConfig.top_k"),
        (_gen(presencePenalty=5), "generationConfig.presencePenalty"),
        (_gen(frequencyPenalty="x"), "generationConfig.frequencyPenalty"),
        (_gen(responseLogprobs=1), "generationConfig.responseLogprobs"),
        (_gen(logprobs=21), "generationConfig.logprobs"),
        (_gen(responseModalities=[1]), "generationConfig.responseModalities[0]"),
        (_body(safetySettings="none"), "safetySettings"),
        (_body(safetySettings=[1]), "safetySettings[0]"),
        (_body(cachedContent=5), "cachedContent"),
        (_body(cached_content=5), "cached_content"),
    ],
)
def test_from_gemini_errors_name_the_field(body: Any, param: str) -> None:
    with pytest.raises(RequestError) as info:
        from_gemini(body, model="m")
    assert info.value.param == param
    assert param.split(".")[0].split("[")[0] in str(info.value)


# --- requests: writing ---------------------------------------------------------------------


def sdk_validates(body: dict[str, Any]) -> None:
    """Every part of a request body is one the SDK's types (``extra="forbid"``) accept,
    under the names the REST API uses."""
    assert set(body) <= {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
    }
    for content in body["contents"]:
        types.Content.model_validate(content)
    if "systemInstruction" in body:
        types.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools", []):
        types.Tool.model_validate(tool)
    if "toolConfig" in body:
        types.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        types.GenerationConfig.model_validate(body["generationConfig"])
    for setting in body.get("safetySettings", []):
        types.SafetySetting.model_validate(setting)


def test_to_gemini_writes_what_the_sdk_types_accept() -> None:
    body = to_gemini(FULL_REQUEST)
    sdk_validates(body)
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "fc-1"}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ],
    }
    assert body["contents"][2]["parts"] == [
        {
            "functionResponse": {
                "name": "get_weather",
                "response": {"output": "sunny"},
                "id": "fc-1",
            }
        },
        {"functionResponse": {"name": "get_weather", "response": {"output": '{"temp":20}'}}},
    ]
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"fileUri": "https://example.com/a.jpg", "mimeType": "image/jpeg"}},
    ]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nUse metric units."}]}
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER,
                },
                {
                    "name": "get_time",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"zone": {"type": ["string", "null"]}},
                    },
                },
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["generationConfig"] == {
        "stopSequences": ["END"],
        "maxOutputTokens": 500,
        "temperature": 1.5,
        "topP": 0.9,
        "seed": 7,
        "responseMimeType": "application/json",
        "responseJsonSchema": WEATHER,
        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
        # forwarded from the Gemini request
        "topK": 40,
        "presencePenalty": 0.5,
    }
    # the top-level extras reach a Gemini upstream as the HTTP provider sends them
    sent = with_extra(body, FULL_REQUEST, "gemini")
    assert sent["safetySettings"] == SAFETY and sent["cachedContent"] == "cachedContents/abc"
    sdk_validates(sent)
    # and come back as they were
    again = from_gemini(orjson.loads(orjson.dumps(sent)), model="gemini-2.5-flash", stream=True)
    assert again == FULL_REQUEST


def test_to_gemini_turns_and_signatures() -> None:
    call = ToolCallPart("call_abc", "f", '{"x":1}')
    messages = [
        ChatMessage("user", [TextPart("a")]),
        ChatMessage("user", [TextPart("b")]),
        ChatMessage("assistant", [TextPart("c"), call, ToolCallPart("call_def", "f", "")]),
        ChatMessage("user", [ToolResultPart("call_abc", "1"), ToolResultPart("call_def", "2")]),
        ChatMessage("user", [TextPart("and?")]),
        ChatMessage("assistant", []),
    ]
    body = to_gemini(ChatRequest("gemini-2.5-pro", messages))
    # consecutive turns of one role go as one; a turn needs a part
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model"]
    assert body["contents"][0]["parts"] == [{"text": "a"}, {"text": "b"}]
    assert [list(p) for p in body["contents"][2]["parts"]] == [
        ["functionResponse"],
        ["functionResponse"],
        ["text"],
    ]
    assert body["contents"][3]["parts"] == [{"text": ""}]
    assert "thoughtSignature" not in str(body)
    sdk_validates(body)
    # Gemini 3 and later: the first call of each model turn carries Google's placeholder
    for model in ("gemini-3-pro-preview", "models/gemini-3.1-flash", "gemini-10-ultra"):
        signed = to_gemini(ChatRequest(model, messages))["contents"][1]["parts"]
        assert [p.get("thoughtSignature") for p in signed] == [None, SKIP_SIGNATURE, None]
        assert from_gemini(to_gemini(ChatRequest(model, messages)), model="m").messages[1] == (
            ChatMessage("assistant", [TextPart("c"), call, ToolCallPart("call_def", "f", "{}")])
        )
    for model in ("gemini-2.5-pro", "gemini-1.5-flash", "gemma-3-27b-it", "my-alias"):
        assert "thoughtSignature" not in str(to_gemini(ChatRequest(model, messages)))


def test_to_gemini_refuses_what_it_cannot_say() -> None:
    def refused(req: ChatRequest) -> str | None:
        with pytest.raises(RequestError) as info:
            to_gemini(req)
        return info.value.param

    user = ChatMessage("user", [TextPart("x")])
    assert refused(ChatRequest("m", [user], stop=list("abcdef"))) == "stop"
    orphan = ChatMessage("user", [ToolResultPart("call_zz", "r")])
    assert refused(ChatRequest("m", [user, orphan])) == "messages[1]"
    bad = ChatMessage("assistant", [ToolCallPart("c1", "f", "{not json")])
    assert refused(ChatRequest("m", [user, bad])) == "messages[1]"
    listed = ChatMessage("assistant", [ToolCallPart("c1", "f", "[1]")])
    assert refused(ChatRequest("m", [user, listed])) == "messages[1]"
    # no place for these: left out
    quiet = to_gemini(
        ChatRequest("m", [user], parallel_tool_calls=False, metadata={"user_id": "u"})
    )
    assert quiet == {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    # an image by URL without a known extension goes without a MIME type
    image = ChatMessage("user", [ImagePart(url="https://x/img?id=1")])
    assert to_gemini(ChatRequest("m", [image]))["contents"][0]["parts"] == [
        {"fileData": {"fileUri": "https://x/img?id=1"}}
    ]
    data_url = ChatMessage("user", [ImagePart(url="data:image/gif;base64,R0lG")])
    assert to_gemini(ChatRequest("m", [data_url]))["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}
    ]


def test_translation_to_and_from_the_other_protocols() -> None:
    """An OpenAI conversation with tool calls reaches Gemini with each result named after
    its call; a Gemini one reaches the others with made-up ids that pair."""
    openai_body = {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_P",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_R",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_R", "content": "noon"},
            {"role": "tool", "tool_call_id": "call_P", "content": "sunny"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
            {"type": "function", "function": {"name": "get_time"}},
        ],
        "tool_choice": "required",
        "max_tokens": 50,
        "reasoning_effort": "medium",
    }
    body = to_gemini(from_openai(openai_body))
    sdk_validates(body)
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"output": "noon"}, "id": "call_R"}},
        {
            "functionResponse": {
                "name": "get_weather",
                "response": {"output": "sunny"},
                "id": "call_P",
            }
        },
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 8192,
        "includeThoughts": True,
    }
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    # and the Anthropic spelling of the same conversation says the same to Gemini
    anthropic = to_anthropic(from_openai(openai_body))
    assert to_gemini(from_anthropic(anthropic))["contents"] == body["contents"]
    # Gemini to the others, and back
    req = from_gemini(FULL_BODY, model="gemini-2.5-flash")
    req.response_format = None  # the Messages API has none
    for write, read in [(to_openai, from_openai), (to_anthropic, from_anthropic)]:
        other = read(orjson.loads(orjson.dumps(write(req))))
        assert other.messages[1].parts[1:] == FULL_REQUEST.messages[1].parts[1:]
        assert other.messages[2].parts == FULL_REQUEST.messages[2].parts
        back = to_gemini(other)
        assert back["contents"][1:4] == to_gemini(FULL_REQUEST)["contents"][1:4]
    responses = get_protocol("responses")
    req.stop, req.seed = [], None  # nor has the Responses API
    other = responses.parse_request(orjson.loads(orjson.dumps(responses.write_request(req))))
    assert other.messages[2].parts == FULL_REQUEST.messages[2].parts
    assert to_gemini(other)["contents"][2] == to_gemini(FULL_REQUEST)["contents"][2]


# --- requests: the round trip ------------------------------------------------------------------

NONEMPTY = st.text(min_size=1, max_size=8)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
SCHEMAS = st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3)
ARGUMENTS = SCHEMAS.map(lambda args: orjson.dumps(args).decode())
IMAGES = st.builds(
    ImagePart,
    url=st.tuples(
        st.text(string.ascii_letters, min_size=1, max_size=6),
        st.sampled_from(["", ".png", ".jpg", ".gif"]),
    ).map(lambda t: "https://x/" + "".join(t)),
) | st.builds(
    ImagePart,
    media_type=st.sampled_from(["image/png", "image/jpeg"]),
    data=st.binary(min_size=1, max_size=6).map(b64),
)
# Ids as the other protocols make them (never of the made-up form call_<n>).
CALL_IDS = st.from_regex(r"(toolu|fc|call)_[a-zA-Z][a-zA-Z0-9]{0,8}", fullmatch=True)
TOOL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,20}", fullmatch=True)


@st.composite
def conversations(draw: st.DrawFn) -> list[ChatMessage]:
    """Turns in the form Gemini contents say them: roles alternate (the writer merges
    consecutive ones), results answer calls of the turn before, ids are unique."""
    ids = iter(draw(st.lists(CALL_IDS, min_size=20, max_size=20, unique=True)))
    messages: list[ChatMessage] = []
    role = draw(st.sampled_from(["user", "assistant"]))
    for _ in range(draw(st.integers(1, 6))):
        parts: list[Part] = []
        if role == "user":
            prev = messages[-1] if messages else None
            calls = [p for p in prev.parts if isinstance(p, ToolCallPart)] if prev else []
            picks = st.lists(st.sampled_from(range(len(calls))), unique=True)
            for call in [calls[i] for i in draw(picks)] if calls else []:
                parts.append(
                    ToolResultPart(call.id, draw(st.text(max_size=6)), draw(st.booleans()))
                )
            parts.extend(draw(st.lists(st.builds(TextPart, NONEMPTY) | IMAGES, max_size=3)))
        else:
            for kind in draw(st.lists(st.sampled_from(["text", "call"]), max_size=4)):
                if kind == "text":
                    parts.append(TextPart(draw(NONEMPTY)))
                else:
                    parts.append(ToolCallPart(next(ids), draw(TOOL_NAMES), draw(ARGUMENTS)))
        messages.append(ChatMessage(role, parts))  # type: ignore[arg-type]
        role = "assistant" if role == "user" else "user"
    return messages


@st.composite
def thinking(draw: st.DrawFn) -> tuple[int | None, str | None]:
    """A thinking budget and effort as Gemini says them: a budget (the effort follows),
    or an effort alone, which goes as its budget."""
    kind = draw(st.sampled_from(["none", "budget", "effort"]))
    if kind == "budget":
        budget = draw(st.integers(1, 40000))
        return budget, effort_for_budget(budget)
    if kind == "effort":
        effort = draw(st.sampled_from(REASONING_EFFORTS))
        return EFFORT_BUDGETS[effort], effort
    return None, None


def _consistent(req: ChatRequest, think: tuple[int | None, str | None]) -> ChatRequest:
    req.reasoning_budget, req.reasoning_effort = think
    if req.tool_choice == "<first>":
        req.tool_choice = req.tools[0].name if req.tools else None
    elif not req.tools and req.tool_choice is not None:
        req.tool_choice = None
    return req


GEMINI_REQUESTS = st.builds(
    _consistent,
    st.builds(
        ChatRequest,
        model=st.sampled_from(["gemini-2.5-flash", "gemini-3-pro-preview"]),
        messages=conversations(),
        system=st.none() | NONEMPTY,
        max_tokens=st.none() | st.integers(1, 10**6),
        temperature=st.none() | st.floats(0, 2),
        top_p=st.none() | st.floats(0, 1),
        stop=st.lists(NONEMPTY, max_size=5),
        tools=st.lists(
            st.builds(
                ToolSpec, name=TOOL_NAMES, description=st.none() | NONEMPTY, parameters=SCHEMAS
            ),
            max_size=3,
            unique_by=lambda t: t.name,
        ),
        tool_choice=st.none() | st.sampled_from(["auto", "none", "required", "<first>"]),
        stream=st.booleans(),
        include_usage=st.just(True),
        response_format=st.none()
        | st.just(ResponseFormat("json_object"))
        | st.builds(ResponseFormat, st.just("json_schema"), schema=SCHEMAS),
        seed=st.none() | st.integers(-(2**31), 2**31 - 1),
        extra=st.fixed_dictionaries(
            {},
            optional={
                "generationConfig": st.fixed_dictionaries({"topK": st.integers(1, 100)}),
                "safetySettings": st.just(SAFETY),
            },
        ),
        extra_protocol=st.just("gemini"),
    ),
    thinking(),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(req=GEMINI_REQUESTS)
def test_requests_round_trip(req: ChatRequest) -> None:
    """Everything Gemini can carry survives writing (as the HTTP provider sends it) and
    reading back; the SDK's types accept every part of what is written."""
    body = with_extra(to_gemini(req), req, "gemini")
    sdk_validates(body)
    assert from_gemini(orjson.loads(orjson.dumps(body)), model=req.model, stream=req.stream) == req


# --- the decoder ---------------------------------------------------------------------------------


def part_chunk(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A hand-written chunk with one candidate (``finish``: its finishReason)."""
    cand: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}}
    finish = fields.pop("finish", None)
    if finish is not None:
        cand["finishReason"] = finish
    cand["index"] = fields.pop("index", 0)
    return {"candidates": [cand], **fields}


META = {"modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}


def test_decoder_deltas_in_order() -> None:
    raw = body_of(
        [
            part_chunk(
                {"text": "Let me think", "thought": True},
                usageMetadata={"promptTokenCount": 9, "totalTokenCount": 9},
                **META,
            ),
            part_chunk(
                {"text": "Hello", "thoughtSignature": "c2lnMQ=="},
                usageMetadata={"promptTokenCount": 9, "totalTokenCount": 9},
                **META,
            ),
            part_chunk(
                {"text": " world"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "fc-9"}},
                {"functionCall": {"name": "get_time", "args": {}}},
                **META,
            ),
            part_chunk(
                {"text": ""},
                finish="STOP",
                usageMetadata={
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 12,
                    "thoughtsTokenCount": 5,
                    "cachedContentTokenCount": 2,
                    "totalTokenCount": 26,
                },
                **META,
            ),
        ]
    )
    decoder, deltas = decoded(raw)
    made_up = f"call_{reply_tag('resp-1')}_1"
    assert deltas == [
        MessageStart(id="resp-1", model="gemini-2.5-flash", usage=Usage(9)),
        ReasoningDelta("Let me think"),
        ReasoningDelta(signature="c2lnMQ=="),
        TextDelta("Hello"),
        TextDelta(" world"),
        ToolCallDelta(0, "fc-9", "get_weather", '{"city":"Paris"}'),
        ToolCallDelta(1, made_up, "get_time", "{}"),
        FinishDelta("tool_calls", "STOP"),
        UsageDelta(Usage(9, 17, cache_read_input_tokens=2, reasoning_tokens=5)),
    ]
    msg = decoder.message
    assert (msg.id, msg.model, msg.text, msg.reasoning, msg.reasoning_signature) == (
        "resp-1",
        "gemini-2.5-flash",
        "Hello world",
        "Let me think",
        "c2lnMQ==",
    )
    assert msg.tool_calls == [
        ToolCall("fc-9", "get_weather", '{"city":"Paris"}', 0),
        ToolCall(made_up, "get_time", "{}", 1),
    ]
    assert (msg.finish_reason, msg.raw_finish_reason) == ("tool_calls", "STOP")
    assert msg.usage == Usage(9, 17, cache_read_input_tokens=2, reasoning_tokens=5)
    assert SYNTHETIC_ID.fullmatch(made_up)
    assert not decoder.done and decoder.error is None
    # the same through the generic entry points, and the builder agrees
    assert accumulate(raw, "gemini") == msg
    assert accumulate(raw) == msg
    builder = MessageBuilder()
    for delta in deltas:
        builder.feed(delta)
    assert builder.message == msg
    # another reply's made-up ids differ; the same reply's are the same again
    other = raw.replace(b"resp-1", b"resp-2")
    assert accumulate(other).tool_calls[1].id != made_up
    assert accumulate(raw).tool_calls[1].id == made_up


def test_decoder_reads_sdk_built_chunks_and_snake_case() -> None:
    call = types.FunctionCall(name="f", args={"a": [1, 2]}, id="c-1")
    chunks = [
        sdk_chunk(
            candidates=[
                types.Candidate(
                    content=types.Content(
                        role="model",
                        parts=[
                            types.Part(text="plan", thought=True, thought_signature=b"\x01\x02"),
                            types.Part(function_call=call),
                        ],
                    ),
                    finish_reason=types.FinishReason.STOP,
                    index=0,
                )
            ],
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=4, candidates_token_count=6, total_token_count=10
            ),
            response_id="r",
            model_version="v",
        )
    ]
    msg = accumulate(body_of(chunks))
    assert (msg.reasoning, msg.reasoning_signature, msg.finish_reason) == (
        "plan",
        b64(b"\x01\x02"),
        "tool_calls",
    )
    assert msg.tool_calls == [ToolCall("c-1", "f", '{"a":[1,2]}', 0)]
    assert msg.usage == Usage(4, 6)
    snake = {
        "candidates": [
            {
                "content": {"parts": [{"text": "x", "thought_signature": "AQ=="}]},
                "finish_reason": "MAX_TOKENS",
            }
        ],
        "usage_metadata": {"prompt_token_count": 1, "candidates_token_count": 2},
        "response_id": "r",
        "model_version": "v",
    }
    msg = accumulate(body_of([snake]), "gemini")
    assert (msg.id, msg.model, msg.text, msg.reasoning_signature) == ("r", "v", "x", "AQ==")
    assert (msg.finish_reason, msg.usage) == ("length", Usage(1, 2))


def test_decoder_candidates_are_choices() -> None:
    raw = body_of(
        [
            {
                "candidates": [
                    {"content": {"parts": [{"text": "a"}]}, "index": 0},
                    {"content": {"parts": [{"functionCall": {"name": "f"}}]}, "index": 1},
                ],
                **META,
            },
            {
                "candidates": [
                    {"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1},
                    {"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0},
                ],
                **META,
            },
        ]
    )
    decoder, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, FinishDelta)] == [
        FinishDelta("tool_calls", "STOP", choice=1),
        FinishDelta("stop", "STOP", choice=0),
    ]
    messages = decoder.messages
    assert (messages[0].text, messages[1].text) == ("a!", "b")
    assert messages[1].tool_calls[0].id == f"call_{reply_tag('resp-1')}_1_0"
    assert messages[0].usage is messages[1].usage


def test_decoder_prompt_blocked() -> None:
    raw = body_of(
        [
            {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
                **META,
            }
        ]
    )
    decoder, deltas = decoded(raw)
    assert deltas == [
        MessageStart(id="resp-1", model="gemini-2.5-flash", usage=Usage(7)),
        FinishDelta("content_filter", "PROHIBITED_CONTENT"),
    ]
    assert decoder.message.finish_reason == "content_filter"
    # the SDK sees the same: no text, the block reason
    chunk = types.GenerateContentResponse.model_validate_json(decode(raw)[0].data)
    assert chunk.text is None and chunk.prompt_feedback is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
        ("LANGUAGE", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        ("SOMETHING_NEW", "stop"),
    ],
)
def test_decoder_finish_reasons(raw: str, reason: str) -> None:
    msg = accumulate(body_of([part_chunk({"text": "x"}, finish=raw)]))
    assert (msg.finish_reason, msg.raw_finish_reason) == (reason, raw)
    # and back to Gemini: the API's own word as it came, others as they amount to
    back = gemini_response(msg, id="r", model="m")
    assert back["candidates"][0]["finishReason"] == (raw if raw != "SOMETHING_NEW" else "STOP")


def test_decoder_error_chunk_ends_the_stream() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    raw = body_of([part_chunk({"text": "partial"}, **META), error, part_chunk({"text": "late"})])
    decoder, deltas = decoded(raw)
    assert deltas[-1] == ErrorDelta("UNAVAILABLE", "The model is overloaded.", error["error"])
    assert decoder.done and decoder.error == deltas[-1]
    assert decoder.message.text == "partial"  # later events are ignored
    with pytest.raises(StreamError) as info:
        accumulate(raw, "gemini")
    err = info.value
    assert isinstance(err, ProviderError)
    assert (err.type, err.status, err.provider, err.message) == (
        "overloaded",
        503,
        "gemini",
        "The model is overloaded.",
    )
    # an error object of another shape is still an error
    odd = GeminiStreamDecoder().feed(ServerSentEvent('{"error": "boom"}'))
    assert odd == [ErrorDelta("api_error", "boom", {"message": "boom"})]


def test_decoder_cut_streams_bad_data_and_wrong_shapes() -> None:
    with pytest.raises(StreamError) as info:
        decoded(body_of([part_chunk({"text": "no finish"})]))
    assert info.value.type == "network" and "finishReason" in info.value.message
    with pytest.raises(StreamError):
        GeminiStreamDecoder().close()  # nothing arrived
    with pytest.raises(StreamError):
        StreamDecoder("gemini").close()
    decoder = GeminiStreamDecoder()
    assert decoder.feed(ServerSentEvent("")) == []
    with pytest.raises(StreamDecodeError, match="not JSON"):
        decoder.feed(ServerSentEvent("{nope"))
    with pytest.raises(StreamDecodeError, match="not a JSON object"):
        decoder.feed(ServerSentEvent("[1]"))
    # shapes the API never sends are skipped, not fatal
    odd = [
        {"candidates": "x", "usageMetadata": "x"},
        {"candidates": [5, {"content": "x"}, {"content": {"parts": "x"}}]},
        {"candidates": [{"content": {"parts": [1, {"text": 5}, {"inlineData": {}}]}}]},
        {"candidates": [{"index": "a", "content": {"parts": [{"functionCall": {"args": [1]}}]}}]},
        {"candidates": [{"finishReason": 5}]},
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": "x"}},
    ]
    decoder, deltas = decoded(body_of(odd))
    assert decoder.message.tool_calls == [ToolCall("call_0", "", "{}", 0)]
    assert decoder.message.finish_reason == "tool_calls"
    assert not any(isinstance(d, UsageDelta) for d in deltas)
    assert decoder.messages == {0: decoder.message}


def test_decoder_usage_only_when_it_changes() -> None:
    usage = {"promptTokenCount": 5, "totalTokenCount": 5}
    more = {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}
    raw = body_of(
        [
            part_chunk({"text": "a"}, usageMetadata=usage),
            part_chunk({"text": "b"}, usageMetadata=usage),
            part_chunk({"text": "c"}, usageMetadata=more),
            part_chunk({"text": ""}, finish="STOP", usageMetadata=more),
        ]
    )
    _, deltas = decoded(raw)
    assert [d for d in deltas if isinstance(d, UsageDelta | MessageStart)] == [
        MessageStart(usage=Usage(5)),
        UsageDelta(Usage(5, 3)),
    ]


def test_detect_protocol() -> None:
    def detect(obj: Any, event: str = "message") -> str | None:
        return detect_protocol(ServerSentEvent(orjson.dumps(obj).decode(), event=event))

    assert detect(part_chunk({"text": "x"}, **META)) == "gemini"
    assert detect(text_chunk("x")) == "gemini"
    assert detect({"usageMetadata": {"promptTokenCount": 1}}) == "gemini"
    assert detect({"promptFeedback": {"blockReason": "SAFETY"}}) == "gemini"
    assert detect({"candidates": []}) == "gemini"
    # the others keep theirs
    assert detect({"object": "chat.completion.chunk", "choices": []}) == "openai"
    assert detect({"choices": [], "candidates": []}) == "openai"
    assert detect({"error": {"message": "m"}}) == "openai"
    assert detect({"type": "message_start", "message": {}}) == "anthropic"
    assert detect({"type": "error", "error": {"type": "overloaded_error"}}, "error") == "anthropic"
    assert detect({"type": "response.created", "response": {}}) == "responses"
    # an error chunk alone looks like OpenAI's (asked first), which reads it as well
    error = {"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}
    assert detect(error) == "openai"
    with pytest.raises(StreamError) as info:
        accumulate(body_of([error]))
    assert (info.value.type, info.value.status) == ("rate_limit", 429)
    # this protocol's own answers
    p = GEMINI
    assert p.detect(ServerSentEvent(""), error)
    assert not p.detect(ServerSentEvent("", event="error"), part_chunk({"text": "x"}))
    assert not p.detect(ServerSentEvent(""), {"candidates": [], "type": "x"})
    assert not p.detect(ServerSentEvent(""), {"candidates": [], "object": "x"})
    assert not p.detect(ServerSentEvent(""), {"candidates": "x"})
    assert not p.detect(ServerSentEvent(""), {"error": {"code": 400, "status": "X"}, "id": 1})
    assert not p.detect(ServerSentEvent(""), None)
    decoder = StreamDecoder()
    decoder.feed(ServerSentEvent(orjson.dumps(text_chunk("x")).decode()))
    assert decoder.protocol == "gemini"
    assert isinstance(p.decoder(), EventDecoder) and isinstance(p.encoder(), EventEncoder)


# --- the encoder -------------------------------------------------------------------------------


def test_encoder_text_stream_exact_bytes() -> None:
    enc = GeminiEventEncoder()
    assert enc.encode(MessageStart(id="r-1", model="gemini-x", usage=Usage(3))) == b""
    assert enc.encode(TextDelta("Hi")) == (
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}],'
        b'"modelVersion":"gemini-x","responseId":"r-1"}\r\n\r\n'
    )
    assert enc.encode(TextDelta("")) == b""
    assert enc.encode(FinishDelta("stop")) == b""
    assert enc.encode(UsageDelta(Usage(output_tokens=2))) == b""
    assert enc.done() == (
        b'data: {"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},'
        b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,'
        b'"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"gemini-x",'
        b'"responseId":"r-1"}\r\n\r\n'
    )
    assert enc.ended
    with pytest.raises(RuntimeError, match="already ended"):
        enc.encode(TextDelta("more"))
    with pytest.raises(RuntimeError):
        enc.encode_text("more")
    with pytest.raises(RuntimeError):
        enc.done()
    # an empty stream still ends with a finish; ids default to a random responseId
    empty = GeminiEventEncoder(include_usage=False)
    (last,) = events_of(empty.done())
    assert last["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" not in last
    assert len(last["responseId"]) == 23 and "modelVersion" not in last
    with pytest.raises(TypeError, match="str"):
        GeminiEventEncoder().encode_text(5)  # type: ignore[arg-type]


def test_encoder_sends_tool_calls_whole() -> None:
    enc = GeminiEventEncoder("r", "m")
    assert enc.encode(ToolCallDelta(0, "call_abc", "get_weather", '{"ci')) == b""
    assert enc.encode(ToolCallDelta(0, arguments='ty":"Paris"}')) == b""
    assert enc.encode(ToolCallDelta(1, "call_7", "get_time")) == b""  # a made-up id
    assert enc.encode(ToolCallDelta(2, None, "cut", '{"a":')) == b""  # cut-off arguments
    with pytest.raises(ValueError, match="name"):
        enc.encode(ToolCallDelta(3, "x", None, "{}"))
    first = events_of(enc.encode(TextDelta("Done.")))
    assert [c["candidates"][0]["content"]["parts"] for c in first] == [
        [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_abc"}},
            {"functionCall": {"name": "get_time", "args": {}}},
            {"functionCall": {"name": "cut", "args": {}}},
        ],
        [{"text": "Done."}],
    ]
    with pytest.raises(ValueError, match="already sent"):
        enc.encode(ToolCallDelta(0, arguments="more"))
    # a call goes out at the finish too, and the finish says STOP
    assert enc.encode(ToolCallDelta(3, "toolu_1", "f", "{}")) == b""
    (calls,) = events_of(enc.encode(FinishDelta("tool_calls")))
    assert calls["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "f", "args": {}, "id": "toolu_1"}}
    ]
    with pytest.raises(ValueError, match="finished"):
        enc.encode(TextDelta("after the finish"))
    (last,) = events_of(enc.done())
    assert last["candidates"][0]["finishReason"] == "STOP"


def test_encoder_thought_parts_and_signatures() -> None:
    enc = GeminiEventEncoder("r", "m")
    out = enc.encode(ReasoningDelta("think"))
    out += enc.encode(ReasoningDelta(signature="c2ln"))
    out += enc.encode(TextDelta("answer"))
    out += enc.encode(ReasoningDelta(signature="AAAA"))
    out += enc.encode(ToolCallDelta(0, "fc", "f", "{}"))
    out += enc.encode(ReasoningDelta("again", signature="BBBB"))  # calls end first
    out += enc.encode(ReasoningDelta(signature="CCCC"))
    out += enc.encode(ReasoningDelta(signature="DDDD"))  # two in a row
    out += enc.encode(FinishDelta("stop"))
    out += enc.done()
    parts = [c["candidates"][0]["content"]["parts"] for c in events_of(out)]
    assert parts == [
        [{"text": "think", "thought": True}],
        [{"text": "answer", "thoughtSignature": "c2ln"}],
        [{"functionCall": {"name": "f", "args": {}, "id": "fc"}, "thoughtSignature": "AAAA"}],
        [{"text": "again", "thought": True, "thoughtSignature": "BBBB"}],
        [{"text": "", "thoughtSignature": "CCCC"}],
        [{"text": "", "thoughtSignature": "DDDD"}],
    ]
    # our decoder gives the same deltas back, each signature before its part
    _, deltas = decoded(out)
    assert [d for d in deltas if isinstance(d, ReasoningDelta)] == [
        ReasoningDelta("think"),
        ReasoningDelta(signature="c2ln"),
        ReasoningDelta(signature="AAAA"),
        ReasoningDelta(signature="BBBB"),
        ReasoningDelta("again"),
        ReasoningDelta(signature="CCCC"),
        ReasoningDelta(signature="DDDD"),
    ]


def test_encoder_candidates_finishes_and_usage() -> None:
    enc = GeminiEventEncoder("r", "m")
    out = enc.encode(TextDelta("zero"))
    out += enc.encode(RefusalDelta("I can't.", choice=1))
    out += enc.encode(FinishDelta("content_filter", choice=1))
    with pytest.raises(ValueError, match="finished"):
        enc.encode(FinishDelta("stop", choice=1))
    out += enc.encode(FinishDelta("length", "MAX_TOKENS"))
    out += enc.encode(UsageDelta(Usage(10, 8, cache_read_input_tokens=4, reasoning_tokens=3)))
    out += enc.done()
    events = events_of(out)
    assert [c["candidates"][0]["index"] for c in events[:2]] == [0, 1]
    last = events[-1]
    assert [(c["index"], c["finishReason"]) for c in last["candidates"]] == [
        (0, "MAX_TOKENS"),
        (1, "SAFETY"),
    ]
    assert last["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 5,
        "totalTokenCount": 18,
        "cachedContentTokenCount": 4,
        "thoughtsTokenCount": 3,
    }
    decoder, _ = decoded(out)
    assert (decoder.messages[1].text, decoder.messages[1].finish_reason) == (
        "I can't.",
        "content_filter",
    )
    assert decoder.message.usage == Usage(10, 8, cache_read_input_tokens=4, reasoning_tokens=3)
    # done(usage) adds to what the deltas said
    enc = GeminiEventEncoder()
    enc.encode(UsageDelta(Usage(1)))
    (last,) = events_of(enc.done(Usage(output_tokens=2)))
    assert last["usageMetadata"]["totalTokenCount"] == 3


def test_encoder_errors() -> None:
    enc = GeminiEventEncoder("r", "m")
    enc.encode(TextDelta("x"))
    enc.encode(ToolCallDelta(0, "c", "f", "{"))
    raw = enc.error(StreamError("rate_limit", "Slow down."))
    assert raw == (
        b'data: {"error":{"code":429,"message":"Slow down.","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
    )
    assert enc.ended
    with pytest.raises(RuntimeError):
        enc.error(ValueError("again"))
    # an upstream's in-band error, read in its own vocabulary
    for provider, body, code, status in [
        ("openai", {"type": "server_error", "message": "boom"}, 500, "INTERNAL"),
        ("anthropic", {"type": "overloaded_error", "message": "busy"}, 503, "UNAVAILABLE"),
        ("gemini", {"code": 400, "message": "bad", "status": "FAILED_PRECONDITION"}, 400, None),
    ]:
        enc = GeminiEventEncoder(error_provider=provider)
        (event,) = events_of(enc.encode(ErrorDelta("x", "m", body)))
        assert event["error"]["code"] == code
        assert event["error"]["status"] == (status or body["status"])
        assert event["error"]["message"] == body["message"]
    # an exception of any kind
    (event,) = events_of(GeminiEventEncoder().error(TimeoutError("slow")))
    assert (event["error"]["code"], event["error"]["status"]) == (504, "DEADLINE_EXCEEDED")


def test_encoder_and_sdk_end_to_end(api: FakeAPI) -> None:
    enc = GeminiEventEncoder()
    deltas: list[Delta] = [
        MessageStart(id="resp-e2e", model="gemini-2.5-flash", usage=Usage(12)),
        ReasoningDelta("The user wants weather."),
        ReasoningDelta(signature=b64(b"sig")),
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallDelta(0, "call_1", "get_weather", '{"city":'),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, "toolu_2", "get_time", '{"zone":"CET"}'),
        FinishDelta("tool_calls"),
        UsageDelta(Usage(12, 30, reasoning_tokens=10)),
    ]
    raw = b"".join(enc.encode(d) for d in deltas) + enc.done()
    chunks = api.stream(raw)
    assert "".join(c.text or "" for c in chunks) == "Let me check."
    calls = [fc for c in chunks for fc in c.function_calls or []]
    assert [(fc.id, fc.name, fc.args) for fc in calls] == [
        (None, "get_weather", {"city": "Paris"}),
        ("toolu_2", "get_time", {"zone": "CET"}),
    ]
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert (
        last.usage_metadata.prompt_token_count,
        last.usage_metadata.candidates_token_count,
        last.usage_metadata.thoughts_token_count,
        last.usage_metadata.total_token_count,
    ) == (12, 20, 10, 42)
    assert {c.response_id for c in chunks} == {"resp-e2e"}
    assert sdk_assembled(chunks) == summarize(accumulate(raw))
    # the SDK raises our in-band error: ClientError / ServerError by code, our message
    for err, cls, code, status in [
        (
            StreamError("rate_limit", "Slow down."),
            genai_errors.ClientError,
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (StreamError("overloaded", "Busy."), genai_errors.ServerError, 503, "UNAVAILABLE"),
        (StreamError("invalid_request", "Bad."), genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
        (StreamError("api_error", "Oops.", status=502), genai_errors.ServerError, 502, "INTERNAL"),
    ]:
        enc = GeminiEventEncoder()
        failing = enc.encode(TextDelta("partial")) + enc.error(err)
        with pytest.raises(cls) as info:
            api.stream(failing)
        assert (info.value.code, info.value.status, info.value.message) == (
            code,
            status,
            err.message,
        )
        assert failing.endswith(err.to_sse_event("gemini"))
        # and the error, read back, is the same error
        again = StreamError.from_provider_error(info.value.details, provider="gemini")
        assert (again.type, again.status) == (err.type if code != 502 else "api_error", code)


# --- the SDK and our decoder agree ---------------------------------------------------------------

_FINISHES = [r.value for r in types.FinishReason]
_BLOCKS = [r.value for r in types.BlockedReason if r.value != "BLOCKED_REASON_UNSPECIFIED"]
_USAGE_FIELDS = (
    "candidates_token_count",
    "thoughts_token_count",
    "cached_content_token_count",
)


@st.composite
def sdk_parts(draw: st.DrawFn) -> types.Part:
    kind = draw(st.sampled_from(["text", "text", "thought", "call", "image"]))
    signature = draw(st.none() | st.none() | st.binary(min_size=1, max_size=8))
    if kind == "text":
        part = types.Part(
            text=draw(st.text(max_size=6)), thought=draw(st.sampled_from([None, False]))
        )
    elif kind == "thought":
        part = types.Part(text=draw(NONEMPTY), thought=True)
    elif kind == "call":
        call = types.FunctionCall(
            name=draw(TOOL_NAMES),
            args=draw(st.none() | SCHEMAS),
            id=draw(st.none() | CALL_IDS),
        )
        part = types.Part(function_call=call)
    else:
        part = types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG"))
    part.thought_signature = signature
    return part


@st.composite
def sdk_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Streamed replies as the SDK's types write them: chunks of parts (text, thoughts,
    whole function calls, an image now and then, signatures on any), usage on some
    chunks (the same fields each time, growing), a finish reason on the last one (or
    none: a cut stream), or a prompt blocked at once."""
    meta = {
        "response_id": draw(st.none() | st.text(string.ascii_letters, min_size=1, max_size=8)),
        "model_version": draw(st.none() | st.sampled_from(["gemini-2.5-flash", "gemini-3"])),
    }
    fields = draw(st.sets(st.sampled_from(_USAGE_FIELDS)))
    prompt = draw(st.integers(0, 500))
    counts = dict.fromkeys(fields, 0)

    def usage() -> types.GenerateContentResponseUsageMetadata | None:
        if not draw(st.booleans()):
            return None
        for name in counts:
            counts[name] += draw(st.integers(0, 50))
        total = prompt + sum(counts.get(n, 0) for n in _USAGE_FIELDS[:2])
        return types.GenerateContentResponseUsageMetadata(
            prompt_token_count=prompt, total_token_count=total, **counts
        )

    if draw(st.integers(0, 9)) == 0:
        feedback = types.GenerateContentResponsePromptFeedback(
            block_reason=draw(st.sampled_from(_BLOCKS))
        )
        return [sdk_chunk(prompt_feedback=feedback, usage_metadata=usage(), **meta)]
    chunks = []
    n = draw(st.integers(0, 6))
    for i in range(n + 1):
        last = i == n
        parts = draw(st.lists(sdk_parts(), max_size=3))
        finish = draw(st.none() | st.sampled_from(_FINISHES)) if last else None
        content = types.Content(role="model", parts=parts) if parts else None
        cand = types.Candidate(content=content, finish_reason=finish, index=0)
        chunks.append(sdk_chunk(candidates=[cand], usage_metadata=usage(), **meta))
    return chunks


@FAST
@given(stream=sdk_streams(), cuts=st.lists(st.integers(0, 100_000), max_size=12))
def test_accumulate_equals_what_the_sdk_assembles(
    api: FakeAPI, stream: list[dict[str, Any]], cuts: list[int]
) -> None:
    """On random Gemini streams, :func:`accumulate` (fed the bytes in random pieces)
    says what the SDK's chunks add up to (see :func:`sdk_assembled`)."""
    raw = body_of(stream)
    expected = sdk_assembled(api.stream(raw))
    pieces = split(raw, cuts)
    if expected["raw_finish"] is None:
        with pytest.raises(StreamError) as info:
            accumulate(pieces)
        assert info.value.type == "network"
        return
    assert summarize(accumulate(pieces)) == expected


@st.composite
def delta_runs(draw: st.DrawFn) -> tuple[list[Delta], str]:
    """A reply as deltas from any upstream (text, refusals, reasoning, signatures, tool
    calls whose arguments come in fragments), and how it ends (done or an error)."""
    deltas: list[Delta] = []
    if draw(st.booleans()):
        deltas.append(
            MessageStart(
                id=draw(st.none() | st.text(string.ascii_letters, min_size=1, max_size=8)),
                model=draw(st.none() | st.sampled_from(["gemini-2.5-flash", "gpt-5"])),
                usage=draw(st.none() | st.builds(Usage, st.integers(0, 99))),
            )
        )
    tool = 0
    for kind in draw(st.lists(st.sampled_from(["text", "refusal", "think", "sig", "call"]))):
        if kind == "text":
            deltas.append(TextDelta(draw(st.text(max_size=6))))
        elif kind == "refusal":
            deltas.append(RefusalDelta(draw(NONEMPTY)))
        elif kind == "think":
            deltas.append(ReasoningDelta(draw(NONEMPTY)))
        elif kind == "sig":
            deltas.append(ReasoningDelta(signature=b64(draw(st.binary(min_size=1, max_size=6)))))
        else:
            arguments = orjson.dumps(draw(SCHEMAS)).decode()
            cut = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
            pieces = [arguments[a:b] for a, b in itertools.pairwise([0, *cut, len(arguments)])]
            call_id = draw(st.none() | CALL_IDS | st.just(f"call_{tool}"))
            deltas.append(ToolCallDelta(tool, call_id, draw(TOOL_NAMES), pieces[0]))
            deltas.extend(ToolCallDelta(tool, arguments=piece) for piece in pieces[1:])
            tool += 1
    reason = draw(st.none() | st.sampled_from(["stop", "length", "content_filter", "tool_calls"]))
    if reason is not None:
        deltas.append(FinishDelta(reason))
    if draw(st.booleans()):
        reasoning = draw(st.none() | st.integers(0, 50))
        output = draw(st.integers(reasoning or 0, 200))
        usage = Usage(
            draw(st.none() | st.integers(0, 500)),
            output,
            cache_read_input_tokens=draw(st.none() | st.integers(0, 9)),
            reasoning_tokens=reasoning,
        )
        deltas.append(UsageDelta(usage))
    return deltas, draw(st.sampled_from(["done", "done", "error"]))


def expected_from(deltas: list[Delta]) -> dict[str, Any]:
    """What a Gemini client should make of a run of deltas (:func:`sdk_assembled`'s
    terms): calls as whole ones, made-up ids not sent, no finish reason meaning STOP,
    unknown counts 0."""
    builder = MessageBuilder()
    for delta in deltas:
        builder.feed(delta)
    msg = builder.message
    calls = [
        (
            None if SYNTHETIC_ID.fullmatch(c.id or "call_0") else c.id,
            c.name,
            orjson.loads(c.arguments),
        )
        for c in msg.tool_calls
    ]
    raw = {"length": "MAX_TOKENS", "content_filter": "SAFETY"}.get(msg.finish_reason or "", "STOP")
    u = msg.usage
    start = next((d for d in deltas if isinstance(d, MessageStart)), None)
    return {
        "id": start.id if start is not None else None,
        "model": start.model if start is not None else None,
        "text": "".join(d.text for d in deltas if isinstance(d, TextDelta | RefusalDelta)),
        "reasoning": msg.reasoning,
        "signature": None if msg.reasoning_signature is None else unb64(msg.reasoning_signature),
        "calls": calls,
        "raw_finish": raw,
        "finish": _finish_word(raw, bool(calls)),
        "usage": (
            u.input_tokens or 0,
            u.output_tokens or 0,
            u.cache_read_input_tokens,
            u.reasoning_tokens,
        ),
    }


@FAST
@given(run=delta_runs(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_sdk_and_our_decoder_agree_on_random_encoder_streams(
    api: FakeAPI, run: tuple[list[Delta], str], cuts: list[int]
) -> None:
    deltas, ending = run
    enc = GeminiEventEncoder()
    raw = b"".join(enc.encode(d) for d in deltas)
    if ending == "error":
        raw += enc.error(StreamError("overloaded", "Busy."))
    else:
        raw += enc.done()
    events_of(raw)  # every chunk is one the SDK's types take
    if ending == "error":
        seen: list[Any] = []
        api.body, api.status, api.content_type = raw, 200, "text/event-stream"
        with pytest.raises(genai_errors.ServerError, match="Busy"):
            for ch in api.client.models.generate_content_stream(model="m", contents="x"):
                seen.append(ch)
        with pytest.raises(StreamError) as info:
            accumulate(split(raw, cuts))
        assert (info.value.type, info.value.message) == ("overloaded", "Busy.")
        decoder, _ = decoded(raw)
        assert decoder.message.text == "".join(c.text or "" for c in seen)
        return
    expected = expected_from(deltas)
    got = sdk_assembled(api.stream(raw))
    if expected["id"] is None:
        expected["id"] = got["id"]  # a random one
    assert got == expected
    assert summarize(accumulate(split(raw, cuts))) == expected


# --- whole replies and model lists -----------------------------------------------------------


def test_whole_reply_is_what_the_sdk_reads(api: FakeAPI) -> None:
    msg = Message(
        text="Hello",
        reasoning="think",
        reasoning_signature=b64(b"signed"),
        tool_calls=[ToolCall("call_1", "f", '{"a":1}'), ToolCall("toolu_2", "g", "")],
        finish_reason="tool_calls",
        usage=Usage(5, 7, cache_read_input_tokens=1, reasoning_tokens=3),
    )
    obj = GEMINI.whole_reply(msg, id="resp-w", model="gemini-2.5-flash")
    assert obj == gemini_response(msg, id="resp-w", model="gemini-2.5-flash")
    assert obj["candidates"][0]["content"]["parts"] == [
        {"text": "think", "thought": True},
        {"text": "Hello"},
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": b64(b"signed")},
        {"functionCall": {"name": "g", "args": {}, "id": "toolu_2"}},
    ]
    api.body, api.status, api.content_type = orjson.dumps(obj), 200, "application/json"
    reply = api.client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert (reply.text, reply.response_id, reply.model_version) == (
        "Hello",
        "resp-w",
        "gemini-2.5-flash",
    )
    assert [(c.id, c.name, c.args) for c in reply.function_calls or []] == [
        (None, "f", {"a": 1}),
        ("toolu_2", "g", {}),
    ]
    assert reply.candidates is not None
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.usage_metadata is not None
    assert (
        reply.usage_metadata.prompt_token_count,
        reply.usage_metadata.candidates_token_count,
        reply.usage_metadata.thoughts_token_count,
        reply.usage_metadata.cached_content_token_count,
        reply.usage_metadata.total_token_count,
    ) == (5, 4, 3, 1, 12)
    assert api.requests[-1].url.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    # the signature goes on the last part without calls; an empty reply has one part
    plain = gemini_response(Message(text="x", reasoning_signature="AA=="), id="r", model="m")
    assert plain["candidates"][0]["content"]["parts"] == [{"text": "x", "thoughtSignature": "AA=="}]
    empty = gemini_response(Message(finish_reason="length"), id="r", model="m")
    assert empty["candidates"][0] == {
        "content": {"parts": [{"text": ""}], "role": "model"},
        "finishReason": "MAX_TOKENS",
        "index": 0,
    }
    refused = gemini_response(
        Message(refusal="No.", finish_reason="content_filter"), id="r", model="m"
    )
    assert refused["candidates"][0]["content"]["parts"] == [{"text": "No."}]
    assert refused["candidates"][0]["finishReason"] == "SAFETY"
    # and our decoder reads a whole reply as a one-chunk stream
    back = accumulate(body_of([obj]))
    assert (back.text, back.reasoning, back.finish_reason, back.usage) == (
        "Hello",
        "think",
        "tool_calls",
        msg.usage,
    )


def test_model_list_is_what_the_sdk_lists(api: FakeAPI) -> None:
    body = GEMINI.model_list(["gemini-2.5-flash", "demo"], {"demo": "demo"})
    assert body == model_list(["gemini-2.5-flash", "demo"])
    api.body, api.status, api.content_type = orjson.dumps(body), 200, "application/json"
    models = list(api.client.models.list())
    assert [m.name for m in models] == ["models/gemini-2.5-flash", "models/demo"]
    assert models[0].supported_actions == ["generateContent", "streamGenerateContent"]
    assert api.requests[-1].url.path == "/v1beta/models"


def test_usage_both_ways() -> None:
    assert usage_from_gemini(
        {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 17,
            "toolUsePromptTokenCount": 1,
        }
    ) == Usage(10, 7, cache_read_input_tokens=4, reasoning_tokens=2)
    assert usage_from_gemini({"promptTokenCount": 3}) == Usage(3)
    assert usage_from_gemini({"thoughtsTokenCount": 2}) == Usage(
        output_tokens=2, reasoning_tokens=2
    )
    assert usage_from_gemini("x") is None
    assert gemini_usage(Usage()) == {
        "promptTokenCount": 0,
        "candidatesTokenCount": 0,
        "totalTokenCount": 0,
    }
    # more reasoning than output (a count from elsewhere): nothing goes negative
    assert gemini_usage(Usage(1, 2, reasoning_tokens=5)) == {
        "promptTokenCount": 1,
        "candidatesTokenCount": 0,
        "totalTokenCount": 6,
        "thoughtsTokenCount": 5,
    }
    usage = Usage(8, 9, cache_read_input_tokens=3, reasoning_tokens=4)
    assert usage_from_gemini(gemini_usage(usage)) == usage
    # what the SDK's type makes of it
    sdk = types.GenerateContentResponseUsageMetadata.model_validate(gemini_usage(usage))
    assert sdk.total_token_count == usage.total_tokens


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "code", "status"),
    [
        ("invalid_request", 400, "INVALID_ARGUMENT"),
        ("authentication", 401, "UNAUTHENTICATED"),
        ("permission", 403, "PERMISSION_DENIED"),
        ("not_found", 404, "NOT_FOUND"),
        ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
        ("cancelled", 499, "CANCELLED"),
        ("api_error", 500, "INTERNAL"),
        ("network", 502, "UNAVAILABLE"),
        ("overloaded", 503, "UNAVAILABLE"),
        ("timeout", 504, "DEADLINE_EXCEEDED"),
    ],
)
def test_errors_in_googles_shape(api: FakeAPI, category: Any, code: int, status: str) -> None:
    err = StreamError(category, "Something went wrong.")
    obj = {"error": {"code": code, "message": "Something went wrong.", "status": status}}
    assert GEMINI.error_object(err) == err.error_object("gemini") == obj
    assert GEMINI.http_status(err) == err.http_status("gemini") == code
    assert orjson.loads(err.to_response_body("gemini")) == obj
    assert err.to_sse_event("gemini") == b"data: " + orjson.dumps(obj) + b"\r\n\r\n"
    # read back, from the body of an HTTP error and from the in-band chunk
    again = StreamError.from_http_response(code, err.to_response_body("gemini"), provider="gemini")
    assert (again.type, again.status, again.message) == (
        category if code != 502 else "api_error",
        code,
        err.message,
    )
    inband = StreamError.from_provider_error(obj, provider="gemini")
    assert inband.status == code
    # the SDK raises it before the first byte, by status code
    api.body, api.status, api.content_type = (
        err.to_response_body("gemini"),
        code,
        "application/json",
    )
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    with pytest.raises(cls) as info:
        api.client.models.generate_content(model="m", contents="hi")
    assert (info.value.code, info.value.status, info.value.message) == (code, status, err.message)


def test_gemini_errors_keep_their_status() -> None:
    body = {"error": {"code": 400, "message": "Precondition.", "status": "FAILED_PRECONDITION"}}
    err = StreamError.from_http_response(400, orjson.dumps(body), provider="gemini")
    assert err.type == "invalid_request"
    assert GEMINI.error_object(err) == body
    # from another provider, the category's status
    other = StreamError.from_provider_error(body["error"], provider="openai")
    assert GEMINI.error_object(other)["error"]["status"] == "INVALID_ARGUMENT"
    # other shapes of the error: a status without a code, a code that is no HTTP status
    assert GEMINI.http_status(StreamError("overloaded", "x", status=200)) == 503
    assert GEMINI.error_object(StreamError("overloaded", "x", status=529))["error"]["code"] == 529
    # an Anthropic error rendered for a Gemini client
    anthropic = StreamError.from_provider_error(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        provider="anthropic",
    )
    assert GEMINI.error_object(anthropic) == {
        "error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}
    }
    assert ANTHROPIC_MESSAGES.error_object(err)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "line",
    [
        b": ping\n\n",
        b"event: message\n",
        b"id: 5\n",
        b"retry: 100\n\n",
        b'data:{"candidates":[]}\n\n',
    ],
)
def test_the_sdk_reads_nothing_but_data_lines(api: FakeAPI, line: bytes) -> None:
    """What a server of Gemini streams must not send: the SDK takes any line that does
    not start with ``data: `` for raw JSON and fails on it (comments used as keepalive
    pings, event names, ids and retry fields included), so our encoder writes only
    ``data: `` lines (checked by :func:`events_of` on every stream here)."""
    good = body_of([text_chunk("x", finish_reason="STOP")])
    assert [c.text for c in api.stream(good)] == ["x"]
    # blank lines are skipped: the protocol's heartbeat
    beats = GEMINI.heartbeat + good.replace(b"\r\n\r\n", b"\r\n\r\n" + GEMINI.heartbeat * 2)
    assert [c.text for c in api.stream(beats)] == ["x"]
    with pytest.raises(genai_errors.UnknownApiResponseError):
        api.stream(line + good)
    # our decoder, a standard SSE reader, takes all of them
    assert accumulate(line + good).text == "x"
