"""The optional C scanner must agree with the pure-Python one, byte for byte."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenwire.sse as sse

_c_scan = sse._scan_simple if sse._scan_simple is not sse._scan_simple_py else None


def test_accelerator_is_built_in_ci() -> None:
    # A fresh install without a C compiler falls back to pure Python; CI must not.
    if os.environ.get("CI"):
        assert _c_scan is not None, "tokenwire._speedups was not built"


_pieces = st.sampled_from(
    [
        b"data:",
        b"data: ",
        b"dat",
        b"a",
        b"\xff",
        "é".encode(),
        b"\n",
        b"\n\n",
        b"\r",
        b" ",
        b":",
        b"event:",
        b"event: ",
        b"response.output_text.delta",
    ]
)


@pytest.mark.skipif(_c_scan is None, reason="the C accelerator is not built on this install")
@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(_pieces, max_size=30),
    pos=st.integers(0, 40),
    stop=st.integers(0, 200),
    limit=st.integers(0, 20),
)
def test_c_and_python_scanners_agree(parts: list[bytes], pos: int, stop: int, limit: int) -> None:
    assert _c_scan is not None
    chunk = b"".join(parts)
    stop = min(stop, len(chunk))
    c_events, c_pos = _c_scan(chunk, pos, stop, limit, "7")
    py_events, py_pos = sse._scan_simple_py(chunk, pos, stop, limit, "7")
    assert (c_events, c_pos) == (py_events, py_pos)
    assert all(e.last_event_id == "7" for e in c_events + py_events)


def test_scanner_rejects_wrong_arguments() -> None:
    if _c_scan is None:
        return
    with pytest.raises(TypeError):
        _c_scan("not bytes", 0, 1, 1, "")
    with pytest.raises(TypeError):
        _c_scan(b"data: x\n\n", 0, 9, 9, None)
