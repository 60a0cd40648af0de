"""A graceful stop keeps working paper orders (``execution.cancel_on_stop = false``); a restart on
the same data dir resumes them.

In process: two ``Runtime`` runs over two halves of a bar series (the first ends when its data
does, the graceful stop), the first placing a limit buy below the market that only the second
half touches. Then the real thing: ``planes run`` stopped by SIGTERM and SIGINT, restarted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.state import StateRecovered, StateSnapshot
from contracts.strategy import IntentDraft
from contracts.topics import Topic
from planes.config import load_config
from planes.runtime import Runtime
from planes.storage.journal import JournalRecord, open_reader
from planes.storage.plane import data_paths
from planes.storage.snapshots import StateStore
from tests.planes.storage.harness import PlanesRun, journal_records

START = datetime(2024, 1, 1, tzinfo=UTC)
LIMIT = Decimal(90)


class BidBelow:
    """Places one limit buy (test strategy): at ``bar_ms`` if given, else on its first bar.

    The limit is ``limit`` if given, else half the bar's close (far from any synthetic price).
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.bar_ms = int(params.get("bar_ms", -1))
        self.limit = Decimal(str(params["limit"])) if "limit" in params else None
        self.qty = Decimal(str(params.get("qty", "1")))
        self.done = False

    def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> Sequence[IntentDraft]:
        if self.done or not isinstance(payload, KlineEvent) or not payload.closed:
            return []
        if self.bar_ms >= 0 and payload.start_ts != self.bar_ms:
            return []
        self.done = True
        limit = self.limit if self.limit is not None else (payload.close / 2).quantize(Decimal(1))
        draft = IntentDraft(Side.BUY, self.qty, order_type=OrderType.LIMIT, limit_price=limit)
        return [draft]


def write_bars(path: Path, first: int, bars: Sequence[tuple[int, int, int, int]]) -> Path:
    """An hourly OHLCV CSV whose first bar is hour ``first`` of 2024-01-01."""
    lines = [",Open,High,Low,Close,Volume"]
    for n, (o, h, low, c) in enumerate(bars, start=first):
        ts = (START + timedelta(hours=n)).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{ts},{o},{h},{low},{c},1000")
    path.write_text("\n".join(lines) + "\n")
    return path


def bar_ms(hour: int) -> int:
    return int((START + timedelta(hours=hour)).timestamp() * 1000)


def make_runtime(data_dir: Path, data: Path, *sets: str) -> Runtime:
    params = f'{{bar_ms = {bar_ms(2)}, limit = "{LIMIT}"}}'
    scenario = f'{{id = "bid", strategy = "bid_below", params = {params}}}'
    config = load_config(
        None,
        [
            "runtime.clock=historical",
            "runtime.start=2024-01-01T00:00:00Z",
            f"runtime.data_dir={data_dir}",
            "market.source=replay",
            f"market.replay.path={data}",
            'market.symbols=["BTCUSDT"]',
            "analytics.features=[]",
            "analytics.context=false",
            "observability.status_interval_s=0",
            f'strategy.class_paths=["bid_below = {__name__}:BidBelow"]',
            f"strategy.scenarios=[{scenario}]",
            "risk.stale_data_s=0",
            "storage.snapshot_interval_s=0",
            *sets,
        ],
        environ={},
        use_default_file=False,
    )
    return Runtime(config)


class Tap:
    """Every event the runtime's bus delivers, in order."""

    def __init__(self, runtime: Runtime) -> None:
        runtime.assemble()
        self.events: list[Payload] = []
        runtime.bus.subscribe_all(lambda _, payload: self.events.append(payload))

    def of(self, kind: type[Any]) -> list[Any]:
        return [p for p in self.events if isinstance(p, kind)]

    def orders(self) -> list[OrderEvent]:
        return self.of(OrderEvent)


async def run(runtime: Runtime) -> None:
    await asyncio.wait_for(runtime.run(), 60)


QUIET = [(100, 101, 99, 100)] * 6
"""Six bars that never reach the limit (hours 0-5)."""
TOUCH = [(100, 101, 99, 100), (95, 96, 89, 92), (92, 93, 91, 92)]
"""Hours 6-8: the second one trades through the limit."""


async def restart_pair(tmp_path: Path, *sets: str) -> tuple[Tap, Tap, Runtime]:
    data_dir = tmp_path / "var"
    first = make_runtime(data_dir, write_bars(tmp_path / "a.csv", 0, QUIET), *sets)
    first_tap = Tap(first)
    await run(first)  # the data ends: the Orchestrator stops the runtime gracefully
    second = make_runtime(data_dir, write_bars(tmp_path / "b.csv", 6, TOUCH), *sets)
    second_tap = Tap(second)
    await run(second)
    return first_tap, second_tap, second


