"""Relaying a reply: the writer that turns upstream items into the client's protocol,
and the deadlines and disconnect watch around reading the request and the upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from typing import TypeVar

from starlette.types import Receive

from tokenwire.config import Timeouts
from tokenwire.control import guard
from tokenwire.errors import StreamError
from tokenwire.llm.model import Delta, MessageStart
from tokenwire.llm.protocol import EventEncoder, WireProtocol
from tokenwire.llm.requests import ChatRequest
from tokenwire.providers import DemoProvider, HTTPProvider, Item

Upstream = DemoProvider | HTTPProvider
T = TypeVar("T")


class _ClientLeft(Exception):
    """The client disconnected before its reply started."""


class _Writer:
    """Upstream items -> bytes in the client's protocol (pass-through or translation),
    with the upstream's key scrubbed from whatever it sent."""

    __slots__ = (
        "_encoder",
        "_include_usage",
        "_rename",
        "_reply_id",
        "_secret",
        "_translate",
        "_wire",
    )

    def __init__(
        self,
        wire: WireProtocol,
        upstream: Upstream,
        include_usage: bool,
        reply_id: str | None = None,
        *,
        translate: bool = False,
    ) -> None:
        self._wire = wire
        self._include_usage = include_usage
        # Encode even a same-protocol upstream's reply (a continued reply is one stream
        # made of several upstreams' replies).
        self._translate = translate
        self._encoder: EventEncoder | None = None
        # A stored reply is known by the gateway's id: a translated stream is written with
        # it, a passed-through one has the upstream's id replaced by it.
        self._reply_id = reply_id
        self._rename: tuple[bytes, bytes] | None = None
        self._secret: bytes | None = None
        self.rebind(upstream)

    def rebind(self, upstream: Upstream) -> None:
        """Write what ``upstream`` sends from now on: a retry before anything was
        written (pass-through or translation as its protocol asks), or a continuation
        (an encoding writer only takes the new upstream's key to scrub)."""
        self._secret = upstream.secret
        if self._encoder is not None and self._translate:
            return
        wire = self._wire
        self._encoder = None
        if self._translate or upstream.protocol != wire.name:
            self._encoder = wire.encoder(
                include_usage=self._include_usage,
                error_provider=upstream.protocol or wire.name,
                id=self._reply_id,
            )

    def write(self, raw: bytes | None, deltas: list[Delta]) -> bytes:
        encoder = self._encoder
        if encoder is None:
            out = raw or b""
            if self._reply_id is not None:
                out = self._renamed(out, deltas)
        elif len(deltas) == 1:
            out = encoder.encode(deltas[0])
        else:
            out = b"".join([encoder.encode(d) for d in deltas])
        return _scrub(out, self._secret)

    def _renamed(self, out: bytes, deltas: list[Delta]) -> bytes:
        rename = self._rename
        if rename is None:
            for delta in deltas:
                if type(delta) is MessageStart and delta.id and self._reply_id:
                    rename = self._rename = (delta.id.encode(), self._reply_id.encode())
                    break
            else:
                return out
        old, new = rename
        return out.replace(old, new) if old in out else out

    def done(self) -> bytes:
        encoder = self._encoder
        if encoder is None or encoder.ended:
            return b""
        return encoder.done()

    def error(self, err: StreamError) -> bytes:
        encoder = self._encoder
        if encoder is None:
            out = self._wire.error_event(err)
        elif encoder.ended:
            return b""
        else:
            out = encoder.error(err)
        return _scrub(out, self._secret)


def _scrub(data: bytes, secret: bytes | None) -> bytes:
    """``data`` without ``secret`` (an upstream's key) in it."""
    if secret is not None and secret in data:
        return data.replace(secret, b"***")
    return data


def _guarded(
    items: AsyncIterator[Item], timeouts: Timeouts, accepted: float
) -> AsyncGenerator[Item, None]:
    return guard(
        items,
        timeout=timeouts.total,
        first_chunk_timeout=timeouts.first_token,
        idle_timeout=timeouts.idle,
        started=accepted,
    )


async def _open(
    upstream: Upstream,
    chat: ChatRequest,
    raw: bool,
    timeouts: Timeouts,
    accepted: float,
    receive: Receive | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Item]:
    """``upstream.open``, within the route's first-token and total deadlines counted
    from ``accepted`` (a silent upstream gets a 504, not a hung client), and, with
    ``receive``, only while the client is there. ``headers`` go with an HTTP
    upstream's request (the trace context; a demo upstream has no request to carry them)."""
    deadlines = ((timeouts.first_token, "first_chunk_timeout"), (timeouts.total, "timeout"))
    limits = [
        (accepted + seconds, seconds, code) for seconds, code in deadlines if seconds is not None
    ]
    when, seconds, code = min(limits) if limits else (None, 0.0, "")
    try:
        return await _start_open(upstream, chat, raw, when, receive, headers)
    except _Late:
        raise StreamError(
            "timeout",
            f"The upstream sent no response within {seconds:g} s ({code}).",
            status=504,
            code=code,
        ) from None


def _start_open(
    upstream: Upstream,
    chat: ChatRequest,
    raw: bool,
    when: float | None,
    receive: Receive | None,
    headers: Mapping[str, str] | None,
) -> Awaitable[AsyncIterator[Item]]:
    """``upstream.open`` bounded by the loop time ``when`` (raises _Late) and, with
    ``receive``, by the client's presence (raises _ClientLeft)."""
    if headers is not None and isinstance(upstream, HTTPProvider):
        opening = upstream.open(chat, raw=raw, headers=headers)
    else:
        opening = upstream.open(chat, raw=raw)
    return _bounded(opening, when, receive)


class _Late(Exception):
    """The deadline of _bounded passed."""


async def _bounded(awaitable: Awaitable[T], deadline: float | None, receive: Receive | None) -> T:
    """Await ``awaitable`` in this task; if the event loop time ``deadline`` passes first
    raise _Late, and if the client (its request body already read: ``receive`` only
    reports the disconnect then) leaves first raise _ClientLeft. Either way
    ``awaitable`` is cancelled at once, which closes an upstream request in flight.

    One timer and one watcher task: asyncio.timeout and asyncio.wait would cost more
    per request, and this runs for every request."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    why: list[type[Exception]] = []  # set once, by whichever comes first

    def stop(reason: type[Exception]) -> None:
        if not why:
            why.append(reason)
            task.cancel()

    def gone(watch: asyncio.Task[None]) -> None:
        if not watch.cancelled() and watch.exception() is None:
            stop(_ClientLeft)

    timer = loop.call_at(deadline, stop, _Late) if deadline is not None else None
    watch = None
    if receive is not None:
        watch = loop.create_task(_disconnected(receive))
        watch.add_done_callback(gone)
    try:
        result = await awaitable
    except asyncio.CancelledError:
        if why and task.uncancel() == 0:
            raise why[0] from None
        raise
    finally:
        stopped = bool(why)
        why.append(Exception)  # too late now: a callback still queued does nothing
        if timer is not None:
            timer.cancel()
        if watch is not None:
            watch.cancel()
    if stopped:
        task.uncancel()  # ``awaitable`` swallowed our cancellation and finished anyway
    return result


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body from the ASGI ``receive`` (at most ``limit`` bytes, else 413;
    _ClientLeft if the client goes away first)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has disconnected."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> StreamError:
    return StreamError("invalid_request", f"request body is larger than {limit} bytes", status=413)
