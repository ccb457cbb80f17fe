"""Helpers for the hardening tests: a scriptable raw TCP upstream (it can break HTTP in
ways no framework allows), `tokenwire serve` as a subprocess whose memory and file
descriptors can be read, and raw sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.server_helpers import free_port, wait_until_answers
from tokenwire.llm.model import FinishDelta, MessageStart, TextDelta, Usage, UsageDelta
from tokenwire.llm.openai_encode import OpenAIChunkEncoder

Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request the raw upstream received, and the means to answer it."""

    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def last_user_text(self) -> str:
        messages = self.json.get("messages", [])
        content = messages[-1]["content"] if messages else ""
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content)
        return str(content)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_peer(self) -> None:
        """Returns once the gateway closed this connection."""
        while await self.reader.read(65536):
            pass


@dataclass
class RawUpstream:
    url: str
    requests: list[Exchange] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    closed: int = 0


def openai_sse(text: str, *, event_id: str | None = None) -> bytes:
    """A complete OpenAI chat-completions stream whose reply is ``text``."""
    encoder = OpenAIChunkEncoder(include_usage=True)
    out = encoder.encode(MessageStart(id="up", model="raw", usage=Usage(input_tokens=1)))
    out += encoder.encode(TextDelta(text))
    out += encoder.encode(FinishDelta("stop"))
    out += encoder.encode(UsageDelta(Usage(input_tokens=1, output_tokens=1)))
    out += encoder.done()
    if event_id is not None:
        out = out.replace(b"data: ", f"id: {event_id}\ndata: ".encode())
    return out


def sse_head(extra: bytes = b"", length: int | None = None) -> bytes:
    framing = b"content-length: %d\r\n" % length if length is not None else b""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" + framing + extra + b"\r\n"


@contextmanager
def raw_upstream(handler: Handler) -> Iterator[RawUpstream]:
    """A keep-alive HTTP/1.1 server on its own thread and event loop that reads each
    request (Content-Length bodies) and lets ``handler`` write whatever it likes."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: RawUpstream = state["upstream"]
        upstream.connections += 1
        upstream.open_connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                exchange = Exchange(head, body, reader, writer)
                upstream.requests.append(exchange)
                await handler(exchange)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            upstream.open_connections -= 1
            upstream.closed += 1
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, limit=1 << 20)
        port = server.sockets[0].getsockname()[1]
        state["upstream"] = RawUpstream(f"http://127.0.0.1:{port}")
        state["stop"] = asyncio.Event()
        ready.set()
        await state["stop"].wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield state["upstream"]
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` (a condition on another process's or thread's state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    port: int

    def status(self, field_name: str) -> int:
        """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextmanager
def gateway_process(
    config: str,
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
) -> Iterator[Served]:
    """``tokenwire serve --config FILE`` (``config``: TOML text) as a subprocess, with
    an optional file-descriptor limit; yields once ``/healthz`` answers."""
    path = tmp_path / "tokenwire.toml"
    path.write_text(config)
    port = free_port()
    # No configuration from the environment, but the suite's demo speed (unpaced).
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKENWIRE_") or k == "TOKENWIRE_DEMO_SPEED"
    }
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})

    def limit() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenwire",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            *args,
        ],
        cwd=tmp_path,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, f"{url}/healthz", "serve")
        yield Served(url, proc, port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_response(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit``)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data
