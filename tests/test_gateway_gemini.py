"""Gemini through the gateway, as its users meet it: Google's ``google-genai`` SDK (and
the ``@google/genai`` Node SDK) against a real gateway in front of real scripted
upstreams of every protocol and the demo model, and the OpenAI and Anthropic SDKs in
front of a Gemini upstream: every direction of translation, and pass-through."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors, types

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app

from .conftest import JS, serve
from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-upstream-secret-123"
CLIENT_KEY = "tw-gemini-client-key"
ROUTES = ["oa", "an", "rs", "gm"]  # chat completions, Messages, Responses, Gemini upstreams
SCENARIOS = ["text", "tools", "think", "late", "midfail", "ratelimit"]
TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather",
                parameters=types.Schema(
                    type=types.Type.OBJECT, properties={"city": types.Schema(type="STRING")}
                ),
            ),
            types.FunctionDeclaration(
                name="get_time",
                parameters=types.Schema(
                    type=types.Type.OBJECT, properties={"tz": types.Schema(type="STRING")}
                ),
            ),
        ]
    )
]
USER_X = [{"role": "user", "content": "x"}]
GEMINI_STREAM = JS / "gemini_stream.mjs"
NODE_TIMEOUT = 120  # seconds: a bound for one Node run, not a pace


def config(url: str, **gateway: Any) -> dict[str, Any]:
    """The test configuration, with names a Gemini client can put in its path (one
    segment: ``oa-text`` for ``oa``'s model ``text``)."""
    cfg = gateway_config(url, **gateway)
    cfg["models"].update(
        {f"{p}-{m}": {"provider": p, "model": m} for p in ROUTES for m in SCENARIOS}
    )
    return cfg


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
    # Heartbeats every 0.2 s: the "late" upstreams are silent for longer than that.
    with serve(create_app(from_mapping(config(url, ping=0.2)))) as gateway_url:
        yield state, gateway_url


def client(url: str, key: str = "unused") -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=url,
            api_version="v1beta",
            timeout=30_000,
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


def text_of(chunks: list[types.GenerateContentResponse]) -> str:
    return "".join(
        part.text
        for c in chunks
        for part in (c.candidates[0].content.parts or [] if c.candidates else [])
        if part.text and not part.thought
    )


# --- a Gemini client, every upstream -------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_streamed_text_and_usage_from_every_upstream(
    gateway: tuple[Upstream, str], route: str
) -> None:
    state, url = gateway
    sdk = client(url)
    chunks = list(sdk.models.generate_content_stream(model=f"{route}-text", contents="hi"))
    assert text_of(chunks) == "".join(TEXT)
    # A chunk per piece of text, as it came: nothing was buffered on the way.
    assert [c.text for c in chunks if c.text] == TEXT
    last = chunks[-1]
    assert last.candidates is not None
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    usage = last.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (11, 4)
    assert usage.total_token_count == 15
    assert len({c.response_id for c in chunks}) == 1 and chunks[0].response_id
    assert last.model_version == "text-upstream"  # the upstream's name for the model
    protocol, body, headers = state.requests[-1]
    assert protocol == {"oa": "openai", "an": "anthropic", "rs": "responses"}.get(route, "gemini")
    if route == "gm":
        # Gemini's way: model in the path, key in x-goog-api-key, contents in the body.
        assert headers["x-goog-api-key"] == UPSTREAM_KEY
        assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


