"""Measure EventJournal append throughput: a realistic event mix, batched, into a real SQLite file.

Run ``python benchmarks/bench_journal.py [--json] [--events N] [--repeats R]``. N payloads are
built up front, a backtest's mix: four closed klines (two symbols, a seeded random walk) to one
order event (submitted, accepted or filled, with a correlation id). A journal run appends them one
after the other, as the bus's catch-all handler does, and counts from the first ``append`` until
``flush()`` returns, so serialisation, queueing and every commit are in the time. Each run writes
a fresh file with the default batching (512 rows, 50 ms), once with ``synchronous=normal`` and
once with ``full``; every topic blocks when the queue is full, so no event is sampled out. The
in-run baseline is serialising the same payloads with the contracts converter alone, the cost no
journal can avoid. Runs are interleaved and the best of R counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

# Runnable as a script from anywhere: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.converter import CONVERTER
from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE
from planes.logs import configure_logging
from planes.storage.journal import EventJournal

LEVELS = ("normal", "full")
STATUSES = (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.FILLED)
START_MS = 1_700_000_000_000

Event = tuple[str, Payload]


def make_events(n: int, rng: random.Random) -> list[Event]:
    """``n`` events: four klines to one order event, prices on a seeded random walk."""
    events: list[Event] = []
    prices = {"BTCUSDT": Decimal("17216.5"), "ETHUSDT": Decimal("1210.25")}
    symbols = tuple(prices)
    for i in range(n):
        symbol = symbols[i % 2]
        ts = START_MS + i * 1_000
        if i % 5 == 4:
            k = i // 5
            status = STATUSES[k % 3]
            filled = status is OrderStatus.FILLED
            qty = Decimal("0.010") * (1 + k % 7)
            order = OrderEvent(
                meta=EventMeta(Source.TRADING, ts, f"intent-{k // 3}"),
                order_id=f"paper-{k // 3}",
                client_order_id=f"sma-cross:{symbol}:{k // 3}",
                venue="paper",
                symbol=symbol,
                side=Side.BUY if k % 2 else Side.SELL,
                order_type=OrderType.MARKET,
                status=status,
                qty=qty,
                filled_qty=qty if filled else Decimal(0),
                avg_fill_price=prices[symbol] if filled else None,
                last_fill_qty=qty if filled else None,
                last_fill_price=prices[symbol] if filled else None,
                fee=(qty * prices[symbol] * Decimal("0.00055")).quantize(Decimal("0.00000001"))
                if filled
                else Decimal(0),
                fee_asset="USDT",
                intent_id=f"intent-{k // 3}",
                scenario_id="sma-cross-1",
                exchange_ts=ts,
            )
            events.append((EXEC_ORDER_EVENT.name, order))
            continue
        open_ = prices[symbol]
        close = (open_ * Decimal(1 + rng.gauss(0, 0.001))).quantize(Decimal("0.01"))
        prices[symbol] = close
        spread = Decimal(str(round(abs(rng.gauss(0, 2)), 2)))
        bar = KlineEvent(
            meta=EventMeta(Source.MARKET, ts),
            exchange="bybit",
            symbol=symbol,
            interval="1m",
            start_ts=ts - 60_000,
            end_ts=ts - 1,
            open=open_,
            high=max(open_, close) + spread,
            low=min(open_, close) - spread,
            close=close,
            volume=Decimal(str(round(rng.uniform(1, 50), 3))),
            closed=True,
            turnover=(close * Decimal(10)).quantize(Decimal("0.0001")),
        )
        events.append((MARKET_KLINE.name, bar))
    return events


def serialise(events: list[Event]) -> float:
    """Seconds to serialise every payload with the contracts converter."""
    dumps = CONVERTER.dumps
    start = time.perf_counter()
    for _, payload in events:
        dumps(payload)
    return time.perf_counter() - start


def journal_run(events: list[Event], synchronous: str, path: Path) -> dict[str, float]:
    """Append ``events`` to a fresh journal and flush; the seconds and what was committed."""
    journal = EventJournal(path, "bench", synchronous=synchronous, sample_prefixes=())
    journal.open()
    try:
        append = journal.append
        start = time.perf_counter()
        for topic, payload in events:
            append(topic, payload)
        appended = time.perf_counter()
        durable = journal.flush()
        done = time.perf_counter()
    finally:
        journal.close()
    metrics = journal.metrics
    if durable != len(events) or metrics.committed != len(events) or metrics.sampled:
        msg = f"{synchronous}: committed {metrics.committed} of {len(events)} events"
        raise RuntimeError(msg)
    return {
        "seconds": done - start,
        "append_seconds": appended - start,
        "batches": metrics.batches,
        "blocked": metrics.blocked,
        "bytes": path.stat().st_size,
    }


def measure(n: int, repeats: int) -> dict[str, float]:
    """Best events/s of serialising alone and of the journal at each level, and the ratios."""
    events = make_events(n, random.Random(5))
    best: dict[str, dict[str, float]] = {}
    best_serialise = float("inf")
    gc_was_enabled = gc.isenabled()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
        for repeat in range(repeats):
            gc.disable()
            try:
                best_serialise = min(best_serialise, serialise(events))
                for level in LEVELS:
                    run = journal_run(events, level, Path(directory) / f"{level}-{repeat}.sqlite3")
                    if level not in best or run["seconds"] < best[level]["seconds"]:
                        best[level] = run
            finally:
                if gc_was_enabled:
                    gc.enable()
    results: dict[str, float] = {"serialise_eps": n / best_serialise}
    for level, run in best.items():
        eps = n / run["seconds"]
        results[f"journal_{level}_eps"] = eps
        results[f"append_{level}_eps"] = n / run["append_seconds"]
        results[f"{level}_vs_serialise"] = eps / results["serialise_eps"]
        results[f"batches_{level}"] = run["batches"]
        results[f"blocked_{level}"] = run["blocked"]
        results[f"bytes_per_event_{level}"] = run["bytes"] / n
    return results


def _table(r: dict[str, float], events: int, repeats: int) -> str:
    lines = [
        f"EventJournal append + flush ({events:,} events: 80% klines, 20% order events; "
        f"best of {repeats})",
        "",
        f"{'':<16}  {'ev/s':>10}  {'vs serialise':>12}  {'appends ev/s':>12}"
        f"  {'batches':>7}  {'blocked':>7}  {'bytes/ev':>8}",
        f"{'serialise only':<16}  {r['serialise_eps']:>10,.0f}  {1:>11.2f}x",
    ]
    lines.extend(
        f"{'journal ' + level:<16}  {r[f'journal_{level}_eps']:>10,.0f}"
        f"  {r[f'{level}_vs_serialise']:>11.2f}x  {r[f'append_{level}_eps']:>12,.0f}"
        f"  {r[f'batches_{level}']:>7.0f}  {r[f'blocked_{level}']:>7.0f}"
        f"  {r[f'bytes_per_event_{level}']:>8.0f}"
        for level in LEVELS
    )
    lines += [
        "",
        "ev/s counts until flush() returns (all committed); 'appends ev/s' is the time the",
        "publishing thread spends in append() alone.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=100_000, help="events per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeats <= 0:
        parser.error("--events and --repeats must be positive")
    configure_logging("warning", stream=sys.stderr)  # no journal.opened lines in the table
    results = measure(args.events, args.repeats)
    if args.json:
        print(json.dumps({**results, "events": args.events, "repeats": args.repeats}))
    else:
        print(_table(results, args.events, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
