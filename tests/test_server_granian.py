"""EventStreamResponse on granian (a Rust ASGI server) as well as uvicorn: streams end,
heartbeats flow, a vanished client is noticed and SIGTERM ends open streams cleanly,
with nothing logged as an error.

granian's ``receive()`` gives its own future-like object rather than a coroutine; the
response's disconnect watcher must treat it like any awaitable.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import httpx_sse
import pytest

from tests.server_helpers import (
    dechunk,
    free_port,
    open_stream,
    read_body_end,
    read_until,
    wait_for,
    wait_until_answers,
)

pytest.importorskip("granian", reason="granian is one of the test extras")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def run_granian() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """tests/granian_app.py on granian (one worker); yields its URL once it answers,
    and checks when it has stopped (SIGTERM) that nothing went to its log as an error."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "granian", "--interface", "asginl"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--working-dir", str(ROOT), "--workers-kill-timeout", "5"),
            "tests.granian_app:app",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, f"{url}/seen", "granian")
        yield url, proc
    finally:
        proc.terminate()
        try:
            log = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0]
            raise AssertionError(f"granian did not stop on SIGTERM:\n{log}") from None
    assert "Traceback" not in log and "Exception in callback" not in log, log


@pytest.fixture(scope="module")
def granian() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with run_granian() as server:
        yield server


def seen(url: str) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{url}/seen", timeout=5).json()
    return result


def test_a_stream_ends_with_every_event(granian: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = granian
    with (
        httpx.Client(timeout=10) as client,
        httpx_sse.connect_sse(client, "GET", f"{url}/?n=5&end=1") as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert [event.data for event in source.iter_sse()] == [f"e{i}" for i in range(5)]


def test_heartbeats_flow_while_the_source_is_silent(
    granian: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = granian
    sock = open_stream(url, "/?n=0&ping=0.05")
    data = b""
    with sock:
        # Each ping is its own chunk of the chunked body: count them, not a run of two.
        while data.count(b": ping\n") < 2:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_a_vanished_client_is_noticed_and_its_source_closed(
    granian: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = granian
    before = seen(url)
    sock = open_stream(url, "/?n=3")
    with sock:
        assert b"data: e2\n\n" in read_until(sock, b"data: e2\n\n")
    # The source waits forever after e2: only the disconnect watcher can end it.
    after = {k: v + 1 for k, v in before.items()}
    assert wait_for(lambda: seen(url) == after, timeout=15), seen(url)


def test_sigterm_ends_open_streams_with_the_protocols_error_event() -> None:
    # tokenwire's shutdown hook wraps the server's Python signal handlers: on granian
    # too, an open OpenAI stream gets its final error event and a cleanly ended body,
    # and the server exits without waiting for its kill timeout.
    with run_granian() as (url, proc):
        sock = open_stream(url, "/sender")
        with sock:
            head = read_until(sock, b'"content":"hi"')
            assert b'"content":"hi"' in head
            proc.terminate()
            data = read_body_end(sock, head)
        assert proc.wait(timeout=4) == 0
    _, body, complete = dechunk(data)
    assert complete, data  # the chunked body's last chunk came: the reply was not cut
    assert body.endswith(b'"code":"overloaded"}}\n\n'), body
