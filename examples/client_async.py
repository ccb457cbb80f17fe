"""Read the example app's stream from Python (asyncio) with tokenwire's client.

python examples/client_async.py http://127.0.0.1:8000 "Tell me a story"
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import quote

import orjson

from tokenwire.client import AsyncEventSource


async def stream_reply(base_url: str, prompt: str) -> str:
    """Print the reply as it arrives; return it whole. Raises ``RuntimeError`` when the
    server reports an error in the stream."""
    parts: list[str] = []
    # No reconnection: asking again would start a new reply.
    source = AsyncEventSource(f"{base_url}/chat?prompt={quote(prompt)}", reconnect=False)
    async with source:
        async for event in source:
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
    asyncio.run(stream_reply(url, " ".join(sys.argv[2:]) or "Tell me a story"))
