"""Real-world inputs: the recorded OpenAI and Anthropic streams, under every chunking."""

from __future__ import annotations

import json

import pytest

from .conftest import recorded_dir, recorded_files
from .sse_helpers import feed_all

pytestmark = pytest.mark.usefixtures("both_scanners")

OPENAI = recorded_files("openai")
ANTHROPIC = recorded_files("anthropic")


def _reference_split(raw: bytes) -> list[tuple[str, str]]:
    """An independent, naive reading of these files (no CR, LF-only framing)."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines or not any(ln.startswith("data") for ln in lines):
            continue
        event = "message"
        data = []
        for ln in lines:
            name, _, value = ln.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value or "message"
            elif name == "data":
                data.append(value)
        out.append((event, "\n".join(data)))
    return out


@pytest.mark.parametrize("path", OPENAI or [None], ids=lambda p: p.name if p else "missing")
def test_recorded_openai_streams(path) -> None:
    if path is None:
        recorded_dir("openai")
    raw = path.read_bytes()
    events, _ = feed_all([raw])
    assert [(e.event, e.data) for e in events] == _reference_split(raw)
    assert events[-1].data == "[DONE]"
    for e in events[:-1]:
        assert json.loads(e.data)["object"] == "chat.completion.chunk"
    for size in (1, 7, 64, 4096):
        chunked, _ = feed_all([raw[i : i + size] for i in range(0, len(raw), size)])
        assert chunked == events


@pytest.mark.parametrize("path", ANTHROPIC or [None], ids=lambda p: p.name if p else "missing")
def test_recorded_anthropic_streams(path) -> None:
    if path is None:
        recorded_dir("anthropic")
    raw = path.read_bytes()
    events, _ = feed_all([raw])
    # Several files end without a final blank line: by the spec that last event is
    # unterminated and discarded; the naive reference keeps it.
    reference = _reference_split(raw)
    if not raw.endswith(b"\n\n"):
        reference = reference[:-1]
    assert [(e.event, e.data) for e in events] == reference
    for e in events:
        assert json.loads(e.data)["type"] == e.event
    for size in (1, 7, 64, 4096):
        chunked, _ = feed_all([raw[i : i + size] for i in range(0, len(raw), size)])
        assert chunked == events
