"""The agent: a provider, a model, a system prompt, default options and a history."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from tokenwire.config import Config, Timeouts
from tokenwire.control import guard
from tokenwire.errors import StreamError
from tokenwire.llm.accumulate import MessageBuilder, error_from_delta
from tokenwire.llm.model import Delta, ErrorDelta, FinishDelta, Message, TextDelta
from tokenwire.llm.stops import StopFilter
from tokenwire.options import StreamOptions
from tokenwire.providers import make_provider
from tokenwire.providers.base import Provider, ProviderRequest, Turn

__all__ = ["Agent", "AgentStream"]

Options = StreamOptions | Mapping[str, Any] | None
T = TypeVar("T")


class AgentStream:
    """One reply being streamed: an async iterator of :data:`~tokenwire.llm.model.Delta`.

    Yields ``MessageStart``, text / reasoning / tool-call pieces, ``FinishDelta`` and
    ``UsageDelta`` as the provider sends them, with stop sequences already enforced.
    :attr:`message` is the reply accumulated so far (complete once iteration ends).
    An error reported mid-stream is raised as :class:`~tokenwire.errors.StreamError`
    after the deltas before it; so is a stream that ends before the reply finished.
    Use ``async with`` (or :meth:`aclose`) to close the upstream connection promptly
    when stopping early; the turn is added to the agent's history only when the reply
    completes.
    """

    def __init__(
        self, agent: Agent, prompt: str, options: StreamOptions, cancel: asyncio.Event | None
    ) -> None:
        self.options = options
        self._builder = MessageBuilder()
        self._agent = agent
        self._prompt = prompt
        self._cancel = cancel
        self._gen = self._run()

    @property
    def message(self) -> Message:
        """The reply so far: text, usage, finish reason, tool calls..."""
        return self._builder.message

    def __aiter__(self) -> AgentStream:
        return self

    async def __anext__(self) -> Delta:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop: close the upstream connection. Safe to call more than once."""
        await self._gen.aclose()

    async def __aenter__(self) -> AgentStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Delta, None]:
        agent, opts = self._agent, self.options
        user = Turn("user", self._prompt)
        request = ProviderRequest(
            model=agent.model,
            messages=(*agent.history, user),
            system=agent.system,
            options=opts,
        )
        provider = agent.provider
        stops = StopFilter(opts.stop_sequences or ())
        add = self._builder.feed
        timeouts = agent.timeouts
        guarded = guard(
            provider.stream(request),
            timeout=opts.timeout if opts.timeout is not None else timeouts.total,
            first_chunk_timeout=(
                opts.first_token_timeout
                if opts.first_token_timeout is not None
                else timeouts.first_token
            ),
            idle_timeout=opts.idle_timeout if opts.idle_timeout is not None else timeouts.idle,
            cancel=self._cancel,
        )
        finished = False
        try:
            async for delta in guarded:
                if type(delta) is TextDelta:
                    text = stops.feed(delta.text)
                    if text:
                        out = delta if text is delta.text else TextDelta(text, delta.choice)
                        add(out)
                        yield out
                    if stops.stopped:
                        # Enforced here because the provider did not: stop reading, which
                        # closes the upstream connection (and stops paying for tokens).
                        finish = FinishDelta(
                            "stop", raw_reason="stop_sequence", stop_sequence=stops.matched
                        )
                        add(finish)
                        finished = True
                        yield finish
                        break
                    continue
                if type(delta) is ErrorDelta:
                    raise error_from_delta(delta, provider.name)
                if type(delta) is FinishDelta:
                    rest = stops.flush()
                    if rest:
                        held = TextDelta(rest, delta.choice)
                        add(held)
                        yield held
                    finished = True
                add(delta)
                yield delta
        except StreamError:
            raise
        except Exception as exc:
            raise StreamError.from_exception(exc) from exc
        finally:
            # Closes the provider's generator too, and with it the upstream connection.
            await guarded.aclose()
        if not finished:
            raise StreamError(
                "network",
                "the stream ended before the reply was complete",
                provider=provider.name,
            )
        agent.history.extend((user, Turn("assistant", self.message.text)))


