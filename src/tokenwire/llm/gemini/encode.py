"""Encoding a Gemini stream: deltas in, the ``streamGenerateContent?alt=sse`` events
the ``google-genai`` SDK reads out (:class:`GeminiEventEncoder`, sans-I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm._state import apply_usage
from tokenwire.llm.gemini.objects import (
    call_part,
    candidate,
    chunk,
    error_event,
    gemini_finish,
    gemini_usage,
    new_response_id,
)
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

_dumps = orjson.dumps
_HEAD = b'data: {"candidates":[{"content":{"parts":['
_END = b"\r\n\r\n"


class _Call:
    __slots__ = ("args", "id", "name")

    def __init__(self, id: str, name: str) -> None:
        self.id = id
        self.name = name
        self.args: list[str] = []


class _Candidate:
    """What the encoder keeps for one candidate (choice)."""

    __slots__ = ("calls", "finish", "sent", "signature", "tail")

    def __init__(self, tail: bytes) -> None:
        self.tail = tail  # after the parts: role, index, the chunk's other fields
        self.calls: dict[int, _Call] = {}  # calls being gathered, by tool index
        self.sent: set[int] = set()  # tool indexes already sent
        self.signature: str | None = None  # a thought signature for the next part
        self.finish: FinishDelta | None = None


class GeminiEventEncoder:
    """Deltas in, Gemini SSE bytes out: what ``streamGenerateContent?alt=sse`` sends and
    the ``google-genai`` SDK's ``generate_content_stream`` reads.

    Every event is ``data: <GenerateContentResponse JSON>`` and a blank line (CRLF line
    ends, as the API writes them; no event names, no end marker). Text and refusals are
    ``text`` parts, reasoning ``thought: true`` parts, one chunk per delta; a reasoning
    signature is held and put on the next part as its ``thoughtSignature``. A tool
    call's fragments are gathered and sent as one whole ``functionCall`` part (its
    ``args`` parsed from the arguments; made-up ids left out) when the candidate goes on
    with other content or finishes; calls gathered together go in one chunk. A
    :class:`FinishDelta` records the reason; :meth:`done` sends the last chunk: every
    candidate's ``finishReason`` (``STOP`` if none was given; a Gemini upstream's own
    reason as it came) and ``usageMetadata`` (unless ``include_usage`` is false).

    ``id`` (``responseId``) and ``model`` (``modelVersion``) default to those of the
    first :class:`MessageStart` (else a random id and none). :meth:`error` and an
    :class:`ErrorDelta` (read in ``error_provider``'s vocabulary) end the stream with an
    error chunk ``{"error": {"code", "message", "status"}}``, which the SDK raises as
    ``ClientError`` / ``ServerError``; calls still being gathered are not sent.
    :meth:`encode` returns ``b""`` when a delta makes no event yet. A delta for a
    finished candidate, a call's first fragment without a name, or more of a call
    already sent raises ``ValueError`` and changes nothing; use after the end raises
    ``RuntimeError``.
    """

    __slots__ = (
        "_candidates",
        "_ended",
        "_error_provider",
        "_fixed",
        "_include_usage",
        "_meta",
        "_usage",
        "id",
        "model",
    )

    def __init__(
        self,
        id: str | None = None,
        model: str | None = None,
        *,
        include_usage: bool = True,
        error_provider: str = "gemini",
    ) -> None:
        self.id = id
        self.model = model
        self._include_usage = include_usage
        self._error_provider = error_provider
        self._candidates: dict[int, _Candidate] = {}
        self._usage = Usage()
        self._fixed = False  # id and model are settled (the first chunk is out)
        self._meta = b""
        self._ended = False

    # -- framing ------------------------------------------------------------------------

    def _fix(self) -> None:
        if not self._fixed:
            self._fixed = True
            if self.id is None:
                self.id = new_response_id()
            meta = chunk([], usage=None, model=self.model, response_id=self.id)
            del meta["candidates"]
            self._meta = _dumps(meta)[1:-1]

    def _candidate(self, index: int) -> _Candidate:
        cand = self._candidates.get(index)
        if cand is None:
            self._fix()
            tail = b'],"role":"model"},"index":' + str(index).encode() + b"}]"
            if self._meta:
                tail += b"," + self._meta
            cand = self._candidates[index] = _Candidate(tail + b"}" + _END)
        elif cand.finish is not None:
            raise ValueError(f"candidate {index} already finished")
        return cand

    def _chunk(self, cand: _Candidate, parts: list[dict[str, Any]]) -> bytes:
        """One chunk with ``parts`` (the first gets the held signature)."""
        if cand.signature is not None:
            parts[0]["thoughtSignature"] = cand.signature
            cand.signature = None
        return _HEAD + b",".join(_dumps(p) for p in parts) + cand.tail

    def _flush(self, cand: _Candidate) -> bytes:
        """The gathered calls, whole, in one chunk."""
        if not cand.calls:
            return b""
        parts = [
            call_part((call.id, call.name, "".join(call.args))) for call in cand.calls.values()
        ]
        cand.sent.update(cand.calls)
        cand.calls = {}
        return self._chunk(cand, parts)

    def _check(self) -> None:
        if self._ended:
            raise RuntimeError("the Gemini stream already ended (done() or error() was called)")

    # -- public API ---------------------------------------------------------------------

    def encode_text(self, text: str, choice: int = 0) -> bytes:
        """Same as ``encode(TextDelta(text, choice))``, without building the delta."""
        if self._ended:
            self._check()
        if type(text) is not str:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        cand = self._candidate(choice)
        out = self._flush(cand) if cand.calls else b""
        if cand.signature is not None:
            return out + self._chunk(cand, [{"text": text}])
        if not text:
            return out
        return out + _HEAD + b'{"text":' + _dumps(text) + b"}" + cand.tail

    def encode(self, delta: Delta) -> bytes:
        """The events for one delta; ``b""`` when it makes none (yet)."""
        self._check()
        cls = type(delta)
        if cls is TextDelta or cls is RefusalDelta:
            assert isinstance(delta, TextDelta | RefusalDelta)
            # Gemini has no refusals: a refusal's text is the reply's text.
            return self.encode_text(delta.text, delta.choice)
        if cls is ToolCallDelta:
            assert isinstance(delta, ToolCallDelta)
            return self._tool(delta)
        if cls is ReasoningDelta:
            assert isinstance(delta, ReasoningDelta)
            return self._reasoning(delta)
        if cls is UsageDelta:
            assert isinstance(delta, UsageDelta)
            apply_usage(self._usage, delta.usage)
            return b""
        if cls is FinishDelta:
            assert isinstance(delta, FinishDelta)
            cand = self._candidate(delta.choice)
            out = self._flush(cand)
            cand.finish = delta
            return out
        if cls is MessageStart:
            assert isinstance(delta, MessageStart)
            if not self._fixed:
                if self.id is None:
                    self.id = delta.id
                if self.model is None:
                    self.model = delta.model
            if delta.usage is not None:
                apply_usage(self._usage, delta.usage)
            return b""
        if cls is ErrorDelta:
            assert isinstance(delta, ErrorDelta)
            body: Mapping[str, Any] = delta.body or {"type": delta.type, "message": delta.message}
            return self._fail(StreamError.from_provider_error(body, provider=self._error_provider))
        raise ValueError(f"not a tokenwire delta: {delta!r}")

    def _reasoning(self, delta: ReasoningDelta) -> bytes:
        cand = self._candidate(delta.choice)
        # Calls end before other content (a held signature goes with them).
        out = self._flush(cand) if cand.calls else b""
        if delta.signature is not None:
            if cand.signature is not None:
                # Two signatures with no part between: the first goes on an empty part.
                out += self._chunk(cand, [{"text": ""}])
            cand.signature = delta.signature
        if not delta.text:
            return out
        return out + self._chunk(cand, [{"text": delta.text, "thought": True}])

    def _tool(self, delta: ToolCallDelta) -> bytes:
        index = delta.index
        known = self._candidates.get(delta.choice)
        if known is not None and index in known.sent:
            raise ValueError(f"tool call {index} was already sent whole; it cannot grow")
        if not delta.name and (known is None or index not in known.calls):
            raise ValueError(f"the first fragment of tool call {index} must carry its name")
        cand = self._candidate(delta.choice)
        call = cand.calls.get(index)
        if call is None:
            call = cand.calls[index] = _Call(delta.id or "", delta.name or "")
        elif delta.id and not call.id:
            call.id = delta.id
        if delta.arguments:
            call.args.append(delta.arguments)
        return b""

    def done(self, usage: Usage | None = None) -> bytes:
        """End the stream: the calls still gathered, then the last chunk with every
        candidate's ``finishReason`` and the ``usageMetadata`` (``usage``, else the usage
        seen in the deltas)."""
        self._check()
        if not self._candidates:
            self._candidate(0)
        out = b""
        candidates = []
        for index, cand in sorted(self._candidates.items()):
            out += self._flush(cand)
            finish = cand.finish
            parts: list[dict[str, Any]] = [{"text": ""}]
            if cand.signature is not None:
                parts[0]["thoughtSignature"] = cand.signature
                cand.signature = None
            reason = gemini_finish(
                None if finish is None else finish.reason,
                None if finish is None else finish.raw_reason,
            )
            candidates.append(candidate(parts, index, reason))
        if usage is not None:
            apply_usage(self._usage, usage)
        last = chunk(
            candidates,
            usage=gemini_usage(self._usage) if self._include_usage else None,
            model=self.model,
            response_id=self.id,
        )
        self._ended = True
        return out + b"data: " + _dumps(last) + _END

    def error(self, exc: BaseException) -> bytes:
        """End the stream with an error chunk for ``exc``."""
        self._check()
        return self._fail(StreamError.from_exception(exc))

    def _fail(self, err: StreamError) -> bytes:
        self._ended = True
        return error_event(err, err.http_status("generic"))

    @property
    def ended(self) -> bool:
        """True once :meth:`done` or :meth:`error` was called (or an error delta sent)."""
        return self._ended
