"""What an event source reports besides events, in ``all()`` mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fault", "Start"]


@dataclass(frozen=True, slots=True)
class Start:
    """A connection opened: its ``status`` and response ``headers``, the ``url`` it
    ended at after redirects, and which reconnection ``attempt`` it was (0 for the
    first connection and after events; counted in a row otherwise). ``restarted``:
    it was opened by :meth:`~tokenwire.client.EventSource.restart`."""

    status: int
    headers: Mapping[str, str]
    url: str
    attempt: int = 0
    restarted: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """A connection was lost, reported before the wait for the next attempt begins.

    ``reason``: ``"end"`` (the server ended the stream), ``"error"`` (``error`` says
    what: a read timeout, a reset connection, a failed reconnection), or
    ``"restart"`` (:meth:`~tokenwire.client.EventSource.restart`). ``attempt`` is the
    reconnection attempt that follows (1 for the first in a row) and ``delay`` the
    seconds before it; both are ``None`` when none follows (reconnection is off or a
    limit was reached): the source then ends, raising
    :class:`~tokenwire.client.SSEConnectionError` unless the server ended the stream
    and reconnection is off.
    """

    error: BaseException | None
    reason: Literal["end", "error", "restart"]
    attempt: int | None
    delay: float | None
