"""The built-in demo model: offline, free, deterministic, and honest about what it is.

It is **not a language model**: it recombines a bundled public-domain text (fables from
*The Aesop for Children*, 1919) with a small word-chain, so replies read like text but
do not answer the prompt. It exists so that agents, servers, gateways and load tests
work without a network or an API key, and so that clients can be tested against every
part of the protocols: paced streaming, tool calls, structured output, reasoning and
injected faults (:mod:`tokenwire.providers.demo_faults`).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from functools import cache
from importlib.resources import files
from typing import Final

import orjson

from tokenwire.errors import DropConnection, StreamError
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.requests import ChatMessage, ChatRequest, ToolCallPart, ToolResultPart, ToolSpec
from tokenwire.llm.stops import StopFilter
from tokenwire.providers.base import Item, ProviderRequest, first_token_items
from tokenwire.providers.demo_faults import Fault, parse_fault
from tokenwire.providers.demo_json import value_for_schema

__all__ = ["SPEED_ENV", "DemoProvider", "parse_speed"]

_PARAGRAPH: Final = "\n\n"
_SENTENCE_END = (".", "!", "?", '."', '!"', '?"')


class _Chain:
    """An order-2 word chain over the corpus: (word, word) -> possible next words."""

    def __init__(self, text: str) -> None:
        tokens: list[str] = []
        for paragraph in text.split("\n\n"):
            words = paragraph.split()
            if words:
                if tokens:
                    tokens.append(_PARAGRAPH)
                tokens.extend(words)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False):
            nxt = counts.setdefault((a, b), {})
            nxt[c] = nxt.get(c, 0) + 1
        # Wrap around so that every state has a successor.
        for a, b, c in ((tokens[-2], tokens[-1], _PARAGRAPH), (tokens[-1], _PARAGRAPH, tokens[0])):
            counts.setdefault((a, b), {}).setdefault(c, 1)
        # Each successor's weight is its count, discounted by the order in which the
        # corpus first used it; without the discount most branches would be ties, and
        # temperature would change nothing.
        self.next: dict[tuple[str, str], tuple[tuple[str, ...], tuple[float, ...]]] = {
            state: (tuple(nxt), tuple(c * math.exp(-rank) for rank, c in enumerate(nxt.values())))
            for state, nxt in counts.items()
        }
        # Replies start at the beginning of a sentence.
        self.starts: tuple[tuple[str, str], ...] = tuple(
            (a, b)
            for a, b in itertools.pairwise(tokens)
            if b != _PARAGRAPH and (a == _PARAGRAPH or a.endswith(_SENTENCE_END))
        )

    def pick(self, state: tuple[str, str], temperature: float, rng: random.Random) -> str:
        words, weights = self.next[state]
        if len(words) == 1:
            return words[0]
        if temperature == 0:
            return words[weights.index(max(weights))]
        # Only branch points get here, and they have a handful of successors.
        total, cumulative = 0.0, []
        for w in weights:
            total += w ** (1.0 / temperature)
            cumulative.append(total)
        return words[bisect.bisect_right(cumulative, rng.random() * total)]


@cache
def _chain() -> _Chain:
    text = files("tokenwire.providers").joinpath("corpus.txt").read_text(encoding="utf-8")
    return _Chain(text)


SPEED_ENV: Final = "TOKENWIRE_DEMO_SPEED"
"""The speed of demo models whose configuration sets none (``tokenwire serve
--demo-speed`` sets it): a factor of the realistic pace, or ``max`` for no pacing."""

# The realistic pace at speed 1: the first token after about 300 ms, then about 40
# tokens a second, each interval jittered by up to a quarter.
_FIRST_TOKEN: Final = 0.3
_PER_TOKEN: Final = 1 / 40
_JITTER: Final = 0.25
# Reasoning pieces before the answer, by effort.
_REASONING_PIECES: Final = {"minimal": 8, "low": 16, "medium": 32, "high": 64}


def parse_speed(value: object) -> float:
    """A demo speed (a positive number, or ``"max"``: unpaced) as a factor, 0 for
    unpaced. Raises ``ValueError`` naming what is accepted."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("max", "off", "0"):
            return 0.0
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"demo speed must be a positive number or 'max', not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"demo speed must be a positive number or 'max', not {value!r}")
    if not math.isfinite(value):
        return 0.0
    return float(value)


