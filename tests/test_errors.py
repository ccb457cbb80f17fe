"""StreamError: categories, provider formats, HTTP mapping, categorization of exceptions."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.errors import (
    ERROR_TYPES,
    ClientDisconnected,
    ProviderError,
    StreamError,
    parse_retry_after,
)
from tokenwire.sse import SSEDecodeError, SSEDecoder

ALL_TYPES = sorted(ERROR_TYPES)


def decode_one(data: bytes) -> Any:
    decoder = SSEDecoder()
    events = decoder.feed(data) + decoder.close()
    assert len(events) == 1
    return events[0]


# -- construction ---------------------------------------------------------------------


def test_the_ten_categories_are_exactly_the_issue_list() -> None:
    assert set(ERROR_TYPES) == {
        "timeout",
        "cancelled",
        "network",
        "rate_limit",
        "authentication",
        "permission",
        "invalid_request",
        "not_found",
        "overloaded",
        "api_error",
    }


def test_unknown_type_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown StreamError type 'boom'"):
        StreamError("boom", "x")  # type: ignore[arg-type]


def test_fields_and_str() -> None:
    err = StreamError("rate_limit", "slow down", status=429, retry_after=2.5, provider="openai")
    assert (err.type, err.message, err.status, err.retry_after, err.provider) == (
        "rate_limit",
        "slow down",
        429,
        2.5,
        "openai",
    )
    assert str(err) == "slow down"
    assert "rate_limit" in repr(err) and "429" in repr(err)
    assert isinstance(err, Exception)


def test_lone_surrogates_are_replaced_and_pairs_kept() -> None:
    err = StreamError("api_error", "a\ud800b \U0001f600")
    assert err.message == "a\ufffdb \U0001f600"
    err.message.encode("utf-8")


def test_non_string_message_is_converted() -> None:
    assert StreamError("api_error", 42).message == "42"  # type: ignore[arg-type]


def test_to_dict_has_only_known_fields() -> None:
    assert StreamError("timeout", "t").to_dict() == {"type": "timeout", "message": "t"}
    err = StreamError.from_provider_error(
        {"message": "m", "type": "requests", "param": "p", "code": "rate_limit_exceeded"},
        provider="openai",
        status=429,
    )
    assert err.to_dict() == {
        "type": "rate_limit",
        "message": "m",
        "status": 429,
        "provider": "openai",
        "provider_type": "requests",
        "code": "rate_limit_exceeded",
        "param": "p",
    }
    orjson.dumps(err.to_dict())


def test_pickle_keeps_every_field() -> None:
    err = StreamError.from_provider_error(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        provider="anthropic",
        status=529,
        retry_after=3.0,
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ProviderError
    assert back.to_dict() == err.to_dict()
    assert back.body == err.body
    assert str(back) == "Overloaded"


@pytest.mark.parametrize(
    ("err", "retryable"),
    [
        (StreamError("rate_limit", "r"), True),
        (StreamError("rate_limit", "r", code="insufficient_quota"), False),
        (StreamError("overloaded", "o"), True),
        (StreamError("timeout", "t"), True),
        (StreamError("network", "n"), True),
        (StreamError("api_error", "a", status=500), True),
        (StreamError("invalid_request", "i"), False),
        (StreamError("authentication", "a"), False),
        (StreamError("cancelled", "c"), False),
    ],
)
def test_retryable(err: StreamError, retryable: bool) -> None:
    assert err.retryable is retryable


# -- SSE events -----------------------------------------------------------------------


def test_generic_event_is_the_seed_format() -> None:
    assert StreamError("timeout", "Stream timed out").to_sse_event() == (
        b'event: error\ndata: {"type":"timeout","message":"Stream timed out"}\n\n'
    )


def test_generic_event_carries_retry_after_when_known() -> None:
    event = decode_one(StreamError("rate_limit", "r", retry_after=1.5).to_sse_event("generic"))
    assert event.json() == {"type": "rate_limit", "message": "r", "retry_after": 1.5}


def test_openai_event_shape() -> None:
    assert StreamError("api_error", "boom").to_sse_event("openai") == (
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    )


def test_anthropic_event_shape() -> None:
    assert StreamError("rate_limit", "slow").to_sse_event("anthropic") == (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"rate_limit_error","message":"slow"}}\n\n'
    )


OPENAI_TYPES = {
    "timeout": ("server_error", "timeout"),
    "cancelled": ("server_error", "cancelled"),
    "network": ("server_error", "network_error"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "authentication": ("authentication_error", None),
    "permission": ("permission_error", None),
    "invalid_request": ("invalid_request_error", None),
    "not_found": ("not_found_error", None),
    "overloaded": ("server_error", "overloaded"),
    "api_error": ("server_error", None),
}
ANTHROPIC_TYPES = {
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
def test_provider_type_names(category: Any) -> None:
    err = StreamError(category, "m")
    openai_error = decode_one(err.to_sse_event("openai")).json()["error"]
    assert (openai_error["type"], openai_error["code"]) == OPENAI_TYPES[category]
    anthropic_event = decode_one(err.to_sse_event("anthropic"))
    assert anthropic_event.event == "error"
    assert anthropic_event.json()["error"]["type"] == ANTHROPIC_TYPES[category]


@pytest.mark.parametrize("category", ALL_TYPES)
@pytest.mark.parametrize("protocol", ["generic", "openai"])
def test_category_round_trips_through_our_own_events(category: Any, protocol: Any) -> None:
    err = StreamError(category, "m")
    data = decode_one(err.to_sse_event(protocol)).json()
    assert StreamError.from_provider_error(data, provider=protocol).type == category


@pytest.mark.parametrize("category", ALL_TYPES)
def test_anthropic_round_trip_keeps_what_anthropic_can_say(category: Any) -> None:
    data = decode_one(StreamError(category, "m").to_sse_event("anthropic")).json()
    back = StreamError.from_provider_error(data, provider="anthropic").type
    assert back == ("api_error" if category in ("cancelled", "network") else category)


def test_provider_error_keeps_its_own_type_in_its_own_protocol() -> None:
    err = StreamError.from_provider_error(
        {
            "message": "quota",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        },
        provider="openai",
    )
    assert err.type == "rate_limit"
    body = decode_one(err.to_sse_event("openai")).json()["error"]
    assert body == {
        "message": "quota",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    # Rendered for the other provider, it uses that provider's name for the category.
    assert decode_one(err.to_sse_event("anthropic")).json()["error"]["type"] == "rate_limit_error"


def test_unknown_protocol_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'grpc'"):
        StreamError("timeout", "t").to_sse_event("grpc")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    message=st.text(),
    category=st.sampled_from(ALL_TYPES),
    protocol=st.sampled_from(["generic", "openai", "anthropic"]),
    code=st.none() | st.text(max_size=20),
)
def test_any_message_gives_one_parseable_event_and_valid_json(
    message: str, category: Any, protocol: Any, code: str | None
) -> None:
    err = StreamError(category, message, code=code)
    raw = err.to_sse_event(protocol)
    event = decode_one(raw)
    assert event.event == ("message" if protocol == "openai" else "error")
    data = json.loads(event.data)  # the stdlib parser agrees with orjson
    assert data == orjson.loads(event.data)
    expected = message.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    inner = data if protocol == "generic" else data["error"]
    assert inner["message"] == expected
    # The same holds for the HTTP body.
    assert json.loads(err.to_response_body(protocol)) == data


# -- provider error objects ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "category"),
    [
        # OpenAI
        (
            {
                "message": "Incorrect API key",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            },
            401,
            "authentication",
        ),
        (
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            429,
            "rate_limit",
        ),
        (
            {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"},
            429,
            "rate_limit",
        ),
        (
            {"message": "model", "type": "invalid_request_error", "code": "model_not_found"},
            404,
            "not_found",
        ),
        (
            {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            400,
            "invalid_request",
        ),
        (
            {
                "message": "The server had an error",
                "type": "server_error",
                "param": None,
                "code": None,
            },
            None,
            "api_error",
        ),
        (
            {"error": {"message": "wrapped", "type": "requests", "code": "rate_limit_exceeded"}},
            None,
            "rate_limit",
        ),
        # Anthropic
        ({"type": "overloaded_error", "message": "Overloaded"}, None, "overloaded"),
        (
            {
                "type": "error",
                "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"},
            },
            None,
            "overloaded",
        ),
        (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "r"}},
            429,
            "rate_limit",
        ),
        (
            {"type": "error", "error": {"type": "authentication_error", "message": "key"}},
            None,
            "authentication",
        ),
        (
            {"type": "error", "error": {"type": "permission_error", "message": "no"}},
            None,
            "permission",
        ),
        (
            {"type": "error", "error": {"type": "not_found_error", "message": "no"}},
            None,
            "not_found",
        ),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            None,
            "invalid_request",
        ),
        ({"type": "error", "error": {"type": "timeout_error", "message": "slow"}}, None, "timeout"),
        ({"type": "error", "error": {"type": "api_error", "message": "oops"}}, None, "api_error"),
        (
            {"type": "error", "error": {"type": "billing_error", "message": "pay"}},
            None,
            "permission",
        ),
        # Other servers
        (
            {"is_bifrost_error": False, "status_code": 429, "error": {"type": "x", "message": "m"}},
            None,
            "rate_limit",
        ),
        (
            {"error": {"message": "m", "type": "None", "param": None, "code": "500"}},
            None,
            "api_error",
        ),
        ({"error": {"message": "m", "type": "None", "code": "503"}}, None, "overloaded"),
        ({"error": "plain text: rate limit hit"}, None, "rate_limit"),
        (
            {"object": "error", "message": "model overloaded", "type": "BadRequestError"},
            None,
            "overloaded",
        ),
        ({}, None, "api_error"),
        ({"message": 5, "type": None, "code": {"x": 1}}, 503, "overloaded"),
    ],
)
def test_from_provider_error(error: dict[str, Any], status: int | None, category: str) -> None:
    err = StreamError.from_provider_error(error, provider="p", status=status)
    assert isinstance(err, ProviderError)
    assert err.type == category
    assert err.provider == "p"
    assert err.body == error
    assert err.message  # never empty


def test_from_provider_error_reads_the_fields() -> None:
    err = StreamError.from_provider_error(
        {"error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": 7}},
        provider="openai",
        status=400,
        retry_after=1.0,
    )
    assert (err.message, err.provider_type, err.param, err.code, err.status, err.retry_after) == (
        "bad",
        "invalid_request_error",
        "model",
        "7",
        400,
        1.0,
    )


# -- HTTP status mapping and responses --------------------------------------------


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, "invalid_request"),
        (401, "authentication"),
        (402, "permission"),
        (403, "permission"),
        (404, "not_found"),
        (408, "timeout"),
        (409, "invalid_request"),
        (413, "invalid_request"),
        (422, "invalid_request"),
        (429, "rate_limit"),
        (499, "cancelled"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded"),
        (504, "timeout"),
        (529, "overloaded"),
    ],
)
def test_status_categories(status: int, category: str) -> None:
    err = StreamError.from_http_response(status, b"")
    assert err.type == category
    assert err.status == status
    assert err.http_status() == status  # an upstream error status is kept


def test_413_has_its_own_message() -> None:
    assert "too large" in StreamError.from_http_response(413, None).message


def test_text_body_is_kept_in_the_message() -> None:
    err = StreamError.from_http_response(503, b"upstream connect error\n")
    assert err.type == "overloaded"
    assert err.message == "HTTP 503: upstream connect error"


def test_http_response_with_provider_json_bodies() -> None:
    openai_err = StreamError.from_http_response(
        401,
        orjson.dumps(
            {
                "error": {
                    "message": "Incorrect API key",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        ),
        {"content-type": "application/json"},
    )
    assert isinstance(openai_err, ProviderError)
    assert (openai_err.type, openai_err.provider, openai_err.code) == (
        "authentication",
        "openai",
        "invalid_api_key",
    )
    anthropic_err = StreamError.from_http_response(
        529, '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    )
    assert (anthropic_err.type, anthropic_err.provider, anthropic_err.message) == (
        "overloaded",
        "anthropic",
        "Overloaded",
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert StreamError.from_http_response(429, b"", headers).retry_after == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00") is None  # no zone: not an HTTP-date
    assert parse_retry_after("inf") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("category", "protocol", "status"),
    [
        ("invalid_request", "openai", 400),
        ("authentication", "generic", 401),
        ("permission", "anthropic", 403),
        ("not_found", "openai", 404),
        ("rate_limit", "openai", 429),
        ("timeout", "openai", 504),
        ("cancelled", "generic", 499),
        ("network", "openai", 502),
        ("overloaded", "anthropic", 529),
        ("overloaded", "openai", 503),
        ("api_error", "anthropic", 500),
    ],
)
def test_http_status_without_upstream_status(category: Any, protocol: Any, status: int) -> None:
    assert StreamError(category, "m").http_status(protocol) == status


def test_in_band_status_200_is_not_an_http_status() -> None:
    assert StreamError("overloaded", "m", status=200).http_status("anthropic") == 529


def test_response_headers_and_bodies() -> None:
    err = StreamError("rate_limit", "slow", retry_after=1.2)
    assert err.response_headers() == [
        ("content-type", "application/json"),
        ("retry-after", "2"),
        ("retry-after-ms", "1200"),
    ]
    assert StreamError("timeout", "t").response_headers() == [("content-type", "application/json")]
    assert orjson.loads(err.to_response_body("openai")) == {
        "error": {
            "message": "slow",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert orjson.loads(err.to_response_body("anthropic")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow"},
    }
    assert orjson.loads(err.to_response_body()) == {
        "type": "rate_limit",
        "message": "slow",
        "retry_after": 1.2,
    }


# -- from_exception ---------------------------------------------------------------


def test_stream_error_is_returned_as_is() -> None:
    err = StreamError("network", "n")
    assert StreamError.from_exception(err) is err


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (TimeoutError(), "timeout"),
        (TimeoutError("slow"), "timeout"),
        (asyncio.CancelledError(), "cancelled"),
        (ClientDisconnected(), "cancelled"),
        (ConnectionResetError(104, "Connection reset by peer"), "network"),
        (ConnectionRefusedError(111, "refused"), "network"),
        (BrokenPipeError(), "network"),
        (OSError("weird"), "network"),
        (SSEDecodeError("event larger than 16 bytes"), "api_error"),
        (RuntimeError("429 Too Many Requests"), "rate_limit"),
        (RuntimeError("Rate limit exceeded"), "rate_limit"),
        (RuntimeError("The model is overloaded"), "overloaded"),
        (RuntimeError("connection timed out"), "timeout"),
        (RuntimeError("unexpected EOF"), "network"),
        (RuntimeError("401 Unauthorized"), "authentication"),
        (RuntimeError("weird"), "api_error"),
        (ValueError(), "api_error"),
    ],
)
def test_from_exception_basic(exc: BaseException, category: str) -> None:
    err = StreamError.from_exception(exc)
    assert err.type == category
    assert err.message


def test_type_and_data_beat_message_text() -> None:
    # The text says "rate limit", the type says timeout: the type wins.
    assert StreamError.from_exception(TimeoutError("rate limit")).type == "timeout"
    assert StreamError.from_exception(ConnectionError("rate limit")).type == "network"


def test_status_code_attribute_is_used() -> None:
    class Upstream(Exception):
        status_code = 529
        headers = {"retry-after": "4"}  # noqa: RUF012

    err = StreamError.from_exception(Upstream("nope"))
    assert (err.type, err.status, err.retry_after) == ("overloaded", 529, 4.0)


def test_explicit_cause_is_followed_before_text() -> None:
    try:
        try:
            raise httpx2.ReadTimeout("read timed out")
        except httpx2.ReadTimeout as inner:
            raise RuntimeError("upstream failed: connection problem") from inner
    except RuntimeError as outer:
        err = StreamError.from_exception(outer)
    assert err.type == "timeout"
    assert err.message.startswith("upstream failed")


REQUEST2 = httpx2.Request("POST", "http://upstream/v1/chat/completions")
REQUEST1 = httpx.Request("POST", "http://upstream/v1/chat/completions")


@pytest.mark.parametrize("mod", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("ConnectTimeout", "timeout"),
        ("ReadTimeout", "timeout"),
        ("WriteTimeout", "timeout"),
        ("PoolTimeout", "timeout"),
        ("ConnectError", "network"),
        ("ReadError", "network"),
        ("WriteError", "network"),
        ("RemoteProtocolError", "network"),
        ("LocalProtocolError", "network"),
        ("ProxyError", "network"),
        ("NetworkError", "network"),
    ],
)
def test_httpx_transport_errors(mod: Any, name: str, category: str) -> None:
    request = REQUEST1 if mod is httpx else REQUEST2
    exc = getattr(mod, name)("", request=request)
    err = StreamError.from_exception(exc)
    assert err.type == category
    assert name in err.message


@pytest.mark.parametrize("mod", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_httpx_status_error_with_read_body(mod: Any) -> None:
    request = REQUEST1 if mod is httpx else REQUEST2
    response = mod.Response(
        429,
        headers={"retry-after": "7", "content-type": "application/json"},
        content=orjson.dumps(
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            }
        ),
        request=request,
    )
    exc = mod.HTTPStatusError("429", request=request, response=response)
    err = StreamError.from_exception(exc)
    assert isinstance(err, ProviderError)
    assert (err.type, err.status, err.retry_after, err.code, err.message) == (
        "rate_limit",
        429,
        7.0,
        "rate_limit_exceeded",
        "Rate limit reached",
    )


async def test_httpx2_status_error_with_unread_streamed_body() -> None:
    async def stream() -> Any:
        yield b"never read"

    response = httpx2.Response(503, content=stream(), request=REQUEST2)
    exc = httpx2.HTTPStatusError("503", request=REQUEST2, response=response)
    err = StreamError.from_exception(exc)
    assert (err.type, err.status) == ("overloaded", 503)


def sdk_response(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, content=body, request=REQUEST2)


def test_openai_sdk_exceptions() -> None:
    body = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
    exc = openai.RateLimitError(
        "Error code: 429", response=sdk_response(429, b"", {"retry-after-ms": "250"}), body=body
    )
    err = StreamError.from_exception(exc)
    assert (err.type, err.status, err.retry_after, err.provider, err.message) == (
        "rate_limit",
        429,
        0.25,
        "openai",
        "Rate limit reached",
    )
    assert StreamError.from_exception(openai.APITimeoutError(REQUEST2)).type == "timeout"
    assert StreamError.from_exception(openai.APIConnectionError(request=REQUEST2)).type == "network"
    # An in-band stream error: APIError with the error object as body, no status.
    in_band = openai.APIError("boom", REQUEST2, body={"message": "boom", "type": "server_error"})
    err = StreamError.from_exception(in_band)
    assert (err.type, err.status, err.message) == ("api_error", None, "boom")
    # A body that is not JSON.
    text = openai.InternalServerError(
        "Error code: 502", response=sdk_response(502, b""), body="bad gateway"
    )
    assert StreamError.from_exception(text).type == "api_error"


def test_anthropic_sdk_exceptions() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    exc = anthropic.APIStatusError("x", response=sdk_response(529, b""), body=body)
    err = StreamError.from_exception(exc)
    assert (err.type, err.status, err.provider, err.provider_type) == (
        "overloaded",
        529,
        "anthropic",
        "overloaded_error",
    )
    # The SDK raises in-band error events as APIStatusError with the 200 response.
    in_band = anthropic.APIStatusError(
        "x",
        response=sdk_response(200, b""),
        body={"type": "error", "error": {"type": "rate_limit_error", "message": "r"}},
    )
    err = StreamError.from_exception(in_band)
    assert (err.type, err.status) == ("rate_limit", None)
    assert StreamError.from_exception(anthropic.APITimeoutError(REQUEST2)).type == "timeout"
    try:
        try:
            raise httpx2.ReadTimeout("t", request=REQUEST2)
        except httpx2.ReadTimeout as cause:
            raise anthropic.APIConnectionError(request=REQUEST2) from cause
    except anthropic.APIConnectionError as wrapped:
        assert StreamError.from_exception(wrapped).type == "timeout"


def test_the_sdks_and_http_clients_are_never_imported() -> None:
    code = (
        "import sys, tokenwire.errors, tokenwire.control\n"
        "e = tokenwire.errors.StreamError.from_exception(RuntimeError('x'))\n"
        "print(sorted(m for m in ('openai', 'anthropic', 'httpx', 'httpx2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
