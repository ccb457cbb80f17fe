"""Serve event streams from any ASGI app (Starlette, FastAPI, or bare ASGI).

- :class:`EventStreamResponse`: a Starlette ``Response`` (and plain ASGI app) that
  streams an (async) iterable of events with heartbeats, a send timeout on every
  write, prompt cleanup when the client leaves, and a clean end on server shutdown.
- Senders, for producing from a task as in ``sender, response = X.create(...)``:
  :class:`OpenAISender` (chat-completion chunks), :class:`AnthropicSender` (Messages
  events; :data:`ClaudeSender` is an alias), :class:`ResponsesSender` (OpenAI Responses
  API events), :class:`GeminiSender` (Gemini ``streamGenerateContent`` chunks),
  :class:`EventSender` (plain events) and
  :class:`ChunkSender` (the simple browser format ``data: {"chunk": ...}`` then
  ``data: [DONE]``).

Graceful shutdown
-----------------
uvicorn (and other ASGI servers) cannot tell a running response that the server is
stopping. On SIGTERM/SIGINT uvicorn stops accepting connections, lets busy ones
finish their current response and waits for them, for ``timeout_graceful_shutdown``
seconds (forever by default), and only then sends the lifespan ``shutdown`` message.
An event stream that never ends by itself would therefore hold the process until it
is killed.

tokenwire ends its open streams itself. The first time a stream starts on the main
thread, the Python-level SIGTERM and SIGINT handlers the server installed are wrapped
(with the public ``signal.signal``) by a handler that schedules
:func:`request_shutdown` on the event loop and then calls the server's handler
unchanged. On the signal, each open stream stops its source (an async generator's
``finally`` runs; a sender's next ``send`` raises ``ClientDisconnected``), writes a
final error event for the OpenAI and Anthropic senders so SDK clients do not take
the cut-short reply for a complete one (``overloaded``, "the server is shutting
down"; plain streams just end), and ends the HTTP body properly. uvicorn then sees
its connections done and exits at once. Nothing in the server is patched, and its
own handlers are what it restores at exit.

This works out of the box with ``uvicorn app:app``, ``uvicorn.run(...)`` and
``uvicorn.Server(config).serve()`` on the main thread (tested with uvicorn 0.54:
the process exits a fraction of a second after SIGTERM/SIGINT). Worker setups whose
workers install a Python-level handler on the main thread (uvicorn ``--workers``,
gunicorn's uvicorn worker) are handled the same way.
If you run the server off the main thread, or handle signals yourself (e.g. a
handler that sets ``server.should_exit = True``), call
:func:`tokenwire.server.request_shutdown` (thread-safe) when you begin stopping.
Don't rely on the lifespan ``shutdown`` message for this: uvicorn sends it only after
all responses have finished. Streams that start after shutdown was requested end at
once.
"""

from tokenwire.server.response import EventStreamResponse, encode_item
from tokenwire.server.senders import (
    AnthropicSender,
    ChunkSender,
    ClaudeSender,
    EventSender,
    GeminiSender,
    OpenAISender,
    ResponsesSender,
)
from tokenwire.server.shutdown import request_shutdown, shutdown_requested

__all__ = [
    "AnthropicSender",
    "ChunkSender",
    "ClaudeSender",
    "EventSender",
    "EventStreamResponse",
    "GeminiSender",
    "OpenAISender",
    "ResponsesSender",
    "encode_item",
    "request_shutdown",
    "shutdown_requested",
]
