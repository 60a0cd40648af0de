"""Measure EventBus.publish throughput against raw blinker and a plain dict-of-lists loop.

Run ``python benchmarks/bench_bus.py [--json] [--events N] [--repeats R]``. Each contestant
delivers the same pre-built ``TickerEvent`` to the same trivial handlers (1 and 5 of them); the
best of ``R`` timed runs of ``N`` events counts. The issue's goal, for one handler: the bus at
least 3x raw blinker and at least 0.5x the plain loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import blinker

from contracts.market import TickerEvent
from contracts.meta import EventMeta, Source
from contracts.topics import MARKET_TICKER
from planes import native
from planes.bus import EventBus

BLINKER_GOAL = 3.0
PLAIN_GOAL = 0.5
WARMUP = 1_000


class Counter:
    """The one handler body every contestant calls: count the call, nothing else."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def make_handler(self) -> Callable[[Any], None]:
        def handler(_payload: Any) -> None:
            self.n += 1

        return handler


def _payload() -> TickerEvent:
    return TickerEvent(
        meta=EventMeta(Source.MARKET, 1),
        exchange="x",
        symbol="BTCUSDT",
        last_price=Decimal("1"),
        exchange_ts=1,
    )


def _best_eps(
    runs: dict[str, Callable[[int], None]], events: int, repeats: int
) -> dict[str, float]:
    """Best events/s of each runner; repeats are interleaved so drift hits all runners alike."""
    for run in runs.values():
        run(WARMUP)  # warm up caches and lazy paths
    best = dict.fromkeys(runs, float("inf"))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for label, run in runs.items():
                start = time.perf_counter()
                run(events)
                best[label] = min(best[label], time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {label: events / seconds for label, seconds in best.items()}


def _bus_runner(handlers: list[Callable[[Any], None]]) -> Callable[[int], None]:
    bus = EventBus()
    for handler in handlers:
        bus.subscribe(MARKET_TICKER, handler)
    payload = _payload()
    publish = bus.publish
    topic = MARKET_TICKER

    def run(n: int) -> None:
        for _ in range(n):
            publish(topic, payload)

    return run


def _blinker_runner(handlers: list[Callable[[Any], None]]) -> Callable[[int], None]:
    signal = blinker.Signal()
    for handler in handlers:
        signal.connect(handler, weak=False)
    payload = _payload()
    send = signal.send

    def run(n: int) -> None:
        for _ in range(n):
            send(payload)

    return run


def _plain_runner(handlers: list[Callable[[Any], None]]) -> Callable[[int], None]:
    table: dict[str, list[Callable[[Any], None]]] = {MARKET_TICKER.name: list(handlers)}
    payload = _payload()
    name = MARKET_TICKER.name

    def run(n: int) -> None:
        for _ in range(n):
            for h in table[name]:
                h(payload)

    return run


def measure(events: int, repeats: int) -> dict[str, float]:
    """Events per second of each contestant with 1 and 5 handlers, and the ratios."""
    results: dict[str, float] = {}
    makers = {"bus": _bus_runner, "blinker": _blinker_runner, "plain": _plain_runner}
    for n_handlers, suffix in ((1, ""), (5, "_5")):
        counters = {label: Counter() for label in makers}
        runs = {
            label: make([counters[label].make_handler() for _ in range(n_handlers)])
            for label, make in makers.items()
        }
        eps = _best_eps(runs, events, repeats)
        expected = (WARMUP + events * repeats) * n_handlers
        for label, counter in counters.items():
            if counter.n != expected:  # a contestant that skips handlers would look fast
                msg = f"{label} called its handlers {counter.n} times, not {expected}"
                raise RuntimeError(msg)
            results[f"{label}_eps{suffix}"] = eps[label]
        bus = results[f"bus_eps{suffix}"]
        results[f"bus_vs_blinker{suffix}"] = bus / results[f"blinker_eps{suffix}"]
        results[f"bus_vs_plain{suffix}"] = bus / results[f"plain_eps{suffix}"]
    return results


def _table(r: dict[str, float], events: int, repeats: int) -> str:
    lines = [
        f"EventBus.publish vs blinker vs plain loop ({events:,} events, best of {repeats})",
        f"the bus: {native.status().describe()}",
        "",
        f"{'handlers':>8}  {'bus ev/s':>12}  {'blinker ev/s':>12}  {'plain ev/s':>12}"
        f"  {'bus/blinker':>11}  {'bus/plain':>9}",
    ]
    for n_handlers, suffix in ((1, ""), (5, "_5")):
        lines.append(
            f"{n_handlers:>8}  {r[f'bus_eps{suffix}']:>12,.0f}  {r[f'blinker_eps{suffix}']:>12,.0f}"
            f"  {r[f'plain_eps{suffix}']:>12,.0f}  {r[f'bus_vs_blinker{suffix}']:>10.2f}x"
            f"  {r[f'bus_vs_plain{suffix}']:>8.2f}x"
        )
    ok_blinker = r["bus_vs_blinker"] >= BLINKER_GOAL
    ok_plain = r["bus_vs_plain"] >= PLAIN_GOAL
    lines += [
        "",
        f"goal (1 handler): bus/blinker >= {BLINKER_GOAL}x "
        f"[{'met' if ok_blinker else 'MISSED'}], bus/plain >= {PLAIN_GOAL}x "
        f"[{'met' if ok_plain else 'MISSED'}]",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=100_000, help="events per timed run")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeats <= 0:
        parser.error("--events and --repeats must be positive")
    results = measure(args.events, args.repeats)
    if args.json:
        print(json.dumps({**results, "events": args.events, "repeats": args.repeats}))
    else:
        print(_table(results, args.events, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
