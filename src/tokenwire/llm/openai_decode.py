"""Decode OpenAI chat-completions stream events into :data:`~tokenwire.llm.model.Delta`s.

Sans-I/O: :class:`OpenAIStreamDecoder` takes :class:`~tokenwire.sse.ServerSentEvent`
objects and returns deltas. Handles the role chunk, ``content``, ``refusal``,
``tool_calls`` fragments by index (parallel calls), finish chunks, the usage chunk with
``choices: []``, ``[DONE]`` and in-band ``{"error": ...}``; and tolerates what
OpenAI-compatible servers do differently: Ollama (role on every delta, whole tool calls
in one chunk, ``delta.reasoning``), vLLM (``reasoning`` / ``reasoning_content``, usage on
every chunk, ``stop_reason`` strings, the old ``{"object": "error"}`` shape), a missing
``[DONE]``, ``event: error`` events and events with no data (e.g. ``event: ping``).
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
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.sse import ServerSentEvent

__all__ = ["OpenAIStreamDecoder"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})

# The text delta is built once per chunk on the hot path; the slot setters cost less
# than the frozen dataclass __init__ (same object, same immutability for users).
_new_object = object.__new__
_set_text = TextDelta.__dict__["text"].__set__
_set_choice = TextDelta.__dict__["choice"].__set__


def _text_delta(text: str, choice: int) -> TextDelta:
    delta: TextDelta = _new_object(TextDelta)
    _set_text(delta, text)
    _set_choice(delta, choice)
    return delta


def _normalize_finish(reason: str) -> str:
    if reason in _FINISH_REASONS:
        return reason
    return ANTHROPIC_TO_FINISH.get(reason, "stop")


class OpenAIStreamDecoder:
    """Incremental decoder for an OpenAI chat-completions stream.

    ``feed(event)`` returns the deltas that event carries (possibly none); an in-band
    provider error becomes an :class:`~tokenwire.llm.model.ErrorDelta`. ``close()`` ends
    the stream: a stream without ``[DONE]`` is accepted when a ``finish_reason`` (or an
    error) was seen, but one that stops before any of these raises
    :class:`~tokenwire.errors.StreamError` (type ``"network"``): it was cut off.

    ``messages`` holds one :class:`~tokenwire.llm.model.Message` per choice index (``n>1``);
    ``message`` is choice 0. ``done`` is true once ``[DONE]`` arrived. Events whose data
    is not a JSON object raise :class:`StreamDecodeError`; events with empty data are
    ignored.
    """

    protocol = "openai"

    __slots__ = (
        "_choices",
        "_done",
        "_error",
        "_finished",
        "_id",
        "_last_usage",
        "_model",
        "_started",
        "_usage",
    )

    def __init__(self) -> None:
        self._choices: dict[int, ChoiceState] = {}
        self._usage = Usage()
        self._last_usage: object = None
        self._id: str | None = None
        self._model: str | None = None
        self._started = False
        self._done = False
        self._finished = False
        self._error: ErrorDelta | None = None

    @property
    def done(self) -> bool:
        """``[DONE]`` was received."""
        return self._done

    @property
    def error(self) -> ErrorDelta | None:
        """The in-band error the stream reported, if any."""
        return self._error

    @property
    def message(self) -> Message:
        """Choice 0 as accumulated so far."""
        state = self._choices.get(0)
        if state is None:
            state = self._choice(0)
        return state.sync()

    @property
    def messages(self) -> dict[int, Message]:
        """Every choice as accumulated so far, by choice index."""
        return {index: state.sync() for index, state in sorted(self._choices.items())}

    def _choice(self, index: int) -> ChoiceState:
        msg = Message(id=self._id, model=self._model)
        msg.usage = self._usage  # one usage object per completion, shared by its choices
        state = self._choices[index] = ChoiceState(msg)
        return state

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas."""
        data = event.data
        if not data or self._done:
            return []
        if data[0] == "[" and data.startswith("[DONE]"):
            self._done = True
            return []
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            raise StreamDecodeError(
                f"OpenAI stream event data is not JSON: {data[:200]!r}", event=event
            ) from None
        if type(obj) is not dict:
            raise StreamDecodeError(
                f"OpenAI stream event data is not a JSON object: {data[:200]!r}", event=event
            )
        choices = obj.get("choices")
        if choices is None or event.event == "error":
            error = self._error_delta(obj, event.event == "error")
            if error is not None:
                return [error]
        out: list[Delta] = []
        if not self._started:
            self._start(obj, out)
        if choices:
            for choice in choices:
                index = choice.get("index", 0)
                state = self._choices.get(index)
                if state is None:
                    state = self._choice(index)
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content")
                    if len(delta) == 1 and content is not None:
                        # The common chunk: {"content": "..."} only.
                        if content:
                            state._text.append(content)
                            state._dirty = True
                            out.append(_text_delta(content, index))
                    else:
                        self._delta(delta, content, index, state, out)
                reason = choice.get("finish_reason")
                if reason:
                    self._finish(choice, reason, index, state, out)
        usage = obj.get("usage")
        if usage and usage != self._last_usage and type(usage) is dict:
            self._last_usage = usage
            out.append(UsageDelta(self._apply_usage(usage)))
        return out

    def _start(self, obj: dict[str, Any], out: list[Delta]) -> None:
        self._started = True
        self._id = obj.get("id")
        self._model = obj.get("model")
        for state in self._choices.values():
            state.message.id = self._id
            state.message.model = self._model
        role = "assistant"
        choices = obj.get("choices")
        if choices:
            delta = choices[0].get("delta")
            if delta and delta.get("role"):
                role = delta["role"]
        out.append(MessageStart(id=self._id, model=self._model, role=role))

    def _delta(
        self,
        delta: dict[str, Any],
        content: Any,
        index: int,
        state: ChoiceState,
        out: list[Delta],
    ) -> None:
        role = delta.get("role")
        if role and role != state.message.role:
            state.message.role = role
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            state.add_reasoning(reasoning)
            out.append(ReasoningDelta(reasoning, choice=index))
        if content:
            state.add_text(content)
            out.append(_text_delta(content, index))
        refusal = delta.get("refusal")
        if refusal is not None:
            # An empty first piece still says "this choice has a refusal field" (as the
            # SDK's accumulated message does), so it is passed on.
            if refusal or state.message.refusal is None:
                out.append(RefusalDelta(refusal, choice=index))
            state.add_refusal(refusal)
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for fragment in tool_calls:
                self._tool_fragment(fragment, index, state, out)
        function_call = delta.get("function_call")
        if function_call:  # the legacy single-function form
            self._tool_fragment({"index": 0, "function": function_call}, index, state, out)

    def _tool_fragment(
        self, fragment: dict[str, Any], choice: int, state: ChoiceState, out: list[Delta]
    ) -> None:
        function = fragment.get("function") or {}
        call_id = fragment.get("id")
        name = function.get("name")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = ""
        elif type(arguments) is not str:  # some servers send the arguments object itself
            arguments = orjson.dumps(arguments).decode()
        tool_index = fragment.get("index")
        if type(tool_index) is not int:
            # Whole calls without an index (older Ollama): a new id is a new call.
            known = {call.id for call in state.tools.values()}
            if (call_id and call_id not in known) or not state.tools:
                tool_index = len(state.tools)
            else:
                tool_index = max(state.tools)
        _, new_id, new_name = state.tool(tool_index, call_id, name)
        if arguments:
            state.add_arguments(tool_index, arguments)
        out.append(
            ToolCallDelta(
                tool_index,
                id=call_id if new_id else None,
                name=name if new_name else None,
                arguments=arguments,
                choice=choice,
            )
        )

    def _finish(
        self,
        choice: dict[str, Any],
        reason: str,
        index: int,
        state: ChoiceState,
        out: list[Delta],
    ) -> None:
        self._finished = True
        normalized = _normalize_finish(reason)
        stop = choice.get("stop_reason")  # vLLM: the stop string (or a token id)
        stop_sequence = stop if type(stop) is str else None
        msg = state.message
        msg.finish_reason = normalized
        msg.raw_finish_reason = reason
        msg.stop_sequence = stop_sequence
        out.append(FinishDelta(normalized, reason, stop_sequence, index))

    def _apply_usage(self, usage: dict[str, Any]) -> Usage:
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        input_tokens = usage.get("prompt_tokens")
        output_tokens = usage.get("completion_tokens")
        update = Usage(
            input_tokens=as_int(
                usage.get("input_tokens") if input_tokens is None else input_tokens
            ),
            output_tokens=as_int(
                usage.get("output_tokens") if output_tokens is None else output_tokens
            ),
            cache_read_input_tokens=as_int(prompt.get("cached_tokens")),
            reasoning_tokens=as_int(completion.get("reasoning_tokens")),
        )
        apply_usage(self._usage, update)
        return update

    def _error_delta(self, obj: dict[str, Any], named_error: bool) -> ErrorDelta | None:
        error = obj.get("error")
        if error is None:
            if obj.get("object") == "error" or named_error:
                error = obj  # old vLLM shape, or `event: error` with a bare error object
            else:
                return None
        if type(error) is not dict:
            error = {"type": "api_error", "message": str(error)}
        kind = error.get("type") or error.get("code") or "api_error"
        message = error.get("message") or "an error occurred during streaming"
        delta = ErrorDelta(str(kind), str(message), error)
        self._error = delta
        return delta

    def close(self) -> list[Delta]:
        """End of stream. Raises :class:`~tokenwire.errors.StreamError` (``"network"``)
        if the stream stopped before ``[DONE]``, any ``finish_reason`` and any error."""
        if not (self._done or self._finished or self._error is not None):
            raise StreamError(
                "network",
                "OpenAI stream ended before [DONE] or a finish_reason: the reply is incomplete",
                provider="openai",
            )
        return []
