"""Error cases against real local servers: HTTP error JSON bodies, wrong content type,
an endless line (bounded memory), and iter_sse/aiter_sse on plain responses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import httpx2
import pytest

from tokenwire.client import (
    MAX_ERROR_BODY,
    AsyncEventSource,
    EventSource,
    SSEConnectionError,
    aiter_sse,
    astream_chat,
    iter_sse,
    stream_chat,
)
from tokenwire.errors import StreamError
from tokenwire.sse import SSEDecodeError

from .client_helpers import Seen, body, read_request, start
from .conftest import serve

pytestmark = pytest.mark.integration

OPENAI_401 = {
    "error": {
        "message": "Incorrect API key provided: sk-bad.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
OPENAI_429 = {
    "error": {
        "message": "Rate limit reached for gpt-4o.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
ANTHROPIC_500 = {
    "type": "error",
    "error": {"type": "api_error", "message": "Internal server error"},
}


class ErrorApp:
    """Answers every request with ``status``, a JSON body and extra headers."""

    def __init__(
        self, status: int, payload: Any, ctype: bytes = b"application/json", **headers: bytes
    ) -> None:
        self.status = status
        self.payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.ctype = ctype
        self.headers = headers
        self.seen: list[Seen] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(await read_request(scope, receive))
        await start(send, self.status, self.ctype, **self.headers)
        await body(send, self.payload, more=False)


CASES = [
    (401, OPENAI_401, "authentication", "Incorrect API key provided: sk-bad.", "openai"),
    (429, OPENAI_429, "rate_limit", "Rate limit reached for gpt-4o.", "openai"),
    (500, ANTHROPIC_500, "api_error", "Internal server error", "anthropic"),
]


@pytest.mark.parametrize(("status", "payload", "kind", "message", "provider"), CASES)
def test_http_error_is_not_retried_and_exposes_the_body(
    status: int, payload: Any, kind: str, message: str, provider: str
) -> None:
    app = ErrorApp(status, payload, retry_after=b"7")
    with serve(app) as url:
        with pytest.raises(SSEConnectionError) as info, EventSource(url):
            pass
        err = info.value
        assert err.status == status
        assert err.headers["retry-after"] == "7"
        assert err.json() == payload
        assert message in str(err)
        assert len(app.seen) == 1  # never retried

        # the same through the LLM helper: a StreamError with the provider's words
        with pytest.raises(StreamError) as chat_info:
            list(stream_chat(url, json={"model": "m"}))
        chat = chat_info.value
        assert (chat.status, chat.type, chat.message, chat.provider) == (
            status,
            kind,
            message,
            provider,
        )
        assert chat.retry_after == 7.0
        assert isinstance(chat.__cause__, SSEConnectionError)


@pytest.mark.parametrize(("status", "payload", "kind", "message", "provider"), CASES)
async def test_http_error_async(
    status: int, payload: Any, kind: str, message: str, provider: str
) -> None:
    app = ErrorApp(status, payload)
    with serve(app) as url:
        with pytest.raises(SSEConnectionError) as info:
            async with AsyncEventSource(url):
                pass
        assert (info.value.status, info.value.json()) == (status, payload)
        with pytest.raises(StreamError) as chat_info:
            async with astream_chat(url, json={}) as stream:
                async for _ in stream:
                    pass
        assert (chat_info.value.status, chat_info.value.message) == (status, message)
    assert len(app.seen) == 2


def test_error_body_is_bounded_and_plain_text_is_kept() -> None:
    app = ErrorApp(502, b"<html>" + b"x" * (MAX_ERROR_BODY * 3), ctype=b"text/html")
    with serve(app) as url:
        with pytest.raises(SSEConnectionError) as info, EventSource(url):
            pass
        assert len(info.value.body) == MAX_ERROR_BODY
        assert info.value.text.startswith("<html>")
        with pytest.raises(ValueError):
            info.value.json()
        with pytest.raises(StreamError) as chat:
            list(stream_chat(url))
        assert chat.value.status == 502


@pytest.mark.parametrize("ctype", [b"application/json", b"text/plain", b"text/event-streams", b""])
def test_wrong_content_type(ctype: bytes) -> None:
    app = ErrorApp(200, b'data: {"not": "an event stream"}\n\n', ctype=ctype)
    with serve(app) as url:
        expected = pytest.raises(SSEConnectionError, match="instead of text/event-stream")
        with expected as info, EventSource(url):
            pass
        assert info.value.status == 200
        assert b"not" in info.value.body
        with pytest.raises(StreamError):
            list(stream_chat(url))
    assert len(app.seen) == 2


@pytest.mark.parametrize("ctype", [b"text/event-stream; charset=utf-8", b"Text/Event-Stream"])
def test_content_type_parameters_and_case_are_ignored(ctype: bytes) -> None:
    app = ErrorApp(200, b"data: ok\n\n", ctype=ctype)
    with serve(app) as url, EventSource(url, reconnect=False) as source:
        assert [e.data for e in source] == ["ok"]


class EndlessLine:
    """``data: xxxxx...`` forever (until the client leaves), optionally after a good
    event; with ``finite`` bytes, the line then ends and one more event follows."""

    def __init__(self, finite: int | None = None) -> None:
        self.finite = finite
        self.sent = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await read_request(scope, receive)
        self.sent = 0
        await start(send)
        await body(send, b"data: before\n\ndata: ")
        piece = b"x" * 65536
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            while self.finite is None or self.sent < self.finite:
                if gone.is_set():
                    return  # the client went away
                await body(send, piece)
                self.sent += len(piece)
                await asyncio.sleep(0)
            await body(send, b"\n\ndata: after\n\n", more=False)
        except OSError:
            return
        finally:
            watcher.cancel()


def test_endless_line_raises_with_bounded_memory() -> None:
    app = EndlessLine()
    limit = 256 * 1024
    with serve(app) as url, EventSource(url, max_event_size=limit) as source:
        assert next(source).data == "before"
        with pytest.raises(SSEDecodeError, match="max_event_size"):
            next(source)
        # Raised after about `limit` bytes of the line, not at the (never coming) end.
        assert app.sent < 64 * limit


async def test_endless_line_async_and_the_source_goes_on_after_the_error() -> None:
    app = EndlessLine(finite=1024 * 1024)
    with serve(app) as url:
        async with AsyncEventSource(url, max_event_size=64 * 1024, reconnect=False) as source:
            assert (await source.__anext__()).data == "before"
            with pytest.raises(SSEDecodeError):
                await source.__anext__()
            # the oversize event is dropped, nothing else is lost
            assert [e.data async for e in source] == ["after"]


def test_iter_sse_on_httpx2_and_httpx_responses() -> None:
    app = EndlessLine(finite=256 * 1024)
    with serve(app) as url:
        with httpx2.Client() as client, client.stream("GET", url) as response:
            events = iter_sse(response, max_event_size=1024)
            assert next(events).data == "before"
            with pytest.raises(SSEDecodeError):
                next(events)
        with httpx.Client() as client, client.stream("GET", url) as response:
            assert [e.data for e in iter_sse(response)] == ["before", "x" * (256 * 1024), "after"]


async def test_aiter_sse_on_httpx2_and_httpx_responses() -> None:
    app = EndlessLine(finite=65536)
    with serve(app) as url:
        for client in (httpx2.AsyncClient(), httpx.AsyncClient()):
            async with client, client.stream("GET", url) as response:
                data = [e.data async for e in aiter_sse(response)]  # type: ignore[arg-type]
            assert data == ["before", "x" * 65536, "after"]
        async with httpx2.AsyncClient() as client, client.stream("GET", url) as response:
            events = aiter_sse(response, max_event_size=1024)
            assert (await events.__anext__()).data == "before"
            with pytest.raises(SSEDecodeError):
                await events.__anext__()


def test_stream_chat_on_an_error_response_object() -> None:
    app = ErrorApp(401, OPENAI_401)
    with serve(app) as url, httpx.Client() as client, client.stream("POST", url) as response:
        with pytest.raises(StreamError) as info:
            list(stream_chat(response))
        assert (info.value.status, info.value.type) == (401, "authentication")


def test_first_connection_refused() -> None:
    from .conftest import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(SSEConnectionError, match="could not open") as info, EventSource(url):
        pass
    assert isinstance(info.value.__cause__, httpx2.ConnectError)
    with pytest.raises(StreamError) as chat:
        list(stream_chat(f"http://127.0.0.1:{port}/"))
    assert chat.value.type == "network"
