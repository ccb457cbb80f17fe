"""The OpenAI Responses API (``POST /v1/responses``) as a
:class:`~tokenwire.llm.protocol.WireProtocol`.

Everything for the protocol lives here (sans-I/O, nothing opens a socket or awaits):

- :class:`ResponsesStreamDecoder`: ``response.*`` SSE events in, deltas out.
- :class:`ResponsesEventEncoder`: deltas in, the event stream the ``openai`` SDK
  accumulates (``response.created`` ... ``response.completed``), with a
  ``sequence_number`` on every event.
- :func:`from_responses` / :func:`to_responses`: request bodies to and from
  :class:`~tokenwire.llm.requests.ChatRequest`.
- :func:`responses_object`: the whole ``response`` object, for ``stream: false``.
- :class:`OpenAIResponses`, registered as ``"responses"``.

How the stream maps onto :class:`~tokenwire.llm.model.Message`: the text of every
``output_text`` part of every ``message`` item is :attr:`Message.text`, ``refusal`` parts
are :attr:`Message.refusal`, ``function_call`` items are tool calls numbered 0, 1, ... in
order of appearance, and reasoning summaries (and ``reasoning_text``) are
:attr:`Message.reasoning` (the parts of one reasoning item are separated by a blank
line). Hosted tools, annotations and other events are skipped.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
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
from tokenwire.llm.openai_chat import openai_error_object
from tokenwire.llm.protocol import WireProtocol, register
from tokenwire.llm.requests import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    Part,
    RequestError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    effort_for_budget,
    json_schema_spec,
    opt_bool,
    read_effort,
    read_json_format,
    read_metadata,
)
from tokenwire.sse import ServerSentEvent

__all__ = [
    "OPENAI_RESPONSES",
    "OpenAIResponses",
    "ResponsesEventEncoder",
    "ResponsesStreamDecoder",
    "from_responses",
    "responses_object",
    "responses_usage",
    "to_responses",
]

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

# incomplete_details.reason -> finish reason (an unknown reason still means "cut short").
_INCOMPLETE_TO_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
# The codes a failed response's `error.code` may have (openai.types.responses.ResponseError);
# anything else is sent as server_error so that strict clients still parse the event.
_FAILED_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)

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


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


# --- shared JSON shapes --------------------------------------------------------------


def responses_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` in the Responses API's shape (``input_tokens``, ``input_tokens_details``
    with ``cached_tokens`` and ``cache_write_tokens``, ``output_tokens``,
    ``output_tokens_details.reasoning_tokens``, ``total_tokens``); unknown counts are 0."""
    inp = usage.input_tokens or 0
    out = usage.output_tokens or 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens or 0,
            "cache_write_tokens": usage.cache_creation_input_tokens or 0,
        },
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": inp + out,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def _message_item(id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _call_item(id: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _reasoning_item(id: str, summary: list[str]) -> dict[str, Any]:
    return {
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text} for text in summary],
    }


