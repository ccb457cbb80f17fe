"""Every recorded stream decodes to the message the official SDK builds from the same bytes.

The oracle is each SDK's own accumulation, fed the recorded body through an httpx2
MockTransport: openai's ``ChatCompletionStreamState`` (its
``current_completion_snapshot``) over the chunks of
``chat.completions.create(stream=True)``, and anthropic's ``messages.stream()``
``get_final_message()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx2
import jiter
import openai
import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tokenwire.llm import (
    MessageBuilder,
    StreamDecoder,
    accumulate,
    accumulate_choices,
)
from tokenwire.llm.model import ANTHROPIC_TO_FINISH, Message
from tokenwire.sse import SSEDecoder

from .conftest import recorded_dir, recorded_files

OPENAI = recorded_files("openai")
ANTHROPIC = recorded_files("anthropic")


def _mock_client(body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _events_whole_body(raw: bytes) -> list[Any]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.feed(b"\n\n")


# --- OpenAI ----------------------------------------------------------------------


def _openai_oracle(raw: bytes) -> Any:
    client = openai.OpenAI(api_key="test", http_client=_mock_client(raw), max_retries=0)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for chunk in stream:
        state.handle_chunk(chunk)
    # The snapshot is the accumulated completion; get_final_completion() would also
    # try to parse structured output, and refuses finish_reason "length" for that.
    return state.current_completion_snapshot


def _check_openai_choice(ours: Message, choice: Any, completion: Any) -> None:
    sdk = choice.message
    assert ours.text == (sdk.content or "")
    assert ours.refusal == sdk.refusal
    assert ours.role == sdk.role
    assert ours.finish_reason == choice.finish_reason
    assert ours.raw_finish_reason == choice.finish_reason
    assert ours.id == completion.id
    assert ours.model == completion.model
    sdk_calls = sdk.tool_calls or []
    assert [(c.id, c.name, c.arguments) for c in ours.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in sdk_calls
    ]
    usage = completion.usage
    assert ours.usage.input_tokens == usage.prompt_tokens
    assert ours.usage.output_tokens == usage.completion_tokens
    assert ours.usage.total_tokens == usage.total_tokens
    details = usage.completion_tokens_details
    assert ours.usage.reasoning_tokens == (details.reasoning_tokens if details else None)


@pytest.mark.parametrize("path", OPENAI or [None], ids=lambda p: p.name if p else "missing")
def test_openai_recorded_matches_sdk(path: Path | None) -> None:
    if path is None:
        recorded_dir("openai")
        return
    raw = path.read_bytes()
    completion = _openai_oracle(raw)
    choices = accumulate_choices(raw, protocol="openai")
    assert sorted(choices) == [c.index for c in completion.choices]
    for choice in completion.choices:
        _check_openai_choice(choices[choice.index], choice, completion)
    # choice 0 is "the" message; auto-detection agrees with the explicit protocol
    assert accumulate(raw) == choices[0]


# --- Anthropic -------------------------------------------------------------------


def _anthropic_oracle(raw: bytes) -> dict[str, Any]:
    """What the SDK makes of the body, as plain data."""
    client = anthropic.Anthropic(api_key="test", http_client=_mock_client(raw), max_retries=0)
    params: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        with client.messages.stream(**params) as stream:
            msg = stream.get_final_message()
    except AttributeError:
        # anthropic 2.11 cannot accumulate a message_start without usage (newer SDKs
        # can); fall back to the SDK's own parsed events and add them up plainly.
        return _anthropic_events_oracle(client, params)
    except ValueError as exc:
        # The SDK refuses tool input that is not valid JSON; it quotes the buffer.
        return {"invalid_json": str(exc).split("JSON: ", 1)[1]}
    usage = msg.usage
    details = getattr(usage, "output_tokens_details", None)
    return {
        "id": msg.id,
        "model": msg.model,
        "text": "".join(b.text for b in msg.content if b.type == "text"),
        "reasoning": "".join(b.thinking for b in msg.content if b.type == "thinking"),
        "tools": [(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"],
        "stop_reason": msg.stop_reason,
        "stop_sequence": msg.stop_sequence,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read": usage.cache_read_input_tokens,
        "cache_creation": usage.cache_creation_input_tokens,
        "thinking_tokens": details.thinking_tokens if details else None,
    }


def _anthropic_events_oracle(client: anthropic.Anthropic, params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"text": "", "reasoning": "", "tools": [], "input_tokens": None}
    out.update(cache_read=None, cache_creation=None, thinking_tokens=None)
    for ev in client.messages.create(stream=True, **params):
        if ev.type == "message_start":
            out["id"], out["model"] = ev.message.id, ev.message.model
        elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            out["text"] += ev.delta.text
        elif ev.type == "message_delta":
            out["stop_reason"] = ev.delta.stop_reason
            out["stop_sequence"] = ev.delta.stop_sequence
            out["output_tokens"] = ev.usage.output_tokens
            for key, name in (
                ("input_tokens", "input_tokens"),
                ("cache_read", "cache_read_input_tokens"),
                ("cache_creation", "cache_creation_input_tokens"),
            ):
                if getattr(ev.usage, name, None) is not None:
                    out[key] = getattr(ev.usage, name)
            details = getattr(ev.usage, "output_tokens_details", None)
            if details is not None:
                out["thinking_tokens"] = details.thinking_tokens
    return out


@pytest.mark.parametrize("path", ANTHROPIC or [None], ids=lambda p: p.name if p else "missing")
def test_anthropic_recorded_matches_sdk(path: Path | None) -> None:
    if path is None:
        recorded_dir("anthropic")
        return
    raw = path.read_bytes()
    oracle = _anthropic_oracle(raw)
    ours = accumulate(raw, protocol="anthropic")
    assert accumulate(raw) == ours  # auto-detection
    if "invalid_json" in oracle:
        (call,) = ours.tool_calls
        assert call.arguments.startswith(oracle["invalid_json"])
        with pytest.raises(ValueError):
            orjson.loads(call.arguments)
        return
    assert ours.id == oracle["id"]
    assert ours.model == oracle["model"]
    assert ours.text == oracle["text"]
    assert ours.reasoning == oracle["reasoning"]
    # tool input: the SDK keeps the parsed (partially, if cut off) object, we the text
    assert [
        (c.id, c.name, jiter.from_json(c.arguments.encode(), partial_mode=True))
        for c in ours.tool_calls
    ] == oracle["tools"]
    assert ours.raw_finish_reason == oracle["stop_reason"]
    expected = ANTHROPIC_TO_FINISH[oracle["stop_reason"]] if oracle["stop_reason"] else None
    assert ours.finish_reason == expected
    assert ours.stop_sequence == oracle["stop_sequence"]
    assert ours.usage.input_tokens == oracle["input_tokens"]
    assert ours.usage.output_tokens == oracle["output_tokens"]
    assert ours.usage.cache_read_input_tokens == oracle["cache_read"]
    assert ours.usage.cache_creation_input_tokens == oracle["cache_creation"]
    assert ours.usage.reasoning_tokens == oracle["thinking_tokens"]


# --- the deltas add up to the same message ------------------------------------------


@pytest.mark.parametrize(
    "path",
    [*OPENAI, *ANTHROPIC] or [None],
    ids=lambda p: f"{p.parent.name}/{p.name}" if p else "missing",
)
def test_recorded_deltas_rebuild_the_message(path: Path | None) -> None:
    """The deltas carry everything: adding them up gives the decoder's own message."""
    if path is None:
        recorded_dir("openai")
        return
    decoder = StreamDecoder()
    builder = MessageBuilder()
    for event in _events_whole_body(path.read_bytes()):
        for delta in decoder.feed(event):
            builder.feed(delta)
    assert decoder.done
    assert builder.messages == decoder.messages
