"""Graceful shutdown: a real uvicorn process with open streams gets SIGTERM/SIGINT;
the streams end cleanly and the process exits long before its graceful timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import free_socket
from tests.server_helpers import dechunk, open_stream, read_body_end, read_until
from tokenwire.server import shutdown
from tokenwire.server.shutdown import _ChainedHandler, shutdown_requested

pytestmark = pytest.mark.integration

GRACEFUL_TIMEOUT = 60

SERVER = textwrap.dedent(
    """
    import asyncio, os, socket, sys

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    from tokenwire.errors import ClientDisconnected
    from tokenwire.server import EventStreamResponse, OpenAISender

    markers = sys.argv[2]
    tasks = set()

    def mark(name):
        open(os.path.join(markers, name), "w").close()

    async def generic(request):
        async def source():
            try:
                while True:
                    yield "tick"
                    await asyncio.sleep(0.05)
            finally:
                mark("generic-finally")
        return EventStreamResponse(source())

    async def chat(request):
        sender, response = OpenAISender.create(model="m")
        async def produce():
            try:
                while True:
                    await sender.send("tok")
                    await asyncio.sleep(0.05)
            except ClientDisconnected:
                mark("sender-stopped")
        task = asyncio.get_running_loop().create_task(produce())
        tasks.add(task)
        return response

    app = Starlette(routes=[Route("/generic", generic), Route("/chat", chat)])
    sock = socket.socket(fileno=int(sys.argv[1]))
    config = uvicorn.Config(
        app, lifespan="off", log_level="info", timeout_graceful_shutdown=GRACEFUL_TIMEOUT
    )
    uvicorn.Server(config).run(sockets=[sock])
    """
).replace("GRACEFUL_TIMEOUT", str(GRACEFUL_TIMEOUT))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_open_streams_and_uvicorn_exits_promptly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    listener = free_socket()
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(listener.fileno()), str(tmp_path)],
        pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE,
    )
    listener.close()
    url = f"http://127.0.0.1:{port}"
    try:
        generic = open_stream(url, "/generic")
        chat = open_stream(url, "/chat")
        generic_raw = read_until(generic, b"data: tick")
        chat_raw = read_until(chat, b'"content":"tok"')
        assert b"data: tick" in generic_raw and b"tok" in chat_raw, "server did not start"
        sent_at = time.monotonic()
        proc.send_signal(signum)
        generic_raw = read_body_end(generic, generic_raw)
        chat_raw = read_body_end(chat, chat_raw)
        proc.wait(GRACEFUL_TIMEOUT / 2)
        exited_after = time.monotonic() - sent_at
    finally:
        proc.kill()
        stderr = proc.communicate()[1].decode()
    print(f"{signum.name}: uvicorn exited {exited_after:.2f} s after the signal")
    _, body, complete = dechunk(generic_raw)
    assert complete, f"generic stream not terminated properly: {generic_raw[-200:]!r}"
    assert body.rstrip().endswith(b"data: tick")
    _, chat_body, complete = dechunk(chat_raw)
    assert complete, f"sender stream not terminated properly: {chat_raw[-200:]!r}"
    assert chat_body.endswith(b"\n\n")
    assert b'"message":"the server is shutting down"' in chat_body.rsplit(b"\n\n", 2)[-2]
    assert (tmp_path / "generic-finally").exists(), "the producer's finally did not run"
    assert (tmp_path / "sender-stopped").exists(), "the sender's producer was not stopped"
    assert "timeout graceful shutdown exceeded" not in stderr
    assert "ERROR" not in stderr  # e.g. "ASGI callable returned without completing response"
    assert "Finished server process" in stderr
    # (After a SIGINT, uvicorn re-raises it once done: a KeyboardInterrupt traceback.)
    assert exited_after < GRACEFUL_TIMEOUT / 4


def test_chained_handler_calls_the_previous_one_and_requests_shutdown() -> None:
    calls: list[int] = []
    previous_int = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        stopped: list[str] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            state = shutdown.register(loop, lambda: stopped.append("stream"))
            assert state is not None
            handler = signal.getsignal(signal.SIGTERM)
            assert isinstance(handler, _ChainedHandler)
            # Registering again does not stack another wrapper.
            shutdown.register(loop, lambda: None)
            assert signal.getsignal(signal.SIGTERM) is handler
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                if stopped:
                    break
                await asyncio.sleep(0.01)
            assert stopped == ["stream"]
            assert calls == [signal.SIGTERM]
            assert shutdown_requested()
            # Streams that start now end at once.
            assert shutdown.register(loop, lambda: None) is None

        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def test_default_signal_disposition_is_left_alone() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:

        async def main() -> None:
            shutdown.register(asyncio.get_running_loop(), lambda: None)
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            assert not shutdown_requested()

        # Not asyncio.run(): its Runner installs a SIGINT handler of its own.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
