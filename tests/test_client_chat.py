"""stream_chat / astream_chat end to end: recorded streams served by a real server,
in-band errors, truncation, [DONE] handling, resumption, response objects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from tokenwire.client import Backoff, astream_chat, stream_chat
from tokenwire.errors import StreamError
from tokenwire.llm import FinishDelta, MessageStart, TextDelta, accumulate, accumulate_choices

from .client_helpers import Seen, body, read_request, start
from .conftest import recorded_dir, recorded_files, serve

pytestmark = pytest.mark.integration

RECORDED = [*recorded_files("openai"), *recorded_files("anthropic")]


class BodyApp:
    """Serves ``payload`` as an event stream in ``piece``-byte writes; with ``hold``, the
    connection then stays open until the client leaves."""

    def __init__(self, payload: bytes, piece: int = 61, hold: bool = False) -> None:
        self.payload = payload
        self.piece = piece
        self.hold = hold
        self.seen: list[Seen] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(await read_request(scope, receive))
        await start(send)
        for i in range(0, len(self.payload), self.piece):
            await body(send, self.payload[i : i + self.piece])
        if self.hold:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await body(send, b"", more=False)


def _label(p: Path | None) -> str:
    return f"{p.parent.name}/{p.name}" if p else "missing"


@pytest.mark.parametrize("path", RECORDED or [None], ids=_label)
def test_recorded_streams_over_http(path: Path | None) -> None:
    if path is None:
        recorded_dir("openai")
        return
    raw = path.read_bytes()
    app = BodyApp(raw)
    with serve(app) as url:
        if raw.endswith((b"\n\n", b"\r\n\r\n")) or path.parent.name == "openai":
            with stream_chat(url, json={"stream": True}) as stream:
                deltas = list(stream)
            assert stream.messages == accumulate_choices(raw)
            assert stream.message == accumulate(raw)
            assert isinstance(deltas[0], MessageStart)
            assert stream.response is None  # closed at the end
        else:
            # Over the network the last event has no closing blank line, so by the SSE
            # rules it was never complete: message_stop is missing and that is an error.
            with pytest.raises(StreamError, match="message_stop") as info:
                list(stream_chat(url, json={"stream": True}))
            assert info.value.type == "network"
    assert json.loads(app.seen[0].body) == {"stream": True}
    assert app.seen[0].method == "POST"


@pytest.mark.parametrize("path", RECORDED[:1] + RECORDED[-1:] or [None], ids=_label)
async def test_recorded_streams_over_http_async(path: Path | None) -> None:
    if path is None:
        recorded_dir("openai")
        return
    raw = await asyncio.to_thread(path.read_bytes)
    raw += b"\n\n"
    with serve(BodyApp(raw)) as url:
        stream = astream_chat(url, json={})
        deltas = [d async for d in stream]
    assert stream.message == accumulate(raw)
    assert deltas and isinstance(deltas[0], MessageStart)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c", "model": "m", "choices": [choice]}).encode() + b"\n\n"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


_SERVER_ERROR = {"message": "The server had an error", "type": "server_error", "param": None}
OPENAI_ERROR = (
    _chunk({"role": "assistant", "content": ""})
    + _chunk({"content": "Hello"})
    + b"data: "
    + json.dumps({"error": {**_SERVER_ERROR, "code": None}}).encode()
    + b"\n\n"
    + b"data: [DONE]\n\n"
)
_USAGE = {"input_tokens": 1, "output_tokens": 1}
ANTHROPIC_ERROR = (
    _event(
        "message_start",
        {
            "type": "message_start",
            "message": {"id": "m", "model": "c", "role": "assistant", "usage": _USAGE},
        },
    )
    + _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    + _event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    )
    + _event(
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
)


@pytest.mark.parametrize(
    ("payload", "provider", "message", "kind"),
    [
        (OPENAI_ERROR, "openai", "The server had an error", "api_error"),
        (ANTHROPIC_ERROR, "anthropic", "Overloaded", "overloaded"),
    ],
    ids=["openai", "anthropic"],
)
def test_in_band_error_raises_after_the_deltas_before_it(
    payload: bytes, provider: str, message: str, kind: str
) -> None:
    with serve(BodyApp(payload)) as url:
        seen: list[Any] = []
        with pytest.raises(StreamError) as info, stream_chat(url) as stream:
            for delta in stream:
                seen.append(delta)
    assert TextDelta("Hello") in seen
    assert stream.message.text == "Hello"
    err = info.value
    assert (err.provider, err.message, err.type) == (provider, message, kind)


async def test_in_band_error_async() -> None:
    with serve(BodyApp(ANTHROPIC_ERROR)) as url, pytest.raises(StreamError) as info:
        async with astream_chat(url, protocol="anthropic") as stream:
            async for _ in stream:
                pass
    assert info.value.message == "Overloaded"


def test_anthropic_stream_cut_off_is_an_error() -> None:
    cut = ANTHROPIC_ERROR.rsplit(b"event: error", 1)[0]
    with serve(BodyApp(cut)) as url, pytest.raises(StreamError) as info:
        list(stream_chat(url))
    assert info.value.type == "network"


def test_connection_dropped_mid_stream_is_a_network_error() -> None:
    async def dropper(scope: Any, receive: Any, send: Any) -> None:
        await read_request(scope, receive)
        await start(send)
        await body(send, _chunk({"content": "par"}) + b'data: {"id":')
        # returns with the body unfinished: the connection is cut

    with serve(dropper) as url, pytest.raises(StreamError) as info, stream_chat(url) as stream:
        list(stream)
    assert info.value.type == "network"
    assert stream.message.text == "par"


def test_reading_stops_at_done() -> None:
    """After [DONE] the helper is finished even though the server keeps the
    connection open."""
    payload = _chunk({"content": "x"}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    with serve(BodyApp(payload, hold=True)) as url:
        deltas = list(stream_chat(url))
    assert deltas[-1] == FinishDelta("stop", "stop")


async def test_reading_stops_at_done_async() -> None:
    payload = _chunk({"content": "x"}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    with serve(BodyApp(payload, hold=True)) as url:
        deltas = [d async for d in astream_chat(url)]
    assert deltas[-1] == FinishDelta("stop", "stop")


class ResumableChat:
    """OpenAI chunks with ids; the first connection is cut after three of them; a
    request with Last-Event-ID resumes after it."""

    def __init__(self) -> None:
        self.words = [f"w{i} " for i in range(8)]
        self.seen: list[Seen] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        req = await read_request(scope, receive)
        self.seen.append(req)
        after = int(req.headers.get("last-event-id", "-1"))
        await start(send)
        await body(send, b"retry: 10\n\n")
        for i, word in enumerate(self.words):
            if i <= after:
                continue
            await body(send, f"id: {i}\n".encode() + _chunk({"content": word}))
            if after < 0 and i == 2:
                return  # cut
        await body(send, _chunk({}, "stop") + b"data: [DONE]\n\n", more=False)


def test_stream_chat_resumes_with_last_event_id_when_asked() -> None:
    app = ResumableChat()
    with serve(app) as url:
        stream = stream_chat(url, json={"q": 1}, reconnect=True, backoff=Backoff(initial=0.01))
        texts = [d.text for d in stream if isinstance(d, TextDelta)]
    assert texts == app.words
    assert stream.message.text == "".join(app.words)
    assert [s.headers.get("last-event-id") for s in app.seen] == [None, "2"]
    assert [s.body for s in app.seen] == [b'{"q":1}', b'{"q":1}']


async def test_astream_chat_resumes_with_last_event_id_when_asked() -> None:
    app = ResumableChat()
    with serve(app) as url:
        stream = astream_chat(url, json={"q": 1}, reconnect=True, backoff=Backoff(initial=0.01))
        texts = [d.text async for d in stream if isinstance(d, TextDelta)]
    assert texts == app.words


def test_stream_chat_on_response_objects() -> None:
    payload = _chunk({"content": "hi"}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    with serve(BodyApp(payload)) as url:
        for client in (httpx2.Client(), httpx.Client()):
            with client, client.stream("POST", url) as response:
                stream = stream_chat(response)  # type: ignore[arg-type]
                assert [d for d in stream if isinstance(d, TextDelta)] == [TextDelta("hi")]
                assert stream.message.finish_reason == "stop"
                assert stream.response is response


async def test_astream_chat_on_response_objects() -> None:
    payload = _chunk({"content": "hi"}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    with serve(BodyApp(payload)) as url:
        for client in (httpx2.AsyncClient(), httpx.AsyncClient()):
            async with client, client.stream("POST", url) as response:
                stream = astream_chat(response)  # type: ignore[arg-type]
                async with stream:
                    assert [d async for d in stream if isinstance(d, TextDelta)] == [
                        TextDelta("hi")
                    ]
                assert stream.message.text == "hi"


def test_stream_chat_is_lazy_and_closes_on_exit() -> None:
    app = BodyApp(_chunk({"content": "x"}) + _chunk({}, "stop"), hold=True)
    with serve(app) as url:
        stream = stream_chat(url)
        assert app.seen == []  # nothing sent before iteration
        with stream:
            assert next(stream) == MessageStart(id="c", model="m")
        assert stream.response is None
        assert list(stream) == []  # closed: iteration is over
    assert len(app.seen) == 1


async def test_astream_chat_idle_timeout() -> None:
    app = BodyApp(_chunk({"content": "x"}), hold=True)  # then silence
    with serve(app) as url:
        with pytest.raises(StreamError) as info:
            async for _ in astream_chat(url, idle_timeout=0.3):
                pass
        await asyncio.sleep(0)
    assert info.value.type == "timeout"
