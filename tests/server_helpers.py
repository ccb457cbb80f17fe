"""Helpers for the server tests: raw HTTP/1.1 clients and small waiting utilities."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx2


def free_port() -> int:
    """A loopback port that is free now, for a server subprocess to bind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answers(
    proc: subprocess.Popen[Any], probe: str, what: str = "the gateway", timeout: float = 30
) -> None:
    """Poll ``probe`` until it answers 200; fail with the process's output if it exits
    first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{out}\n{err}")
        try:
            if httpx2.get(probe, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(0.05)


def open_stream(url: str, path: str = "/", *, rcvbuf: int | None = None) -> socket.socket:
    """Send ``GET path`` on a fresh connection and return the socket (unread)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    """Read until ``marker`` appears (or EOF / ``limit`` bytes); return all bytes read."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def read_body_end(sock: socket.socket, raw: bytes = b"") -> bytes:
    """Keep reading until the chunked body in ``raw`` + what follows is complete (or
    EOF); return all the raw bytes."""
    while not dechunk(raw)[2]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    return raw


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """Split a raw HTTP/1.1 response into (head, body, complete) where ``complete``
    says the chunked body ended with its terminating zero-size chunk."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while b"\r\n" in rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if len(rest) < size + 2 and size:
            break
        if size == 0:
            return head, body, True
        body += rest[:size]
        rest = rest[size + 2 :]
    return head, body, False


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
