"""Routes with several deployments: choosing one, retrying before the first token, and
continuing a reply whose upstream failed half-way.

A ``[models.NAME]`` route with ``deployments`` (or ``retries``, or
``continue_on_failure``) is served by a :class:`ModelRouter`, one per route and gateway
process. For each request an :class:`Attempts` opens the upstream:

- **choosing**: ``strategy = "fallback"`` tries the deployments in the order listed;
  ``"balance"`` picks among the ready ones the one with the fewest requests in flight
  for its ``weight`` (ties: at random, in proportion to the weights);
- **retrying before the first token**: a connection error, a timeout, HTTP 408, 409,
  429, 5xx or 529, or an overloaded (or other server-side) error event before any
  content goes to the next deployment, or to the same one once its ``Retry-After`` has
  passed if that comes sooner, as long as the first-token deadline allows; at most
  ``retries`` attempts beyond the first. 400, 401, 403 and 404 answers are the client's
  or the configuration's problem and are not retried. The client sees one response;
  every attempt shows in the access log (``attempts``), ``/metrics``
  (``tokenwire_upstream_attempts_total``) and the trace (span events);
- **cooldown** (a circuit breaker): a deployment that failed ``cooldown_after`` times
  in a row is skipped for ``cooldown`` seconds, then one request probes it; success
  brings it back, failure starts another cooldown. Its state is
  ``tokenwire_deployment_state`` in ``/metrics``. Cooldowns and in-flight counts are
  this process's own: with several workers each one learns about a failing upstream by
  itself (``cooldown_after`` failures each).

**Continuing a reply** (``continue_on_failure = true``): when the upstream fails after
the reply began (the connection is cut, the idle deadline passes, an overloaded error
arrives in the stream), the next deployment that can continue (its provider's
``prefill``: Anthropic Messages and the demo model can; an OpenAI-compatible server
where its continue-final-message option is configured) gets the conversation again with
the text so far as the start of the assistant's reply, and only what it writes after
that is streamed on. The client sees one reply: no repeated text, one finish reason,
usage added up over the attempts (a cut attempt counts what its upstream had reported).
It is a different model finishing the sentence, and the reply says nothing of the
switch except in the access log. Replies with tool calls, reasoning or a refusal so far,
or with several choices, are not continued: they end with the protocol's error event,
as does a reply that no remaining deployment can continue. On such routes the gateway
always re-encodes the reply (no byte pass-through), so that the continuation joins the
stream it continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tokenwire.config import Config, ModelRoute, Timeouts
from tokenwire.control import guard
from tokenwire.errors import DropConnection, StreamError
from tokenwire.gateway.relay import Upstream, _bounded, _Late, _start_open
from tokenwire.llm._state import apply_usage
from tokenwire.llm.accumulate import error_from_delta
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    FinishDelta,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from tokenwire.llm.requests import ChatMessage, ChatRequest, TextPart
from tokenwire.providers import Item

if TYPE_CHECKING:
    from starlette.types import Receive

    from tokenwire.gateway.records import GatewayMetrics, _Record

__all__ = ["Attempt", "Attempts", "Deployed", "ModelRouter", "retryable"]

_RETRIED_STATUSES = frozenset({408, 409, 429})
_RETRIED_TYPES = frozenset({"timeout", "network", "overloaded", "rate_limit", "api_error"})
_BACKOFF = 0.25  # seconds before the same deployment is tried again (doubling, capped)
_MAX_BACKOFF = 2.0
_MIN_WAIT = 0.001  # a deadline already passed still gets a timer, not a negative one
STATES = ("up", "cooldown", "probing")


def retryable(err: StreamError) -> bool:
    """Whether another attempt (elsewhere, or later) may succeed where ``err`` failed:
    connection errors, timeouts, HTTP 408, 409, 429 and 5xx, overloaded and other
    server-side errors. Not 400, 401, 403, 404 and the like."""
    status = err.status
    if status is not None and 400 <= status < 500:
        return status in _RETRIED_STATUSES
    return err.type in _RETRIED_TYPES


class Deployed:
    """One deployment of a route and its health, shared by the route's requests."""

    __slots__ = (
        "cooling_until",
        "failures",
        "in_flight",
        "index",
        "label",
        "model",
        "prefill",
        "probing",
        "provider",
        "timeouts",
        "weight",
    )

    def __init__(
        self,
        index: int,
        provider: str,
        model: str,
        weight: float,
        timeouts: Timeouts,
        prefill: Mapping[str, Any] | None,
    ) -> None:
        self.index = index
        self.provider = provider
        self.model = model
        self.label = f"{provider}/{model}"
        self.weight = weight
        self.timeouts = timeouts
        self.prefill = prefill
        self.in_flight = 0
        self.failures = 0  # in a row
        self.cooling_until = 0.0  # the breaker is open until then
        self.probing = False  # a request is trying it after a cooldown

    def state(self, now: float) -> str:
        """``up``, ``cooldown`` (skipped) or ``probing`` (one request is trying it)."""
        if self.probing:
            return "probing"
        return "cooldown" if self.cooling_until > now else "up"


