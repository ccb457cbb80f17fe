"""Server-Sent Events: a sans-I/O decoder and encoder, exact by the WHATWG HTML spec.

No sockets, no asyncio, no third-party imports: bytes go in, :class:`ServerSentEvent`
objects come out (:class:`SSEDecoder`), and events turn back into bytes
(:meth:`ServerSentEvent.encode`, :func:`encode_comment`). Every transport in tokenwire
(ASGI server, httpx2/httpx client, gateway) is a thin loop around these two pieces.

The decoder works on bytes, not text: CR and LF can never be part of a multi-byte
UTF-8 sequence, so splitting lines before decoding gives exactly the spec's result
while letting ``bytes.find`` (memchr) do the scanning. Each event is decoded once,
with U+FFFD for invalid bytes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "Comment",
    "SSEDecodeError",
    "SSEDecoder",
    "ServerSentEvent",
    "decode",
    "encode_comment",
]

DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024
"""Default bound, in bytes, on one event's buffered data (and on one line)."""

_BOM = b"\xef\xbb\xbf"
# Reconnection times beyond this are clamped. A 5000-digit `retry` is valid by the
# spec's grammar, but CPython refuses int() on strings over 4300 digits.
_RETRY_MAX = 2**63 - 1
_RETRY_MAX_DIGITS = len(str(_RETRY_MAX))


