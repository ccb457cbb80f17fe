"""Stream errors: one exception type with categories, rendered in each wire protocol.

:class:`StreamError` is what every tokenwire component raises for a failed stream and
what every server sends for one. Its ``type`` is one of ten categories (``timeout``,
``cancelled``, ``network``, ``rate_limit``, ``authentication``, ``permission``,
``invalid_request``, ``not_found``, ``overloaded``, ``api_error``).

- :meth:`StreamError.from_exception` sorts any exception into a category from its type
  and data (asyncio, httpx/httpx2, HTTP status, ``Retry-After``, OpenAI/Anthropic error
  bodies, the official SDKs' exceptions) and falls back to the message text only last.
- :meth:`StreamError.from_provider_error` reads an OpenAI or Anthropic error object and
  returns a :class:`ProviderError` that keeps the provider's own type, code and body.
- :meth:`StreamError.to_sse_event` renders an in-band SSE error event (generic, OpenAI
  or Anthropic shape, with each provider's type names); :meth:`StreamError.http_status`,
  :meth:`StreamError.response_headers` and :meth:`StreamError.to_response_body` render
  the same error as an HTTP error response, for failures before the first byte.

All JSON is produced by orjson, so any message text (quotes, control characters,
newlines) gives valid JSON and a single-line SSE ``data:`` field. Lone surrogates, which
UTF-8 cannot carry, are replaced by U+FFFD when the error is created.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import sys
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args

import orjson

from tokenwire.sse import SSEDecodeError

if TYPE_CHECKING:
    from tokenwire.llm.protocol import WireProtocol

__all__ = [
    "ERROR_TYPES",
    "ClientDisconnected",
    "DropConnection",
    "ErrorType",
    "Protocol",
    "ProviderError",
    "StreamError",
    "parse_retry_after",
    "public_error",
    "retry_after_from_headers",
]

logger = logging.getLogger("tokenwire.errors")

ErrorType: TypeAlias = Literal[
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
]
Protocol: TypeAlias = str
"""``"generic"`` (tokenwire's own shape, for browsers) or a registered wire protocol's
name (:mod:`tokenwire.llm.protocol`: ``"openai"``, ``"anthropic"``, ...)."""

ERROR_TYPES: frozenset[str] = frozenset(get_args(ErrorType))
"""Every valid :attr:`StreamError.type`."""


# Category -> HTTP status when the error carries no upstream status of its own.
_DEFAULT_STATUS: dict[str, int] = {
    "timeout": 504,
    "cancelled": 499,
    "network": 502,
    "rate_limit": 429,
    "authentication": 401,
    "permission": 403,
    "invalid_request": 400,
    "not_found": 404,
    "overloaded": 503,
    "api_error": 500,
}

# Provider error `type` values (OpenAI, Anthropic, common OpenAI-compatible servers, and
# our own category names) -> category.
_TYPE_CATEGORY: dict[str, ErrorType] = {
    "invalid_request_error": "invalid_request",
    "request_too_large": "invalid_request",
    "authentication_error": "authentication",
    "invalid_authentication": "authentication",
    "permission_error": "permission",
    "permission_denied": "permission",
    "billing_error": "permission",
    "not_found_error": "not_found",
    "not_found": "not_found",
    "rate_limit_error": "rate_limit",
    "rate_limit_exceeded": "rate_limit",
    "rate_limited": "rate_limit",
    "requests": "rate_limit",
    "tokens": "rate_limit",
    "insufficient_quota": "rate_limit",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
    "api_error": "api_error",
    "server_error": "api_error",
    "internal_error": "api_error",
}
# Our own category names, as sent by the generic protocol.
_TYPE_CATEGORY.update({name: cast(ErrorType, name) for name in ERROR_TYPES})

# Provider error `code` values -> category. A code is the most specific datum there is
# (OpenAI sends type "invalid_request_error" for a bad API key, with code "invalid_api_key").
_CODE_CATEGORY: dict[str, ErrorType] = {
    "invalid_api_key": "authentication",
    "invalid_authentication": "authentication",
    "unsupported_country_region_territory": "permission",
    "model_not_found": "not_found",
    "context_length_exceeded": "invalid_request",
    "request_too_large": "invalid_request",
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "rate_limit",
    "overloaded": "overloaded",
    "server_overloaded": "overloaded",
    "timeout": "timeout",
    "cancelled": "cancelled",
    "network_error": "network",
    # set by tokenwire.control.guard to say which deadline expired
    "first_chunk_timeout": "timeout",
    "idle_timeout": "timeout",
}

# Last resort: message text, lower-cased, first match wins (timeouts before connections,
# so "connection timed out" is a timeout).
_TEXT_CATEGORY: tuple[tuple[str, ErrorType], ...] = (
    ("rate limit", "rate_limit"),
    ("too many requests", "rate_limit"),
    ("quota", "rate_limit"),
    ("overloaded", "overloaded"),
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("deadline exceeded", "timeout"),
    ("unauthorized", "authentication"),
    ("invalid api key", "authentication"),
    ("authentication", "authentication"),
    ("forbidden", "permission"),
    ("permission denied", "permission"),
    ("not found", "not_found"),
    ("cancelled", "cancelled"),
    ("canceled", "cancelled"),
    ("connection", "network"),
    ("network", "network"),
    ("reset by peer", "network"),
    ("broken pipe", "network"),
    ("eof", "network"),
)

_DEFAULT_MESSAGE: dict[str, str] = {
    "timeout": "The upstream timed out.",
    "cancelled": "The stream was cancelled.",
    "network": "A network error interrupted the upstream connection.",
    "rate_limit": "Rate limit exceeded.",
    "authentication": "Authentication failed.",
    "permission": "Permission denied.",
    "invalid_request": "Invalid request.",
    "not_found": "Not found.",
    "overloaded": "The upstream is overloaded.",
    "api_error": "The upstream failed.",
}

_MAX_CAUSE_DEPTH = 8
MAX_RETRY_AFTER = 86400.0
"""Seconds: a longer ``Retry-After`` from an upstream is taken as a day."""


class ClientDisconnected(Exception):
    """The client of a stream went away; the producer should stop.

    :meth:`StreamError.from_exception` sorts it as ``cancelled``.
    """


class DropConnection(Exception):
    """Raised by a stream's source to have the server drop the client's connection
    mid-stream, without ending the response (what a network cut looks like to the
    client). The demo model's ``cut@N`` fault raises it; :class:`EventStreamResponse
    <tokenwire.server.EventStreamResponse>` aborts the connection when it sees it.
    """


class StreamError(Exception):
    """A categorized streaming failure.

    ``type`` is one of :data:`ERROR_TYPES` (an unknown type raises ``ValueError``);
    ``message`` is human-readable text (lone surrogates are replaced by U+FFFD so it can
    always be encoded). Optional data: ``status`` (the upstream HTTP status, if any),
    ``retry_after`` (seconds, from ``Retry-After``), ``provider`` (``"openai"``,
    ``"anthropic"``, ...), the provider's own ``provider_type`` and ``param``, and a
    machine-readable ``code`` (the provider's, or the deadline that :func:`~tokenwire.guard`
    saw expire). Type, code and param are sent back unchanged when the error is rendered
    in the provider's own protocol.

    ``derived`` is true for an error :meth:`from_exception` made from another exception:
    its message is that exception's text, which servers do not show their clients
    (:func:`public_error`).
    """

    derived: bool = False
    #: Set on the error :func:`public_error` tells instead of a hidden one.
    reference: str | None = None

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        provider_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        if type not in ERROR_TYPES:
            raise ValueError(
                f"unknown StreamError type {type!r}; expected one of {sorted(ERROR_TYPES)}"
            )
        message = _clean_text(message)
        super().__init__(message)
        self.type: ErrorType = type
        self.message: str = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.provider_type = _clean_opt(provider_type)
        self.code = _clean_opt(code)
        self.param = _clean_opt(param)

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name in ("status", "retry_after", "provider", "provider_type", "code")
            if (value := getattr(self, name)) is not None
        )
        return f"{type(self).__name__}({self.type!r}, {self.message!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not in self.args; pickle the attributes instead.
        return (_rebuild, (type(self), self.__dict__.copy()))

    @property
    def retryable(self) -> bool:
        """Whether retrying the same request later may succeed (rate limits, overload,
        timeouts, network failures and upstream 5xx errors)."""
        if self.type in ("rate_limit", "overloaded", "timeout", "network"):
            return self.code != "insufficient_quota"
        return self.type == "api_error" and (self.status is None or self.status >= 500)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_exception(cls, exc: BaseException) -> StreamError:
        """Categorize any exception.

        By type and data first: a :class:`StreamError` is returned as is;
        :class:`ClientDisconnected` and ``asyncio.CancelledError`` are ``cancelled``;
        ``TimeoutError`` is ``timeout``; ``openai``/``anthropic`` SDK errors use their
        status, headers and body; httpx/httpx2 timeouts are ``timeout``, transport errors
        ``network``, and ``HTTPStatusError`` is read like an HTTP error response (status,
        ``Retry-After``, JSON error body, if the body was read); an exception with an
        HTTP status as ``code`` and its error body as ``details`` (google-genai) is read
        like an error response; an :class:`~tokenwire.sse.SSEDecodeError` is
        ``api_error`` (the upstream sent a bad stream); ``OSError`` is ``network``; any
        other exception with an integer ``status_code`` is sorted by that status. Then
        the explicit ``__cause__`` chain is tried, and only then the message text. What
        matches nothing is ``api_error``.
        Never raises.
        """
        err = _categorize(exc, 0)
        if err is not exc:
            err.derived = True
        return err

    @classmethod
    def from_provider_error(
        cls,
        error: Mapping[str, Any],
        *,
        provider: str | None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> ProviderError:
        """From a provider's error object.

        Accepts the inner object (OpenAI ``{"message","type","param","code"}``, Anthropic
        ``{"type":"overloaded_error","message"}``) or the whole payload around it
        (``{"error":{...}}``, ``{"type":"error","error":{...}}``). The category comes from
        the error ``code`` if it is a known one, else from an error ``status`` (>= 400),
        else from the provider ``type``, else from the message text, else ``api_error``.
        The provider's type, code, param and the object itself are kept on the returned
        :class:`ProviderError`. Missing or non-string fields are tolerated.
        """
        inner: Mapping[str, Any] = error
        nested = error.get("error")
        if isinstance(nested, Mapping):
            inner = nested
        message = _provider_message(error)
        ptype = inner.get("type")
        ptype = ptype if isinstance(ptype, str) and ptype != "error" else None
        raw_code = inner.get("code")
        code = None if raw_code is None or isinstance(raw_code, dict | list) else str(raw_code)
        param = inner.get("param")
        param = param if isinstance(param, str) else None
        if status is None:
            # Some gateways put the upstream status in the body (bifrost's `status_code`,
            # LiteLLM's numeric `code`).
            body_status = error.get("status_code")
            if isinstance(body_status, int) and not isinstance(body_status, bool):
                status = body_status
            elif code is not None and code.isdigit() and len(code) == 3:
                status = int(code)
        text = message or ""
        category = _category(ptype, code, status, text)
        return ProviderError(
            category,
            text or _DEFAULT_MESSAGE[category],
            status=status,
            retry_after=retry_after,
            provider=provider,
            provider_type=ptype,
            code=code,
            param=param,
            body=dict(error),
        )

    @classmethod
    def from_http_response(
        cls,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        provider: str | None = None,
    ) -> StreamError:
        """From an HTTP error response: its status, ``Retry-After`` (or OpenAI's
        ``retry-after-ms``) header and body (a JSON error object in either provider's
        shape, other JSON, plain text, or nothing). Returns a :class:`ProviderError` when
        the body holds a provider error object."""
        retry_after = retry_after_from_headers(headers) if headers is not None else None
        data: Any = body
        if isinstance(body, bytes | str):
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
                text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
                body_text = text.strip()[:500]
            else:
                body_text = ""
        else:
            body_text = ""
        if isinstance(data, Mapping) and (
            isinstance(data.get("error"), Mapping | str) or isinstance(data.get("message"), str)
        ):
            if provider is None and data.get("type") == "error":
                provider = "anthropic"
            elif provider is None and isinstance(data.get("error"), Mapping):
                provider = "openai"
            return cls.from_provider_error(
                data, provider=provider, status=status, retry_after=retry_after
            )
        category = _category(None, None, status, body_text)
        message = f"HTTP {status}: {body_text}" if body_text else _status_message(status, category)
        return cls(category, message, status=status, retry_after=retry_after, provider=provider)

    # -- rendering --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for logs: ``type`` and ``message`` always, then whichever of
        ``status``, ``retry_after``, ``provider``, ``provider_type``, ``code``, ``param``
        are set."""
        out: dict[str, Any] = {"type": self.type, "message": self.message}
        for name in ("status", "retry_after", "provider", "provider_type", "code", "param"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def error_object(self, protocol: Protocol = "generic") -> dict[str, Any]:
        """The error as a JSON-ready object in ``protocol``'s shape: the payload of both
        :meth:`to_sse_event` and :meth:`to_response_body`. ``"generic"`` is
        ``{"type", "message"}`` (plus ``retry_after``); a wire protocol's shape comes
        from its :class:`~tokenwire.llm.protocol.WireProtocol`. Raises ``ValueError`` for
        an unknown protocol."""
        if protocol == "generic":
            out: dict[str, Any] = {"type": self.type, "message": self.message}
            if self.retry_after is not None:
                out["retry_after"] = self.retry_after
            return out
        return _protocol(protocol).error_object(self)

    def to_sse_event(self, protocol: Protocol = "generic") -> bytes:
        """The error as one complete SSE event (bytes, ending in a blank line) that the
        protocol's clients raise on.

        - ``"generic"``: ``event: error`` + ``data: {"type":...,"message":...}`` (plus
          ``retry_after`` when known).
        - ``"openai"``: ``data: {"error":{"message","type","param","code"}}`` with no
          ``event:`` line, which the ``openai`` SDK raises as ``APIError``.
        - ``"anthropic"``: ``event: error`` + ``data: {"type":"error","error":{"type",
          "message"}}``, which the ``anthropic`` SDK raises as ``APIStatusError``.
        - any other registered protocol: its own error event.

        Provider type names are used (``rate_limit_error``, ``overloaded_error``, ...);
        an error that came from the same provider keeps its original type and code.
        Raises ``ValueError`` for an unknown protocol.
        """
        if protocol == "generic":
            return b"event: error\ndata: " + orjson.dumps(self.error_object()) + b"\n\n"
        return _protocol(protocol).error_event(self)

    def http_status(self, protocol: Protocol = "generic") -> int:
        """The HTTP status for answering with this error before any byte was sent: the
        upstream's own error status when known (400-599), else the category's (400
        invalid_request, 401, 403, 404, 429, 504 timeout, 499 cancelled, 502 network,
        500 api_error; overloaded 529 for Anthropic clients, 503 otherwise)."""
        if protocol != "generic":
            return _protocol(protocol).http_status(self)
        if self.status is not None and 400 <= self.status <= 599:
            return self.status
        return _DEFAULT_STATUS[self.type]

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers for that HTTP error response: JSON content type, and ``Retry-After``
        (whole seconds, rounded up) plus ``retry-after-ms`` when ``retry_after`` is
        known (both SDKs read either)."""
        headers = [("content-type", "application/json")]
        if self.retry_after is not None and 0 <= self.retry_after <= MAX_RETRY_AFTER:
            headers.append(("retry-after", str(math.ceil(self.retry_after))))
            headers.append(("retry-after-ms", str(round(self.retry_after * 1000))))
        return headers

    def to_response_body(self, protocol: Protocol = "generic") -> bytes:
        """The JSON body of that HTTP error response in ``protocol``'s shape (OpenAI
        ``{"error":{...}}``, Anthropic ``{"type":"error","error":{...}}``, generic
        ``{"type","message"}``), which each SDK maps to its typed status error."""
        if protocol == "generic":
            return orjson.dumps(self.error_object())
        return _protocol(protocol).error_body(self)


def _protocol(name: str) -> WireProtocol:
    # Imported here: the protocol modules use this module.
    from tokenwire.llm.protocol import get_protocol

    try:
        return get_protocol(name)
    except ValueError:
        raise ValueError(
            f"unknown protocol {name!r}; expected generic or a wire protocol"
        ) from None


class ProviderError(StreamError):
    """A :class:`StreamError` reported by a provider, in band or as an HTTP error.

    Adds ``body``: the provider's error object as received (a dict). ``provider_type``,
    ``code`` and ``param`` hold the provider's own fields.
    """

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        provider_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            type,
            message,
            status=status,
            retry_after=retry_after,
            provider=provider,
            provider_type=provider_type,
            code=code,
            param=param,
        )
        self.body = body


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds (``"120"``, also a
    decimal) or an HTTP-date (relative to ``now``, a Unix time, default the current time;
    a date in the past gives ``0.0``). Returns ``None`` for a missing, negative or
    unparseable value, and at most a day (``MAX_RETRY_AFTER``) for a larger one."""
    if value is None:
        return None
    value = value.strip()[:100]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP-date is always GMT; anything else is not one
    wait = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, wait), MAX_RETRY_AFTER)


_PUBLIC_MESSAGE: dict[str, str] = {**_DEFAULT_MESSAGE, "api_error": "Internal server error."}


def public_error(exc: BaseException, *, expose: bool = False) -> StreamError:
    """What a server tells its client about ``exc``.

    A :class:`StreamError` raised as such is told as it is. Any other exception (or a
    StreamError :meth:`~StreamError.from_exception` derived from one) keeps its
    category, status and ``Retry-After``, but its text, which may hold internals
    (``RuntimeError: provider exploded``, hostnames, paths), is replaced by a generic
    message with a reference id; the exception is logged (``tokenwire.errors``, with its
    traceback) under the same id, so an operator can find it. ``expose=True`` tells the
    exception's own text instead (for development)."""
    err = exc if isinstance(exc, StreamError) else StreamError.from_exception(exc)
    if expose or not err.derived or err.type == "cancelled":
        return err
    reference = secrets.token_hex(6)
    original = exc.__cause__ if exc is err and exc.__cause__ is not None else exc
    logger.error(
        "error %s: %s (the client was told: %s)",
        reference,
        err.message,
        _PUBLIC_MESSAGE[err.type],
        exc_info=original,
    )
    told = StreamError(
        err.type,
        f"{_PUBLIC_MESSAGE[err.type]} (reference {reference})",
        status=err.status,
        retry_after=err.retry_after,
        code=err.code,
    )
    told.reference = reference
    return told


# -- internals ------------------------------------------------------------------------


def _rebuild(cls: type[StreamError], state: dict[str, Any]) -> StreamError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


def _clean_text(text: object) -> str:
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: keep valid pairs, replace the rest with U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else _clean_text(text)


def _provider_message(error: Mapping[str, Any]) -> str | None:
    nested = error.get("error")
    for message in (
        nested.get("message") if isinstance(nested, Mapping) else None,
        error.get("message"),
        nested,  # {"error": "text"}, as some servers send
    ):
        if isinstance(message, str) and message:
            return message
    return None


def _status_category(status: int) -> ErrorType | None:
    if status in (400, 413, 422):
        return "invalid_request"
    if status == 401:
        return "authentication"
    if status in (402, 403):
        return "permission"
    if status == 404:
        return "not_found"
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status == 499:
        return "cancelled"
    if status in (503, 529):
        return "overloaded"
    if 500 <= status <= 599:
        return "api_error"
    if 400 <= status <= 499:
        return "invalid_request"
    return None


def _status_message(status: int, category: ErrorType) -> str:
    if status == 413:
        return "HTTP 413: the request is too large."
    return f"HTTP {status}: {_DEFAULT_MESSAGE[category]}"


def _text_category(text: str) -> ErrorType | None:
    lowered = text.lower()
    for needle, category in _TEXT_CATEGORY:
        if needle in lowered:
            return category
    return None


def _category(ptype: str | None, code: str | None, status: int | None, text: str) -> ErrorType:
    if code is not None and (found := _CODE_CATEGORY.get(code)) is not None:
        return found
    if status is not None and (found := _status_category(status)) is not None:
        return found
    if ptype is not None and (found := _TYPE_CATEGORY.get(ptype)) is not None:
        return found
    return _text_category(text) or "api_error"


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from OpenAI's ``retry-after-ms`` or ``Retry-After`` (lower-case
    names, as HTTP clients' header mappings look them up); ``None`` if absent or
    unreadable, at most ``MAX_RETRY_AFTER``."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms[:100]) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(value) and value >= 0:
                return min(value, MAX_RETRY_AFTER)
    return parse_retry_after(headers.get("retry-after"))


def _describe(exc: BaseException, category: ErrorType) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else f"{_DEFAULT_MESSAGE[category]} ({name})"


def _read_body(response: Any) -> bytes | None:
    try:
        content = response.content  # raises if a streamed body was never read
    except Exception:
        return None
    return content if isinstance(content, bytes) else None


def _from_httpx(exc: BaseException, mod: Any) -> StreamError | None:
    if isinstance(exc, mod.HTTPStatusError):
        response = exc.response
        return StreamError.from_http_response(
            response.status_code, _read_body(response), response.headers
        )
    if isinstance(exc, mod.TimeoutException):
        return StreamError("timeout", _describe(exc, "timeout"))
    if isinstance(exc, mod.TransportError):
        return StreamError("network", _describe(exc, "network"))
    return None  # DecodingError, TooManyRedirects, ...: fall through


def _from_sdk(exc: BaseException, mod: Any, provider: str) -> StreamError | None:
    if isinstance(exc, mod.APITimeoutError):
        return StreamError("timeout", exc.message, provider=provider)
    if isinstance(exc, mod.APIConnectionError):
        cause = exc.__cause__
        if cause is not None:
            inner = _categorize(cause, 1)
            if inner.type in ("timeout", "cancelled"):
                return StreamError(inner.type, inner.message, provider=provider)
        return StreamError("network", exc.message, provider=provider)
    if not isinstance(exc, mod.APIError):
        return None
    body = exc.body
    status: int | None = None
    retry_after: float | None = None
    if isinstance(exc, mod.APIStatusError):
        # 200 means an in-band error event read by the anthropic SDK: no HTTP status.
        status = exc.status_code if exc.status_code >= 400 else None
        retry_after = retry_after_from_headers(exc.response.headers)
    if isinstance(body, Mapping):
        err: StreamError = StreamError.from_provider_error(
            body, provider=provider, status=status, retry_after=retry_after
        )
        if _provider_message(body) is None and exc.message:
            err = _copy_with_message(err, exc.message)
        return err
    if isinstance(body, str | bytes) or body is None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        category = _category(None, None, status, text or exc.message)
        return StreamError(
            category,
            exc.message or _DEFAULT_MESSAGE[category],
            status=status,
            retry_after=retry_after,
            provider=provider,
        )
    return None


def _categorize(exc: BaseException, depth: int) -> StreamError:
    if isinstance(exc, StreamError):
        return exc
    if isinstance(exc, ClientDisconnected):
        return StreamError("cancelled", str(exc) or "The client disconnected.")
    if isinstance(exc, asyncio.CancelledError):
        return StreamError("cancelled", str(exc) or _DEFAULT_MESSAGE["cancelled"])
    if isinstance(exc, TimeoutError):
        return StreamError("timeout", _describe(exc, "timeout"))
    # The SDKs and HTTP clients are looked up, never imported: if a module is not loaded,
    # no exception of its types can exist.
    for provider in ("openai", "anthropic"):
        mod = sys.modules.get(provider)
        if mod is not None and isinstance(exc, getattr(mod, "APIError", ())):
            found = _from_sdk(exc, mod, provider)
            if found is not None:
                return found
    for name in ("httpx2", "httpx"):
        mod = sys.modules.get(name)
        if mod is not None and isinstance(exc, getattr(mod, "HTTPError", ())):
            found = _from_httpx(exc, mod)
            if found is not None:
                return found
    if isinstance(exc, SSEDecodeError):
        return StreamError("api_error", f"The upstream sent an invalid event stream: {exc}")
    if isinstance(exc, OSError):
        return StreamError("network", _describe(exc, "network"))
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        headers = getattr(exc, "headers", None)
        category = _status_category(status) or "api_error"
        return StreamError(
            category,
            str(exc) or _status_message(status, category),
            status=status,
            retry_after=retry_after_from_headers(headers) if isinstance(headers, Mapping) else None,
        )
    # SDKs that keep the HTTP status as ``code`` and the parsed error body as
    # ``details`` (google-genai's APIError): read like an error response.
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if (
        isinstance(code, int)
        and not isinstance(code, bool)
        and 400 <= code <= 599
        and isinstance(details, Mapping)
    ):
        return StreamError.from_provider_error(details, provider=None, status=code)
    cause = exc.__cause__
    if cause is not None and depth < _MAX_CAUSE_DEPTH:
        inner = _categorize(cause, depth + 1)
        text = str(exc)
        if text and text != inner.message:
            inner = _copy_with_message(inner, f"{text}: {inner.message}")
        return inner
    text = str(exc)
    category = _text_category(text) or "api_error"
    return StreamError(category, _describe(exc, category))


def _copy_with_message(err: StreamError, message: str) -> StreamError:
    state = err.__dict__.copy()
    state["message"] = _clean_text(message)
    return _rebuild(type(err), state)