class ModelRouter:
    """A route's deployments and their shared state (in-flight counts, failures,
    cooldowns) in one gateway process. ``clock`` is the event loop's time by default."""

    def __init__(
        self,
        route: ModelRoute,
        config: Config,
        *,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.route = route
        self.name = route.name
        providers = config.providers
        if route.deployments:
            entries = [(d.provider, d.model, d.weight, d.timeouts) for d in route.deployments]
            # The route's own timeouts bound the whole request; each attempt has its own.
            self.timeouts = route.timeouts or Timeouts()
        else:  # a plain route with retries or continuation
            entries = [(route.provider, route.model, 1.0, route.timeouts)]
            self.timeouts = route.timeouts or providers[route.provider].timeouts
        self.deployments = [
            Deployed(
                i,
                provider,
                model,
                weight,
                timeouts or providers[provider].timeouts,
                providers[provider].prefill,
            )
            for i, (provider, model, weight, timeouts) in enumerate(entries)
        ]
        self._clock = clock
        self._rng = rng or random.Random()

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- health -------------------------------------------------------------------

    def succeeded(self, deployed: Deployed) -> None:
        deployed.failures = 0
        deployed.cooling_until = 0.0
        deployed.probing = False

    def failed(self, deployed: Deployed) -> None:
        deployed.failures += 1
        deployed.probing = False
        route = self.route
        if deployed.failures >= route.cooldown_after and route.cooldown > 0:
            deployed.cooling_until = self.now() + route.cooldown

    # -- choosing -----------------------------------------------------------------

    def pick(
        self, ready: list[float], tried: set[int], now: float, *, need_prefill: bool = False
    ) -> tuple[Deployed, float] | None:
        """The deployment to try next and when it may be tried (``ready``: when each
        may be tried again in this request), or None if none ever may."""
        usable: list[tuple[float, Deployed]] = []
        for d in self.deployments:
            if need_prefill and d.prefill is None:
                continue
            if d.state(now) != "up":
                continue  # cooling down, or another request probes it: not waited for
            usable.append((ready[d.index], d))
        if not usable:
            return None
        now_ready = [d for at, d in usable if at <= now]
        if not now_ready:
            at, chosen = min(usable, key=lambda pair: (pair[0], pair[1].index))
            return chosen, at
        if self.route.strategy == "balance":
            fresh = [d for d in now_ready if d.index not in tried] or now_ready
            return self._least_loaded(fresh), now
        return now_ready[0], now  # fallback: in the order listed

    def _least_loaded(self, candidates: list[Deployed]) -> Deployed:
        best = min(d.in_flight / d.weight for d in candidates)
        tied = [d for d in candidates if d.in_flight / d.weight == best]
        if len(tied) == 1:
            return tied[0]
        return self._rng.choices(tied, weights=[d.weight for d in tied])[0]

    def cooling_error(self) -> StreamError:
        """Every deployment is cooling down: an overloaded error that says until when."""
        now = self.now()
        ends = [d.cooling_until for d in self.deployments if d.cooling_until > now]
        wait = (min(ends) - now) if ends else None
        return StreamError(
            "overloaded",
            f"every deployment of model {self.name!r} is cooling down after failures",
            status=503,
            retry_after=wait,
            code="deployments_cooling_down",
        )


class Attempt:
    """An upstream that answered: its deployment, provider and items."""

    __slots__ = (
        "continuing",
        "deployed",
        "items",
        "raw",
        "released",
        "started",
        "upstream",
        "usage",
    )

    def __init__(
        self,
        deployed: Deployed,
        upstream: Upstream,
        items: AsyncIterator[Item],
        raw: bool,
        started: float,
        continuing: bool = False,
    ) -> None:
        self.continuing = continuing  # it continues a reply another attempt began
        self.deployed = deployed
        self.upstream = upstream
        self.items = items
        self.raw = raw
        self.started = started
        self.usage = Usage()  # what this attempt's upstream reported so far
        self.released = False


Opener = Callable[[str], Upstream]
"""The upstream of a provider name (raises ``StreamError`` if it cannot be built)."""


class Attempts:
    """One request's attempts on a route: what was tried, what is left, and the log of
    them for the access log, metrics and trace."""

    def __init__(
        self,
        router: ModelRouter,
        upstream_of: Opener,
        *,
        protocol: str,
        translate: bool,
        accepted: float,
        record: _Record,
        metrics: GatewayMetrics,
        receive: Receive | None = None,
    ) -> None:
        self.router = router
        self._upstream_of = upstream_of
        self.protocol = protocol  # the client's
        self.translate = translate  # no pass-through (continuation needs our encoder)
        self.accepted = accepted
        self.record = record
        self.metrics = metrics
        self.receive = receive
        self.left = router.route.retries + 1
        self._ready = [0.0] * len(router.deployments)
        self._failures = [0] * len(router.deployments)
        self._tried: set[int] = set()
        self.current: Attempt | None = None
        self.on_switch: Callable[[Upstream], None] | None = None

    @property
    def continues(self) -> bool:
        return self.router.route.continue_on_failure

    def _first_token_deadline(self, continuing: bool) -> float | None:
        route = self.router.timeouts
        limits = []
        if not continuing and route.first_token is not None:
            limits.append(self.accepted + route.first_token)
        if route.total is not None:
            limits.append(self.accepted + route.total)
        return min(limits) if limits else None

    async def open(self, chat: ChatRequest, *, continuing: bool = False) -> Attempt:
        """Open the next deployment for ``chat`` (``chat.model`` is replaced by the
        deployment's), retrying as the route allows. Raises the last failure when no
        attempt is left, or an ``overloaded`` error when every deployment cools down."""
        router = self.router
        last: StreamError | None = None
        while True:
            if self.left <= 0:
                raise last if last is not None else _no_attempt_left(router.name)
            now = router.now()
            picked = router.pick(self._ready, self._tried, now, need_prefill=continuing)
            overall = self._first_token_deadline(continuing)
            if picked is None or (overall is not None and picked[1] > overall):
                if last is not None:
                    raise last
                if continuing:
                    raise _no_attempt_left(router.name)
                raise router.cooling_error()  # nothing was tried: all are resting
            deployed, at = picked
            if at > now:  # its Retry-After or backoff ends before any other is ready
                await _bounded(asyncio.sleep(at - now), None, self.receive)
                continue  # choose again: things changed meanwhile
            if deployed.cooling_until and not deployed.probing:
                deployed.probing = True  # the breaker's trial request after a cooldown
            self.left -= 1
            self._tried.add(deployed.index)
            started = router.now()
            try:
                attempt = await self._open_on(deployed, chat, continuing, started)
            except StreamError as err:
                last = err
                self._failed(deployed, err, started, continuing)
                if not retryable(err):
                    raise
                continue
            return attempt

    async def _open_on(
        self, deployed: Deployed, chat: ChatRequest, continuing: bool, started: float
    ) -> Attempt:
        # A provider that cannot be built (its key variable unset) raises a 500 here:
        # a failed attempt like any other, the next deployment may work.
        upstream = self._upstream_of(deployed.provider)
        raw = not self.translate and upstream.protocol == self.protocol
        outgoing = replace(
            chat,
            model=deployed.model,
            include_usage=chat.include_usage or not raw,
        )
        if continuing and deployed.prefill:
            extra = chat.extra if chat.extra_protocol == upstream.protocol else {}
            outgoing.extra = {**extra, **deployed.prefill}
            outgoing.extra_protocol = upstream.protocol
        deadlines = [self._first_token_deadline(continuing)]
        if deployed.timeouts.first_token is not None:
            deadlines.append(started + deployed.timeouts.first_token)
        when = min((d for d in deadlines if d is not None), default=None)
        deployed.in_flight += 1
        try:
            items = await _start_open(
                upstream, outgoing, raw, when, self.receive, self.record.upstream_headers
            )
        except _Late:
            deployed.in_flight -= 1
            seconds = (when or started) - started
            raise StreamError(
                "timeout",
                f"The upstream sent no response within {seconds:.3g} s (first_chunk_timeout).",
                status=504,
                code="first_chunk_timeout",
            ) from None
        except BaseException:
            deployed.in_flight -= 1
            raise
        attempt = Attempt(deployed, upstream, items, raw, started, continuing)
        previous = self.current
        self.current = attempt
        if previous is None:  # the reply begins here: its labels and errors are this one's
            self.record.upstream = upstream.name
            self.record.protocol = upstream.protocol
        elif self.on_switch is not None:
            self.on_switch(upstream)
        return attempt

    def guarded(self, attempt: Attempt, continuing: bool) -> AsyncGenerator[Item, None]:
        """``attempt``'s items within its deadlines: the deployment's first-token and
        idle timeouts, and the route's first-token (unless continuing) and total
        deadlines counted from the request."""
        started = attempt.started
        timeouts = attempt.deployed.timeouts
        first = [timeouts.first_token] if timeouts.first_token is not None else []
        overall = self._first_token_deadline(continuing)
        if overall is not None:
            first.append(overall - started)
        total = self.router.timeouts.total
        return guard(
            attempt.items,
            timeout=max(self.accepted + total - started, _MIN_WAIT) if total else None,
            first_chunk_timeout=max(min(first), _MIN_WAIT) if first else None,
            idle_timeout=timeouts.idle,
            started=started,
        )

    # -- bookkeeping ------------------------------------------------------------------

    def _failed(
        self, deployed: Deployed, err: StreamError, started: float, continuing: bool
    ) -> None:
        """An attempt on ``deployed`` failed with ``err``."""
        router = self.router
        if retryable(err):
            router.failed(deployed)
        else:
            deployed.probing = False
        i = deployed.index
        self._failures[i] += 1
        wait = err.retry_after
        if wait is None:
            wait = min(_BACKOFF * 2 ** (self._failures[i] - 1), _MAX_BACKOFF)
        self._ready[i] = router.now() + wait
        self._log(deployed, f"error:{err.type}", started, continuing, err)

    def release(self, attempt: Attempt, err: StreamError | None, *, delivered: bool) -> None:
        """``attempt`` ended: well (``err`` None), or with ``err`` after it had (or had
        not: ``delivered``) sent content."""
        if attempt.released:
            return
        attempt.released = True
        deployed = attempt.deployed
        deployed.in_flight -= 1
        if err is None:
            self.router.succeeded(deployed)
            self._log(deployed, "ok", attempt.started, attempt.continuing, None, attempt.usage)
        else:
            self._failed(deployed, err, attempt.started, attempt.continuing)
            if attempt.usage != Usage():
                self.record.attempts[-1]["usage"] = _usage_dict(attempt.usage)

    def abandon(self) -> None:
        """The reply is over before its attempt ended (the client left, the relay was
        closed or never started): the attempt is released unjudged."""
        current = self.current
        if current is not None and not current.released:
            current.released = True
            current.deployed.in_flight -= 1
            current.deployed.probing = False

    def first_token(self, attempt: Attempt) -> None:
        """The attempt's upstream delivered content: it works."""
        self.router.succeeded(attempt.deployed)

    def _log(
        self,
        deployed: Deployed,
        outcome: str,
        started: float,
        continuing: bool,
        err: StreamError | None,
        usage: Usage | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "deployment": deployed.label,
            "outcome": outcome,
            "ms": round((self.router.now() - started) * 1000, 2),
        }
        if continuing:
            entry["continuation"] = True
        if err is not None and err.status is not None:
            entry["status"] = err.status
        if usage is not None and usage != Usage():
            entry["usage"] = _usage_dict(usage)
        self.record.attempts.append(entry)
        self.metrics.attempts.inc(self.router.name, deployed.label, outcome)
        if self.record.trace is not None:
            self.record.trace.attempt(entry)


def _no_attempt_left(name: str) -> StreamError:
    return StreamError(
        "overloaded", f"no deployment of model {name!r} can take the request", status=503
    )


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        k: v
        for k, v in (("input_tokens", usage.input_tokens), ("output_tokens", usage.output_tokens))
        if v is not None
    }


