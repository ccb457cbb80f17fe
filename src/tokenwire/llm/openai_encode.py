"""Encode :data:`~tokenwire.llm.model.Delta` values as OpenAI chat-completion chunks (sans-I/O).

:class:`OpenAIChunkEncoder` turns deltas into the exact bytes OpenAI's streaming API sends:
``data: {compact JSON}`` blocks in OpenAI's key order, with the same ``id`` and ``created``
on every chunk, a role chunk first, a finish chunk with an empty delta, an optional usage
chunk with ``"choices":[]`` and then ``data: [DONE]``. It does no I/O: feed it deltas from
any source (a producer, or another protocol's decoder for translation while streaming)
and write what it returns.

>>> enc = OpenAIChunkEncoder(id="chatcmpl-1", model="gpt-4o", created=1)
>>> enc.encode(TextDelta("Hi"))[:40]
b'data: {"id":"chatcmpl-1","object":"chat.'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

from tokenwire.errors import StreamError
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

__all__ = ["OpenAIChunkEncoder", "openai_usage"]

_DONE = b"data: [DONE]\n\n"
_TAIL_OPEN = b',"logprobs":null,"finish_reason":null}]}\n\n'
_dumps = orjson.dumps


def openai_usage(usage: Usage | Mapping[str, Any]) -> dict[str, Any]:
    """Usage in OpenAI's field names.

    A mapping is taken to be in OpenAI's names already and is returned as a copy, with
    ``total_tokens`` filled in when it is missing. A :class:`Usage` maps
    ``input_tokens -> prompt_tokens``, ``output_tokens -> completion_tokens``,
    ``cache_read_input_tokens -> prompt_tokens_details.cached_tokens`` and
    ``reasoning_tokens -> completion_tokens_details.reasoning_tokens``; unknown counts are 0.
    Raises ``TypeError`` for anything else.
    """
    if isinstance(usage, Usage):
        prompt = usage.input_tokens or 0
        completion = usage.output_tokens or 0
        out: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if usage.cache_read_input_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_input_tokens}
        if usage.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
        return out
    if isinstance(usage, Mapping):
        out = dict(usage)
        if "total_tokens" not in out and "prompt_tokens" in out and "completion_tokens" in out:
            out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
        return out
    raise TypeError(f"usage must be a Usage or a mapping, got {type(usage).__name__}")


def _merge_usage(into: Usage, new: Usage) -> None:
    for name in (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "reasoning_tokens",
    ):
        value = getattr(new, name)
        if value is not None:
            setattr(into, name, value)


class OpenAIChunkEncoder:
    """Deltas in, OpenAI ``chat.completion.chunk`` SSE bytes out.

    ``id`` and ``model`` default to those of the first :class:`MessageStart` (else a random
    ``chatcmpl-…`` id and ``""``); ``created`` defaults to now. All three are fixed for the
    stream. ``include_usage=False`` suppresses the usage chunk even when usage is known.
    ``reasoning_field`` names the delta field for :class:`ReasoningDelta` text (the
    de-facto ``reasoning_content``; ``None`` drops reasoning). ``error_provider`` tells
    :meth:`encode` whose vocabulary an :class:`ErrorDelta` uses.

    :meth:`encode` returns ``b""`` when a delta produces no chunk (usage, a reasoning
    signature). :meth:`done` ends the stream (usage chunk, ``[DONE]``); :meth:`error` ends
    it with an in-band error the ``openai`` SDK raises as ``APIError``. After either,
    :meth:`encode` raises ``RuntimeError``. Invalid deltas raise ``ValueError`` and leave
    the encoder unchanged.
    """

    __slots__ = (
        "_choice_tails",
        "_ended",
        "_error_provider",
        "_finished",
        "_include_usage",
        "_prefix",
        "_reasoning_field",
        "_role",
        "_started",
        "_tool_index",
        "_usage",
        "created",
        "id",
        "model",
        "object",
        "system_fingerprint",
    )

    def __init__(
        self,
        id: str | None = None,
        model: str | None = None,
        created: int | None = None,
        *,
        object: str = "chat.completion.chunk",
        role: str = "assistant",
        system_fingerprint: str | None = None,
        include_usage: bool = True,
        reasoning_field: str | None = "reasoning_content",
        error_provider: str = "openai",
    ) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.object = object
        self.system_fingerprint = system_fingerprint
        self._role = role
        self._include_usage = include_usage
        self._reasoning_field = reasoning_field
        self._error_provider = error_provider
        self._prefix: bytes | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_index: dict[tuple[int, int], int] = {}
        self._usage: Usage | None = None
        self._ended = False
        self._choice_tails: dict[int, bytes] = {}

    # -- framing ------------------------------------------------------------------------

    def _head(self) -> bytes:
        """``data: {"id":…,"object":…,"created":…,"model":…,`` — built once per stream."""
        if self._prefix is None:
            if self.id is None:
                self.id = "chatcmpl-" + secrets.token_urlsafe(18)
            if self.model is None:
                self.model = ""
            fields: dict[str, Any] = {
                "id": self.id,
                "object": self.object,
                "created": self.created,
                "model": self.model,
            }
            if self.system_fingerprint is not None:
                fields["system_fingerprint"] = self.system_fingerprint
            self._prefix = b"data: " + _dumps(fields)[:-1] + b","
        return self._prefix

    def _chunk(self, choice: int, delta_json: bytes) -> bytes:
        head = self._choice_tails.get(choice)
        if head is None:
            head = self._head() + b'"choices":[{"index":' + str(choice).encode() + b',"delta":'
            self._choice_tails[choice] = head
        return head + delta_json + _TAIL_OPEN

    def _open(self, choice: int) -> bytes:
        """The role chunk for ``choice`` the first time it is used, else ``b""``;
        ``ValueError`` once the choice has finished."""
        if choice in self._started:
            return b""
        if choice in self._finished:
            raise ValueError(f"choice {choice} already finished")
        self._started.add(choice)
        return self._chunk(choice, _dumps({"role": self._role, "content": ""}))

    def _check(self) -> None:
        if self._ended:
            raise RuntimeError("the OpenAI stream already ended (done() or error() was called)")

    # -- public API ---------------------------------------------------------------------

    def start(self) -> bytes:
        """The first chunk (role, empty content) if not sent yet; else ``b""``."""
        self._check()
        return self._open(0)

    def encode_text(self, text: str, choice: int = 0) -> bytes:
        """Same as ``encode(TextDelta(text, choice))``, without building the delta."""
        if self._ended:
            self._check()
        if type(text) is not str:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pre = b"" if choice in self._started else self._open(choice)
        return pre + self._chunk(choice, b'{"content":' + _dumps(text) + b"}")

    def encode(self, delta: Delta) -> bytes:
        """The chunk(s) for one delta; ``b""`` when it emits nothing."""
        self._check()
        cls = type(delta)
        if cls is TextDelta:
            assert isinstance(delta, TextDelta)
            return self.encode_text(delta.text, delta.choice)
        if cls is ToolCallDelta:
            assert isinstance(delta, ToolCallDelta)
            return self._tool(delta)
        if cls is ReasoningDelta:
            assert isinstance(delta, ReasoningDelta)
            if self._reasoning_field is None or not delta.text:
                return b""  # OpenAI chunks have no place for a thinking signature
            pre = self._open(delta.choice)
            body = _dumps({self._reasoning_field: delta.text})
            return pre + self._chunk(delta.choice, body)
        if cls is RefusalDelta:
            assert isinstance(delta, RefusalDelta)
            pre = self._open(delta.choice)
            return pre + self._chunk(delta.choice, b'{"refusal":' + _dumps(delta.text) + b"}")
        if cls is UsageDelta:
            assert isinstance(delta, UsageDelta)
            self._add_usage(delta.usage)
            return b""
        if cls is FinishDelta:
            assert isinstance(delta, FinishDelta)
            return self._finish(delta)
        if cls is MessageStart:
            assert isinstance(delta, MessageStart)
            if self._prefix is None:
                if self.id is None:
                    self.id = delta.id
                if self.model is None:
                    self.model = delta.model
            if delta.role and 0 not in self._started:
                self._role = delta.role
            if delta.usage is not None:
                self._add_usage(delta.usage)
            return self._open(0)
        if cls is ErrorDelta:
            assert isinstance(delta, ErrorDelta)
            error: Mapping[str, Any] = delta.body or {"type": delta.type, "message": delta.message}
            err = StreamError.from_provider_error(error, provider=self._error_provider)
            self._ended = True
            return StreamError.from_exception(err).to_sse_event("openai")
        raise ValueError(f"not a tokenwire delta: {delta!r}")

    def _tool(self, delta: ToolCallDelta) -> bytes:
        c = delta.choice
        key = (c, delta.index)
        index = self._tool_index.get(key)
        if index is None:
            if not delta.id or not delta.name:
                raise ValueError(
                    f"the first fragment of tool call {delta.index} must carry its id and name"
                )
            pre = self._open(c)
            # OpenAI numbers a choice's calls 0, 1, 2… in order of appearance.
            index = sum(1 for k in self._tool_index if k[0] == c)
            self._tool_index[key] = index
            call: dict[str, Any] = {
                "index": index,
                "id": delta.id,
                "type": "function",
                "function": {"name": delta.name, "arguments": delta.arguments},
            }
            return pre + self._chunk(c, _dumps({"tool_calls": [call]}))
        pre = self._open(c)
        frag = {"index": index, "function": {"arguments": delta.arguments}}
        return pre + self._chunk(c, _dumps({"tool_calls": [frag]}))

    def _finish(self, delta: FinishDelta) -> bytes:
        c = delta.choice
        if c in self._finished:
            raise ValueError(f"choice {c} already finished")
        pre = self._open(c)
        # A finished choice leaves `_started`, so `_open` refuses any later delta for it.
        self._started.discard(c)
        self._finished.add(c)
        return (
            pre
            + self._chunk(c, b"{}")[: -len(_TAIL_OPEN)]
            + b',"logprobs":null,"finish_reason":'
            + _dumps(delta.reason)
            + b"}]}\n\n"
        )

    def _add_usage(self, usage: Usage) -> None:
        if self._usage is None:
            self._usage = Usage()
        _merge_usage(self._usage, usage)

    def usage_chunk(self, usage: Usage | Mapping[str, Any]) -> bytes:
        """The ``"choices":[]`` chunk carrying ``usage`` (see :func:`openai_usage`)."""
        body = _dumps(openai_usage(usage))
        return self._head() + b'"choices":[],"usage":' + body + b"}\n\n"

    def done(self, usage: Usage | Mapping[str, Any] | None = None) -> bytes:
        """End the stream: the usage chunk (``usage``, else the usage seen in
        :class:`UsageDelta` / :class:`MessageStart`, if any and ``include_usage``), then
        ``data: [DONE]``. A choice with no finish chunk gets none: nothing is invented."""
        self._check()
        out = self._open(0) if not self._started and not self._finished else b""
        if isinstance(usage, Usage):
            self._add_usage(usage)
            usage = None
        if self._include_usage:
            if usage is not None:
                out += self.usage_chunk(usage)
            elif self._usage is not None:
                out += self.usage_chunk(self._usage)
        self._ended = True
        return out + _DONE

    def error(self, exc: BaseException) -> bytes:
        """End the stream with ``data: {"error": {...}}`` for ``exc``."""
        self._check()
        self._ended = True
        return StreamError.from_exception(exc).to_sse_event("openai")

    @property
    def ended(self) -> bool:
        """True once :meth:`done` or :meth:`error` was called (or an error delta sent)."""
        return self._ended