class DemoProvider:
    """The demo model as a provider: produces deltas directly, no HTTP.

    - **Deterministic**: the same conversation, options and ``seed`` give the same reply;
      at ``temperature`` 0 the reply depends on the conversation only. Without a seed
      and with ``temperature`` > 0 each call samples anew, like a real model.
    - **Paced** like a real model by default: about 300 ms to the first token, then
      about 40 tokens a second with a little jitter. ``speed`` scales that (2: twice as
      fast; ``"max"``: no pacing); unset, it is read from ``$TOKENWIRE_DEMO_SPEED``
      (``tokenwire serve --demo-speed``). ``time_to_first_token`` / ``time_per_token``
      set an exact pace instead (seconds; either one given, the other is 0).
    - **Length**: a short reply by default (25 to 70 tokens), which a smaller
      ``max_tokens`` cuts; a larger one gives a reply of about that length, generated on
      from the corpus for as long as asked. Finish reason ``length`` when cut. A
      "token" is one emitted piece: a word with its leading space, a paragraph break,
      or a fragment of JSON.
    - **Tools**: when the request offers tools and its tool choice requires one (or
      names one) it calls one; with ``auto`` it calls the tools the last user message
      names (several at once unless parallel calls are off). Arguments are valid
      against the tool's JSON schema (:mod:`~tokenwire.providers.demo_json`), streamed
      in fragments. After tool results it answers in text quoting them.
    - **Structured output**: with a JSON response format (``json_object`` or
      ``json_schema``) the reply is JSON conforming to the schema.
    - **Reasoning**: when reasoning or thinking is asked for, reasoning deltas come
      first, with a signature (Anthropic's thinking blocks carry one).
    - **Faults**: a model name ``demo:FAULT`` injects one (see
      :mod:`~tokenwire.providers.demo_faults`); ``fail_after`` reports an in-band
      ``overloaded_error`` after that many tokens on every reply.
    - Honours ``stop_sequences``; reports usage (input tokens are the words of the
      conversation, output tokens the pieces emitted, reasoning included).

    A reply costs one small dict lookup and one random draw per piece, so hundreds of
    concurrent streams are cheap.
    """

    def __init__(
        self,
        name: str = "demo",
        *,
        speed: float | str | None = None,
        time_to_first_token: float | None = None,
        time_per_token: float | None = None,
        seed: int | None = None,
        fail_after: int | None = None,
    ) -> None:
        if (time_to_first_token or 0) < 0 or (time_per_token or 0) < 0:
            raise ValueError("demo pacing (time_to_first_token, time_per_token) must be >= 0")
        if fail_after is not None and fail_after < 0:
            raise ValueError("demo fail_after must be >= 0")
        self.name = name
        if time_to_first_token is not None or time_per_token is not None:
            self.speed = 0.0
            self.time_to_first_token = time_to_first_token or 0.0
            self.time_per_token = time_per_token or 0.0
            self.jitter = 0.0
        else:
            if speed is None:
                speed = os.environ.get(SPEED_ENV) or 1.0
            self.speed = parse_speed(speed)
            scale = 1 / self.speed if self.speed else 0.0
            self.time_to_first_token = _FIRST_TOKEN * scale
            self.time_per_token = _PER_TOKEN * scale
            self.jitter = _JITTER if scale else 0.0
        self.seed = seed
        self.fail_after = fail_after

    def __repr__(self) -> str:
        return (
            f"DemoProvider(name={self.name!r}, time_to_first_token={self.time_to_first_token}, "
            f"time_per_token={self.time_per_token}, seed={self.seed!r})"
        )

    protocol: str | None = None  # no wire: deltas only
    secret: bytes | None = None

    async def aclose(self) -> None:
        """Nothing to release."""

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        """Compose a reply for a conversation turn (see the class docstring)."""
        chat = request.to_chat()
        fault = _fault_of(chat.model)  # an HTTP fault raises here, before any delta
        async with contextlib.aclosing(self._reply(chat, fault)) as deltas:
            async for delta in deltas:
                yield delta

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        """The reply's items (deltas only: the demo model has no wire bytes). A fault
        asked for in the model name that is an HTTP error raises it here."""
        fault = _fault_of(request.model)
        return first_token_items(_items(self._reply(request, fault)))

    def _pause(self, seconds: float) -> float:
        if self.jitter:
            seconds *= 1 + random.uniform(-self.jitter, self.jitter)
        return seconds

    async def _reply(
        self, request: ChatRequest, fault: Fault | None
    ) -> AsyncGenerator[Delta, None]:
        temperature = 1.0 if request.temperature is None else request.temperature
        # A final assistant message is a prefill: the reply goes on from it, as the one
        # without it would have (what a gateway continuing a cut reply relies on).
        prefill = _prefill_of(request)
        prefill_words = len(prefill.split())
        input_tokens = prefill_words
        if prefill:
            request = dataclasses.replace(request, messages=request.messages[:-1])
        digest = hashlib.blake2b(digest_size=16)
        # The model without a fault suffix: a faulty reply says what the sound one says.
        for part in (request.model.partition(":")[0], request.system or ""):
            digest.update(part.encode() + b"\x00")
        input_tokens += len((request.system or "").split())
        for message in request.messages:
            text = _message_text(message)
            digest.update(f"{message.role}\x00{text}\x00".encode())
            input_tokens += len(text.split())
        seed = request.seed if request.seed is not None else self.seed
        if temperature == 0:
            material = digest.digest()
        elif seed is not None:
            material = digest.digest() + seed.to_bytes(16, "big", signed=True)
        else:
            material = os.urandom(16)
        rng = random.Random(material)

        # The start comes with the first token, as from an OpenAI upstream, so that a
        # first-chunk deadline measures the time to first token.
        if self.time_to_first_token:
            await asyncio.sleep(self._pause(self.time_to_first_token))
        yield MessageStart(
            id=f"demo-{os.urandom(8).hex()}",
            model=request.model,
            usage=Usage(input_tokens=input_tokens, output_tokens=0),
        )

        stops = StopFilter(request.stop)
        limit = request.max_tokens
        fail_after = self.fail_after
        produced = reasoning = 0
        finish: FinishDelta | None = None
        # A text reply is made long enough for an in-stream fault to happen.
        planned = request
        if prefill and request.max_tokens is not None:
            # The whole reply's length, of which the prefill is the start.
            pieces_so_far = prefill_words + prefill.count(_PARAGRAPH)
            planned = dataclasses.replace(request, max_tokens=request.max_tokens + pieces_so_far)
        pieces = _plan(planned, rng, temperature, fault.after + 1 if fault else 0)
        if prefill:
            pieces = _after(pieces, len(prefill))
        for piece in pieces:
            if type(piece) is FinishDelta:
                finish = piece
                break
            if fail_after is not None and produced >= fail_after:
                yield _overloaded("demo model: simulated failure (fail_after)")
                return
            if fault is not None and produced >= fault.after:
                if fault.kind == "error":
                    yield _overloaded(f"demo model: simulated error after {produced} tokens")
                    return
                if fault.kind == "cut":
                    raise DropConnection(f"demo model: connection cut after {produced} tokens")
                await asyncio.Event().wait()  # stall: until the caller gives up
            if limit is not None and produced >= limit:
                finish = FinishDelta("length", raw_reason="length")
                break
            produced += 1
            if type(piece) is TextDelta:
                text = stops.feed(piece.text)
                if text:
                    yield TextDelta(text)
                if stops.stopped:
                    finish = FinishDelta(
                        "stop", raw_reason="stop_sequence", stop_sequence=stops.matched
                    )
                    break
            else:
                if type(piece) is ReasoningDelta:
                    reasoning += 1
                yield piece
            if self.time_per_token:
                await asyncio.sleep(self._pause(self.time_per_token))
        rest = stops.flush()
        if rest:
            yield TextDelta(rest)
        yield finish or FinishDelta("stop", raw_reason="stop")
        yield UsageDelta(
            Usage(
                input_tokens=input_tokens,
                output_tokens=produced,
                reasoning_tokens=reasoning or None,
            )
        )


