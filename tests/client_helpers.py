"""Small real servers for the client tests: raw ASGI apps (run on uvicorn by
``conftest.serve``) and a raw TCP server for what ASGI cannot express."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


async def read_request(scope: Scope, receive: Receive) -> Seen:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Seen(scope["method"], scope["path"], headers, body)


async def start(
    send: Send, status: int = 200, ctype: bytes = b"text/event-stream", **extra: bytes
) -> None:
    headers = [(b"content-type", ctype)] if ctype else []
    headers += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


class ResumableApp:
    """Events 1..``total`` with ids; each connection sends ``per_connection`` of them
    after the request's ``Last-Event-ID``, then the start of an event that never ends,
    then the connection is cut (``end="drop"``: mid-body; ``"eof"``: a clean end).
    Once everything was sent, a request gets 204 (do not reconnect)."""

    def __init__(
        self,
        total: int = 9,
        per_connection: int = 3,
        retry: int | None = None,
        end: str = "drop",
    ) -> None:
        self.total = total
        self.per_connection = per_connection
        self.retry = retry
        self.end = end
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        self.seen.append(req)
        last = int(req.headers.get("last-event-id") or 0)
        if last >= self.total:
            await start(send, 204, b"")
            await body(send, b"", more=False)
            return
        await start(send)
        if self.retry is not None:
            await body(send, f"retry: {self.retry}\n\n".encode())
        for i in range(last + 1, min(last + self.per_connection, self.total) + 1):
            await body(send, f"id: {i}\ndata: event {i}\n\n".encode())
        await body(send, b"id: 999\ndata: never terminated")
        await asyncio.sleep(0.01)
        if self.end == "eof":
            await body(send, b"", more=False)
        # "drop": return with the body unfinished; the server cuts the connection.


@contextmanager
def raw_server(handler: Callable[[socket.socket, int], None]) -> Iterator[str]:
    """A plain TCP server on loopback: ``handler(conn, n)`` runs in a thread for the
    n-th connection (0-based). Yields the base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept_loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handler, args=(conn, n), daemon=True).start()
            n += 1

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            with suppress(OSError):
                conn.close()


def read_head(conn: socket.socket) -> bytes:
    """Read an HTTP request head (no body expected)."""
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-store\r\nconnection: close\r\n\r\n"
)
