"""Senders: push events from a producer task into an event-stream response.

``create()`` returns ``(sender, response)``: the handler returns ``response`` and a
task produces through ``sender``. Between them is a bounded channel of encoded bytes
(``buffer_size`` events), so a slow client back-pressures the producer, and memory
stays bounded. Whatever the producer has already queued is written in one piece, so
the producer is at most ``buffer_size`` events ahead of the write in progress.

Once the stream cannot take more (the client left, a write timed out, the server is
shutting down), every ``send*`` raises :class:`tokenwire.errors.ClientDisconnected`,
so the producer stops spending tokens. ``async with sender:`` finishes the stream on
normal exit and sends the protocol's error event if the block raises (a
``ClientDisconnected`` from the block is swallowed: it only means "stop"); the
exception is then re-raised, as from any ``with`` block. ``sender.produce(coro)`` runs
the producer as a task the sender keeps and whose outcome it collects, so that a
failure that was already sent to the client is not reported again by asyncio as
"Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
from collections import deque
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import orjson

from tokenwire.errors import ClientDisconnected, StreamError, public_error
from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
from tokenwire.llm.gemini import GeminiEventEncoder, usage_from_gemini
from tokenwire.llm.gemini.objects import finish_reason as gemini_finish_reason
from tokenwire.llm.model import (
    ANTHROPIC_TO_FINISH,
    Delta,
    FinishDelta,
    ReasoningDelta,
    ToolCallDelta,
    Usage,
)
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.openai_responses import ResponsesEventEncoder
from tokenwire.llm.protocol import get_protocol
from tokenwire.server.response import EventStreamResponse, OnDisconnect, encode_item

__all__ = [
    "AnthropicSender",
    "ChunkSender",
    "ClaudeSender",
    "EventSender",
    "GeminiSender",
    "OpenAISender",
    "ResponsesSender",
]

Protocol = str  # "generic" or a wire protocol's name
_DONE = b"data: [DONE]\n\n"
logger = logging.getLogger("tokenwire.server")
# asyncio keeps only weak references to tasks: producers are held here until they end.
_PRODUCERS: set[asyncio.Task[Any]] = set()


class _Channel:
    """Bounded single-producer, single-consumer channel of whole-event bytes.

    The response iterates it; each step returns everything queued, joined. Closing it
    from the response side (``aclose``) makes pending and later ``put`` calls raise
    :class:`ClientDisconnected`.
    """

    __slots__ = ("_buf", "_capacity", "_closed", "_eof", "_getter", "_putters")

    _tokenwire_bytes = True  # items are encoded whole events: no per-item checks

    def __init__(self, capacity: int) -> None:
        self._buf: deque[bytes] = deque()
        self._capacity = capacity
        self._closed = False
        self._eof = False
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, data: bytes) -> None:
        if self._closed:
            raise ClientDisconnected("the event stream is closed (client gone or server stopping)")
        buf = self._buf
        while len(buf) >= self._capacity:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._putters:
                    self._putters.remove(waiter)
            if self._closed:
                raise ClientDisconnected(
                    "the event stream is closed (client gone or server stopping)"
                )
        buf.append(data)
        if self._getter is not None:
            self._wake_getter()

    def put_nowait(self, data: bytes, *, eof: bool = False) -> None:
        """Queue without waiting (first and last events: at most one over capacity)."""
        if not self._closed:
            self._buf.append(data)
        if eof:
            self._eof = True
        self._wake_getter()

    def end(self) -> None:
        self._eof = True
        self._wake_getter()

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        buf = self._buf
        while not buf:
            if self._eof or self._closed:
                raise StopAsyncIteration
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return data

    async def aclose(self) -> None:
        """Consumer side is done: refuse further events and release the producer."""
        self._closed = True
        self._buf.clear()
        for waiter in self._putters:
            if not waiter.done():
                waiter.set_result(None)


class _Sender:
    """What every sender shares: the channel, the response, ``async with``."""

    __slots__ = ("_channel", "_ended", "_reported", "response")

    protocol: ClassVar[Protocol] = "generic"

    def __init__(self, channel: _Channel, response: EventStreamResponse) -> None:
        self._channel = channel
        self.response = response
        self._ended = False
        self._reported: BaseException | None = None

    def produce(self, producer: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``producer`` (a coroutine sending through this sender, usually inside
        ``async with sender:``) as a background task, kept until it ends.

        Its outcome is collected: an exception that ``async with sender`` already sent
        to the client as an error event (and logged) is not reported again, and one
        raised elsewhere (or after the stream ended) is logged (``tokenwire.server``) and, if the
        stream is still open, sent as an error event too."""
        task = asyncio.ensure_future(producer)
        _PRODUCERS.add(task)
        task.add_done_callback(self._produced)
        return task

    def _produced(self, task: asyncio.Task[Any]) -> None:
        _PRODUCERS.discard(task)
        if task.cancelled():
            self._channel.end()
            return
        exc = task.exception()  # retrieved: asyncio does not report it again
        if exc is None or exc is self._reported or isinstance(exc, ClientDisconnected):
            return
        logger.error("a sender's producer failed", exc_info=exc)
        if not self._ended and not self._channel.closed:
            self._ended = True
            self._channel.put_nowait(self._error_bytes(exc), eof=True)

    @classmethod
    def _make(
        cls,
        buffer_size: int,
        first: bytes,
        *,
        ping: float | None,
        send_timeout: float | None,
        headers: Mapping[str, str] | None,
        on_disconnect: OnDisconnect | None,
    ) -> tuple[_Channel, EventStreamResponse]:
        if type(buffer_size) is not int or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        channel = _Channel(buffer_size)
        if first:
            channel.put_nowait(first)
        response = EventStreamResponse(
            channel,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )
        response.error_protocol = cls.protocol
        if cls.protocol != "generic":
            response.heartbeat = get_protocol(cls.protocol).heartbeat  # what its SDKs skip
            # An LLM client must not mistake a cut-short reply for a complete one.
            stopping = StreamError("overloaded", "the server is shutting down", status=503)
            response.shutdown_event = StreamError.from_exception(stopping).to_sse_event(
                cls.protocol
            )
        return channel, response

    @property
    def closed(self) -> bool:
        """True once the stream takes no more events: the client left, a write timed
        out or the server is shutting down. (Not set by finishing the stream.)"""
        return self._channel.closed

    @property
    def finished(self) -> bool:
        """True once the stream was finished or ended with an error by this sender."""
        return self._ended

    def _check(self) -> None:
        if self._channel.closed:
            raise ClientDisconnected("the event stream is closed (client gone or server stopping)")
        if self._ended:
            raise RuntimeError("the stream was already finished; nothing more can be sent")

    async def _finish_with(self, data: bytes) -> None:
        self._ended = True
        try:
            await self._channel.put(data)
        finally:
            self._channel.end()

    def _error_bytes(self, exc: BaseException) -> bytes:
        return public_error(exc, expose=self.response.expose_errors).to_sse_event(self.protocol)

    async def send_error(self, exc: BaseException) -> None:
        """End the stream with the protocol's error event for ``exc``: a
        :class:`~tokenwire.errors.StreamError` as it is; any other exception by its
        category with a generic message and a reference id that is logged with it
        (:func:`tokenwire.errors.public_error`; ``response.expose_errors = True`` sends
        its text instead)."""
        self._check()
        await self._finish_with(self._error_bytes(exc))

    async def _default_finish(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> _Sender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, ClientDisconnected):
            self._channel.end()
            return True
        if self._ended or self._channel.closed:
            self._channel.end()
            return False
        if exc is None:
            with contextlib.suppress(ClientDisconnected):
                await self._default_finish()
            return False
        if isinstance(exc, Exception):
            self._reported = exc
            with contextlib.suppress(ClientDisconnected):
                await self.send_error(exc)
            return False
        # Cancelled or interrupted: no awaiting now; end with the error at once.
        self._ended = True
        self._channel.put_nowait(self._error_bytes(exc), eof=True)
        return False


