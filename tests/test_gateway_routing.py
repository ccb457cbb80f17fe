"""Routes with several deployments (:mod:`tokenwire.gateway.routing`), end to end: the
official SDKs of every client protocol (OpenAI chat completions, Anthropic Messages, the
OpenAI Responses API, Gemini), streaming and not, against a real gateway in front of a
scripted upstream (``tests/routing_helpers.py``) that fails in every way an upstream
does, before and after the first token.

What the client must see: one reply with the whole fable, once, with one finish reason,
whatever happened upstream; or, where the reply cannot be saved, the error its protocol
has for it. The access log, ``/metrics`` and what the upstream received tell the rest.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tokenwire.config import from_mapping
from tokenwire.gateway import create_app
from tokenwire.sse import ServerSentEvent, SSEDecoder

from .conftest import serve
from .routing_helpers import (
    FABLE,
    INPUT_TOKENS,
    WORDS,
    Gate,
    Recorded,
    UpstreamState,
    closed_port,
    routing_upstream,
    wait_until,
)

pytestmark = pytest.mark.integration

CLIENTS = ["openai", "anthropic", "responses", "gemini"]
TIMEOUT = 30.0  # seconds an SDK call may take: a bound for a loaded machine, not a pace
PREFILL = {"continue_final_message": True, "add_generation_prompt": False}
ACCESS = "tokenwire.gateway.access"
CUT = 5  # words the failing upstreams send before they fail mid-reply


def providers(up: str, dead: str) -> dict[str, Any]:
    """``an``: Anthropic Messages; ``oa``: OpenAI chat completions (no prefill);
    ``oap``: the same with vLLM's continue-final-message fields; ``dead``: refused."""
    return {
        "an": {"type": "anthropic", "base_url": up},
        "oa": {"type": "openai", "base_url": up + "/v1"},
        "oap": {"type": "openai", "base_url": up + "/v1", "prefill": PREFILL},
        "dead": {"type": "anthropic", "base_url": dead},
    }


