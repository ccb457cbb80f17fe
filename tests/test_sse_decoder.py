"""The SSE decoder, rule by rule (WHATWG HTML, "Interpreting an event stream").

Every case is checked under every split of its input into reads (see sse_helpers).
"""

from __future__ import annotations

import time

import pytest

from tokenwire.sse import ServerSentEvent, SSEDecodeError, SSEDecoder, decode

from .sse_helpers import decode_every_split, feed_all, splits

pytestmark = pytest.mark.usefixtures("both_scanners")


def ev(data: str, event: str = "message", id: str | None = None, retry: int | None = None):
    return ServerSentEvent(data=data, event=event, id=id, retry=retry)


def datas(data: bytes) -> list[str]:
    return [e.data for e in decode_every_split(data)]


# --- the seed's example and the spec's own examples -------------------------------


def test_seed_example_three_events() -> None:
    stream = (
        b"event: greeting\ndata: hello\n\n"
        b"data: line1\ndata: line2\n\n"
        b"event: done\ndata: bye\nid: 42\nretry: 5000\n\n"
    )
    assert decode_every_split(stream) == [
        ev("hello", "greeting"),
        ev("line1\nline2"),
        ev("bye", "done", "42", 5000),
    ]


def test_spec_example_stock_ticker() -> None:
    assert datas(b"data: YHOO\ndata: +2\ndata: 10\n\n") == ["YHOO\n+2\n10"]


def test_spec_example_ids_and_comments() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    events, dec = feed_all([stream])
    assert events == [ev("first event", id="1"), ev("second event", id=""), ev(" third event")]
    assert dec.last_event_id == ""
    assert decode_every_split(stream) == events


def test_spec_example_empty_data_fields() -> None:
    assert datas(b"data\n\ndata\ndata\n\ndata:\n") == ["", "\n"]


def test_spec_example_space_after_colon_is_optional() -> None:
    assert datas(b"data:test\n\ndata: test\n\n") == ["test", "test"]


# --- BOM -----------------------------------------------------------------------------


def test_leading_bom_is_stripped() -> None:
    assert datas(b"\xef\xbb\xbfdata: x\n\n") == ["x"]


