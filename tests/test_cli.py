"""The ``tokenwire`` command (chat, tail, --help) run as a real subprocess against real
local servers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from starlette.responses import JSONResponse, Response

from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.server import EventStreamResponse

from .client_helpers import ResumableApp, Seen, body, read_request, start
from .conftest import serve
from .server_helpers import wait_for

pytestmark = pytest.mark.integration

HELLO = ["Hello", ", ", "world", "!"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TOKENWIRE_URL", "TOKENWIRE_CONFIG", "TOKENWIRE_API_KEY"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    *args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenwire", *args],
        cwd=cwd,
        env=env or cli_env(),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokenwire", *args],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_error_line(stderr: str) -> str:
    """The CLI's error: exactly one line, no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


class ChatApp:
    """An OpenAI-compatible ``/v1/chat/completions`` whose behaviour depends on the
    requested model: ``hello`` (default) streams HELLO with usage; ``unauthorized`` /
    ``missing`` answer 401 / 404 with OpenAI's JSON error; ``broken`` streams two chunks
    then an error event; ``slow`` streams a chunk every 50 ms for a minute and records
    when its stream was closed."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.open = 0
        self.sent = 0
        self.closed_at: float | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        self.seen.append(req)
        model = orjson.loads(req.body).get("model") if req.body else None
        response: Response
        if model == "unauthorized":
            response = JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        elif model == "missing":
            response = JSONResponse(
                {
                    "error": {
                        "message": "The model `missing` does not exist",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        else:
            response = EventStreamResponse(self._stream(str(model)), ping=None)
        await response(scope, receive, send)

    async def _stream(self, model: str) -> AsyncIterator[bytes]:
        encoder = OpenAIChunkEncoder("chatcmpl-test", model)
        yield encoder.start()
        if model == "broken":
            yield encoder.encode_text("partial ")
            yield encoder.encode_text("reply")
            yield b'data: {"error":{"message":"upstream exploded","type":"server_error"}}\n\n'
            return
        if model == "slow":
            self.open += 1
            try:
                for i in range(1200):
                    yield encoder.encode_text(f"w{i} ")
                    self.sent += 1
                    await asyncio.sleep(0.05)
            finally:
                self.open -= 1
                self.closed_at = time.monotonic()
            return
        for piece in HELLO:
            yield encoder.encode_text(piece)
        yield encoder.encode_text("")
        from tokenwire.llm.model import FinishDelta

        yield encoder.encode(FinishDelta("stop"))
        yield encoder.done({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})


@pytest.fixture
def chat_app() -> Iterator[tuple[ChatApp, str]]:
    app = ChatApp()
    with serve(app) as url:
        yield app, url


# --- help ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["chat"], ["tail"]])
def test_help(command: list[str], tmp_path: Path) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: tokenwire {' '.join(command)}".rstrip())
    assert result.stderr == ""


def test_version_and_missing_command(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("tokenwire ")
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "tokenwire: error:" in result.stderr
    assert "Traceback" not in result.stderr


# --- chat against an OpenAI-compatible endpoint -----------------------------------------


def test_chat_streams_reply_and_reports_speed(
    chat_app: tuple[ChatApp, str], tmp_path: Path
) -> None:
    app, url = chat_app
    env = cli_env()
    env["TOKENWIRE_API_KEY"] = "sk-from-env"
    result = run_cli(
        "chat",
        "Say hello",
        "--url",
        f"{url}/v1",
        "--model",
        "hello",
        "--system",
        "Be brief.",
        "--temperature",
        "0.5",
        "--max-tokens",
        "20",
        "--stop",
        "END",
        "--stop",
        "STOP",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    assert "time to first token" in result.stderr
    assert "4 tokens" in result.stderr
    # The rate is the printed figures' quotient: tokens after the first / their time.
    after = re.search(r"(\d+) after the first in ([\d.]+) s(?:: ([\d.]+) tokens/s)?", result.stderr)
    assert after is not None and int(after[1]) == 3
    if after[3] is not None:
        assert float(after[3]) == pytest.approx(3 / float(after[2]), rel=0.01)
    (req,) = app.seen
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-from-env"
    body = orjson.loads(req.body)
    assert body == {
        "model": "hello",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "max_tokens": 20,
        "stop": ["END", "STOP"],
    }


def test_chat_url_from_env_prompt_from_stdin_and_api_key_option(
    chat_app: tuple[ChatApp, str], tmp_path: Path
) -> None:
    app, url = chat_app
    env = cli_env()
    env["TOKENWIRE_URL"] = f"{url}/v1/chat/completions"
    result = run_cli(
        "chat", "--model", "hello", "--api-key", "k1", cwd=tmp_path, env=env, input="from stdin\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    (req,) = app.seen
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer k1"
    assert orjson.loads(req.body)["messages"] == [{"role": "user", "content": "from stdin\n"}]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("unauthorized", ["authentication", "HTTP 401", "Incorrect API key provided"]),
        ("missing", ["not_found", "HTTP 404", "The model `missing` does not exist"]),
    ],
)
def test_chat_http_errors_are_one_clear_line(
    chat_app: tuple[ChatApp, str], tmp_path: Path, model: str, expected: list[str]
) -> None:
    _, url = chat_app
    result = run_cli("chat", "hi", "--url", f"{url}/v1", "--model", model, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_error_line(result.stderr)
    assert line.startswith("tokenwire chat: error: ")
    for part in expected:
        assert part in line


def test_chat_error_event_mid_stream_keeps_the_text(
    chat_app: tuple[ChatApp, str], tmp_path: Path
) -> None:
    _, url = chat_app
    result = run_cli("chat", "hi", "--url", f"{url}/v1", "--model", "broken", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "partial reply\n"
    line = one_error_line(result.stderr)
    assert "upstream exploded" in line


def test_chat_connection_refused(tmp_path: Path) -> None:
    from .conftest import free_socket

    sock = free_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        result = run_cli("chat", "hi", "--url", f"http://127.0.0.1:{port}/v1", cwd=tmp_path)
    finally:
        sock.close()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert line.startswith(
        f"tokenwire chat: error: cannot connect to http://127.0.0.1:{port}/v1/chat/completions"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hi", "--agent", "assistant", "--url", "http://x/v1"], "cannot be combined"),
        (["hi", "--temperature", "3"], "temperature"),
        (["hi", "--max-tokens", "0"], "max_tokens"),
        (["hi", "--config", "x.toml"], "--config is used with --agent"),
        ([], "the prompt is empty"),  # stdin is empty
        (["hi", "--timeout", "-1"], "must be > 0"),
    ],
)
def test_chat_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("chat", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- chat with an in-process agent ------------------------------------------------------


def test_chat_agent_demo_without_config(tmp_path: Path) -> None:
    result = run_cli("chat", "hello", "--agent", "assistant", "--max-tokens", "12", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "time to first token" in result.stderr
    assert "12 tokens" in result.stderr


def test_chat_agent_from_config_file(chat_app: tuple[ChatApp, str], tmp_path: Path) -> None:
    app, url = chat_app
    (tmp_path / "tokenwire.toml").write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{url}/v1"\n\n'
        '[agents.greeter]\nprovider = "up"\nmodel = "hello"\nsystem = "Be kind."\n'
    )
    result = run_cli("chat", "hi there", "--agent", "greeter", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    (req,) = app.seen
    body = orjson.loads(req.body)
    assert body["model"] == "hello"
    assert body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert body["messages"][-1] == {"role": "user", "content": "hi there"}


def test_chat_agent_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.x\n")
    result = run_cli("chat", "hi", "--agent", "x", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "bad.toml" in line and "invalid TOML" in line

    result = run_cli("chat", "hi", "--agent", "nobody", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown agent 'nobody'" in one_error_line(result.stderr)

    result = run_cli("chat", "hi", "--agent", "x", "--config", "absent.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "config file not found" in one_error_line(result.stderr)


# --- Ctrl-C --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["url", "agent"])
def test_chat_ctrl_c_stops_cleanly_and_closes_upstream(
    chat_app: tuple[ChatApp, str], tmp_path: Path, mode: str
) -> None:
    app, url = chat_app
    if mode == "url":
        args = ["--url", f"{url}/v1", "--model", "slow"]
    else:
        (tmp_path / "tokenwire.toml").write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{url}/v1"\n\n'
            '[agents.slowpoke]\nprovider = "up"\nmodel = "slow"\n'
        )
        args = ["--agent", "slowpoke"]
    proc = start_cli("chat", "go on", *args, cwd=tmp_path)
    printed: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(
        target=lambda: printed.extend(iter(lambda: proc.stdout.read(1), "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        # Synchronize on what the client printed, not on what the server sent.
        assert wait_for(lambda: "".join(printed).startswith("w0 w1 w2 w3 w4 "), 20), (
            "the stream did not start"
        )
        assert app.open == 1
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        reader.join(10)
        out, err = "".join(printed), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().endswith("tokenwire chat: interrupted")
    assert out.startswith("w0 w1 w2 w3 w4 ")
    # The server saw the client leave: its stream was closed, promptly.
    assert wait_for(lambda: app.closed_at is not None, 5)
    assert app.open == 0
    assert app.closed_at is not None
    delay = app.closed_at - interrupted
    print(f"\nupstream closed {delay * 1000:.1f} ms after SIGINT ({mode})")
    assert delay < 2.0


# --- tail ----------------------------------------------------------------------------


class EventsApp:
    """A few events of every shape, then the end of the stream."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen.append(await read_request(scope, receive))
        if scope["path"] == "/missing":
            response: Response = Response(
                b'{"error": "no such stream"}' + b"x" * 200_000,
                status_code=404,
                media_type="application/json",
            )
        elif scope["path"] == "/json":
            response = JSONResponse({"not": "a stream"})
        else:
            response = EventStreamResponse(
                [
                    b"event: greeting\nid: 1\ndata: hello\n\n",
                    b"data: line one\ndata: line two\n\n",
                    b'id: 2\nretry: 5\ndata: {"a": 1}\n\n',
                ],
                ping=None,
            )
        await response(scope, receive, send)


