"""The senders, read by the official openai, anthropic and google-genai SDKs (sync and
async) from a real uvicorn server, plus the plain and browser-format senders."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import serve
from tests.server_helpers import open_stream, read_until, wait_for
from tokenwire.errors import ClientDisconnected
from tokenwire.llm.model import ReasoningDelta, Usage
from tokenwire.server import (
    AnthropicSender,
    ChunkSender,
    ClaudeSender,
    EventSender,
    EventStreamResponse,
    GeminiSender,
    OpenAISender,
    request_shutdown,
)
from tokenwire.sse import ServerSentEvent, decode

pytestmark = pytest.mark.integration

WORDS = ["Hello", ", ", "wor", "ld", "!"]
# What a client is told of an exception that is not a StreamError.
HIDDEN = r"Internal server error\. \(reference [0-9a-f]{12}\)"
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


Producer = Callable[[Any], Awaitable[None]]


def sender_app(routes: dict[str, Callable[[Request], Response]]) -> Starlette:
    def wrap(fn: Callable[[Request], Response]) -> Any:
        async def endpoint(request: Request) -> Response:
            return fn(request)

        return endpoint

    return Starlette(routes=[Route(p, wrap(f), methods=["GET", "POST"]) for p, f in routes.items()])


# -- OpenAI ------------------------------------------------------------------------------


def openai_endpoint(request: Request) -> Response:
    scenario = request.headers.get("x-scenario", "text")
    sender, response = OpenAISender.create(
        id="chatcmpl-123456", model="gpt-3.5-turbo", role="assistant", buffer_size=100
    )
    if scenario == "error-exposed":
        response.expose_errors = True
        scenario = "error"

    async def produce() -> None:
        async with sender:
            if scenario == "error":
                await sender.send("partial")
                raise RuntimeError("the model fell over")
            for word in WORDS:
                await sender.send(word)
            if scenario == "tools":
                await sender.send_tool_call(0, id="call_a", name="get_weather", arguments="")
                await sender.send_tool_call(0, arguments='{"city": ')
                await sender.send_tool_call(0, arguments='"Paris"}')
                await sender.send_tool_call(1, id="call_b", name="get_time", arguments='{"tz":')
                await sender.send_tool_call(1, arguments=' "CET"}')
                await sender.send_finish(
                    "tool_calls",
                    usage={"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
                )
            else:
                await sender.send_finish("stop", usage=Usage(input_tokens=5, output_tokens=7))

    sender.produce(produce())
    return response


@pytest.fixture(scope="module")
def openai_url() -> Any:
    with serve(sender_app({"/v1/chat/completions": openai_endpoint})) as url:
        yield url + "/v1"


def _client(url: str, scenario: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url, api_key="test", max_retries=0, default_headers={"x-scenario": scenario}
    )


def _aclient(url: str, scenario: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url, api_key="test", max_retries=0, default_headers={"x-scenario": scenario}
    )


def test_openai_sdk_sync_create_stream_text_and_usage(openai_url: str) -> None:
    client = _client(openai_url, "text")
    chunks = list(client.chat.completions.create(model="m", messages=[], stream=True))
    assert {c.id for c in chunks} == {"chatcmpl-123456"}
    assert len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 7)
    assert chunks[-1].usage.total_tokens == 12


def test_openai_sdk_sync_tool_calls(openai_url: str) -> None:
    client = _client(openai_url, "tools")
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for chunk in client.chat.completions.create(model="m", messages=[], stream=True):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                assert call.function is not None
                entry["id"] += call.id or ""
                entry["name"] += call.function.name or ""
                entry["args"] += call.function.arguments or ""
    assert calls == {
        0: {"id": "call_a", "name": "get_weather", "args": '{"city": "Paris"}'},
        1: {"id": "call_b", "name": "get_time", "args": '{"tz": "CET"}'},
    }
    assert finish == "tool_calls"
    assert usage is not None and usage.total_tokens == 33


def test_openai_sdk_sync_stream_helper_accumulates(openai_url: str) -> None:
    client = _client(openai_url, "tools")
    with client.chat.completions.stream(model="m", messages=[]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Hello, world!"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"tz": "CET"}'),
    ]
    assert final.usage is not None and final.usage.prompt_tokens == 11


async def test_openai_sdk_async_create_and_stream_helper(openai_url: str) -> None:
    client = _aclient(openai_url, "text")
    text = ""
    stream = await client.chat.completions.create(model="m", messages=[], stream=True)
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "Hello, world!"
    tools = _aclient(openai_url, "tools")
    async with tools.chat.completions.stream(model="m", messages=[]) as helper:
        final = await helper.get_final_completion()
    assert final.choices[0].message.content == "Hello, world!"
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls is not None
    assert len(final.choices[0].message.tool_calls) == 2
    await client.close()
    await tools.close()


def test_openai_sdk_raises_api_error_on_server_error(openai_url: str) -> None:
    client = _client(openai_url, "error")
    seen = []
    with pytest.raises(openai.APIError, match=HIDDEN) as info:
        for chunk in client.chat.completions.create(model="m", messages=[], stream=True):
            seen.extend(c.delta.content for c in chunk.choices)
    assert "partial" in seen
    assert "fell over" not in str(info.value)  # internals stay in the server's log


def test_a_hidden_error_is_logged_once_with_its_reference(
    openai_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with pytest.raises(openai.APIError) as info:
        for _ in _client(openai_url, "error").chat.completions.create(
            model="m", messages=[], stream=True
        ):
            pass
    reference = re.search(r"reference ([0-9a-f]{12})", str(info.value))
    assert reference is not None
    assert wait_for(lambda: any(reference[1] in r.getMessage() for r in caplog.records))
    gc.collect()  # an unretrieved task exception would be reported now
    logged = [r for r in caplog.records if reference[1] in r.getMessage()]
    assert len(logged) == 1 and "the model fell over" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # with the traceback
    assert not any("never retrieved" in r.getMessage() for r in caplog.records)


def test_expose_errors_sends_the_exception_text(openai_url: str) -> None:
    with pytest.raises(openai.APIError, match="the model fell over"):
        for _ in _client(openai_url, "error-exposed").chat.completions.create(
            model="m", messages=[], stream=True
        ):
            pass


async def test_openai_sdk_async_raises_api_error(openai_url: str) -> None:
    client = _aclient(openai_url, "error")
    with pytest.raises(openai.APIError, match=HIDDEN):
        async with client.chat.completions.stream(model="m", messages=[]) as stream:
            await stream.get_final_completion()
    await client.close()


# -- Anthropic ---------------------------------------------------------------------------


def anthropic_endpoint(request: Request) -> Response:
    scenario = request.headers.get("x-scenario", "text")
    sender, response = ClaudeSender.create(
        id="msg_claude_123456",
        model="claude-3-sonnet-20240229",
        role="assistant",
        buffer_size=100,
        usage={"input_tokens": 17, "output_tokens": 1},
    )

    async def produce() -> None:
        async with sender:
            if scenario == "error":
                await sender.send("partial")
                raise RuntimeError("claude fell over")
            if scenario == "tools":
                await sender.send_thinking("Let me think.")
                await sender.send_thinking(signature="c2lnbmF0dXJl")
            for word in WORDS:
                await sender.send(word)
            if scenario == "tools":
                await sender.send_tool_call(0, id="toolu_1", name="get_weather")
                await sender.send_tool_call(0, arguments='{"city": "Par')
                await sender.send_tool_call(0, arguments='is"}')
                await sender.send_finish(stop_reason="tool_use", usage={"output_tokens": 42})
            else:
                await sender.send_finish(stop_reason="end_turn", usage=None)

    sender.produce(produce())
    return response


@pytest.fixture(scope="module")
def anthropic_url() -> Any:
    with serve(sender_app({"/v1/messages": anthropic_endpoint})) as url:
        yield url


def _anthropic(url: str, scenario: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=url, api_key="test", max_retries=0, default_headers={"x-scenario": scenario}
    )


def test_claude_sender_is_anthropic_sender() -> None:
    assert ClaudeSender is AnthropicSender


def test_anthropic_sdk_text_stream_and_final_message(anthropic_url: str) -> None:
    client = _anthropic(anthropic_url, "text")
    with client.messages.stream(model="m", max_tokens=10, messages=[]) as stream:
        assert list(stream.text_stream) == WORDS
        final = stream.get_final_message()
    assert final.id == "msg_claude_123456"
    assert final.model == "claude-3-sonnet-20240229"
    assert final.content[0].type == "text" and final.content[0].text == "Hello, world!"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 17


def test_anthropic_sdk_tool_use_thinking_and_usage(anthropic_url: str) -> None:
    client = _anthropic(anthropic_url, "tools")
    with client.messages.stream(model="m", max_tokens=10, messages=[]) as stream:
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds == ["thinking", "text", "tool_use"]
    thinking, text, tool = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me think."
    assert thinking.signature == "c2lnbmF0dXJl"
    assert text.type == "text" and text.text == "Hello, world!"
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_1", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (17, 42)


async def test_anthropic_sdk_async(anthropic_url: str) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=anthropic_url, api_key="test", max_retries=0, default_headers={"x-scenario": "x"}
    )
    async with client.messages.stream(model="m", max_tokens=10, messages=[]) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == WORDS
    assert final.stop_reason == "end_turn"
    await client.close()


def test_anthropic_sdk_raises_on_error_event(anthropic_url: str) -> None:
    client = _anthropic(anthropic_url, "error")
    with (
        pytest.raises(anthropic.APIStatusError, match=HIDDEN),
        client.messages.stream(model="m", max_tokens=10, messages=[]) as stream,
    ):
        stream.get_final_message()


# -- Gemini ------------------------------------------------------------------------------


def gemini_endpoint(request: Request) -> Response:
    scenario = request.headers.get("x-scenario", "text")
    sender, response = GeminiSender.create(id="resp-gemini-1", model="gemini-test-001")

    async def produce() -> None:
        async with sender:
            if scenario == "error":
                await sender.send("partial")
                raise RuntimeError("gemini fell over")
            if scenario == "tools":
                await sender.send_thought("Let me think.")
                await sender.send_thought(signature="c2lnbmF0dXJl")
            for word in WORDS:
                await sender.send(word)
            if scenario == "tools":
                await sender.send_function_call("get_weather", {"city": "Paris"}, id="fc_1")
                await sender.send_function_call("get_time", {"tz": "CET"})
                await sender.send_finish(usage={"promptTokenCount": 9, "candidatesTokenCount": 12})
            else:
                await sender.send_finish("STOP", usage=Usage(input_tokens=5, output_tokens=7))

    sender.produce(produce())
    return response


@pytest.fixture(scope="module")
def gemini_url() -> Any:
    path = "/v1beta/models/{model}:streamGenerateContent"
    with serve(sender_app({path: gemini_endpoint})) as url:
        yield url


def _gemini(url: str, scenario: str) -> genai.Client:
    options = types.HttpOptions(
        base_url=url,
        api_version="v1beta",
        headers={"x-scenario": scenario},
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key="test", http_options=options)


def test_gemini_sdk_streams_text_and_usage(gemini_url: str) -> None:
    client = _gemini(gemini_url, "text")
    chunks = list(client.models.generate_content_stream(model="m", contents="hi"))
    assert [c.text for c in chunks if c.text] == WORDS  # a chunk per send, nothing first
    assert {(c.response_id, c.model_version) for c in chunks} == {
        ("resp-gemini-1", "gemini-test-001")
    }
    last = chunks[-1]
    assert last.candidates is not None
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    usage = last.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (5, 7)


def test_gemini_sdk_function_calls_thoughts_and_usage(gemini_url: str) -> None:
    client = _gemini(gemini_url, "tools")
    chunks = list(client.models.generate_content_stream(model="m", contents="hi"))
    parts = [p for c in chunks if c.candidates for p in c.candidates[0].content.parts or []]
    assert "".join(p.text or "" for p in parts if p.thought) == "Let me think."
    assert [p.thought_signature for p in parts if p.thought_signature] == [b"signature"]
    assert "".join(p.text or "" for p in parts if not p.thought) == "Hello, world!"
    calls = [call for c in chunks for call in c.function_calls or []]
    assert [(c.id, c.name, c.args) for c in calls] == [
        ("fc_1", "get_weather", {"city": "Paris"}),
        (None, "get_time", {"tz": "CET"}),
    ]
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (9, 12)


async def test_gemini_sdk_async(gemini_url: str) -> None:
    client = _gemini(gemini_url, "text")
    stream = await client.aio.models.generate_content_stream(model="m", contents="hi")
    pieces = [c.text async for c in stream if c.text]
    assert pieces == WORDS
    await client.aio.aclose()


def test_gemini_sdk_raises_on_error_chunk(gemini_url: str) -> None:
    client = _gemini(gemini_url, "error")
    seen: list[str] = []
    with pytest.raises(genai_errors.ServerError, match=HIDDEN) as caught:
        for chunk in client.models.generate_content_stream(model="m", contents="hi"):
            seen.append(chunk.text or "")
    assert seen == ["partial"]
    assert (caught.value.code, caught.value.status) == (500, "INTERNAL")


# -- plain and browser-format senders -----------------------------------------------------


def test_event_sender_and_chunk_sender_bytes() -> None:
    def plain(request: Request) -> Response:
        sender, response = EventSender.create(buffer_size=4)

        async def produce() -> None:
            async with sender:
                await sender.send(ServerSentEvent("x", event="note", id="7"))
                await sender.send({"n": 1})
                await sender.send("text")

        spawn(produce())
        return response

    def chunks(request: Request) -> Response:
        sender, response = ChunkSender.create(buffer_size=4)

        async def produce() -> None:
            async with sender:
                for word in WORDS:
                    await sender.send(word)

        spawn(produce())
        return response

    with serve(sender_app({"/plain": plain, "/chunks": chunks})) as url:
        plain_body = httpx.get(url + "/plain").content
        chunk_body = httpx.get(url + "/chunks").content
    assert plain_body == b'event: note\nid: 7\ndata: x\n\ndata: {"n":1}\n\ndata: text\n\n'
    assert chunk_body == (
        b"".join(b'data: {"chunk":"' + w.encode() + b'"}\n\n' for w in WORDS) + b"data: [DONE]\n\n"
    )


# -- flow control, disconnects, misuse -----------------------------------------------------


async def test_buffer_size_back_pressures_the_producer() -> None:
    """With a client that does not read, the producer gets at most ``buffer_size``
    events ahead of the write in progress."""
    sender, response = EventSender.create(buffer_size=3)
    produced = 0
    release = asyncio.Event()
    written: list[bytes] = []

    async def produce() -> None:
        nonlocal produced
        async with sender:
            for i in range(50):
                await sender.send(str(i))
                produced += 1

    async def receive() -> Any:
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        written.append(message.get("body", b""))
        if len(written) == 2:
            await release.wait()  # the client stops reading after the first event

    serving = asyncio.create_task(response({"type": "http"}, receive, send))
    producing = asyncio.create_task(produce())
    await asyncio.sleep(0.2)
    # The channel holds buffer_size events; the stuck write holds the batch it took.
    assert produced <= 2 * 3
    release.set()
    await asyncio.wait_for(asyncio.gather(serving, producing), 5)
    assert produced == 50
    assert [e.data for e in decode(b"".join(written))] == [str(i) for i in range(50)]


def test_send_raises_client_disconnected_after_client_left() -> None:
    outcome: list[str] = []
    stopped_at: list[float] = []

    def endpoint(request: Request) -> Response:
        sender, response = OpenAISender.create(model="m")

        async def produce() -> None:
            try:
                while True:
                    await sender.send("tok")
                    await asyncio.sleep(0.01)
            except ClientDisconnected:
                outcome.append("disconnected")
            finally:
                stopped_at.append(time.perf_counter())

        spawn(produce())
        return response

    with serve(sender_app({"/": endpoint})) as url:
        sock = open_stream(url)
        read_until(sock, b'"content":"tok"')
        closed_at = time.perf_counter()
        sock.close()
        assert wait_for(lambda: bool(stopped_at), 5)
    assert outcome == ["disconnected"]
    print(f"producer stopped {1000 * (stopped_at[0] - closed_at):.1f} ms after disconnect")
    assert stopped_at[0] - closed_at < 2.0


def test_async_with_swallows_client_disconnected_and_on_disconnect_runs() -> None:
    exited = threading.Event()
    called = threading.Event()

    def endpoint(request: Request) -> Response:
        sender, response = AnthropicSender.create(model="m", on_disconnect=called.set)

        async def produce() -> None:
            async with sender:
                while True:
                    await sender.send("tok")
                    await asyncio.sleep(0.01)
            exited.set()  # reached: the ClientDisconnected was swallowed

        spawn(produce())
        return response

    with serve(sender_app({"/": endpoint})) as url:
        sock = open_stream(url)
        read_until(sock, b"text_delta")
        sock.close()
        assert exited.wait(5) and called.wait(5)


def test_cancelled_producer_ends_stream_with_error_event() -> None:
    def endpoint(request: Request) -> Response:
        sender, response = OpenAISender.create(model="m")

        async def produce() -> None:
            async with sender:
                await sender.send("a")
                await asyncio.sleep(3600)

        task = asyncio.ensure_future(produce())
        _tasks.add(task)
        asyncio.get_running_loop().call_later(0.1, task.cancel)
        return response

    with serve(sender_app({"/": endpoint})) as url:
        client = openai.OpenAI(base_url=url, api_key="t", max_retries=0)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="m", messages=[], stream=True))


async def test_sender_misuse_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        OpenAISender.create(model="m", buffer_size=0)
    sender, _ = OpenAISender.create(model="m")
    with pytest.raises(TypeError, match="text must be a str"):
        await sender.send(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id and name"):
        await sender.send_tool_call(0, arguments="{}")
    await sender.send_finish()
    assert sender.finished and not sender.closed
    with pytest.raises(RuntimeError, match="already finished"):
        await sender.send("late")
    with pytest.raises(RuntimeError, match="already finished"):
        await sender.send_error(ValueError("x"))
    chunks, _ = ChunkSender.create()
    with pytest.raises(TypeError, match="text must be a str"):
        await chunks.send(b"x")  # type: ignore[arg-type]
    plain, _ = EventSender.create()
    with pytest.raises(TypeError, match="cannot send"):
        await plain.send(3.5)
    anth, _ = AnthropicSender.create(model="m")
    await anth.send_delta(ReasoningDelta("hm"))
    await anth.send_error(ValueError("bad"))
    assert anth.finished


def test_shutdown_ends_sender_streams_with_protocol_error() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    producer_stopped = threading.Event()

    def endpoint(request: Request) -> Response:
        loops.append(asyncio.get_running_loop())
        sender, response = OpenAISender.create(model="m")

        async def produce() -> None:
            try:
                while True:
                    await sender.send("tok")
                    await asyncio.sleep(0.02)
            except ClientDisconnected:
                producer_stopped.set()

        spawn(produce())
        return response

    with serve(sender_app({"/v1/chat/completions": endpoint})) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="t", max_retries=0)
        stream = client.chat.completions.create(model="m", messages=[], stream=True)
        next(iter(stream))
        request_shutdown(loops[0])
        with pytest.raises(openai.APIError, match="shutting down"):
            list(stream)
        assert producer_stopped.wait(5)


def test_sender_response_is_an_event_stream_response() -> None:
    _, response = OpenAISender.create(model="m")
    assert isinstance(response, EventStreamResponse)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"


def test_heartbeats_before_first_token_are_ignored_by_both_sdks() -> None:
    def slow_openai(request: Request) -> Response:
        sender, response = OpenAISender.create(model="m", ping=0.02)

        async def produce() -> None:
            async with sender:
                await asyncio.sleep(0.2)  # a slow first token: heartbeats go out meanwhile
                await sender.send("late")

        spawn(produce())
        return response

    def slow_anthropic(request: Request) -> Response:
        sender, response = AnthropicSender.create(model="m", ping=0.02)

        async def produce() -> None:
            async with sender:
                await asyncio.sleep(0.2)
                await sender.send("late")

        spawn(produce())
        return response

    app = sender_app({"/v1/chat/completions": slow_openai, "/v1/messages": slow_anthropic})
    with serve(app) as url:
        raw = httpx.post(url + "/v1/chat/completions").content
        assert raw.count(b": ping\n") >= 2
        client = openai.OpenAI(base_url=url + "/v1", api_key="t", max_retries=0)
        chunks = list(client.chat.completions.create(model="m", messages=[], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "late"
        claude = anthropic.Anthropic(base_url=url, api_key="t", max_retries=0)
        with claude.messages.stream(model="m", max_tokens=5, messages=[]) as stream:
            assert stream.get_final_text() == "late"


def test_gemini_sender_heartbeats_are_blank_lines_and_shutdown_an_error() -> None:
    """The Gemini SDK takes every line but a blank one for data: the sender's heartbeats
    are blank lines, and a server shutting down ends the stream with an error chunk."""
    loops: list[asyncio.AbstractEventLoop] = []
    producer_stopped = threading.Event()

    def slow(request: Request) -> Response:
        loops.append(asyncio.get_running_loop())
        sender, response = GeminiSender.create(model="m", ping=0.02)

        async def produce() -> None:
            try:
                await asyncio.sleep(0.2)  # heartbeats go out meanwhile
                await sender.send("late")
                if request.headers.get("x-scenario") == "endless":
                    while True:
                        await asyncio.sleep(0.02)
                        await sender.send("tok")
                await sender.send_finish()
            except ClientDisconnected:
                producer_stopped.set()

        spawn(produce())
        return response

    path = "/v1beta/models/{model}:streamGenerateContent"
    with serve(sender_app({path: slow})) as url:
        raw = httpx.post(url + "/v1beta/models/m:streamGenerateContent").content
        assert raw.startswith(b"\n\n") and b": ping" not in raw
        client = _gemini(url, "text")
        chunks = list(client.models.generate_content_stream(model="m", contents="x"))
        assert "".join(c.text or "" for c in chunks) == "late"
        endless = _gemini(url, "endless")
        stream = endless.models.generate_content_stream(model="m", contents="x")
        assert next(iter(stream)).text == "late"
        request_shutdown(loops[-1])
        with pytest.raises(genai_errors.ServerError, match="shutting down") as caught:
            list(stream)
        assert caught.value.code == 503
        assert producer_stopped.wait(5)
