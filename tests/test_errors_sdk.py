"""End to end: our error events and error responses, served by a real uvicorn server,
as the official openai/anthropic SDKs and an httpx2 client see them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.conftest import serve
from tokenwire.errors import ERROR_TYPES, Protocol, ProviderError, StreamError
from tokenwire.sse import SSEDecoder

pytestmark = pytest.mark.integration

ALL_TYPES = sorted(ERROR_TYPES)

OPENAI_CHUNK = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}
        ],
    }
)
ANTHROPIC_START = orjson.dumps(
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

# The error to send is chosen by the request's `model`: "<mode>:<category>[:<message>]",
# mode "stream" (in-band after a first event) or "http" (an error response up front).
MESSAGE = 'quotes " and \\ and\ncontrol \x01 chars'


def error_for(model: str) -> tuple[str, StreamError]:
    mode, category, *rest = model.split(":", 2)
    message = rest[0] if rest else MESSAGE
    retry_after = 1.5 if category == "rate_limit" else None
    return mode, StreamError(category, message, retry_after=retry_after)  # type: ignore[arg-type]


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    request = orjson.loads(await read_body(receive))
    protocol: Protocol = "anthropic" if scope["path"] == "/v1/messages" else "openai"
    mode, err = error_for(request["model"])
    if mode == "http":
        headers = [(k.encode(), v.encode()) for k, v in err.response_headers()]
        await send(
            {"type": "http.response.start", "status": err.http_status(protocol), "headers": headers}
        )
        await send({"type": "http.response.body", "body": err.to_response_body(protocol)})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    if protocol == "openai":
        first = b"data: " + OPENAI_CHUNK + b"\n\n"
    else:
        first = b"event: message_start\ndata: " + ANTHROPIC_START + b"\n\n"
    await send({"type": "http.response.body", "body": first, "more_body": True})
    await send({"type": "http.response.body", "body": err.to_sse_event(protocol)})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(app) as base:
        yield base


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)


def anthropic_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)


OPENAI_TYPE = {
    "timeout": "server_error",
    "cancelled": "server_error",
    "network": "server_error",
    "rate_limit": "requests",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "overloaded": "server_error",
    "api_error": "server_error",
}
ANTHROPIC_TYPE = {
    "timeout": "timeout_error",
    "cancelled": "api_error",
    "network": "api_error",
    "rate_limit": "rate_limit_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "overloaded": "overloaded_error",
    "api_error": "api_error",
}


@pytest.mark.parametrize("category", ALL_TYPES)
async def test_openai_sdk_raises_our_in_band_error_event(url: str, category: str) -> None:
    async with openai_client(url) as client:
        stream = await client.chat.completions.create(
            model=f"stream:{category}", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                chunks.append(chunk)
    assert [c.choices[0].delta.content for c in chunks] == ["Hi"]
    exc = info.value
    assert type(exc) is openai.APIError
    assert exc.message == MESSAGE
    assert exc.type == OPENAI_TYPE[category]
    assert (
        exc.body
        == orjson.loads(StreamError(category, MESSAGE).to_response_body("openai"))[  # type: ignore[arg-type]
            "error"
        ]
    )
    # ...and categorizing the SDK's exception gives our category back.
    assert StreamError.from_exception(exc).type == category


@pytest.mark.parametrize("category", ALL_TYPES)
async def test_anthropic_sdk_raises_our_in_band_error_event(url: str, category: str) -> None:
    async with anthropic_client(url) as client:
        stream = await client.messages.create(
            model=f"stream:{category}",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        events = []
        with pytest.raises(anthropic.APIStatusError) as info:
            async for event in stream:
                events.append(event.type)
    assert events == ["message_start"]
    exc = info.value
    assert exc.status_code == 200  # the SDK reports in-band errors with the stream's status
    assert exc.type == ANTHROPIC_TYPE[category]
    assert exc.api_message == MESSAGE
    assert exc.body == {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPE[category], "message": MESSAGE},
    }
    expected = "api_error" if category in ("cancelled", "network") else category
    assert StreamError.from_exception(exc).type == expected


async def test_anthropic_message_stream_helper_raises_too(url: str) -> None:
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(
                model="stream:overloaded",
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
            ) as stream:
                await stream.get_final_message()
    assert info.value.type == "overloaded_error"


OPENAI_CLASS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
}
ANTHROPIC_CLASS = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    429: anthropic.RateLimitError,
    499: anthropic.ClientClosedRequestError,
    500: anthropic.InternalServerError,
    502: anthropic.InternalServerError,
    503: anthropic.ServiceUnavailableError,
    504: anthropic.GatewayTimeoutError,
    529: anthropic.OverloadedError,
}


@pytest.mark.parametrize("category", ALL_TYPES)
async def test_openai_sdk_maps_our_error_response(url: str, category: str) -> None:
    err = StreamError(category, "m")  # type: ignore[arg-type]
    status = err.http_status("openai")
    async with openai_client(url) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=f"http:{category}", messages=[{"role": "user", "content": "hi"}], stream=True
            )
    exc = info.value
    assert exc.status_code == status
    expected_class = OPENAI_CLASS.get(status, openai.InternalServerError)
    if status == 499:
        expected_class = openai.APIStatusError
    assert type(exc) is expected_class
    assert exc.type == OPENAI_TYPE[category]
    back = StreamError.from_exception(exc)
    assert back.type == category
    if category == "rate_limit":
        assert exc.response.headers["retry-after"] == "2"
        assert back.retry_after == 1.5  # from retry-after-ms


@pytest.mark.parametrize("category", ALL_TYPES)
async def test_anthropic_sdk_maps_our_error_response(url: str, category: str) -> None:
    err = StreamError(category, "m")  # type: ignore[arg-type]
    status = err.http_status("anthropic")
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model=f"http:{category}",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )
    exc = info.value
    assert exc.status_code == status
    assert type(exc) is ANTHROPIC_CLASS[status]
    assert exc.type == ANTHROPIC_TYPE[category]
    # Anthropic has no type for a network failure, and 502 is an upstream api_error.
    expected = "api_error" if category == "network" else category
    assert StreamError.from_exception(exc).type == expected


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_httpx2_client_decodes_in_band_errors_into_provider_errors(
    url: str, protocol: str
) -> None:
    path = "/v1/messages" if protocol == "anthropic" else "/v1/chat/completions"
    decoder = SSEDecoder()
    events = []
    async with (
        httpx2.AsyncClient(base_url=url) as client,
        client.stream("POST", path, json={"model": "stream:rate_limit:slow down"}) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        async for chunk in response.aiter_bytes():
            events += decoder.feed(chunk)
    events += decoder.close()
    last = events[-1].json()
    assert "error" in last
    err = StreamError.from_provider_error(last, provider=protocol)
    assert isinstance(err, ProviderError)
    assert (err.type, err.message) == ("rate_limit", "slow down")
    assert err.provider_type == ("rate_limit_error" if protocol == "anthropic" else "requests")
