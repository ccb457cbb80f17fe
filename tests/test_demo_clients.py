"""The demo model through ``tokenwire serve`` with no configuration, driven by real clients:
the official SDKs, the OpenAI Agents SDK (chat-completions model), pydantic-ai, and the
chat page in Chromium. Tool loops, structured output, reasoning and every injected fault
surface as each client's own types."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.resume_helpers import serve_process

CLIENT_TIMEOUT = 30.0


class Weather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)
    tags: list[str]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather for a city",
        "parameters": Weather.model_json_schema(),
    },
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """``tokenwire serve`` with no configuration file, the demo model unpaced."""
    with serve_process(None, args=("--demo-speed", "max")) as (base, _):
        yield base


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT
    ) as client:
        yield client


@pytest.fixture
def claude(url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT
    ) as client:
        yield client


def read_text(client: openai.OpenAI, model: str, pieces: list[str]) -> None:
    """Stream a chat completion of ``model``, appending its text pieces to ``pieces`` (so
    that they are there when the stream raises)."""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)


@contextmanager
def configured(tmp_path: Path, toml: str) -> Iterator[openai.OpenAI]:
    """An OpenAI client of ``tokenwire serve`` with ``toml`` as its configuration."""
    cfg = tmp_path / "tokenwire.toml"
    cfg.write_text(toml)
    with (
        serve_process(cfg) as (base, _),
        openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client


# -- tool loops ---------------------------------------------------------------------------


def test_openai_tool_loop(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    stream = oai.chat.completions.create(
        model="demo", messages=messages, tools=[WEATHER_TOOL], tool_choice="required", stream=True
    )
    fragments: list[str] = []
    call_id = name = None
    finish = None
    for chunk in stream:
        choice = chunk.choices[0] if chunk.choices else None
        if choice is None:
            continue
        for call in choice.delta.tool_calls or []:
            call_id = call_id or call.id
            name = name or (call.function.name if call.function else None)
            if call.function and call.function.arguments:
                fragments.append(call.function.arguments)
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and name == "get_weather" and len(fragments) > 3
    Weather.model_validate_json("".join(fragments))  # valid against the tool's schema
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": "".join(fragments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 degrees"},
    ]
    answer = oai.chat.completions.create(model="demo", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "stop"
    assert "get_weather returned sunny, 21 degrees." in (answer.choices[0].message.content or "")


def test_anthropic_forced_tool_and_thinking(claude: anthropic.Anthropic) -> None:
    tool = {
        "name": "record",
        "description": "Record it",
        "input_schema": Weather.model_json_schema(),
    }
    with claude.messages.stream(
        model="demo",
        max_tokens=2000,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "record"},
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "tool_use"]
    thinking, use = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert use.type == "tool_use" and use.name == "record"
    Weather.model_validate(use.input)
    assert message.usage.output_tokens > 10


# -- structured output -----------------------------------------------------------------


def test_openai_structured_output_parses_into_the_model(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.parse(
        model="demo",
        messages=[{"role": "user", "content": "the weather, as JSON"}],
        response_format=Weather,
    )
    assert isinstance(completion.choices[0].message.parsed, Weather)
    response = oai.responses.parse(model="demo", input="the weather", text_format=Weather)
    assert isinstance(response.output_parsed, Weather)
    with oai.chat.completions.stream(
        model="demo", messages=[{"role": "user", "content": "JSON"}], response_format=Weather
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Weather)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("rate_limit", openai.RateLimitError, 429),
        ("auth", openai.AuthenticationError, 401),
        ("permission", openai.PermissionDeniedError, 403),
        ("not_found", openai.NotFoundError, 404),
        ("bad_request", openai.BadRequestError, 400),
        ("server_error", openai.InternalServerError, 500),
        ("overloaded", openai.InternalServerError, 503),
        ("nonsense", openai.BadRequestError, 400),
    ],
)
def test_http_faults_are_the_openai_sdks_own_errors(
    oai: openai.OpenAI, fault: str, error: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as caught:
        oai.chat.completions.create(
            model=f"demo:{fault}", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert caught.value.status_code == status
    if fault == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "1"


def test_http_faults_are_the_anthropic_sdks_own_errors(claude: anthropic.Anthropic) -> None:
    for fault, error, status in [
        ("overloaded", anthropic.OverloadedError, 529),
        ("rate_limit", anthropic.RateLimitError, 429),
        ("auth", anthropic.AuthenticationError, 401),
    ]:
        with pytest.raises(error) as caught:
            claude.messages.create(
                model=f"demo:{fault}", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == status


def test_in_band_error_after_n_tokens(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    pieces: list[str] = []
    with pytest.raises(openai.APIError, match="simulated error after 5 tokens"):
        read_text(oai, "demo:error@5", pieces)
    assert len(pieces) == 5
    with (
        pytest.raises(anthropic.APIStatusError, match="simulated error"),
        claude.messages.stream(
            model="demo:error@5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_cut_after_n_tokens_drops_the_connection(oai: openai.OpenAI, url: str) -> None:
    pieces: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        read_text(oai, "demo:cut@7", pieces)
    assert len(pieces) == 7
    # curl sees a transfer cut short mid-body (exit 18: partial file)
    run = subprocess.run(
        [
            "curl",
            "-sN",
            "-H",
            "content-type: application/json",
            url + "/v1/chat/completions",
            "-d",
            json.dumps(
                {
                    "model": "demo:cut@3",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ),
        ],
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
    )
    assert run.returncode == 18, run
    assert run.stdout.count(b"data: ") == 3 + 1  # the role chunk, then 3 tokens
    assert b"[DONE]" not in run.stdout


def test_stall_after_n_tokens_meets_the_idle_deadline(tmp_path: Path) -> None:
    toml = '[providers.demo]\ntype = "demo"\nspeed = "max"\n[providers.demo.timeouts]\nidle = 0.5\n'
    with configured(tmp_path, toml) as client:
        pieces: list[str] = []
        with pytest.raises(openai.APIError, match="idle"):
            read_text(client, "demo:stall@4", pieces)
        assert len(pieces) == 4


def test_demo_speed_is_checked() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve", "--demo-speed", "fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "positive number or 'max'" in run.stderr


# -- agent frameworks ----------------------------------------------------------------------


async def test_agents_sdk_chat_completions_model_tool_loop(url: str) -> None:
    from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather for a city."""
        calls.append(city)
        return "sunny, 21 degrees"

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    try:
        agent: Agent[Any] = Agent(
            name="weather",
            instructions="Use the tool.",
            model=OpenAIChatCompletionsModel("demo", client),
            model_settings=ModelSettings(temperature=0),
            tools=[get_weather],
        )
        result = await Runner.run(
            agent, "Call get_weather for Paris.", run_config=RunConfig(tracing_disabled=True)
        )
    finally:
        await client.close()
    assert len(calls) == 1
    assert "get_weather returned sunny, 21 degrees." in result.final_output


