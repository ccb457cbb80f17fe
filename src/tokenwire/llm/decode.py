"""One incremental decoder for both protocols: :class:`StreamDecoder`."""

from __future__ import annotations

from typing import Literal

import orjson

from tokenwire.llm._state import StreamDecodeError
from tokenwire.llm.anthropic_decode import AnthropicStreamDecoder
from tokenwire.llm.model import Delta, ErrorDelta, Message
from tokenwire.llm.openai_decode import OpenAIStreamDecoder
from tokenwire.sse import ServerSentEvent

__all__ = ["Protocol", "StreamDecodeError", "StreamDecoder", "detect_protocol"]

Protocol = Literal["openai", "anthropic", "auto"]

_ANTHROPIC_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    }
)


def detect_protocol(event: ServerSentEvent) -> Literal["openai", "anthropic"] | None:
    """Which protocol an event belongs to, or ``None`` if it carries nothing to tell by
    (empty data, or a ``ping`` that either protocol may send). Anthropic events are named
    (``event: message_start``, ...) and typed (``"type": "message_start"``); everything
    else is taken for OpenAI."""
    name = event.event
    if name in _ANTHROPIC_TYPES:
        return "anthropic"
    if name == "ping":
        return None
    data = event.data
    if not data:
        return None
    if data[0] == "{":
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "openai"  # the OpenAI decoder reports the bad data
        if type(obj) is dict:
            kind = obj.get("type")
            if kind == "ping":
                return None
            if kind in _ANTHROPIC_TYPES or (kind == "error" and type(obj.get("error")) is dict):
                return "anthropic"
    return "openai"


class StreamDecoder:
    """Incremental, sans-I/O decoder from SSE events to :data:`~tokenwire.llm.model.Delta`.

    ``protocol`` is ``"openai"``, ``"anthropic"`` or ``"auto"`` (decided by the first event
    that carries data, see :func:`detect_protocol`).

    - ``feed(event) -> list[Delta]``: the deltas one event carries. A provider's in-band
      error becomes an :class:`~tokenwire.llm.model.ErrorDelta` (it is data, not an
      exception, so a gateway can forward it); event data that is not a JSON object raises
      :class:`StreamDecodeError`.
    - ``close() -> list[Delta]``: the end of the stream. A stream cut off before its end
      marker raises :class:`~tokenwire.errors.StreamError` of type ``"network"``
      (Anthropic: no ``message_stop``; OpenAI: neither ``[DONE]`` nor any
      ``finish_reason``). A missing ``[DONE]`` after a finish is tolerated.
    - ``message``: choice 0 accumulated so far; ``messages``: every choice by index
      (OpenAI ``n>1``); ``done``: the end marker arrived; ``error``: the in-band error.
    """

    __slots__ = ("_impl", "_requested")

    def __init__(self, protocol: Protocol = "auto") -> None:
        if protocol not in ("openai", "anthropic", "auto"):
            raise ValueError(f"protocol must be 'openai', 'anthropic' or 'auto', not {protocol!r}")
        self._requested = protocol
        self._impl: OpenAIStreamDecoder | AnthropicStreamDecoder | None = None
        if protocol == "openai":
            self._impl = OpenAIStreamDecoder()
        elif protocol == "anthropic":
            self._impl = AnthropicStreamDecoder()

    @property
    def protocol(self) -> Literal["openai", "anthropic"] | None:
        """The protocol in use (``None`` while ``"auto"`` has not seen data yet)."""
        impl = self._impl
        return None if impl is None else impl.protocol  # type: ignore[return-value]

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas (possibly none)."""
        impl = self._impl
        if impl is None:
            detected = detect_protocol(event)
            if detected is None:
                return []
            impl = self._impl = (
                AnthropicStreamDecoder() if detected == "anthropic" else OpenAIStreamDecoder()
            )
        return impl.feed(event)

    def close(self) -> list[Delta]:
        """End of stream (see the class docs for when this raises)."""
        impl = self._impl
        if impl is None:
            impl = (
                AnthropicStreamDecoder()
                if self._requested == "anthropic"
                else OpenAIStreamDecoder()
            )
        return impl.close()

    @property
    def done(self) -> bool:
        """The protocol's end marker arrived (``[DONE]`` / ``message_stop``)."""
        return self._impl is not None and self._impl.done

    @property
    def error(self) -> ErrorDelta | None:
        """The in-band error the stream reported, if any."""
        return None if self._impl is None else self._impl.error

    @property
    def message(self) -> Message:
        """Choice 0 as accumulated so far."""
        return Message() if self._impl is None else self._impl.message

    @property
    def messages(self) -> dict[int, Message]:
        """Every choice as accumulated so far, by choice index."""
        return {} if self._impl is None else self._impl.messages
