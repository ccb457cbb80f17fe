"""One incremental decoder for every registered protocol: :class:`StreamDecoder`."""

from __future__ import annotations

from typing import Any

import orjson

from tokenwire.llm._state import StreamDecodeError
from tokenwire.llm.model import Delta, ErrorDelta, Message
from tokenwire.llm.protocol import EventDecoder, get_protocol, protocols
from tokenwire.sse import ServerSentEvent

__all__ = ["Protocol", "StreamDecodeError", "StreamDecoder", "detect_protocol"]

Protocol = str
"""A registered protocol's name (``"openai"``, ``"anthropic"``, ``"responses"``, ...)
or ``"auto"``."""


def detect_protocol(event: ServerSentEvent) -> str | None:
    """Which protocol an event belongs to, or ``None`` if it carries nothing to tell by
    (empty data, or a ``ping`` that several protocols may send). Each registered protocol
    is asked whether the event is unmistakably its own; an event none claims is taken for
    OpenAI chat completions (the de-facto format of OpenAI-compatible servers)."""
    name = event.event
    if name == "ping":
        return None
    data = event.data
    if not data:
        return None
    obj: Any = None
    if data[0] == "{":
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "openai"  # the OpenAI decoder reports the bad data
        if type(obj) is dict and obj.get("type") == "ping":
            return None
    for protocol in protocols():
        if protocol.detect(event, obj):
            return protocol.name
    return "openai"


class StreamDecoder:
    """Incremental, sans-I/O decoder from SSE events to :data:`~tokenwire.llm.model.Delta`.

    ``protocol`` is a registered protocol's name (``"openai"``, ``"anthropic"``,
    ``"responses"``, ...) or ``"auto"`` (decided by the first event that carries data,
    see :func:`detect_protocol`).

    - ``feed(event) -> list[Delta]``: the deltas one event carries. A provider's in-band
      error becomes an :class:`~tokenwire.llm.model.ErrorDelta` (it is data, not an
      exception, so a gateway can forward it); event data that is not a JSON object raises
      :class:`StreamDecodeError`.
    - ``close() -> list[Delta]``: the end of the stream. A stream cut off before its end
      marker raises :class:`~tokenwire.errors.StreamError` of type ``"network"``
      (Anthropic: no ``message_stop``; OpenAI: neither ``[DONE]`` nor any
      ``finish_reason``; Responses: no terminal ``response.*`` event). A missing
      ``[DONE]`` after a finish is tolerated.
    - ``message``: choice 0 accumulated so far; ``messages``: every choice by index
      (OpenAI ``n>1``); ``done``: the end marker arrived; ``error``: the in-band error.
    """

    __slots__ = ("_impl", "_requested")

    def __init__(self, protocol: Protocol = "auto") -> None:
        self._requested = protocol
        self._impl: EventDecoder | None = None
        if protocol != "auto":
            self._impl = get_protocol(protocol).decoder()  # ValueError naming the known

    @property
    def protocol(self) -> str | None:
        """The protocol in use (``None`` while ``"auto"`` has not seen data yet)."""
        impl = self._impl
        return None if impl is None else impl.protocol

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """Decode one event into deltas (possibly none)."""
        impl = self._impl
        if impl is None:
            detected = detect_protocol(event)
            if detected is None:
                return []
            impl = self._impl = get_protocol(detected).decoder()
        return impl.feed(event)

    def close(self) -> list[Delta]:
        """End of stream (see the class docs for when this raises)."""
        impl = self._impl
        if impl is None:
            # Nothing arrived: the protocol's own rule for an empty stream applies.
            impl = get_protocol(
                "openai" if self._requested == "auto" else self._requested
            ).decoder()
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