def test_second_bom_is_not_stripped() -> None:
    # The second BOM makes the first line's field name "\ufeffdata": unknown, ignored.
    assert datas(b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\n") == ["2"]


def test_bom_in_the_middle_is_not_stripped() -> None:
    assert datas(b"data:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n") == ["1", "3"]


def test_bom_split_across_reads() -> None:
    events, _ = feed_all([b"\xef", b"\xbb", b"\xbf", b"data: Hello\n\n"])
    assert [e.data for e in events] == ["Hello"]
    events, _ = feed_all([b"\xef\xbb", b"\xbfdata: Hello\n\n"])
    assert [e.data for e in events] == ["Hello"]


def test_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    events, _ = feed_all([b"\xef", b"data: x\n\n"])
    assert events == []  # "\ufffddata" is an unknown field
    assert datas(b"\xef\xbbdata: x\n\ndata: y\n\n") == ["y"]


def test_bom_stripped_again_after_close_for_a_new_connection() -> None:
    dec = SSEDecoder()
    assert [e.data for e in dec.feed(b"\xef\xbb\xbfdata: 1\n\n")] == ["1"]
    dec.close()
    assert [e.data for e in dec.feed(b"\xef\xbb\xbfdata: 2\n\n")] == ["2"]


# --- line endings ---------------------------------------------------------------------


def test_crlf_lf_and_cr_line_endings() -> None:
    assert datas(b"data: a\r\ndata: b\r\n\r\n") == ["a\nb"]
    assert datas(b"data: a\ndata: b\n\n") == ["a\nb"]
    assert datas(b"data: a\rdata: b\r\r") == ["a\nb"]


def test_crlf_split_across_reads_is_one_line_ending() -> None:
    events, _ = feed_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == ["a\nb"]


def test_cr_separating_chunks_of_the_same_event() -> None:
    events, _ = feed_all([b"data: A\r\n", b"data: B\r", b"\n", b"data: C\r\n", b"\n"])
    assert [e.data for e in events] == ["A\nB\nC"]


def test_trailing_cr_blank_line_dispatches_in_the_same_feed() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r\n\r") == [ev("a")]
    # The LF that follows belongs to that CR: it must not make another blank line.
    assert dec.feed(b"\n") == []
    assert dec.feed(b"data: b\n\n") == [ev("b")]


def test_bare_cr_blank_line_at_end_of_read_dispatches_immediately() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r\r") == [ev("a")]
    assert dec.feed(b"data: b\r\r") == [ev("b")]


def test_mixed_terminators() -> None:
    assert datas(b"data: a\n\r\n") == ["a"]
    assert datas(b"data: a\n\rdata: b\n\n") == ["a", "b"]


def test_only_cr_and_lf_break_lines() -> None:
    payload = '{"t":"a\u2028b\u2029c\u0085d"}'
    assert datas(b"data: " + payload.encode() + b"\n\n") == [payload]
    assert datas(b"data:\0\n\n") == ["\0"]
    assert datas(b"data: a\x0bb\x0cc\x1cd\n\n") == ["a\x0bb\x0cc\x1cd"]


# --- UTF-8 ---------------------------------------------------------------------------------


def test_multibyte_character_split_across_reads() -> None:
    events, _ = feed_all([b"data: \xd0", b"\xb8\n\n"])
    assert [e.data for e in events] == ["и"]
    assert datas("data: 日本語 🎉\n\n".encode()) == ["日本語 🎉"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert datas(b"data: \xff\n\n") == ["\ufffd"]
    assert datas(b"data: a\xe2\x82\n\n") == ["a\ufffd"]
    assert decode_every_split(b"event: \xc0x\ndata: 1\n\n") == [ev("1", "\ufffdx")]
    assert decode_every_split(b"id: \xff\ndata: 1\n\n") == [ev("1", id="\ufffd")]


# --- fields ----------------------------------------------------------------------------------


def test_comments_are_ignored() -> None:
    stream = (
        b"data:1\r:\0\n:\r\ndata:2\n:" + b"x" * 2048 + b"\rdata:3\n:data:fail\r:" + b"x" * 2048
    ) + b"\ndata:4\n\n"
    assert datas(stream) == ["1\n2\n3\n4"]


def test_field_names_are_case_sensitive_and_exact() -> None:
    assert datas(b"data : x\nData:y\n data:z\ndata:ok\n\n") == ["ok"]


def test_unknown_fields_are_ignored() -> None:
    assert datas(b"foo: bar\ndata: a\nbaz\n\n") == ["a"]


def test_field_without_colon_has_empty_value() -> None:
    assert datas(b"data\n\n") == [""]
    assert decode_every_split(b"event\ndata: x\n\n") == [ev("x")]


def test_only_one_leading_space_is_stripped_and_later_colons_kept() -> None:
    assert datas(b"data:  a:b\n\n") == [" a:b"]
    assert datas(b"data:\ta\n\n") == ["\ta"]


def test_data_lines_joined_with_lf_and_one_trailing_lf_removed() -> None:
    assert datas(b"data: a\ndata:\ndata: b\ndata:\n\n") == ["a\n\nb\n"]


def test_event_only_block_is_not_dispatched_and_resets_type() -> None:
    assert decode_every_split(b"event: ping\n\ndata: x\n\n") == [ev("x")]


def test_empty_event_name_means_message() -> None:
    assert decode_every_split(b"event: \ndata:data\n\n") == [ev("data")]


def test_event_type_applies_to_its_block_only() -> None:
    assert decode_every_split(b"event: a\ndata: 1\n\ndata: 2\n\n") == [ev("1", "a"), ev("2")]


def test_last_event_type_wins_within_a_block() -> None:
    assert decode_every_split(b"event: a\nevent: b\ndata: 1\n\n") == [ev("1", "b")]


# --- id -----------------------------------------------------------------------------------------


def test_id_persists_across_events_and_blocks_without_data_dont_dispatch() -> None:
    stream = b"id: 1\ndata: a\n\nid: 2\n\n\n\ndata: b\n\n"
    events, dec = feed_all([stream])
    assert events == [ev("a", id="1"), ev("b")]
    assert dec.last_event_id == "2"
    assert decode_every_split(stream) == events


def test_id_only_block_updates_last_event_id() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"id: 7\n\n") == []
    assert dec.last_event_id == "7"


def test_id_with_nul_is_ignored_and_previous_id_kept() -> None:
    stream = b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n"
    events, dec = feed_all([stream])
    assert events == [ev("a", id="1"), ev("b")]
    assert dec.last_event_id == "1"


def test_empty_id_resets_last_event_id() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"id: 1\ndata: 1\n\n") == [ev("1", id="1")]
    assert dec.last_event_id == "1"
    assert dec.feed(b"id:\ndata:2\n\n") == [ev("2", id="")]
    assert dec.last_event_id == ""
    assert dec.feed(b"data:3\n\n") == [ev("3")]
    assert dec.last_event_id == ""


