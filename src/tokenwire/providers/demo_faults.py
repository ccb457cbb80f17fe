"""Faults the demo model injects on request, to test clients offline.

A fault is asked for in the model name: ``demo:FAULT`` (any demo route works: with a
``[models.fast]`` route on a demo provider, ``fast:FAULT``). What each one does, in the
caller's own protocol (the gateway renders the error in the shape of the caller's SDK):

================  ===========================================================================
``rate_limit``    HTTP 429 with ``Retry-After: 1`` before the first byte
``auth``          HTTP 401 (authentication)
``permission``    HTTP 403
``not_found``     HTTP 404
``bad_request``   HTTP 400 (invalid request)
``server_error``  HTTP 500
``overloaded``    HTTP 529 to Anthropic clients, 503 to the others
``error@N``       an in-band error event (``overloaded``) after N tokens
``stall@N``       N tokens, then nothing more (for idle deadlines)
``cut@N``         N tokens, then the client's connection is dropped mid-stream
================  ===========================================================================

A text reply is made long enough for an in-stream fault to happen (``max_tokens`` still
ends it first if it is smaller than N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from tokenwire.errors import ErrorType, StreamError

__all__ = ["FAULTS", "Fault", "parse_fault"]

# name -> (category, status, Retry-After); status None lets the caller's protocol choose.
_HTTP: Final[dict[str, tuple[ErrorType, int | None, float | None]]] = {
    "rate_limit": ("rate_limit", 429, 1.0),
    "auth": ("authentication", 401, None),
    "permission": ("permission", 403, None),
    "not_found": ("not_found", 404, None),
    "bad_request": ("invalid_request", 400, None),
    "server_error": ("api_error", 500, None),
    "overloaded": ("overloaded", None, None),
}
_IN_STREAM: Final = ("error", "stall", "cut")
FAULTS: Final[tuple[str, ...]] = (*_HTTP, *(f"{name}@N" for name in _IN_STREAM))
"""Every fault name (``@N``: after N tokens)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault in a stream: ``kind`` after ``after`` tokens."""

    kind: Literal["error", "stall", "cut"]
    after: int


def parse_fault(spec: str) -> StreamError | Fault:
    """The error to raise before the first byte, or the in-stream fault, for ``spec``
    (the part of the model name after ``:``). An unknown name is itself an error (400)
    that lists the known ones."""
    http = _HTTP.get(spec)
    if http is not None:
        kind, status, retry_after = http
        return StreamError(
            kind,
            f"demo model: simulated {spec.replace('_', ' ')} error (model suffix :{spec})",
            status=status,
            retry_after=retry_after,
            code=f"demo_{spec}",
        )
    name, sep, count = spec.partition("@")
    if sep and name in _IN_STREAM and count.isdigit() and len(count) <= 7:
        return Fault(name, int(count))  # type: ignore[arg-type]  # checked just above
    return StreamError(
        "invalid_request",
        f"unknown demo fault {spec[:40]!r}; known: {', '.join(FAULTS)}",
        status=400,
        param="model",
    )