class _PlainSender(_Sender):
    """Senders whose stream has no protocol envelope (no id, model or start event)."""

    __slots__ = ()

    @classmethod
    def create(
        cls,
        buffer_size: int = 100,
        *,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> tuple[Self, EventStreamResponse]:
        """A sender and the response to return; ``buffer_size`` bounds queued events."""
        channel, response = cls._make(
            buffer_size,
            b"",
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )
        return cls(channel, response), response

    async def send_finish(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    async def _default_finish(self) -> None:
        await self.send_finish()


class EventSender(_PlainSender):
    """Plain events (anything :class:`EventStreamResponse` takes) from a producer.

    >>> sender, response = EventSender.create(buffer_size=100)
    """

    __slots__ = ()

    async def send(self, item: object) -> None:
        """Queue one event (see :func:`tokenwire.server.response.encode_item`; invalid
        items raise ``TypeError``/``ValueError`` and nothing is queued)."""
        self._check()
        await self._channel.put(encode_item(item))

    async def send_finish(self) -> None:
        """End the stream (the body ends after what is queued)."""
        self._check()
        self._ended = True
        self._channel.end()


class ChunkSender(_PlainSender):
    """The simple browser format: ``data: {"chunk": "..."}`` per piece of text, then
    ``data: [DONE]``. Errors are ``event: error`` events (generic format)."""

    __slots__ = ()

    async def send(self, text: str) -> None:
        """Queue ``data: {"chunk": text}``."""
        self._check()
        if type(text) is not str:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        await self._channel.put(b'data: {"chunk":' + orjson.dumps(text) + b"}\n\n")

    async def send_finish(self) -> None:
        """Queue ``data: [DONE]`` and end the stream."""
        self._check()
        await self._finish_with(_DONE)


class _Encoder(typing.Protocol):
    """What a sender needs of a protocol's encoder."""

    @property
    def ended(self) -> bool: ...
    def encode_text(self, text: str) -> bytes: ...
    def encode(self, delta: Delta) -> bytes: ...


_E = TypeVar("_E", bound=_Encoder)


class _EncodingSender(_Sender, Generic[_E]):
    """The LLM protocols' senders: a protocol encoder (``encoder``) turns deltas into
    the protocol's events; ``create()`` queues its start events at once."""

    __slots__ = ("encoder",)

    def __init__(self, channel: _Channel, response: EventStreamResponse, encoder: _E) -> None:
        super().__init__(channel, response)
        self.encoder = encoder

    @classmethod
    def _start(
        cls,
        encoder: _E,
        first: bytes,
        buffer_size: int,
        *,
        ping: float | None,
        send_timeout: float | None,
        headers: Mapping[str, str] | None,
        on_disconnect: OnDisconnect | None,
    ) -> tuple[Self, EventStreamResponse]:
        # ``first``: the protocol's start events, queued at once (none for some).
        channel, response = cls._make(
            buffer_size,
            first,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )
        return cls(channel, response, encoder), response

    async def send(self, text: str) -> None:
        """Queue one text delta (opening the protocol's text block or item first where
        it has them)."""
        self._check()
        await self._channel.put(self.encoder.encode_text(text))

    async def send_delta(self, delta: Delta) -> None:
        """Queue any delta (reasoning, refusal, tool call fragment, usage, finish...);
        see the protocol's encoder (``encoder``) for what each becomes."""
        self._check()
        data = self.encoder.encode(delta)
        if self.encoder.ended:
            await self._finish_with(data)
        elif data:
            await self._channel.put(data)

    async def send_tool_call(
        self, index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
    ) -> None:
        """Queue a fragment of tool call ``index``: the first carries the call's ``id``
        and ``name``, later ones more ``arguments`` text."""
        await self.send_delta(ToolCallDelta(index, id, name, arguments))

    async def send_finish(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    async def _default_finish(self) -> None:
        await self.send_finish()


class OpenAISender(_EncodingSender[OpenAIChunkEncoder]):
    """OpenAI chat-completion chunks, as the official ``openai`` SDK reads them.

    ``create()`` queues the role chunk at once (so the client gets its first byte
    before the first token); ``send`` queues content deltas; ``send_finish`` the
    finish chunk, the usage chunk when usage is given, and ``data: [DONE]``. Built on
    :class:`tokenwire.llm.openai_encode.OpenAIChunkEncoder` (``encoder``).
    """

    __slots__ = ()

    protocol: ClassVar[Protocol] = "openai"

    @classmethod
    def create(
        cls,
        id: str | None = None,
        model: str = "",
        role: str = "assistant",
        object: str = "chat.completion.chunk",
        buffer_size: int = 100,
        *,
        created: int | None = None,
        system_fingerprint: str | None = None,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> tuple[OpenAISender, EventStreamResponse]:
        """A sender and the response to return. ``id`` defaults to a random
        ``chatcmpl-…``, ``created`` to now; both are the same on every chunk."""
        encoder = OpenAIChunkEncoder(
            id,
            model,
            created,
            object=object,
            role=role,
            system_fingerprint=system_fingerprint,
        )
        return cls._start(
            encoder,
            encoder.start(),
            buffer_size,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )

    async def send_finish(
        self,
        finish_reason: str = "stop",
        usage: Usage | Mapping[str, Any] | None = None,
    ) -> None:
        """Queue the finish chunk, then a usage chunk if ``usage`` is given (OpenAI
        field names or a :class:`~tokenwire.llm.model.Usage`), then ``data: [DONE]``."""
        self._check()
        encoder = self.encoder
        data = encoder.encode(FinishDelta(finish_reason)) + encoder.done(usage)
        await self._finish_with(data)


class AnthropicSender(_EncodingSender[AnthropicEventEncoder]):
    """Anthropic Messages events, as the official ``anthropic`` SDK reads them.

    ``create()`` queues ``message_start`` (with ``usage``, the input usage if known)
    and ``ping`` at once; ``send`` queues ``text_delta`` events (opening a text block
    first); ``send_tool_call`` opens a ``tool_use`` block and sends the arguments as
    ``input_json_delta``; ``send_finish`` closes the open block, then ``message_delta``
    (stop reason, stop sequence, usage) and ``message_stop``. Built on
    :class:`tokenwire.llm.anthropic_encode.AnthropicEventEncoder` (``encoder``).
    """

    __slots__ = ()

    protocol: ClassVar[Protocol] = "anthropic"

    @classmethod
    def create(
        cls,
        id: str | None = None,
        model: str = "",
        role: str = "assistant",
        buffer_size: int = 100,
        *,
        usage: Usage | Mapping[str, Any] | None = None,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> tuple[AnthropicSender, EventStreamResponse]:
        """A sender and the response to return. ``id`` defaults to a random ``msg_…``."""
        encoder = AnthropicEventEncoder(id, model, role=role, usage=usage)
        return cls._start(
            encoder,
            encoder.start(),
            buffer_size,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )

    async def send_thinking(self, text: str = "", signature: str | None = None) -> None:
        """Queue a ``thinking_delta`` (and/or the block's ``signature_delta``)."""
        await self.send_delta(ReasoningDelta(text, signature))

    async def send_finish(
        self,
        stop_reason: str = "end_turn",
        usage: Usage | Mapping[str, Any] | None = None,
        stop_sequence: str | None = None,
    ) -> None:
        """Queue ``content_block_stop`` for open blocks, ``message_delta`` (with
        ``usage`` in Anthropic field names or a :class:`~tokenwire.llm.model.Usage`)
        and ``message_stop``."""
        self._check()
        encoder = self.encoder
        finish = FinishDelta(_finish_reason(stop_reason), stop_reason, stop_sequence)
        await self._finish_with(encoder.encode(finish) + encoder.done(usage))


class ResponsesSender(_EncodingSender[ResponsesEventEncoder]):
    """OpenAI Responses API events, as the official ``openai`` SDK reads them
    (``client.responses.create(stream=True)``, ``client.responses.stream(...)``).

    ``create()`` queues ``response.created`` and ``response.in_progress`` at once;
    ``send`` queues ``response.output_text.delta`` events (opening the message item and
    its text part first); ``send_delta`` any delta (reasoning summaries, refusals,
    function-call fragments); ``send_finish`` closes what is open and sends
    ``response.completed`` (``response.incomplete`` for ``"length"`` or
    ``"content_filter"``) with the whole response and ``usage``. Errors end the stream
    with the ``error`` event and ``response.failed``, numbered after the events before
    them. Built on :class:`tokenwire.llm.openai_responses.ResponsesEventEncoder`
    (``encoder``).
    """

    __slots__ = ()

    protocol: ClassVar[Protocol] = "responses"

    @classmethod
    def create(
        cls,
        id: str | None = None,
        model: str = "",
        buffer_size: int = 100,
        *,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> tuple[ResponsesSender, EventStreamResponse]:
        """A sender and the response to return. ``id`` defaults to a random ``resp_…``."""
        encoder = ResponsesEventEncoder(id, model)
        return cls._start(
            encoder,
            encoder.start(),
            buffer_size,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )

    async def send_finish(
        self, finish_reason: str = "stop", usage: Usage | Mapping[str, Any] | None = None
    ) -> None:
        """Close what is open and queue the terminal event with the whole response;
        ``usage`` as a :class:`~tokenwire.llm.model.Usage` or OpenAI field names."""
        self._check()
        encoder = self.encoder
        if usage is not None and not isinstance(usage, Usage):
            usage = Usage(
                input_tokens=usage.get("input_tokens", usage.get("prompt_tokens")),
                output_tokens=usage.get("output_tokens", usage.get("completion_tokens")),
            )
        data = encoder.encode(FinishDelta(finish_reason)) + encoder.done(usage)
        await self._finish_with(data)

    def _error_bytes(self, exc: BaseException) -> bytes:
        if self.encoder.ended:
            return b""
        return self.encoder.error(public_error(exc, expose=self.response.expose_errors))


class GeminiSender(_EncodingSender[GeminiEventEncoder]):
    """Gemini ``streamGenerateContent?alt=sse`` events, as the official ``google-genai``
    SDK reads them (``client.models.generate_content_stream``; ``@google/genai``'s
    ``generateContentStream``).

    Gemini streams have no start event: ``create()`` queues nothing, and the first byte
    is the first chunk. ``send`` queues a chunk with one ``text`` part; ``send_thought``
    a ``thought`` part (and/or the ``thoughtSignature`` of the next part);
    ``send_function_call`` a whole ``functionCall`` part (Gemini sends calls whole:
    fragments given to ``send_tool_call`` are gathered and sent together);
    ``send_finish`` the last chunk with the ``finishReason`` and ``usageMetadata``.
    Errors end the stream with an ``{"error": {"code", "message", "status"}}`` chunk,
    which the SDK raises as ``ClientError`` / ``ServerError``. Built on
    :class:`tokenwire.llm.gemini.GeminiEventEncoder` (``encoder``).
    """

    __slots__ = ("_calls",)

    protocol: ClassVar[Protocol] = "gemini"

    def __init__(
        self, channel: _Channel, response: EventStreamResponse, encoder: GeminiEventEncoder
    ) -> None:
        super().__init__(channel, response, encoder)
        self._calls = 0

    @classmethod
    def create(
        cls,
        id: str | None = None,
        model: str | None = None,
        buffer_size: int = 100,
        *,
        ping: float | None = 15.0,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> tuple[GeminiSender, EventStreamResponse]:
        """A sender and the response to return. ``id`` (every chunk's ``responseId``)
        defaults to a random one; ``model`` is the chunks' ``modelVersion``."""
        encoder = GeminiEventEncoder(id, model)
        return cls._start(
            encoder,
            b"",
            buffer_size,
            ping=ping,
            send_timeout=send_timeout,
            headers=headers,
            on_disconnect=on_disconnect,
        )

    async def send_thought(self, text: str = "", signature: str | None = None) -> None:
        """Queue a ``thought: true`` part (a ``signature`` goes on the next part as its
        ``thoughtSignature``, where the API puts it)."""
        await self.send_delta(ReasoningDelta(text, signature))

    async def send_function_call(
        self, name: str, args: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> None:
        """Queue a whole ``functionCall`` part (``args``: the call's arguments)."""
        index = self._calls
        self._calls += 1
        arguments = orjson.dumps(dict(args or {})).decode()
        await self.send_delta(ToolCallDelta(index, id, name, arguments))

    async def send_finish(
        self, finish_reason: str = "STOP", usage: Usage | Mapping[str, Any] | None = None
    ) -> None:
        """Queue the last chunk: ``finishReason`` (Gemini's word: ``STOP``,
        ``MAX_TOKENS``, ``SAFETY``, ...) and ``usageMetadata`` (``usage`` in Gemini's
        field names, ``promptTokenCount`` ..., or a :class:`~tokenwire.llm.model.Usage`)."""
        self._check()
        if usage is not None and not isinstance(usage, Usage):
            usage = usage_from_gemini(dict(usage))
        reason = gemini_finish_reason(finish_reason, called=self._calls > 0)
        encoder = self.encoder
        data = encoder.encode(FinishDelta(reason, finish_reason)) + encoder.done(usage)
        await self._finish_with(data)

    def _error_bytes(self, exc: BaseException) -> bytes:
        if self.encoder.ended:
            return b""
        return self.encoder.error(public_error(exc, expose=self.response.expose_errors))


def _finish_reason(stop_reason: str) -> str:
    return ANTHROPIC_TO_FINISH.get(stop_reason, "stop")


ClaudeSender = AnthropicSender
"""Alias of :class:`AnthropicSender` (the seed's name)."""
