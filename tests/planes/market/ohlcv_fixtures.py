"""The OHLCV fixtures in ``tests/data/ohlcv/``, and how they were made.

Every file comes from a seeded random walk of hourly BTCUSDT bars (next open = last close, high
and low around the path within the bar), rendered the way its tool writes it: pandas'
``DataFrame.to_csv()`` (an unnamed ``DatetimeIndex`` column, or one named ``Date`` with UTC
offsets; floats as ``repr``), an epoch-millisecond CSV like a ccxt export, and Bybit's
``GET /v5/market/kline`` answer (strings, newest first). The four small files hold the same 24
bars, so they must replay identically. ``test_replay.py`` checks the files still equal what this
module renders; after changing it, regenerate with ``python -m tests.planes.market.ohlcv_fixtures``.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

DATA = Path(__file__).resolve().parents[2] / "data" / "ohlcv"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR_MS = 3_600_000


class Bar(NamedTuple):
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    turnover: Decimal


def walk(n: int, *, seed: int, price: float, start_ms: int = START_MS) -> list[Bar]:
    """``n`` hourly bars of a geometric random walk, rounded like an exchange (0.01, 1e-5)."""
    rng = random.Random(seed)
    bars = []
    for i in range(n):
        path = [price]
        for _ in range(6):
            price *= math.exp(rng.gauss(0.00002, 0.0025))
            path.append(price)
        o, c = (Decimal(f"{x:.2f}") for x in (path[0], path[-1]))
        h = max(Decimal(f"{max(path) * (1 + abs(rng.gauss(0, 0.0008))):.2f}"), o, c)
        low = min(Decimal(f"{min(path) * (1 - abs(rng.gauss(0, 0.0008))):.2f}"), o, c)
        volume = Decimal(f"{rng.lognormvariate(6.2, 0.45):.5f}")
        turnover = (volume * (o + h + low + c) / 4).quantize(Decimal("0.0001"))
        bars.append(Bar(start_ms + i * HOUR_MS, o, h, low, c, volume, turnover))
        price = float(c)
    return bars


def small() -> list[Bar]:
    """The 24 bars of the four small fixtures (2024-01-01, one day)."""
    return walk(24, seed=20240101, price=42283.58)


def large() -> list[Bar]:
    """The 500 bars of ``btcusdt_1h_500.csv`` (for parity tests of backtests)."""
    return walk(500, seed=500, price=42283.58)


def _num(value: Decimal) -> str:
    return repr(float(value))  # what pandas writes for a float column


def _date(start_ms: int, offset: bool) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start_ms)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return text + "+00:00" if offset else text


def pandas_index_csv(bars: list[Bar], *, adj_close: bool = True) -> str:
    """``df.to_csv()`` of a frame indexed by a naive ``DatetimeIndex``, yfinance-style columns."""
    header = ",Open,High,Low,Close,Adj Close,Volume" if adj_close else ",Open,High,Low,Close,Volume"
    lines = [header]
    for b in bars:
        cells = [_date(b.start, False), *map(_num, (b.open, b.high, b.low, b.close))]
        if adj_close:
            cells.append(_num(b.close))
        lines.append(",".join([*cells, _num(b.volume)]))
    return "\n".join(lines) + "\n"


def pandas_date_csv(bars: list[Bar]) -> str:
    """``df.to_csv()`` of a frame with a UTC ``DatetimeIndex`` named ``Date``; lower-case names."""
    lines = ["Date,open,high,low,close,volume"]
    for b in bars:
        values = map(_num, (b.open, b.high, b.low, b.close, b.volume))
        lines.append(",".join([_date(b.start, True), *values]))
    return "\n".join(lines) + "\n"


def epoch_ms_csv(bars: list[Bar]) -> str:
    """An epoch-millisecond CSV (``timestamp`` first), as ccxt-based exports write it."""
    lines = ["timestamp,open,high,low,close,volume"]
    for b in bars:
        values = map(_num, (b.open, b.high, b.low, b.close, b.volume))
        lines.append(",".join([str(b.start), *values]))
    return "\n".join(lines) + "\n"


def _bybit(value: Decimal) -> str:
    return format(value.normalize(), "f")  # "43183.7", as Bybit writes it


def bybit_json(bars: list[Bar], symbol: str = "BTCUSDT") -> str:
    """Bybit's kline answer (newest first), one list entry per line."""
    compact = (",", ":")
    entries = [
        json.dumps(
            [str(b.start), *map(_bybit, (b.open, b.high, b.low, b.close, b.volume, b.turnover))],
            separators=compact,
        )
        for b in reversed(bars)
    ]
    head = json.dumps({"category": "linear", "symbol": symbol}, separators=compact)[:-1]
    end = str(bars[-1].start + HOUR_MS + 1234)
    return (
        f'{{"retCode":0,"retMsg":"OK","result":{head},"list":[\n'
        + ",\n".join(entries)
        + f'\n]}},"retExtInfo":{{}},"time":{end}}}\n'
    )


def rendered() -> dict[str, str]:
    """Every fixture file's name and text."""
    bars = small()
    return {
        "btcusdt_1h_pandas_index.csv": pandas_index_csv(bars),
        "btcusdt_1h_pandas_date.csv": pandas_date_csv(bars),
        "btcusdt_1h_epoch_ms.csv": epoch_ms_csv(bars),
        "btcusdt_1h_bybit.json": bybit_json(bars),
        "btcusdt_1h_500.csv": pandas_index_csv(large(), adj_close=False),
    }


def main() -> None:
    """Write the fixtures."""
    DATA.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (DATA / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
