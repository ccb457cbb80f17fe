"""LLM stream protocols (sans-I/O): OpenAI chat completions, Anthropic Messages, the
OpenAI Responses API and Gemini, each a :class:`WireProtocol` in the registry
(:func:`get_protocol`, :func:`protocols`).

Decoding (provider events -> :data:`Delta` -> :class:`Message`) and encoding
(deltas -> provider wire bytes) share the message model in :mod:`tokenwire.llm.model`.

- :class:`StreamDecoder` turns SSE events into deltas, one event at a time.
- :func:`accumulate` turns a whole stream (bytes or events) into a :class:`Message`.
- :class:`MessageBuilder` adds up deltas from any source.
- :class:`OpenAIChunkEncoder`, :class:`AnthropicEventEncoder`,
  :class:`ResponsesEventEncoder` and :class:`GeminiEventEncoder` turn deltas into wire
  bytes.
"""

from tokenwire.llm.accumulate import (
    MessageBuilder,
    accumulate,
    accumulate_choices,
    error_from_delta,
)
from tokenwire.llm.anthropic_decode import AnthropicStreamDecoder
from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
from tokenwire.llm.decode import StreamDecodeError, StreamDecoder, detect_protocol
from tokenwire.llm.gemini import GeminiEventEncoder, GeminiStreamDecoder
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
from tokenwire.llm.openai_decode import OpenAIStreamDecoder
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.openai_responses import ResponsesEventEncoder, ResponsesStreamDecoder
from tokenwire.llm.protocol import WireProtocol, get_protocol, protocol_names, protocols

__all__ = [
    "AnthropicEventEncoder",
    "AnthropicStreamDecoder",
    "Delta",
    "ErrorDelta",
    "FinishDelta",
    "GeminiEventEncoder",
    "GeminiStreamDecoder",
    "Message",
    "MessageBuilder",
    "MessageStart",
    "OpenAIChunkEncoder",
    "OpenAIStreamDecoder",
    "ReasoningDelta",
    "RefusalDelta",
    "ResponsesEventEncoder",
    "ResponsesStreamDecoder",
    "StreamDecodeError",
    "StreamDecoder",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageDelta",
    "WireProtocol",
    "accumulate",
    "accumulate_choices",
    "detect_protocol",
    "error_from_delta",
    "get_protocol",
    "protocol_names",
    "protocols",
]
