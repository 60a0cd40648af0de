"""SIGKILL ``planes run`` mid-run, restart it on the same data dir: nothing lost, nothing doubled.

Each test starts the real console script in paper mode on the synthetic source (1-second bars,
two scenarios that trade often), kills it with SIGKILL at a chosen moment (after a burst of
fills; inside a snapshot write, between its temp file's fsync and the rename, where the
``faults`` plugin holds the write), starts it again on the same data dir for a few seconds, and
then checks the journal both runs wrote:

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
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from planes.storage.journal import JournalRecord
from planes.storage.plane import data_paths
from planes.storage.snapshots import StateStore
from tests.planes.storage import faults
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
    planes_run: PlanesRun,
    tmp_path: Path,
    moment: str,
    *extra: str,
    first_only: tuple[str, ...] = (),
    after_kill: Callable[[Path], object] = lambda _: None,
) -> list[JournalRecord]:
    """Start, SIGKILL at ``moment``, call ``after_kill(data_dir)``, restart; return the journal.

    ``moment`` "fills": after a burst of fills with a position open; "snapshot": inside a
    snapshot write, which ``faults`` (loaded through ``first_only``, settings of the killed run
    alone) stalls before its rename.
    """
    data_dir = tmp_path / "var"
    first = planes_run(data_dir, *SETTINGS, *extra, *first_only)
    try:
        if moment == "fills":
            wait_for(
                lambda: busy(journal_records(data_dir), 6), 60, "a burst of fills, a position open"
            )
        else:
            stalled = data_dir / faults.STALLED
            wait_for(stalled.exists, 60, "a snapshot write stalled before its rename")
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    after_kill(data_dir)
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


REPLAYED = frozenset(
    {
        "exec:order_event",
        "risk:approved_intent",
        "portfolio:position_update",
        "strategy:scenarioEnabled",
        "strategy:scenarioDisabled",
        "state:registry",
        "market:kline",
    }
)
"""The topics recovery replays (docs/operations.md, "What the replay reads")."""


def test_killed_inside_a_snapshot_write_resumes_from_the_previous_snapshot_and_the_journal(
    planes_run: PlanesRun, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def inspect(data_dir: Path) -> None:
        # The kill landed between the temp file's fsync and its rename: the whole temp file is
        # there, and no snapshot file of its id.
        snapshots = data_paths(data_dir)[2]
        leftover = sorted(snapshots.glob(".tmp-*"))
        assert [p.name for p in leftover] == [(data_dir / faults.STALLED).read_text()]
        store = StateStore(snapshots)
        interrupted = store.load(leftover[0])
        previous, problems = store.latest()
        assert previous is not None
        assert not problems
        assert len(store.list()) >= faults.ARM_AFTER
        assert interrupted.snapshot_id not in {p.name.split("-", 1)[1] for p in store.list()}
        assert interrupted.journal_seq >= previous.journal_seq
        seen.update(tmp=leftover[0], previous=previous)

    recs = kill_then_restart(
        planes_run,
        tmp_path,
        "snapshot",
        "storage.snapshot_interval_s=0.05",
        "storage.snapshot_after_change_s=0",
        first_only=(f'plugins.modules=["{faults.__name__}"]',),
        after_kill=inspect,
    )
    check(recs)
    assert not seen["tmp"].exists()  # deleted by the restart's first write
    assert not list(seen["tmp"].parent.glob(".tmp-*"))
    # the restart used the last whole snapshot and replayed the journal after it
    first_run = recs[0].run_id
    second = [r for r in recs if r.run_id != first_run]
    report = json.loads(next(r for r in second if r.topic == "state:recovery").payload)
    previous = seen["previous"]
    assert report["snapshot_id"] == previous.snapshot_id
    assert report["warnings"] == []
    tail = [r for r in recs if r.run_id == first_run and r.seq > previous.journal_seq]
    assert report["journal_events_replayed"] == sum(r.topic in REPLAYED for r in tail)