def _added(a: Usage, b: Usage) -> Usage:
    def add(x: int | None, y: int | None) -> int | None:
        return y if x is None else x if y is None else x + y

    return Usage(
        input_tokens=add(a.input_tokens, b.input_tokens),
        output_tokens=add(a.output_tokens, b.output_tokens),
        cache_read_input_tokens=add(a.cache_read_input_tokens, b.cache_read_input_tokens),
        cache_creation_input_tokens=add(
            a.cache_creation_input_tokens, b.cache_creation_input_tokens
        ),
        reasoning_tokens=add(a.reasoning_tokens, b.reasoning_tokens),
    )


_CONTENT = (TextDelta, ToolCallDelta, ReasoningDelta, RefusalDelta)
_UNCONTINUABLE = (ToolCallDelta, ReasoningDelta, RefusalDelta)


class _Progress:
    """What the client has been sent so far, for continuing it."""

    __slots__ = ("before", "blocked", "finished", "pending", "sent", "text", "tokens")

    def __init__(self) -> None:
        self.sent = False  # any content
        self.finished = False  # a finish reason was sent
        self.blocked = False  # something a continuation cannot carry on
        self.text: list[str] = []
        self.tokens = 0  # content deltas: the output so far where usage is unknown
        self.before = Usage()  # the usage of the attempts before the current one
        self.pending = ""  # whitespace left off the prefill, dropped from the continuation