def test_non_ascii_id() -> None:
    events, dec = feed_all(["id: …\ndata: x\n\n".encode()])
    assert events == [ev("x", id="…")]
    assert dec.last_event_id == "…"


def test_unterminated_event_and_its_id_are_discarded() -> None:
    events, dec = feed_all([b"data: a\n\nid: 9\ndata: partial"])
    assert events == [ev("a")]
    assert dec.last_event_id == ""
    events, dec = feed_all([b"data: a\n\nid: 9\ndata: partial\n"])
    assert events == [ev("a")]
    assert dec.last_event_id == ""


def test_close_keeps_last_event_id_and_retry_for_reconnection() -> None:
    dec = SSEDecoder()
    dec.feed(b"id: 5\nretry: 100\ndata: x\n\nid: 6\ndata: half")
    assert dec.close() == []
    assert dec.last_event_id == "5"
    assert dec.retry == 100
    # A fresh connection starts from a clean line state.
    assert dec.feed(b"data: y\n\n") == [ev("y")]


# --- retry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 02000", 2000),
        (b"retry:0", 0),
        (b"retry: 1000x", None),
        (b"retry: -1", None),
        (b"retry: +5", None),
        (b"retry: 1.5", None),
        (b"retry:  5", None),
        (b"retry:", None),
        (b"retry", None),
        ("retry: ١٢".encode(), None),
        ("retry: １２".encode(), None),
    ],
)
def test_retry_only_when_all_ascii_digits(line: bytes, expected: int | None) -> None:
    events, dec = feed_all([line + b"\ndata: x\n\n"])
    assert dec.retry == expected
    assert events == [ev("x", retry=expected)]


def test_retry_with_thousands_of_digits_does_not_crash() -> None:
    events, dec = feed_all([b"retry: " + b"9" * 5000 + b"\ndata: x\n\n"])
    assert dec.retry is not None and dec.retry >= 2**62
    assert events[0].retry == dec.retry
    _, dec = feed_all([b"retry: " + b"0" * 5000 + b"7\n\n"])
    assert dec.retry == 7


def test_retry_only_block_updates_retry_without_dispatch() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"retry: 3000\n\n") == []
    assert dec.retry == 3000
    assert dec.feed(b"data: x\n\n") == [ev("x")]  # the event itself carried no retry


def test_retry_applies_even_in_an_unterminated_block() -> None:
    _, dec = feed_all([b"retry: 1234\ndata: x"])
    assert dec.retry == 1234


# --- limits --------------------------------------------------------------------------


def test_event_over_max_size_raises_and_decoder_recovers() -> None:
    dec = SSEDecoder(max_event_size=100)
    with pytest.raises(SSEDecodeError) as info:
        dec.feed(b"data: ok\n\ndata: " + b"x" * 200 + b"\n\ndata: after\n\n")
    assert isinstance(info.value, ValueError)
    assert "max_event_size" in str(info.value)
    # Nothing else is lost: the good events of the same read ride on the error.
    assert info.value.events == [ev("ok"), ev("after")]
    assert dec.feed(b"data: next\n\n") == [ev("next")]


def test_many_data_lines_over_max_size_raise() -> None:
    dec = SSEDecoder(max_event_size=100)
    with pytest.raises(SSEDecodeError):
        for _ in range(50):
            dec.feed(b"data: 0123456789\n")
    # The rest of the oversize event is skipped up to its blank line.
    assert dec.feed(b"data: still the same event\n\ndata: new\n\n") == [ev("new")]


