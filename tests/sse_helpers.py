"""Helpers for feeding byte streams to the decoder under different splits."""

from __future__ import annotations

from collections.abc import Iterator

from tokenwire.sse import ServerSentEvent, SSEDecoder


def splits(data: bytes) -> Iterator[list[bytes]]:
    """Whole, one byte per read, two bytes per read, and every split into two reads
    (and into three for short inputs)."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[i : i + 2] for i in range(0, len(data), 2)]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    if len(data) <= 40:
        for i in range(1, len(data)):
            for j in range(i + 1, len(data)):
                yield [data[:i], data[i:j], data[j:]]


def feed_all(chunks: list[bytes], **kwargs: int) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events, decoder


def decode_every_split(data: bytes) -> list[ServerSentEvent]:
    """Decode ``data`` under every split; assert they all agree; return the events."""
    expected, _ = feed_all([data])
    for chunks in splits(data):
        got, _ = feed_all(chunks)
        assert got == expected, f"split {chunks!r} gave {got!r}, whole gave {expected!r}"
    return expected
