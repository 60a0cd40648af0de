"""The two clocks behind ``contracts.ports.Clock``: wall time and data (historical) time.

Backtest and live share every code path; only the clock differs. A data source calls
``await clock.pace(ts)`` before it emits an event stamped ``ts``: the real-time clock sleeps until
then, the historical clock jumps there at once and wakes whoever was sleeping until a time
now reached. Nothing else moves historical time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class RealtimeClock:
    """Wall-clock time; ``sleep`` is ``asyncio.sleep``."""

    is_realtime = True

    def now_ms(self) -> int:
        """Unix milliseconds from the system clock."""
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of wall time."""
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, ts_ms: int) -> None:
        """Sleep until the wall clock reads ``ts_ms``."""
        await asyncio.sleep(max(0.0, (ts_ms - self.now_ms()) / 1000))

    async def pace(self, ts_ms: int) -> None:
        """Sleep until ``ts_ms`` (no-op when it has passed)."""
        await self.sleep_until(ts_ms)


class ClockWentBackwardsError(ValueError):
    """Historical time was asked to move to an earlier instant."""


class HistoricalClock:
    """Simulated time driven by the data: ``pace``/``advance_to`` move it, nothing else does.

    Sleepers wake in time order once the data passes their wake-up time, so a component that
    sleeps 60 s in a backtest wakes after 60 s of data, however fast the data is replayed.
    """

    is_realtime = False

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        """The data's current time."""
        return self._now

    def advance_to(self, ts_ms: int) -> int:
        """Move time forward to ``ts_ms`` and wake sleepers due by then; return how many woke."""
        if ts_ms < self._now:
            msg = f"historical clock at {self._now} cannot go back to {ts_ms}"
            raise ClockWentBackwardsError(msg)
        self._now = ts_ms
        woken = 0
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= ts_ms:
            _, _, future = heapq.heappop(sleepers)
            if not future.done():
                future.set_result(None)
                woken += 1
        return woken

    async def pace(self, ts_ms: int) -> None:
        """Advance to ``ts_ms``; yield to the loop only when a sleeper became due."""
        if self.advance_to(ts_ms):
            # Two turns: one for the woken sleeper to run, one for what it scheduled in turn.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        """Wait until the data has advanced ``seconds``."""
        await self.sleep_until(self._now + round(seconds * 1000))

    async def sleep_until(self, ts_ms: int) -> None:
        """Wait until the data reaches ``ts_ms``."""
        if ts_ms <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (ts_ms, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks wait for data time to pass."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
