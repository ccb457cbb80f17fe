"""Requests checked as the real APIs check them, unknown fields forwarded or named,
framework errors and internal failures answered in the caller's protocol: the official
SDKs against a real gateway in front of a real upstream."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tokenwire.config import from_mapping
from tokenwire.gateway import app as gateway_app
from tokenwire.gateway import create_app

from .conftest import serve
from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app
from .server_helpers import wait_for

pytestmark = pytest.mark.integration

HIDDEN = re.compile(r"Internal server error\. \(reference ([0-9a-f]{12})\)")
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Upstream, str]]:
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", "sk-upstream-secret-123")
    state = Upstream()
    with serve(upstream_app(state)) as upstream_url:
        config = gateway_config(upstream_url)
        config["models"]["capped"] = {"provider": "oa", "model": "text", "max_output_tokens": 100}
        with serve(create_app(from_mapping(config))) as url:
            yield state, url


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def claude(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


# --- types and ranges, as the APIs check them --------------------------------------------

OPENAI_BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"stream": "false"}, "stream", "must be a boolean, not a string ('false')"),
    ({"stream": 1}, "stream", "must be a boolean, not a number (1)"),
    ({"stream": {}}, "stream", "must be a boolean, not an object"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when stream"),
    (
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
        "boolean",
    ),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_tokens": "5"}, "max_tokens", "must be an integer"),
    ({"max_completion_tokens": 10**6, "model": "demo"}, "max_completion_tokens", "too large"),
    ({"temperature": 2.5}, "temperature", "from 0 to 2"),
    ({"top_p": "high"}, "top_p", "must be a number"),
    ({"n": 2}, "n", "only n=1"),
    ({"n": "1"}, "n", "must be an integer"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": 7}, "stop", "string or a list of strings"),
    ({"frequency_penalty": 3}, "frequency_penalty", "from -2 to 2"),
    ({"tools": {"type": "function"}}, "tools", "must be a list"),
    (
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tools[0].function.name",
        "must match",
    ),
    ({"tool_choice": "required"}, "tool_choice", "only allowed when tools are given"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one of"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "is required"),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        "messages[0].content[0].type",
        "must be text or image_url",
    ),
]


@pytest.mark.parametrize(("fields", "param", "text"), OPENAI_BAD, ids=[p for _, p, _ in OPENAI_BAD])
def test_openai_sdk_gets_400_naming_the_parameter(
    gateway: tuple[Upstream, str], fields: dict[str, Any], param: str, text: str
) -> None:
    state, url = gateway
    body: dict[str, Any] = {"model": "oa/text", "messages": USER, **fields}
    before = len(state.requests)
    with pytest.raises(openai.BadRequestError) as info:
        oai(url).chat.completions.create(
            model=body.pop("model"), messages=body.pop("messages"), extra_body=body
        )
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert text in error["message"], error["message"]
    assert len(state.requests) == before  # nothing reached the upstream


ANTHROPIC_BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"stream": "false"}, "stream", "must be a boolean"),
    ({"max_tokens": 9000, "model": "demo"}, "max_tokens", "too large: 9000"),
    ({"max_tokens": -1}, "max_tokens", "at least 1"),
    ({"temperature": 1.5}, "temperature", "from 0 to 1"),
    ({"stop_sequences": "END"}, "stop_sequences", "must be a list"),
    ({"tool_choice": "auto"}, "tool_choice", "must be an object"),
    ({"tool_choice": {"type": "any"}}, "tool_choice", "only allowed when tools are given"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema", "is required"),
    ({"metadata": {"user_id": "u", "team": "x"}}, "metadata", "only user_id"),
    (
        {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 100}},
        "thinking.budget_tokens",
        "at least 1024",
    ),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "user or assistant"),
    ({"top_k": -3}, "top_k", "at least 0"),
]


@pytest.mark.parametrize(
    ("fields", "param", "text"), ANTHROPIC_BAD, ids=[p for _, p, _ in ANTHROPIC_BAD]
)
def test_anthropic_sdk_gets_400_naming_the_parameter(
    gateway: tuple[Upstream, str], fields: dict[str, Any], param: str, text: str
) -> None:
    _, url = gateway
    body: dict[str, Any] = {"model": "an/text", "messages": USER, "max_tokens": 50, **fields}
    with pytest.raises(anthropic.BadRequestError) as info:
        claude(url).messages.create(
            model=body.pop("model"),
            messages=body.pop("messages"),
            max_tokens=body.pop("max_tokens"),
            extra_body=body,
        )
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"] or param.split(".")[0] in error["error"]["message"]
    assert text in error["error"]["message"], error["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": 1}, "stream"),
        ({"max_output_tokens": 10}, "max_output_tokens"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"truncation": "sometimes"}, "truncation"),
    ],
)
def test_responses_sdk_gets_400_naming_the_parameter(
    gateway: tuple[Upstream, str], fields: dict[str, Any], param: str
) -> None:
    _, url = gateway
    with pytest.raises(openai.BadRequestError) as info:
        oai(url).responses.create(model="rs/text", input="hi", extra_body=fields)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == param


def test_max_tokens_within_the_routes_limit_is_served(gateway: tuple[Upstream, str]) -> None:
    _, url = gateway
    client = oai(url)
    reply = client.chat.completions.create(model="capped", messages=USER, max_tokens=100)
    assert reply.choices[0].message.content == "".join(TEXT)
    with pytest.raises(openai.BadRequestError, match=r"too large: 101.*at most 100"):
        client.chat.completions.create(model="capped", messages=USER, max_tokens=101)


# --- unknown fields ---------------------------------------------------------------------


def test_vendor_extensions_reach_a_same_protocol_upstream(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    extensions = {"top_k": 20, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": [1]}}
    raw = oai(url).chat.completions.with_raw_response.create(
        model="oa/text", messages=USER, stream=True, extra_body=extensions, user="u-1"
    )
    assert "x-tokenwire-dropped-params" not in raw.headers
    list(raw.parse())
    _, body, _ = state.requests[-1]
    assert {k: body[k] for k in extensions} == extensions and body["user"] == "u-1"
    claude(url).messages.create(
        model="an/text", messages=USER, max_tokens=20, extra_body={"top_k": 3, "vendor": "v"}
    )
    _, body, _ = state.requests[-1]
    assert body["top_k"] == 3 and body["vendor"] == "v"


def test_translated_routes_name_what_they_drop(gateway: tuple[Upstream, str]) -> None:
    state, url = gateway
    raw = oai(url).chat.completions.with_raw_response.create(
        model="an/text", messages=USER, extra_body={"repetition_penalty": 1.1}, user="u-1"
    )
    assert raw.headers["x-tokenwire-dropped-params"] == "repetition_penalty, user"
    assert raw.parse().choices[0].message.content == "".join(TEXT)
    _, body, _ = state.requests[-1]
    assert "repetition_penalty" not in body and "user" not in body
    with claude(url).messages.with_streaming_response.create(
        model="oa/text", messages=USER, max_tokens=20, stream=True, extra_body={"top_k": 3}
    ) as streamed:
        assert streamed.headers["x-tokenwire-dropped-params"] == "top_k"


@pytest.mark.parametrize(
    "fields", [{"logprobs": True}, {"top_logprobs": 3, "logprobs": True}, {"logit_bias": {"1": 5}}]
)
def test_translation_refuses_what_would_change_the_reply(
    gateway: tuple[Upstream, str], fields: dict[str, Any]
) -> None:
    state, url = gateway
    before = len(state.requests)
    with pytest.raises(openai.BadRequestError, match="cannot be carried") as info:
        oai(url).chat.completions.create(model="an/text", messages=USER, extra_body=fields)
    assert isinstance(info.value.body, dict) and info.value.body["param"] in fields
    assert len(state.requests) == before
    # logprobs: false loses nothing, and passes.
    oai(url).chat.completions.create(model="an/text", messages=USER, logprobs=False)


# --- 404 and 405 in the caller's protocol ---------------------------------------------


def test_unknown_paths_and_methods_answer_in_the_callers_protocol(
    gateway: tuple[Upstream, str],
) -> None:
    _, url = gateway
    with pytest.raises(openai.NotFoundError) as found:
        oai(url).fine_tuning.jobs.retrieve("ftjob-1")
    assert isinstance(found.value.body, dict)
    assert found.value.body["type"] == "not_found_error"
    assert "GET /v1/fine_tuning/jobs/ftjob-1" in found.value.body["message"]
    # An Anthropic client's endpoint the gateway lacks: the Anthropic SDK's own error.
    with pytest.raises(anthropic.NotFoundError) as counted:
        claude(url).messages.count_tokens(model="an/text", messages=USER)  # type: ignore[arg-type]
    assert isinstance(counted.value.body, dict) and counted.value.body["type"] == "error"
    assert counted.value.body["error"]["type"] == "not_found_error"
    wrong = httpx.get(url + "/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.headers["content-type"] == "application/json"
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    told = httpx.put(url + "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert told.status_code == 405 and told.json()["type"] == "error"
    assert set(told.headers["allow"].split(", ")) == {"GET", "HEAD"}
    generic = httpx.post(url + "/chat/stream")
    assert generic.status_code == 405 and generic.json()["type"] == "invalid_request"


# --- the access log says why ------------------------------------------------------------


def test_access_log_says_why_a_request_failed(
    gateway: tuple[Upstream, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = gateway
    caplog.set_level(logging.INFO, logger="tokenwire.gateway.access")
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(openai.BadRequestError):
        oai(url).chat.completions.create(
            model="oa/text", messages=USER, extra_body={"stream": secret}
        )
    line = json.loads(caplog.records[-1].getMessage())
    assert line["outcome"] == "error:invalid_request" and line["status"] == 400
    error = line["error"]
    assert error["type"] == "invalid_request" and error["param"] == "stream"
    assert "must be a boolean" in error["message"]
    assert secret not in caplog.text and "sk-[redacted]" in error["message"]
    long_model = "m" * 5000
    with pytest.raises(openai.NotFoundError):
        oai(url).chat.completions.create(model=long_model, messages=USER)
    line = json.loads(caplog.records[-1].getMessage())
    assert line["error"]["param"] == "model" and len(line["error"]["message"]) <= 303


# --- internal failures: a reference, not the exception's text ---------------------------


class _Exploding:
    """A provider with a bug: it raises a plain exception before or while streaming."""

    name = "exploding"
    protocol = None
    secret = None

    def __init__(self, when: str) -> None:
        self.when = when

    async def open(self, request: Any, *, raw: bool = False) -> Any:
        if self.when == "before":
            raise RuntimeError("provider exploded at db.internal:5432")

        async def items() -> Any:
            from tokenwire.llm.model import TextDelta

            yield None, [TextDelta("partial")]
            raise RuntimeError("provider exploded at db.internal:5432")

        return items()

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("when", ["before", "during"])
def test_internal_errors_are_told_by_reference(
    when: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gateway_app, "make_provider", lambda *a, **k: _Exploding(when))
    caplog.set_level(logging.ERROR, logger="tokenwire.errors")
    with serve(create_app(from_mapping({}))) as url:
        client = oai(url)
        if when == "before":
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model="demo", messages=USER, stream=True)
            message = str(info.value.body["message"])  # type: ignore[index]
        else:
            seen = []
            with pytest.raises(openai.APIError) as info:
                for chunk in client.chat.completions.create(
                    model="demo", messages=USER, stream=True
                ):
                    seen.append(chunk.choices[0].delta.content if chunk.choices else None)
            assert "partial" in seen
            message = info.value.message
        with pytest.raises(anthropic.APIStatusError) as claude_info:
            claude(url).messages.create(model="demo", messages=USER, max_tokens=10)
    assert "exploded" not in message and "db.internal" not in message
    reference = HIDDEN.search(message)
    assert reference is not None
    logged = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert len(logged) == 1 and "db.internal" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert "exploded" not in str(claude_info.value)


def test_expose_errors_tells_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_app, "make_provider", lambda *a, **k: _Exploding("during"))
    config = from_mapping({"gateway": {"expose_errors": True}})
    with (
        serve(create_app(config)) as url,
        pytest.raises(openai.APIError, match="provider exploded"),
    ):
        for _ in oai(url).chat.completions.create(model="demo", messages=USER, stream=True):
            pass


@pytest.mark.parametrize("stream", [True, False])
def test_an_error_inside_the_upstream_stream_counts_once(
    gateway: tuple[Upstream, str], caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    _, url = gateway
    caplog.set_level(logging.INFO, logger="tokenwire.gateway.access")

    def errors() -> float:
        for line in httpx.get(url + "/metrics").text.splitlines():
            if line.startswith('tokenwire_errors_total{category="overloaded",upstream="an"}'):
                return float(line.split()[-1])
        return 0.0

    before = errors()
    with pytest.raises(anthropic.APIStatusError):
        if stream:
            for _ in claude(url).messages.create(
                model="an/midfail", messages=USER, max_tokens=20, stream=True
            ):
                pass
        else:
            claude(url).messages.create(model="an/midfail", messages=USER, max_tokens=20)
    assert errors() == before + 1  # counted as the error event passed, before the client saw it

    def failed_line() -> dict[str, Any] | None:
        for record in caplog.records:
            line = json.loads(record.getMessage())
            if line["model"] == "an/midfail":
                return line  # type: ignore[no-any-return]
        return None

    assert wait_for(lambda: failed_line() is not None)  # the line is written as the stream ends
    line = failed_line()
    assert line is not None and line["outcome"] == "error:overloaded"
    assert line["error"]["type"] == "overloaded"
