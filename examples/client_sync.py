"""Read the example app's stream from a plain script with tokenwire's client (no asyncio),
using the POST route.

    python examples/client_sync.py http://127.0.0.1:8000 "Tell me a story"
"""

from __future__ import annotations

import sys

import orjson

from tokenwire.client import EventSource


def stream_reply(base_url: str, prompt: str, max_tokens: int = 200) -> str:
    """Print the reply as it arrives; return it whole. Raises ``RuntimeError`` when the
    server reports an error in the stream."""
    parts: list[str] = []
    body = {"prompt": prompt, "options": {"max_tokens": max_tokens}}
    with EventSource(f"{base_url}/chat", "POST", json=body, reconnect=False) as source:
        for event in source:
            if event.event == "error":
                error = orjson.loads(event.data)
                raise RuntimeError(f"{error['type']}: {error['message']}")
            if event.data == "[DONE]":
                break
            chunk = orjson.loads(event.data)["chunk"]
            parts.append(chunk)
            print(chunk, end="", flush=True)
    print()
    return "".join(parts)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    stream_reply(url, " ".join(sys.argv[2:]) or "Tell me a story")