async def routed_items(
    attempts: Attempts, first: Attempt, chat: ChatRequest
) -> AsyncGenerator[Item, None]:
    """The items of a routed reply: ``first``'s, and on a failure before any content
    another attempt's, or (``continue_on_failure``) after content a continuation's.
    ``chat`` is the request as sent upstream (any deployment's model)."""
    attempt = first
    progress = _Progress()
    continuing = False
    translate = attempts.translate
    try:
        while True:
            failure: StreamError | None = None
            in_band: ErrorDelta | None = None
            counted = progress.tokens
            try:
                async with contextlib.aclosing(attempts.guarded(attempt, continuing)) as items:
                    async for raw, deltas in items:
                        if progress.sent:  # the common case, kept short
                            if translate:
                                out, in_band = _continued(deltas, attempt, progress, continuing)
                                if out:
                                    yield None, out
                                if in_band is not None:
                                    break
                                continue
                            yield raw, deltas  # passed through as it came
                            if len(deltas) == 1 and type(deltas[0]) is TextDelta:
                                continue
                            in_band = _error_in(deltas)
                            if in_band is not None:  # the client has it; the reply is over
                                _ended_by(attempts, attempt, in_band)
                                return
                            continue
                        if translate:
                            out, in_band = _continued(deltas, attempt, progress, continuing)
                        else:
                            out, in_band = deltas, _error_in(deltas)
                        content = _has_content(out)
                        if in_band is not None and not content:
                            break  # an error before the first token: try again
                        if content:
                            progress.sent = True
                            attempts.first_token(attempt)
                        if translate:
                            if out:
                                yield None, out
                            if in_band is not None:
                                break
                            continue
                        yield raw, deltas
                        if in_band is not None:  # after content: the client has it too
                            _ended_by(attempts, attempt, in_band)
                            return
            except DropConnection as exc:  # a demo deployment's cut: the upstream's cut
                failure = StreamError("network", f"the upstream's reply was cut off: {exc}")
            except StreamError as err:
                failure = err
            if in_band is not None:
                failure = error_from_delta(in_band, attempt.upstream.protocol)
            if failure is None:
                attempts.release(attempt, None, delivered=progress.sent)
                return
            sent = progress.tokens - counted
            if sent and (attempt.usage.output_tokens or 0) < sent:
                # Cut before it reported its output (Anthropic's start says 1): what it
                # sent counts, a piece being about a token.
                attempt.usage = replace(attempt.usage, output_tokens=sent)
            attempts.release(attempt, failure, delivered=progress.sent)
            if sent:  # an attempt that sent nothing adds nothing to the reply's usage
                progress.before = _added(progress.before, attempt.usage)
            if not progress.sent:
                if not retryable(failure):
                    raise failure
                attempt = await _reopen(attempts, chat, failure, continuing=False)
                continue
            if progress.finished:
                return  # cut after its finish: the reply is whole (the log says so)
            if not (translate and attempts.continues and not progress.blocked) or not retryable(
                failure
            ):
                # Told in the client's protocol (an in-band error too: the encoder knows
                # one upstream's vocabulary, the failure may come from another's).
                raise failure
            continuation = _continuation(chat, progress)
            attempt = await _reopen(attempts, continuation, failure, continuing=True)
            attempts.metrics.continuations.inc(attempts.router.name, attempt.deployed.label)
            continuing = True
    finally:
        attempts.abandon()


