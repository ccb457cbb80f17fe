"""The gateway's lean upstream HTTP/1.1 client, against real (raw asyncio) servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from tokenwire.gateway import http11
from tokenwire.gateway.http11 import ConnectionPool, encode_headers

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = encode_headers({"Content-Type": "application/json"})


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server running ``handler`` per request; yields its URL and a list that
    counts connections (one entry per accepted connection)."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()


def chunked(*parts: bytes) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n\r\n"


async def sse_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunked(b"data: 1\n\n", b"data: [DONE]\n\n")
    )
    await writer.drain()


async def read_all(pool: ConnectionPool) -> bytes:
    response = await pool.post("/v1/x", HEADERS, b"{}")
    body = b"".join([c async for c in response.chunks()])
    response.close(finished=True)
    return body


async def test_chunked_body_and_keep_alive_reuse() -> None:
    async with raw_server(sse_chunked) as (url, connections):
        pool = ConnectionPool(url)
        for _ in range(3):
            assert await read_all(pool) == b"data: 1\n\ndata: [DONE]\n\n"
        assert len(connections) == 1
        pool.close()


async def test_reader_that_stops_early_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            while True:
                writer.write(b"9\r\ndata: x\n\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            closed.set()

    async with raw_server(endless) as (url, _):
        pool = ConnectionPool(url)
        response = await pool.post("/v1/x", HEADERS, b"{}")
        async for _ in response.chunks():
            break
        response.close()  # not finished: the upstream must learn the reader left
        await asyncio.wait_for(closed.wait(), 5)
        assert pool._idle == []


async def test_finished_reader_returns_the_connection_once_the_body_ends() -> None:
    async def marker_then_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"e\r\ndata: [DONE]\n\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")  # the end of the body comes after the end marker
        await writer.drain()

    async with raw_server(marker_then_end) as (url, connections):
        pool = ConnectionPool(url)
        response = await pool.post("/v1/x", HEADERS, b"{}")
        async for chunk in response.chunks():
            assert b"[DONE]" in chunk
            break
        response.close(finished=True)
        for _ in range(100):
            if pool._idle:
                break
            await asyncio.sleep(0.01)
        assert len(pool._idle) == 1
        await read_all_raw(pool)
        assert len(connections) == 1


async def read_all_raw(pool: ConnectionPool) -> None:
    response = await pool.post("/v1/x", HEADERS, b"{}")
    async for _ in response.chunks():
        pass
    response.close(finished=True)


async def test_content_length_and_close_delimited_bodies() -> None:
    async def with_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 429 Too Many\r\ncontent-length: 5\r\nretry-after: 3\r\n\r\nslow!")
        await writer.drain()

    async with raw_server(with_length) as (url, _):
        response = await ConnectionPool(url).post("/", HEADERS, b"")
        assert (response.status, response.headers["retry-after"]) == (429, "3")
        assert await response.read_body() == b"slow!"
        assert response.read_all

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async with raw_server(until_close) as (url, _):
        response = await ConnectionPool(url).post("/", HEADERS, b"")
        assert b"".join([c async for c in response.chunks()]) == b"all of it"


async def test_connection_cut_mid_body_is_an_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.transport.abort()

    async with raw_server(cut) as (url, _):
        response = await ConnectionPool(url).post("/", HEADERS, b"")
        with pytest.raises(ConnectionError):
            async for _ in response.chunks():
                pass


async def test_invalid_response_and_refused_connection() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with raw_server(garbage) as (url, _):
        with pytest.raises(ConnectionError, match="invalid HTTP response"):
            await ConnectionPool(url).post("/", HEADERS, b"")
    with pytest.raises(OSError):
        await ConnectionPool(url).post("/", HEADERS, b"")  # nothing listens there now


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await sse_chunked(reader, writer)
        await asyncio.sleep(0.05)
        writer.close()  # keep-alive promised, then closed while idle

    async with raw_server(one_shot) as (url, connections):
        pool = ConnectionPool(url)
        await read_all(pool)
        await asyncio.sleep(0.2)
        assert await read_all(pool) == b"data: 1\n\ndata: [DONE]\n\n"
        assert len(connections) == 2


async def test_slow_reader_pauses_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "_HIGH_WATER", 4096)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x" * 10_000)
            await writer.drain()

    async with raw_server(big) as (url, _):
        response = await ConnectionPool(url).post("/", HEADERS, b"")
        await asyncio.sleep(0.2)
        conn = response._conn
        assert conn._paused and conn._buffered < 200_000
        total = sum([len(c) async for c in response.chunks()])
        assert total == 1_000_000


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_headers({"X-Key": "a\r\nX-Evil: 1"})
    with pytest.raises(ValueError):
        encode_headers({"X:Bad": "1"})
    with pytest.raises(ValueError):
        ConnectionPool("ftp://example")


def test_proxied_upstreams_go_through_httpx2(monkeypatch: pytest.MonkeyPatch) -> None:
    import openai

    from tokenwire.agent.config import from_mapping
    from tokenwire.gateway import create_app, upstream

    from .conftest import serve
    from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    assert upstream._proxied("http://10.1.2.3/v1")
    monkeypatch.setenv("NO_PROXY", "10.1.2.3")
    assert not upstream._proxied("http://10.1.2.3/v1")
    monkeypatch.delenv("HTTP_PROXY")

    monkeypatch.setattr(upstream, "_proxied", lambda url: True)
    with (
        serve(upstream_app(Upstream())) as up,
        serve(create_app(from_mapping(gateway_config(up)))) as url,
    ):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        chunks = client.chat.completions.create(
            model="oa/text", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXT)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="oa/ratelimit", messages=[{"role": "user", "content": "x"}]
            )
