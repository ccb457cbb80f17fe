"""The runnable examples: the FastAPI app on real uvicorn, read by httpx2, by the example
Python clients (as scripts), and by the example page in headless Chromium."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import orjson
import pytest

from tests.conftest import REPO, serve
from tokenwire.agent import Agent, Config, DemoProvider
from tokenwire.config import from_mapping

EXAMPLES = REPO / "examples"
PROMPT = "Tell me a story"
pytestmark = pytest.mark.integration


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that annotations (pydantic models) resolve
    spec.loader.exec_module(module)
    return module


def demo_config(**demo: Any) -> Config:
    return from_mapping(
        {
            "providers": {"demo": demo},
            "agents": {"assistant": {"provider": "demo", "options": {"temperature": 0}}},
        }
    )


def expected_reply(prompt: str = PROMPT, **options: Any) -> str:
    agent = Agent(DemoProvider(), model="demo", options={"temperature": 0})
    return agent.chat_sync(prompt, options)


@pytest.fixture(scope="module")
def app_module() -> ModuleType:
    return load("fastapi_app")


@pytest.fixture
def app_url(app_module: ModuleType) -> Iterator[str]:
    with serve(app_module.create_app(demo_config())) as url:
        yield url


def read_events(body: bytes) -> list[bytes]:
    return [block for block in body.split(b"\n\n") if block and not block.startswith(b":")]


def test_get_route_streams_chunks_then_done(app_url: str) -> None:
    with httpx2.stream("GET", f"{app_url}/chat", params={"prompt": PROMPT}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read()
    events = read_events(body)
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e.removeprefix(b"data: "))["chunk"] for e in events[:-1]]
    assert len(chunks) > 5
    assert "".join(chunks) == expected_reply()


def test_post_route_streams_through_the_chunk_sender(app_url: str) -> None:
    body = {"prompt": PROMPT, "options": {"max_tokens": 9}}
    with httpx2.stream("POST", f"{app_url}/chat", json=body) as response:
        events = read_events(response.read())
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e.removeprefix(b"data: "))["chunk"] for e in events[:-1]]
    assert len(chunks) == 9
    assert "".join(chunks) == expected_reply(max_tokens=9)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("GET", {"params": {"prompt": "x", "temperature": "7"}}),
        ("POST", {"json": {"prompt": "x", "options": {"temprature": 1}}}),
    ],
)
def test_invalid_options_are_a_400_naming_the_option(app_url: str, method: str, kwargs) -> None:
    response = httpx2.request(method, f"{app_url}/chat", **kwargs)
    assert response.status_code == 400
    assert "temp" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_error_mid_stream_ends_with_an_error_event(app_module: ModuleType, method: str) -> None:
    with serve(app_module.create_app(demo_config(fail_after=3))) as url:
        if method == "GET":
            response = httpx2.get(f"{url}/chat", params={"prompt": "x"})
        else:
            response = httpx2.post(f"{url}/chat", json={"prompt": "x"})
    events = read_events(response.content)
    assert len(events) == 4
    assert all(e.startswith(b'data: {"chunk":') for e in events[:3])
    assert events[3].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[3].split(b"data: ", 1)[1])
    assert error["type"] == "overloaded"


class WatchedDemo(DemoProvider):
    """The demo model, slowed down, telling when its stream is closed."""

    def __init__(self) -> None:
        super().__init__(time_per_token=0.1)
        self.closed = threading.Event()

    async def stream(self, request: Any) -> Any:
        try:
            async for delta in super().stream(request):
                yield delta
        finally:
            self.closed.set()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_leaving_closes_the_agent_stream(app_module: ModuleType, method: str) -> None:
    provider = WatchedDemo()
    app = app_module.create_app(agent=Agent(provider, model="demo"))
    with serve(app) as url:
        kwargs: dict[str, Any] = (
            {"params": {"prompt": "x"}} if method == "GET" else {"json": {"prompt": "x"}}
        )
        with httpx2.stream(method, f"{url}/chat", **kwargs) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break
        # The reply would take several seconds more; leaving stops it at once.
        assert provider.closed.wait(3)


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=str(EXAMPLES.parent),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_async_client_example(app_url: str) -> None:
    out = run_script("client_async", app_url, "Tell", "me", "a", "story")
    assert out.strip() == expected_reply().strip()


def test_sync_client_example(app_url: str) -> None:
    out = run_script("client_sync", app_url, PROMPT)
    assert out.strip() == expected_reply(max_tokens=200).strip()


def test_client_examples_report_stream_errors(app_module: ModuleType) -> None:
    with serve(app_module.create_app(demo_config(fail_after=2))) as url:
        client = load("client_sync")
        with pytest.raises(RuntimeError, match="overloaded"):
            client.stream_reply(url, "x")
        aclient = load("client_async")
        with pytest.raises(RuntimeError, match="overloaded"):
            asyncio.run(aclient.stream_reply(url, "x"))


def test_agent_stream_example_runs_offline(tmp_path: Path) -> None:
    env = {"TOKENWIRE_CONFIG": str(EXAMPLES / "tokenwire.toml")}
    out = run_script("agent_stream", "Hello", env=env)
    assert len(out.strip().splitlines()) >= 2
    out = run_script("agent_stream", "--sync", "Hello", env={"TOKENWIRE_CONFIG": ""})
    assert len(out.split()) >= 10


def test_example_config_is_valid() -> None:
    from tokenwire.agent import load_config

    config = load_config(EXAMPLES / "tokenwire.toml")
    assert config.agents["assistant"].provider == "demo"
    assert config.providers["demo"].demo["time_per_token"] == 0.03


def test_browser_page_streams_the_reply(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(app_url + "/")
        page.fill("#prompt", PROMPT)
        page.click("#send")
        page.wait_for_selector("body[data-state=done]", timeout=15_000)
        assert page.inner_text("#output").strip() == expected_reply().strip()
        assert page.inner_text("#status") == "done"
    finally:
        page.close()


def test_browser_page_shows_a_stream_error(app_module: ModuleType, browser: Any) -> None:
    with serve(app_module.create_app(demo_config(fail_after=4))) as url:
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.click("#send")
            page.wait_for_selector("body[data-state=error]", timeout=15_000)
            assert "overloaded" in page.inner_text("#status")
            assert len(page.inner_text("#output").split()) == 4
        finally:
            page.close()
