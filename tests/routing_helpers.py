"""A scripted upstream for the routing tests (``tests/test_gateway_routing.py``): real HTTP,
Anthropic Messages (``/v1/messages``) and OpenAI chat completions
(``/v1/chat/completions``), written by hand in each API's own wire format (not with
tokenwire's encoders, so that the gateway is tested against what the APIs send).

Every reply is :data:`FABLE`, one word (with its leading space) per event. The model
name chooses a fault: ``fable`` is healthy; ``fable:FAULT`` (faults may be combined,
``fable:trail:cut@5``):

- ``cut@N``: N words, then the body ends cleanly without the protocol's end marker
  (``message_stop`` / ``[DONE]``): a cut connection, from the reader's point of view;
- ``reset@N``: N words, then the TCP connection is aborted mid-body;
- ``stall@N``: N words, then silence until the client goes away;
- ``error@N``: N words, then an in-band overloaded error (Anthropic ``event: error``
  with ``overloaded_error``; OpenAI an ``{"error": {...}}`` chunk);
- ``pause@N``: N words, then a wait for :attr:`UpstreamState.gate`, then the rest;
- ``hold``: no response head until :attr:`UpstreamState.hold` opens (if it is set);
- ``hang``: no response head ever (until the client goes away);
- ``429once``: the first request for the model answers 429 with ``Retry-After: 0.2``
  (OpenAI: ``retry-after-ms: 200`` too; ``retry@S``: S seconds) and an error body;
  later ones stream;
- ``500`` / ``400`` / ``overloaded`` (HTTP 529, Anthropic's ``overloaded_error``);
- ``switch``: HTTP 500 while :attr:`UpstreamState.broken` is set, else healthy;
- ``trail``: the words carry their trailing space instead (``"A "``, ``"thirsty "``).

**Prefill**: when the request's last message is an assistant message (Anthropic:
always; OpenAI: only with ``continue_final_message: true`` in the body), its text must
be the beginning of FABLE without trailing whitespace, and only the words after it are
streamed (the first one with the whitespace before it). Anything else is answered with
an in-band ``invalid_request_error`` naming the problem (and noted in
:attr:`UpstreamState.problems`), so that a test fails loudly.

Usage: 10 input tokens; output tokens = the words sent (Anthropic's ``message_start``
says 1 output token, as the real API does). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "FABLE",
    "INPUT_TOKENS",
    "WORDS",
    "Gate",
    "Recorded",
    "UpstreamState",
    "anthropic_text",
    "closed_port",
    "openai_text",
    "routing_upstream",
    "wait_until",
]

FABLE = (
    "A thirsty crow found a pitcher with a little water and dropped pebbles in"
    " until the water rose high enough to drink."
)
WORDS = re.findall(r"\s*\S+", FABLE)  # "A", " thirsty", " crow", ...
TRAILING_WORDS = re.findall(r"\S+\s*", FABLE)  # "A ", "thirsty ", ...
INPUT_TOKENS = 10

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_ABORT = "routing_helpers.abort"


def wait_until(
    condition: Callable[[], bool], timeout: float = 20.0, what: str = "the condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (a bound for a
    loaded machine, never a pace)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Gate:
    """A one-shot gate opened from any thread and awaited on any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.waiting = threading.Event()  # someone has waited on it

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        with self._lock:
            if self._open:
                return
            event = asyncio.Event()
            self._waiters.append((asyncio.get_running_loop(), event))
        self.waiting.set()
        await event.wait()


@dataclass
class Recorded:
    """One request the upstream received."""

    protocol: str  # "anthropic" or "openai"
    model: str
    body: dict[str, Any]
    prefill: str | None  # the final assistant message's text, when it continues it
    at: float = field(default_factory=time.monotonic)  # when it arrived
    words: int = 0  # words of FABLE sent
    aborted: bool = False  # its connection was aborted mid-body ("reset")
    ended: threading.Event = field(default_factory=threading.Event)  # its handling ended


