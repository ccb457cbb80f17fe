"""guard() and StreamError against real failures: real uvicorn servers that hang, stall,
reset or refuse, read by real clients (httpx2, httpx, the official openai/anthropic SDKs).

Each test checks the category and that the upstream response was closed (the client
side says so and the server sees the disconnect). Bounds are generous liveness checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tests.conftest import serve
from tokenwire import StreamError, guard
from tokenwire.errors import ProviderError

pytestmark = pytest.mark.integration

SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
OPENAI_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        }
    )
    + b"\n\n"
)
ANTHROPIC_START = (
    b"event: message_start\ndata: "
    + orjson.dumps(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        }
    )
    + b"\n\n"
)

IN_60S = "<HTTP-date 60 s from now>"  # filled in when the response is sent


def http_date_in_60s() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)


# name -> (status, headers, body): what real providers answer before a stream starts.
ERROR_RESPONSES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "openai-429": (
        429,
        {"retry-after": "3"},
        b'{"error":{"message":"Rate limit reached for requests","type":"requests",'
        b'"param":null,"code":"rate_limit_exceeded"}}',
    ),
    "anthropic-429-date": (
        429,
        {"retry-after": IN_60S},
        b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests'
        b' has exceeded your rate limit"}}',
    ),
    "openai-401": (
        401,
        {},
        b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error",'
        b'"param":null,"code":"invalid_api_key"}}',
    ),
    "anthropic-400": (
        400,
        {},
        b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field'
        b' required"}}',
    ),
    "anthropic-529": (
        529,
        {},
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    ),
    "text-503": (503, {"content-type": "text/plain"}, b"upstream connect error"),
}
EXPECTED = {
    "openai-429": ("rate_limit", 3.0, "requests"),
    "anthropic-429-date": ("rate_limit", 60.0, "rate_limit_error"),
    "openai-401": ("authentication", None, "invalid_request_error"),
    "anthropic-400": ("invalid_request", None, "invalid_request_error"),
    "anthropic-529": ("overloaded", None, "overloaded_error"),
    "text-503": ("overloaded", None, None),
}


@dataclass
class Upstream:
    """What the server saw; set from the server's thread."""

    disconnected: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)

    async def saw_disconnect(self) -> bool:
        return await asyncio.to_thread(self.disconnected.wait, 5)