def test_pydantic_ai_structured_output_and_tools(url: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("demo", provider=OpenAIProvider(base_url=url + "/v1", api_key="unused"))
    agent = Agent(model, output_type=Weather)
    seen: list[str] = []

    @agent.tool_plain
    def lookup(city: str) -> str:
        """Look a city up."""
        seen.append(city)
        return "found"

    result = agent.run_sync("What is the weather? Use lookup first.")
    assert isinstance(result.output, Weather)
    assert len(seen) == 1  # the tool the prompt named ran, then the structured answer came


# instructor caps jiter below what current openai releases need, so it cannot share the
# test environment: it gets a virtualenv of its own, with whatever openai it resolves to.
INSTRUCTOR_VENV = Path(__file__).resolve().parent.parent / "build" / "client-venvs" / "instructor"
INSTRUCTOR_SCRIPT = """
import sys
from typing import Literal

import instructor
import openai
from pydantic import BaseModel, Field


class Weather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)
    tags: list[str]


for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA):
    client = instructor.from_openai(
        openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0), mode=mode
    )
    weather = client.chat.completions.create(
        model="demo",
        response_model=Weather,
        max_retries=0,
        messages=[{"role": "user", "content": "The weather in Rome?"}],
    )
    assert isinstance(weather, Weather)
    print(mode.value, weather.model_dump_json())
"""


def instructor_python() -> Path:
    python = INSTRUCTOR_VENV / "bin" / "python"
    done = INSTRUCTOR_VENV / ".installed"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(INSTRUCTOR_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "instructor>=1.7"], check=True, timeout=900
        )
        done.touch()
    return python


