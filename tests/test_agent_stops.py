"""The client-side stop-sequence filter, under every split of a stream into chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.llm.stops import StopFilter


def reference(text: str, stops: list[str]) -> tuple[str, str | None]:
    """The expected output, computed the slow obvious way: scan end positions; the first
    stop sequence completed wins (the longest if several end at the same place)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            stop = max(done, key=len)
            return text[: end - len(stop)], stop
    return text, None


def longest_partial(text: str, stops: list[str]) -> int:
    return max(
        (
            k
            for k in range(1, len(text) + 1)
            for s in stops
            if len(s) > k and s.startswith(text[-k:])
        ),
        default=0,
    )


def run(chunks: list[str], stops: list[str]) -> tuple[str, str | None]:
    f = StopFilter(stops)
    out = "".join(f.feed(c) for c in chunks) + f.flush()
    return out, f.matched


def splits(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    pieces, start = [], 0
    for p in [*points, len(text)]:
        pieces.append(text[start:p])
        start = p
    return pieces


ALPHABET = "ab\n "
texts = st.text(alphabet=ALPHABET, max_size=40)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(texts, stop_lists, st.lists(st.integers(0, 40), max_size=12))
def test_any_split_gives_the_reference_output(text: str, stops: list[str], cuts: list[int]) -> None:
    assert run(splits(text, cuts), stops) == reference(text, stops)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab\n", max_size=12), stop_lists)
def test_every_split_of_short_streams(text: str, stops: list[str]) -> None:
    expected = reference(text, stops)
    # Every one of the 2**(n-1) ways to cut the text into non-empty chunks.
    for mask in range(1 << max(len(text) - 1, 0)):
        cuts = [i + 1 for i in range(len(text) - 1) if mask >> i & 1]
        assert run(splits(text, cuts), stops) == expected


@settings(max_examples=300, deadline=None)
@given(texts, stop_lists, st.lists(st.integers(0, 40), max_size=12))
def test_text_is_released_as_soon_as_it_cannot_be_a_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    f = StopFilter(stops)
    seen, emitted = "", ""
    for chunk in splits(text, cuts):
        seen += chunk
        emitted += f.feed(chunk)
        if f.stopped:
            break
        # Held back is exactly the longest suffix that could still start a stop sequence.
        assert emitted == seen[: len(seen) - longest_partial(seen, stops)]
        assert f.pending == seen[len(emitted) :]


def test_stop_split_over_chunks_is_never_emitted() -> None:
    f = StopFilter(["\n\n"])
    assert f.feed("Once upon a time.\n") == "Once upon a time."
    assert f.pending == "\n"
    assert f.feed("\nThe end") == ""
    assert f.stopped and f.matched == "\n\n"
    assert f.feed("more") == "" and f.flush() == ""


def test_false_prefix_is_released_on_the_next_chunk() -> None:
    f = StopFilter(["END"])
    assert f.feed("the EN") == "the "
    assert f.feed("D") == ""
    f = StopFilter(["END"])
    assert f.feed("the EN") == "the "
    assert f.feed("emy") == "ENemy"
    assert f.flush() == ""


def test_held_text_is_released_at_the_end() -> None:
    f = StopFilter(["###"])
    assert f.feed("a ##") == "a "
    assert f.flush() == "##"
    assert not f.stopped


def test_no_stops_passes_text_through_unchanged() -> None:
    f = StopFilter()
    chunk = "anything"
    assert f.feed(chunk) is chunk


def test_first_completed_stop_wins() -> None:
    assert run(["abcd"], ["abcd", "bc"]) == ("a", "bc")
    assert run(["xab"], ["ab", "xab"]) == ("", "xab")


@pytest.mark.parametrize("bad", [[""], [None]])
def test_empty_or_non_string_stop_is_rejected(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        StopFilter(bad)  # type: ignore[arg-type]
