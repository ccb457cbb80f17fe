"""One message model for OpenAI chat-completions and Anthropic Messages streams.

Decoders turn a provider's events into :data:`Delta` values; encoders turn deltas
back into a provider's wire events; :class:`Message` is what the deltas add up to.
Translating between protocols while streaming is "decode one, encode the other".

Finish reasons use OpenAI's vocabulary (``stop``, ``length``, ``tool_calls``,
``content_filter``); the provider's own word is kept beside it as ``raw_reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "ANTHROPIC_TO_FINISH",
    "FINISH_TO_ANTHROPIC",
    "Delta",
    "ErrorDelta",
    "FinishDelta",
    "Message",
    "MessageStart",
    "ReasoningDelta",
    "RefusalDelta",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageDelta",
]

# Anthropic stop_reason -> OpenAI finish_reason.
ANTHROPIC_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
# OpenAI finish_reason -> Anthropic stop_reason (a stop caused by a stop sequence is
# told apart by FinishDelta.stop_sequence).
FINISH_TO_ANTHROPIC: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


@dataclass(slots=True)
class Usage:
    """Token counts. ``None`` means the provider did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(slots=True)
class ToolCall:
    """A complete tool (function) call: ``arguments`` is the JSON text as streamed."""

    id: str
    name: str
    arguments: str = ""
    index: int = 0


@dataclass(slots=True)
class Message:
    """The accumulated result of one streamed reply (one choice)."""

    id: str | None = None
    model: str | None = None
    role: str = "assistant"
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- deltas: the incremental pieces, in stream order -------------------------------


@dataclass(frozen=True, slots=True)
class MessageStart:
    """The reply began: its id, model and role (and input usage if already known)."""

    id: str | None = None
    model: str | None = None
    role: str = "assistant"
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the visible reply text."""

    text: str
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of reasoning / thinking text, or (``signature``) its signature."""

    text: str = ""
    signature: str | None = None
    choice: int = 0


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A piece of an OpenAI refusal message."""

    text: str
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call number ``index``: the first fragment of a call carries
    ``id`` and ``name``; later ones only more ``arguments`` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Token counts so far. Fields that are ``None`` are not updated."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class FinishDelta:
    """The reply (choice) ended. ``reason`` is OpenAI's word, ``raw_reason`` the
    provider's own."""

    reason: str
    raw_reason: str | None = None
    stop_sequence: str | None = None
    choice: int = 0


@dataclass(frozen=True, slots=True)
class ErrorDelta:
    """The provider reported an error in the stream. ``type`` is the provider's error
    type (e.g. ``overloaded_error``, ``server_error``); ``body`` the raw error object."""

    type: str
    message: str
    body: dict[str, object] | None = None


Delta: TypeAlias = (
    MessageStart
    | TextDelta
    | ReasoningDelta
    | RefusalDelta
    | ToolCallDelta
    | UsageDelta
    | FinishDelta
    | ErrorDelta
)