def _prefill_of(request: ChatRequest) -> str:
    """The text of a final assistant message without tool calls ("" if none)."""
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != "assistant":
        return ""
    if any(isinstance(p, ToolCallPart) for p in last.parts):
        return ""
    return last.text


def _after(pieces: Iterator[Delta], skip: int) -> Iterator[Delta]:
    """``pieces`` without the text pieces that cover their first ``skip`` characters.
    A reply that would have begun with the prefill (the same request, deterministic)
    goes on exactly after it; a sampled one goes on at the next whole piece, so that
    words stay whole where the two meet."""
    for piece in pieces:
        if skip > 0 and type(piece) is TextDelta:
            skip -= len(piece.text)
            continue
        yield piece


def _fault_of(model: str) -> Fault | None:
    """The in-stream fault the model name asks for; raises an HTTP one."""
    _, sep, spec = model.partition(":")
    if not sep:
        return None
    fault = parse_fault(spec)
    if isinstance(fault, StreamError):
        raise fault
    return fault


def _overloaded(message: str) -> ErrorDelta:
    return ErrorDelta("overloaded_error", message, {"type": "overloaded_error", "message": message})


def _message_text(message: ChatMessage) -> str:
    """What a message says, tool calls and results included (for usage and the seed)."""
    if message.text:
        return message.text
    out: list[str] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            out.append(part.content)
        elif isinstance(part, ToolCallPart):
            out.append(f"{part.name} {part.arguments}")
    return "\n".join(out)