class SSEDecodeError(ValueError):
    """The stream broke a limit of the decoder (an event or line over ``max_event_size``).

    The offending event is dropped and the decoder stays usable: it skips to the end
    of that event and goes on. ``events`` holds the valid events that the same
    ``feed()`` call completed, before and after the dropped one, so nothing else is lost.
    """

    def __init__(self, message: str, *, events: list[ServerSentEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[ServerSentEvent] = events if events is not None else []


@dataclass(frozen=True, slots=True, init=False)
class ServerSentEvent:
    """One dispatched event.

    ``event`` is ``"message"`` when the stream named no type. ``id`` is the id field
    this event itself carried (``None`` if it had none; ``""`` for an empty ``id:``
    that reset the last event ID). ``retry`` is the valid retry field (milliseconds)
    this event carried, else ``None``. ``last_event_id`` is, for a decoded event, the
    last event ID in force when it was dispatched (the browser's
    ``MessageEvent.lastEventId``: its own id, else the one before it); it is not sent
    by :meth:`encode` and not compared.
    """

    data: str = ""
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    last_event_id: str = field(default="", compare=False, repr=False)

    def __init__(
        self,
        data: str = "",
        event: str = "message",
        id: str | None = None,
        retry: int | None = None,
        last_event_id: str = "",
    ) -> None:
        # Not the generated frozen __init__ (object.__setattr__ per field): the slot
        # setters below cost a third of that, and an event per item is the common way
        # to stream. Still frozen: assigning an attribute raises.
        _set_data(self, data)
        _set_event(self, event)
        _set_id(self, id)
        _set_retry(self, retry)
        _set_last_id(self, last_event_id)

    def json(self) -> Any:
        """Parse ``data`` as JSON."""
        return json.loads(self.data)

    def encode(self) -> bytes:
        """Serialize to wire bytes.

        ``event:``, ``id:`` and ``retry:`` are written only when set; data is split on
        CR, LF and CRLF into ``data:`` lines; a blank line ends the event. Raises
        ``ValueError`` for values that would inject fields: an ``event`` or ``id`` with
        CR or LF, an ``id`` with NUL, a negative or boolean ``retry``.
        """
        data = self.data
        event = self.event
        eid = self.id
        if self.retry is None and "\n" not in data and "\r" not in data:
            # One line of data (every LLM chunk): one string, encoded once.
            if eid is None:
                if event == "message":
                    return b"data: " + data.encode() + b"\n\n"
                if "\n" not in event and "\r" not in event:
                    return ("event: " + event + "\ndata: " + data + "\n\n").encode()
            elif "\n" not in eid and "\r" not in eid and "\0" not in eid:
                if event == "message":
                    return ("id: " + eid + "\ndata: " + data + "\n\n").encode()
                if "\n" not in event and "\r" not in event:
                    return (
                        "event: " + event + "\nid: " + eid + "\ndata: " + data + "\n\n"
                    ).encode()
        if eid is None and self.retry is None and event == "message":
            return _encode_data(data) + b"\n"
        out: list[str] = []
        if event != "message":
            if "\n" in event or "\r" in event:
                raise ValueError(f"SSE event type must not contain CR or LF: {event!r}")
            out.append(f"event: {event}\n")
        if self.id is not None:
            eid = self.id
            if "\n" in eid or "\r" in eid or "\0" in eid:
                raise ValueError(f"SSE id must not contain CR, LF or NUL: {eid!r}")
            out.append(f"id: {eid}\n")
        if self.retry is not None:
            retry = self.retry
            if type(retry) is not int or retry < 0:
                raise ValueError(f"SSE retry must be a non-negative int, got {retry!r}")
            out.append(f"retry: {retry}\n")
        return "".join(out).encode() + _encode_data(data) + b"\n"


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (``: text``, e.g. a heartbeat), as a decoder that keeps comments
    reports it: ``text`` is what follows the colon, one leading space removed."""

    text: str = ""


def _encode_data(data: str) -> bytes:
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    return ("data: " + data.replace("\n", "\ndata: ") + "\n").encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment (``: text``), e.g. a heartbeat. Clients ignore comments.

    Multi-line text becomes several comment lines. No blank line follows, so even
    clients that dispatch on any blank line see nothing.
    """
    if "\r" in text or "\n" in text:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "".join(f": {line}\n" if line else ":\n" for line in lines).encode()
    return f": {text}\n".encode() if text else b":\n"


# The slot descriptors' own setters: a frozen dataclass's object.__setattr__ refuses
# them. ServerSentEvent.__init__ uses them; the decoder's hot path goes one step
# further (_make_event: no type call, no keyword defaults, about 15% less).
_new_object = object.__new__
_set_data = ServerSentEvent.__dict__["data"].__set__
_set_event = ServerSentEvent.__dict__["event"].__set__
_set_id = ServerSentEvent.__dict__["id"].__set__
_set_retry = ServerSentEvent.__dict__["retry"].__set__
_set_last_id = ServerSentEvent.__dict__["last_event_id"].__set__


def _make_event(
    data: str, event: str, eid: str | None, retry: int | None, last_id: str
) -> ServerSentEvent:
    ev: ServerSentEvent = _new_object(ServerSentEvent)
    _set_data(ev, data)
    _set_event(ev, event)
    _set_id(ev, eid)
    _set_retry(ev, retry)
    _set_last_id(ev, last_id)
    return ev


def _parse_retry(value: bytes) -> int:
    digits = value.lstrip(b"0")
    if len(digits) > _RETRY_MAX_DIGITS:
        return _RETRY_MAX
    return min(int(digits or b"0"), _RETRY_MAX)


def _scan_simple_py(
    chunk: bytes, pos: int, stop: int, limit: int, last_id: str
) -> tuple[list[ServerSentEvent], int]:
    """Decode the run of events at ``chunk[pos:stop]`` that are exactly an optional
    ``event:<name>`` line and one ``data:<value>`` line followed by a blank line (LF
    endings), in a fresh block: what LLM streams are made of (OpenAI's data-only
    chunks, Anthropic's and the Responses API's named events).

    Returns the events and the position of the first byte not consumed. ``stop`` is
    the first CR of the chunk (or its length), so no consumed line contains CR.
    ``last_id`` is the last event ID in force (no scanned event changes it).
    """
    events: list[ServerSentEvent] = []
    find = chunk.find
    startswith = chunk.startswith
    names = _EVENT_NAMES
    while True:
        event = "message"
        start = pos
        if startswith(b"event:", pos):
            lf = find(b"\n", pos, stop)
            if lf == -1 or lf - pos > limit:
                break
            raw = chunk[pos + 7 if lf > pos + 6 and chunk[pos + 6] == 32 else pos + 6 : lf]
            event = names.get(raw) or _event_name(raw)
            pos = lf + 1
        if not startswith(b"data:", pos):
            pos = start
            break
        lf = find(b"\n", pos, stop)
        if lf == -1 or lf + 1 >= stop or chunk[lf + 1] != 10 or lf - pos > limit:
            pos = start
            break
        begin = pos + 6 if lf > pos + 5 and chunk[pos + 5] == 32 else pos + 5
        text = chunk[begin:lf].decode("utf-8", "replace")
        events.append(_make_event(text, event, None, None, last_id))
        pos = lf + 2
    return events, pos


# Event names seen by the scanner, decoded once (a stream repeats a handful of them).
_EVENT_NAMES: dict[bytes, str] = {}


def _event_name(raw: bytes) -> str:
    name = sys.intern(raw.decode("utf-8", "replace")) or "message"
    if len(_EVENT_NAMES) < 1024:
        _EVENT_NAMES[raw] = name
    return name


try:  # The optional C accelerator: the same contract as _scan_simple_py, ~5x faster.
    from tokenwire import _speedups

    _speedups.configure(
        ServerSentEvent,
        ServerSentEvent.__dict__["data"],
        ServerSentEvent.__dict__["event"],
        ServerSentEvent.__dict__["id"],
        ServerSentEvent.__dict__["retry"],
        ServerSentEvent.__dict__["last_event_id"],
    )
    _scan_simple = _speedups.scan_simple
except ImportError:  # pragma: no cover - the extension is optional
    _scan_simple = _scan_simple_py


class SSEDecoder:
    """Incremental, spec-exact event-stream decoder (WHATWG HTML, "Interpreting an
    event stream").

    ``feed(chunk)`` returns the events completed by that chunk, under any split of the
    input into reads; ``close()`` ends the stream (an unterminated event is discarded).
    ``last_event_id`` is the persistent last event ID (``""`` initially) and ``retry``
    the last valid reconnection time in milliseconds (``None`` until one arrives).

    ``max_event_size`` bounds, in bytes, the data buffered for one event plus any
    unterminated line; past it :class:`SSEDecodeError` is raised and memory stays bounded.

    Comments are dropped, as the spec says, unless ``keep_comments`` is set: then each
    ``feed()`` leaves the comments it read in ``comments``, as ``(index, Comment)``
    pairs, ``index`` being the position in the returned events before which the
    comment came (the list is replaced on every ``feed()``).
    """

    __slots__ = (
        "_bom_pending",
        "_clean",
        "_data",
        "_data_size",
        "_dirty",
        "_discarding",
        "_event",
        "_id",
        "_max",
        "_pending",
        "_retry",
        "_skip_lf",
        "comments",
        "keep_comments",
        "last_event_id",
        "retry",
    )

    def __init__(
        self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE, *, keep_comments: bool = False
    ) -> None:
        if max_event_size <= 0:
            raise ValueError("max_event_size must be positive")
        self._max = max_event_size
        self.keep_comments = keep_comments
        self.comments: list[tuple[int, Comment]] = []
        self.last_event_id: str = ""
        self.retry: int | None = None
        self._bom_pending: bytes | None = (
            b""  # bytes seen of a possible leading BOM; None once settled
        )
        self._skip_lf = False  # the previous read ended in CR: a leading LF belongs to it
        self._pending = bytearray()  # the unterminated line carried between reads
        self._discarding = False  # skipping the rest of an oversize event
        # True when nothing is carried over between reads (no partial line, BOM, CR,
        # or half-read event), so feed() may start with the fast scanner.
        self._clean = False
        self._reset_block()

    def _reset_block(self) -> None:
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._id: bytes | None = None
        self._retry: int | None = None
        self._dirty = False  # any field seen since the last blank line

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one read; return the events it completed (possibly none)."""
        if self.keep_comments:
            self.comments = []
        if self._clean:
            # Between events with nothing carried over: let the scanner take every
            # leading `data:<value>` + blank line event in one go (LLM streams are
            # made of nothing else), then finish exactly with the general path.
            n = len(chunk)
            cr = chunk.find(b"\r")
            events, pos = _scan_simple(
                chunk, 0, n if cr == -1 else cr, self._max, self.last_event_id
            )
            if pos == n:
                return events
            return self._feed(chunk, pos, events, cr)
        if self._bom_pending is not None:
            chunk = self._bom_pending + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._bom_pending = chunk
                return []
            self._bom_pending = None
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        pos = 0
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:
                pos = 1
        return self._feed(chunk, pos, [], chunk.find(b"\r", pos))

    def _feed(
        self, chunk: bytes, pos: int, events: list[ServerSentEvent], cr: int
    ) -> list[ServerSentEvent]:
        """The general path: line by line, exactly as the spec reads."""
        n = len(chunk)
        find = chunk.find
        pending = self._pending
        error: str | None = None
        while pos < n:
            lf = find(b"\n", pos)
            if cr != -1 and (lf == -1 or cr < lf):
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if chunk[cr + 1] == 10 else cr + 1
                else:
                    nxt = n
                    self._skip_lf = True
                cr = find(b"\r", nxt)
            elif lf != -1:
                end = lf
                nxt = lf + 1
            else:
                # No terminator left: carry the partial line to the next read.
                if self._discarding:
                    if not pending:
                        pending.append(0x78)  # remember only that the line is not empty
                else:
                    pending += chunk[pos:] if pos else chunk
                    if len(pending) + self._data_size > self._max:
                        error = self._overflow(mid_line=True)
                break
            if pending:
                if not self._discarding:
                    pending += chunk[pos:end]
                line = bytes(pending)
                pending.clear()
            else:
                line = chunk[pos:end]
            pos = nxt
            if self._discarding:
                if not line:
                    self._discarding = False
                    self._reset_block()
                continue
            err = self._line(line, events)
            if err is not None:
                error = err
            if not (self._dirty or pending or self._discarding) and (cr == -1 or cr > pos):
                # Back between events: the scanner takes the simple events that follow.
                more, pos = _scan_simple(
                    chunk, pos, n if cr == -1 else cr, self._max, self.last_event_id
                )
                events += more
        self._clean = self._bom_pending is None and not (
            self._skip_lf or pending or self._dirty or self._discarding
        )
        if error is not None:
            raise SSEDecodeError(error, events=events)
        return events

    def _overflow(self, mid_line: bool = False) -> str:
        self._pending.clear()
        if mid_line:
            self._pending.append(0x78)  # the rest of this line is still to come
        self._reset_block()
        self._discarding = True
        return (
            f"server-sent event exceeds max_event_size ({self._max} bytes); the event was dropped"
        )

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> str | None:
        if not line:
            if self._dirty:
                self._dispatch(events)
            return None
        if line[0] == 58:  # ":" comment
            if self.keep_comments:
                text = line[2:] if line[1:2] == b" " else line[1:]
                self.comments.append((len(events), Comment(text.decode("utf-8", "replace"))))
            return None
        if len(line) > self._max:
            return self._overflow()
        colon = line.find(b":")
        if colon == -1:
            name = line
            value = b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._dirty = True
            if self._data_size > self._max:
                return self._overflow()
        elif name == b"event":
            self._event = value
            self._dirty = True
        elif name == b"id":
            if b"\0" not in value:
                self._id = value
                self._dirty = True
        elif name == b"retry" and value.isdigit():  # bytes.isdigit: ASCII digits only
            self._retry = self.retry = _parse_retry(value)
            self._dirty = True
        return None

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        eid: str | None = None
        if self._id is not None:
            eid = self.last_event_id = self._id.decode("utf-8", "replace")
        if self._data:
            data = self._data
            text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
            etype = self._event.decode("utf-8", "replace") if self._event else "message"
            events.append(_make_event(text, etype, eid, self._retry, self.last_event_id))
        self._reset_block()

    def close(self) -> list[ServerSentEvent]:
        """End of stream. By the spec an unterminated event is discarded, so this
        returns ``[]``; it also resets the per-stream state (BOM, partial line), keeping
        ``last_event_id`` and ``retry`` for a reconnection."""
        self._pending.clear()
        self._skip_lf = False
        self._discarding = False
        self._bom_pending = b""
        self._clean = False
        self._reset_block()
        return []


def decode(data: bytes, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> list[ServerSentEvent]:
    """Decode a whole event stream held in memory."""
    decoder = SSEDecoder(max_event_size)
    return decoder.feed(data) + decoder.close()