async def test_a_graceful_stop_keeps_working_orders_and_the_restart_fills_them(
    tmp_path: Path,
) -> None:
    first, second, runtime = await restart_pair(tmp_path)
    (order_id,) = {e.order_id for e in first.orders()}
    assert [e.status for e in first.orders()] == [OrderStatus.SUBMITTED, OrderStatus.ACCEPTED]
    (shutdown,) = [s for s in first.of(StateSnapshot) if s.reason == "shutdown"]
    store = StateStore(data_paths(tmp_path / "var")[2])
    kept = next(s for s in map(store.load, store.list()) if s.snapshot_id == shutdown.snapshot_id)
    assert [o["request"]["order_id"] for o in kept.sections["execution.paper"]["open_orders"]] == [
        order_id
    ]

    (recovered,) = second.of(StateRecovered)
    assert (recovered.ok, recovered.open_orders) == (True, 1)
    orders = second.orders()
    assert [(e.order_id, e.status) for e in orders] == [(order_id, OrderStatus.FILLED)]
    (fill,) = orders
    assert (fill.last_fill_qty, fill.last_fill_price) == (Decimal(1), LIMIT)
    assert fill.exchange_ts == bar_ms(7)
    assert second.of(PositionUpdate)[-1].qty == 1
    assert runtime.state.export()["execution.paper"]["open_orders"] == []
    journal, _, _ = data_paths(tmp_path / "var")
    records = list(open_reader(journal).read())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    statuses = [json.loads(r.payload)["status"] for r in records if r.topic == "exec:order_event"]
    assert statuses == ["submitted", "accepted", "filled"]


async def test_with_cancel_on_stop_the_orders_are_cancelled_and_nothing_resumes(
    tmp_path: Path,
) -> None:
    first, second, _ = await restart_pair(tmp_path, "execution.cancel_on_stop=true")
    assert [e.status for e in first.orders()] == [
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.CANCELLED,
    ]
    assert first.orders()[-1].reason.startswith("shutdown: ")
    (recovered,) = second.of(StateRecovered)
    assert recovered.open_orders == 0
    assert second.orders() == []  # the touch finds nothing working


# -- `planes run`, stopped by a signal ---------------------------------------------------------

SETTINGS = (
    "market.synthetic.bar_s=1",
    "market.synthetic.tick_ms=100",
    'market.symbols=["BTCUSDT"]',
    f'strategy.class_paths=["bid_below = {__name__}:BidBelow"]',
    'strategy.scenarios=[{id = "bid", strategy = "bid_below", params = {qty = "0.01"}}]',
    "risk.stale_data_s=0",
    "observability.status_interval_s=0",
    "logging.level=warning",
    "logging.format=json",
)


def order_events(recs: Sequence[JournalRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in recs if r.topic == "exec:order_event"]


def accepted(recs: Sequence[JournalRecord]) -> list[str]:
    return [o["order_id"] for o in order_events(recs) if o["status"] == "accepted"]


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_planes_run_stopped_by_a_signal_resumes_its_working_orders(
    planes_run: PlanesRun, tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "var"
    first = planes_run(data_dir, *SETTINGS)
    try:
        deadline = time.monotonic() + 60
        while not accepted(journal_records(data_dir)) and first.poll() is None:
            assert time.monotonic() < deadline, "timed out waiting for an accepted order"
            time.sleep(0.05)
        first.send_signal(sig)
        _, err = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    before = journal_records(data_dir)
    (kept,) = accepted(before)
    assert all(o["status"] != "cancelled" for o in order_events(before))

    second = planes_run(data_dir, *SETTINGS, duration=3)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-3000:]
    after = journal_records(data_dir)
    assert after[: len(before)] == before
    assert [r.seq for r in after] == list(range(1, len(after) + 1))
    (recovery,) = [
        json.loads(r.payload) for r in after[len(before) :] if r.topic == "state:recovery"
    ]
    assert recovery["ok"], recovery
    assert recovery["open_orders"] == 1
    later = order_events(after[len(before) :])
    assert all(o["order_id"] != kept for o in later)  # neither cancelled nor submitted again
    snapshot, _ = StateStore(data_paths(data_dir)[2]).latest()
    assert snapshot is not None
    assert snapshot.reason == "shutdown"
    working = [
        o["request"]["order_id"] for o in snapshot.sections["execution.paper"]["open_orders"]
    ]
    assert kept in working
