"""What an agent asks of a provider: a request in, a stream of deltas out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from tokenwire.agent.options import StreamOptions
from tokenwire.llm.model import Delta

__all__ = ["Provider", "ProviderRequest", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation."""

    role: Literal["user", "assistant"]
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """Everything a provider needs for one reply. ``options`` are already merged with
    the agent's defaults and validated."""

    model: str
    messages: Sequence[Turn]
    system: str | None = None
    options: StreamOptions = field(default_factory=StreamOptions)


@runtime_checkable
class Provider(Protocol):
    """A source of replies.

    ``stream`` is an async generator of :data:`~tokenwire.llm.model.Delta` values in
    stream order (``MessageStart``, text and other pieces, ``FinishDelta``, usage).
    Failures raise :class:`~tokenwire.errors.StreamError`; an error reported
    mid-stream may instead be yielded as an ``ErrorDelta`` (the agent raises it, after
    the chunks before it). Closing the generator early (``aclose()``) must release the
    upstream connection.
    """

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None:
        """Release pooled connections; the provider may still be used afterwards."""
        ...
