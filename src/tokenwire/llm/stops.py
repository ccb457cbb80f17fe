"""Stop sequences enforced on streamed text (sans-I/O).

A stop sequence may arrive split over several chunks, so text that could be the start
of one is held back, and released as soon as the next chunk shows it is not.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopFilter"]


class StopFilter:
    """Cut a text stream before the first occurrence of any stop sequence.

    ``feed(chunk)`` returns the text that is now safe to emit; ``flush()`` returns what
    was held back once the stream has ended without a stop. After a stop sequence is
    found, :attr:`stopped` is true, :attr:`matched` is that sequence, and further input
    is ignored. Only the longest suffix of the text so far that is a prefix of some stop
    sequence is ever held back, so emitted text lags the input by no more than that.

    Like a model checking its output after every token, the first stop sequence to be
    *completed* wins (of two completed by the same character, the longer one). The
    emitted text is therefore the same however the stream was split into chunks: all of
    it up to that occurrence, which is never emitted itself.
    """

    __slots__ = ("_held", "_longest", "_stops", "matched")

    def __init__(self, stop_sequences: Iterable[str] = ()) -> None:
        stops = list(dict.fromkeys(stop_sequences))
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        self._stops: tuple[str, ...] = tuple(stops)
        self._longest = max((len(s) for s in stops), default=0)
        self._held = ""
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        """A stop sequence was found; the stream should end."""
        return self.matched is not None

    @property
    def pending(self) -> str:
        """The text currently held back."""
        return self._held

    def feed(self, text: str) -> str:
        """Add ``text``; return the part that can be emitted now ("" if none)."""
        if self.matched is not None:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text if self._held else text
        # Any occurrence ending before this chunk was found by an earlier feed, so the
        # earliest-ending one in the buffer is the first completed in the whole stream.
        cut = end = -1
        for stop in self._stops:
            at = buffer.find(stop)
            if at == -1:
                continue
            stop_end = at + len(stop)
            if end == -1 or stop_end < end or (stop_end == end and at < cut):
                cut, end, self.matched = at, stop_end, stop
        if cut != -1:
            self._held = ""
            return buffer[:cut]
        keep = self._partial(buffer)
        if keep:
            self._held = buffer[-keep:]
            return buffer[:-keep]
        self._held = ""
        return buffer

    def flush(self) -> str:
        """The stream ended: release the held-back text (it was not a stop sequence)."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _partial(self, buffer: str) -> int:
        # The length of the longest suffix of buffer that is a proper prefix of a stop.
        # No full match is in buffer, so a suffix this long can only be a proper prefix.
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            for stop in self._stops:
                if stop.startswith(tail):
                    return size
        return 0
