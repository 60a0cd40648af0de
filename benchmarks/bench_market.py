"""Measure the Bybit read path: frame -> parse -> normalize -> publish, against raw json.loads.

Run ``python benchmarks/bench_market.py [--json] [--frames N] [--repeats R]``. Two streams of
real-shaped frames are pre-encoded: linear ticker deltas (a few changed fields each, merged into
the full ticker) and order-book deltas (a handful of levels, applied to a local book with
sequence checks). For each, the same frames go through ``BybitNormalizer.handle`` plus
``EventBus.publish`` to one handler, and through bare ``json.loads`` (the baseline: the cost
that no client can avoid). The best of ``R`` timed runs counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.meta import EventMeta, Source
from contracts.topics import MARKET_ORDERBOOK_DELTA, MARKET_TICKER
from planes.bus import EventBus
from planes.market.bybit_parse import BybitNormalizer
from tests.fakes.bybit_server import load_samples  # the real Bybit samples (tests/data/bybit)


def ticker_frames(n: int, rng: random.Random) -> list[str]:
    snap = load_samples()["ticker_linear"]
    frames = [json.dumps(snap)]
    cs, ts, price = snap["cs"], snap["ts"], 17216.0
    for _ in range(n):
        cs += 1
        ts += 100
        price += rng.choice((-0.5, 0.5))
        data = {"symbol": "BTCUSDT", "lastPrice": f"{price:.2f}", "bid1Price": f"{price - 0.5:.2f}"}
        if rng.random() < 0.3:
            data["markPrice"] = f"{price + 0.1:.2f}"
        frames.append(
            json.dumps(
                {"topic": "tickers.BTCUSDT", "type": "delta", "cs": cs, "ts": ts, "data": data}
            )
        )
    return frames


def book_frames(n: int, rng: random.Random) -> list[str]:
    snap = load_samples()["orderbook_snapshot"]
    frames = [json.dumps(snap)]
    u, ts = snap["data"]["u"], snap["ts"]
    for _ in range(n):
        u += 1
        ts += 20
        bids = [
            [f"{16490 - rng.randint(0, 40) / 2:.2f}", f"{rng.randint(0, 900) / 1000:.3f}"]
            for _ in range(rng.randint(1, 4))
        ]
        asks = [
            [f"{16612 + rng.randint(0, 40) / 2:.2f}", f"{rng.randint(0, 900) / 1000:.3f}"]
            for _ in range(rng.randint(1, 4))
        ]
        data = {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": u + 10}
        frames.append(
            json.dumps({"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": ts, "data": data})
        )
    return frames


def best_rate(run: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def measure(frames: list[str], repeats: int) -> dict[str, float]:
    def through_client() -> int:
        bus = EventBus()
        seen = [0]

        def handler(_: Any) -> None:
            seen[0] += 1

        bus.subscribe(MARKET_TICKER, handler)
        bus.subscribe(MARKET_ORDERBOOK_DELTA, handler)
        normalizer = BybitNormalizer(lambda: EventMeta(Source.MARKET, 1), lambda: 0)
        publish = bus.publish
        for frame in frames:
            for topic, payload in normalizer.handle(frame).events:
                publish(topic, payload)
        assert seen[0] == len(frames), (seen[0], len(frames))
        return len(frames)

    def json_only() -> int:
        loads = json.loads
        for frame in frames:
            loads(frame)
        return len(frames)

    client = best_rate(through_client, repeats)
    baseline = best_rate(json_only, repeats)
    return {"client_mps": client, "json_loads_mps": baseline, "ratio": client / baseline}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--frames", type=int, default=50_000, help="frames per stream")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    args = parser.parse_args()
    rng = random.Random(11)
    results = {
        "ticker_delta": measure(ticker_frames(args.frames, rng), args.repeats),
        "orderbook_delta": measure(book_frames(args.frames, rng), args.repeats),
    }
    if args.json:
        print(json.dumps(results))
        return 0
    print(
        "Bybit frame -> normalize -> publish vs json.loads "
        f"({args.frames:,} frames, best of {args.repeats})"
    )
    print()
    print(f"{'stream':<16} {'client msg/s':>14} {'json.loads msg/s':>18} {'client/json':>12}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['client_mps']:>14,.0f} {r['json_loads_mps']:>18,.0f}"
            f" {r['ratio']:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
