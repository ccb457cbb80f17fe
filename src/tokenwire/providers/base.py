"""What a provider is: a chat request in, a stream of deltas (and wire bytes) out.

Providers are used by both the agent (``stream``: deltas for a conversation) and the
gateway (``open``: items with the upstream's own wire bytes, for pass-through).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from tokenwire.llm.model import Delta, MessageStart, UsageDelta
from tokenwire.llm.requests import ChatMessage, ChatRequest, TextPart
from tokenwire.options import StreamOptions

__all__ = ["Item", "Provider", "ProviderRequest", "Turn", "first_token_items", "stream_deltas"]

Item = tuple[bytes | None, list[Delta]]
"""The upstream's SSE bytes for the deltas (when asked for them, else None) and the
deltas they decoded to."""

_PREAMBLE = (MessageStart, UsageDelta)


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation."""

    role: Literal["user", "assistant"]
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """Everything a provider needs for one reply of a conversation. ``options`` are
    already merged with the agent's defaults and validated."""

    model: str
    messages: Sequence[Turn]
    system: str | None = None
    options: StreamOptions = field(default_factory=StreamOptions)

    def to_chat(self, max_stops: int | None = None) -> ChatRequest:
        """The neutral chat request for it (at most ``max_stops`` stop sequences: the
        agent enforces all of them itself)."""
        opts = self.options
        stops = list(opts.stop_sequences or ())
        return ChatRequest(
            model=self.model,
            messages=[ChatMessage(t.role, [TextPart(t.content)]) for t in self.messages],
            system=self.system,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            stop=stops[:max_stops] if max_stops is not None else stops,
            seed=opts.seed,
            stream=True,
            include_usage=True,
        )


@runtime_checkable
class Provider(Protocol):
    """A source of replies.

    - ``open(request, raw=False)`` sends a :class:`~tokenwire.llm.requests.ChatRequest`
      and, once the upstream answered, returns its items (:data:`Item`; with the
      upstream's wire bytes if ``raw``). Anything before the first token (a role chunk,
      ``message_start``) comes merged into the first token's item. A failure before
      that raises :class:`~tokenwire.errors.StreamError`, so that a server can still
      answer with an HTTP status.
    - ``stream(request)`` is the agent's view: the deltas of a conversation turn.
      Failures raise :class:`~tokenwire.errors.StreamError`; an error reported
      mid-stream may instead be yielded as an ``ErrorDelta``.

    Closing the iterator early (``aclose()``) releases the upstream connection.
    ``protocol`` is the wire protocol the upstream speaks (``None``: no wire at all, as
    for the demo model); ``secret`` its key, which nothing may forward to a client.
    """

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None:
        """Release pooled connections; the provider may still be used afterwards."""
        ...


async def stream_deltas(items: AsyncIterator[Item]) -> AsyncGenerator[Delta, None]:
    """The deltas of ``items``, closing them when done (or closed early)."""
    try:
        async for _, deltas in items:
            for delta in deltas:
                yield delta
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def first_token_items(items: AsyncGenerator[Item, None]) -> AsyncGenerator[Item, None]:
    """``items``, with everything before the first token held and merged into it, so that
    a first-token deadline measures the time to the first token, as its name says."""
    try:
        held_raw: list[bytes] = []
        held: list[Delta] = []
        async for raw, deltas in items:
            if all(type(d) in _PREAMBLE for d in deltas):
                held.extend(deltas)
                if raw is not None:
                    held_raw.append(raw)
                continue
            yield (b"".join([*held_raw, raw]) if raw is not None else None), held + deltas
            break
        else:
            if held or held_raw:
                yield (b"".join(held_raw) if held_raw else None), held
            return
        async for item in items:
            yield item
    finally:
        await items.aclose()