@pytest.mark.parametrize("route", [*ROUTES, "demo"])
def test_whole_reply_from_every_upstream(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    model = "demo" if route == "demo" else f"{route}-text"
    sdk = client(url)
    reply = sdk.models.generate_content(model=model, contents="hi")
    assert reply.candidates is not None
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.usage_metadata is not None and reply.usage_metadata.prompt_token_count
    if route == "demo":
        assert reply.text is not None and len(reply.text.split()) > 5
    else:
        assert reply.text == "".join(TEXT)
        assert reply.usage_metadata.candidates_token_count == 4


def test_the_demo_model_streams_to_a_gemini_client(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    sdk = client(url)
    chunks = list(
        sdk.models.generate_content_stream(
            model="demo",
            contents="Tell me a fable.",
            config=types.GenerateContentConfig(max_output_tokens=60),
        )
    )
    assert len([c for c in chunks if c.text]) > 5
    assert len(text_of(chunks).split()) > 5
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage.candidates_token_count and usage.prompt_token_count
    assert state.requests == []  # the demo model runs inside the gateway


@pytest.mark.parametrize("route", ROUTES)
def test_function_calls_and_their_results_round_trip(
    gateway: tuple[Upstream, str], route: str
) -> None:
    state, url = gateway
    sdk = client(url)
    settings = types.GenerateContentConfig(tools=TOOLS)
    question = types.Content(role="user", parts=[types.Part(text="weather?")])
    chunks = list(
        sdk.models.generate_content_stream(
            model=f"{route}-tools", contents=[question], config=settings
        )
    )
    calls = [call for c in chunks for call in c.function_calls or []]
    assert [(c.name, c.args, c.id) for c in calls] == [
        ("get_weather", {"city": "Paris"}, "call_a"),
        ("get_time", {"tz": "CET"}, "call_b"),
    ]
    assert text_of(chunks) == "Let me check."
    # The second turn: the model's calls, then their results.
    answered = [
        question,
        types.Content(
            role="model",
            parts=[types.Part(text="Let me check.")]
            + [types.Part(function_call=call) for call in calls],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        id=call.id, name=call.name, response={"output": f"{call.name} = 42"}
                    )
                )
                for call in calls
            ],
        ),
    ]
    reply = sdk.models.generate_content(model=f"{route}-text", contents=answered, config=settings)
    assert reply.text == "".join(TEXT)
    protocol, body, _ = state.requests[-1]
    expected = [("call_a", "get_weather = 42"), ("call_b", "get_time = 42")]
    if protocol == "openai":
        tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
        assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == expected
        names = [c["function"]["name"] for c in body["messages"][1]["tool_calls"]]
        assert names == ["get_weather", "get_time"]
    elif protocol == "anthropic":
        results = [
            block
            for m in body["messages"]
            for block in m["content"]
            if block["type"] == "tool_result"
        ]
        assert [(b["tool_use_id"], b["content"]) for b in results] == expected
    elif protocol == "responses":
        outputs = [i for i in body["input"] if i.get("type") == "function_call_output"]
        assert [(i["call_id"], i["output"]) for i in outputs] == expected
    else:
        responses = [
            part["functionResponse"]
            for content in body["contents"]
            for part in content["parts"]
            if "functionResponse" in part
        ]
        assert [(r["id"], r["name"], r["response"]) for r in responses] == [
            ("call_a", "get_weather", {"output": "get_weather = 42"}),
            ("call_b", "get_time", {"output": "get_time = 42"}),
        ]
        assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == [
            "get_weather",
            "get_time",
        ]


