"""SIGKILL ``planes run`` mid-run, restart it on the same data dir: nothing lost, nothing doubled.

Each test starts the real console script in paper mode on the synthetic source (1-second bars,
two scenarios that trade often), kills it with SIGKILL at a chosen moment, starts it again on
the same data dir for a few seconds, and then checks the journal both runs wrote:

* one contiguous seq history, no event written twice;
* the positions and cash the restart announced equal what the journal's fills imply;
* no order was submitted twice (each client order id has one ``submitted`` event);
* the same scenarios are enabled after the restart.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from planes.storage.journal import JournalRecord
from tests.planes.storage.harness import PlanesRun, journal_records

pytestmark = [pytest.mark.subprocess]

CASH = Decimal(100000)
SETTINGS = (
    "market.synthetic.bar_s=1",
    "market.synthetic.tick_ms=100",
    'market.symbols=["BTCUSDT", "ETHUSDT"]',
    "strategy.scenarios=["
    '{id = "cross", strategy = "sma_cross", params = {fast = 2, slow = 4, qty = "0.01"}}, '
    '{id = "breakout", strategy = "breakout", params = {window = 2, qty = "0.02"}}]',
    f'portfolio.cash="{CASH}"',
    "risk.stale_data_s=0",
    "observability.status_interval_s=0",
    "logging.level=warning",
    "logging.format=json",
)


def fills(recs: list[JournalRecord]) -> list[dict[str, Any]]:
    orders = [json.loads(r.payload) for r in recs if r.topic == "exec:order_event"]
    return [o for o in orders if o["last_fill_qty"] is not None]


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def implied_books(recs: list[JournalRecord]) -> tuple[dict[str, Decimal], Decimal]:
    """Positions and cash the journal's fills imply (each order's fill booked once)."""
    booked: dict[str, Decimal] = defaultdict(Decimal)
    qty: dict[str, Decimal] = defaultdict(Decimal)
    cash = CASH
    for order in fills(recs):
        filled = Decimal(order["filled_qty"])
        if filled <= booked[order["order_id"]]:
            continue
        booked[order["order_id"]] = filled
        size, price = Decimal(order["last_fill_qty"]), Decimal(order["last_fill_price"])
        sign = 1 if order["side"] == "buy" else -1
        qty[order["symbol"]] += sign * size
        cash -= sign * size * price + Decimal(order["fee"])
    return {s: q for s, q in qty.items() if q}, cash


def busy(recs: list[JournalRecord], at_least: int) -> bool:
    """At least ``at_least`` fills journaled and a position open by the journal's account."""
    return len(fills(recs)) >= at_least and bool(implied_books(recs)[0])


def kill_then_restart(
    planes_run: PlanesRun, tmp_path: Path, moment: str, *extra: str
) -> list[JournalRecord]:
    data_dir = tmp_path / "var"
    first = planes_run(data_dir, *SETTINGS, *extra)
    try:
        if moment == "fills":
            wait_for(
                lambda: busy(journal_records(data_dir), 6), 60, "a burst of fills, a position open"
            )
        else:  # snapshots are written every 50 ms: kill while they keep coming
            snapshots = data_dir / "snapshots"
            wait_for(
                lambda: (
                    busy(journal_records(data_dir), 2)
                    and snapshots.exists()
                    and len(list(snapshots.glob("*.json"))) >= 3
                ),
                60,
                "fills and snapshots",
            )
            time.sleep(0.137)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    before = journal_records(data_dir)
    second = planes_run(data_dir, *SETTINGS, *extra, duration=4)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-3000:]
    after = journal_records(data_dir)
    assert after[: len(before)] == before  # the first run's history is untouched
    return after


def check(recs: list[JournalRecord]) -> None:
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    runs = list(dict.fromkeys(r.run_id for r in recs))
    assert len(runs) == 2
    first = [r for r in recs if r.run_id == runs[0]]
    second = [r for r in recs if r.run_id == runs[1]]
    assert not {(r.topic, r.payload) for r in first} & {(r.topic, r.payload) for r in second}

    # what the restart announced at recovery equals what the first run's journal implies
    recovery = next(i for i, r in enumerate(second) if r.topic == "state:recovery")
    report = json.loads(second[recovery].payload)
    assert report["ok"], report
    positions, cash = implied_books(first)
    assert positions, "the first run held a position when it was killed"
    announced = {
        p["symbol"]: p
        for p in (json.loads(r.payload) for r in second[: recovery + 1])
        if "qty" in p and "equity" in p
    }
    assert {s: Decimal(p["qty"]) for s, p in announced.items() if Decimal(p["qty"])} == positions
    for update in announced.values():
        assert Decimal(update["cash"]) == cash
    assert report["positions"] == len(positions)
    # no fill was invented at recovery: the second run's first fills come after market data
    first_kline = next(i for i, r in enumerate(second) if r.topic == "market:kline")
    assert not fills(second[:first_kline])

    # no order submitted twice, across both runs
    submitted = Counter(
        o["client_order_id"]
        for o in (json.loads(r.payload) for r in recs if r.topic == "exec:order_event")
        if o["status"] == "submitted"
    )
    assert submitted
    assert max(submitted.values()) == 1
    order_ids = Counter(
        o["order_id"]
        for o in (json.loads(r.payload) for r in recs if r.topic == "exec:order_event")
        if o["status"] == "submitted"
    )
    assert max(order_ids.values()) == 1

    # the same scenarios are enabled
    def enabled(run: list[JournalRecord]) -> set[str]:
        return {
            json.loads(r.payload)["scenario_id"]
            for r in run
            if r.topic == "strategy:scenarioEnabled"
        }

    assert enabled(second) == enabled(first) == {"cross", "breakout"}
    assert report["enabled_scenarios"] == 2


def test_killed_during_a_burst_of_fills_resumes_with_the_same_books(
    planes_run: PlanesRun, tmp_path: Path
) -> None:
    check(kill_then_restart(planes_run, tmp_path, "fills"))


def test_killed_while_snapshots_are_written_resumes_with_the_same_books(
    planes_run: PlanesRun, tmp_path: Path
) -> None:
    recs = kill_then_restart(
        planes_run,
        tmp_path,
        "snapshots",
        "storage.snapshot_interval_s=0.05",
        "storage.snapshot_after_change_s=0",
    )
    check(recs)
    assert not list((tmp_path / "var" / "snapshots").glob(".tmp-*"))  # cleaned by the restart
