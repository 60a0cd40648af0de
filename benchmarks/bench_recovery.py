"""Measure boot-time recovery: a real journal of N events, rebuilt by a fresh runtime.

Run ``python benchmarks/bench_recovery.py [--json] [--events 100000,1000000] [--repeats R]``.

For each size the script records a journal the way production does: ``planes backtest``'s
planes (replay source on the seeded hourly walk of ``bench_backtest``, ``sma_cross`` 10/30,
paper execution) with ``storage.enabled=true``, on as many bars as it takes to journal at
least N events; with the default ``storage.snapshot_every_events`` (50,000) the run leaves a
snapshot every 50k events and one at shutdown. Two cases are measured on copies of that data
dir:

* ``crash``: the shutdown snapshot is deleted, as a SIGKILL would have left it: recovery restores
  the last periodic snapshot and replays the journal tail after it (at most 50k events).
* ``no_snapshot``: every snapshot is deleted: the whole journal is replayed (the worst case;
  only a lost or damaged snapshot dir leads here).

Each repeat copies the data dir, assembles a fresh runtime on it and times the Orchestrator's
recovery step, from the ``recover`` command to ``state:recovery``: the snapshot load, reading
the journal's state topics, decoding each payload and replaying it into the PositionManager,
paper venue, StrategyManager and RiskManager. The in-run baseline is reading the same rows without
decoding or replaying (the SQLite floor). The goal (issue 5) is under 5 s for 1M events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backtest import make_bars, pandas_index_csv

from cli.backtest import backtest_config, run_backtest
from contracts.control import ControlCommand
from contracts.state import StateRecovered
from contracts.topics import CONTROL_COMMAND, STATE_RECOVERY
from planes.logs import configure_logging
from planes.runtime import Runtime
from planes.storage.journal import open_reader
from planes.storage.plane import StoragePlane, data_paths

GOAL_S = 5.0
EVENTS_PER_BAR = 1.6  # a kline, a mark on the bars with a position, the trades' events


def record(folder: Path, events: int) -> tuple[Path, int, int]:
    """Journal a backtest of enough bars for ``events`` events; return data dir, events, bars."""
    bars = round(events / EVENTS_PER_BAR)
    data = folder / f"walk_{bars}.csv"
    data.write_text(pandas_index_csv(make_bars(bars), adj_close=False), encoding="utf-8")
    data_dir = folder / f"var_{events}"
    args = argparse.Namespace(
        data=data, strategy="sma_cross", param=["fast=10", "slow=30"], symbol="BTCUSDT",
        fill="next_open", qty="1", cash="10000000", fee_bps=0.0, slippage_bps=0.0,
        config=None, sets=["storage.enabled=true", f"runtime.data_dir={data_dir}"],
    )  # fmt: skip
    asyncio.run(run_backtest(backtest_config(args)))
    journal = data_paths(data_dir)[0]
    count = sum(1 for _ in open_reader(journal).read())
    return data_dir, count, bars


async def recover_once(data_dir: Path) -> tuple[float, StateRecovered, frozenset[str]]:
    """Assemble a runtime on ``data_dir`` and time its recovery step alone."""
    args = argparse.Namespace(
        data=data_dir / "unused.csv", strategy="sma_cross", param=["fast=10", "slow=30"],
        symbol="BTCUSDT", fill="next_open", qty="1", cash="10000000", fee_bps=0.0,
        slippage_bps=0.0, config=None,
        sets=["storage.enabled=true", f"runtime.data_dir={data_dir}"],
    )  # fmt: skip
    config = backtest_config(args)
    runtime = Runtime(config)
    runtime.assemble()
    storage = next(c for _, _, c in runtime.components if isinstance(c, StoragePlane))
    runtime.bus.bind_loop(asyncio.get_running_loop())
    await storage.start()
    for _, _, component in runtime.components:
        if component is not storage and component.name != "orchestrator":
            await component.start()
    done: asyncio.Future[StateRecovered] = asyncio.get_running_loop().create_future()
    runtime.bus.subscribe(STATE_RECOVERY, lambda e: done.done() or done.set_result(e))
    system = runtime.attach("control")
    started = time.perf_counter()
    system.publish(CONTROL_COMMAND, ControlCommand(system.meta(), "recover"))
    recovered = await done
    elapsed = time.perf_counter() - started
    for _, _, component in reversed(runtime.components):
        if component.name != "orchestrator":
            await component.stop()
    return elapsed, recovered, runtime.state.topics  # what the components rebuild from


def prepare(data_dir: Path, copy: Path, case: str) -> None:
    """A copy of the recorded data dir as a crash (or a lost snapshot dir) would leave it."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data_dir, copy)
    snapshots = sorted(data_paths(copy)[2].glob("*.json"))
    if case == "crash":
        snapshots[-1].unlink()  # killed: no shutdown snapshot, the last periodic one remains
    else:
        for path in snapshots:  # worst case: the whole journal is replayed
            path.unlink()


def read_floor(data_dir: Path, topics: frozenset[str]) -> float:
    started = time.perf_counter()
    for _ in open_reader(data_paths(data_dir)[0]).read(topics=topics):
        pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", default="100000,1000000", help="journal sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("warning")
    sizes = [int(x) for x in args.events.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        for size in sizes:
            data_dir, count, bars = record(Path(tmp), size)
            for case in ("crash", "no_snapshot"):
                best, best_floor, recovered = float("inf"), float("inf"), None
                for _ in range(args.repeats):
                    copy = Path(tmp) / "copy"
                    prepare(data_dir, copy, case)
                    elapsed, recovered, topics = asyncio.run(recover_once(copy))
                    best = min(best, elapsed)
                    best_floor = min(best_floor, read_floor(copy, topics))
                assert recovered is not None
                row = {
                    "case": case,
                    "events": count,
                    "bars": bars,
                    "replayed": recovered.journal_events_replayed,
                    "recovery_s": best,
                    "journal_events_per_s": count / best,
                    "replayed_per_s": recovered.journal_events_replayed / best,
                    "read_only_s": best_floor,
                    "goal_met": best < GOAL_S,
                    "ok": recovered.ok,
                }
                results.append(row)
                if not args.json:
                    print(
                        f"{count:>10,} events ({bars:,} bars), {case:<11}: recovery {best:6.2f} s, "
                        f"{row['replayed']:,} replayed ({row['replayed_per_s']:,.0f}/s), "
                        f"reading the state topics alone {best_floor:5.2f} s; "
                        f"goal < {GOAL_S:g} s: {'met' if row['goal_met'] else 'MISSED'}",
                        flush=True,
                    )
    if args.json:
        print(json.dumps({"results": results, "goal_s": GOAL_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