def test_instructor_response_models_validate(url: str) -> None:
    run = subprocess.run(
        [str(instructor_python()), "-c", INSTRUCTOR_SCRIPT, url + "/v1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["tool_call", "json_schema_mode"], lines
    for line in lines:
        Weather.model_validate_json(line.split(" ", 1)[1])


# -- the chat page -------------------------------------------------------------------------


def test_chat_page_shows_a_reply_growing(browser: Any) -> None:
    # The default pace (the suite's environment asks for none): what a newcomer sees.
    with serve_process(None, args=("--demo-speed", "1")) as (base, _):
        page = browser.new_page()
        try:
            page.goto(base + "/")
            page.fill("#message", "Tell me a story")
            page.click("#send")
            grows = "() => document.querySelector('.assistant .text')?.innerText.split(' ').length"
            page.wait_for_function(f"({grows})() >= 3", timeout=20_000)
            early_words = page.evaluate(grows)
            early = page.screenshot()
            page.wait_for_function(f"({grows})() >= {early_words + 5}", timeout=20_000)
            late = page.screenshot()
            assert early != late
            page.wait_for_selector(".assistant[data-state=done]", timeout=30_000)
            stats = page.inner_text(".assistant .stats")
            rate = float(stats.split("tokens/s")[0].split()[-1].replace(",", ""))
            assert rate < 200, stats  # streamed at a model's pace, not all at once
        finally:
            page.close()


def test_cut_on_a_resumable_gateway_ends_the_log_with_a_network_error(tmp_path: Path) -> None:
    with configured(tmp_path, '[gateway]\nresume = "memory"\n') as client:
        pieces: list[str] = []
        with pytest.raises(openai.APIError, match="connection was cut"):
            read_text(client, "demo:cut@3", pieces)
        assert len(pieces) == 3


def test_responses_function_call_streams_valid_arguments(oai: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather",
        "parameters": Weather.model_json_schema(),
    }
    with oai.responses.stream(
        model="demo",
        input="Weather?",
        tools=[tool],
        tool_choice="required",  # type: ignore[list-item]
    ) as stream:
        deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and len(deltas) > 3
    Weather.model_validate_json(calls[0].arguments)


def test_openai_reasoning_content_comes_first(oai: openai.OpenAI) -> None:
    kinds: list[str] = []
    for chunk in oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "think first"}],
        reasoning_effort="low",
        stream=True,
    ):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            kinds.append("reasoning")
        if delta.content:
            kinds.append("text")
    first_text = kinds.index("text")
    assert first_text >= 8 and set(kinds[:first_text]) == {"reasoning"}
    assert "reasoning" not in kinds[first_text:]


def test_usage_is_the_same_in_every_protocol(
    oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    question = "Tell me about the fox and the grapes"
    chat = oai.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=80,
    )
    message = claude.messages.create(
        model="demo",
        messages=[{"role": "user", "content": question}],
        extra_body={"temperature": 0},
        max_tokens=80,
    )
    response = oai.responses.create(
        model="demo", input=question, temperature=0, max_output_tokens=80
    )
    assert chat.usage is not None and response.usage is not None
    assert chat.usage.prompt_tokens == message.usage.input_tokens == response.usage.input_tokens
    assert chat.usage.prompt_tokens == len(question.split())
    assert (
        chat.usage.completion_tokens
        == message.usage.output_tokens
        == response.usage.output_tokens
        > 0
    )
    assert chat.choices[0].message.content == message.content[0].text == response.output_text  # type: ignore[union-attr]
