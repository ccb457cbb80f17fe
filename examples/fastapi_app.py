"""A FastAPI app that streams an agent's reply to browsers and scripts.

    uvicorn examples.fastapi_app:app          # then open http://127.0.0.1:8000/

- ``GET /``: the page in ``chat.html`` (it reads the stream with the browser's EventSource).
- ``GET /chat?prompt=...&temperature=...&max_tokens=...``: the reply as
  ``data: {"chunk": "..."}`` events, then ``data: [DONE]``; a failure mid-stream ends it
  with ``event: error`` (``{"type": ..., "message": ...}``).
- ``POST /chat`` with ``{"prompt": ..., "options": {...}}``: the same stream, produced
  from a task through tokenwire's ``ChunkSender`` (the seed's ``sender.send`` pattern).

The agent is "assistant" from ./tokenwire.toml (or TOKENWIRE_CONFIG); without one it is
the offline demo model. Each request gets its own conversation (``new_conversation``),
sharing the provider's connection pool. If the client goes away, the agent stream is
closed at once, and with it the upstream connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from tokenwire.agent import Agent, Config, StreamOptions, load_config
from tokenwire.llm.model import TextDelta
from tokenwire.server import ChunkSender, EventStreamResponse

PAGE = Path(__file__).with_name("chat.html")


class ChatBody(BaseModel):
    prompt: str
    options: dict[str, Any] | None = None


def create_app(
    config: Config | None = None, agent_name: str = "assistant", *, agent: Agent | None = None
) -> FastAPI:
    """The app, for ``agent`` or else the agent ``agent_name`` of ``config`` (default:
    :func:`load_config`)."""
    base: Agent = agent or Agent.from_config(config or load_config(), agent_name)
    app = FastAPI(title="tokenwire agent example")

    def options_or_400(options: dict[str, Any]) -> StreamOptions | Response:
        try:
            return StreamOptions.coerce(options)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/chat")
    async def chat_get(
        prompt: str, temperature: float | None = None, max_tokens: int | None = None
    ) -> Response:
        given = {"temperature": temperature, "max_tokens": max_tokens}
        options = options_or_400({k: v for k, v in given.items() if v is not None})
        if isinstance(options, Response):
            return options
        agent = base.new_conversation()

        async def events() -> AsyncIterator[Any]:
            async for chunk in agent.chat_stream(prompt, options):
                yield {"chunk": chunk}
            yield "[DONE]"

        return EventStreamResponse(events())

    @app.post("/chat")
    async def chat_post(body: ChatBody) -> Response:
        options = options_or_400(body.options or {})
        if isinstance(options, Response):
            return options
        agent = base.new_conversation()
        sender, response = ChunkSender.create()

        async def produce() -> None:
            # `async with sender` sends [DONE] at the end, or an error event if the
            # agent fails; if the client leaves, send() raises and the block ends.
            async with sender, agent.stream(body.prompt, options) as stream:
                async for delta in stream:
                    if isinstance(delta, TextDelta):
                        await sender.send(delta.text)

        sender.produce(produce())  # the sender keeps the task and collects its outcome
        return response

    return app


app = create_app()
