"""Helpers for the resumable-stream tests: a real redis-server per test, a TCP proxy
whose connections can be cut, ``tokenwire serve`` subprocesses sharing it, and raw SSE
reading with cuts at arbitrary bytes."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.server_helpers import free_port, wait_until_answers
from tokenwire.sse import ServerSentEvent, SSEDecoder

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


class RedisServer:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port."""

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.args = args  # more redis-server options, e.g. ("--requirepass", "...")
        self.dir = Path(tempfile.mkdtemp(prefix="tw-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server for one test; stopped and removed afterwards."""
    if shutil.which("redis-server") is None and not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is required (apt install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def serve_process(
    cfg: Path | None, *, stderr: bool = False, args: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``tokenwire serve --config cfg ARGS`` in a subprocess on a free port, yielded as
    ``(url, process)`` once ``/healthz`` answers; SIGINT (then SIGKILL) afterwards. With
    ``stderr``, the process's stderr is a pipe, shown if it exits before it is up.
    Without ``cfg`` it runs with no configuration at all (in an empty directory)."""
    port = free_port()
    # No configuration from the environment, but the suite's demo speed (unpaced).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKENWIRE_") or k == "TOKENWIRE_DEMO_SPEED"
    }
    config = ["--config", str(cfg)] if cfg is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenwire", "serve", *config, "--port", str(port), *args],
        cwd=None if cfg is not None else tempfile.mkdtemp(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, url + "/healthz")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Proxy:
    """A loopback TCP proxy to ``127.0.0.1:target``; :meth:`cut` drops every open
    connection at once (both directions), as a network change would. New connections
    keep working."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                if self._closed:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            # ValueError: the other direction's pump closed the socket under select
            return
        finally:
            for sock in (a, b):
                _hard_close(sock)

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        # Shut down only: each pump sees end-of-stream and closes its own sockets, so
        # no thread is left selecting on a closed descriptor.
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


async def read(
    client: httpx2.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    cut_after: int | None = None,
    *,
    json: object = None,
    cut_events: int | None = None,
) -> tuple[int, list[ServerSentEvent], httpx2.Headers]:
    """GET (or POST ``json``) an event stream; with ``cut_after``, drop the connection
    after that many bytes (anywhere, even mid-event), with ``cut_events`` after that many
    events, and return the whole events received before."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    received = 0
    method = "GET" if json is None else "POST"
    async with client.stream(method, url, headers=headers or {}, json=json) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, [], response.headers
        async for chunk in response.aiter_raw():
            if cut_after is not None and received + len(chunk) >= cut_after:
                events += decoder.feed(chunk[: cut_after - received])
                break
            received += len(chunk)
            events += decoder.feed(chunk)
            if cut_events is not None and len(events) >= cut_events:
                del events[cut_events:]
                break
    return 200, events, response.headers


def pairs(events: list[ServerSentEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.data) for e in events]
