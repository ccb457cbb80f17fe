"""Stream errors: one exception type with categories, rendered as SSE error events.

(Initial version: the categorization and provider formats are being completed.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

__all__ = ["ClientDisconnected", "StreamError"]

ErrorType = Literal[
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


class ClientDisconnected(Exception):
    """The client of a stream went away; the producer should stop."""


class StreamError(Exception):
    """A categorized streaming failure."""

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type: ErrorType = type
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider

    @classmethod
    def from_exception(cls, exc: BaseException) -> StreamError:
        if isinstance(exc, StreamError):
            return exc
        return cls("api_error", str(exc) or type(exc).__name__)

    @classmethod
    def from_provider_error(
        cls, error: Mapping[str, Any], *, provider: str, status: int | None = None
    ) -> StreamError:
        """From a provider's error object (``{"type":..., "message":...}``)."""
        return cls("api_error", str(error.get("message", "")), status=status, provider=provider)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "status": self.status}

    def to_sse_event(self, protocol: str = "generic") -> bytes:
        if protocol == "openai":
            body: dict[str, Any] = {
                "error": {
                    "message": self.message,
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            return b"data: " + orjson.dumps(body) + b"\n\n"
        if protocol == "anthropic":
            body = {"type": "error", "error": {"type": "api_error", "message": self.message}}
            return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
        return (
            b"event: error\ndata: "
            + orjson.dumps({"type": self.type, "message": self.message})
            + b"\n\n"
        )