def _ended_by(attempts: Attempts, attempt: Attempt, error: ErrorDelta) -> None:
    """A passed-through reply ended with the upstream's error event (sent on as is)."""
    attempts.release(attempt, error_from_delta(error, attempt.upstream.protocol), delivered=True)


async def _reopen(
    attempts: Attempts, chat: ChatRequest, failure: StreamError, *, continuing: bool
) -> Attempt:
    """The next attempt. If none opens, a continuation ends with ``failure`` (what
    stopped the reply); a retry before the first token, with the last attempt's error."""
    try:
        return await attempts.open(chat, continuing=continuing)
    except StreamError:
        if continuing:
            raise failure from None
        raise


def _continuation(chat: ChatRequest, progress: _Progress) -> ChatRequest:
    """``chat`` with the reply so far as the start of the assistant's message."""
    text = "".join(progress.text)
    # Anthropic refuses a prefill ending in whitespace; the continuation writes it again.
    prefill = text.rstrip()
    progress.pending = text[len(prefill) :]
    messages = list(chat.messages)
    if prefill:
        messages.append(ChatMessage("assistant", [TextPart(prefill)]))
    max_tokens = chat.max_tokens
    if max_tokens is not None:
        used = progress.before.output_tokens or progress.tokens
        max_tokens = max(max_tokens - used, 1)
    return replace(chat, messages=messages, max_tokens=max_tokens)