class Agent:
    """A configured conversation partner: ``await agent.chat("Hello")``.

    Normally made by :func:`~tokenwire.agent.get_agent` from ``tokenwire.toml``; can also
    be built directly from a :class:`~tokenwire.providers.base.Provider`.
    ``options`` are the defaults for every call (a call's own options win field by
    field); ``timeouts`` come from the provider configuration and are overridden by the
    ``timeout`` / ``first_token_timeout`` / ``idle_timeout`` options.

    :attr:`history` is the conversation so far as :class:`Turn` turns; each
    completed reply adds the user turn and the assistant turn, so the next call
    continues the conversation. A call that fails or is stopped early adds nothing.
    Clear it with :meth:`reset` (or edit the list).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        model: str,
        system: str | None = None,
        options: Options = None,
        timeouts: Timeouts | None = None,
        name: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.system = system
        self.options = StreamOptions.coerce(options)
        self.timeouts = timeouts or Timeouts()
        self.name = name or model
        self.history: list[Turn] = []

    @classmethod
    def from_config(cls, config: Config, name: str = "assistant") -> Agent:
        """A new agent (with an empty history) for ``[agents.NAME]`` of ``config``.

        Raises :class:`~tokenwire.config.ConfigError` for an unknown agent, or a missing
        key variable."""
        spec = config.agent_spec(name)
        provider_config = config.providers[spec.provider]  # checked at load time
        return cls(
            make_provider(provider_config),
            model=spec.model,
            system=spec.system,
            options=spec.options,
            timeouts=provider_config.timeouts,
            name=name,
        )

    def __repr__(self) -> str:
        return (
            f"Agent(name={self.name!r}, provider={self.provider!r}, model={self.model!r}, "
            f"turns={len(self.history)})"
        )

    def stream(
        self, prompt: str, options: Options = None, *, cancel: asyncio.Event | None = None
    ) -> AgentStream:
        """The reply to ``prompt`` as a stream of deltas (see :class:`AgentStream`).

        ``options``: a :class:`StreamOptions` or a dict with the same keys, merged over
        the agent's defaults; invalid values raise :class:`ValueError` here, before
        anything is sent. ``cancel``: an ``asyncio.Event``; setting it stops the stream
        with ``StreamError("cancelled")`` and closes the upstream connection.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        return AgentStream(self, prompt, self.options.merged(options), cancel)

    async def chat_stream(
        self, prompt: str, options: Options = None, *, cancel: asyncio.Event | None = None
    ) -> AsyncIterator[str]:
        """The reply to ``prompt`` as text chunks (``str``), as they arrive.

        Raises :class:`~tokenwire.errors.StreamError` on failure, after the chunks
        already received.
        """
        async with self.stream(prompt, options, cancel=cancel) as stream:
            async for delta in stream:
                if type(delta) is TextDelta:
                    yield delta.text

    async def chat(
        self, prompt: str, options: Options = None, *, cancel: asyncio.Event | None = None
    ) -> str:
        """The whole reply to ``prompt`` (same machinery as :meth:`chat_stream`)."""
        async with self.stream(prompt, options, cancel=cancel) as stream:
            async for _ in stream:
                pass
        return stream.message.text

    def chat_stream_sync(self, prompt: str, options: Options = None) -> Iterator[str]:
        """:meth:`chat_stream` for code without an event loop (scripts, threads).

        The stream runs on a private background event loop; closing the iterator early
        (``break`` then garbage collection, or ``.close()``) closes the upstream.
        """
        return _iterate_sync(self.chat_stream(prompt, options))  # type: ignore[arg-type]

    def chat_sync(self, prompt: str, options: Options = None) -> str:
        """:meth:`chat` for code without an event loop."""
        return _run_sync(self.chat(prompt, options))

    def new_conversation(self) -> Agent:
        """A new agent with the same provider (and connection pool), model, system
        prompt, options and timeouts, and an empty history: one per user or session,
        e.g. per request in a web app."""
        return Agent(
            self.provider,
            model=self.model,
            system=self.system,
            options=self.options,
            timeouts=self.timeouts,
            name=self.name,
        )

    def reset(self) -> None:
        """Forget the conversation."""
        self.history.clear()

    async def aclose(self) -> None:
        """Release the provider's pooled connections."""
        await self.provider.aclose()


# --- sync bridge: one private event loop in a daemon thread, shared by all agents ----

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="tokenwire-agent-sync", daemon=True
            ).start()
            _loop = loop
        return _loop


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    future = asyncio.run_coroutine_threadsafe(coro, _background_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _iterate_sync(agen: AsyncGenerator[T, None]) -> Iterator[T]:
    loop = _background_loop()
    try:
        while True:
            future = asyncio.run_coroutine_threadsafe(_next(agen), loop)
            try:
                item = future.result()
            except StopAsyncIteration:
                return
            except BaseException:
                future.cancel()
                raise
            yield item
    finally:
        asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()