def test_endless_line_raises_with_bounded_memory() -> None:
    dec = SSEDecoder(max_event_size=10_000)
    with pytest.raises(SSEDecodeError):
        for _ in range(100):
            dec.feed(b"x" * 1024)
    # While the line goes on, nothing more is buffered.
    for _ in range(100):
        assert dec.feed(b"data: x" * 100) == []
    assert len(dec._pending) <= 1
    # Its end is not mistaken for a blank line; the next event comes through.
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\ndata: ok\n\n") == [ev("ok")]


def test_oversize_line_split_at_its_terminator() -> None:
    dec = SSEDecoder(max_event_size=10)
    with pytest.raises(SSEDecodeError):
        dec.feed(b"data: " + b"y" * 20)
    assert dec.feed(b"\n") == []  # end of the long line, not a blank line
    assert dec.feed(b"\n") == []  # the blank line ending the dropped event
    assert dec.feed(b"data: z\n\n") == [ev("z")]


def test_line_at_exactly_the_limit_passes() -> None:
    line = b"data: 123456789"  # 15 bytes
    dec = SSEDecoder(max_event_size=len(line))
    assert dec.feed(line + b"\n\n") == [ev("123456789")]
    assert dec.feed(line[:10]) == []
    assert dec.feed(line[10:] + b"\n\n") == [ev("123456789")]
    with pytest.raises(SSEDecodeError):
        SSEDecoder(max_event_size=len(line) - 1).feed(line + b"\n\n")


def test_max_event_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SSEDecoder(max_event_size=0)


def test_large_event_in_small_reads_is_linear() -> None:
    # 8 MiB in 1 KiB reads. A quadratic decoder takes minutes here; the bound is loose
    # on purpose (the benchmark reports the real figure).
    payload = b"x" * (8 * 1024 * 1024)
    stream = b"data: " + payload + b"\n\n"
    dec = SSEDecoder()
    started = time.process_time()
    events = []
    for i in range(0, len(stream), 1024):
        events.extend(dec.feed(stream[i : i + 1024]))
    assert time.process_time() - started < 5
    assert len(events) == 1 and len(events[0].data) == len(payload)


def test_many_events_in_one_read_and_empty_reads() -> None:
    stream = b"".join(b"data: %d\n\n" % i for i in range(1000))
    dec = SSEDecoder()
    assert dec.feed(b"") == []
    assert [e.data for e in dec.feed(stream)] == [str(i) for i in range(1000)]


def test_decode_helper_matches_feed() -> None:
    assert decode(b"data: a\n\ndata: b") == [ev("a")]


def test_every_split_of_a_mixed_stream_agrees() -> None:
    stream = (
        b"\xef\xbb\xbf: hi\r\nretry: 10\r\nid: 1\revent: e\ndata: a\r\n\r\n"
        b"data: \xe2\x82\xac\n\rid\n\n:x\rdata\r\r"
    )
    got = decode_every_split(stream)
    assert got == [ev("a", "e", "1", 10), ev("€"), ev("")]
    assert sum(1 for _ in splits(stream)) > 50


def test_last_event_id_is_the_id_in_force_at_dispatch() -> None:
    # The browser's MessageEvent.lastEventId: an event's own id, else the one before
    # it; an empty id resets it; a NUL id is ignored; the decoder's start value counts.
    decoder = SSEDecoder()
    decoder.last_event_id = "0"
    chunks = [
        b"data: a\n\n",
        b"id: 1\ndata: b\n\ndata: c\n\n",
        b"id: x\x00y\ndata: d\n\n",
        b"event: e\ndata: e\n\nid:\ndata: f\n\ndata: g\n\n",
        b"id: 9\n\ndata: h\r\n\r\n",
    ]
    seen = [(e.data, e.id, e.last_event_id) for chunk in chunks for e in decoder.feed(chunk)]
    assert seen == [
        ("a", None, "0"),
        ("b", "1", "1"),
        ("c", None, "1"),
        ("d", None, "1"),
        ("e", None, "1"),
        ("f", "", ""),
        ("g", None, ""),
        ("h", None, "9"),
    ]
    assert ServerSentEvent("b", id="1") == decode(b"id: 1\ndata: b\n\n")[0]  # not compared
