"""Encoding a Responses stream: deltas in, the ``response.*`` events the ``openai`` SDK
accumulates out (:class:`ResponsesEventEncoder`, sans-I/O)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm._state import apply_usage
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.openai_responses.objects import (
    _call_item,
    _error_events,
    _incomplete_reason,
    _message_item,
    _new_id,
    _reasoning_item,
    _refusal_part,
    _response,
    _text_part,
    responses_usage,
)

_dumps = orjson.dumps


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
