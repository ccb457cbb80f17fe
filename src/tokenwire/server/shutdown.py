"""Ending open event streams when the server shuts down.

An ASGI server cannot tell a running response that it is shutting down: uvicorn's
SIGTERM/SIGINT handler only sets ``Server.should_exit``, marks busy connections
"close after this response" and then waits (up to ``timeout_graceful_shutdown``,
forever by default) for responses to finish, and the lifespan ``shutdown`` message
comes only *after* that wait. A stream that never ends on its own would hold the
process until it is killed.

So tokenwire keeps a per-event-loop registry of open streams, and
:func:`request_shutdown` ends them all: each stops its source (an async generator's
``finally`` runs), writes its protocol's final event where that matters, and ends
the HTTP body properly. When a stream starts on the main thread and a Python-level
handler for SIGTERM/SIGINT is installed (uvicorn, gunicorn workers and hypercorn all
install one), that handler is wrapped, through the public ``signal`` API, by one that
first schedules :func:`request_shutdown` on the loop and then calls the original
unchanged. Nothing of the server is patched, and the server's own handler is restored
untouched when the server restores its handlers at exit. The process default
(``SIG_DFL``, or Python's plain ``KeyboardInterrupt`` handler) is never replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["request_shutdown", "shutdown_requested"]

_SIGNALS: tuple[int, ...] = tuple(
    s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None
)


class _LoopState:
    __slots__ = ("__weakref__", "requested", "streams")

    def __init__(self) -> None:
        self.requested = False
        self.streams: set[Callable[[], None]] = set()


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _state(loop: asyncio.AbstractEventLoop) -> _LoopState:
    state = _states.get(loop)
    if state is None:
        with _lock:
            state = _states.setdefault(loop, _LoopState())
    return state


def register(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> _LoopState | None:
    """Register an open stream's ``stop`` callback on ``loop``; ``None`` if the loop
    is already shutting down (the stream should end at once). Called on the loop."""
    state = _state(loop)
    if state.requested:
        return None
    state.streams.add(stop)
    if _SIGNALS and threading.current_thread() is threading.main_thread():
        _chain_signal_handlers(loop)
    return state


def _fire(loop: asyncio.AbstractEventLoop) -> None:
    state = _state(loop)
    state.requested = True
    streams = list(state.streams)
    state.streams.clear()
    for stop in streams:
        stop()


def request_shutdown(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """End every open tokenwire stream on ``loop`` (default: on every loop that has
    served one), and make streams that start later on those loops end at once.

    Thread-safe: call it from any thread, e.g. right before telling a server you run
    yourself to stop (``server.should_exit = True``). The streams are ended by their
    own loop shortly after this returns.
    """
    if loop is not None:
        targets = [loop]
    else:
        with _lock:
            targets = list(_states.keys())
    for target in targets:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if target is running:
            _fire(target)
        else:
            # A closed loop raises RuntimeError: nothing is open on it.
            with contextlib.suppress(RuntimeError):
                target.call_soon_threadsafe(_fire, target)


def shutdown_requested(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether :func:`request_shutdown` reached ``loop`` (default: the running loop)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    state = _states.get(loop)
    return state is not None and state.requested


class _ChainedHandler:
    """Schedules :func:`request_shutdown` on ``loop``, then calls ``previous``."""

    __slots__ = ("loop", "previous")

    def __init__(self, previous: Callable[[int, FrameType | None], Any], loop: Any) -> None:
        self.previous = previous
        self.loop = loop

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        # A signal handler runs between bytecodes of the loop's own thread, so the
        # loop is only poked through its thread-safe entry point.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_fire, self.loop)
        return self.previous(signum, frame)


def _chain_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if isinstance(current, _ChainedHandler):
            if current.loop is loop:
                continue
            current = current.previous  # left over from a loop that has finished
        if not callable(current) or current is signal.default_int_handler:
            continue  # nobody runs a graceful shutdown on this signal: leave it alone
        signal.signal(sig, _ChainedHandler(current, loop))
