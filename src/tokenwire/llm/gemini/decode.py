"""Decoding a Gemini stream: ``streamGenerateContent?alt=sse`` events in, deltas out
(:class:`GeminiStreamDecoder`, sans-I/O)."""

from __future__ import annotations

from copy import copy
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm._state import ChoiceState, StreamDecodeError, apply_usage
from tokenwire.llm.gemini.objects import finish_reason, reply_tag, synthetic_id, usage_from_gemini
from tokenwire.llm.model import (
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

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


class _Choice:
    """One candidate being decoded: its accumulation state and its calls so far."""

    __slots__ = ("calls", "finished", "state")

    def __init__(self, state: ChoiceState) -> None:
        self.state = state
        self.calls = 0
        self.finished = False


class GeminiStreamDecoder:
    """Incremental decoder for a Gemini stream (each event's data is one
    ``GenerateContentResponse`` chunk; no event names, no end marker).

    ``feed(event)`` returns the deltas a chunk carries: a
    :class:`~tokenwire.llm.model.MessageStart` at the first chunk (``responseId``,
    ``modelVersion``, and the usage so far), then for each candidate's parts in order a
    :class:`~tokenwire.llm.model.ReasoningDelta` with the part's ``thoughtSignature``
    (before the part's own delta), a :class:`~tokenwire.llm.model.TextDelta` for text,
    a ``ReasoningDelta`` for ``thought`` text, and for a ``functionCall`` one
    :class:`~tokenwire.llm.model.ToolCallDelta` with the whole call (calls are numbered
    0, 1, ... per candidate; one without an ``id`` gets ``call_<r>_<n>``, ``r`` standing
    for the ``responseId``); then a :class:`~tokenwire.llm.model.FinishDelta` for a
    ``finishReason`` (``STOP`` after calls is ``tool_calls``, ``MAX_TOKENS``
    ``length``, safety reasons ``content_filter``; the API's word is the raw reason)
    and a :class:`~tokenwire.llm.model.UsageDelta` when ``usageMetadata`` changed. A
    prompt blocked by ``promptFeedback.blockReason`` finishes as ``content_filter``
    with the block reason as the raw reason. A candidate's ``index`` is its choice. An
    error chunk (``{"error": {"code", "message", "status"}}``) becomes an
    :class:`~tokenwire.llm.model.ErrorDelta` (its ``type`` the status) and ends the
    stream (``done``; later events are ignored).

    ``close()`` raises :class:`~tokenwire.errors.StreamError` (``"network"``) if no
    ``finishReason`` for choice 0, no prompt block and no error arrived: the stream
    was cut off. Parts of other kinds (images, code execution) are skipped; data that is
    not a JSON object raises :class:`StreamDecodeError`; events with empty data are
    ignored.
    """

    protocol = "gemini"

    __slots__ = ("_choices", "_done", "_error", "_id", "_model", "_started", "_tag", "_usage")

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._usage = Usage()
        self._id: str | None = None
        self._model: str | None = None
        self._tag: int | None = None
        self._started = False
        self._done = False
        self._error: ErrorDelta | None = None

    @property
    def done(self) -> bool:
        """An error ended the stream (Gemini streams have no end marker of their own)."""
        return self._done

    @property
    def error(self) -> ErrorDelta | None:
        """The in-band error the stream reported, if any."""
        return self._error

    @property
    def message(self) -> Message:
        """Choice 0 as accumulated so far."""
        return self._choice(0).state.sync()

    @property
    def messages(self) -> dict[int, Message]:
        """Every choice as accumulated so far, by candidate index."""
        if not self._choices:
            self._choice(0)
        return {index: c.state.sync() for index, c in sorted(self._choices.items())}

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            msg = Message(id=self._id, model=self._model)
            msg.usage = self._usage  # one usage per reply, shared by its candidates
            choice = self._choices[index] = _Choice(ChoiceState(msg))
        return choice

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas."""
        data = event.data
        if not data or self._done:
            return []
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            raise StreamDecodeError(
                f"Gemini stream event data is not JSON: {data[:200]!r}", event=event
            ) from None
        if type(obj) is not dict:
            raise StreamDecodeError(
                f"Gemini stream event data is not a JSON object: {data[:200]!r}", event=event
            )
        error = obj.get("error")
        if error is not None:
            return [self._error_delta(error)]
        out: list[Delta] = []
        usage = usage_from_gemini(_field(obj, "usageMetadata", "usage_metadata"))
        if not self._started:
            self._start(obj, usage, out)
            usage = None  # told by MessageStart
        candidates = obj.get("candidates")
        if type(candidates) is list:
            for raw in candidates:
                if type(raw) is dict:
                    self._candidate(raw, out)
        feedback = _field(obj, "promptFeedback", "prompt_feedback")
        if type(feedback) is dict:
            reason = _field(feedback, "blockReason", "block_reason")
            choice = self._choice(0)
            if type(reason) is str and reason and not choice.finished:
                self._finish(choice, 0, "content_filter", reason, out)
        if usage is not None:
            before = copy(self._usage)
            apply_usage(self._usage, usage)
            if self._usage != before:
                out.append(UsageDelta(usage))
        return out

    def close(self) -> list[Delta]:
        """End of stream. Raises :class:`~tokenwire.errors.StreamError` (``"network"``)
        if choice 0 got no ``finishReason`` and no error arrived."""
        choice = self._choices.get(0)
        if self._error is None and (choice is None or not choice.finished):
            raise StreamError(
                "network",
                "Gemini stream ended before a finishReason: the reply is incomplete",
                provider="gemini",
            )
        return []

    def _start(self, obj: dict[str, Any], usage: Usage | None, out: list[Delta]) -> None:
        self._started = True
        rid = _field(obj, "responseId", "response_id")
        model = _field(obj, "modelVersion", "model_version")
        self._id = rid if type(rid) is str else None
        self._model = model if type(model) is str else None
        self._tag = reply_tag(self._id)
        for choice in self._choices.values():
            msg = choice.state.message
            msg.id, msg.model = self._id, self._model
        if usage is not None:
            apply_usage(self._usage, usage)
        out.append(MessageStart(id=self._id, model=self._model, usage=usage))

    def _candidate(self, raw: dict[str, Any], out: list[Delta]) -> None:
        index = raw.get("index", 0)
        if type(index) is not int:
            index = 0
        choice = self._choice(index)
        state = choice.state
        content = raw.get("content")
        parts = content.get("parts") if type(content) is dict else None
        if type(parts) is list:
            for part in parts:
                if type(part) is not dict:
                    continue
                signature = _field(part, "thoughtSignature", "thought_signature")
                if type(signature) is str and signature:
                    state.message.reasoning_signature = signature
                    out.append(ReasoningDelta(signature=signature, choice=index))
                text = part.get("text")
                if type(text) is str:
                    if not text:
                        continue
                    if part.get("thought") is True:
                        state.add_reasoning(text)
                        out.append(ReasoningDelta(text, choice=index))
                    else:
                        state.add_text(text)
                        out.append(TextDelta(text, index))
                    continue
                call = _field(part, "functionCall", "function_call")
                if type(call) is dict:
                    self._call(choice, index, call, out)
        reason = _field(raw, "finishReason", "finish_reason")
        if type(reason) is str and reason and not choice.finished:
            self._finish(choice, index, finish_reason(reason, choice.calls > 0), reason, out)

    def _call(self, choice: _Choice, index: int, call: dict[str, Any], out: list[Delta]) -> None:
        n = choice.calls
        choice.calls = n + 1
        id = call.get("id")
        if type(id) is not str or not id:
            numbers = [] if self._tag is None else [self._tag]
            if index:
                numbers.append(index)
            id = synthetic_id(*numbers, n)
        name = call.get("name")
        name = name if type(name) is str else ""
        args = call.get("args")
        arguments = _dumps(args if type(args) is dict else {}).decode()
        state = choice.state
        state.tool(n, id, name)
        state.add_arguments(n, arguments)
        out.append(ToolCallDelta(n, id=id, name=name, arguments=arguments, choice=index))

    def _finish(self, choice: _Choice, index: int, reason: str, raw: str, out: list[Delta]) -> None:
        choice.finished = True
        msg = choice.state.message
        msg.finish_reason = reason
        msg.raw_finish_reason = raw
        out.append(FinishDelta(reason, raw, choice=index))

    def _error_delta(self, error: Any) -> ErrorDelta:
        self._done = True
        if type(error) is not dict:
            error = {"message": str(error)}
        status = error.get("status")
        code = error.get("code")
        kind = status if type(status) is str and status else code
        message = error.get("message")
        delta = ErrorDelta(
            str(kind or "api_error"),
            str(message or "an error occurred during streaming"),
            error,
        )
        self._error = delta
        return delta
