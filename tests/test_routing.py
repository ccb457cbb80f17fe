"""Routing units: the configuration of routes with deployments, the choice of a
deployment, cooldowns, and a routed reply's retries and continuation, on the demo model
and small in-process upstreams (the end-to-end tests are in test_gateway_routing.py)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from tokenwire.config import ConfigError, from_mapping
from tokenwire.errors import StreamError
from tokenwire.gateway.records import GatewayMetrics, _Record
from tokenwire.gateway.routing import Attempts, ModelRouter, retryable, routed_items
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.requests import ChatMessage, ChatRequest, TextPart
from tokenwire.providers import DemoProvider, Item
from tokenwire.providers.base import first_token_items

WORDS = ["Once", " upon", " a", " time", " there", " was", " a", " hare", "."]
SENTENCE = "".join(WORDS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """An in-process upstream: each ``open`` takes the next behaviour from ``plan``
    (an exception to raise, or a list of deltas; ``"cut"`` in it raises a network
    error there). A request ending with an assistant message continues ``WORDS``."""

    protocol: str | None = "anthropic"
    secret: bytes | None = None

    def __init__(self, name: str, plan: list[Any] | None = None) -> None:
        self.name = name
        self.plan = list(plan or [])
        self.requests: list[ChatRequest] = []

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        self.requests.append(request)
        step: Any = self.plan.pop(0) if self.plan else "ok"
        if isinstance(step, BaseException):
            raise step
        if step == "ok":
            words = WORDS
            last = request.messages[-1]
            if last.role == "assistant":
                done = last.text
                assert SENTENCE.startswith(done), done
                words = _words_after(done)
            step = [
                MessageStart(id="up", model=request.model, usage=Usage(input_tokens=5)),
                *[TextDelta(w) for w in words],
                FinishDelta("stop", raw_reason="end_turn"),
                UsageDelta(Usage(output_tokens=len(words))),
            ]
        return first_token_items(_items(step))

    async def aclose(self) -> None:
        pass


def _words_after(done: str) -> list[str]:
    said = ""
    for i, word in enumerate(WORDS):
        if len(said) >= len(done):
            return WORDS[i:]
        said += word
    return []


async def _items(steps: list[Any]) -> AsyncGenerator[Item, None]:
    for step in steps:
        if step == "cut":
            raise StreamError("network", "the upstream's reply was cut off")
        yield None, [step]


def route_config(deployments: list[dict[str, Any]], **route: Any) -> Any:
    providers = {d["provider"]: {"type": "demo", "speed": "max"} for d in deployments}
    return from_mapping(
        {"providers": providers, "models": {"r": {"deployments": deployments, **route}}}
    )


def attempts_for(
    router: ModelRouter, upstreams: dict[str, Any], *, translate: bool = True
) -> tuple[Attempts, _Record]:
    metrics = GatewayMetrics()
    record = _Record(metrics, "/v1/messages")
    attempts = Attempts(
        router,
        upstreams.__getitem__,
        protocol="anthropic",
        translate=translate,
        accepted=asyncio.get_running_loop().time(),
        record=record,
        metrics=metrics,
    )
    return attempts, record


def chat(**kw: Any) -> ChatRequest:
    return ChatRequest(
        model="r", messages=[ChatMessage("user", [TextPart("hi")])], stream=True, **kw
    )


async def collect(attempts: Attempts, request: ChatRequest) -> list[Delta]:
    first = await attempts.open(request)
    out: list[Delta] = []
    async for _, deltas in routed_items(attempts, first, request):
        out.extend(deltas)
    return out


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas if isinstance(d, TextDelta))


# -- configuration ----------------------------------------------------------------------


def test_a_route_with_deployments_is_read_with_its_settings() -> None:
    config = from_mapping(
        {
            "providers": {"a": {"type": "demo"}, "b": {"type": "demo"}},
            "models": {
                "smart": {
                    "deployments": [
                        {"provider": "a", "model": "m1", "weight": 3},
                        {"provider": "b", "model": "m2", "timeouts": {"first_token": 5}},
                    ],
                    "strategy": "balance",
                    "continue_on_failure": True,
                    "cooldown": 10,
                    "cooldown_after": 2,
                }
            },
        }
    )
    route = config.models["smart"]
    assert route.routed and route.strategy == "balance" and route.continue_on_failure
    assert route.retries == 1  # one attempt per deployment by default
    assert (route.cooldown, route.cooldown_after) == (10.0, 2)
    assert [(d.provider, d.model, d.weight) for d in route.deployments] == [
        ("a", "m1", 3.0),
        ("b", "m2", 1.0),
    ]
    assert route.deployments[1].timeouts is not None
    assert route.deployments[1].timeouts.first_token == 5
    # The first deployment stands for the route where one name is needed (model lists).
    assert (route.provider, route.model) == ("a", "m1")
    assert not config.models["demo"].routed


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"deployments": []}, "deployments must be a non-empty list"),
        ({"deployments": [{"provider": "nope", "model": "x"}]}, "provider must be one of"),
        ({"deployments": [{"provider": "demo"}]}, "model is required"),
        ({"deployments": [{"provider": "demo", "model": "x", "weight": 0}]}, "weight must be"),
        ({"deployments": [{"provider": "demo", "model": "x", "extra": 1}]}, "unknown key"),
        ({"provider": "demo", "deployments": [{"provider": "demo", "model": "x"}]}, "not both"),
        ({"provider": "demo", "strategy": "random"}, "strategy must be one of"),
        ({"provider": "demo", "retries": -1}, "retries must be"),
        ({"provider": "demo", "continue_on_failure": "yes"}, "continue_on_failure must be"),
        ({"provider": "demo", "cooldown_after": 0}, "cooldown_after must be"),
    ],
)
def test_bad_route_settings_are_named(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"models": {"r": route}})


def test_prefill_defaults_by_provider_type_and_can_be_set() -> None:
    config = from_mapping(
        {
            "providers": {
                "local": {
                    "type": "openai",
                    "base_url": "http://localhost:8000/v1",
                    "prefill": {"continue_final_message": True, "add_generation_prompt": False},
                },
                "plain": {"type": "openai", "base_url": "http://localhost:8000/v1"},
                "claude": {"type": "anthropic", "prefill": False},
            }
        }
    )
    providers = config.providers
    assert providers["anthropic"].prefill == {} and providers["demo"].prefill == {}
    assert providers["openai"].prefill is None and providers["plain"].prefill is None
    assert providers["claude"].prefill is None
    assert dict(providers["local"].prefill or {}) == {
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    with pytest.raises(ConfigError, match="prefill must be"):
        from_mapping({"providers": {"x": {"type": "demo", "prefill": "yes"}}})


# -- which errors are retried -------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (StreamError("network", "refused", status=502), True),
        (StreamError("timeout", "late", status=504), True),
        (StreamError("timeout", "late", status=408), True),
        (StreamError("invalid_request", "conflict", status=409), True),
        (StreamError("rate_limit", "slow down", status=429), True),
        (StreamError("api_error", "boom", status=500), True),
        (StreamError("overloaded", "busy", status=529), True),
        (StreamError("overloaded", "busy"), True),  # in-band, no status
        (StreamError("invalid_request", "bad", status=400), False),
        (StreamError("authentication", "who", status=401), False),
        (StreamError("permission", "no", status=403), False),
        (StreamError("not_found", "what", status=404), False),
        (StreamError("invalid_request", "bad"), False),
    ],
)
def test_what_is_retried(err: StreamError, expected: bool) -> None:
    assert retryable(err) is expected


# -- choosing a deployment ------------------------------------------------------------------


def test_fallback_goes_in_order_and_skips_what_failed_in_this_request() -> None:
    config = route_config([{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}])
    router = ModelRouter(config.models["r"], config, clock=Clock())
    ready = [0.0, 0.0]
    picked = router.pick(ready, set(), 1000.0)
    assert picked is not None and picked[0].provider == "a"
    ready[0] = 1000.5  # a backs off after failing
    picked = router.pick(ready, {0}, 1000.0)
    assert picked is not None and picked[0].provider == "b"
    ready[1] = 1000.2  # both wait: the one ready sooner, and when
    picked = router.pick(ready, {0, 1}, 1000.0)
    assert picked is not None and (picked[0].provider, picked[1]) == ("b", 1000.2)


def test_balance_spreads_by_weight_and_prefers_the_least_busy() -> None:
    config = route_config(
        [{"provider": "a", "model": "m", "weight": 3}, {"provider": "b", "model": "m"}],
        strategy="balance",
    )
    router = ModelRouter(config.models["r"], config, clock=Clock(), rng=random.Random(7))
    counts: Counter[str] = Counter()
    for _ in range(4000):
        picked = router.pick([0.0, 0.0], set(), 1000.0)
        assert picked is not None
        counts[picked[0].provider] += 1
    assert 0.70 < counts["a"] / 4000 < 0.80
    a, b = router.deployments
    a.in_flight = 3  # 3 in flight for weight 3 against 0 for weight 1: b is less loaded
    picked = router.pick([0.0, 0.0], set(), 1000.0)
    assert picked is not None and picked[0] is b


def test_cooldown_after_failures_in_a_row_then_one_probe() -> None:
    clock = Clock()
    config = route_config(
        [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}],
        cooldown=30,
        cooldown_after=2,
    )
    router = ModelRouter(config.models["r"], config, clock=clock)
    a, b = router.deployments
    router.failed(a)
    assert a.state(clock.now) == "up"
    router.failed(a)
    assert a.state(clock.now) == "cooldown"
    picked = router.pick([0.0, 0.0], set(), clock.now)
    assert picked is not None and picked[0] is b
    clock.now += 31
    assert a.state(clock.now) == "up"  # its cooldown is over: the next request probes it
    a.probing = True
    assert a.state(clock.now) == "probing"
    picked = router.pick([0.0, 0.0], set(), clock.now)
    assert picked is not None and picked[0] is b  # one probe at a time
    router.failed(a)  # the probe failed: another cooldown
    assert a.state(clock.now) == "cooldown" and not a.probing
    clock.now += 31
    router.succeeded(a)
    assert a.state(clock.now) == "up" and a.failures == 0


def test_every_deployment_cooling_down_is_a_503_with_retry_after() -> None:
    clock = Clock()
    config = route_config([{"provider": "a", "model": "m"}], cooldown=20, cooldown_after=1)
    router = ModelRouter(config.models["r"], config, clock=clock)
    router.failed(router.deployments[0])
    err = router.cooling_error()
    assert err.http_status() == 503 and err.retry_after == pytest.approx(20)


# -- a routed reply -------------------------------------------------------------------------


def two_scripted(
    first: list[Any], second: list[Any] | None = None, **route: Any
) -> tuple[ModelRouter, dict[str, Scripted]]:
    config = route_config(
        [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}], **route
    )
    return ModelRouter(config.models["r"], config), {
        "a": Scripted("a", first),
        "b": Scripted("b", second),
    }


async def test_failures_before_the_first_token_go_to_the_next_deployment() -> None:
    router, ups = two_scripted([StreamError("api_error", "boom", status=500)])
    attempts, record = attempts_for(router, ups)
    deltas = await collect(attempts, chat())
    assert text_of(deltas) == SENTENCE
    assert [r.model for r in ups["b"].requests] == ["m2"]
    assert [(a["deployment"], a["outcome"]) for a in record.attempts] == [
        ("a/m1", "error:api_error"),
        ("b/m2", "ok"),
    ]
    assert router.deployments[0].failures == 1 and router.deployments[1].in_flight == 0


async def test_an_in_band_error_before_content_is_retried_without_a_trace() -> None:
    start = MessageStart(id="x", usage=Usage(input_tokens=5))
    router, ups = two_scripted([[start, ErrorDelta("overloaded_error", "busy")]])
    attempts, _ = attempts_for(router, ups)
    deltas = await collect(attempts, chat())
    assert text_of(deltas) == SENTENCE
    assert [type(d) for d in deltas].count(MessageStart) == 1
    assert not any(isinstance(d, ErrorDelta) for d in deltas)


async def test_a_client_error_is_not_retried() -> None:
    router, ups = two_scripted([StreamError("invalid_request", "bad", status=400)])
    attempts, _ = attempts_for(router, ups)
    with pytest.raises(StreamError, match="bad"):
        await attempts.open(chat())
    assert ups["b"].requests == []


async def test_retry_after_waits_for_the_same_deployment_when_it_is_the_only_one() -> None:
    config = route_config([{"provider": "a", "model": "m"}], retries=1)
    router = ModelRouter(config.models["r"], config)
    ups = {"a": Scripted("a", [StreamError("rate_limit", "slow", status=429, retry_after=0.05)])}
    attempts, record = attempts_for(router, ups)
    deltas = await collect(attempts, chat())
    assert text_of(deltas) == SENTENCE and len(ups["a"].requests) == 2
    assert record.attempts[0]["status"] == 429


async def test_a_retry_after_beyond_the_first_token_deadline_gives_up() -> None:
    config = route_config(
        [{"provider": "a", "model": "m"}], retries=1, timeouts={"first_token": 0.5}
    )
    router = ModelRouter(config.models["r"], config)
    ups = {"a": Scripted("a", [StreamError("rate_limit", "slow", status=429, retry_after=60)])}
    attempts, _ = attempts_for(router, ups)
    with pytest.raises(StreamError) as caught:
        await attempts.open(chat())
    assert caught.value.status == 429 and caught.value.retry_after == 60
    assert len(ups["a"].requests) == 1


async def test_a_cut_reply_is_continued_with_the_text_so_far_as_prefill() -> None:
    cut = [MessageStart(id="x", usage=Usage(input_tokens=5)), *map(TextDelta, WORDS[:4]), "cut"]
    router, ups = two_scripted([cut], continue_on_failure=True)
    attempts, record = attempts_for(router, ups)
    deltas = await collect(attempts, chat(max_tokens=100))
    assert text_of(deltas) == SENTENCE  # nothing repeated, nothing lost
    assert [type(d) for d in deltas].count(FinishDelta) == 1
    assert [type(d) for d in deltas].count(MessageStart) == 1
    continued = ups["b"].requests[-1]
    assert continued.messages[-1].role == "assistant"
    assert continued.messages[-1].text == "".join(WORDS[:4])
    assert continued.max_tokens == 96  # what is left of the client's limit
    usage = [d.usage for d in deltas if isinstance(d, UsageDelta)][-1]
    # Both attempts' input; output: four pieces before the cut, five after.
    assert (usage.input_tokens, usage.output_tokens) == (10, 9)
    assert [a.get("continuation", False) for a in record.attempts] == [False, True]


async def test_whitespace_left_off_the_prefill_is_not_written_twice() -> None:
    cut = [MessageStart(id="x"), TextDelta("Once upon "), "cut"]
    router, ups = two_scripted(
        [cut], [[TextDelta(" a time"), FinishDelta("stop")]], continue_on_failure=True
    )
    attempts, _ = attempts_for(router, ups)
    deltas = await collect(attempts, chat())
    assert text_of(deltas) == "Once upon a time"
    assert ups["b"].requests[-1].messages[-1].text == "Once upon"  # no trailing space


async def test_a_reply_with_a_tool_call_is_not_continued() -> None:
    cut = [MessageStart(id="x"), TextDelta("Let me"), ToolCallDelta(0, id="c", name="f"), "cut"]
    router, ups = two_scripted([cut], continue_on_failure=True)
    attempts, _ = attempts_for(router, ups)
    with pytest.raises(StreamError, match="cut off"):
        await collect(attempts, chat())
    assert ups["b"].requests == []


async def test_an_in_band_error_mid_reply_without_continuation_reaches_the_client() -> None:
    failing = [MessageStart(id="x"), TextDelta("Once"), ErrorDelta("overloaded_error", "busy")]
    for translate in (True, False):
        router, ups = two_scripted([failing])  # continue_on_failure is off
        attempts, record = attempts_for(router, ups, translate=translate)
        request = chat()
        first = await attempts.open(request)
        deltas: list[Delta] = []
        with contextlib.suppress(StreamError):
            async for _, more in routed_items(attempts, first, request):
                deltas.extend(more)
        assert text_of(deltas) == "Once" and ups["b"].requests == []
        if translate:  # raised, for the relay to write in the client's protocol
            assert not any(isinstance(d, ErrorDelta) for d in deltas)
        else:  # passed through as the upstream sent it
            assert isinstance(deltas[-1], ErrorDelta)
        assert record.attempts[-1]["outcome"] == "error:overloaded"


async def test_no_deployment_able_to_continue_ends_with_the_original_failure() -> None:
    config = from_mapping(
        {
            "providers": {
                "a": {"type": "demo", "prefill": False},
                "b": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            },
            "models": {
                "r": {
                    "deployments": [
                        {"provider": "a", "model": "m"},
                        {"provider": "b", "model": "m"},
                    ],
                    "continue_on_failure": True,
                }
            },
        }
    )
    router = ModelRouter(config.models["r"], config)
    cut = [MessageStart(id="x"), TextDelta("Once"), "cut"]
    ups = {"a": Scripted("a", [cut]), "b": Scripted("b")}
    attempts, _ = attempts_for(router, ups)
    with pytest.raises(StreamError, match="cut off"):
        await collect(attempts, chat())
    # Neither can go on from "Once" (b is OpenAI without prefill fields).
    assert ups["b"].requests == [] and len(ups["a"].requests) == 1


async def test_a_cut_after_the_finish_ends_the_reply_normally() -> None:
    cut = [MessageStart(id="x"), *map(TextDelta, WORDS), FinishDelta("stop"), "cut"]
    router, ups = two_scripted([cut], continue_on_failure=True)
    attempts, _ = attempts_for(router, ups)
    deltas = await collect(attempts, chat())
    assert text_of(deltas) == SENTENCE and ups["b"].requests == []


async def test_the_demo_model_continues_its_own_reply_exactly() -> None:
    """demo:cut@N on the first deployment, demo on the second: the text the client gets
    is the one an uncut reply has (the demo model honours a prefill)."""
    config = route_config(
        [{"provider": "a", "model": "demo:cut@7"}, {"provider": "b", "model": "demo"}],
        continue_on_failure=True,
    )
    router = ModelRouter(config.models["r"], config)
    demo = DemoProvider(speed="max", seed=3)
    attempts, _ = attempts_for(router, {"a": demo, "b": demo})
    request = chat(temperature=0, max_tokens=60)
    deltas = await collect(attempts, request)
    whole: list[Delta] = []
    async for _, more in await demo.open(replace(request, model="demo")):
        whole.extend(more)
    assert text_of(deltas) == text_of(whole)
    usage = [d.usage for d in deltas if isinstance(d, UsageDelta)][-1]
    assert (
        usage.output_tokens
        == [d.usage for d in whole if isinstance(d, UsageDelta)][-1].output_tokens
    )


async def test_in_flight_counts_return_to_zero_when_the_client_leaves() -> None:
    router, ups = two_scripted([])
    attempts, _ = attempts_for(router, ups)
    request = chat()
    first = await attempts.open(request)
    items = routed_items(attempts, first, request)
    await items.__anext__()
    assert router.deployments[0].in_flight == 1
    await items.aclose()
    assert router.deployments[0].in_flight == 0


async def test_a_sampled_demo_reply_goes_on_from_a_prefill_at_a_word_boundary() -> None:
    demo = DemoProvider(speed="max")  # no seed, temperature 1: sampled anew
    prefill = "The Hare was making fun of"
    request = ChatRequest(
        model="demo",
        messages=[
            ChatMessage("user", [TextPart("Tell me a fable.")]),
            ChatMessage("assistant", [TextPart(prefill)]),
        ],
        stream=True,
    )
    deltas: list[Delta] = []
    async for _, more in await demo.open(request):
        deltas.extend(more)
    text = text_of(deltas)
    assert text and text[0].isspace()  # the next whole word, not the middle of one
    usage = [d.usage for d in deltas if isinstance(d, UsageDelta)][-1]
    assert usage.input_tokens is not None and usage.input_tokens >= len(prefill.split())


async def test_a_relay_that_never_starts_releases_its_attempt_when_dropped() -> None:
    import gc
    import weakref

    router, ups = two_scripted([])
    attempts, _ = attempts_for(router, ups)
    request = chat()
    first = await attempts.open(request)
    items = routed_items(attempts, first, request)
    weakref.finalize(items, attempts.abandon)  # as the gateway does
    assert router.deployments[0].in_flight == 1
    del items
    gc.collect()
    assert router.deployments[0].in_flight == 0


async def test_a_request_does_not_wait_for_a_cooldown_to_end() -> None:
    config = route_config([{"provider": "a", "model": "m"}], cooldown=30, cooldown_after=1)
    router = ModelRouter(config.models["r"], config)
    router.failed(router.deployments[0])
    ups = {"a": Scripted("a")}
    attempts, _ = attempts_for(router, ups)
    with pytest.raises(StreamError) as caught:
        await attempts.open(chat())
    assert caught.value.code == "deployments_cooling_down" and ups["a"].requests == []
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30
