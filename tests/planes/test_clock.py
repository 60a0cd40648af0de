"""The clocks: historical time moves only with the data; real time is the wall clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from planes.clock import ClockWentBackwardsError, HistoricalClock, RealtimeClock
from planes.config import Config, load_config
from planes.runtime import make_clock

# -- HistoricalClock ---------------------------------------------------------------------


async def test_historical_clock_starts_where_told_and_only_data_moves_it() -> None:
    clock = HistoricalClock(start_ms=5_000)
    assert not clock.is_realtime
    assert clock.now_ms() == 5_000
    await asyncio.sleep(0.01)  # wall time passes, data time does not
    assert clock.now_ms() == 5_000
    assert clock.advance_to(7_500) == 0
    assert clock.now_ms() == 7_500
    await clock.pace(9_000)
    assert clock.now_ms() == 9_000


async def test_sleepers_wake_in_time_order_at_their_data_time() -> None:
    clock = HistoricalClock(start_ms=0)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now_ms()))

    tasks = [
        asyncio.create_task(sleeper(name, seconds))
        for name, seconds in [("five", 5), ("one", 1), ("three", 3), ("two-and-a-half", 2.5)]
    ]
    await asyncio.sleep(0)  # let every task reach its sleep
    assert clock.sleepers == 4
    for ts in range(500, 6_001, 500):
        await clock.pace(ts)
    await asyncio.gather(*tasks)
    assert woke == [("one", 1_000), ("two-and-a-half", 2_500), ("three", 3_000), ("five", 5_000)]
    assert clock.sleepers == 0


async def test_one_big_jump_wakes_every_due_sleeper_in_time_order() -> None:
    clock = HistoricalClock(start_ms=1_000)
    woke: list[int] = []

    async def sleeper(until: int) -> None:
        await clock.sleep_until(until)
        woke.append(until)

    tasks = [asyncio.create_task(sleeper(until)) for until in (4_000, 2_000, 9_000, 3_000, 2_000)]
    await asyncio.sleep(0)
    assert clock.advance_to(5_000) == 4  # 9_000 is not due yet
    await asyncio.sleep(0)
    assert woke == [2_000, 2_000, 3_000, 4_000]
    assert clock.sleepers == 1
    await clock.pace(9_000)
    await asyncio.gather(*tasks)
    assert woke[-1] == 9_000


async def test_pace_lets_a_woken_sleeper_run_before_it_returns() -> None:
    clock = HistoricalClock(start_ms=0)
    seen: list[int] = []

    async def sleeper() -> None:
        await clock.sleep(1)
        seen.append(clock.now_ms())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    await clock.pace(1_000)
    assert seen == [1_000]  # ran inside pace(), before the data moved on
    await task


async def test_a_cancelled_sleeper_is_not_counted_or_woken() -> None:
    clock = HistoricalClock(start_ms=0)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.sleepers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    assert clock.advance_to(20_000) == 0


@pytest.mark.parametrize("earlier", [0, 9_999])
async def test_historical_time_never_goes_backwards(earlier: int) -> None:
    clock = HistoricalClock(start_ms=10_000)
    with pytest.raises(ClockWentBackwardsError, match="cannot go back"):
        clock.advance_to(earlier)
    with pytest.raises(ClockWentBackwardsError):
        await clock.pace(earlier)
    assert clock.now_ms() == 10_000
    assert clock.advance_to(10_000) == 0  # standing still is fine
    assert issubclass(ClockWentBackwardsError, ValueError)


async def test_sleeping_zero_or_until_the_past_returns_at_once() -> None:
    clock = HistoricalClock(start_ms=50_000)
    await asyncio.wait_for(clock.sleep(0), 1)
    await asyncio.wait_for(clock.sleep(-3), 1)
    await asyncio.wait_for(clock.sleep_until(50_000), 1)
    await asyncio.wait_for(clock.sleep_until(1), 1)
    assert clock.now_ms() == 50_000
    assert clock.sleepers == 0


# -- RealtimeClock -----------------------------------------------------------------------


def test_realtime_clock_reads_the_wall_clock() -> None:
    clock = RealtimeClock()
    assert clock.is_realtime
    before = time.time() * 1000
    now = clock.now_ms()
    after = time.time() * 1000
    assert isinstance(now, int)
    assert before - 1 <= now <= after + 1


async def test_realtime_sleep_really_sleeps() -> None:
    clock = RealtimeClock()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await clock.sleep(0.05)
    assert loop.time() - started >= 0.045
    started = loop.time()
    await clock.sleep_until(clock.now_ms() + 50)
    assert loop.time() - started >= 0.035  # now_ms() truncates to whole milliseconds
    started = loop.time()
    await clock.pace(clock.now_ms() - 10_000)  # the past: no sleep at all
    await clock.sleep(-1)
    assert loop.time() - started < 0.05


# -- make_clock --------------------------------------------------------------------------


def _config(*sets: str) -> Config:
    return load_config(None, sets, environ={}, use_default_file=False)


def test_make_clock_is_historical_in_backtests_and_realtime_otherwise() -> None:
    backtest = make_clock(_config("runtime.mode=backtest", "runtime.start=2024-03-01T00:00:00Z"))
    assert isinstance(backtest, HistoricalClock)
    assert backtest.now_ms() == 1_709_251_200_000
    assert isinstance(make_clock(_config("runtime.mode=paper")), RealtimeClock)
    forced = make_clock(_config("runtime.mode=paper", "runtime.clock=historical"))
    assert isinstance(forced, HistoricalClock)
    wall = make_clock(_config("runtime.mode=backtest", "runtime.clock=realtime"))
    assert isinstance(wall, RealtimeClock)
