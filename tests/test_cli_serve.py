"""``tokenwire serve`` as a real subprocess, then ``tokenwire chat`` against it, as a user
would run them from the README."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.server_helpers import free_port, wait_until_answers
from tokenwire.llm.protocol import protocol_names

pytestmark = pytest.mark.integration


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TOKENWIRE_URL", "TOKENWIRE_CONFIG", "TOKENWIRE_API_KEY"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenwire", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def serving(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``tokenwire serve ARGS --port P`` in a subprocess; yields its base URL once
    ``/healthz`` answers, and stops it with SIGINT (as Ctrl-C would) afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), *args],
        cwd=cwd,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, f"{url}/healthz", "serve")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"serve did not stop on SIGINT:\n{err}") from None
    assert f"tokenwire gateway on {url}" in out
    assert "Traceback" not in err, err


def test_serve_then_chat_hello(tmp_path: Path) -> None:
    """The README quickstart: no configuration, the demo model."""
    with serving("--log-level", "warning", cwd=tmp_path) as url:
        result = run_cli("chat", "hello", "--url", f"{url}/v1", "--max-tokens", "16", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
        assert "time to first token" in result.stderr
        assert "after the first in" in result.stderr

        # The browser stream, through `tokenwire tail`.
        result = run_cli(
            "tail", f"{url}/chat/stream?message=hi", "--json", "--no-reconnect", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert events[-1]["data"] == "[DONE]"
        assert all("chunk" in json.loads(e["data"]) for e in events[:-1])
        assert len(events) > 2

        env = cli_env(TOKENWIRE_URL=f"{url}/v1")
        result = run_cli("chat", "hello", "--model", "nope", cwd=tmp_path, env=env)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("tokenwire chat: error: ")
        assert "nope" in result.stderr


def test_serve_with_config_workers_and_api_keys(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[providers.fable]\ntype = "demo"\nseed = 7\n\n'
        '[models.story]\nprovider = "fable"\n\n'
        '[gateway]\napi_keys_env = "GW_TEST_KEYS"\n'
    )
    env = cli_env(GW_TEST_KEYS="k-one,k-two")
    with serving("--config", str(config), "--workers", "2", cwd=tmp_path, env=env) as url:
        models = httpx2.get(
            f"{url}/v1/models", headers={"Authorization": "Bearer k-two"}, timeout=5
        )
        assert models.status_code == 200
        assert "story" in {m["id"] for m in models.json()["data"]}

        base = ["chat", "once upon", "--url", f"{url}/v1", "--model", "story"]
        result = run_cli(*base, "--max-tokens", "8", "--api-key", "k-one", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()

        result = run_cli(*base, cwd=tmp_path)  # no key
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "HTTP 401" in result.stderr


def test_serve_rejects_bad_configuration(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", "absent.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "config file not found" in result.stderr
    assert "absent.toml" in result.stderr

    bad = tmp_path / "tokenwire.toml"  # picked up from the working directory
    bad.write_text('[models.x]\nprovider = "nowhere"\n')
    result = run_cli("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "[models.x]" in result.stderr and "nowhere" in result.stderr

    keys = tmp_path / "keys.toml"
    keys.write_text('[gateway]\napi_keys_env = "SURELY_UNSET_GW_KEYS"\n')
    env = cli_env()
    env.pop("SURELY_UNSET_GW_KEYS", None)
    result = run_cli("serve", "--config", str(keys), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "SURELY_UNSET_GW_KEYS" in result.stderr

    env = cli_env(TOKENWIRE_CONFIG=str(tmp_path / "gone.toml"))
    result = run_cli("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "gone.toml" in result.stderr

    result = run_cli("serve", "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2
    assert "between 0 and 65535" in result.stderr


def test_chat_speaks_every_protocol_to_the_gateway(tmp_path: Path) -> None:
    """``tokenwire chat --protocol``: the same reply over every wire protocol (chat
    completions, Anthropic Messages, the Responses API, Gemini, ...: the demo model,
    seeded, gives the same text each time), from the ``/v1`` base URL and from the
    server's root."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[providers.fable]\ntype = "demo"\nseed = 3\n\n[models.story]\nprovider = "fable"\n'
    )
    with serving("--config", str(config), "--log-level", "warning", cwd=tmp_path) as url:
        replies = {}
        names = protocol_names()
        assert "gemini" in names
        for protocol, base in [(p, "/v1") for p in names] + [("gemini", "")]:
            result = run_cli(
                "chat",
                "once upon a time",
                "--url",
                url + base,
                "--model",
                "story",
                "--temperature",
                "0",
                "--max-tokens",
                "40",
                "--protocol",
                protocol,
                cwd=tmp_path,
            )
            assert result.returncode == 0, (protocol, result.stderr)
            assert "time to first token" in result.stderr
            replies[protocol, base] = result.stdout.strip()
        assert replies["openai", "/v1"] and len(set(replies.values())) == 1, replies
        bad = run_cli(
            "chat",
            "x",
            "--url",
            f"{url}/v1",
            "--protocol",
            "responses",
            "--stop",
            "END",
            cwd=tmp_path,
        )
        assert bad.returncode == 2 and "stop" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_on_a_busy_port_says_so_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    assert "tokenwire gateway on" not in result.stdout  # no banner for a server not there
    assert f"port {port} is already in use" in result.stderr
    assert "--port" in result.stderr and "--port 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_banner_comes_once_listening_on_the_port_it_shows(tmp_path: Path) -> None:
    """``--port 0`` takes any free port; the banner names it, and by the time the banner
    is printed the port accepts connections (a client may start on seeing it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenwire", "serve", "--port", "0", "--log-level", "warning"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("tokenwire gateway on http://127.0.0.1:"), banner
        port = int(banner.split("http://127.0.0.1:")[1].split()[0])
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # listening already: the connection is taken, not refused
        answer = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert answer.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
