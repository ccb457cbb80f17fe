"""Accumulation state shared by the stream decoders (internal).

Text arrives in many small pieces; appending each to a ``str`` attribute copies the
whole text every time (quadratic over a long reply). Pieces are kept in lists and
joined only when a :class:`~tokenwire.llm.model.Message` is asked for.
"""

from __future__ import annotations

from tokenwire.llm.model import Message, ToolCall, Usage


class StreamDecodeError(ValueError):
    """An event broke the LLM stream protocol (its data is not JSON, or not a JSON
    object where one is required). ``event`` is the offending event; the decoder stays
    usable and nothing from earlier events is lost."""

    def __init__(self, message: str, *, event: object = None) -> None:
        super().__init__(message)
        self.event = event


class ChoiceState:
    """One choice (reply) being accumulated: a :class:`Message` plus pending pieces."""

    __slots__ = ("_args", "_dirty", "_reasoning", "_refusal", "_text", "message", "tools")

    def __init__(self, message: Message) -> None:
        self.message = message
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        # tool index -> (call, pending argument pieces)
        self.tools: dict[int, ToolCall] = {}
        self._args: dict[int, list[str]] = {}
        self._dirty = False

    def add_text(self, text: str) -> None:
        self._text.append(text)
        self._dirty = True

    def add_reasoning(self, text: str) -> None:
        self._reasoning.append(text)
        self._dirty = True

    def add_refusal(self, text: str) -> None:
        if self.message.refusal is None:
            self.message.refusal = ""
        if text:
            self._refusal.append(text)
            self._dirty = True

    def tool(self, index: int, id: str | None, name: str | None) -> tuple[ToolCall, bool, bool]:
        """The call at ``index`` (created on first sight). Returns the call and whether
        ``id`` / ``name`` are news for it (so a delta carries them only once)."""
        call = self.tools.get(index)
        if call is None:
            call = ToolCall(id=id or "", name=name or "", index=index)
            self.tools[index] = call
            calls = self.message.tool_calls
            calls.append(call)
            if len(calls) > 1 and calls[-2].index > index:
                calls.sort(key=_tool_index)
            return call, bool(id), bool(name)
        new_id = bool(id) and not call.id
        if new_id:
            call.id = id  # type: ignore[assignment]
        new_name = bool(name) and not call.name
        if new_name:
            call.name = name  # type: ignore[assignment]
        return call, new_id, new_name

    def add_arguments(self, index: int, text: str) -> None:
        pieces = self._args.get(index)
        if pieces is None:
            self._args[index] = [text]
        else:
            pieces.append(text)
        self._dirty = True

    def has_arguments(self, index: int) -> bool:
        call = self.tools.get(index)
        return bool(self._args.get(index)) or bool(call is not None and call.arguments)

    def sync(self) -> Message:
        """Fold pending pieces into the message and return it."""
        if self._dirty:
            msg = self.message
            if self._text:
                msg.text += "".join(self._text)
                self._text.clear()
            if self._reasoning:
                msg.reasoning += "".join(self._reasoning)
                self._reasoning.clear()
            if self._refusal:
                msg.refusal = (msg.refusal or "") + "".join(self._refusal)
                self._refusal.clear()
            if self._args:
                for index, pieces in self._args.items():
                    if pieces:
                        call = self.tools[index]
                        call.arguments += "".join(pieces)
                        pieces.clear()
            self._dirty = False
        return self.message


def _tool_index(call: ToolCall) -> int:
    return call.index


def apply_usage(target: Usage, update: Usage) -> None:
    """Copy the fields of ``update`` that are not ``None`` onto ``target``."""
    if update.input_tokens is not None:
        target.input_tokens = update.input_tokens
    if update.output_tokens is not None:
        target.output_tokens = update.output_tokens
    if update.cache_read_input_tokens is not None:
        target.cache_read_input_tokens = update.cache_read_input_tokens
    if update.cache_creation_input_tokens is not None:
        target.cache_creation_input_tokens = update.cache_creation_input_tokens
    if update.reasoning_tokens is not None:
        target.reasoning_tokens = update.reasoning_tokens


def as_int(value: object) -> int | None:
    """A token count from JSON: ints only (``None`` for anything else)."""
    return value if type(value) is int else None
