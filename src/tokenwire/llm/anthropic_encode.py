"""Encode :data:`~tokenwire.llm.model.Delta` values as Anthropic Messages stream events (sans-I/O).

:class:`AnthropicEventEncoder` turns deltas into the bytes Anthropic's streaming API
sends: every event has an ``event:`` line and a compact JSON ``data:`` line whose
``type`` matches it, in Anthropic's key order. It opens and closes content blocks as
the deltas change kind (``text``, ``thinking``, ``tool_use`` with ``input_json_delta``),
emits ``message_start`` (with usage) and ``ping`` first and ``message_delta``
(stop reason, stop sequence, usage) and ``message_stop`` last. No I/O: feed it deltas
from a producer or from another protocol's decoder, and write what it returns.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm.model import (
    ANTHROPIC_TO_FINISH,
    FINISH_TO_ANTHROPIC,
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

__all__ = ["AnthropicEventEncoder", "anthropic_usage"]

_dumps = orjson.dumps
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def anthropic_usage(usage: Usage | Mapping[str, Any]) -> dict[str, Any]:
    """Usage in Anthropic's field names.

    A mapping is taken to be in Anthropic's names already and is returned as a copy
    (``output_tokens`` is set to 0 when missing, since the SDK reads it). A
    :class:`Usage` gives ``input_tokens``, the cache counts and ``output_tokens`` that
    are known (``output_tokens`` always). Raises ``TypeError`` for anything else.
    """
    if isinstance(usage, Usage):
        out: dict[str, Any] = {}
        for name in _USAGE_FIELDS:
            value = getattr(usage, name)
            if value is not None:
                out[name] = value
        out.setdefault("output_tokens", 0)
        return out
    if isinstance(usage, Mapping):
        out = dict(usage)
        out.setdefault("output_tokens", 0)
        return out
    raise TypeError(f"usage must be a Usage or a mapping, got {type(usage).__name__}")


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


class AnthropicEventEncoder:
    """Deltas in, Anthropic Messages SSE bytes out.

    ``id`` and ``model`` default to those of the first :class:`MessageStart` (else a
    random ``msg_…`` id and ``""``). ``usage`` (a :class:`Usage` or a mapping in
    Anthropic's names) is the input usage put in ``message_start``; a
    :class:`MessageStart` with usage overrides it. ``error_provider`` tells
    :meth:`encode` whose vocabulary an :class:`ErrorDelta` uses.

    :meth:`start` emits ``message_start`` + ``ping`` (done implicitly before the first
    content). :meth:`encode` returns the events for one delta, ``b""`` when there are
    none. A :class:`FinishDelta` closes the open content blocks and records the stop
    reason; :meth:`done` sends ``message_delta`` and ``message_stop``. :meth:`error`
    ends the stream with ``event: error``, which the ``anthropic`` SDK raises on.
    Anthropic streams have one choice: a delta for ``choice`` other than 0 raises
    ``ValueError``, as does the first fragment of a tool call without id and name;
    the encoder is unchanged after such an error. Use after the end raises
    ``RuntimeError``.
    """

    __slots__ = (
        "_block",
        "_block_kind",
        "_ended",
        "_error_provider",
        "_next_index",
        "_role",
        "_start_usage",
        "_started",
        "_stop_reason",
        "_stop_sequence",
        "_text_head",
        "_tools",
        "_usage",
        "id",
        "model",
    )

    def __init__(
        self,
        id: str | None = None,
        model: str | None = None,
        *,
        role: str = "assistant",
        usage: Usage | Mapping[str, Any] | None = None,
        error_provider: str = "anthropic",
    ) -> None:
        self.id = id
        self.model = model
        self._role = role
        self._start_usage: Usage | Mapping[str, Any] | None = usage
        self._error_provider = error_provider
        self._started = False
        self._ended = False
        self._next_index = 0
        self._block: int | None = None  # the open text/thinking block, if any
        self._block_kind: str | None = None
        self._text_head = b""  # _DELTA_HEAD + index for the open text block
        self._tools: dict[int, int] = {}  # open tool_use blocks: call index -> block index
        self._usage = Usage()
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None

    def _check(self) -> None:
        if self._ended:
            raise RuntimeError("the Anthropic stream already ended (done() or error() was called)")

    # -- message and block framing --------------------------------------------------------

    def start(self) -> bytes:
        """``message_start`` (with usage) and ``ping`` if not sent yet; else ``b""``."""
        self._check()
        if self._started:
            return b""
        self._started = True
        if self.id is None:
            self.id = "msg_" + secrets.token_urlsafe(18)
        if self.model is None:
            self.model = ""
        start_usage = self._start_usage
        if isinstance(start_usage, Usage):
            _merge(self._usage, start_usage)
            usage: dict[str, Any] = anthropic_usage(start_usage)
            usage.setdefault("input_tokens", 0)
            usage["output_tokens"] = usage.pop("output_tokens")  # Anthropic puts it last
        elif start_usage is not None:
            usage = anthropic_usage(start_usage)
        else:
            usage = {"input_tokens": 0, "output_tokens": 0}
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": self._role,
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _PING

    def _close_all(self) -> bytes:
        indexes = sorted(self._tools.values())
        if self._block is not None:
            indexes.append(self._block)
            indexes.sort()
        self._tools.clear()
        self._block = None
        self._block_kind = None
        return b"".join(
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
            + str(i).encode()
            + b"}\n\n"
            for i in indexes
        )

    def _open(self, content_block: dict[str, Any]) -> tuple[bytes, int]:
        out = self.start() + self._close_all()
        index = self._next_index
        self._next_index += 1
        payload = {"type": "content_block_start", "index": index, "content_block": content_block}
        return out + _event("content_block_start", payload), index

    def _text_block(self, kind: str) -> bytes:
        """Make sure a ``kind`` block ("text"/"thinking") is the open one."""
        if self._block_kind == kind:
            return b""
        block = {"type": "text", "text": ""} if kind == "text" else _THINKING_BLOCK
        out, index = self._open(block)
        self._block = index
        self._block_kind = kind
        self._text_head = _DELTA_HEAD + str(index).encode()
        return out

    # -- public API ---------------------------------------------------------------------

    def encode_text(self, text: str) -> bytes:
        """Same as ``encode(TextDelta(text))``, without building the delta."""
        if self._ended:
            self._check()
        if type(text) is not str:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pre = b"" if self._block_kind == "text" else self._text_block("text")
        return (
            pre
            + self._text_head
            + b',"delta":{"type":"text_delta","text":'
            + _dumps(text)
            + b"}}\n\n"
        )

    def encode(self, delta: Delta) -> bytes:
        """The events for one delta; ``b""`` when it emits nothing."""
        self._check()
        if getattr(delta, "choice", 0) != 0:
            raise ValueError(
                f"Anthropic messages have a single choice; got a delta for choice {delta.choice}"  # type: ignore[union-attr]
            )
        cls = type(delta)
        if cls is TextDelta or cls is RefusalDelta:
            assert isinstance(delta, TextDelta | RefusalDelta)
            # Anthropic has no refusal delta: a refusal's text is the reply's text.
            return self.encode_text(delta.text)
        if cls is ToolCallDelta:
            assert isinstance(delta, ToolCallDelta)
            return self._tool(delta)
        if cls is ReasoningDelta:
            assert isinstance(delta, ReasoningDelta)
            out = self._text_block("thinking")
            head = self._text_head
            if delta.text:
                out += (
                    head
                    + b',"delta":{"type":"thinking_delta","thinking":'
                    + _dumps(delta.text)
                    + b"}}\n\n"
                )
            if delta.signature is not None:
                out += (
                    head
                    + b',"delta":{"type":"signature_delta","signature":'
                    + _dumps(delta.signature)
                    + b"}}\n\n"
                )
            return out
        if cls is UsageDelta:
            assert isinstance(delta, UsageDelta)
            _merge(self._usage, delta.usage)
            return b""
        if cls is FinishDelta:
            assert isinstance(delta, FinishDelta)
            raw = delta.raw_reason
            if raw is not None and raw in ANTHROPIC_TO_FINISH:
                reason = raw
            elif delta.stop_sequence is not None and delta.reason == "stop":
                reason = "stop_sequence"
            else:
                reason = FINISH_TO_ANTHROPIC.get(delta.reason, "end_turn")
            self._stop_reason = reason
            self._stop_sequence = delta.stop_sequence
            return self.start() + self._close_all()
        if cls is MessageStart:
            assert isinstance(delta, MessageStart)
            if not self._started:
                if self.id is None:
                    self.id = delta.id
                if self.model is None:
                    self.model = delta.model
                if delta.role:
                    self._role = delta.role
                if delta.usage is not None:
                    self._start_usage = delta.usage
            return self.start()
        if cls is ErrorDelta:
            assert isinstance(delta, ErrorDelta)
            body: Mapping[str, Any] = delta.body or {"type": delta.type, "message": delta.message}
            err = StreamError.from_provider_error(body, provider=self._error_provider)
            self._ended = True
            return StreamError.from_exception(err).to_sse_event("anthropic")
        raise ValueError(f"not a tokenwire delta: {delta!r}")

    def _tool(self, delta: ToolCallDelta) -> bytes:
        index = self._tools.get(delta.index)
        out = b""
        if index is None:
            if not delta.id or not delta.name:
                raise ValueError(
                    f"the first fragment of tool call {delta.index} must carry its id and name"
                )
            # Parallel calls each get a block; blocks stay open until other content or
            # the finish, so fragments of several calls may interleave (the SDK
            # accumulates by block index).
            out = self.start()
            if self._block is not None:
                out += self._close_all()
            index = self._next_index
            self._next_index += 1
            self._tools[delta.index] = index
            block = {"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}}
            payload = {"type": "content_block_start", "index": index, "content_block": block}
            out += _event("content_block_start", payload)
        if delta.arguments:
            out += (
                _DELTA_HEAD
                + str(index).encode()
                + b',"delta":{"type":"input_json_delta","partial_json":'
                + _dumps(delta.arguments)
                + b"}}\n\n"
            )
        return out

    def done(
        self,
        usage: Usage | Mapping[str, Any] | None = None,
    ) -> bytes:
        """End the message: close open blocks, then ``message_delta`` (stop reason from
        the :class:`FinishDelta`, else ``end_turn``; ``usage``, else the usage seen so
        far) and ``message_stop``."""
        self._check()
        out = self.start() + self._close_all()
        if isinstance(usage, Usage):
            _merge(self._usage, usage)
            usage = None
        final = anthropic_usage(usage if usage is not None else self._usage)
        delta = {
            "stop_reason": self._stop_reason or "end_turn",
            "stop_sequence": self._stop_sequence,
        }
        payload = {"type": "message_delta", "delta": delta, "usage": final}
        self._ended = True
        return out + _event("message_delta", payload) + _STOP

    def error(self, exc: BaseException) -> bytes:
        """End the stream with ``event: error`` for ``exc``."""
        self._check()
        self._ended = True
        return StreamError.from_exception(exc).to_sse_event("anthropic")

    @property
    def ended(self) -> bool:
        """True once :meth:`done` or :meth:`error` was called (or an error delta sent)."""
        return self._ended


_THINKING_BLOCK: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}


def _merge(into: Usage, new: Usage) -> None:
    for name in (*_USAGE_FIELDS, "reasoning_tokens"):
        value = getattr(new, name)
        if value is not None:
            setattr(into, name, value)
