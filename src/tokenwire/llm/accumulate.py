"""From a whole stream to a :class:`~tokenwire.llm.model.Message`: :func:`accumulate`,
and :class:`MessageBuilder` to add up deltas from any source."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenwire.errors import StreamError
from tokenwire.llm._state import ChoiceState, apply_usage
from tokenwire.llm.decode import Protocol, StreamDecoder
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
from tokenwire.sse import ServerSentEvent, SSEDecoder

__all__ = [
    "MessageBuilder",
    "Source",
    "accumulate",
    "accumulate_choices",
    "error_from_delta",
]

Source = bytes | bytearray | memoryview | str | Iterable[ServerSentEvent] | Iterable[bytes]
"""What :func:`accumulate` reads: a whole raw stream body (bytes or str), or an iterable
of :class:`~tokenwire.sse.ServerSentEvent` or of raw byte chunks.

A whole body is taken as complete: a final event missing only its closing blank line
still counts. Byte chunks are a stream: there, by the SSE rules, an unterminated final
event is discarded (so an Anthropic stream cut before ``message_stop`` is an error)."""


def error_from_delta(
    delta: ErrorDelta, provider: str | None, status: int | None = None
) -> StreamError:
    """The :class:`~tokenwire.errors.StreamError` for a provider's in-band error."""
    body = delta.body if delta.body is not None else {"type": delta.type, "message": delta.message}
    return StreamError.from_provider_error(body, provider=provider or "unknown", status=status)


def _events(source: Source) -> Iterator[ServerSentEvent]:
    if isinstance(source, str):
        source = source.encode()
    if isinstance(source, bytes | bytearray | memoryview):
        # A whole body is complete by definition: a last event that lacks only its
        # blank line is dispatched, as the official SDKs do. (Streamed chunks keep the
        # SSE rule: an unterminated event is discarded.)
        decoder = SSEDecoder()
        yield from decoder.feed(bytes(source))
        yield from decoder.feed(b"\n\n")
        return
    decoder = SSEDecoder()
    for item in source:
        if isinstance(item, ServerSentEvent):
            yield item
        elif isinstance(item, bytes | bytearray | memoryview):
            yield from decoder.feed(bytes(item))
        else:
            raise TypeError(
                f"accumulate() takes ServerSentEvent objects or bytes, not {type(item).__name__}"
            )
    decoder.close()


def _run(source: Source, protocol: Protocol) -> StreamDecoder:
    decoder = StreamDecoder(protocol)
    feed = decoder.feed
    for event in _events(source):
        for delta in feed(event):
            if type(delta) is ErrorDelta:
                raise error_from_delta(delta, decoder.protocol)
        if decoder.done:
            break
    decoder.close()
    return decoder


def accumulate(source: Source, protocol: Protocol = "auto") -> Message:
    """Decode a whole stream and return the final message (choice 0).

    ``source`` is a raw stream body (``bytes``/``str``) or an iterable of events or byte
    chunks; ``protocol`` is a registered protocol's name (``"openai"``, ``"anthropic"``,
    ``"responses"``, ``"gemini"``, ...) or ``"auto"``. Reading stops at the protocol's end
    marker (a Gemini stream has none: it ends with the body). Raises
    :class:`~tokenwire.errors.StreamError` for an error the provider reported in the
    stream (built by ``StreamError.from_provider_error``) and for a stream cut off before
    its end (type ``"network"``), and :class:`~tokenwire.llm.StreamDecodeError` for event
    data that is not JSON.
    """
    return _run(source, protocol).message


def accumulate_choices(source: Source, protocol: Protocol = "auto") -> dict[int, Message]:
    """Like :func:`accumulate`, but every choice of an OpenAI ``n>1`` stream, by index."""
    return _run(source, protocol).messages


class MessageBuilder:
    """Adds up :data:`~tokenwire.llm.model.Delta` values from any source (a decoder, a
    translation, a test) into messages; ``message`` is choice 0, ``messages`` all of them,
    ``error`` the last :class:`~tokenwire.llm.model.ErrorDelta` seen."""

    __slots__ = ("_choices", "_start", "_usage", "error")

    def __init__(self) -> None:
        self._choices: dict[int, ChoiceState] = {}
        self._start: MessageStart | None = None
        self._usage = Usage()
        self.error: ErrorDelta | None = None

    def _state(self, index: int) -> ChoiceState:
        state = self._choices.get(index)
        if state is None:
            msg = Message()
            msg.usage = self._usage
            start = self._start
            if start is not None:
                msg.id, msg.model, msg.role = start.id, start.model, start.role
            state = self._choices[index] = ChoiceState(msg)
        return state

    def feed(self, delta: Delta) -> None:
        """Apply one delta."""
        kind = type(delta)
        if kind is TextDelta:
            self._state(delta.choice).add_text(delta.text)  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            assert isinstance(delta, ToolCallDelta)
            state = self._state(delta.choice)
            state.tool(delta.index, delta.id, delta.name)
            if delta.arguments:
                state.add_arguments(delta.index, delta.arguments)
        elif kind is ReasoningDelta:
            assert isinstance(delta, ReasoningDelta)
            state = self._state(delta.choice)
            if delta.text:
                state.add_reasoning(delta.text)
            if delta.signature is not None:
                state.message.reasoning_signature = delta.signature
        elif kind is RefusalDelta:
            assert isinstance(delta, RefusalDelta)
            self._state(delta.choice).add_refusal(delta.text)
        elif kind is FinishDelta:
            assert isinstance(delta, FinishDelta)
            msg = self._state(delta.choice).message
            msg.finish_reason = delta.reason
            msg.raw_finish_reason = delta.raw_reason
            msg.stop_sequence = delta.stop_sequence
        elif kind is UsageDelta:
            assert isinstance(delta, UsageDelta)
            apply_usage(self._usage, delta.usage)
        elif kind is MessageStart:
            assert isinstance(delta, MessageStart)
            self._start = delta
            self._state(0)
            for state in self._choices.values():
                msg = state.message
                msg.id, msg.model, msg.role = delta.id, delta.model, delta.role
            if delta.usage is not None:
                apply_usage(self._usage, delta.usage)
        elif kind is ErrorDelta:
            assert isinstance(delta, ErrorDelta)
            self.error = delta
        else:
            raise TypeError(f"not a Delta: {delta!r}")

    @property
    def message(self) -> Message:
        """Choice 0 so far."""
        return self._state(0).sync()

    @property
    def messages(self) -> dict[int, Message]:
        """Every choice so far, by index."""
        return {index: state.sync() for index, state in sorted(self._choices.items())}
