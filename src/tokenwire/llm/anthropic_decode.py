"""Decode Anthropic Messages stream events into :data:`~tokenwire.llm.model.Delta`s.

Sans-I/O: :class:`AnthropicStreamDecoder` takes :class:`~tokenwire.sse.ServerSentEvent`
objects and returns deltas. Handles ``message_start``, ``content_block_start`` /
``_delta`` / ``_stop`` (``text_delta``, ``thinking_delta``, ``signature_delta``,
``input_json_delta``), ``message_delta`` (stop reason, cumulative ``output_tokens``),
``message_stop``, ``ping`` and ``event: error``. Unknown events and block types (server
tools, citations, compaction, ...) are skipped, so newer streams still decode.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm._state import ChoiceState, StreamDecodeError, apply_usage, as_int
from tokenwire.llm.model import (
    ANTHROPIC_TO_FINISH,
    Delta,
    ErrorDelta,
    FinishDelta,
    Message,
    MessageStart,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.sse import ServerSentEvent

__all__ = ["AnthropicStreamDecoder"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _usage(raw: Any) -> Usage | None:
    if type(raw) is not dict:
        return None
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if type(details) is dict else None
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_input_tokens=as_int(raw.get("cache_read_input_tokens")),
        cache_creation_input_tokens=as_int(raw.get("cache_creation_input_tokens")),
        reasoning_tokens=as_int(thinking),
    )


class AnthropicStreamDecoder:
    """Incremental decoder for an Anthropic Messages stream.

    ``feed(event)`` returns the deltas that event carries (possibly none). Client tool
    calls (``tool_use`` blocks) become tool calls numbered 0, 1, ... in stream order;
    server-side tools (``server_tool_use``, web search results, ...) are not client tool
    calls and are skipped. A tool call that streamed no input gets ``"{}"`` at its
    ``content_block_stop``. ``event: error`` becomes an
    :class:`~tokenwire.llm.model.ErrorDelta`.

    ``close()`` ends the stream; a stream cut off before ``message_stop`` (and without
    an error event) raises :class:`~tokenwire.errors.StreamError` of type ``"network"``
    rather than passing for a short but complete message. ``done`` is true once
    ``message_stop`` arrived. Events whose data is not a JSON object raise
    :class:`StreamDecodeError`; events with empty data are ignored.
    """

    protocol = "anthropic"

    __slots__ = ("_blocks", "_done", "_error", "_state", "_tool_inputs", "_tools")

    def __init__(self) -> None:
        self._state = ChoiceState(Message())
        self._blocks: dict[int, str] = {}  # content block index -> block type
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._tool_inputs: dict[int, Any] = {}  # block index -> input given at block start
        self._done = False
        self._error: ErrorDelta | None = None

    @property
    def done(self) -> bool:
        """``message_stop`` was received."""
        return self._done

    @property
    def error(self) -> ErrorDelta | None:
        """The in-band error the stream reported, if any."""
        return self._error

    @property
    def message(self) -> Message:
        """The message as accumulated so far."""
        return self._state.sync()

    @property
    def messages(self) -> dict[int, Message]:
        """``{0: message}`` (Anthropic streams have one reply)."""
        return {0: self._state.sync()}

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas."""
        data = event.data
        if not data:
            return []
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            raise StreamDecodeError(
                f"Anthropic stream event data is not JSON: {data[:200]!r}", event=event
            ) from None
        if type(obj) is not dict:
            raise StreamDecodeError(
                f"Anthropic stream event data is not a JSON object: {data[:200]!r}", event=event
            )
        kind = obj.get("type") or event.event
        if kind == "content_block_delta":
            return self._block_delta(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "content_block_stop":
            return self._block_stop(obj)
        if kind == "message_delta":
            return self._message_delta(obj)
        if kind == "message_start":
            return self._message_start(obj)
        if kind == "message_stop":
            self._done = True
            return []
        if kind == "error" or event.event == "error":
            error = obj.get("error")
            if type(error) is not dict:
                error = obj
            delta = ErrorDelta(
                str(error.get("type") or "api_error"),
                str(error.get("message") or "an error occurred during streaming"),
                error,
            )
            self._error = delta
            return [delta]
        return []  # ping and event types this model has no place for

    def _message_start(self, obj: dict[str, Any]) -> list[Delta]:
        raw = obj.get("message")
        if type(raw) is not dict:
            raw = {}
        msg = self._state.message
        msg.id = raw.get("id")
        msg.model = raw.get("model")
        msg.role = str(raw.get("role") or "assistant")
        usage = _usage(raw.get("usage"))
        if usage is not None:
            apply_usage(msg.usage, usage)
        return [MessageStart(id=msg.id, model=msg.model, role=msg.role, usage=usage)]

    def _block_start(self, obj: dict[str, Any]) -> list[Delta]:
        index = obj.get("index", 0)
        block = obj.get("content_block")
        if type(block) is not dict:
            return []
        kind = str(block.get("type"))
        self._blocks[index] = kind
        state = self._state
        if kind == "text":
            text = block.get("text")
            if text:
                state.add_text(text)
                return [TextDelta(text)]
        elif kind == "thinking":
            thinking = block.get("thinking")
            signature = block.get("signature") or None
            if signature:
                state.message.reasoning_signature = signature
            if thinking or signature:
                if thinking:
                    state.add_reasoning(thinking)
                return [ReasoningDelta(thinking or "", signature=signature)]
        elif kind == "tool_use":
            tool_index = len(self._tools)
            self._tools[index] = tool_index
            self._tool_inputs[index] = block.get("input")
            call_id = block.get("id") or ""
            name = block.get("name") or ""
            state.tool(tool_index, call_id, name)
            return [ToolCallDelta(tool_index, id=call_id, name=name)]
        return []

    def _block_delta(self, obj: dict[str, Any]) -> list[Delta]:
        index = obj.get("index", 0)
        delta = obj.get("delta")
        if type(delta) is not dict:
            return []
        kind = delta.get("type")
        if kind is None:  # tolerate deltas that forgot their type
            kind = "text_delta" if "text" in delta else "input_json_delta"
        block = self._blocks.get(index)
        state = self._state
        if kind == "text_delta":
            text = delta.get("text")
            if text and (block is None or block == "text"):
                state._text.append(text)
                state._dirty = True
                return [TextDelta(text)]
        elif kind == "input_json_delta":
            tool_index = self._tools.get(index)
            partial = delta.get("partial_json")
            if tool_index is not None and partial:
                state.add_arguments(tool_index, partial)
                return [ToolCallDelta(tool_index, arguments=partial)]
        elif kind == "thinking_delta":
            thinking = delta.get("thinking")
            if thinking and (block is None or block == "thinking"):
                state.add_reasoning(thinking)
                return [ReasoningDelta(thinking)]
        elif kind == "signature_delta":
            signature = delta.get("signature")
            if signature and (block is None or block == "thinking"):
                state.message.reasoning_signature = signature
                return [ReasoningDelta(signature=signature)]
        return []

    def _block_stop(self, obj: dict[str, Any]) -> list[Delta]:
        index = obj.get("index", 0)
        tool_index = self._tools.get(index)
        if tool_index is None or self._state.has_arguments(tool_index):
            return []
        # A call with no streamed input: its input is what the block start gave ({}).
        start_input = self._tool_inputs.get(index)
        arguments = orjson.dumps(start_input if start_input is not None else {}).decode()
        self._state.add_arguments(tool_index, arguments)
        return [ToolCallDelta(tool_index, arguments=arguments)]

    def _message_delta(self, obj: dict[str, Any]) -> list[Delta]:
        out: list[Delta] = []
        delta = obj.get("delta")
        msg = self._state.message
        if type(delta) is dict:
            raw = delta.get("stop_reason")
            stop_sequence = delta.get("stop_sequence")
            if raw:
                reason = ANTHROPIC_TO_FINISH.get(raw, "stop")
                msg.finish_reason = reason
                msg.raw_finish_reason = raw
                msg.stop_sequence = stop_sequence
                out.append(FinishDelta(reason, raw, stop_sequence))
        usage = _usage(obj.get("usage"))
        if usage is not None:
            # output_tokens is cumulative: assigning (not adding) is what keeps it right.
            apply_usage(msg.usage, usage)
            out.append(UsageDelta(usage))
        return out

    def close(self) -> list[Delta]:
        """End of stream. Raises :class:`~tokenwire.errors.StreamError` (type
        ``"network"``) if ``message_stop`` never came and no error event explains why."""
        if not self._done and self._error is None:
            raise StreamError(
                "network",
                "Anthropic stream ended before message_stop: the message is incomplete",
                provider="anthropic",
            )
        return []
