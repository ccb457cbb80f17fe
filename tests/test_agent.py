"""Agents on the built-in demo model and on small in-process providers: options,
history, stop sequences, errors, cancellation, deadlines and the sync bridge."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from tokenwire.agent import (
    Agent,
    DemoProvider,
    ProviderRequest,
    StreamOptions,
    Turn,
    get_agent,
)
from tokenwire.errors import StreamError
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    TextDelta,
    Usage,
    UsageDelta,
)


def demo_agent(**provider: object) -> Agent:
    return Agent(DemoProvider(**provider), model="demo")  # type: ignore[arg-type]


async def collect(agent: Agent, prompt: str, options: object = None) -> list[str]:
    return [c async for c in agent.chat_stream(prompt, options)]  # type: ignore[arg-type]


class Scripted:
    """A unit-test provider: yields the given deltas, records requests and closing."""

    name = "scripted"

    def __init__(self, *deltas: Delta, pause: float = 0.0) -> None:
        self.deltas = deltas
        self.pause = pause
        self.requests: list[ProviderRequest] = []
        self.closed = asyncio.Event()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        try:
            for delta in self.deltas:
                if self.pause:
                    await asyncio.sleep(self.pause)
                yield delta
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        pass


def text_stream(*chunks: str, finish: bool = True) -> tuple[Delta, ...]:
    tail: tuple[Delta, ...] = (FinishDelta("stop"),) if finish else ()
    return (MessageStart(id="m1", model="x"), *(TextDelta(c) for c in chunks), *tail)


# --- the demo model -------------------------------------------------------------------


async def test_default_agent_is_the_demo_model(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOKENWIRE_CONFIG", raising=False)
    agent = await get_agent()
    assert agent.name == "assistant" and isinstance(agent.provider, DemoProvider)
    chunks = await collect(agent, "Tell me a story")
    assert len(chunks) > 5 and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks).strip()


async def test_demo_temperature_zero_is_the_same_reply_every_time() -> None:
    first = await demo_agent().chat("Tell me a story", {"temperature": 0})
    again = await demo_agent().chat("Tell me a story", {"temperature": 0})
    other = await demo_agent().chat("Something else entirely", {"temperature": 0})
    assert first == again
    assert other != first


async def test_demo_is_deterministic_for_a_seed_and_temperature_changes_sampling() -> None:
    async def reply(seed: int, temperature: float) -> str:
        return await demo_agent().chat("Hi", StreamOptions(temperature=temperature, seed=seed))

    assert await reply(7, 0.9) == await reply(7, 0.9)
    seeds = range(6)
    assert len({await reply(s, 0.9) for s in seeds}) > 1
    # The same seed at different temperatures samples differently (for most seeds).
    assert sum([await reply(s, 0.3) != await reply(s, 2.0) for s in seeds]) >= 3
    # A seed configured on the provider works the same as one in the options.
    configured = await demo_agent(seed=7).chat("Hi", {"temperature": 0.9})
    assert configured == await reply(7, 0.9)


async def test_demo_honours_max_tokens_and_reports_usage() -> None:
    agent = demo_agent()
    async with agent.stream("count these four words", {"max_tokens": 7}) as stream:
        deltas = [d async for d in stream]
    texts = [d for d in deltas if isinstance(d, TextDelta)]
    assert len(texts) == 7
    message = stream.message
    assert message.finish_reason == "length"
    assert message.usage.output_tokens == 7 and message.usage.input_tokens == 4
    assert message.text == "".join(t.text for t in texts)
    assert isinstance(deltas[0], MessageStart) and isinstance(deltas[-1], UsageDelta)


async def test_demo_honours_stop_sequences() -> None:
    full = await demo_agent().chat("Tell me a story", {"temperature": 0})
    words = full.split()
    stop = words[len(words) // 2]
    agent = demo_agent()
    async with agent.stream("Tell me a story", {"temperature": 0, "stop_sequences": [stop]}) as s:
        async for _ in s:
            pass
    assert s.message.text == full[: full.index(stop)]
    assert s.message.finish_reason == "stop" and s.message.stop_sequence == stop
    assert s.message.usage.output_tokens is not None and s.message.usage.output_tokens > 0


async def test_demo_pacing_delays_first_token_and_each_token() -> None:
    agent = demo_agent(time_to_first_token=0.2, time_per_token=0.02)
    start = time.monotonic()
    stamps = []
    async for _ in agent.chat_stream("pace", {"max_tokens": 6}):
        stamps.append(time.monotonic() - start)
    assert stamps[0] >= 0.2
    assert stamps[-1] - stamps[0] >= 5 * 0.02


async def test_demo_serves_hundreds_of_concurrent_streams() -> None:
    agent = demo_agent(time_to_first_token=0.05, time_per_token=0.005)
    start = time.monotonic()
    replies = await asyncio.gather(
        *(agent.chat(f"user {i}", {"max_tokens": 40}) for i in range(300))
    )
    elapsed = time.monotonic() - start
    assert len(replies) == 300 and all(len(r.split()) >= 10 for r in replies)
    # Liveness only (generous): 300 paced streams of 40 pieces overlap instead of queueing.
    assert elapsed < 30, elapsed


async def test_demo_fail_after_raises_after_the_chunks_received() -> None:
    agent = demo_agent(fail_after=3)
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x"):
            got.append(chunk)
    assert len(got) == 3
    assert info.value.type == "overloaded" and info.value.provider == "demo"
    assert agent.history == []


def test_demo_rejects_negative_pacing() -> None:
    with pytest.raises(ValueError, match="pacing"):
        DemoProvider(time_per_token=-1)


# --- history --------------------------------------------------------------------------


async def test_history_is_sent_and_grows_turn_by_turn() -> None:
    provider = Scripted(*text_stream("Hi ", "there"))
    agent = Agent(provider, model="m", system="Be brief.")
    assert await agent.chat("Hello") == "Hi there"
    assert await agent.chat("And again?") == "Hi there"
    assert agent.history == [
        Turn("user", "Hello"),
        Turn("assistant", "Hi there"),
        Turn("user", "And again?"),
        Turn("assistant", "Hi there"),
    ]
    second = provider.requests[1]
    assert second.system == "Be brief." and second.model == "m"
    assert [m.content for m in second.messages] == ["Hello", "Hi there", "And again?"]
    agent.reset()
    assert agent.history == []


async def test_demo_multi_turn_conversation_changes_the_reply() -> None:
    agent = demo_agent()
    one = await agent.chat("Tell me a story", {"temperature": 0})
    two = await agent.chat("Tell me a story", {"temperature": 0})
    assert len(agent.history) == 4
    assert one != two  # same prompt, longer conversation


async def test_failed_or_abandoned_calls_add_nothing_to_history() -> None:
    agent = Agent(Scripted(*text_stream("a", "b", finish=False)), model="m")
    with pytest.raises(StreamError, match="ended before the reply was complete") as info:
        await agent.chat("x")
    assert info.value.type == "network"
    agent = Agent(Scripted(*text_stream("a", "b")), model="m")
    async with agent.stream("x") as stream:
        async for _ in stream:
            break
    assert agent.history == []


# --- stop sequences enforced by the agent ---------------------------------------------


async def test_stop_sequence_split_across_chunks_when_the_provider_ignores_it() -> None:
    provider = Scripted(*text_stream("Hello wor", "ld\n", "\nBye", "more"))
    agent = Agent(provider, model="m")
    async with agent.stream("x", {"stop_sequences": ["\n\n"]}) as stream:
        deltas = [d async for d in stream]
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["Hello wor", "ld"]
    assert deltas[-1] == FinishDelta("stop", raw_reason="stop_sequence", stop_sequence="\n\n")
    assert stream.message.text == "Hello world" and stream.message.stop_sequence == "\n\n"
    # The agent stopped reading, which closed the provider's stream.
    assert provider.closed.is_set()
    assert agent.history[-1] == Turn("assistant", "Hello world")


async def test_held_back_prefix_is_released_before_the_finish() -> None:
    agent = Agent(Scripted(*text_stream("end with #", "#")), model="m")
    chunks = await collect(agent, "x", {"stop_sequences": ["###"]})
    assert chunks == ["end with ", "##"]


# --- errors, cancellation, deadlines --------------------------------------------------


async def test_error_mid_stream_is_raised_after_the_chunks_received() -> None:
    error = ErrorDelta(
        "overloaded_error", "Overloaded", {"type": "overloaded_error", "message": "Overloaded"}
    )
    agent = Agent(Scripted(MessageStart(), TextDelta("one "), TextDelta("two"), error), model="m")
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x"):
            got.append(chunk)
    assert got == ["one ", "two"]
    assert info.value.type == "overloaded" and info.value.message == "Overloaded"
    assert info.value.provider == "scripted"


async def test_cancel_event_stops_the_stream_and_closes_the_provider() -> None:
    provider = Scripted(*text_stream(*"abcdefghijklmnop"), pause=0.02)
    agent = Agent(provider, model="m")
    cancel = asyncio.Event()
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x", cancel=cancel):
            got.append(chunk)
            if len(got) == 3:
                cancel.set()
    assert info.value.type == "cancelled"
    assert got == ["a", "b", "c"]
    await asyncio.wait_for(provider.closed.wait(), 2)


async def test_task_cancellation_closes_the_provider() -> None:
    provider = Scripted(*text_stream(*"abcdefghijklmnop"), pause=0.05)
    agent = Agent(provider, model="m")
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in agent.chat_stream("x"):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(provider.closed.wait(), 2)


async def test_first_token_timeout_applies() -> None:
    agent = demo_agent(time_to_first_token=5)
    with pytest.raises(StreamError) as info:
        await agent.chat("x", {"first_token_timeout": 0.1})
    assert info.value.type == "timeout"


async def test_idle_timeout_from_the_agent_defaults() -> None:
    agent = Agent(DemoProvider(time_per_token=5), model="demo", options={"idle_timeout": 0.1})
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        async for chunk in agent.chat_stream("x"):
            got.append(chunk)
    assert info.value.type == "timeout" and len(got) == 1


# --- options --------------------------------------------------------------------------


def test_options_validate_and_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"temperature=3.*between 0 and 2"):
        StreamOptions(temperature=3)
    with pytest.raises(ValueError, match=r"max_tokens=0"):
        StreamOptions(max_tokens=0)
    with pytest.raises(ValueError, match=r"max_tokens=True"):
        StreamOptions(max_tokens=True)
    with pytest.raises(ValueError, match="stop_sequences"):
        StreamOptions(stop_sequences=["ok", ""])
    with pytest.raises(ValueError, match="idle_timeout"):
        StreamOptions(idle_timeout=0)
    with pytest.raises(ValueError, match=r"unknown option 'temprature'.*known options"):
        StreamOptions.coerce({"temprature": 1})
    with pytest.raises(TypeError, match="mapping"):
        StreamOptions.coerce(["temperature"])  # type: ignore[arg-type]


def test_options_normalise_and_merge() -> None:
    opts = StreamOptions(temperature=1, stop_sequences=["a", "a", "b"])
    assert opts.temperature == 1.0 and opts.stop_sequences == ("a", "b")
    assert StreamOptions(stop_sequences="\n\n").stop_sequences == ("\n\n",)
    merged = StreamOptions(temperature=0.5, max_tokens=10).merged({"max_tokens": 20})
    assert merged == StreamOptions(temperature=0.5, max_tokens=20)
    assert merged.to_dict() == {"temperature": 0.5, "max_tokens": 20}


async def test_invalid_call_options_fail_before_anything_is_sent() -> None:
    provider = Scripted(*text_stream("x"))
    agent = Agent(provider, model="m", options={"max_tokens": 5})
    with pytest.raises(ValueError, match="temperature"):
        agent.stream("x", {"temperature": -1})
    with pytest.raises(TypeError, match="prompt"):
        agent.stream(42)  # type: ignore[arg-type]
    assert provider.requests == []
    await agent.chat("x", {"temperature": 0.2})
    assert provider.requests[0].options == StreamOptions(temperature=0.2, max_tokens=5)


# --- without an event loop ------------------------------------------------------------


def test_chat_stream_sync_works_without_a_loop() -> None:
    agent = demo_agent()
    chunks = list(agent.chat_stream_sync("Tell me a story", {"temperature": 0, "max_tokens": 12}))
    assert len(chunks) == 12
    assert agent.chat_sync("Tell me a story", {"temperature": 0, "max_tokens": 12}) != ""
    assert len(agent.history) == 4


def test_chat_stream_sync_break_closes_the_stream() -> None:
    provider = Scripted(*text_stream(*"abcdefgh"), pause=0.01)
    agent = Agent(provider, model="m")
    iterator = agent.chat_stream_sync("x")
    assert next(iterator) == "a"
    iterator.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 2
    while not provider.closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.closed.is_set()
    assert agent.history == []


def test_chat_stream_sync_raises_stream_errors() -> None:
    agent = demo_agent(fail_after=2)
    got = []
    with pytest.raises(StreamError):
        for chunk in agent.chat_stream_sync("x"):
            got.append(chunk)
    assert len(got) == 2


def test_chat_stream_sync_from_threads() -> None:
    agent = demo_agent()
    results: list[str] = []

    def work() -> None:
        results.append("".join(agent.chat_stream_sync("t", {"temperature": 0, "max_tokens": 5})))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and len(set(results)) >= 1


def test_usage_helper_type() -> None:
    assert Usage(input_tokens=1, output_tokens=2).total_tokens == 3
