"""guard(): deadlines, cancellation and closing, on in-memory sources (units).

The same behaviour against real servers and clients is in test_control_servers.py.
Timing bounds are generous on purpose: they check liveness, never speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import StreamError, guard


class Source:
    """An async generator source that records how it ended."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.finally_ran = False
        self.exit: BaseException | None = None

    async def items(
        self, n: int, *, hang_at: int | None = None, delay: float = 0.0
    ) -> AsyncIterator[int]:
        try:
            for i in range(n):
                if i == hang_at:
                    await asyncio.Event().wait()  # blocks forever
                if delay:
                    await asyncio.sleep(delay)
                yield i
        except BaseException as exc:
            self.exit = exc
            raise
        finally:
            self.finally_ran = True
            self.closed.set()


async def collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


async def test_passes_items_through_and_ends() -> None:
    src = Source()
    assert [x async for x in guard(src.items(5), timeout=5, idle_timeout=5)] == [0, 1, 2, 3, 4]
    assert src.finally_ran


async def test_no_options_is_a_plain_pass_through() -> None:
    src = Source()
    assert [x async for x in guard(src.items(3))] == [0, 1, 2]


async def test_idle_timeout_interrupts_a_blocked_read() -> None:
    src = Source()
    got: list[int] = []
    with pytest.raises(StreamError) as info:
        await collect(guard(src.items(10, hang_at=3), idle_timeout=0.1), got)
    err = info.value
    assert got == [0, 1, 2]
    assert err.type == "timeout"
    assert err.code == "idle_timeout"
    assert "idle_timeout" in err.message and "0.1 s" in err.message
    assert src.finally_ran
    assert isinstance(src.exit, asyncio.CancelledError)  # the read itself was interrupted
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_first_chunk_timeout() -> None:
    src = Source()
    with pytest.raises(StreamError) as info:
        await collect(guard(src.items(3, hang_at=0), first_chunk_timeout=0.1, idle_timeout=60), [])
    assert info.value.code == "first_chunk_timeout"
    assert "first item" in info.value.message
    assert src.finally_ran


async def test_first_chunk_timeout_stops_applying_after_the_first_item() -> None:
    async def late_second() -> AsyncIterator[int]:
        yield 0  # at once
        await asyncio.sleep(0.3)
        yield 1

    assert [x async for x in guard(late_second(), first_chunk_timeout=0.1)] == [0, 1]


async def test_total_timeout_fires_even_while_items_keep_coming() -> None:
    src = Source()
    got: list[int] = []
    with pytest.raises(StreamError) as info:
        await collect(guard(src.items(10_000, delay=0.01), timeout=0.3, idle_timeout=1), got)
    assert info.value.code == "timeout"
    assert "ran longer than 0.3 s" in info.value.message
    assert 0 < len(got) < 10_000
    assert src.finally_ran


async def test_idle_timer_is_moved_not_fired_while_items_arrive() -> None:
    # 10 gaps of 0.03 s with idle_timeout 0.5: the one timer re-arms itself lazily.
    src = Source()
    assert len([x async for x in guard(src.items(10, delay=0.03), idle_timeout=0.5)]) == 10


async def test_consumer_time_does_not_count_as_idle() -> None:
    src = Source()
    got = []
    async for x in guard(src.items(3), idle_timeout=0.05):
        got.append(x)
        await asyncio.sleep(0.15)  # much longer than idle_timeout
    assert got == [0, 1, 2]


async def test_total_timeout_that_passes_while_the_consumer_works_stops_the_next_read() -> None:
    src = Source()
    got = []
    with pytest.raises(StreamError) as info:
        async for x in guard(src.items(10), timeout=0.1):
            got.append(x)
            await asyncio.sleep(0.2)
    assert got == [0]
    assert info.value.code == "timeout"
    assert src.finally_ran


async def test_zero_timeout_times_out_at_once() -> None:
    with pytest.raises(StreamError, match="first item"):
        await collect(guard(Source().items(3, hang_at=0), first_chunk_timeout=0), [])


async def test_cancel_event_interrupts_a_blocked_read() -> None:
    src = Source()
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, cancel.set)
    got: list[int] = []
    with pytest.raises(StreamError) as info:
        await collect(guard(src.items(10, hang_at=2), cancel=cancel), got)
    assert (info.value.type, info.value.code) == ("cancelled", "cancelled")
    assert got == [0, 1]
    assert src.finally_ran


async def test_cancel_event_set_before_start_reads_nothing() -> None:
    src = Source()
    cancel = asyncio.Event()
    cancel.set()
    with pytest.raises(StreamError, match="cancelled"):
        await collect(guard(src.items(3), cancel=cancel), [])


async def test_no_item_is_delivered_after_cancel_is_set() -> None:
    src = Source()
    cancel = asyncio.Event()
    got = []
    with pytest.raises(StreamError) as info:
        async for x in guard(src.items(10), cancel=cancel):
            got.append(x)
            if x == 1:
                cancel.set()
    assert got == [0, 1]
    assert info.value.type == "cancelled"
    assert src.finally_ran