async def read_request(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def wait_disconnect(receive: Any, upstream: Upstream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    upstream.disconnected.set()


def make_app(upstream: Upstream) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_request(receive)
        path: str = scope["path"]
        if path in ("/v1/chat/completions", "/v1/messages"):
            # The SDKs' endpoints: the behaviour is picked by the request's model.
            path = "/" + orjson.loads(body)["model"]
            first = OPENAI_CHUNK if scope["path"] == "/v1/chat/completions" else ANTHROPIC_START
            second = OPENAI_CHUNK if scope["path"] == "/v1/chat/completions" else b"event: ping\n\n"
        else:
            first, second = b"data: 0\n\n", b"data: 1\n\n"
        upstream.requests.append(path)
        if path == "/hang-headers":
            await wait_disconnect(receive, upstream)
            return
        if path.startswith("/status/"):
            status, headers, content = ERROR_RESPONSES[path.removeprefix("/status/")]
            raw = [(b"content-type", b"application/json")] if "content-type" not in headers else []
            raw += [
                (k.encode(), (http_date_in_60s() if v == IN_60S else v).encode())
                for k, v in headers.items()
            ]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": content})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        if path == "/hang-body":
            await wait_disconnect(receive, upstream)
        elif path == "/stall":
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await send({"type": "http.response.body", "body": second, "more_body": True})
            await wait_disconnect(receive, upstream)
        elif path == "/trickle":
            watcher = asyncio.ensure_future(wait_disconnect(receive, upstream))
            while not watcher.done():
                await send({"type": "http.response.body", "body": first, "more_body": True})
                await asyncio.sleep(0.02)
        elif path == "/reset":
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await asyncio.sleep(0.05)
            raise RuntimeError("simulated crash mid-stream: uvicorn drops the connection")
        else:
            raise AssertionError(f"unknown path {path}")

    return app


@contextlib.contextmanager
def upstream_server() -> Iterator[tuple[str, Upstream]]:
    upstream = Upstream()
    # log_level critical: the /reset crash is intended and its traceback is noise.
    with serve(make_app(upstream), log_level="critical") as url:
        yield url, upstream


async def request_body(client: Any, url: str) -> AsyncIterator[bytes]:
    """The whole upstream call as one stream, so deadlines cover the wait for headers."""
    async with client.stream("GET", url) as response:
        if response.is_error:
            await response.aread()
            response.raise_for_status()
        async for chunk in response.aiter_bytes():
            yield chunk


async def drain(stream: AsyncIterator[Any], into: list[Any] | None = None) -> None:
    async for item in stream:
        if into is not None:
            into.append(item)


# -- httpx2 ---------------------------------------------------------------------------


async def test_server_hangs_before_headers() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            with pytest.raises(StreamError) as info:
                await drain(
                    guard(request_body(client, url + "/hang-headers"), first_chunk_timeout=0.3)
                )
        assert info.value.type == "timeout"
        assert info.value.code == "first_chunk_timeout"
        assert await upstream.saw_disconnect()


async def test_server_hangs_after_headers_before_the_first_byte() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(
                client.build_request("GET", url + "/hang-body"), stream=True
            )
            assert response.status_code == 200
            with pytest.raises(StreamError) as info:
                await drain(guard(response.aiter_bytes(), first_chunk_timeout=0.3, idle_timeout=10))
            assert info.value.code == "first_chunk_timeout"
            assert response.is_closed
        assert await upstream.saw_disconnect()


async def test_server_stalls_mid_stream() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/stall"), stream=True)
            got: list[bytes] = []
            with pytest.raises(StreamError) as info:
                await drain(guard(response.aiter_bytes(), idle_timeout=0.3), got)
            assert b"".join(got) == b"data: 0\n\ndata: 1\n\n"
            assert (info.value.type, info.value.code) == ("timeout", "idle_timeout")
            assert response.is_closed
        assert await upstream.saw_disconnect()


async def test_server_stalls_mid_stream_read_by_lines() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/stall"), stream=True)
            got: list[str] = []
            with pytest.raises(StreamError, match="idle_timeout"):
                await drain(guard(response.aiter_lines(), idle_timeout=0.3), got)
            assert got == ["data: 0", "", "data: 1", ""]
            assert response.is_closed  # the interrupt unwound every generator in between
        assert await upstream.saw_disconnect()


async def test_total_timeout_on_a_stream_that_never_ends() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            got: list[bytes] = []
            with pytest.raises(StreamError) as info:
                await drain(
                    guard(request_body(client, url + "/trickle"), timeout=1.0, idle_timeout=5),
                    got,
                )
            assert info.value.code == "timeout"
            assert got
        assert await upstream.saw_disconnect()


async def test_cancel_event_stops_a_live_stream() -> None:
    with upstream_server() as (url, upstream):
        cancel = asyncio.Event()
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/trickle"), stream=True)
            asyncio.get_running_loop().call_later(0.2, cancel.set)
            with pytest.raises(StreamError) as info:
                await drain(guard(response.aiter_bytes(), cancel=cancel))
            assert info.value.type == "cancelled"
            assert response.is_closed
        assert await upstream.saw_disconnect()


async def test_enclosing_task_cancelled_while_upstream_stalls() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/stall"), stream=True)
            task = asyncio.create_task(drain(guard(response.aiter_bytes(), idle_timeout=30)))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert response.is_closed
        assert await upstream.saw_disconnect()


async def test_consumer_breaks_out_early() -> None:
    with upstream_server() as (url, upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/trickle"), stream=True)
            async with contextlib.aclosing(guard(response.aiter_bytes(), idle_timeout=5)) as chunks:
                async for _ in chunks:
                    break
            assert response.is_closed
        assert await upstream.saw_disconnect()


async def test_server_drops_the_connection_mid_stream() -> None:
    with upstream_server() as (url, _upstream):
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url + "/reset"), stream=True)
            got: list[bytes] = []
            with pytest.raises(StreamError) as info:
                await drain(guard(response.aiter_bytes(), idle_timeout=10), got)
            assert b"".join(got) == b"data: 0\n\n"
            assert info.value.type == "network"
            assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
            assert response.is_closed


@contextlib.contextmanager
def resetting_server() -> Iterator[str]:
    """A raw TCP server that sends headers and one chunk, then resets (RST) the
    connection; uvicorn cannot be made to send a RST."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n9\r\ndata: 0\n\n\r\n"
            )
            threading.Event().wait(0.1)
            # linger on, timeout 0: close() sends RST instead of FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        thread.join(5)


async def test_connection_reset_by_peer() -> None:
    with resetting_server() as url:
        async with httpx2.AsyncClient(timeout=30) as client:
            response = await client.send(client.build_request("GET", url), stream=True)
            with pytest.raises(StreamError) as info:
                await drain(guard(response.aiter_bytes(), idle_timeout=10))
            assert info.value.type == "network"
            assert isinstance(info.value.__cause__, httpx2.ReadError | httpx2.RemoteProtocolError)
            assert response.is_closed


async def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    async with httpx2.AsyncClient(timeout=30) as client:
        with pytest.raises(StreamError) as info:
            await drain(guard(request_body(client, f"http://127.0.0.1:{port}/"), timeout=10))
    assert info.value.type == "network"
    assert isinstance(info.value.__cause__, httpx2.ConnectError)


@pytest.mark.parametrize("client_mod", [httpx2, httpx], ids=["httpx2", "httpx"])
@pytest.mark.parametrize("name", sorted(ERROR_RESPONSES))
async def test_error_status_before_the_stream(client_mod: Any, name: str) -> None:
    category, retry_after, provider_type = EXPECTED[name]
    status = ERROR_RESPONSES[name][0]
    with upstream_server() as (url, _upstream):
        async with client_mod.AsyncClient(timeout=30) as client:
            with pytest.raises(StreamError) as info:
                await drain(guard(request_body(client, f"{url}/status/{name}"), timeout=10))
    err = info.value
    assert isinstance(err.__cause__, client_mod.HTTPStatusError)
    assert (err.type, err.status, err.provider_type) == (category, status, provider_type)
    if retry_after is None:
        assert err.retry_after is None
    else:
        assert err.retry_after == pytest.approx(retry_after, abs=5)
    assert isinstance(err, ProviderError) == (provider_type is not None)


# -- the official SDKs ------------------------------------------------------------


def sdk_clients(url: str, **kwargs: Any) -> list[Any]:
    return [
        openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0, **kwargs),
        anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0, **kwargs),
    ]


async def sdk_stream(client: Any, model: str) -> Any:
    if isinstance(client, openai.AsyncOpenAI):
        return await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    return await client.messages.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}], stream=True
    )


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_sdk_stream_stalls_mid_stream(which: int) -> None:
    with upstream_server() as (url, upstream):
        client = sdk_clients(url)[which]
        async with client:
            stream = await sdk_stream(client, "stall")
            got: list[Any] = []
            with pytest.raises(StreamError) as info:
                await drain(guard(stream, idle_timeout=0.3), got)
            assert len(got) == (2 if which == 0 else 1)  # anthropic skips the ping
            assert info.value.code == "idle_timeout"
            assert stream.response.is_closed
        assert await upstream.saw_disconnect()


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_sdk_consumer_break_closes_the_response(which: int) -> None:
    with upstream_server() as (url, upstream):
        client = sdk_clients(url)[which]
        async with client:
            stream = await sdk_stream(client, "trickle")
            async with contextlib.aclosing(guard(stream, idle_timeout=5)) as items:
                async for _ in items:
                    break
            assert stream.response.is_closed
        assert await upstream.saw_disconnect()


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_sdk_timeout_waiting_for_headers(which: int) -> None:
    with upstream_server() as (url, upstream):
        client = sdk_clients(url, timeout=0.3)[which]
        async with client:
            with pytest.raises((openai.APITimeoutError, anthropic.APITimeoutError)) as info:
                await sdk_stream(client, "hang-headers")
        assert StreamError.from_exception(info.value).type == "timeout"
        assert await upstream.saw_disconnect()


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_sdk_connection_dropped_mid_stream(which: int) -> None:
    with upstream_server() as (url, _upstream):
        client = sdk_clients(url)[which]
        async with client:
            stream = await sdk_stream(client, "reset")
            with pytest.raises(StreamError) as info:
                await drain(guard(stream, idle_timeout=10))
            assert info.value.type == "network"
            assert stream.response.is_closed


@pytest.mark.parametrize(
    ("which", "name"),
    [
        (0, "openai-429"),
        (0, "openai-401"),
        (0, "text-503"),
        (1, "anthropic-429-date"),
        (1, "anthropic-400"),
        (1, "anthropic-529"),
    ],
)
async def test_sdk_error_status(which: int, name: str) -> None:
    category, retry_after, provider_type = EXPECTED[name]
    with upstream_server() as (url, _upstream):
        client = sdk_clients(url)[which]
        async with client:
            with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as info:
                await sdk_stream(client, f"status/{name}")
    err = StreamError.from_exception(info.value)
    assert (err.type, err.status, err.provider_type) == (
        category,
        ERROR_RESPONSES[name][0],
        provider_type,
    )
    assert err.provider == ("openai" if which == 0 else "anthropic")
    if retry_after is not None:
        assert err.retry_after == pytest.approx(retry_after, abs=5)
