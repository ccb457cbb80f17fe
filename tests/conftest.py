"""Shared test helpers: real uvicorn servers on loopback, and the recorded fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

REPO = Path(__file__).resolve().parent.parent
# The recorded real API streams live beside the clone, outside the project.
SHARED = Path(os.environ.get("TOKENWIRE_SHARED", REPO.parent / "shared"))
RECORDED = SHARED / "fixtures" / "recorded"
# The demo model is paced like a real one by default; the suite runs it unpaced, servers
# started as subprocesses included (the tests of pacing set their own speed).
os.environ.setdefault("TOKENWIRE_DEMO_SPEED", "max")
# A suite started as a background job (`scripts/test &`, CI runners, nohup) gets SIGINT
# ignored, and an ignored signal is inherited by every process it starts: the CLI
# processes that tests interrupt would never see their Ctrl-C (Python only installs its
# KeyboardInterrupt handler when SIGINT is not ignored). Handled here, it is reset to
# the default in each child, as in a terminal's foreground process.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def recorded_dir(kind: str) -> Path:
    """The folder of recorded streams for ``kind`` ("openai"/"anthropic"); skip if absent."""
    path = RECORDED / kind
    if not path.is_dir():
        pytest.skip(f"recorded fixtures not found at {path} (the shared/ folder beside the clone)")
    return path


def recorded_files(kind: str) -> list[Path]:
    path = RECORDED / kind
    return sorted(path.glob("*.sse")) if path.is_dir() else []


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server (own thread and event loop) on a random
    loopback port; yield its base URL ("http://127.0.0.1:PORT")."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "auto")
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server() -> Callable[..., Any]:
    """``with server(app) as url: ...`` — see :func:`serve`."""
    return serve


def _scanners() -> list[str]:
    import tokenwire.sse as sse

    return ["c", "python"] if sse._scan_simple is not sse._scan_simple_py else ["python"]


@pytest.fixture(params=_scanners())
def both_scanners(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C accelerator and with the pure-Python decoder."""
    import tokenwire.sse as sse

    if request.param == "python":
        monkeypatch.setattr(sse, "_scan_simple", sse._scan_simple_py)
    return str(request.param)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: every integration test must really run."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        print(f"\nCI: {len(skipped)} test(s) were skipped; failing the run.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Headless, offline: no background networking (the machine has no internet), no sandbox
# (tests may run as root), a fresh profile per launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright (the system's Chromium, not a download).

    Per test: Playwright's sync API keeps an event loop running on this thread while it
    is open, which would break later tests that call ``asyncio.run``."""
    import shutil

    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium is required: {CHROMIUM} not found (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


# --- Node.js clients (tests/js) ----------------------------------------------------------

JS = REPO / "tests" / "js"


def _stale_packages() -> list[str]:
    """What in ``tests/js/package-lock.json`` is not installed as locked (all of it when
    ``node_modules`` is missing), from npm's own record of what it installed."""
    locked = json.loads((JS / "package-lock.json").read_text())["packages"]
    record = JS / "node_modules" / ".package-lock.json"
    installed = json.loads(record.read_text())["packages"] if record.is_file() else {}
    return [
        f"{path}@{entry.get('version')}"
        for path, entry in locked.items()
        if path and (installed.get(path) or {}).get("version") != entry.get("version")
    ]


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with ``tests/js``'s locked packages installed (``npm ci``
    when they are missing or differ); done before any server of a test starts."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "Node.js and npm are required for the JavaScript SDK tests "
            f"(node: {node or 'not found'}, npm: {npm or 'not found'} on PATH)"
        )
    if _stale_packages():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {JS} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    stale = _stale_packages()
    assert not stale, f"`npm ci` left packages missing or at other versions: {stale}"
    return node
