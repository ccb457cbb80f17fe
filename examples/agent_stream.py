"""Stream an agent's reply in a terminal: the async API and the sync one.

    python examples/agent_stream.py "Tell me a story"

Uses the agent "assistant" from ./tokenwire.toml (or TOKENWIRE_CONFIG); without one it
runs offline on the built-in demo model.
"""

from __future__ import annotations

import asyncio
import sys

from tokenwire.agent import StreamOptions, get_agent
from tokenwire.errors import StreamError


async def main(prompt: str) -> None:
    agent = await get_agent("assistant")
    try:
        async for chunk in agent.chat_stream(prompt):
            print(chunk, end="", flush=True)
        print()
        # A second turn: the agent remembers the conversation.
        opts = StreamOptions(temperature=0.7, max_tokens=60, stop_sequences=["\n\n"])
        async for chunk in agent.chat_stream("And then?", opts):
            print(chunk, end="", flush=True)
        print()
    except StreamError as exc:
        print(f"\n[stream failed: {exc.type}: {exc.message}]", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        await agent.aclose()


def main_sync(prompt: str) -> None:
    # For scripts without an event loop.
    agent = asyncio.run(get_agent("assistant"))
    for chunk in agent.chat_stream_sync(prompt, {"max_tokens": 40}):
        print(chunk, end="", flush=True)
    print()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--sync"]
    prompt = " ".join(args) or "Tell me a story"
    if "--sync" in sys.argv:
        main_sync(prompt)
    else:
        asyncio.run(main(prompt))
