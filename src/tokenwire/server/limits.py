"""Connection limits for uvicorn: bounded request heads, a deadline for each head to
arrive, and a cap on open connections.

uvicorn's fast (httptools) HTTP/1.1 protocol reads request heads without a size or time
limit, so one connection can send hundreds of MiB of a single header, and connections
that send a partial head stay open for good (slowloris). :class:`LimitedHttpProtocol`
is that protocol with limits, passed to uvicorn through its supported ``http`` setting::

    from tokenwire.server.limits import ConnectionLimits, limited_protocol

    uvicorn.run(app, http=limited_protocol(ConnectionLimits(max_connections=500)))

What a client that breaks a limit gets (then the connection closes):

- a request head over ``max_head_bytes`` (request line and headers) or with more than
  ``max_headers`` header lines: ``431 Request Header Fields Too Large``;
- a head that has not fully arrived ``head_timeout`` seconds after the connection
  opened (or after the request's first byte on a keep-alive connection):
  ``408 Request Timeout`` (a connection that sent nothing at all is just closed);
- a connection beyond ``max_connections`` open ones: ``503 Service Unavailable``
  with ``Retry-After: 1`` once its head is in (at most one second later), so that a
  flood of connections gets answers instead of exhausting file descriptors.

Each answer is a small JSON body ``{"error": {"type", "message"}}``, which the OpenAI and
Anthropic SDKs both read as a status error. Idle keep-alive connections are closed by
uvicorn's own ``timeout_keep_alive``; request bodies are the application's to bound.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionLimits", "LimitedHttpProtocol", "default_max_connections", "limited_protocol"]

_LINGER = 1.0  # seconds a refused connection is read (and discarded) before it closes
_DISCARD = 1024 * 1024  # bytes of it read and discarded before it is closed at once


def default_max_connections() -> int:
    """Half the process's file descriptor limit, less a reserve: each client stream of
    a gateway may hold an upstream connection too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, (soft - 64) // 2)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Limits for :class:`LimitedHttpProtocol` (``max_connections`` 0: from the file
    descriptor limit, see :func:`default_max_connections`)."""

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    max_connections: int = 0

    def resolved(self) -> ConnectionLimits:
        """These limits with ``max_connections`` filled in."""
        if self.max_connections > 0:
            return self
        return ConnectionLimits(
            self.max_head_bytes, self.max_headers, self.head_timeout, default_max_connections()
        )


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a refused request."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (``limits``; see the
    module docstring). Subclass it with other ``limits``, or use
    :func:`limited_protocol`."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _resolved: ClassVar[ConnectionLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.current_limits()
        self._in_head = True  # between the end of a request (or the start) and its head
        self._head_bytes = 0
        self._header_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._discarded = 0
        self._over_cap = False

    @classmethod
    def current_limits(cls) -> ConnectionLimits:
        """The limits for a new connection (resolved once per class)."""
        resolved: ConnectionLimits | None = cls.__dict__.get("_resolved")
        if resolved is None:
            resolved = cls.limits.resolved()
            cls._resolved = resolved
        return resolved

    # -- connection ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            # Answered once its head is in, and soon: then the descriptor is free again.
            self._over_cap = True
            self._arm_head_timer(min(self._limits.head_timeout, _LINGER))
        else:
            self._arm_head_timer(self._limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # Read and dropped (so that the client sees the answer, not a reset) until
            # the linger timer closes the connection, or at once past a megabyte.
            self._discarded += len(data)
            if self._discarded > _DISCARD:
                self.transport.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self._limits.max_head_bytes
            and not self._refused
            and not self.transport.is_closing()
        ):
            self._refuse(
                431, f"the request head is larger than {self._limits.max_head_bytes} bytes"
            )

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_lines = 0
        if self._head_timer is None:  # a keep-alive connection's next request
            self._arm_head_timer(self._limits.head_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self._limits.max_headers:
            self._refuse(431, f"the request has more than {self._limits.max_headers} header lines")
            raise _Stop  # uvicorn's data_received catches it (and calls send_400_response)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        if self._over_cap:
            self._refuse(
                503,
                f"the server has too many open connections ({self._limits.max_connections})",
            )
            raise _Stop
        # How a stream's source drops this connection (errors.DropConnection).
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions["tokenwire.abort"] = self.transport.abort
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal has been answered already
            super().send_400_response(msg)

    # -- internals ---------------------------------------------------------------------

    def _arm_head_timer(self, seconds: float) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._over_cap or self._head_bytes == 0:
            self.transport.close()  # it never sent a byte: nobody to answer
            return
        self._refuse(408, f"the request head did not arrive within {self._limits.head_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close: the client's further bytes are read and dropped
        for a moment, so that it sees the answer rather than a reset."""
        self._refused = True
        self._cancel_head_timer()
        transport = self.transport
        kind = "overloaded_error" if status == 503 else "invalid_request_error"
        body = orjson.dumps({"error": {"type": kind, "message": message}})
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if status == 503:
            head.append("retry-after: 1")
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(_LINGER, transport.close)


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """A :class:`LimitedHttpProtocol` subclass with ``limits``, for uvicorn's ``http``
    setting (in one process; for ``workers > 1`` define a module-level subclass)."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