async def test_enclosing_task_cancellation_propagates_and_closes() -> None:
    src = Source()
    got: list[int] = []
    task = asyncio.create_task(collect(guard(src.items(10, hang_at=2), idle_timeout=60), got))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == [0, 1]
    assert src.finally_ran


async def test_outside_cancel_and_our_deadline_together_stay_a_cancellation() -> None:
    # The source asks the loop to cancel its task and blocks; the zero idle timer is due
    # in the same loop iteration. The outside cancellation must win.
    async def source() -> AsyncIterator[int]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_soon(task.cancel)
        await asyncio.Event().wait()
        yield 1

    task = asyncio.create_task(collect(guard(source(), idle_timeout=0), []))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_source_that_swallows_the_interrupt_still_times_out() -> None:
    async def stubborn() -> AsyncIterator[int]:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        yield 1
        yield 2

    with pytest.raises(StreamError, match="idle_timeout"):
        await collect(guard(stubborn(), idle_timeout=0.05), [])
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_source_errors_become_categorized_stream_errors() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(StreamError) as info:
        await collect(guard(broken()), [])
    assert info.value.type == "network"
    assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_a_stream_error_from_the_source_passes_through_unchanged() -> None:
    original = StreamError("rate_limit", "slow down")

    async def limited() -> AsyncIterator[int]:
        raise original
        yield 1

    with pytest.raises(StreamError) as info:
        await collect(guard(limited()), [])
    assert info.value is original


async def test_consumer_break_with_aclosing_closes_at_once() -> None:
    src = Source()
    async with contextlib.aclosing(guard(src.items(10), idle_timeout=5)) as items:
        async for x in items:
            if x == 2:
                break
    assert src.finally_ran
    assert isinstance(src.exit, GeneratorExit)


async def test_abandoned_guard_is_closed_by_the_finalizer() -> None:
    src = Source()
    async for x in guard(src.items(10), idle_timeout=5, cancel=asyncio.Event()):
        if x == 2:
            break
    gc.collect()
    await asyncio.wait_for(src.closed.wait(), 2)


async def test_close_of_a_non_generator_source_and_of_the_iterable() -> None:
    class SDKLikeStream:
        """Like the SDKs' AsyncStream: an async-generator __aiter__ plus async close()."""

        def __init__(self) -> None:
            self.closed = False

        async def __aiter__(self) -> AsyncIterator[int]:
            yield 1
            await asyncio.sleep(10)
            yield 2

        async def close(self) -> None:
            self.closed = True

    stream = SDKLikeStream()
    with pytest.raises(StreamError):
        await collect(guard(stream, idle_timeout=0.05), [])
    assert stream.closed

    class Iter:
        def __init__(self) -> None:
            self.aclosed = 0

        def __aiter__(self) -> Iter:
            return self

        async def __anext__(self) -> int:
            raise StopAsyncIteration

        async def aclose(self) -> None:
            self.aclosed += 1

    it = Iter()
    assert [x async for x in guard(it)] == []
    assert it.aclosed == 1  # once: the iterator is the iterable


async def test_driven_from_a_new_task_per_item() -> None:
    # asyncio.wait_for (3.11) runs each __anext__ in a task of its own; the guard must
    # interrupt that task, not the caller.
    src = Source()
    items = guard(src.items(10, hang_at=1), idle_timeout=0.05)
    assert await asyncio.wait_for(anext(items), 5) == 0
    with pytest.raises(StreamError, match="idle_timeout"):
        await asyncio.wait_for(anext(items), 5)
    assert src.finally_ran


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": -1}, ValueError),
        ({"idle_timeout": math.nan}, ValueError),
        ({"first_chunk_timeout": "5"}, TypeError),
        ({"timeout": True}, TypeError),
        ({"cancel": object()}, TypeError),
    ],
)
async def test_bad_arguments_fail_before_iteration(kwargs: dict[str, Any], error: type) -> None:
    src = Source()
    with pytest.raises(error):
        guard(src.items(1), **kwargs)


async def test_not_an_async_iterable() -> None:
    with pytest.raises(TypeError, match="async iterable"):
        guard([1, 2, 3])  # type: ignore[arg-type]


async def test_no_timer_or_task_per_item() -> None:
    # Count the loop's timers and tasks while 200 items flow with every option set.
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    real_call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return real_call_at(when, *args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
    tasks_before = len(asyncio.all_tasks())
    try:
        src = Source()
        seen_tasks = 0
        async for _ in guard(
            src.items(200),
            timeout=60,
            first_chunk_timeout=30,
            idle_timeout=10,
            cancel=asyncio.Event(),
        ):
            seen_tasks = max(seen_tasks, len(asyncio.all_tasks()))
    finally:
        del loop.call_at
    assert len(timers) <= 2  # the first deadline, then one move to the idle deadline
    assert seen_tasks <= tasks_before + 1  # the single cancel watcher
