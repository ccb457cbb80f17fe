"""Reading events from a streamed httpx2/httpx response, and the connection error."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

import orjson

from tokenwire.sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecodeError, SSEDecoder

__all__ = [
    "MAX_ERROR_BODY",
    "AsyncStreamResponse",
    "SSEConnectionError",
    "StreamResponse",
    "aiter_sse",
    "iter_sse",
]

MAX_ERROR_BODY = 64 * 1024
"""At most this many bytes of an error response body are read and kept."""


class StreamResponse(Protocol):
    """A streamed response: ``httpx2.Response`` or ``httpx.Response``."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...
    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class AsyncStreamResponse(Protocol):
    """An async streamed response: ``httpx2.Response`` or ``httpx.Response``."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...
    def aiter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class SSEConnectionError(Exception):
    """An event stream could not be opened, or was lost for good.

    Raised for a response that is not an event stream: a status other than 200 (and
    204, which just ends the stream) or a ``Content-Type`` other than
    ``text/event-stream``. These are never retried. ``status`` and ``headers`` are the
    response's; ``body`` holds up to :data:`MAX_ERROR_BODY` bytes of it (e.g. an API's
    JSON error; see :meth:`json`). Also raised, with ``status=None`` and the transport
    error as ``__cause__``, when a connection fails and no reconnection is allowed or
    left.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.body = body
        self.url = url

    @property
    def text(self) -> str:
        """The (bounded) body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The (bounded) body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return orjson.loads(self.body)


def content_type_ok(headers: Any) -> bool:
    """The MIME type essence is ``text/event-stream`` (parameters and case ignored)."""
    value = headers.get("content-type")
    if not value:
        return False
    return str(value).split(";", 1)[0].strip().lower() == "text/event-stream"


def response_error(
    status: int, headers: Any, body: bytes, url: str | None = None
) -> SSEConnectionError:
    """The :class:`SSEConnectionError` for a response that is not an event stream."""
    snippet = body[:300].decode("utf-8", "replace").strip()
    where = f" from {url}" if url else ""
    if status != 200:
        message = f"HTTP {status}{where} instead of an event stream"
    else:
        ctype = headers.get("content-type") or "no Content-Type"
        message = f"{ctype!s}{where} instead of text/event-stream"
    if snippet:
        message += f": {snippet}"
    return SSEConnectionError(
        message, status=status, headers=_plain_headers(headers), body=body, url=url
    )


def _plain_headers(headers: Any) -> Mapping[str, str]:
    try:
        return dict(headers.items())
    except AttributeError:
        return {}


def is_transport_error(exc: BaseException) -> bool:
    """A network-level failure from httpx2 or httpx (connect, read, timeout, protocol)."""
    import httpx2

    if isinstance(exc, httpx2.TransportError):
        return True
    httpx = sys.modules.get("httpx")  # only a loaded httpx can have raised
    return httpx is not None and isinstance(exc, httpx.TransportError)


def abort_socket(response: Any) -> None:
    """Shut the response's socket down so that a read blocked on it (in another thread
    or task) returns at once. Best effort: does nothing if the socket is not exposed."""
    try:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # closed already, or not a socket: nothing to interrupt
        pass


def read_bounded(response: StreamResponse) -> bytes:
    """Read at most :data:`MAX_ERROR_BODY` bytes of the body, then close it."""
    out = bytearray()
    try:
        for chunk in response.iter_bytes():
            out += chunk
            if len(out) >= MAX_ERROR_BODY:
                break
    except Exception as exc:
        if not is_transport_error(exc):
            raise
    finally:
        response.close()
    return bytes(out[:MAX_ERROR_BODY])


async def aread_bounded(response: AsyncStreamResponse) -> bytes:
    """Read at most :data:`MAX_ERROR_BODY` bytes of the body, then close it."""
    out = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            out += chunk
            if len(out) >= MAX_ERROR_BODY:
                break
    except Exception as exc:
        if not is_transport_error(exc):
            raise
    finally:
        await response.aclose()
    return bytes(out[:MAX_ERROR_BODY])


def iter_sse(
    response: StreamResponse, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
) -> Iterator[ServerSentEvent]:
    """The events of a streamed ``httpx2`` or ``httpx`` response.

    Decodes the raw body bytes (``iter_bytes``, so a compressed body works) with
    :class:`~tokenwire.sse.SSEDecoder`; no text or line splitting happens on the way.
    Status and headers are not checked (see :class:`EventSource` for that). An
    unterminated final event is discarded. An event over ``max_event_size`` raises
    :class:`~tokenwire.sse.SSEDecodeError` after the valid events decoded with it have
    been yielded; memory stays bounded.
    """
    decoder = SSEDecoder(max_event_size)
    feed = decoder.feed
    for chunk in response.iter_bytes():
        try:
            events = feed(chunk)
        except SSEDecodeError as exc:
            yield from exc.events
            raise
        yield from events
    decoder.close()


async def aiter_sse(
    response: AsyncStreamResponse, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
) -> AsyncIterator[ServerSentEvent]:
    """The events of a streamed ``httpx2`` or ``httpx`` response (async twin of
    :func:`iter_sse`, same rules)."""
    decoder = SSEDecoder(max_event_size)
    feed = decoder.feed
    async for chunk in response.aiter_bytes():
        try:
            events = feed(chunk)
        except SSEDecodeError as exc:
            for event in exc.events:
                yield event
            raise
        for event in events:
            yield event
    decoder.close()
