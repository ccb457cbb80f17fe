"""Decoding a Responses stream: ``response.*`` SSE events in, deltas out
(:class:`ResponsesStreamDecoder`, sans-I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm._state import ChoiceState, StreamDecodeError, apply_usage, as_int
from tokenwire.llm.model import (
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
from tokenwire.llm.openai_responses.objects import _INCOMPLETE_TO_FINISH
from tokenwire.sse import ServerSentEvent

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

# The text delta is built once per event on the hot path; the slot setters cost less
# than the frozen dataclass __init__ (same object, same immutability for users).
_new_object = object.__new__
_set_text = TextDelta.__dict__["text"].__set__
_set_choice = TextDelta.__dict__["choice"].__set__


def _text_delta(text: str) -> TextDelta:
    delta: TextDelta = _new_object(TextDelta)
    _set_text(delta, text)
    _set_choice(delta, 0)
    return delta


def _missing(pieces: list[str], full: object) -> str:
    """What ``full`` (a whole text from a ``.done`` event or a finished item) adds to the
    ``pieces`` streamed so far: all of it when nothing streamed, the rest when the
    stream was a prefix of it, else nothing (what streamed stands)."""
    if type(full) is not str or not full:
        return ""
    if not pieces:
        return full
    have = pieces[0] if len(pieces) == 1 else "".join(pieces)
    if len(pieces) > 1:
        pieces[:] = [have]  # later checks compare one string
    if len(full) > len(have) and full.startswith(have):
        return full[len(have) :]
    return ""


def _usage(raw: Any) -> Usage | None:
    if type(raw) is not dict:
        return None
    inp = raw.get("input_tokens_details")
    out = raw.get("output_tokens_details")
    if type(inp) is not dict:
        inp = {}
    if type(out) is not dict:
        out = {}
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_input_tokens=as_int(inp.get("cached_tokens")),
        cache_creation_input_tokens=as_int(inp.get("cache_write_tokens")),
        reasoning_tokens=as_int(out.get("reasoning_tokens")),
    )


def _str_or_none(value: Any) -> str | None:
    return value if type(value) is str else None


class _Item:
    """One output item of the reply being decoded: the text each of its parts streamed
    (to complete it from ``.done`` events) and, for a function call, its tool index."""

    __slots__ = ("args", "content", "id", "kind", "summary", "texted", "tool")

    def __init__(self, kind: object, id: str | None) -> None:
        self.kind = kind
        self.id = id
        self.tool: int | None = None
        self.args: list[str] = []
        self.content: dict[object, list[str]] = {}  # content_index -> pieces
        self.summary: dict[object, list[str]] = {}  # summary_index -> pieces
        self.texted = False  # a reasoning part of this item produced text


_Handler = Callable[["ResponsesStreamDecoder", dict[str, Any]], list[Delta]]


class ResponsesStreamDecoder:
    """Incremental decoder for an OpenAI Responses stream.

    ``feed(event)`` returns the deltas that event carries (possibly none):
    :class:`~tokenwire.llm.model.MessageStart` at the first lifecycle event
    (``response.created``), text, refusal and reasoning deltas, a
    :class:`~tokenwire.llm.model.ToolCallDelta` with the ``call_id`` and name when a
    ``function_call`` item is added and then its argument fragments, and at the end a
    :class:`~tokenwire.llm.model.FinishDelta` (``stop``, ``tool_calls``, or for
    ``response.incomplete`` ``length`` / ``content_filter`` with the API's reason as
    ``raw_reason``) and the usage. Text or arguments that only a ``.done`` event, a
    finished item or the final response carries come out as deltas too. The top-level
    ``error`` event and ``response.failed`` become one
    :class:`~tokenwire.llm.model.ErrorDelta`.

    ``done`` is true once a terminal event (``response.completed``, ``.incomplete``,
    ``.failed`` or ``error``) arrived; later events are ignored. ``close()`` on a stream
    that ended before any raises :class:`~tokenwire.errors.StreamError` (``"network"``).
    Unknown events are skipped; data that is not a JSON object raises
    :class:`StreamDecodeError`; events with empty data are ignored.
    """

    protocol = "responses"

    __slots__ = ("_by_call", "_by_id", "_done", "_error", "_items", "_started", "_state", "_tools")

    def __init__(self) -> None:
        self._state = ChoiceState(Message())
        self._items: dict[object, _Item] = {}  # output_index -> item
        self._by_id: dict[str, object] = {}  # item id -> output_index
        self._by_call: dict[str, object] = {}  # call_id -> output_index
        self._tools = 0
        self._started = False
        self._done = False
        self._error: ErrorDelta | None = None

    @property
    def done(self) -> bool:
        """A terminal event was received."""
        return self._done

    @property
    def error(self) -> ErrorDelta | None:
        """The in-band error the stream reported, if any."""
        return self._error

    @property
    def message(self) -> Message:
        """The reply as accumulated so far."""
        return self._state.sync()

    @property
    def messages(self) -> dict[int, Message]:
        """``{0: message}`` (a response has one reply)."""
        return {0: self._state.sync()}

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas."""
        data = event.data
        if not data or self._done:
            return []
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            raise StreamDecodeError(
                f"Responses stream event data is not JSON: {data[:200]!r}", event=event
            ) from None
        if type(obj) is not dict:
            raise StreamDecodeError(
                f"Responses stream event data is not a JSON object: {data[:200]!r}", event=event
            )
        kind = obj.get("type")
        handler = _HANDLERS.get(kind if type(kind) is str else event.event)
        if handler is None:
            return []  # hosted tools, annotations, audio, newer events
        return handler(self, obj)

    def close(self) -> list[Delta]:
        """End of stream. Raises :class:`~tokenwire.errors.StreamError` (``"network"``)
        if no terminal event and no error arrived."""
        if not self._done and self._error is None:
            raise StreamError(
                "network",
                "Responses stream ended before response.completed, response.incomplete or "
                "response.failed: the reply is incomplete",
                provider="responses",
            )
        return []

    # -- items --------------------------------------------------------------------------

    def _item(self, obj: dict[str, Any], kind: str) -> _Item:
        """The item an event is about (made up if its item was never added)."""
        index = obj.get("output_index")
        item = self._items.get(index)
        if item is None:
            item_id = _str_or_none(obj.get("item_id"))
            item = self._items[index] = _Item(kind, item_id)
            if item_id is not None:
                self._by_id[item_id] = index  # so the final response's copy is this one
        return item

    def _sync(self, index: object, raw: dict[str, Any], out: list[Delta]) -> None:
        """Take in an item as ``output_item.added`` / ``.done`` or the final response
        gives it: new items are registered, content not streamed yet is passed on."""
        kind = raw.get("type")
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item(kind, _str_or_none(raw.get("id")))
        rid = raw.get("id")
        if type(rid) is str:
            item.id = item.id or rid
            self._by_id[rid] = index
        if kind == "message":
            content = raw.get("content")
            if type(content) is list:
                for ci, part in enumerate(content):
                    if type(part) is dict:
                        self._sync_part(item, ci, part, out)
        elif kind == "function_call":
            self._sync_call(index, item, raw, out)
        elif kind == "reasoning":
            for field, parts in (("summary", item.summary), ("content", item.content)):
                raw_parts = raw.get(field)
                if type(raw_parts) is list:
                    for pi, part in enumerate(raw_parts):
                        if type(part) is dict:
                            text = part.get("text")
                            self._add_reasoning(item, parts.setdefault(pi, []), text, out)

    def _sync_part(self, item: _Item, ci: object, part: dict[str, Any], out: list[Delta]) -> None:
        kind = part.get("type")
        pieces = item.content.setdefault(ci, [])
        if kind == "output_text":
            self._add_text(pieces, _missing(pieces, part.get("text")), out)
        elif kind == "refusal":
            self._add_refusal(pieces, _missing(pieces, part.get("refusal")), out)
        elif kind == "reasoning_text":
            self._add_reasoning(item, pieces, part.get("text"), out)

    def _sync_call(self, index: object, item: _Item, raw: dict[str, Any], out: list[Delta]) -> None:
        call_id = _str_or_none(raw.get("call_id")) or item.id
        name = _str_or_none(raw.get("name"))
        if call_id:
            self._by_call[call_id] = index
        state = self._state
        tool = item.tool
        if tool is None:
            tool = item.tool = self._tools
            self._tools += 1
            item.kind = "function_call"
        _, new_id, new_name = state.tool(tool, call_id, name)
        rest = _missing(item.args, raw.get("arguments"))
        if rest:
            item.args.append(rest)
            state.add_arguments(tool, rest)
        if rest or new_id or new_name:
            out.append(
                ToolCallDelta(
                    tool,
                    id=call_id if new_id else None,
                    name=name if new_name else None,
                    arguments=rest,
                )
            )

    def _add_text(self, pieces: list[str], text: str, out: list[Delta]) -> None:
        if text:
            pieces.append(text)
            self._state.add_text(text)
            out.append(_text_delta(text))

    def _add_refusal(self, pieces: list[str], text: str, out: list[Delta]) -> None:
        # An empty first piece still says "there is a refusal" (as the SDK's item does).
        if text or self._state.message.refusal is None:
            if text:
                pieces.append(text)
            self._state.add_refusal(text)
            out.append(RefusalDelta(text))

    def _add_reasoning(
        self, item: _Item, pieces: list[str], full: object, out: list[Delta]
    ) -> None:
        """Pass on what ``full`` adds to a reasoning part (``full`` is the whole part)."""
        self._reasoning(item, pieces, _missing(pieces, full), out)

    def _reasoning(self, item: _Item, pieces: list[str], text: str, out: list[Delta]) -> None:
        if not text:
            return
        shown = text
        if not pieces and item.texted:
            shown = "\n\n" + text  # the next part of one item: a new paragraph
        pieces.append(text)
        item.texted = True
        self._state.add_reasoning(shown)
        out.append(ReasoningDelta(shown))

    # -- events -------------------------------------------------------------------------

    def _on_lifecycle(self, obj: dict[str, Any]) -> list[Delta]:
        if self._started:
            return []
        out: list[Delta] = []
        response = obj.get("response")
        self._start(response if type(response) is dict else {}, out)
        return out

    def _start(self, response: dict[str, Any], out: list[Delta]) -> None:
        self._started = True
        msg = self._state.message
        msg.id = _str_or_none(response.get("id"))
        msg.model = _str_or_none(response.get("model"))
        usage = _usage(response.get("usage"))
        if usage is not None:
            apply_usage(msg.usage, usage)
        out.append(MessageStart(id=msg.id, model=msg.model, usage=usage))

    def _on_item(self, obj: dict[str, Any]) -> list[Delta]:
        raw = obj.get("item")
        if type(raw) is not dict:
            return []
        out: list[Delta] = []
        self._sync(obj.get("output_index"), raw, out)
        return out

    def _on_part(self, obj: dict[str, Any]) -> list[Delta]:
        part = obj.get("part")
        if type(part) is not dict:
            return []
        out: list[Delta] = []
        self._sync_part(self._item(obj, "message"), obj.get("content_index"), part, out)
        return out

    def _on_text_delta(self, obj: dict[str, Any]) -> list[Delta]:
        delta = obj.get("delta")
        if type(delta) is not str or not delta:
            return []
        item = self._items.get(obj.get("output_index"))
        if item is None:
            item = self._item(obj, "message")
        pieces = item.content.get(obj.get("content_index"))
        if pieces is None:
            pieces = item.content[obj.get("content_index")] = []
        pieces.append(delta)
        state = self._state
        state._text.append(delta)
        state._dirty = True
        return [_text_delta(delta)]

    def _on_text_done(self, obj: dict[str, Any]) -> list[Delta]:
        pieces = self._item(obj, "message").content.setdefault(obj.get("content_index"), [])
        out: list[Delta] = []
        self._add_text(pieces, _missing(pieces, obj.get("text")), out)
        return out

    def _on_refusal_delta(self, obj: dict[str, Any]) -> list[Delta]:
        delta = obj.get("delta")
        if type(delta) is not str:
            return []
        pieces = self._item(obj, "message").content.setdefault(obj.get("content_index"), [])
        out: list[Delta] = []
        self._add_refusal(pieces, delta, out)
        return out

    def _on_refusal_done(self, obj: dict[str, Any]) -> list[Delta]:
        pieces = self._item(obj, "message").content.setdefault(obj.get("content_index"), [])
        out: list[Delta] = []
        self._add_refusal(pieces, _missing(pieces, obj.get("refusal")), out)
        return out

    def _on_args_delta(self, obj: dict[str, Any]) -> list[Delta]:
        delta = obj.get("delta")
        item = self._items.get(obj.get("output_index"))
        # Fragments of a call never added have no call id to go with; the finished item
        # (output_item.done, or the final response) brings the whole call instead.
        if type(delta) is not str or not delta or item is None or item.tool is None:
            return []
        item.args.append(delta)
        self._state.add_arguments(item.tool, delta)
        return [ToolCallDelta(item.tool, arguments=delta)]

    def _on_args_done(self, obj: dict[str, Any]) -> list[Delta]:
        item = self._items.get(obj.get("output_index"))
        if item is None or item.tool is None:
            return []
        rest = _missing(item.args, obj.get("arguments"))
        if not rest:
            return []
        item.args.append(rest)
        self._state.add_arguments(item.tool, rest)
        return [ToolCallDelta(item.tool, arguments=rest)]

    def _on_summary_part(self, obj: dict[str, Any]) -> list[Delta]:
        part = obj.get("part")
        text = part.get("text") if type(part) is dict else None
        return self._summary(obj, text)

    def _on_summary_delta(self, obj: dict[str, Any]) -> list[Delta]:
        delta = obj.get("delta")
        if type(delta) is not str or not delta:
            return []
        item = self._item(obj, "reasoning")
        out: list[Delta] = []
        self._reasoning(item, item.summary.setdefault(obj.get("summary_index"), []), delta, out)
        return out

    def _on_summary_done(self, obj: dict[str, Any]) -> list[Delta]:
        return self._summary(obj, obj.get("text"))

    def _summary(self, obj: dict[str, Any], full: object) -> list[Delta]:
        item = self._item(obj, "reasoning")
        out: list[Delta] = []
        self._add_reasoning(item, item.summary.setdefault(obj.get("summary_index"), []), full, out)
        return out

    def _on_reasoning_delta(self, obj: dict[str, Any]) -> list[Delta]:
        delta = obj.get("delta")
        if type(delta) is not str or not delta:
            return []
        item = self._item(obj, "reasoning")
        out: list[Delta] = []
        self._reasoning(item, item.content.setdefault(obj.get("content_index"), []), delta, out)
        return out

    def _on_reasoning_done(self, obj: dict[str, Any]) -> list[Delta]:
        item = self._item(obj, "reasoning")
        pieces = item.content.setdefault(obj.get("content_index"), [])
        out: list[Delta] = []
        self._add_reasoning(item, pieces, obj.get("text"), out)
        return out

    def _final_index(self, position: int, raw: dict[str, Any]) -> object:
        """Which streamed item a final output item is (by id, call id, or position)."""
        rid = raw.get("id")
        if type(rid) is str and rid in self._by_id:
            return self._by_id[rid]
        call_id = raw.get("call_id")
        if type(call_id) is str and call_id in self._by_call:
            return self._by_call[call_id]
        known = self._items.get(position)
        if known is None or (known.id is None and known.kind == raw.get("type")):
            return position
        return ("final", position)  # an item the stream never showed

    def _on_end(self, obj: dict[str, Any]) -> list[Delta]:
        response = obj.get("response")
        if type(response) is not dict:
            response = {}
        out: list[Delta] = []
        if not self._started:
            self._start(response, out)
        output = response.get("output")
        if type(output) is list:
            for position, raw in enumerate(output):
                if type(raw) is dict:
                    self._sync(self._final_index(position, raw), raw, out)
        if obj.get("type") == "response.incomplete":
            details = response.get("incomplete_details")
            raw_reason = _str_or_none(details.get("reason")) if type(details) is dict else None
            reason = _INCOMPLETE_TO_FINISH.get(raw_reason or "", "length")
        else:
            raw_reason = _str_or_none(response.get("status")) or "completed"
            reason = "tool_calls" if self._tools else "stop"
        msg = self._state.message
        msg.finish_reason = reason
        msg.raw_finish_reason = raw_reason
        out.append(FinishDelta(reason, raw_reason))
        usage = _usage(response.get("usage"))
        if usage is not None:
            apply_usage(msg.usage, usage)
            out.append(UsageDelta(usage))
        self._done = True
        return out

    def _on_failed(self, obj: dict[str, Any]) -> list[Delta]:
        self._done = True
        response = obj.get("response")
        error = response.get("error") if type(response) is dict else None
        body = dict(error) if type(error) is dict else {"message": "The response failed."}
        return [self._error_delta(body)]

    def _on_error(self, obj: dict[str, Any]) -> list[Delta]:
        # The API nests the error object under "error"; its reference documents the
        # fields at the top level. Either is read. A response.failed after it is the same
        # error and is not reported again (done is set).
        self._done = True
        error = obj.get("error")
        if type(error) is dict:
            body = dict(error)
        else:
            body = {key: obj[key] for key in ("code", "message", "param") if key in obj}
        return [self._error_delta(body)]

    def _error_delta(self, body: dict[str, Any]) -> ErrorDelta:
        kind = body.get("type") or body.get("code") or "api_error"
        message = body.get("message") or "an error occurred during streaming"
        delta = ErrorDelta(str(kind), str(message), body)
        self._error = delta
        return delta