@pytest.mark.parametrize("route", ["an", "gm"])
def test_thoughts_reach_a_gemini_client(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    sdk = client(url)
    chunks = list(sdk.models.generate_content_stream(model=f"{route}-think", contents="x"))
    parts = [p for c in chunks if c.candidates for p in c.candidates[0].content.parts or []]
    assert "".join(p.text or "" for p in parts if p.thought) == "Pondering."
    # The SDK reads a signature as base64: "sig" as it went on the wire.
    signatures = [p.thought_signature for p in parts if p.thought_signature]
    assert [base64.b64encode(s).rstrip(b"=") for s in signatures] == [b"sig"]
    assert text_of(chunks) == "".join(TEXT)


def test_model_list(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    sdk = client(url)
    names = [m.name for m in sdk.models.list()]
    assert "models/demo" in names and "models/gm-text" in names
    assert names == sorted(names)


# --- errors, heartbeats, keys ---------------------------------------------------------------


def test_errors_before_and_after_the_first_byte(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    sdk = client(url)
    for route in ROUTES:
        with pytest.raises(errors.ClientError) as caught:
            list(sdk.models.generate_content_stream(model=f"{route}-ratelimit", contents="x"))
        assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED"), route
        assert "slow down" in str(caught.value.message)
    with pytest.raises(errors.ClientError) as missing:
        sdk.models.generate_content(model="nope", contents="x")
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    # An error in the middle of a stream: the text before it arrives, then the SDK raises.
    for route in ("an", "gm"):
        seen: list[str] = []
        with pytest.raises(errors.APIError, match="overloaded") as late:
            for chunk in sdk.models.generate_content_stream(model=f"{route}-midfail", contents="x"):
                seen.append(chunk.text or "")
        assert "".join(seen) == "Hel" and late.value.code == 503, route
    # What the gateway does not serve is answered in Gemini's shape too.
    with pytest.raises(errors.ClientError) as unknown:
        sdk.models.get(model="demo")
    assert (unknown.value.code, unknown.value.status) == (404, "NOT_FOUND")
    wrong = httpx2.get(f"{url}/v1beta/models/demo:streamGenerateContent", timeout=30)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == 405
    with pytest.raises(errors.ClientError) as unsupported:
        sdk.models.count_tokens(model="demo", contents="x")
    assert unsupported.value.code == 400 and "countTokens" in str(unsupported.value.message)
    with pytest.raises(errors.ClientError) as bad:
        sdk.models.generate_content(
            model="demo",
            contents="x",
            config=types.GenerateContentConfig(temperature=7),
        )
    assert bad.value.code == 400 and "temperature" in str(bad.value.message)


@pytest.mark.parametrize("route", ["oa", "gm"])
def test_heartbeats_are_lines_the_sdk_skips(gateway: tuple[Upstream, str], route: str) -> None:
    """The SDK takes every line but a blank one for data (an SSE comment would make it
    raise): the gateway's heartbeats on Gemini streams are blank lines."""
    _, url = gateway
    sdk = client(url)
    chunks = list(sdk.models.generate_content_stream(model=f"{route}-late", contents="x"))
    assert text_of(chunks) == "".join(TEXT)
    raw = httpx2.post(
        f"{url}/v1beta/models/{route}-late:streamGenerateContent?alt=sse",
        json={"contents": [{"parts": [{"text": "x"}]}]},
        timeout=30,
    ).content
    assert b": ping" not in raw
    assert raw.count(b"\n\n\n") + raw.count(b"\r\n\r\n\n") >= 2  # beats between events
    # Other protocols' streams keep their comment heartbeats.
    other = httpx2.post(
        f"{url}/v1/chat/completions",
        json={"model": f"{route}-late", "messages": USER_X, "stream": True},
        timeout=30,
    ).content
    assert b": ping\n" in other


def test_keys_where_gemini_clients_send_them(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("TW_TEST_CLIENT_KEYS", CLIENT_KEY)
    _, up = upstream
    cfg = config(up, api_keys_env="TW_TEST_CLIENT_KEYS")
    with serve(create_app(from_mapping(cfg))) as url:
        # The SDK sends x-goog-api-key.
        good = client(url, CLIENT_KEY)
        assert good.models.generate_content(model="gm-text", contents="x").text
        assert [m.name for m in good.models.list()]
        wrong = client(url, "wrong")
        with pytest.raises(errors.ClientError) as refused:
            wrong.models.generate_content(model="gm-text", contents="x")
        assert (refused.value.code, refused.value.status) == (401, "UNAUTHENTICATED")
        with pytest.raises(errors.ClientError):
            list(wrong.models.list())
        # REST examples put it in ?key=; a bearer token does as well.
        body = {"contents": [{"parts": [{"text": "x"}]}]}
        path = "/v1beta/models/gm-text:generateContent"
        with httpx2.Client(base_url=url, timeout=30) as http:
            assert http.post(f"{path}?key={CLIENT_KEY}", json=body).status_code == 200
            bearer = {"authorization": f"Bearer {CLIENT_KEY}"}
            assert http.post(path, json=body, headers=bearer).status_code == 200
            assert http.post(path, json=body).json()["error"]["status"] == "UNAUTHENTICATED"
            # ?key= is Gemini's: the other protocols' endpoints do not take it.
            chat = {"model": "gm-text", "messages": [{"role": "user", "content": "x"}]}
            assert http.post(f"/v1/chat/completions?key={CLIENT_KEY}", json=chat).status_code == 401


def test_resumable_gateway_streams_gemini_without_event_ids(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK would take an ``id:`` line for data: on a resumable gateway, Gemini
    streams are plain (chat completions streams still carry their ids)."""
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    _, up = upstream
    with serve(create_app(from_mapping(config(up, resume="memory")))) as url:
        sdk = client(url)
        chunks = list(sdk.models.generate_content_stream(model="oa-text", contents="x"))
        assert text_of(chunks) == "".join(TEXT)
        raw = httpx2.post(
            f"{url}/v1beta/models/gm-text:streamGenerateContent?alt=sse",
            json={"contents": [{"parts": [{"text": "x"}]}]},
            headers={"last-event-id": "whatever-3"},  # not a resumption here
            timeout=30,
        )
        assert raw.status_code == 200 and b"\nid:" not in b"\n" + raw.content
        assert b"Hello" in raw.content
        chat = httpx2.post(
            f"{url}/v1/chat/completions",
            json={"model": "gm-text", "messages": USER_X, "stream": True},
            timeout=30,
        )
        assert chat.content.startswith(b"id: ")


# --- the other protocols' SDKs, a Gemini upstream --------------------------------------------


def test_openai_sdk_reaches_a_gemini_upstream(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model="gm/text",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 4)
    protocol, body, headers = state.requests[-1]
    assert protocol == "gemini" and headers["x-goog-api-key"] == UPSTREAM_KEY
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    with sdk.chat.completions.stream(
        model="gm/tools",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in ("get_weather", "get_time")
        ],
    ) as stream:
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    assert message.tool_calls is not None
    assert [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls
    ] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    whole = sdk.chat.completions.create(
        model="gm/think", messages=[{"role": "user", "content": "x"}]
    )
    assert whole.choices[0].message.content == "".join(TEXT)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model="gm/ratelimit", messages=[{"role": "user", "content": "x"}], stream=True
        )


def test_anthropic_sdk_reaches_a_gemini_upstream(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    with sdk.messages.stream(
        model="gm/tools",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {"name": n, "input_schema": {"type": "object"}} for n in ("get_weather", "get_time")
        ],
    ) as stream:
        message = stream.get_final_message()
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]
    assert message.stop_reason == "tool_use"
    assert state.requests[-1][1]["generationConfig"]["maxOutputTokens"] == 50
    with sdk.messages.stream(
        model="gm/think", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        thought = stream.get_final_message()
    assert [b.type for b in thought.content] == ["thinking", "text"]
    assert thought.content[0].type == "thinking" and thought.content[0].thinking == "Pondering."
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded"),
        sdk.messages.stream(
            model="gm/midfail", max_tokens=50, messages=[{"role": "user", "content": "x"}]
        ) as failing,
    ):
        failing.get_final_message()


def test_responses_sdk_reaches_a_gemini_upstream(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    events = list(sdk.responses.create(model="gm/text", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "".join(TEXT)
    with sdk.responses.stream(
        model="gm/tools",
        input="weather?",
        tools=[
            {"type": "function", "name": n, "parameters": {"type": "object"}}
            for n in ("get_weather", "get_time")
        ],
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]


# --- Google's Node SDK ------------------------------------------------------------------------


def gemini_stream(node: str, url: str, model: str, *args: str) -> list[dict[str, Any]]:
    """Run ``gemini_stream.mjs``; its JSON lines, the finish last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
    done = subprocess.run(
        [node, str(GEMINI_STREAM), url, model, *args],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, f"gemini_stream.mjs exited {done.returncode}\n{output}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert lines and lines[-1]["type"] == "finish", output
    return lines


@pytest.mark.parametrize("route", ["oa", "gm"])
def test_node_sdk_streams_through_the_gateway(
    node: str, gateway: tuple[Upstream, str], route: str
) -> None:
    _, url = gateway
    # "late": silent for longer than the heartbeat interval.
    *chunks, finish = gemini_stream(node, url, f"{route}-late")
    assert [c["text"] for c in chunks if c["text"]] == TEXT
    assert finish["text"] == "".join(TEXT) and finish["finishReason"] == "STOP"
    assert finish["usage"]["promptTokenCount"] == 11
    assert finish["usage"]["candidatesTokenCount"] == 4
    assert finish["modelVersion"] == "late-upstream" and finish["responseId"]


def test_node_sdk_function_call_round_trip(node: str, gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    lines = gemini_stream(node, url, "an-tools", "weather?", "--tool", "an-text")
    calls = [call for line in lines if line["type"] == "chunk" for call in line["functionCalls"]]
    assert [(c["name"], c["args"]) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert [line["name"] for line in lines if line["type"] == "tool-result"] == [
        "get_weather",
        "get_time",
    ]
    assert lines[-1]["text"] == "".join(TEXT)
    protocol, body, _ = state.requests[-1]
    assert protocol == "anthropic"
    results = [b for m in body["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert [b["tool_use_id"] for b in results] == ["call_a", "call_b"]
    assert "sunny and 21 C in Paris" in results[0]["content"]


# --- tokenwire's own client -------------------------------------------------------------------


async def test_tokenwire_client_decodes_gemini_streams(gateway: tuple[Upstream, str]) -> None:
    from tokenwire.client import astream_chat
    from tokenwire.llm import StreamDecoder, accumulate, detect_protocol
    from tokenwire.sse import decode

    _, url = gateway
    endpoint = f"{url}/v1beta/models/gm-tools:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}]}
    # Told by its events ("auto"), as any other protocol's stream.
    async with astream_chat(endpoint, json=body) as stream:
        deltas = [delta async for delta in stream]
    assert stream.decoder.protocol == "gemini" and deltas
    message = stream.message
    assert message.text == "Let me check."
    assert [(c.id, c.name, c.arguments) for c in message.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Paris"}'),
        ("call_b", "get_time", '{"tz":"CET"}'),
    ]
    assert message.finish_reason == "tool_calls"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 20)
    raw = httpx2.post(endpoint.replace("gm-tools", "oa-text"), json=body, timeout=30).content
    events = list(decode(raw))
    assert detect_protocol(events[0]) == "gemini"
    assert accumulate(raw).text == accumulate(raw, protocol="gemini").text == "".join(TEXT)
    decoder = StreamDecoder("gemini")
    for event in events:
        decoder.feed(event)
    decoder.close()
    assert decoder.message.text == "".join(TEXT) and decoder.message.finish_reason == "stop"


async def test_an_agent_over_a_gemini_provider(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenwire.agent import Agent
    from tokenwire.options import StreamOptions

    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    state, url = upstream
    cfg = config(url)
    cfg["agents"]["gem"] = {"provider": "gm", "model": "text", "system": "Be brief."}
    agent = Agent.from_config(from_mapping(cfg), "gem")
    options = StreamOptions(max_tokens=50, stop_sequences=["zzz"])
    pieces = [piece async for piece in agent.chat_stream("hi", options)]
    assert "".join(pieces) == "".join(TEXT)
    protocol, body, headers = state.requests[-1]
    assert protocol == "gemini" and headers["x-goog-api-key"] == UPSTREAM_KEY
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["generationConfig"]["maxOutputTokens"] == 50
    assert body["generationConfig"]["stopSequences"] == ["zzz"]


def test_sdk_errors_are_categorized_by_their_status() -> None:
    """google-genai's exceptions carry the status and body: from_exception reads them."""
    from tokenwire.errors import StreamError

    for status, category in [
        (429, "rate_limit"),
        (401, "authentication"),
        (400, "invalid_request"),
    ]:
        exc = errors.APIError(status, {"error": {"code": status, "message": "m", "status": "X"}})
        err = StreamError.from_exception(exc)
        assert (err.type, err.status) == (category, status)


def test_provider_slash_model_names_reach_their_route(gateway: tuple[Upstream, str]) -> None:
    """``PROVIDER/MODEL`` goes in the path as ``models/oa/text``: one route, not a 404."""
    state, url = gateway
    gemini = client(url)  # kept: the SDK closes its connection with the client object
    chunks = list(gemini.models.generate_content_stream(model="oa/text", contents="hi"))
    assert text_of(chunks) == "".join(TEXT)
    assert state.requests[-1][0] == "openai"