@dataclass
class UpstreamState:
    """What the upstream received and the switches tests flip."""

    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # prefills that were not FABLE's
    gate: Gate = field(default_factory=Gate)  # what "pause@N" waits for
    hold: Gate | None = None  # what "hold" waits for (None: it does not wait)
    broken: threading.Event = field(default_factory=threading.Event)
    _seen: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def reset(self) -> None:
        """Forget everything (a shared upstream between tests)."""
        with self._lock:
            self.requests.clear()
            self.problems.clear()
            self._seen.clear()
        self.gate = Gate()
        self.hold = None
        self.broken.clear()

    def record(self, entry: Recorded) -> int:
        """Record a request; returns how many requests for its model came before."""
        with self._arrived:
            before = self._seen.get(entry.model, 0)
            self._seen[entry.model] = before + 1
            self.requests.append(entry)
            self._arrived.notify_all()
        return before

    def to(self, model: str, protocol: str | None = None) -> list[Recorded]:
        """The requests for ``model`` (over ``protocol``, if given)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.model == model and (protocol is None or r.protocol == protocol)
            ]

    def wait_requests(self, count: int, timeout: float = 20.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"the upstream got {len(self.requests)} requests, expected {count}"
                )


# --- the wire formats ---------------------------------------------------------------------


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _openai_chunk(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def anthropic_text(content: Any) -> str:
    """The text of an Anthropic message's ``content`` (a string or blocks)."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def openai_text(content: Any) -> str:
    """The text of an OpenAI message's ``content`` (a string or parts)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


ANTHROPIC_OVERLOADED = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
}
OPENAI_OVERLOADED = {
    "error": {
        "message": "The server is overloaded. Please try again later.",
        "type": "server_error",
        "param": None,
        "code": "server_overloaded",
    }
}


@dataclass
class _Wait:
    gate: Gate | None  # None: until the client goes away


@dataclass
class _Word:
    data: bytes  # an event carrying one word of FABLE


class _Abort:
    pass


Step = bytes | _Word | _Wait | _Abort


@dataclass
class _Faults:
    cut: int | None = None
    reset: int | None = None
    stall: int | None = None
    error: int | None = None
    pause: int | None = None
    retry: int | None = None  # the Retry-After of "429once", seconds (default 0.2)
    flags: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, model: str) -> _Faults:
        faults = cls()
        for part in model.split(":")[1:]:
            name, sep, count = part.partition("@")
            if sep:
                setattr(faults, name, int(count))
            else:
                faults.flags.add(name)
        return faults


@dataclass
class _Encoding:
    """One protocol's events for a reply."""

    start: list[bytes]
    word: Callable[[str], bytes]
    error: bytes
    end: Callable[[int], list[bytes]]  # given the words sent


def _script(words: list[str], faults: _Faults, gate: Gate, wire: _Encoding) -> list[Step]:
    steps: list[Step] = [*wire.start]
    for i in range(len(words) + 1):
        if faults.error == i:
            return [*steps, wire.error]
        if faults.pause == i:
            steps.append(_Wait(gate))
        if faults.cut == i:
            return steps
        if faults.reset == i:
            return [*steps, _Abort()]
        if faults.stall == i:
            return [*steps, _Wait(None)]
        if i < len(words):
            steps.append(_Word(wire.word(words[i])))
    return [*steps, *wire.end(len(words))]


def _anthropic(model: str) -> _Encoding:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_fable",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # As the real API: message_start counts one output token.
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }

    def word(text: str) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return _anthropic_event("content_block_delta", delta)

    def end(sent: int) -> list[bytes]:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": sent},
        }
        return [
            _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _anthropic_event("message_delta", delta),
            _anthropic_event("message_stop", {"type": "message_stop"}),
        ]

    return _Encoding(
        start=[
            _anthropic_event("message_start", start),
            _anthropic_event("content_block_start", block),
            _anthropic_event("ping", {"type": "ping"}),
        ],
        word=word,
        error=_anthropic_event("error", ANTHROPIC_OVERLOADED),
        end=end,
    )


def _openai(model: str, include_usage: bool) -> _Encoding:
    head = {"id": "chatcmpl-fable", "object": "chat.completion.chunk", "created": 1700000000}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _openai_chunk({**head, "model": model, "choices": [choice]})

    def end(sent: int) -> list[bytes]:
        out = [chunk({}, "stop")]
        if include_usage:
            usage = {
                "prompt_tokens": INPUT_TOKENS,
                "completion_tokens": sent,
                "total_tokens": INPUT_TOKENS + sent,
            }
            out.append(_openai_chunk({**head, "model": model, "choices": [], "usage": usage}))
        return [*out, b"data: [DONE]\n\n"]

    return _Encoding(
        start=[chunk({"role": "assistant", "content": ""})],
        word=lambda text: chunk({"content": text}),
        error=_openai_chunk(OPENAI_OVERLOADED),
        end=end,
    )