_D = ResponsesStreamDecoder
_HANDLERS: dict[str, _Handler] = {
    "response.output_text.delta": _D._on_text_delta,
    "response.function_call_arguments.delta": _D._on_args_delta,
    "response.reasoning_summary_text.delta": _D._on_summary_delta,
    "response.reasoning_text.delta": _D._on_reasoning_delta,
    "response.refusal.delta": _D._on_refusal_delta,
    "response.output_text.done": _D._on_text_done,
    "response.refusal.done": _D._on_refusal_done,
    "response.function_call_arguments.done": _D._on_args_done,
    "response.reasoning_summary_text.done": _D._on_summary_done,
    "response.reasoning_summary_part.added": _D._on_summary_part,
    "response.reasoning_summary_part.done": _D._on_summary_part,
    "response.reasoning_text.done": _D._on_reasoning_done,
    "response.content_part.added": _D._on_part,
    "response.content_part.done": _D._on_part,
    "response.output_item.added": _D._on_item,
    "response.output_item.done": _D._on_item,
    "response.created": _D._on_lifecycle,
    "response.in_progress": _D._on_lifecycle,
    "response.queued": _D._on_lifecycle,
    "response.completed": _D._on_end,
    "response.incomplete": _D._on_end,
    "response.failed": _D._on_failed,
    "error": _D._on_error,
}
del _D
