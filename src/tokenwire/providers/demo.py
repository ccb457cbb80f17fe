"""The built-in demo model: offline, free, deterministic, and honest about what it is.

It is **not a language model**: it recombines a bundled public-domain text (fables from
*The Aesop for Children*, 1919) with a small word-chain, so replies read like text but
do not answer the prompt. It exists so that agents, servers, gateways and load tests
work without a network or an API key, and it can stand in for a real upstream with
realistic pacing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import itertools
import math
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator
from functools import cache
from importlib.resources import files
from typing import Final

from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    TextDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.requests import ChatRequest, ToolResultPart
from tokenwire.llm.stops import StopFilter
from tokenwire.providers.base import Item, ProviderRequest, first_token_items

__all__ = ["DemoProvider"]

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


class DemoProvider:
    """The demo model as a provider: produces deltas directly, no HTTP.

    - Deterministic: the same conversation, options and ``seed`` give the same reply;
      at ``temperature`` 0 the reply depends on the conversation only. Without a seed
      and with ``temperature`` > 0 each call samples anew, like a real model.
    - ``temperature`` (default 1) flattens (>1) or sharpens (<1) the word choice.
    - Pacing: ``time_to_first_token`` seconds before the first piece, then
      ``time_per_token`` seconds per piece (both default 0: as fast as possible).
    - Honours ``max_tokens`` (a "token" is one emitted piece: a word with its leading
      space, or a paragraph break) and ``stop_sequences``; reports usage (input tokens
      are the words of the conversation).
    - ``fail_after``: if set, report an in-band ``overloaded_error`` after that many
      pieces, to rehearse error handling.

    A reply costs one small dict lookup and one random draw per piece, so hundreds of
    concurrent streams are cheap.
    """

    def __init__(
        self,
        name: str = "demo",
        *,
        time_to_first_token: float = 0.0,
        time_per_token: float = 0.0,
        seed: int | None = None,
        fail_after: int | None = None,
    ) -> None:
        if time_to_first_token < 0 or time_per_token < 0:
            raise ValueError("demo pacing (time_to_first_token, time_per_token) must be >= 0")
        if fail_after is not None and fail_after < 0:
            raise ValueError("demo fail_after must be >= 0")
        self.name = name
        self.time_to_first_token = time_to_first_token
        self.time_per_token = time_per_token
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
        async with contextlib.aclosing(self._reply(request.to_chat())) as deltas:
            async for delta in deltas:
                yield delta

    async def open(self, request: ChatRequest, *, raw: bool = False) -> AsyncIterator[Item]:
        """The reply's items (deltas only: the demo model has no wire bytes)."""
        return first_token_items(_items(self._reply(request)))

    async def _reply(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        chain = _chain()
        temperature = 1.0 if request.temperature is None else request.temperature
        digest = hashlib.blake2b(digest_size=16)
        for part in (request.model, request.system or ""):
            digest.update(part.encode() + b"\x00")
        input_tokens = len((request.system or "").split())
        for message in request.messages:
            text = message.text or "\n".join(
                p.content for p in message.parts if isinstance(p, ToolResultPart)
            )
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
            await asyncio.sleep(self.time_to_first_token)
        yield MessageStart(
            id=f"demo-{os.urandom(8).hex()}",
            model=request.model,
            usage=Usage(input_tokens=input_tokens, output_tokens=0),
        )

        stops = StopFilter(request.stop)
        limit = request.max_tokens
        target = rng.randint(25, 70)
        state = chain.starts[rng.randrange(len(chain.starts))]
        word = state[1]
        produced = 0
        finish = FinishDelta("stop", raw_reason="stop")
        after_break = True
        while True:
            if self.fail_after is not None and produced >= self.fail_after:
                yield ErrorDelta(
                    "overloaded_error",
                    "demo model: simulated failure (fail_after)",
                    {"type": "overloaded_error", "message": "demo model: simulated failure"},
                )
                return
            if limit is not None and produced >= limit:
                finish = FinishDelta("length", raw_reason="length")
                break
            if word == _PARAGRAPH:
                piece = _PARAGRAPH
                after_break = True
            else:
                piece = word if after_break else " " + word
                after_break = False
            produced += 1
            text = stops.feed(piece)
            if text:
                yield TextDelta(text)
            if stops.stopped:
                finish = FinishDelta(
                    "stop", raw_reason="stop_sequence", stop_sequence=stops.matched
                )
                break
            if produced >= target and (word.endswith(_SENTENCE_END) or produced >= target + 40):
                break
            state = (state[1], chain.pick(state, temperature, rng))
            word = state[1]
            if self.time_per_token:
                await asyncio.sleep(self.time_per_token)
        rest = stops.flush()
        if rest:
            yield TextDelta(rest)
        yield finish
        yield UsageDelta(Usage(input_tokens=input_tokens, output_tokens=produced))


async def _items(deltas: AsyncIterator[Delta]) -> AsyncGenerator[Item, None]:
    try:
        async for delta in deltas:
            yield None, [delta]
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()