def _continued(
    deltas: list[Delta], attempt: Attempt, progress: _Progress, continuing: bool
) -> tuple[list[Delta], ErrorDelta | None]:
    """The deltas to send for an upstream item, and an in-band error it ended with."""
    out: list[Delta] = []
    for delta in deltas:
        kind = type(delta)
        if kind is TextDelta:
            text = delta.text  # type: ignore[union-attr]
            if delta.choice:  # type: ignore[union-attr]
                progress.blocked = True
            elif progress.pending:
                pending = progress.pending
                skip = 0
                while skip < len(text) and skip < len(pending) and text[skip] == pending[skip]:
                    skip += 1
                progress.pending = ""
                if skip:
                    text = text[skip:]
                    if not text:
                        continue
                    delta = TextDelta(text)
            progress.text.append(text)
            progress.tokens += 1
        elif kind is ErrorDelta:
            return out, delta  # type: ignore[return-value]
        elif kind is FinishDelta:
            progress.finished = True
        elif kind in _UNCONTINUABLE:
            progress.blocked = True
            progress.tokens += 1
        elif kind is MessageStart:
            usage = delta.usage  # type: ignore[union-attr]
            if usage is not None:
                apply_usage(attempt.usage, usage)
            if continuing:  # the client has its start; only the usage goes on
                if usage is not None:
                    out.append(UsageDelta(_added(progress.before, attempt.usage)))
                continue
            if progress.before != Usage() and usage is not None:
                delta = replace(delta, usage=_added(progress.before, attempt.usage))  # type: ignore[arg-type]
        elif kind is UsageDelta:
            apply_usage(attempt.usage, delta.usage)  # type: ignore[union-attr,arg-type]
            if progress.before != Usage():
                delta = UsageDelta(_added(progress.before, attempt.usage))
        out.append(delta)
    return out, None


def _error_in(deltas: list[Delta]) -> ErrorDelta | None:
    for delta in deltas:
        if type(delta) is ErrorDelta:
            return delta
    return None


def _has_content(deltas: list[Delta]) -> bool:
    return any(type(delta) in _CONTENT for delta in deltas)
