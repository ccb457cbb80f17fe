"""The OpenAI Responses API through the gateway, as its users meet it: the official
``openai`` SDK's ``responses`` calls against a real gateway in front of real scripted
upstreams of all three protocols (and the demo model), in every direction of
translation, with resumption in OpenAI's own terms on a resumable gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app

from .conftest import serve
from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-upstream-secret-123"
ROUTES = ["oa", "an", "rs"]  # chat completions, Anthropic Messages, Responses upstreams
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
    {"type": "function", "name": "get_time", "parameters": {"type": "object"}},
]


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()
    with serve(upstream_app(state)) as url:
        yield state, url


def start_gateway(url: str, **gateway: Any) -> Any:
    config = gateway_config(url, **gateway)
    config["models"]["paced"] = {"provider": "slowdemo", "model": "demo"}
    return serve(create_app(from_mapping(config)))


@pytest.fixture
def gateway(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Upstream, str]]:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    state, url = upstream
    with start_gateway(url) as gateway_url:
        yield state, gateway_url


@pytest.fixture
def resumable(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Upstream, str]]:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    state, url = upstream
    with start_gateway(url, resume="memory") as gateway_url:
        yield state, gateway_url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


# --- streams, whole replies, every upstream protocol ------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_streamed_events_from_every_upstream(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    events = list(client(url).responses.create(model=f"{route}/text", input="hi", stream=True))
    assert events[0].type == "response.created"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "".join(TEXT)
    assert sum(e.type == "response.output_text.delta" for e in events) == len(TEXT)
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.output_text == "".join(TEXT)
    assert last.response.usage is not None
    assert (last.response.usage.input_tokens, last.response.usage.output_tokens) == (11, 4)


@pytest.mark.parametrize("route", [*ROUTES, "demo"])
def test_stream_helper_and_whole_reply(gateway: tuple[Upstream, str], route: str) -> None:
    _, url = gateway
    model = "demo" if route == "demo" else f"{route}/text"
    # The demo model writes about max_output_tokens when given: here, its short default.
    limit: dict[str, Any] = {} if route == "demo" else {"max_output_tokens": 500}
    with client(url).responses.stream(model=model, input="hi", **limit) as stream:
        final = stream.get_final_response()
    assert final.status == "completed"
    # Translated replies get the gateway's ids; a Responses upstream's pass through.
    assert final.id.startswith("resp_") == (route != "rs")
    whole = client(url).responses.create(model=model, input="hi", **limit)
    assert whole.status == "completed" and whole.id.startswith("resp_")
    if route != "demo":
        assert final.output_text == whole.output_text == "".join(TEXT)
    else:
        assert len(final.output_text.split()) > 5


@pytest.mark.parametrize("route", ROUTES)
def test_function_calls_and_their_outputs_round_trip(
    gateway: tuple[Upstream, str], route: str
) -> None:
    state, url = gateway
    sdk = client(url)
    with sdk.responses.stream(model=f"{route}/tools", input="weather?", tools=TOOLS) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, c.call_id) for c in calls] == [
        ("get_weather", "call_a"),
        ("get_time", "call_b"),
    ]
    assert [c.arguments for c in calls] == ['{"city": "Paris"}', '{"tz": "CET"}']
    # The second turn carries the calls and their outputs back.
    items: list[Any] = [{"role": "user", "content": "weather?"}]
    items += [
        {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
        for c in calls
    ]
    items += [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} = 42"}
        for c in calls
    ]
    reply = sdk.responses.create(model=f"{route}/text", input=items, tools=TOOLS)
    assert reply.output_text == "".join(TEXT)
    protocol, body, _ = state.requests[-1]
    if protocol == "openai":
        tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
        assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
            ("call_a", "get_weather = 42"),
            ("call_b", "get_time = 42"),
        ]
        assert body["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    elif protocol == "anthropic":
        results = [
            block
            for m in body["messages"]
            for block in m["content"]
            if block["type"] == "tool_result"
        ]
        assert [(b["tool_use_id"], b["content"]) for b in results] == [
            ("call_a", "get_weather = 42"),
            ("call_b", "get_time = 42"),
        ]
    else:
        outputs = [i for i in body["input"] if i.get("type") == "function_call_output"]
        assert [(i["call_id"], i["output"]) for i in outputs] == [
            ("call_a", "get_weather = 42"),
            ("call_b", "get_time = 42"),
        ]


def test_chat_and_messages_clients_reach_a_responses_upstream(
    gateway: tuple[Upstream, str],
) -> None:
    state, url = gateway
    chunks = client(url).chat.completions.create(
        model="rs/text", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)
    assert state.requests[-1][0] == "responses"
    claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    with claude.messages.stream(
        model="rs/tools", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert [b.name for b in message.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    assert message.stop_reason == "tool_use"
    whole = client(url).chat.completions.create(
        model="rs/think", messages=[{"role": "user", "content": "x"}]
    )
    assert whole.choices[0].message.content == "".join(TEXT)


def test_errors_before_and_after_the_first_byte(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    sdk = client(url)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.responses.create(model="oa/ratelimit", input="x", stream=True)
    assert caught.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.responses.create(model="oa/text", input="x", previous_response_id="resp_abc")
    assert "previous_response_id" in str(bad.value)
    with (
        pytest.raises(openai.APIError, match="overloaded"),
        sdk.responses.stream(model="an/midfail", input="x") as stream,
    ):
        for _ in stream:
            pass
    with pytest.raises(openai.APIError, match="overloaded"):
        list(sdk.responses.create(model="rs/midfail", input="x", stream=True))


# --- a resumable gateway: resumption, retrieval, cancellation, continuation ---------------


def test_resume_with_starting_after_and_retrieve(resumable: tuple[Upstream, str]) -> None:
    _, url = resumable
    sdk = client(url)
    first: list[Any] = []
    stream = sdk.responses.create(model="paced", input="tell me", stream=True)
    for event in stream:
        first.append(event)
        if sum(e.type == "response.output_text.delta" for e in first) == 3:
            break
    stream.close()  # the connection drops mid-reply
    reply_id = first[0].response.id
    cut = first[-1].sequence_number
    rest = list(sdk.responses.retrieve(reply_id, stream=True, starting_after=cut))
    assert [e.sequence_number for e in rest] == list(range(cut + 1, cut + 1 + len(rest)))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in [*first, *rest] if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text and len(text.split()) > 5
    stored = sdk.responses.retrieve(reply_id)
    assert stored.id == reply_id and stored.status == "completed"
    assert stored.output_text == text


def test_cancel_stops_a_running_reply(resumable: tuple[Upstream, str]) -> None:
    _, url = resumable
    sdk = client(url)
    stream = sdk.responses.create(model="oa/slow", input="x", stream=True)
    events = iter(stream)
    created = next(events)
    reply_id = created.response.id
    next(e for e in events if e.type == "response.output_text.delta")
    cancelled = sdk.responses.cancel(reply_id)
    assert cancelled.id == reply_id and cancelled.status == "cancelled"
    with pytest.raises(openai.APIError, match="cancelled"):
        for _ in events:
            pass
    assert sdk.responses.retrieve(reply_id).status == "failed"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_0000000000000000")


def test_previous_response_id_continues_the_conversation(
    resumable: tuple[Upstream, str],
) -> None:
    state, url = resumable
    sdk = client(url)
    with sdk.responses.stream(model="oa/text", input="first question") as stream:
        first = stream.get_final_response()
    with sdk.responses.stream(
        model="oa/text", input="second question", previous_response_id=first.id
    ) as stream:
        second = stream.get_final_response()
    assert second.output_text == "".join(TEXT)
    _, body, _ = state.requests[-1]
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "first question"),
        ("assistant", "".join(TEXT)),
        ("user", "second question"),
    ]
    with pytest.raises(openai.BadRequestError, match="not found"):
        sdk.responses.create(model="oa/text", input="x", previous_response_id="resp_ffff")


def test_chat_page_speaks_every_protocol(browser: Any) -> None:
    config = from_mapping(
        {
            "providers": {"paced": {"type": "demo", "time_per_token": 0.005}},
            "models": {"paced": {"provider": "paced", "model": "demo"}},
        }
    )
    with serve(create_app(config)) as url:
        page = browser.new_page()
        try:
            page.goto(url + "/")
            for protocol in ("openai", "anthropic", "responses", "agent"):
                page.select_option("#protocol", protocol)
                wanted = "assistant" if protocol == "agent" else "paced"
                page.wait_for_selector(f"#agent option[value={wanted}]", state="attached")
                page.select_option("#agent", wanted)
                page.fill("#message", f"a story, over {protocol}")
                page.click("#send")
                done = page.locator(".assistant[data-state=done]")
                done.nth(page.locator(".user").count() - 1).wait_for(timeout=15_000)
            replies = page.locator(".assistant .text").all_inner_texts()
            assert len(replies) == 4 and all(len(r.split()) > 5 for r in replies), replies
            assert page.locator(".assistant.error").count() == 0
        finally:
            page.close()