def _response(
    *,
    id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    # Every field openai.types.responses.Response requires, plus the usual defaults.
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def _incomplete_reason(reason: str | None, raw: str | None) -> str | None:
    """The ``incomplete_details.reason`` a finish amounts to (``None``: completed)."""
    if raw in _INCOMPLETE_TO_FINISH:
        return raw
    if reason == "length":
        return "max_output_tokens"
    if reason == "content_filter":
        return "content_filter"
    return None


def responses_object(
    message: Message,
    *,
    id: str,
    model: str,
    status: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The whole Responses ``response`` object for ``message`` (what ``stream: false``
    answers, and what ``response.completed`` carries).

    ``status`` defaults to ``"incomplete"`` (with ``incomplete_details``) when the
    message finished for ``length`` or ``content_filter``, else ``"completed"``. The
    output is a reasoning item (if there is reasoning), a message item (text and
    refusal) and one ``function_call`` item per tool call."""
    incomplete = _incomplete_reason(message.finish_reason, message.raw_finish_reason)
    if status is None:
        status = "incomplete" if incomplete else "completed"
    elif status != "incomplete":
        incomplete = None
    output: list[dict[str, Any]] = []
    if message.reasoning:
        output.append(_reasoning_item(_new_id("rs_"), [message.reasoning]))
    content: list[dict[str, Any]] = []
    if message.text or (message.refusal is None and not message.tool_calls):
        content.append(_text_part(message.text))
    if message.refusal is not None:
        content.append(_refusal_part(message.refusal))
    if content:
        output.append(_message_item(_new_id("msg_"), "completed", content))
    for call in message.tool_calls:
        output.append(
            _call_item(_new_id("fc_"), "completed", call.id, call.name, call.arguments or "{}")
        )
    if incomplete and output and "status" in output[-1]:
        output[-1]["status"] = "incomplete"  # the item that was cut short
    return _response(
        id=id,
        model=model,
        created_at=int(time.time()) if created_at is None else created_at,
        status=status,
        output=output,
        usage=responses_usage(message.usage),
        incomplete=incomplete,
    )


def _failed_error(err: StreamError) -> dict[str, Any]:
    """A failed response's ``error`` object (``code`` from the SDK's closed list)."""
    code = err.code if err.code in _FAILED_CODES else None
    if code is None:
        code = "rate_limit_exceeded" if err.type == "rate_limit" else "server_error"
    return {"code": code, "message": err.message}


def _error_events(err: StreamError, seq: int, response: dict[str, Any]) -> bytes:
    """The top-level ``error`` event (number ``seq``) and ``response.failed`` (``seq + 1``).

    The error event carries the documented flat fields (``code``, ``message``,
    ``param``) and, as the live API does, the error object under ``error``: the
    ``openai`` SDK raises ``APIError`` only for data with an ``error`` key, so this is
    what makes ``responses.create(stream=True)`` and ``responses.stream()`` raise."""
    inner = openai_error_object(err)
    event = {
        "type": "error",
        "code": inner["code"] or inner["type"],
        "message": inner["message"],
        "param": inner["param"],
        "error": inner,
        "sequence_number": seq,
    }
    response["status"] = "failed"
    response["error"] = _failed_error(err)
    failed = {"type": "response.failed", "response": response, "sequence_number": seq + 1}
    return (
        b"event: error\ndata: "
        + _dumps(event)
        + b"\n\nevent: response.failed\ndata: "
        + _dumps(failed)
        + b"\n\n"
    )


# --- decoding ------------------------------------------------------------------------


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


# --- encoding ------------------------------------------------------------------------


def _head(kind: str, fields: dict[str, Any], key: bytes) -> bytes:
    """``event: <kind>`` + ``data: {"type":<kind>,<fields>,"<key>":`` for a delta event."""
    body = _dumps({"type": kind, **fields})[:-1]
    return b"event: " + kind.encode() + b"\ndata: " + body + b',"' + key + b'":'


_TEXT_TAIL = b',"logprobs":[],"sequence_number":'
_TAIL = b',"sequence_number":'


class _Out:
    """An output item the encoder opened: its parts' text pieces and the pre-encoded
    head and tail of its current part's delta events."""

    __slots__ = (
        "args",
        "call_id",
        "head",
        "id",
        "index",
        "kind",
        "name",
        "parts",
        "status",
        "tail",
    )

    def __init__(self, kind: str, id: str, index: int) -> None:
        self.kind = kind
        self.id = id
        self.index = index
        self.status = "in_progress"
        # message: (part type, pieces) per content part; reasoning: one summary part
        self.parts: list[tuple[str, list[str]]] = []
        self.args: list[str] = []
        self.call_id = ""
        self.name = ""
        self.head = b""
        self.tail = b""

    def texts(self) -> list[str]:
        """The text of each part, joined (and kept joined)."""
        out = []
        for _, pieces in self.parts:
            if len(pieces) > 1:
                pieces[:] = ["".join(pieces)]
            out.append(pieces[0] if pieces else "")
        return out

    def arguments(self) -> str:
        if len(self.args) > 1:
            self.args[:] = ["".join(self.args)]
        return self.args[0] if self.args else ""

    def item(self) -> dict[str, Any]:
        """The item as it stands, in the API's shape."""
        if self.kind == "message":
            content = [
                _text_part(text) if kind == "output_text" else _refusal_part(text)
                for (kind, _), text in zip(self.parts, self.texts(), strict=True)
            ]
            return _message_item(self.id, self.status, content)
        if self.kind == "function_call":
            return _call_item(self.id, self.status, self.call_id, self.name, self.arguments())
        return _reasoning_item(self.id, self.texts())


class ResponsesEventEncoder:
    """Deltas in, OpenAI Responses SSE bytes out: the event stream the ``openai`` SDK
    accumulates (``client.responses.stream(...)``).

    Every event is ``event: <type>`` plus compact JSON data with that ``type`` and a
    ``sequence_number`` (0, 1, 2, ... over the stream). The stream starts with
    ``response.created`` and ``response.in_progress``; text and refusals go into a
    ``message`` item (``output_text`` / ``refusal`` content parts), each tool call into
    a ``function_call`` item (several may be open at once, so fragments of parallel
    calls may interleave), reasoning text into a ``reasoning`` item with one summary
    part. Items and parts are opened and closed with their ``.added`` / ``.done``
    events (the ``.done`` events carry the whole text, arguments or item); a change of
    kind closes what is open. A :class:`FinishDelta` closes everything and records the
    reason; :meth:`done` sends ``response.completed`` (``response.incomplete`` with
    ``incomplete_details.reason`` after ``length`` / ``content_filter``) carrying the
    whole response with all items and the usage. There is no ``[DONE]``.

    ``id`` and ``model`` default to those of the first :class:`MessageStart` (else a
    random ``resp_...`` id and ``""``); item ids are random ``msg_...``, ``fc_...``,
    ``rs_...``. ``include_usage=False`` sends ``usage: null``. :meth:`error` and an
    :class:`ErrorDelta` (read in ``error_provider``'s vocabulary) end the stream with the
    top-level ``error`` event and ``response.failed``, which the ``openai`` SDK raises
    on. :meth:`encode` returns ``b""`` when a delta makes no event (usage, a reasoning
    signature: the Responses stream has no place for one). A delta for a choice other
    than 0, or a first tool-call fragment without id and name, raises ``ValueError``
    and changes nothing; use after the end raises ``RuntimeError``.
    """

    __slots__ = (
        "_calls",
        "_ended",
        "_error_provider",
        "_finish",
        "_include_usage",
        "_output",
        "_reasoning",
        "_seq",
        "_started",
        "_text",
        "_usage",
        "created_at",
        "id",
        "model",
    )

    def __init__(
        self,
        id: str | None = None,
        model: str | None = None,
        *,
        created_at: int | None = None,
        include_usage: bool = True,
        error_provider: str = "responses",
    ) -> None:
        self.id = id
        self.model = model
        self.created_at = int(time.time()) if created_at is None else created_at
        self._include_usage = include_usage
        self._error_provider = error_provider
        self._seq = 0
        self._started = False
        self._ended = False
        self._output: list[_Out] = []
        self._text: _Out | None = None  # the open message item
        self._reasoning: _Out | None = None  # the open reasoning item
        self._calls: dict[int, _Out] = {}  # open function calls by tool index
        self._usage = Usage()
        self._finish: FinishDelta | None = None

    # -- framing ------------------------------------------------------------------------

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        payload = {"type": kind, **fields, "sequence_number": seq}
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"

    def _delta(self, item: _Out, text: str) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return item.head + _dumps(text) + item.tail + str(seq).encode() + b"}\n\n"

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return _response(
            id=self.id or "",
            model=self.model or "",
            created_at=self.created_at,
            status=status,
            output=output,
            usage=responses_usage(self._usage) if self._include_usage else None,
        )

    def _check(self) -> None:
        if self._ended:
            raise RuntimeError("the Responses stream already ended (done() or error() was called)")

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress`` if not sent yet; else ``b""``."""
        self._check()
        if self._started:
            return b""
        self._started = True
        if self.id is None:
            self.id = _new_id("resp_")
        if self.model is None:
            self.model = ""
        response = self._response("in_progress", [])
        response["usage"] = None
        return self._emit("response.created", {"response": response}) + self._emit(
            "response.in_progress", {"response": response}
        )

    def _add(self, kind: str, prefix: str) -> _Out:
        item = _Out(kind, _new_id(prefix), len(self._output))
        self._output.append(item)
        return item

    def _added(self, item: _Out) -> bytes:
        return self._emit(
            "response.output_item.added", {"output_index": item.index, "item": item.item()}
        )

    def _close_part(self, item: _Out) -> bytes:
        """The ``.done`` events of a message item's last content part."""
        if not item.parts:
            return b""
        ci = len(item.parts) - 1
        kind = item.parts[-1][0]
        text = item.texts()[-1]
        fields: dict[str, Any] = {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": ci,
        }
        if kind == "output_text":
            out = self._emit("response.output_text.done", {**fields, "text": text, "logprobs": []})
            part = _text_part(text)
        else:
            out = self._emit("response.refusal.done", {**fields, "refusal": text})
            part = _refusal_part(text)
        return out + self._emit("response.content_part.done", {**fields, "part": part})

    def _close(self, item: _Out, status: str) -> bytes:
        fields: dict[str, Any] = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            out = self._close_part(item)
        elif item.kind == "function_call":
            out = self._emit(
                "response.function_call_arguments.done", {**fields, "arguments": item.arguments()}
            )
        else:
            text = item.texts()[0]
            fields["summary_index"] = 0
            out = self._emit("response.reasoning_summary_text.done", {**fields, "text": text})
            part = {"type": "summary_text", "text": text}
            out += self._emit("response.reasoning_summary_part.done", {**fields, "part": part})
        item.status = status
        return out + self._emit(
            "response.output_item.done", {"output_index": item.index, "item": item.item()}
        )

    def _close_all(self, status: str = "completed", *, calls: bool = True) -> bytes:
        open_items = [self._text, self._reasoning]
        if calls:
            open_items.extend(self._calls.values())
            self._calls = {}
        self._text = self._reasoning = None
        items = sorted((i for i in open_items if i is not None), key=lambda i: i.index)
        return b"".join(self._close(item, status) for item in items)

    def _open_part(self, kind: str) -> bytes:
        """Make a ``kind`` part (output_text / refusal) of a message item the open one."""
        out = self.start()
        item = self._text
        if item is None:
            out += self._close_all()
            item = self._text = self._add("message", "msg_")
            out += self._added(item)
        else:
            out += self._close_part(item)
        fields = {"item_id": item.id, "output_index": item.index, "content_index": len(item.parts)}
        item.parts.append((kind, []))
        if kind == "output_text":
            part = _text_part("")
            item.head = _head("response.output_text.delta", fields, b"delta")
            item.tail = _TEXT_TAIL
        else:
            part = _refusal_part("")
            item.head = _head("response.refusal.delta", fields, b"delta")
            item.tail = _TAIL
        return out + self._emit("response.content_part.added", {**fields, "part": part})

    # -- public API ---------------------------------------------------------------------

    def encode_text(self, text: str) -> bytes:
        """Same as ``encode(TextDelta(text))``, without building the delta."""
        if self._ended:
            self._check()
        if type(text) is not str:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        item = self._text
        out = b""
        if item is None or item.parts[-1][0] != "output_text":
            out = self._open_part("output_text")
            item = self._text
            assert item is not None
        if not text:
            return out
        item.parts[-1][1].append(text)
        return out + self._delta(item, text)

    def encode(self, delta: Delta) -> bytes:
        """The events for one delta; ``b""`` when it makes none."""
        self._check()
        choice = getattr(delta, "choice", 0)
        if choice != 0:
            raise ValueError(f"a response has a single reply; got a delta for choice {choice}")
        cls = type(delta)
        if cls is TextDelta:
            assert isinstance(delta, TextDelta)
            return self.encode_text(delta.text)
        if cls is ToolCallDelta:
            assert isinstance(delta, ToolCallDelta)
            return self._tool(delta)
        if cls is ReasoningDelta:
            assert isinstance(delta, ReasoningDelta)
            return self._reasoning_text(delta.text)
        if cls is RefusalDelta:
            assert isinstance(delta, RefusalDelta)
            return self._refusal(delta.text)
        if cls is UsageDelta:
            assert isinstance(delta, UsageDelta)
            apply_usage(self._usage, delta.usage)
            return b""
        if cls is FinishDelta:
            assert isinstance(delta, FinishDelta)
            self._finish = delta
            incomplete = _incomplete_reason(delta.reason, delta.raw_reason)
            return self.start() + self._close_all("incomplete" if incomplete else "completed")
        if cls is MessageStart:
            assert isinstance(delta, MessageStart)
            if not self._started:
                if self.id is None:
                    self.id = delta.id
                if self.model is None:
                    self.model = delta.model
            if delta.usage is not None:
                apply_usage(self._usage, delta.usage)
            return self.start()
        if cls is ErrorDelta:
            assert isinstance(delta, ErrorDelta)
            body: Mapping[str, Any] = delta.body or {"type": delta.type, "message": delta.message}
            return self._fail(StreamError.from_provider_error(body, provider=self._error_provider))
        raise ValueError(f"not a tokenwire delta: {delta!r}")

    def _refusal(self, text: str) -> bytes:
        item = self._text
        out = b""
        if item is None or item.parts[-1][0] != "refusal":
            out = self._open_part("refusal")
            item = self._text
            assert item is not None
        if not text:
            return out
        item.parts[-1][1].append(text)
        return out + self._delta(item, text)

    def _reasoning_text(self, text: str) -> bytes:
        if not text:
            return b""  # a signature alone: the Responses stream has no place for it
        item = self._reasoning
        out = b""
        if item is None:
            out = self.start() + self._close_all()
            item = self._reasoning = self._add("reasoning", "rs_")
            out += self._added(item)  # with an empty summary, as the API sends it
            item.parts.append(("summary_text", []))
            fields = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            out += self._emit("response.reasoning_summary_part.added", {**fields, "part": part})
            item.head = _head("response.reasoning_summary_text.delta", fields, b"delta")
            item.tail = _TAIL
        item.parts[0][1].append(text)
        return out + self._delta(item, text)

    def _tool(self, delta: ToolCallDelta) -> bytes:
        item = self._calls.get(delta.index)
        out = b""
        if item is None:
            if not delta.id or not delta.name:
                raise ValueError(
                    f"the first fragment of tool call {delta.index} must carry its id and name"
                    " (and a call's fragments must not be split by other content)"
                )
            # Parallel calls each get an item and stay open until other content or the
            # finish, so their fragments may interleave (the SDK goes by output_index).
            out = self.start() + self._close_all(calls=False)
            item = self._add("function_call", "fc_")
            item.call_id = delta.id
            item.name = delta.name
            self._calls[delta.index] = item
            out += self._added(item)
            fields = {"item_id": item.id, "output_index": item.index}
            item.head = _head("response.function_call_arguments.delta", fields, b"delta")
            item.tail = _TAIL
        if delta.arguments:
            item.args.append(delta.arguments)
            out += self._delta(item, delta.arguments)
        return out

    def done(self, usage: Usage | None = None) -> bytes:
        """End the stream: close what is open, then ``response.completed`` (or
        ``response.incomplete`` after a ``length`` / ``content_filter`` finish) with the
        whole response (``usage``, else the usage seen in the deltas)."""
        self._check()
        finish = self._finish
        incomplete = (
            None if finish is None else _incomplete_reason(finish.reason, finish.raw_reason)
        )
        out = self.start() + self._close_all("incomplete" if incomplete else "completed")
        if usage is not None:
            apply_usage(self._usage, usage)
        status = "incomplete" if incomplete else "completed"
        response = self._response(status, [item.item() for item in self._output])
        if incomplete:
            response["incomplete_details"] = {"reason": incomplete}
        self._ended = True
        return out + self._emit(f"response.{status}", {"response": response})

    def error(self, exc: BaseException) -> bytes:
        """End the stream with the ``error`` event and ``response.failed`` for ``exc``."""
        self._check()
        return self._fail(StreamError.from_exception(exc))

    def _fail(self, err: StreamError) -> bytes:
        out = self.start()
        self._ended = True
        response = self._response("failed", [item.item() for item in self._output])
        seq = self._seq
        self._seq = seq + 2
        return out + _error_events(err, seq, response)

    @property
    def ended(self) -> bool:
        """True once :meth:`done` or :meth:`error` was called (or an error delta sent)."""
        return self._ended

    @property
    def sequence_number(self) -> int:
        """The number the next event gets (the count of events sent so far)."""
        return self._seq


# --- requests ------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(f"{where} must be an object", param=where)
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string", param=where)
    return value


def _opt_str(body: Mapping[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    return None if value is None else _str(value, where)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError(f"{where} must be a list", param=where)
    return value


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{key} must be a number from {low:g} to {high:g}", param=key)
    return float(value)


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{key} must be a positive integer", param=key)
    return value


def _image(part: Mapping[str, Any], where: str) -> ImagePart:
    url = part.get("image_url")
    if url is None:
        raise RequestError(
            f"{where}.image_url is required (images by file_id cannot be carried)",
            param=f"{where}.image_url",
        )
    url = _str(url, f"{where}.image_url")
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(media_type=media_type, data=data)
    return ImagePart(url=url)


def _content(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", param=where)
    parts: list[Part] = []
    for j, raw in enumerate(content):
        pwhere = f"{where}[{j}]"
        part = _obj(raw, pwhere)
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append(TextPart(_str(part.get("text"), f"{pwhere}.text")))
        elif kind == "refusal":  # an earlier refusal, replayed: it was the reply's text
            parts.append(TextPart(_str(part.get("refusal"), f"{pwhere}.refusal")))
        elif kind == "input_image":
            parts.append(_image(part, pwhere))
        else:
            raise RequestError(f"{pwhere}.type {kind!r} is not supported", param=f"{pwhere}.type")
    return parts


def _tool_output(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, raw in enumerate(_list(output, where)):
        part = _obj(raw, f"{where}[{j}]")
        if part.get("type") != "input_text":
            raise RequestError(
                f"{where}[{j}].type must be 'input_text' (a tool result is text)",
                param=f"{where}[{j}].type",
            )
        texts.append(_str(part.get("text"), f"{where}[{j}].text"))
    return "".join(texts)


def _input_items(items: list[Any], system: list[str]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, raw in enumerate(items):
        where = f"input[{i}]"
        item = _obj(raw, where)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # the short form: {"role": ..., "content": ...}
        if kind == "message":
            role = item.get("role")
            parts = _content(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                system.append("".join(p.text for p in parts if isinstance(p, TextPart)))
            elif role in ("user", "assistant"):
                messages.append(ChatMessage(role, parts))
            else:
                raise RequestError(
                    f"{where}.role must be user, assistant, system or developer",
                    param=f"{where}.role",
                )
        elif kind == "function_call":
            arguments = item.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode()
            call = ToolCallPart(
                id=_str(item.get("call_id"), f"{where}.call_id"),
                name=_str(item.get("name"), f"{where}.name"),
                arguments=arguments,
            )
            # A call belongs to the assistant turn it follows (text, then its calls).
            if messages and messages[-1].role == "assistant":
                messages[-1].parts.append(call)
            else:
                messages.append(ChatMessage("assistant", [call]))
        elif kind == "function_call_output":
            result = ToolResultPart(
                _str(item.get("call_id"), f"{where}.call_id"),
                _tool_output(item.get("output"), f"{where}.output"),
            )
            # Results of parallel calls travel together in one user turn.
            last = messages[-1] if messages else None
            if (
                last is not None
                and last.role == "user"
                and last.parts
                and all(isinstance(p, ToolResultPart) for p in last.parts)
            ):
                last.parts.append(result)
            else:
                messages.append(ChatMessage("user", [result]))
        elif kind == "reasoning":
            continue  # earlier reasoning is not replayed across protocols
        else:
            raise RequestError(f"{where}.type {kind!r} is not supported", param=f"{where}.type")
    return messages


def _tools(raw: Any) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(_list(raw, "tools") if raw is not None else []):
        where = f"tools[{i}]"
        tool = _obj(raw_tool, where)
        kind = tool.get("type")
        if kind != "function":
            raise RequestError(
                f"{where}.type {kind!r} is not supported: only function tools can be carried"
                " (hosted tools run inside the API)",
                param=f"{where}.type",
            )
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise RequestError(f"{where}.strict must be a boolean", param=f"{where}.strict")
        params = tool.get("parameters")
        tools.append(
            ToolSpec(
                name=_str(tool.get("name"), f"{where}.name"),
                description=_opt_str(tool, "description", f"{where}.description"),
                parameters=(
                    {"type": "object", "properties": {}}
                    if params is None
                    else dict(_obj(params, f"{where}.parameters"))
                ),
                strict=strict,
            )
        )
    return tools


def _tool_choice(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise RequestError(
                "tool_choice must be auto, none, required or a function", param="tool_choice"
            )
        return raw
    choice = _obj(raw, "tool_choice")
    if choice.get("type") != "function":
        raise RequestError(
            "tool_choice.type must be 'function' (hosted tools cannot be carried)",
            param="tool_choice.type",
        )
    return _str(choice.get("name"), "tool_choice.name")


def from_responses(body: Mapping[str, Any]) -> ChatRequest:
    """Read an OpenAI Responses request body (``POST /v1/responses``).

    ``input`` is a string (one user message) or a list of items: messages (roles user,
    assistant, system, developer; content a string or ``input_text`` / ``input_image``
    parts), ``function_call`` items (they join the assistant turn before them) and
    ``function_call_output`` items (results in a user turn); ``reasoning`` items are
    skipped. ``instructions`` and system/developer messages become the system prompt.
    ``store`` and ``previous_response_id`` are checked but not part of
    :class:`ChatRequest` (a gateway reads them from the body). Raises
    :class:`RequestError` naming the field for what cannot be carried: hosted tools,
    ``background: true``, other item and part types, wrong types and ranges."""
    body = _obj(body, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required and must be a non-empty string", param="model")
    if opt_bool(body, "background"):
        raise RequestError("background mode is not supported", param="background")
    opt_bool(body, "store")
    previous = _opt_str(body, "previous_response_id", "previous_response_id")
    system: list[str] = []
    instructions = _opt_str(body, "instructions", "instructions")
    if instructions:
        system.append(instructions)
    raw_input = body.get("input")
    messages: list[ChatMessage] = []
    if isinstance(raw_input, str):
        messages.append(ChatMessage("user", [TextPart(raw_input)] if raw_input else []))
    elif isinstance(raw_input, list) and (raw_input or previous is not None):
        messages = _input_items(raw_input, system)
    elif raw_input is not None or previous is None:
        raise RequestError("input must be a string or a non-empty list of items", param="input")
    fmt = None
    if body.get("text") is not None:
        text = _obj(body.get("text"), "text")
        if text.get("format") is not None:
            spec = _obj(text.get("format"), "text.format")
            fmt = read_json_format(spec.get("type"), spec, "text.format")
    effort = None
    if body.get("reasoning") is not None:
        effort = read_effort(
            _obj(body.get("reasoning"), "reasoning").get("effort"), "reasoning.effort"
        )
    return ChatRequest(
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        max_tokens=_positive_int(body, "max_output_tokens"),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        stream=bool(opt_bool(body, "stream")),
        include_usage=True,  # Responses streams always carry usage
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        reasoning_effort=effort,
        response_format=fmt,
        metadata=read_metadata(body.get("metadata")),
    )


def _input_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    url = part.url or f"data:{part.media_type};base64,{part.data}"
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def to_responses(req: ChatRequest) -> dict[str, Any]:
    """Write an OpenAI Responses request body: the system prompt as ``instructions``,
    user turns as messages with ``input_text`` / ``input_image`` parts, assistant text
    as an assistant message, tool calls and results as ``function_call`` /
    ``function_call_output`` items. Function tools are sent with ``strict: false`` unless
    the request asked for strict (the API's default is strict, which rejects many
    schemas the other protocols take).
    Raises :class:`RequestError` for what the API cannot take: stop sequences
    (``stop``), ``seed``, images in assistant turns, a ``json_schema`` format without
    a schema (``response_format``)."""
    if req.stop:
        raise RequestError("the Responses API has no stop sequences", param="stop")
    if req.seed is not None:
        raise RequestError("the Responses API has no seed", param="seed")
    items: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        content = [p for p in msg.parts if isinstance(p, TextPart | ImagePart)]
        calls = [p for p in msg.parts if isinstance(p, ToolCallPart)]
        results = [p for p in msg.parts if isinstance(p, ToolResultPart)]
        for result in results:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": result.tool_call_id,
                    "output": result.content,
                }
            )
        if msg.role == "user":
            if content or not (results or calls):
                items.append(
                    {
                        "type": "message",
                        "role": "user",
                        "content": [_input_part(p) for p in content],
                    }
                )
        else:
            if any(isinstance(p, ImagePart) for p in content):
                raise RequestError(
                    f"messages[{i}]: the Responses API takes no images in assistant turns",
                    param=f"messages[{i}]",
                )
            text = "".join(p.text for p in content if isinstance(p, TextPart))
            if text or not (calls or results):
                items.append({"type": "message", "role": "assistant", "content": text})
        for call in calls:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
    body: dict[str, Any] = {"model": req.model, "input": items}
    if req.system:
        body["instructions"] = req.system
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.parameters,
                # Not strict unless asked: the API's default (strict) rejects many
                # schemas the other protocols take.
                "strict": bool(t.strict),
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = (
            req.tool_choice
            if req.tool_choice in ("auto", "none", "required")
            else {"type": "function", "name": req.tool_choice}
        )
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    effort = req.reasoning_effort
    if effort is None and req.reasoning_budget is not None:
        effort = effort_for_budget(req.reasoning_budget)
    if effort is not None:
        body["reasoning"] = {"effort": effort}
    fmt = req.response_format
    if fmt is not None:
        if fmt.type == "json_schema" and fmt.schema is None:
            raise RequestError(
                "the Responses API needs a schema for a json_schema response format",
                param="response_format",
            )
        body["text"] = {
            "format": {"type": "json_schema", **json_schema_spec(fmt)}
            if fmt.type == "json_schema"
            else {"type": "json_object"}
        }
    if req.metadata is not None:
        body["metadata"] = dict(req.metadata)
    if req.stream:
        body["stream"] = True
    return body


# --- the protocol --------------------------------------------------------------------


class OpenAIResponses(WireProtocol):
    """The OpenAI Responses API: named ``response.*`` events with a ``sequence_number``
    each, no ``[DONE]``; errors as the ``error`` event plus ``response.failed``."""

    name = "responses"
    title = "OpenAI Responses"
    provider_type = "openai-responses"
    endpoints = ("/v1/responses",)
    upstream_path = "/responses"
    default_base_url = "https://api.openai.com/v1"
    default_key_env = "OPENAI_API_KEY"
    max_stop_sequences = 0
    accepts_seed = False
    id_prefix = "resp_"
    reply_path = "/v1/responses/{reply_id}"
    previous_reply_field = "previous_response_id"

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        return from_responses(body)

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_responses(request)

    def decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> ResponsesEventEncoder:
        return ResponsesEventEncoder(
            id, include_usage=include_usage, error_provider=error_provider or self.name
        )

    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        if event.event.startswith("response."):
            return True
        if type(obj) is not dict:
            return False
        kind = obj.get("type")
        if type(kind) is str and kind.startswith("response."):
            return True
        # Anthropic's error event and chat-completions chunks carry no sequence number.
        return (event.event == "error" or kind == "error") and "sequence_number" in obj

    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        return responses_object(message, id=id, model=model, status=status)

    def replay_after(self, query: Mapping[str, str]) -> int | None:
        # starting_after=N: the events after the one numbered N (numbers count from 0).
        after = query.get("starting_after")
        if after is None:
            return 0
        if not after.isascii() or not after.isdigit() or len(after) > 18:
            return None
        return int(after) + 1

    def error_object(self, err: StreamError) -> dict[str, Any]:
        return {"error": openai_error_object(err)}

    def error_event(self, err: StreamError) -> bytes:
        # Without an encoder's state: the two events numbered 0 and 1.
        response = _response(
            id=_new_id("resp_"),
            model="",
            created_at=int(time.time()),
            status="failed",
            output=[],
            usage=None,
        )
        return _error_events(err, 0, response)


OPENAI_RESPONSES = register(OpenAIResponses())