@pytest.fixture
def events_app() -> Iterator[tuple[EventsApp, str]]:
    app = EventsApp()
    with serve(app) as url:
        yield app, url


def test_tail_plain(events_app: tuple[EventsApp, str], tmp_path: Path) -> None:
    app, url = events_app
    result = run_cli(
        "tail",
        f"{url}/events",
        "-H",
        "Authorization: Bearer t0k",
        "-H",
        "X-Trace:  abc ",
        "--last-event-id",
        "41",
        "--no-reconnect",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "event: greeting\nid: 1\ndata: hello\n\n"
        "data: line one\ndata: line two\n\n"
        'id: 2\ndata: {"a": 1}\n\n'
    )
    assert result.stderr == ""
    (req,) = app.seen
    assert req.method == "GET"
    assert req.headers["authorization"] == "Bearer t0k"
    assert req.headers["x-trace"] == "abc"
    assert req.headers["last-event-id"] == "41"
    assert req.headers["accept"] == "text/event-stream"


def test_tail_json_and_post(events_app: tuple[EventsApp, str], tmp_path: Path) -> None:
    app, url = events_app
    result = run_cli(
        "tail", f"{url}/events", "--json", "--no-reconnect", "-d", '{"q": 1}', cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"event": "greeting", "data": "hello", "id": "1", "retry": None},
        {"event": "message", "data": "line one\nline two", "id": None, "retry": None},
        {"event": "message", "data": '{"a": 1}', "id": "2", "retry": 5},
    ]
    (req,) = app.seen
    assert req.method == "POST"
    assert req.body == b'{"q": 1}'