class _Script(Response):
    """An event stream sent step by step. Waits end early when the client goes away,
    and so does the stream; the words sent are counted in the request's record."""

    def __init__(self, steps: list[Step], entry: Recorded) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.steps = steps
        self.entry = entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._run(scope, send, gone)
        finally:
            gone.cancel()
            self.entry.ended.set()

    async def _run(self, scope: Scope, send: Send, gone: asyncio.Future[None]) -> None:
        steps = list(self.steps)
        # "hold" and "hang" wait before the response head.
        while steps and isinstance(steps[0], _Wait):
            if not await _wait(steps.pop(0), gone):  # type: ignore[arg-type]
                return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for step in steps:
            if isinstance(step, bytes | _Word):
                data = step.data if isinstance(step, _Word) else step
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if isinstance(step, _Word):
                    self.entry.words += 1
            elif isinstance(step, _Wait):
                if not await _wait(step, gone):
                    return
            else:
                abort = scope.get("extensions", {}).get(_ABORT)
                if abort is None:
                    raise RuntimeError("routing_helpers: abort the connection")
                abort()
                self.entry.aborted = True
                await asyncio.shield(gone)  # returning first would have uvicorn complain
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait(step: _Wait, gone: asyncio.Future[None]) -> bool:
    """Wait for ``step``'s gate (or for good); False if the client went away first."""
    if step.gate is None:
        await asyncio.shield(gone)
        return False
    opened = asyncio.ensure_future(step.gate.wait())
    try:
        await asyncio.wait({opened, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        opened.cancel()
    return not gone.done()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _prefill(protocol: str, body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return None
    last = messages[-1].get("content")
    if protocol == "anthropic":
        return anthropic_text(last)
    if body.get("continue_final_message") is True:
        return openai_text(last)
    return None


def _words(prefill: str | None, trailing: bool) -> list[str] | str:
    """The words to send after ``prefill``, or what is wrong with it."""
    if prefill is None:
        return list(TRAILING_WORDS if trailing else WORDS)
    if not prefill or prefill != prefill.rstrip():
        return f"the prefill {prefill!r} is empty or ends with whitespace"
    if not FABLE.startswith(prefill):
        return f"the prefill {prefill!r} is not a beginning of the fable"
    rest = FABLE[len(prefill) :]
    return re.findall(r"\s*\S+\s*" if trailing else r"\s*\S+", rest)


def _error(status: int, protocol: str, kind: str, message: str, **headers: str) -> Response:
    if protocol == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def routing_upstream(state: UpstreamState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The upstream app (an ASGI app for :func:`tests.conftest.serve`)."""

    async def handle(request: Request, protocol: str) -> Response:
        body = orjson.loads(await request.body())
        model = str(body.get("model"))
        prefill = _prefill(protocol, body)
        entry = Recorded(protocol, model, body, prefill)
        before = state.record(entry)
        faults = _Faults.parse(model)
        flags = faults.flags
        if not model.startswith("fable"):
            entry.ended.set()
            return _error(404, protocol, "not_found_error", f"no model {model!r}")
        if "429once" in flags and before == 0:
            entry.ended.set()
            kind = "rate_limit_error" if protocol == "anthropic" else "requests"
            wait = 0.2 if faults.retry is None else faults.retry
            extra = {"retry-after": f"{wait:g}"}
            if protocol == "openai":
                extra["retry-after-ms"] = f"{wait * 1000:g}"
            return _error(429, protocol, kind, "Rate limit reached, slow down", **extra)
        if "500" in flags or ("switch" in flags and state.broken.is_set()):
            entry.ended.set()
            kind = "api_error" if protocol == "anthropic" else "server_error"
            return _error(500, protocol, kind, "Internal server error")
        if "400" in flags:
            entry.ended.set()
            return _error(400, protocol, "invalid_request_error", "fable: bad request (400)")
        if "overloaded" in flags:
            entry.ended.set()
            return _error(529, protocol, "overloaded_error", "Overloaded")
        words = _words(prefill, "trail" in flags)
        if isinstance(words, str):
            state.problems.append(f"{protocol} {model}: {words}")
            if protocol == "anthropic":
                error = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": words},
                }
                return _Script([_anthropic_event("error", error)], entry)
            error = {"error": {"message": words, "type": "invalid_request_error"}}
            return _Script([_openai_chunk(error)], entry)
        if protocol == "anthropic":
            wire = _anthropic(model)
        else:
            wire = _openai(model, bool((body.get("stream_options") or {}).get("include_usage")))
        steps = _script(words, faults, state.gate, wire)
        if "hang" in flags:
            steps.insert(0, _Wait(None))
        elif "hold" in flags and state.hold is not None:
            steps.insert(0, _Wait(state.hold))
        return _Script(steps, entry)

    async def messages(request: Request) -> Response:
        return await handle(request, "anthropic")

    async def chat(request: Request) -> Response:
        return await handle(request, "openai")

    app = Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's send is a method of the request's cycle, which holds the transport:
        # how a script aborts the connection mid-body (anything else: raise, which has
        # uvicorn close it, noisily).
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope.setdefault("extensions", {})[_ABORT] = transport.abort
        await app(scope, receive, send)

    return outer


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    """A loopback URL nothing listens on (connections are refused)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield f"http://127.0.0.1:{port}"
