"""What the sync and async event sources share: everything that is not I/O."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import orjson

from tokenwire.client._response import SSEConnectionError, content_type_ok, response_error
from tokenwire.sse import SSEDecoder

__all__ = ["DEFAULT_TIMEOUT", "Backoff", "SourceCore"]

DEFAULT_TIMEOUT = 10.0
"""Seconds allowed to connect, write the request and wait for a pooled connection.
Reading has no limit unless ``idle_timeout`` sets one: an event stream may be quiet."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before reconnecting.

    The first reconnection waits the server's ``retry`` (clamped to ``maximum``), or
    ``initial`` seconds if the server sent none. Each further attempt in a row doubles
    (``multiplier``) the wait up to ``maximum``, minus a random part of up to ``jitter``
    of it, but never below the server's ``retry``: that is a minimum. A connection that
    stayed up ``reset_after`` seconds starts the count over.
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.reset_after < 0:
            raise ValueError("Backoff times must not be negative")
        if self.multiplier < 1:
            raise ValueError("Backoff.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff.jitter must be between 0 and 1")

    def delay(self, attempt: int, retry_ms: int | None, rand: float) -> float:
        """The wait before reconnection attempt ``attempt`` (0 = first in a row), given
        the server's ``retry`` in milliseconds and a random number in ``[0, 1)``."""
        floor = min(retry_ms / 1000, self.maximum) if retry_ms is not None else self.initial
        floor = min(floor, self.maximum)
        if attempt <= 0:
            return floor
        base = floor or self.initial
        wait = min(self.maximum, base * self.multiplier ** min(attempt, 64))
        return max(floor, wait * (1 - self.jitter * rand))


def _timeout(timeout: float | httpx2.Timeout | None, idle_timeout: float | None) -> httpx2.Timeout:
    if isinstance(timeout, httpx2.Timeout):
        if idle_timeout is None:
            return timeout
        return httpx2.Timeout(
            connect=timeout.connect, read=idle_timeout, write=timeout.write, pool=timeout.pool
        )
    return httpx2.Timeout(timeout, read=idle_timeout)


class SourceCore:
    """Request building, response checks, reconnection bookkeeping."""

    __slots__ = (
        "attempt",
        "backoff",
        "body",
        "connected_at",
        "decoder",
        "follow_redirects",
        "headers",
        "lost_at",
        "max_reconnects",
        "max_retry_time",
        "method",
        "quiet",
        "reconnect",
        "rng",
        "target",
        "timeout",
        "url",
    )

    def __init__(
        self,
        url: str | httpx2.URL,
        method: str,
        headers: Mapping[str, str] | None,
        json: Any,
        content: bytes | str | None,
        last_event_id: str | None,
        reconnect: bool,
        max_reconnects: int | None,
        timeout: float | httpx2.Timeout | None,
        idle_timeout: float | None,
        max_event_size: int,
        backoff: Backoff,
        follow_redirects: bool = True,
        max_retry_time: float | None = None,
    ) -> None:
        if json is not None and content is not None:
            raise ValueError("pass json or content, not both")
        if content is not None and not isinstance(content, bytes | str):
            # A body must be resent on reconnection, so it cannot be a one-shot iterator.
            raise TypeError("content must be bytes or str (it is resent on reconnection)")
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError("max_reconnects must not be negative")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if max_retry_time is not None and max_retry_time < 0:
            raise ValueError("max_retry_time must not be negative")
        self.url = str(url)
        # Where requests go: the URL after the last connection's redirects, as browsers
        # reconnect to it.
        self.target = self.url
        self.method = method.upper()
        # Our own copy: the caller's mapping is never changed.
        self.headers = httpx2.Headers(headers)
        # What a browser's EventSource puts on the wire (Fetch's "no-store" cache mode
        # sends no-cache).
        self.headers["accept"] = "text/event-stream"
        self.headers["cache-control"] = "no-cache"
        self.body: bytes | None
        if json is not None:
            self.body = orjson.dumps(json)
            if "content-type" not in self.headers:
                self.headers["content-type"] = "application/json"
        else:
            self.body = content.encode() if isinstance(content, str) else content
        self.decoder = SSEDecoder(max_event_size)
        header_id = self.headers.pop("last-event-id", None)
        start_id = last_event_id if last_event_id is not None else header_id
        if start_id:
            self.decoder.last_event_id = start_id
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.max_retry_time = max_retry_time
        self.follow_redirects = follow_redirects
        self.lost_at: float | None = None  # when the reconnections in a row began
        self.timeout = _timeout(timeout, idle_timeout)
        self.backoff = backoff
        self.attempt = 0  # reconnections in a row (the backoff exponent)
        self.quiet = 0  # reconnections since an event last arrived
        self.connected_at: float | None = None
        self.rng = random.Random()

    def request_headers(self) -> httpx2.Headers:
        headers = self.headers.copy()
        last_id = self.decoder.last_event_id
        if last_id:
            headers["last-event-id"] = last_id
        return headers

    def classify(self, response: Any) -> Literal["ok", "end", "error"]:
        status = response.status_code
        if status == 204:
            return "end"  # the server's way to say "do not reconnect"
        if status != 200 or not content_type_ok(response.headers):
            return "error"
        return "ok"

    def error(self, response: Any, body: bytes) -> SSEConnectionError:
        return response_error(response.status_code, response.headers, body, self.url)

    def opened(self, now: float, response: Any = None) -> None:
        """A connection is up: reconnections go where its redirects ended, with the
        method they ended with (a 303, or a 301/302 after POST, turns it into GET)."""
        self.connected_at = now
        if response is None:
            return
        final = response.request
        self.target = str(final.url)
        if final.method != self.method:
            self.method = final.method
            self.body = None
            self.headers.pop("content-type", None)

    def lost(self, now: float) -> None:
        """The connection ended: drop any unterminated event, note a healthy period."""
        self.decoder.close()
        if self.connected_at is not None and now - self.connected_at >= self.backoff.reset_after:
            self.attempt = 0
        self.connected_at = None

    def next_delay(self, now: float | None = None) -> float | None:
        """The wait before the next reconnection attempt, or ``None`` for none (no
        reconnection allowed, or ``max_reconnects`` / ``max_retry_time`` used up)."""
        if not self.reconnect:
            return None
        if self.max_reconnects is not None and self.quiet >= self.max_reconnects:
            return None
        if now is None:
            now = time.monotonic()
        if self.quiet == 0 or self.lost_at is None:
            self.lost_at = now
        delay = self.backoff.delay(self.attempt, self.decoder.retry, self.rng.random())
        if self.max_retry_time is not None and now + delay - self.lost_at > self.max_retry_time:
            return None
        self.attempt += 1
        self.quiet += 1
        return delay

    def gave_up(self, cause: BaseException | None) -> SSEConnectionError:
        """The error that ends a source which will not reconnect again."""
        why = f": {cause!r}" if cause is not None else " (the server ended it)"
        if not self.reconnect:
            message = f"event stream {self.url} lost{why}"
        else:
            spent = ""
            if self.lost_at is not None:
                spent = f" in {time.monotonic() - self.lost_at:.1f} s"
            limits = []
            if self.max_reconnects is not None:
                limits.append(f"max_reconnects={self.max_reconnects}")
            if self.max_retry_time is not None:
                limits.append(f"max_retry_time={self.max_retry_time:g}")
            bound = f", the limit ({', '.join(limits)})" if limits else ""
            message = (
                f"event stream {self.url} lost after {self.quiet} reconnection attempts"
                f"{spent}{bound}{why}"
            )
        return SSEConnectionError(message, url=self.url)
