"""A lean HTTP/1.1 client for the gateway's upstream streams.

The gateway's job per request is to send one POST upstream and relay the streamed body;
its added latency is the time spent doing that. A general-purpose client (httpx2 on
httpcore, h11 and anyio) costs about 0.3 ms per request and 40-85 µs per body chunk
here, so at 100 streams started together the last request left the gateway tens of
milliseconds late. This client does only what that path needs, on an
``asyncio.Protocol`` with the llhttp parser (``httptools``, installed with
``uvicorn[standard]``): keep-alive connection reuse, chunked or length- or
close-delimited bodies, TLS, a connect timeout, and read back-pressure. Reading a body
chunk is one callback and one future.

Not supported here (the gateway falls back to httpx2 for them): proxies.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectionPool", "UpstreamResponse"]

_HIGH_WATER = 256 * 1024  # buffered body bytes before reading pauses
_MAX_IDLE = 256  # idle keep-alive connections kept per pool
_DRAIN_TIMEOUT = 1.0  # seconds to wait for a finished body's last bytes before closing


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; carries one response at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._headers_done: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._return_when_complete = False
        self._keep_alive = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"invalid HTTP response from upstream: {exc}"))
            return
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._closed(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._closed(exc)

    # -- parser callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Only meaningful while the parser is on this message, so read it now.
        self._keep_alive = self._parser.should_keep_alive()
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()
        if self._return_when_complete:
            self._return_when_complete = False
            if self._reusable_soon() and not self._chunks:
                self._pool._put(self)
            elif self.transport is not None:
                self.transport.abort()

    # -- internals -------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = exc
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_exception(exc)
            self._headers_done.exception()  # retrieved here; raised to the awaiter anyway
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    def _closed(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if self._headers_done is not None and self._headers_done.done() and not self._has_length():
            # A body delimited by the connection's end is complete when it closes.
            self._complete = True
            self._wake()
            return
        self._fail(
            exc or ConnectionError("upstream closed the connection before the response ended")
        )

    def _has_length(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length" or (
                name == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return True
        return False

    @property
    def idle(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # -- one exchange ---------------------------------------------------------------------

    async def request(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.status = 0
        self.headers = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self._return_when_complete = False
        self._keep_alive = False
        self._headers_done = self._loop.create_future()
        self.transport.write(head + body)
        await self._headers_done

    async def read(self) -> bytes | None:
        """The next body chunk, or ``None`` at the end of the body."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if (
                    self._paused
                    and self._buffered < _HIGH_WATER // 4
                    and self.transport is not None
                ):
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            await self._waiter

    def release(self, finished: bool) -> None:
        """Done with the response. ``finished``: the reader got everything it wanted
        (e.g. the stream's end marker), so the connection goes back to the pool once the
        body's last bytes arrived; otherwise it is closed at once."""
        if finished and self._reusable_soon():
            if self._complete:
                self._pool._put(self)
            else:
                self._return_when_complete = True
                # The end of the body is normally a few bytes behind the end marker.
                self._loop.call_later(_DRAIN_TIMEOUT, self._drain_expired)
        elif self.transport is not None:
            self.transport.abort()

    def _reusable_soon(self) -> bool:
        return self.idle and self._error is None and self._keep_alive

    def _drain_expired(self) -> None:
        if self._return_when_complete and self.transport is not None:
            self._return_when_complete = False
            self.transport.abort()


class UpstreamResponse:
    """A streamed response: ``status``, ``headers`` (lower-case names), ``chunks()``."""

    __slots__ = ("_conn", "headers", "read_all", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.read_all = False
        self.status = conn.status
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in conn.headers}

    async def chunks(self) -> AsyncIterator[bytes]:
        read = self._conn.read
        while (chunk := await read()) is not None:
            yield chunk

    async def read_body(self, limit: int = 64 * 1024) -> bytes:
        """The body (at most ``limit`` bytes; the rest is dropped)."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (chunk := await self._conn.read()) is not None:
            parts.append(chunk)
            size += len(chunk)
        self.read_all = size < limit
        return b"".join(parts)[:limit]

    def close(self, finished: bool = False) -> None:
        """Done with the response. ``finished`` (the reader saw the end it expected) keeps
        the connection for reuse; anything else closes it, which is how the upstream
        learns the reader left."""
        self._conn.release(finished)


class ConnectionPool:
    """Keep-alive connections to one origin (``scheme://host:port``)."""

    def __init__(self, base_url: str, *, connect_timeout: float | None = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = _ssl_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if self._ssl else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []

    def _put(self, conn: _Connection) -> None:
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
            )
        return conn

    async def post(self, path: str, headers: bytes, body: bytes) -> UpstreamResponse:
        """Send ``POST path`` with ``headers`` (pre-encoded ``Name: value\\r\\n`` lines)
        and ``body``; return once the response headers arrived."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Length: {len(body)}\r\n".encode("latin-1")
            + headers
            + b"\r\n"
        )
        while self._idle:
            conn = self._idle.pop()
            if not conn.idle:
                continue
            try:
                await conn.request(head, body)
            except ConnectionError:
                continue  # the server closed this idle connection meanwhile: try another
            return UpstreamResponse(conn)
        conn = await self._connect()
        try:
            await conn.request(head, body)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        return UpstreamResponse(conn)

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


def encode_headers(headers: dict[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; refuses CR, LF or NUL anywhere (header injection)."""
    out = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid upstream header {name!r}")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        try:
            import certifi

            _SSL = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx2
            _SSL = ssl.create_default_context()
    return _SSL
