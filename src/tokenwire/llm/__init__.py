"""LLM stream protocols (sans-I/O): OpenAI chat-completions and Anthropic Messages.

Decoding (provider events -> :data:`Delta` -> :class:`Message`) and encoding
(deltas -> provider wire bytes) share the message model in :mod:`tokenwire.llm.model`.
"""

from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    Message,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)

__all__ = [
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