def test_tail_reconnects_with_last_event_id(tmp_path: Path) -> None:
    app = ResumableApp(total=6, per_connection=2, retry=5, end="drop")
    with serve(app) as url:
        result = run_cli("tail", f"{url}/feed", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [e["data"] for e in events if e["data"]] == [f"event {i}" for i in range(1, 7)]
    assert [req.headers.get("last-event-id") for req in app.seen] == [None, "2", "4", "6"]


def test_tail_http_error_is_bounded(events_app: tuple[EventsApp, str], tmp_path: Path) -> None:
    _, url = events_app
    result = run_cli("tail", f"{url}/missing", cwd=tmp_path)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert line.startswith("tokenwire tail: error: HTTP 404")
    assert "no such stream" in line
    assert len(line) < 1000  # the 200 kB body is not dumped on the terminal

    result = run_cli("tail", f"{url}/json", cwd=tmp_path)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "application/json" in line and "instead of text/event-stream" in line


def test_tail_connection_refused_and_bad_arguments(tmp_path: Path) -> None:
    from .conftest import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    try:
        result = run_cli("tail", f"http://127.0.0.1:{port}/x", cwd=tmp_path)
    finally:
        sock.close()
    assert result.returncode == 1
    assert one_error_line(result.stderr).startswith(
        f"tokenwire tail: error: cannot connect to http://127.0.0.1:{port}/x"
    )

    result = run_cli("tail", "http://127.0.0.1:1/x", "-H", "no colon", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected 'Name: value'" in result.stderr

    result = run_cli("tail", "ftp://example.com/x", cwd=tmp_path)
    assert result.returncode == 2
    assert "must start with http://" in result.stderr


def test_tail_lost_connection_without_reconnect(tmp_path: Path) -> None:
    app = ResumableApp(total=6, per_connection=2, end="drop")
    with serve(app) as url:
        result = run_cli("tail", f"{url}/feed", "--no-reconnect", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n"
    assert "connection to" in one_error_line(result.stderr)


def test_tail_ctrl_c(chat_app: tuple[ChatApp, str], tmp_path: Path) -> None:
    app, url = chat_app
    proc = start_cli("tail", f"{url}/v1/chat/completions", "-d", '{"model": "slow"}', cwd=tmp_path)
    try:
        assert wait_for(lambda: app.sent >= 3, 20)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip() == "tokenwire tail: interrupted"
    assert '"content":"w0 "' in out
    assert wait_for(lambda: app.closed_at is not None, 5)
    assert app.closed_at is not None and app.closed_at - interrupted < 2.0


class EndingApp:
    """A finished LLM reply in each protocol's style (by path), without event ids; a
    second request would be a second generation, so every request is counted. ``/cut``
    sends two events and drops the connection; ``/cut-ids`` does the same with ids and
    resumes after the request's Last-Event-ID, then ends with [DONE]."""

    ENDS: ClassVar[dict[str, list[bytes]]] = {
        "/openai": [b'data: {"n": 1}\n\n', b"data: [DONE]\n\n"],
        "/anthropic": [
            b'event: content_block_delta\ndata: {"n": 1}\n\n',
            b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
        ],
        "/responses": [
            b'event: response.output_text.delta\ndata: {"n": 1}\n\n',
            b'event: response.completed\ndata: {"type": "response.completed"}\n\n',
        ],
    }

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        self.seen.append(req)
        path = scope["path"]
        if path in self.ENDS:
            # The stream stays open after its end marker, as a lazy server's might.
            chunks: list[bytes] = [*self.ENDS[path], b": still here\n\n"]
            await start(send)
            for chunk in chunks:
                await body(send, chunk)
            await asyncio.sleep(30)
            return
        last = int(req.headers.get("last-event-id") or 0)
        ids = path == "/cut-ids"
        await start(send)
        if last:
            await body(send, b"id: 3\ndata: three\n\ndata: [DONE]\n\n", more=False)
            return
        for n in (1, 2):
            prefix = f"id: {n}\n".encode() if ids else b""
            await body(send, prefix + f"data: {n}\n\n".encode())
        # then the connection is cut


@pytest.fixture
def ending_app() -> Iterator[tuple[EndingApp, str]]:
    app = EndingApp()
    with serve(app) as url:
        yield app, url


@pytest.mark.parametrize("style", ["openai", "anthropic", "responses"])
def test_tail_stops_at_each_protocols_end(
    ending_app: tuple[EndingApp, str], tmp_path: Path, style: str
) -> None:
    app, url = ending_app
    for extra in ((), ("-d", '{"model": "m"}')):  # GET and POST
        result = run_cli("tail", f"{url}/{style}", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("data: ") == 2 and result.stderr == ""
    assert len(app.seen) == 2  # one request each: nothing was sent again


def test_tail_never_resends_a_post_without_event_ids(
    ending_app: tuple[EndingApp, str], tmp_path: Path
) -> None:
    app, url = ending_app
    result = run_cli("tail", f"{url}/cut", "-d", "{}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "data: 1\n\ndata: 2\n\n"
    line = one_error_line(result.stderr)
    assert "not reconnecting" in line and "no event ids" in line
    assert len(app.seen) == 1


def test_tail_resumes_a_post_with_event_ids_and_says_so(
    ending_app: tuple[EndingApp, str], tmp_path: Path
) -> None:
    app, url = ending_app
    result = run_cli("tail", f"{url}/cut-ids", "-d", "{}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == "id: 1\ndata: 1\n\nid: 2\ndata: 2\n\nid: 3\ndata: three\n\ndata: [DONE]\n\n"
    )
    assert "reconnecting in" in result.stderr and "after event id '2'" in result.stderr
    assert "connection lost" in result.stderr
    assert [(s.method, s.headers.get("last-event-id")) for s in app.seen] == [
        ("POST", None),
        ("POST", "2"),
    ]


def test_tail_a_resumable_gateway_stream(tmp_path: Path) -> None:
    import httpx2

    from tokenwire.config import from_mapping
    from tokenwire.gateway import create_app

    config = from_mapping({"gateway": {"resume": "memory"}})
    body_text = orjson.dumps(
        {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).decode()
    with serve(create_app(config)) as url:
        # A first client reads part of the reply and goes away.
        ids: list[str] = []
        with httpx2.stream("POST", url + "/v1/chat/completions", content=body_text) as response:
            for line in response.iter_lines():
                if line.startswith("id: "):
                    ids.append(line[4:])
                    if len(ids) == 3:
                        break
        result = run_cli(
            "tail",
            url + "/v1/chat/completions",
            "-d",
            body_text,
            "--last-event-id",
            ids[-1],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("data: [DONE]\n\n") and result.stderr == ""
        first = result.stdout.split("\n", 1)[0]
        assert first.startswith("id: ") and first[4:] not in ids  # resumed after them
        # The finished stream, resumed after its last event: 204, tail ends quietly.
        last = [line[4:] for line in result.stdout.splitlines() if line.startswith("id: ")][-1]
        done = run_cli(
            "tail", url + "/v1/chat/completions", "-d", body_text, "--last-event-id", last,
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0 and done.stdout == "", done.stderr