def route(*deployments: str | dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A route over ``"provider/model"`` deployments (or tables). No cooldowns: the
    module's gateway is shared, and a deployment failing in one test must not be
    skipped in the next (the cooldown tests have their own gateways)."""
    listed = []
    for d in deployments:
        if isinstance(d, str):
            provider, _, model = d.partition("/")
            d = {"provider": provider, "model": model}
        listed.append(d)
    return {"deployments": listed, "cooldown": 0, **settings}


def slow(deployment: str, **timeouts: float) -> dict[str, Any]:
    provider, _, model = deployment.partition("/")
    return {"provider": provider, "model": model, "timeouts": timeouts}


ROUTES: dict[str, dict[str, Any]] = {
    # -- failures before the first token: retried, the client sees one reply
    "refused": route("dead/fable", "an/fable"),
    "429-next": route("an/fable:429once", "oa/fable"),
    "429-same-oa": route("oa/fable:429once", retries=1),
    "429-same-an": route("an/fable:429once", retries=1),
    "hang": route(slow("an/fable:hang", first_token=0.3), "oa/fable"),
    "500": route("oa/fable:500", "an/fable"),
    "529": route("an/fable:overloaded", "oa/fable"),
    "early-error-an": route("an/fable:error@0", "oa/fable"),
    "early-error-oa": route("oa/fable:error@0", "an/fable"),
    "reset-early": route("an/fable:reset@0", "oa/fable"),
    "400": route("an/fable:400", "oa/fable"),
    "all-fail": route("oa/fable:500", "an/fable:overloaded"),
    # -- failures after the first token, continued on the next deployment
    "cut-an": route(f"an/fable:cut@{CUT}", "an/fable", continue_on_failure=True),
    "cut-oa": route(f"oa/fable:cut@{CUT}", "oap/fable", continue_on_failure=True),
    "reset": route(f"oa/fable:reset@{CUT}", "an/fable", continue_on_failure=True),
    "stall": route(slow(f"an/fable:stall@{CUT}", idle=0.3), "oap/fable", continue_on_failure=True),
    "error-mid": route(f"oa/fable:error@{CUT}", "an/fable", continue_on_failure=True),
    "trail": route(f"an/fable:trail:cut@{CUT}", "oap/fable", continue_on_failure=True),
    # -- continuation impossible: the reply ends with an error, as without routing
    "no-continue": route(f"an/fable:cut@{CUT}", "an/fable"),
    "no-prefill": route(f"oa/fable:cut@{CUT}", "oa/fable", continue_on_failure=True),
    # the only deployment that can continue is the one that failed: it is asked again
    "back-to-first": route(f"an/fable:cut@{CUT}", "oa/fable", continue_on_failure=True),
}
# The same failures before the first token on routes that continue replies: those
# re-encode every reply (no pass-through), a different path through the relay.
for _name in list(ROUTES):
    if not ROUTES[_name].get("continue_on_failure") and _name != "no-continue":
        ROUTES[_name + "+c"] = {**ROUTES[_name], "continue_on_failure": True}


# --- servers ---------------------------------------------------------------------------


@dataclass
class Servers:
    state: UpstreamState
    url: str  # the gateway's


@pytest.fixture(scope="module")
def shared() -> Iterator[Servers]:
    state = UpstreamState()
    with serve(routing_upstream(state)) as up, closed_port() as dead:
        config = {"providers": providers(up, dead), "models": ROUTES}
        with serve(create_app(from_mapping(config))) as url:
            yield Servers(state, url)


@pytest.fixture
def gw(shared: Servers, caplog: pytest.LogCaptureFixture) -> Iterator[Servers]:
    """The module's gateway, its upstream's record cleared; the access log captured."""
    shared.state.reset()
    caplog.set_level(logging.INFO, logger=ACCESS)
    yield shared
    assert shared.state.problems == [], "the upstream got a prefill that is not the fable's"
    shared.state.gate.open()  # nothing is left waiting


@pytest.fixture
def upstream() -> Iterator[tuple[UpstreamState, str]]:
    state = UpstreamState()
    with serve(routing_upstream(state)) as up:
        yield state, up
    state.gate.open()


def own_gateway(up: str, models: dict[str, Any], **gateway: Any) -> Any:
    config = {"providers": providers(up, "http://127.0.0.1:9"), "models": models}
    if gateway:
        config["gateway"] = gateway
    return serve(create_app(from_mapping(config)))


# --- the clients -------------------------------------------------------------------------


@dataclass
class Reply:
    """What a client got: the text, every finish reason, the usage the SDK reports, and
    the error it raised (None: none)."""

    text: str = ""
    finishes: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: Exception | None = None

    @property
    def status(self) -> int | None:
        err = self.error
        status = getattr(err, "status_code", None) or getattr(err, "code", None)
        return status if isinstance(status, int) else None


SDK_ERRORS = (openai.APIError, anthropic.APIError, genai_errors.APIError)
PROMPT = "Tell me a fable."


def ask_into(replies: list[Reply], url: str, client: str, stream: bool, model: str) -> None:
    """:func:`ask`, for a thread: the reply is appended to ``replies``."""
    replies.append(ask(url, client, stream, model))


def ask(url: str, client: str, stream: bool, model: str) -> Reply:
    """One request through ``client``'s official SDK; SDK errors are caught into the
    reply (with what arrived before them)."""
    reply = Reply()
    try:
        ASKERS[client](url, stream, model, reply)
    except SDK_ERRORS as exc:
        reply.error = exc
    return reply


@functools.cache
def openai_sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT)


@functools.cache
def anthropic_sdk(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=TIMEOUT)


@functools.cache
def gemini_sdk(url: str) -> genai.Client:
    return genai.Client(
        api_key="x",
        http_options=genai_types.HttpOptions(
            base_url=url,
            api_version="v1beta",
            timeout=int(TIMEOUT * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


def _openai(url: str, stream: bool, model: str, reply: Reply) -> None:
    sdk = openai_sdk(url)
    messages: Any = [{"role": "user", "content": PROMPT}]
    if not stream:
        whole = sdk.chat.completions.create(model=model, messages=messages)
        reply.text = whole.choices[0].message.content or ""
        reply.finishes = [str(whole.choices[0].finish_reason)]
        if whole.usage is not None:
            reply.input_tokens = whole.usage.prompt_tokens
            reply.output_tokens = whole.usage.completion_tokens
        return
    chunks = sdk.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in chunks:
        for choice in chunk.choices:
            reply.text += choice.delta.content or ""
            if choice.finish_reason:
                reply.finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            reply.input_tokens = chunk.usage.prompt_tokens
            reply.output_tokens = chunk.usage.completion_tokens


def _anthropic(url: str, stream: bool, model: str, reply: Reply) -> None:
    sdk = anthropic_sdk(url)
    messages: Any = [{"role": "user", "content": PROMPT}]
    if not stream:
        whole = sdk.messages.create(model=model, max_tokens=200, messages=messages)
        reply.text = "".join(b.text for b in whole.content if b.type == "text")
        reply.finishes = [str(whole.stop_reason)]
        reply.input_tokens = whole.usage.input_tokens
        reply.output_tokens = whole.usage.output_tokens
        return
    with sdk.messages.stream(model=model, max_tokens=200, messages=messages) as events:
        for event in events:
            if event.type == "text":
                reply.text += event.text
            elif event.type == "message_delta" and event.delta.stop_reason:
                reply.finishes.append(event.delta.stop_reason)
        final = events.get_final_message()
    reply.input_tokens = final.usage.input_tokens
    reply.output_tokens = final.usage.output_tokens
    assert "".join(b.text for b in final.content if b.type == "text") == reply.text


def _responses(url: str, stream: bool, model: str, reply: Reply) -> None:
    sdk = openai_sdk(url)
    if not stream:
        whole = sdk.responses.create(model=model, input=PROMPT)
        reply.text = whole.output_text
        reply.finishes = [str(whole.status)]
        if whole.usage is not None:
            reply.input_tokens = whole.usage.input_tokens
            reply.output_tokens = whole.usage.output_tokens
        return
    for event in sdk.responses.create(model=model, input=PROMPT, stream=True):
        if event.type == "response.output_text.delta":
            reply.text += event.delta
        elif event.type in ("response.completed", "response.incomplete", "response.failed"):
            reply.finishes.append(event.type)
            usage = event.response.usage
            if usage is not None:
                reply.input_tokens = usage.input_tokens
                reply.output_tokens = usage.output_tokens


def _gemini(url: str, stream: bool, model: str, reply: Reply) -> None:
    sdk = gemini_sdk(url)
    if stream:
        chunks = sdk.models.generate_content_stream(model=model, contents=PROMPT)
    else:
        chunks = iter([sdk.models.generate_content(model=model, contents=PROMPT)])
    for chunk in chunks:
        for candidate in chunk.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.text and not part.thought:
                    reply.text += part.text
            if candidate.finish_reason:
                reply.finishes.append(str(candidate.finish_reason))
        if chunk.usage_metadata is not None:
            reply.input_tokens = chunk.usage_metadata.prompt_token_count
            reply.output_tokens = chunk.usage_metadata.candidates_token_count


ASKERS: dict[str, Callable[[str, bool, str, Reply], None]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "responses": _responses,
    "gemini": _gemini,
}
ENDPOINTS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "responses": "/v1/responses",
    "gemini": "/v1beta/models/",  # a prefix: the model is in the path
}


def matrix(
    names: list[str],
    clients: list[str] = CLIENTS,
    modes: tuple[bool, ...] = (True, False),
) -> pytest.MarkDecorator:
    """``client, stream, name`` for every client protocol, both modes and each of
    ``names``."""
    params = []
    for name in names:
        for client in clients:
            for stream in modes:
                mode = "stream" if stream else "whole"
                params.append(pytest.param(client, stream, name, id=f"{name}-{client}-{mode}"))
    return pytest.mark.parametrize(("client", "stream", "name"), params)


# --- the records --------------------------------------------------------------------------


def access_line(caplog: pytest.LogCaptureFixture, model: str, client: str) -> dict[str, Any]:
    """The access-log line of this test's request for ``model`` (waited for: a stream's
    line is written after its last byte went out)."""

    def found() -> list[dict[str, Any]]:
        lines = [json.loads(r.getMessage()) for r in list(caplog.records) if r.name == ACCESS]
        return [
            line
            for line in lines
            if line["model"] == model and line["endpoint"].startswith(ENDPOINTS[client])
        ]

    wait_until(lambda: bool(found()), what=f"the access-log line of {model}")
    lines = found()
    assert len(lines) == 1, lines
    return lines[0]


def outcomes(line: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["deployment"], a["outcome"]) for a in line.get("attempts", [])]


_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the ``name`` sample with these labels in a Prometheus text page."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if dict(_LABELS.findall(head)) == labels:
            return float(value)
    return None


def deployment_state(url: str, model: str, deployment: str) -> str | None:
    page = httpx2.get(url + "/metrics", timeout=TIMEOUT).text
    for state in ("up", "cooldown", "probing"):
        got = metric(
            page, "tokenwire_deployment_state", model=model, deployment=deployment, state=state
        )
        if got == 1.0:
            return state
    return None


# A normal end in each protocol (streamed or whole).
GOOD_ENDS = {"stop", "end_turn", "response.completed", "completed", "STOP", "FinishReason.STOP"}


def assert_whole_fable(reply: Reply) -> None:
    assert reply.error is None, f"{type(reply.error).__name__}: {reply.error}"
    assert reply.text == FABLE  # all of it, nothing twice
    assert len(reply.finishes) == 1 and reply.finishes[0] in GOOD_ENDS, reply.finishes


def asked(requests: list[Recorded]) -> list[tuple[str, str | None]]:
    return [(r.model, r.prefill) for r in requests]


# --- before the first token ---------------------------------------------------------------

# route -> the attempts the access log shows, as (deployment, outcome)
BEFORE = {
    "refused": [("dead/fable", "error:network"), ("an/fable", "ok")],
    "429-next": [("an/fable:429once", "error:rate_limit"), ("oa/fable", "ok")],
    "429-same-oa": [("oa/fable:429once", "error:rate_limit"), ("oa/fable:429once", "ok")],
    "429-same-an": [("an/fable:429once", "error:rate_limit"), ("an/fable:429once", "ok")],
    "hang": [("an/fable:hang", "error:timeout"), ("oa/fable", "ok")],
    "500": [("oa/fable:500", "error:api_error"), ("an/fable", "ok")],
    "529": [("an/fable:overloaded", "error:overloaded"), ("oa/fable", "ok")],
    "early-error-an": [("an/fable:error@0", "error:overloaded"), ("oa/fable", "ok")],
    "early-error-oa": [("oa/fable:error@0", "error:overloaded"), ("an/fable", "ok")],
    "reset-early": [("an/fable:reset@0", "error:network"), ("oa/fable", "ok")],
}


@matrix([*BEFORE, *(name + "+c" for name in BEFORE)])
def test_a_failure_before_the_first_token_is_retried(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    reply = ask(gw.url, client, stream, name)
    assert_whole_fable(reply)
    expected = BEFORE[name.removesuffix("+c")]
    line = access_line(caplog, name, client)
    assert outcomes(line) == expected
    assert line["outcome"] == "ok" and line["status"] == 200
    # Every attempt but the refused one reached the upstream; none continued anything.
    reached = list(gw.state.requests)
    assert [r.model for r in reached] == [
        d.partition("/")[2] for d, _ in expected if not d.startswith("dead/")
    ]
    assert all(r.prefill is None for r in reached)
    if name.startswith("hang"):
        assert reached[0].ended.wait(TIMEOUT)  # the hung request was let go of
    if name.startswith("429-same"):
        # The same deployment again, once its Retry-After (0.2 s) had passed.
        assert reached[1].at - reached[0].at >= 0.15
    if name.startswith("reset"):
        assert reached[0].aborted  # a real abrupt close, not a clean end
    assert (reply.input_tokens, reply.output_tokens) == (INPUT_TOKENS, len(WORDS))


@matrix(["early-error-an", "early-error-an+c"])
def test_an_attempt_that_failed_before_any_content_adds_no_usage(
    gw: Servers, client: str, stream: bool, name: str
) -> None:
    """The reply's usage is the successful attempt's (as a streamed reply passed through
    on a plain route reports it): the failed one produced nothing."""
    reply = ask(gw.url, client, stream, name)
    assert reply.error is None and reply.text == FABLE
    assert (reply.input_tokens, reply.output_tokens) == (INPUT_TOKENS, len(WORDS))


@matrix(["all-fail", "all-fail+c"])
def test_when_every_attempt_fails_the_client_gets_the_last_error(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    reply = ask(gw.url, client, stream, name)
    assert reply.error is not None and reply.text == ""
    # Anthropic's 529 overloaded_error, in the client's protocol (529 or 503).
    assert reply.status in (503, 529), reply
    assert "overloaded" in str(reply.error).lower()
    assert asked(gw.state.requests) == [("fable:500", None), ("fable:overloaded", None)]
    line = access_line(caplog, name, client)
    assert outcomes(line) == [
        ("oa/fable:500", "error:api_error"),
        ("an/fable:overloaded", "error:overloaded"),
    ]
    assert line["outcome"] == "error:overloaded"


@matrix(["400", "400+c"])
def test_a_400_is_not_retried(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    reply = ask(gw.url, client, stream, name)
    assert reply.error is not None and reply.status == 400, reply
    assert "bad request" in str(reply.error)
    assert reply.text == ""
    assert asked(gw.state.requests) == [("fable:400", None)]  # and not the next deployment
    line = access_line(caplog, name, client)
    assert outcomes(line) == [("an/fable:400", "error:invalid_request")]
    assert line["status"] == 400


# --- after the first token: continued -----------------------------------------------------

# route -> (the failing deployment and its outcome, the continuing one, its protocol)
AFTER = {
    "cut-an": ("an/fable:cut@5", "error:network", "an/fable", "anthropic"),
    "cut-oa": ("oa/fable:cut@5", "error:network", "oap/fable", "openai"),
    "reset": ("oa/fable:reset@5", "error:network", "an/fable", "anthropic"),
    "stall": ("an/fable:stall@5", "error:timeout", "oap/fable", "openai"),
    "error-mid": ("oa/fable:error@5", "error:overloaded", "an/fable", "anthropic"),
    "trail": ("an/fable:trail:cut@5", "error:network", "oap/fable", "openai"),
}
SO_FAR = "".join(WORDS[:CUT])


@matrix(list(AFTER))
def test_a_reply_cut_after_the_first_token_is_continued(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    failing, outcome, continuing, protocol = AFTER[name]
    reply = ask(gw.url, client, stream, name)
    assert_whole_fable(reply)
    first, second = gw.state.requests
    assert first.model == failing.partition("/")[2] and first.prefill is None
    assert first.words == CUT
    # The continuation: the conversation again, the text so far as the assistant's
    # (without the trailing space of a word that had one: "trail").
    assert (second.protocol, second.model) == (protocol, "fable")
    assert second.body["messages"][-1]["role"] == "assistant"
    assert second.prefill == (SO_FAR if name != "trail" else SO_FAR.strip())
    assert [m["role"] for m in second.body["messages"][:-1]] == [
        m["role"] for m in first.body["messages"]
    ]
    if protocol == "openai":
        assert second.body["continue_final_message"] is True
        assert second.body["add_generation_prompt"] is False
    assert second.words == len(WORDS) - CUT
    line = access_line(caplog, name, client)
    assert outcomes(line) == [(failing, outcome), (continuing, "ok")]
    assert line["attempts"][1]["continuation"] is True
    assert line["outcome"] == "ok" and line["status"] == 200
    if name == "stall":
        # The stalled upstream was let go of, not left hanging.
        assert first.ended.wait(TIMEOUT)
    if name == "reset":
        assert first.aborted  # a real abrupt close, not a clean end


@matrix(["cut-an", "cut-oa", "reset", "error-mid"])
def test_a_continued_reply_reports_the_usage_of_every_attempt(
    gw: Servers, client: str, stream: bool, name: str
) -> None:
    """The attempts' usage added up. A cut attempt's output is the words it sent (its
    upstream reported nothing else: OpenAI reports usage at the end only, Anthropic's
    message_start says 1 output token); its input, what it reported (Anthropic: at the
    start; OpenAI: nothing)."""
    reply = ask(gw.url, client, stream, name)
    assert reply.error is None and reply.text == FABLE
    first_reported = INPUT_TOKENS if AFTER[name][0].startswith("an/") else 0
    expected = (first_reported + INPUT_TOKENS, len(WORDS))
    assert (reply.input_tokens, reply.output_tokens) == expected


@pytest.mark.parametrize(
    "name",
    [
        "cut-oa",
        "cut-an",
    ],
)
def test_the_continuation_asks_for_the_tokens_left(gw: Servers, name: str) -> None:
    reply = ask(gw.url, "anthropic", True, name)  # max_tokens = 200
    assert reply.text == FABLE
    first, second = gw.state.requests
    assert first.body["max_tokens"] == 200
    assert second.body["max_tokens"] == 200 - CUT


# --- continuation impossible --------------------------------------------------------------

IMPOSSIBLE = {
    "no-continue": "an/fable:cut@5",  # continue_on_failure is off
    "no-prefill": "oa/fable:cut@5",  # no deployment can continue (OpenAI without prefill)
}


@matrix(list(IMPOSSIBLE))
def test_a_reply_that_cannot_be_continued_ends_with_an_error(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    reply = ask(gw.url, client, stream, name)
    assert reply.error is not None, reply
    if stream:
        # What came before the failure, then the protocol's error event.
        assert reply.text == SO_FAR
    else:
        assert reply.text == "" and reply.status == 502, reply
    assert reply.finishes in ([], ["response.failed"])
    failing = IMPOSSIBLE[name]
    assert asked(gw.state.requests) == [(failing.partition("/")[2], None)]  # nobody else
    line = access_line(caplog, name, client)
    assert outcomes(line) == [(failing, "error:network")]
    assert line["outcome"] == "error:network"


@matrix(["back-to-first"], modes=(True,))
def test_a_continuation_goes_back_to_the_only_deployment_that_can_continue(
    gw: Servers, caplog: pytest.LogCaptureFixture, client: str, stream: bool, name: str
) -> None:
    """[Anthropic (cuts after 5 words), OpenAI without prefill]: the Anthropic
    deployment is asked to continue (after its backoff), which this one cuts again;
    the retries are spent, and the client gets the 10 words and an error."""
    reply = ask(gw.url, client, stream, name)
    assert reply.error is not None
    assert reply.text == "".join(WORDS[: 2 * CUT])
    assert asked(gw.state.requests) == [("fable:cut@5", None), ("fable:cut@5", SO_FAR)]
    line = access_line(caplog, name, client)
    assert outcomes(line) == [("an/fable:cut@5", "error:network")] * 2
    assert line["attempts"][1]["continuation"] is True


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_count_attempts_continuations_and_states(
    upstream: tuple[UpstreamState, str],
) -> None:
    state, up = upstream
    with closed_port() as dead:
        config = {
            "providers": providers(up, dead),
            "models": {"cut": ROUTES["cut-an"], "refused": ROUTES["refused"]},
        }
        with serve(create_app(from_mapping(config))) as url:
            for model in ("cut", "refused", "cut"):
                assert_whole_fable(ask(url, "openai", True, model))
            page = httpx2.get(url + "/metrics", timeout=TIMEOUT).text
    attempts = "tokenwire_upstream_attempts_total"
    assert (
        metric(page, attempts, model="cut", deployment="an/fable:cut@5", outcome="error:network")
        == 2
    )
    assert metric(page, attempts, model="cut", deployment="an/fable", outcome="ok") == 2
    assert (
        metric(page, attempts, model="refused", deployment="dead/fable", outcome="error:network")
        == 1
    )
    assert metric(page, attempts, model="refused", deployment="an/fable", outcome="ok") == 1
    assert metric(page, "tokenwire_continuations_total", model="cut", deployment="an/fable") == 2
    assert (
        metric(page, "tokenwire_continuations_total", model="refused", deployment="an/fable")
        is None
    )
    for model, deployment in [
        ("cut", "an/fable:cut@5"),
        ("cut", "an/fable"),
        ("refused", "dead/fable"),
    ]:
        labels = {"model": model, "deployment": deployment}
        assert metric(page, "tokenwire_deployment_state", **labels, state="up") == 1
        assert metric(page, "tokenwire_deployment_state", **labels, state="cooldown") == 0
        assert metric(page, "tokenwire_deployment_in_flight", **labels) == 0
    assert len(state.requests) == 5


# --- cooldowns --------------------------------------------------------------------------------


def test_a_failing_deployment_cools_down(
    upstream: tuple[UpstreamState, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, up = upstream
    caplog.set_level(logging.INFO, logger=ACCESS)
    cool = {**route("oa/fable:500", "an/fable"), "cooldown": 30, "cooldown_after": 2}
    with own_gateway(up, {"cool": cool}) as url:
        for _ in range(3):
            assert_whole_fable(ask(url, "openai", False, "cool"))
        # Two failures in a row: the third request went straight to the second one.
        assert len(state.to("fable:500")) == 2
        assert len(state.to("fable")) == 3
        assert deployment_state(url, "cool", "oa/fable:500") == "cooldown"
        assert deployment_state(url, "cool", "an/fable") == "up"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS]
    assert [outcomes(line) for line in lines] == [
        [("oa/fable:500", "error:api_error"), ("an/fable", "ok")],
        [("oa/fable:500", "error:api_error"), ("an/fable", "ok")],
        [("an/fable", "ok")],
    ]


def test_a_cooled_deployment_is_probed_and_comes_back(
    upstream: tuple[UpstreamState, str],
) -> None:
    state, up = upstream
    flaky = "oa/fable:switch:hold"
    recover = {**route(flaky, "an/fable"), "cooldown": 0.5, "cooldown_after": 2}
    state.broken.set()
    with own_gateway(up, {"recover": recover}) as url:

        def served_by_first() -> int:
            return len(state.to("fable:switch:hold"))

        def cooled_down_and_over() -> None:
            wait_until(
                lambda: deployment_state(url, "recover", flaky) == "up",
                what="the end of the cooldown",
            )

        for _ in range(2):
            assert_whole_fable(ask(url, "openai", False, "recover"))
        assert served_by_first() == 2
        cooled_down_and_over()
        # The probe fails: another cooldown at once (one failure is enough now).
        assert_whole_fable(ask(url, "openai", False, "recover"))
        assert served_by_first() == 3
        cooled_down_and_over()
        # The probe succeeds; while it runs the deployment is "probing".
        state.broken.clear()
        state.hold = Gate()
        done: list[Reply] = []
        probe = threading.Thread(
            target=ask_into, args=(done, url, "openai", False, "recover"), daemon=True
        )
        probe.start()
        try:
            assert state.hold.waiting.wait(TIMEOUT)
            assert deployment_state(url, "recover", flaky) == "probing"
        finally:
            state.hold.open()
            probe.join(TIMEOUT)
        assert_whole_fable(done[0])
        assert served_by_first() == 4
        assert len(state.to("fable")) == 3  # the second deployment was not needed
        assert deployment_state(url, "recover", flaky) == "up"
        # Its failures were forgotten: one more is not enough for a cooldown, two are.
        state.broken.set()
        assert_whole_fable(ask(url, "openai", False, "recover"))
        assert deployment_state(url, "recover", flaky) == "up"
        assert_whole_fable(ask(url, "openai", False, "recover"))
        assert deployment_state(url, "recover", flaky) in ("cooldown", "up")
        assert served_by_first() == 6


# --- balance ----------------------------------------------------------------------------------


def test_balance_splits_by_weight(upstream: tuple[UpstreamState, str]) -> None:
    state, up = upstream
    weighted = route(
        {"provider": "oa", "model": "fable", "weight": 3},
        {"provider": "an", "model": "fable", "weight": 1},
        strategy="balance",
    )
    body = {"model": "bal", "messages": [{"role": "user", "content": PROMPT}]}
    with own_gateway(up, {"bal": weighted}) as url, httpx2.Client(timeout=TIMEOUT) as http:
        for _ in range(200):
            response = http.post(url + "/v1/chat/completions", json=body)
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == FABLE
        page = http.get(url + "/metrics").text
    share = len([r for r in state.requests if r.protocol == "openai"]) / 200
    assert len(state.requests) == 200
    assert 0.6 <= share <= 0.9, share  # 3:1 is 0.75; this range is ~5 standard deviations
    for deployment in ("oa/fable", "an/fable"):
        labels = {"model": "bal", "deployment": deployment}
        assert metric(page, "tokenwire_deployment_in_flight", **labels) == 0


# --- resumable streams --------------------------------------------------------------------

RESUMABLE = {
    "openai": ("/v1/chat/completions", {}),
    "anthropic": ("/v1/messages", {"max_tokens": 200}),
    "responses": ("/v1/responses", {}),
}


def _text_of(client: str, events: list[ServerSentEvent]) -> list[str]:
    out = []
    for event in events:
        if not event.data.startswith("{"):
            continue
        data = json.loads(event.data)
        if client == "openai":
            out += [c["delta"].get("content") or "" for c in data.get("choices", [])]
        elif client == "anthropic":
            if data.get("type") == "content_block_delta":
                out.append(data["delta"].get("text", ""))
        elif data.get("type") == "response.output_text.delta":
            out.append(data["delta"])
    return [t for t in out if t]


@pytest.mark.parametrize("client", list(RESUMABLE))
def test_a_continued_reply_is_resumed_with_last_event_id(
    upstream: tuple[UpstreamState, str], client: str
) -> None:
    state, up = upstream
    models = {"resumed": route(f"an/fable:cut@{CUT}", "an/fable:pause@3", continue_on_failure=True)}
    path, extra = RESUMABLE[client]
    body: dict[str, Any] = {"model": "resumed", "stream": True, **extra}
    if client == "responses":
        body["input"] = PROMPT
    else:
        body["messages"] = [{"role": "user", "content": PROMPT}]
    held = CUT + 3  # words the client has when the continuing upstream waits
    with own_gateway(up, models, resume="memory") as url, httpx2.Client(timeout=TIMEOUT) as http:
        first: list[ServerSentEvent] = []
        decoder = SSEDecoder()
        with http.stream("POST", url + path, json=body) as response:
            assert response.status_code == 200
            sid = response.headers["x-tokenwire-stream-id"]
            for chunk in response.iter_raw():
                first += decoder.feed(chunk)
                if len(_text_of(client, first)) >= held:
                    break  # and the connection drops, mid-reply
        assert len(_text_of(client, first)) == held
        assert state.gate.waiting.is_set()  # the continuation is being written
        rest: list[ServerSentEvent] = []
        decoder = SSEDecoder()
        with http.stream(
            "POST", url + path, json=body, headers={"Last-Event-ID": first[-1].id or ""}
        ) as response:
            assert response.status_code == 200
            state.gate.open()  # the continuation goes on while the client is back
            for chunk in response.iter_raw():
                rest += decoder.feed(chunk)
    assert "".join(_text_of(client, first + rest)) == FABLE
    ids = [e.id for e in first + rest if e.id]
    assert ids == [f"{sid}-{i}" for i in range(1, len(ids) + 1)]  # each event once
    assert len(ids) == len(first + rest)
    last = rest[-1]
    if client == "openai":
        assert last.data == "[DONE]"
    elif client == "anthropic":
        assert last.event == "message_stop"
    else:
        assert json.loads(last.data)["type"] == "response.completed"
    assert [(r.model, r.prefill) for r in state.requests] == [
        (f"fable:cut@{CUT}", None),
        ("fable:pause@3", "".join(WORDS[:CUT])),
    ]


# --- deadlines, cooldowns of a whole route, clients that leave ------------------------------


def test_a_retry_after_past_the_first_token_deadline_is_not_waited_for(
    upstream: tuple[UpstreamState, str],
) -> None:
    state, up = upstream
    # The upstream asks for 5 s; the route gives the first token 2 s in all.
    eager = {**route("oa/fable:429once:retry@5", retries=1), "timeouts": {"first_token": 2}}
    with own_gateway(up, {"eager": eager}) as url:
        reply = ask(url, "openai", True, "eager")
    assert reply.status == 429, reply
    assert isinstance(reply.error, openai.RateLimitError)
    assert len(state.requests) == 1


def test_every_deployment_cooling_down_is_a_503_with_retry_after(
    upstream: tuple[UpstreamState, str],
) -> None:
    state, up = upstream
    # Short enough that the test stays quick while the bug is there, long enough that
    # the second request comes well within it.
    alone = {**route("oa/fable:500"), "cooldown": 2, "cooldown_after": 1}
    with own_gateway(up, {"alone": alone}) as url:
        assert ask(url, "openai", False, "alone").status == 500
        cooling = ask(url, "openai", False, "alone")
    assert len(state.requests) == 1, "the cooling deployment was asked again"
    assert cooling.status == 503, cooling
    assert isinstance(cooling.error, openai.APIStatusError)
    assert 0 < float(cooling.error.response.headers["retry-after"]) <= 2
    assert "cooling down" in str(cooling.error)


def test_balance_prefers_the_deployment_with_fewer_requests_in_flight(
    upstream: tuple[UpstreamState, str],
) -> None:
    state, up = upstream
    even = route("oa/fable:pause@2", "an/fable:pause@2", strategy="balance")
    with own_gateway(up, {"even": even}) as url:
        for run in range(5):
            state.reset()
            replies: list[Reply] = []
            threads = [
                threading.Thread(target=ask_into, args=(replies, url, "openai", True, "even"))
                for _ in range(2)
            ]
            threads[0].start()
            state.wait_requests(1)  # the first holds one deployment (paused mid-reply)
            threads[1].start()
            state.wait_requests(2)
            state.gate.open()
            for thread in threads:
                thread.join(TIMEOUT)
            assert [r.text for r in replies] == [FABLE, FABLE]
            # The second went to the other deployment: the one with nothing in flight.
            assert {r.protocol for r in state.requests} == {"openai", "anthropic"}, run


def test_a_client_that_leaves_releases_its_deployment(
    upstream: tuple[UpstreamState, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, up = upstream
    caplog.set_level(logging.INFO, logger=ACCESS)
    models = {
        "mid": route("an/fable:pause@3", "oa/fable", continue_on_failure=True),
        "head": route("an/fable:hold", "oa/fable"),
    }
    with own_gateway(up, models) as url:

        def in_flight(model: str, deployment: str) -> float | None:
            page = httpx2.get(url + "/metrics", timeout=TIMEOUT).text
            labels = {"model": model, "deployment": deployment}
            return metric(page, "tokenwire_deployment_in_flight", **labels)

        # Mid-reply: three words read, then the client is gone.
        body = {"model": "mid", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        with httpx2.stream("POST", url + "/v1/chat/completions", json=body, timeout=TIMEOUT) as r:
            got = b""
            for chunk in r.iter_raw():
                got += chunk
                if got.count(b'"content":"') >= 3:  # the role chunk has "content":""
                    break
        assert state.requests[0].ended.wait(TIMEOUT)  # the upstream was closed
        wait_until(lambda: in_flight("mid", "an/fable:pause@3") == 0, what="in-flight 0")
        # Before the upstream answered: the request is sent, then the socket closed.
        state.hold = Gate()
        host, port = url.removeprefix("http://").split(":")
        raw = json_bytes({**body, "model": "head"})
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\n"
                + f"content-length: {len(raw)}\r\n\r\n".encode()
                + raw
            )
            state.wait_requests(2)
        assert state.requests[1].ended.wait(TIMEOUT)  # the upstream request was cancelled
        wait_until(lambda: in_flight("head", "an/fable:hold") == 0, what="in-flight 0")
        assert len(state.requests) == 2  # and nobody else was asked
        assert deployment_state(url, "head", "an/fable:hold") == "up"
        assert deployment_state(url, "mid", "an/fable:pause@3") == "up"
    state.hold.open()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS]
    assert sorted(line["outcome"] for line in lines) == ["disconnect", "disconnect"]


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