# -- what a reply says: a plan of pieces (one token each), ending with its finish -------


def _plan(
    request: ChatRequest, rng: random.Random, temperature: float, at_least: int = 0
) -> Iterator[Delta]:
    if request.reasoning_effort is not None or request.reasoning_budget is not None:
        yield from _reasoning(request, rng, temperature)
    last = request.messages[-1] if request.messages else None
    results = [p for p in last.parts if isinstance(p, ToolResultPart)] if last else []
    said = last.text if last is not None and last.role == "user" and not results else ""
    tools = _tools_to_call(request, said, rng)
    if tools:
        yield from _tool_calls(tools, rng, temperature)
        return
    fmt = request.response_format
    if fmt is not None:  # the answer, even after tool results, is the JSON asked for
        schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        value = value_for_schema(schema, rng, _phrase(temperature))
        for fragment in _fragments(orjson.dumps(value).decode(), rng):
            yield TextDelta(fragment)
        return
    if results:
        yield from _answer_results(request, results, rng, temperature)
        return
    yield from _text(rng, temperature, max(_length(request.max_tokens, rng), at_least))


def _length(max_tokens: int | None, rng: random.Random) -> int:
    """The reply's natural length in pieces: 25 to 70 by default, which a smaller
    ``max_tokens`` cuts (as a real model's limit does); a larger one asks for a reply of
    about that length (a quarter either side, so some are cut at the limit)."""
    natural = rng.randint(25, 70)
    if max_tokens is None or max_tokens <= 70:
        return natural
    return rng.randint(max(natural, max_tokens * 3 // 4), max_tokens + max_tokens // 4 + 1)


def _pieces(rng: random.Random, temperature: float) -> Iterator[str]:
    """Pieces of text from the word chain, for ever (it wraps around the corpus)."""
    chain = _chain()
    state = chain.starts[rng.randrange(len(chain.starts))]
    after_break = True
    while True:
        word = state[1]
        if word == _PARAGRAPH:
            after_break = True
            yield _PARAGRAPH
        else:
            yield word if after_break else " " + word
            after_break = False
        state = (state[1], chain.pick(state, temperature, rng))


def _text(rng: random.Random, temperature: float, target: int) -> Iterator[TextDelta]:
    """About ``target`` pieces, ending at the end of a sentence (or 40 pieces later)."""
    for produced, piece in enumerate(_pieces(rng, temperature), 1):
        yield TextDelta(piece)
        if produced >= target and (piece.endswith(_SENTENCE_END) or produced >= target + 40):
            return


def _phrase(temperature: float) -> Callable[[random.Random, int], str]:
    def phrase(rng: random.Random, words: int) -> str:
        text = "".join(itertools.islice(_pieces(rng, temperature), words))
        return " ".join(text.replace('"', "").split())

    return phrase


def _fragments(text: str, rng: random.Random) -> Iterator[str]:
    """``text`` in pieces of 2 to 8 characters, as a model streams JSON."""
    at = 0
    while at < len(text):
        step = rng.randint(2, 8)
        yield text[at : at + step]
        at += step


def _reasoning(request: ChatRequest, rng: random.Random, temperature: float) -> Iterator[Delta]:
    pieces = _REASONING_PIECES.get(request.reasoning_effort or "", 16)
    digest = hashlib.blake2b(digest_size=24)
    for piece in itertools.islice(_pieces(rng, temperature), pieces):
        digest.update(piece.encode())
        yield ReasoningDelta(piece)
    # Signed, as Anthropic signs thinking blocks (this signature proves nothing).
    yield ReasoningDelta(signature="demo-" + base64.b64encode(digest.digest()).decode())


def _tools_to_call(request: ChatRequest, said: str, rng: random.Random) -> list[ToolSpec]:
    """The tools to call: the named one; with ``auto``, those the user's last message
    names; when a call is required and none is named, one not called yet in the
    conversation if there is one (as a model moves on to a final-answer tool)."""
    tools = request.tools
    choice = request.tool_choice or "auto"
    if not tools or choice == "none":
        return []
    if choice not in ("auto", "required"):
        return [t for t in tools if t.name == choice][:1]
    lowered = said.lower()
    named = sorted(
        (t for t in tools if t.name.lower() in lowered), key=lambda t: lowered.index(t.name.lower())
    )
    if not named and choice == "required":
        called = {p.name for m in request.messages for p in m.parts if isinstance(p, ToolCallPart)}
        fresh = [t for t in tools if t.name not in called] or tools
        named = [fresh[rng.randrange(len(fresh))]]
    return named[:1] if request.parallel_tool_calls is False else named


def _tool_calls(tools: list[ToolSpec], rng: random.Random, temperature: float) -> Iterator[Delta]:
    for index, tool in enumerate(tools):
        call_id = f"call_{rng.getrandbits(96):024x}"
        yield ToolCallDelta(index, id=call_id, name=tool.name)
        arguments = value_for_schema(tool.parameters, rng, _phrase(temperature))
        for fragment in _fragments(orjson.dumps(arguments).decode(), rng):
            yield ToolCallDelta(index, arguments=fragment)
    yield FinishDelta("tool_calls")


def _answer_results(
    request: ChatRequest, results: list[ToolResultPart], rng: random.Random, temperature: float
) -> Iterator[TextDelta]:
    names = {p.id: p.name for m in request.messages for p in m.parts if isinstance(p, ToolCallPart)}
    said: list[str] = []
    for result in results:
        name = names.get(result.tool_call_id, "the tool")
        content = " ".join(result.content.split())
        if len(content) > 300:
            content = content[:300] + "..."
        verb = "failed with" if result.is_error else "returned"
        said.append(f"{name} {verb} {content}.")
    words = " ".join(said).split(" ")
    yield TextDelta(words[0])
    for word in words[1:]:
        yield TextDelta(" " + word)
    yield TextDelta(_PARAGRAPH)
    yield from _text(rng, temperature, rng.randint(10, 25))


async def _items(deltas: AsyncIterator[Delta]) -> AsyncGenerator[Item, None]:
    try:
        async for delta in deltas:
            yield None, [delta]
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()
