"""The SSE encoder: exact bytes, no field injection, and decode(encode(x)) == x."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.sse import ServerSentEvent, SSEDecodeError, SSEDecoder, encode_comment

from .sse_helpers import feed_all

pytestmark = pytest.mark.usefixtures("both_scanners")


def test_data_only() -> None:
    assert ServerSentEvent("hello").encode() == b"data: hello\n\n"


def test_all_fields_in_order() -> None:
    ev = ServerSentEvent(data="hello", event="greeting", id="42", retry=5000)
    assert ev.encode() == b"event: greeting\nid: 42\nretry: 5000\ndata: hello\n\n"


def test_message_type_is_implicit() -> None:
    assert ServerSentEvent("x", event="message").encode() == b"data: x\n\n"


def test_multiline_data_split_on_cr_lf_and_crlf() -> None:
    assert ServerSentEvent("a\nb\r\nc\rd").encode() == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert ServerSentEvent("a\n", id="1").encode() == b"id: 1\ndata: a\ndata: \n\n"


def test_empty_data_and_empty_id() -> None:
    assert ServerSentEvent("").encode() == b"data: \n\n"
    assert ServerSentEvent("x", id="").encode() == b"id: \ndata: x\n\n"


def test_unicode_line_separators_are_not_line_breaks() -> None:
    text = "a\u2028b\u2029c\u0085d"
    assert ServerSentEvent(text).encode() == ("data: " + text + "\n\n").encode()


def test_leading_space_in_data_survives() -> None:
    encoded = ServerSentEvent(" x").encode()
    assert feed_all([encoded])[0] == [ServerSentEvent(" x")]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nevent: x"])
def test_event_type_with_newline_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent("x", event=bad).encode()


@pytest.mark.parametrize("bad", ["1\n", "1\r", "1\0", "\ndata: injected"])
def test_id_with_newline_or_nul_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent("x", id=bad).encode()


@pytest.mark.parametrize("bad", [-1, True, False, 1.5, "10"])
def test_bad_retry_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent("x", retry=bad).encode()  # type: ignore[arg-type]


def test_event_is_immutable_dataclass_with_slots() -> None:
    ev = ServerSentEvent("x")
    with pytest.raises(AttributeError):
        ev.data = "y"  # type: ignore[misc]
    assert not hasattr(ev, "__dict__")
    assert ev == ServerSentEvent("x", "message", None, None)
    assert hash(ev) == hash(ServerSentEvent("x"))


def test_json() -> None:
    assert ServerSentEvent('{"a": [1, 2]}').json() == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        ServerSentEvent("").json()


def test_comment_encoder() -> None:
    assert encode_comment("ping") == b": ping\n"
    assert encode_comment() == b":\n"
    assert encode_comment("a\nb\r\nc") == b": a\n: b\n: c\n"
    # Comments never produce events, alone or between events.
    stream = encode_comment("hi\nthere") + ServerSentEvent("x").encode() + encode_comment("bye")
    assert feed_all([stream])[0] == [ServerSentEvent("x")]


# --- property: decode(encode(events)) == events under any chunking ---------------------

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_line_free = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=20
)
_events = st.builds(
    ServerSentEvent,
    data=st.text(st.characters(codec="utf-8"), max_size=60),
    event=st.one_of(st.just("message"), _line_free),
    id=st.one_of(
        st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=10)
    ),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
)


def _normalized(ev: ServerSentEvent) -> ServerSentEvent:
    data = ev.data.replace("\r\n", "\n").replace("\r", "\n")
    return ServerSentEvent(data, ev.event, ev.id, ev.retry)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_events, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_roundtrip_under_any_chunking(events: list[ServerSentEvent], cuts: list[int]) -> None:
    wire = b"".join(e.encode() for e in events)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    decoded, decoder = feed_all(chunks)
    assert decoded == [_normalized(e) for e in events]
    ids = [e.id for e in events if e.id is not None]
    assert decoder.last_event_id == (ids[-1] if ids else "")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(
    data: bytes, cuts: list[int]
) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    # Any split gives the same events as one read, and nothing but SSEDecodeError escapes.
    assert feed_all(chunks)[0] == feed_all([data])[0]
    try:
        feed_all(chunks, max_event_size=64)
    except SSEDecodeError as exc:
        assert all(isinstance(e, ServerSentEvent) for e in exc.events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz_small_limit(data: bytes) -> None:
    decoder = SSEDecoder(max_event_size=16)
    for i in range(0, len(data), 7):
        try:
            events = decoder.feed(data[i : i + 7])
        except ValueError as exc:  # SSEDecodeError is the only allowed failure
            assert type(exc).__name__ == "SSEDecodeError"
            events = exc.events  # type: ignore[attr-defined]
        assert all(isinstance(e, ServerSentEvent) for e in events)
    decoder.close()
