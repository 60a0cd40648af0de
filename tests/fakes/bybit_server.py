"""A fake Bybit V5 public WebSocket server on 127.0.0.1, with fault injection.

It speaks the public protocol the way Bybit does (``subscribe``/``unsubscribe`` acks with
``req_id`` and ``conn_id``, application-level ``ping``/``pong``, the spot limit of 10 args per
request) and streams, per subscribed topic, messages built from the real samples in
``tests/data/bybit/ws/public`` (``tests/fakes/bybit_samples.py``):

* ``tickers.{S}``: linear sends a full snapshot, then deltas carrying only the fields that
  changed (always with ``symbol``), ``cs`` strictly increasing; spot sends full snapshots only;
* ``orderbook.{depth}.{S}``: a snapshot, then deltas with ``u`` + 1 and ``seq`` increasing,
  levels deleted with size ``"0"``, the book always crossed-free (best bid < best ask);
* ``publicTrade.{S}``: 1 to 3 trades per message, every ``i`` unique;
* ``kline.{interval}.{S}``: ``kline_updates_per_bar`` updates per bar, the last one with
  ``confirm: true``; the next bar starts ``interval`` later.

Content is deterministic given ``seed`` (timestamps follow the wall clock unless
``start_ts_ms`` is given). Market state (``cs``, ``u``, ``seq``, prices, trade ids) is shared per
topic across connections and moves on a little between connections, so sequence numbers keep
increasing over reconnects, as on the real venue.

Faults: ``drop_every`` (abort the TCP connection, no close frame), ``stall()`` (a half-open
socket: nothing sent, nothing read, so neither app-level nor protocol-level pings are answered),
``malformed_every`` (junk frames), ``duplicate_every``, ``out_of_order_every`` (orderbook deltas
swapped or skipped), ``reject_topics``, ``reset_orderbook()`` (``u == 1`` snapshot), ``restart()``.

Run ``python -m tests.fakes.bybit_server --help`` from the repository root for the soak CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import re
import signal
import socket
import struct
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.fakes.bybit_samples import PUBLIC_DIR, read_sample

HOST: Final = "127.0.0.1"
ENV_SAMPLES: Final = "PLANES_BYBIT_SAMPLES"
DEFAULT_DATA_DIR: Final = PUBLIC_DIR
SPOT_MAX_ARGS: Final = 10
CATEGORIES: Final = ("linear", "spot")
ORDERBOOK_DEPTHS: Final = {"linear": (1, 50, 200, 500, 1000), "spot": (1, 50, 200, 1000)}
_MINUTE: Final = 60_000
KLINE_INTERVALS_MS: Final = {
    **{str(m): m * _MINUTE for m in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720)},
    "D": 1440 * _MINUTE,
    "W": 7 * 1440 * _MINUTE,
    "M": 30 * 1440 * _MINUTE,
}
MALFORMED_KINDS: Final = ("truncated", "array", "unknown_topic", "number", "null")
OUT_OF_ORDER_MODES: Final = ("alternate", "swap", "gap")
SAMPLE_FILES: Final = {
    "ticker_linear": "ticker_linear_snapshot.json",
    "ticker_spot": "ticker_spot_snapshot.json",
    "orderbook_snapshot": "orderbook_snapshot.json",
    "orderbook_delta": "orderbook_delta.json",
    "trade": "public_trade.json",
    "kline": "kline_5.json",
}
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
_LOT: Final = Decimal("0.001")
_TICKS: Final = {"linear": Decimal("0.10"), "spot": Decimal("0.01")}
_NAMESPACE: Final = uuid.UUID("6d1f3c2e-8a4b-4f55-9c1e-3b2a7d9e0f11")
_UNSET: Final[Any] = object()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The sample directory: ``data_dir``, else ``$PLANES_BYBIT_SAMPLES``, else the repository's
    copies (``DEFAULT_DATA_DIR``)."""
    env = os.environ.get(ENV_SAMPLES, "").strip()
    chosen = data_dir if data_dir is not None else env or None
    if chosen is None:
        return DEFAULT_DATA_DIR
    path = Path(chosen)
    if not path.is_dir():
        raise FileNotFoundError(f"Bybit sample directory not found: {path}")
    return path


def load_samples(data_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The six sample messages by key of ``SAMPLE_FILES``, read from ``resolve_data_dir``."""
    folder = resolve_data_dir(data_dir)
    return {key: read_sample(folder / name) for key, name in SAMPLE_FILES.items()}


def _dumps(message: object) -> str:
    return json.dumps(message, separators=(",", ":"))


def _ticks(price: str | Decimal, tick: Decimal) -> int:
    return int((Decimal(price) / tick).to_integral_value(rounding=ROUND_HALF_EVEN))


def _price(ticks: int, tick: Decimal) -> str:
    return str(Decimal(ticks) * tick)


def _size(lots: int) -> str:
    return str(Decimal(lots) * _LOT)


def parse_topic(topic: str, category: str = "linear") -> tuple[str, str, str]:
    """``(channel, parameter, symbol)`` of a valid topic; ``ValueError(ret_msg)`` otherwise."""
    parts = topic.split(".") if isinstance(topic, str) else []
    not_found = f"error:handler not found,topic:{topic}"
    if len(parts) == 2 and parts[0] in ("tickers", "publicTrade"):
        channel, param, symbol = parts[0], "", parts[1]
    elif len(parts) == 3 and parts[0] == "orderbook":
        channel, param, symbol = parts
        if not param.isdigit() or int(param) not in ORDERBOOK_DEPTHS[category]:
            raise ValueError(not_found)
    elif len(parts) == 3 and parts[0] == "kline":
        channel, param, symbol = parts
        if param not in KLINE_INTERVALS_MS:
            raise ValueError(not_found)
    else:
        raise ValueError(not_found)
    if not _SYMBOL.match(symbol):
        raise ValueError(f"Invalid symbol :[{topic}]")
    return channel, param, symbol


# --------------------------------------------------------------------------------------------
# Topic streams: one per (connection, topic); the state object is shared per topic through the
# server's registry so a new subscription continues where the market was.


class _Stream:
    channel = ""

    def __init__(
        self, server: FakeBybitServer, topic: str, param: str, symbol: str, rng: random.Random
    ) -> None:
        self.server = server
        self.topic = topic
        self.param = param
        self.symbol = symbol
        self.rng = rng
        self.tick = server.tick_size
        previous = server._market.get(topic)
        if previous is None:
            self.state: Any = self.fresh_state()
        else:
            self.state = copy.deepcopy(previous)
            # The market moved on while nobody (on this connection) was listening.
            for _ in range(rng.randint(1, 5)):
                self.step()
        server._market[topic] = self.state

    def base_ticks(self, sample_price: str) -> int:
        base = self.server.base_prices.get(self.symbol)
        return _ticks(base if base is not None else sample_price, self.tick)

    def next_ts(self) -> int:
        self.state.ts = self.server._next_ts(self.state.ts)
        return int(self.state.ts)

    def fresh_state(self) -> Any:
        raise NotImplementedError

    def step(self) -> Any:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any] | None:
        """The message sent right after the subscribe ack (None: wait for the first tick)."""
        return None

    def next(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class _TickerState:
    data: dict[str, str]
    last: int
    mark: Decimal
    index: Decimal
    cs: int
    ts: int


_TICKER_PRICE_FIELDS: Final = (
    "lastPrice",
    "prevPrice24h",
    "highPrice24h",
    "lowPrice24h",
    "prevPrice1h",
    "markPrice",
    "indexPrice",
    "bid1Price",
    "ask1Price",
    "usdIndexPrice",
)


class _TickerStream(_Stream):
    channel = "tickers"

    def fresh_state(self) -> _TickerState:
        spot = self.server.category == "spot"
        sample = self.server.samples["ticker_spot" if spot else "ticker_linear"]
        data = {k: str(v) for k, v in sample["data"].items()}
        data["symbol"] = self.symbol
        sample_last = data["lastPrice"]
        last = self.base_ticks(sample_last)
        ratio = Decimal(_price(last, self.tick)) / Decimal(sample_last)
        for key in _TICKER_PRICE_FIELDS:
            if key in data and ratio != 1:
                data[key] = _price(_ticks(Decimal(data[key]) * ratio, self.tick), self.tick)
        if not spot:
            data["lastPrice"] = _price(last, self.tick)
            data["ask1Price"] = data["lastPrice"]
            data["bid1Price"] = _price(last - 1, self.tick)
        mark = Decimal(data.get("markPrice", data["lastPrice"]))
        index = Decimal(data.get("indexPrice", data.get("usdIndexPrice", data["lastPrice"])))
        ts = self.server._initial_ts()
        return _TickerState(data, last, mark, index, int(sample["cs"]), ts)

    def _pcnt(self) -> str:
        prev = Decimal(self.state.data["prevPrice24h"])
        last = Decimal(_price(self.state.last, self.tick))
        places = Decimal("0.0001") if self.server.category == "spot" else Decimal("0.000001")
        return str(((last - prev) / prev).quantize(places))

    def step(self) -> dict[str, str]:
        """Move the market once; return the fields whose value changed."""
        st: _TickerState = self.state
        rng = self.rng
        changed: dict[str, str] = {}
        spot = self.server.category == "spot"
        if rng.random() < 0.55:
            move = rng.choice((-3, -2, -1, 1, 2, 3))
            st.last += move
            last = _price(st.last, self.tick)
            changed["lastPrice"] = last
            changed["price24hPcnt"] = self._pcnt()
            if not spot:
                changed["tickDirection"] = "PlusTick" if move > 0 else "MinusTick"
                bid = st.last - 1 if move > 0 else st.last
                changed["bid1Price"] = _price(bid, self.tick)
                changed["ask1Price"] = _price(bid + 1, self.tick)
            if Decimal(last) > Decimal(st.data["highPrice24h"]):
                changed["highPrice24h"] = last
            if Decimal(last) < Decimal(st.data["lowPrice24h"]):
                changed["lowPrice24h"] = last
        if not spot:
            for key in ("bid1Size", "ask1Size"):
                if rng.random() < 0.5:
                    changed[key] = _size(rng.randint(1, 120_000))
            if rng.random() < 0.3:
                st.mark = Decimal(_price(st.last, self.tick)) + Decimal(rng.randint(-99, 99)) / 100
                changed["markPrice"] = str(st.mark)
            if rng.random() < 0.1:
                oi = Decimal(st.data["openInterest"]) + Decimal(rng.randint(-500, 500)) * _LOT
                changed["openInterest"] = str(oi)
                changed["openInterestValue"] = str((oi * st.mark).quantize(Decimal("0.01")))
        if rng.random() < 0.2:
            st.index = Decimal(_price(st.last, self.tick)) + Decimal(rng.randint(-99, 99)) / 100
            changed["usdIndexPrice" if spot else "indexPrice"] = str(st.index)
        if rng.random() < 0.15:
            lots = rng.randint(1, 5_000)
            volume = Decimal(st.data["volume24h"]) + Decimal(lots) * _LOT
            turnover = Decimal(st.data["turnover24h"]) + Decimal(lots) * _LOT * Decimal(
                _price(st.last, self.tick)
            )
            changed["volume24h"] = str(volume)
            changed["turnover24h"] = str(turnover)
        if not changed:
            key = "lastPrice" if spot else "bid1Size"
            changed[key] = st.data[key] if spot else _size(rng.randint(1, 120_000))
        st.data.update(changed)
        st.cs += rng.randint(1, 3)
        return changed

    def _message(self, kind: str, data: dict[str, str]) -> dict[str, Any]:
        st: _TickerState = self.state
        return {"topic": self.topic, "type": kind, "data": data, "cs": st.cs, "ts": self.next_ts()}

    def snapshot(self) -> dict[str, Any]:
        return self._message("snapshot", dict(self.state.data))

    def next(self) -> dict[str, Any]:
        changed = self.step()
        if self.server.category == "spot":  # spot tickers are always full snapshots
            return self._message("snapshot", dict(self.state.data))
        return self._message("delta", {"symbol": self.symbol, **changed})


@dataclass
class _BookState:
    bids: dict[int, int]
    asks: dict[int, int]
    u: int
    seq: int
    ts: int


class _OrderbookStream(_Stream):
    channel = "orderbook"

    def __init__(
        self, server: FakeBybitServer, topic: str, param: str, symbol: str, rng: random.Random
    ) -> None:
        self.depth = int(param)
        self.deltas = 0
        self.pending: list[dict[str, Any]] = []
        self.reset_pending = False
        super().__init__(server, topic, param, symbol, rng)

    def _build(self, best_bid: int) -> tuple[dict[int, int], dict[int, int]]:
        rng = self.rng
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        price = best_bid
        for _ in range(self.depth):
            bids[price] = rng.randint(1, 50_000)
            price -= rng.choice((1, 1, 1, 2, 3))
        price = best_bid + rng.choice((1, 1, 2))
        for _ in range(self.depth):
            asks[price] = rng.randint(1, 50_000)
            price += rng.choice((1, 1, 1, 2, 3))
        return bids, asks

    def fresh_state(self) -> _BookState:
        sample = self.server.samples["orderbook_snapshot"]
        spot = self.server.category == "spot"
        ticker = self.server.samples["ticker_spot" if spot else "ticker_linear"]
        bids, asks = self._build(self.base_ticks(ticker["data"]["lastPrice"]) - 1)
        ts = self.server._initial_ts()
        return _BookState(bids, asks, int(sample["data"]["u"]), int(sample["data"]["seq"]), ts)

    def _fill(self, side: dict[int, int], direction: int) -> None:
        """Trim to ``depth`` levels (dropping the worst) or extend beyond the worst level."""
        ordered = sorted(side, reverse=direction < 0)
        for price in ordered[self.depth :]:
            del side[price]
        while len(side) < self.depth:
            worst = min(side) if direction < 0 else max(side)
            side[worst + direction * self.rng.choice((1, 1, 2, 3))] = self.rng.randint(1, 50_000)

    def step(self) -> tuple[dict[int, int], dict[int, int]]:
        """Move the book once; return the changed levels per side (size 0: deleted)."""
        st: _BookState = self.state
        rng = self.rng
        old_bids, old_asks = dict(st.bids), dict(st.asks)
        if rng.random() < 0.35:
            best_bid = max(st.bids) + rng.choice((-3, -2, -1, 1, 2, 3))
            best_ask = best_bid + rng.choice((1, 1, 2))
            for price in [p for p in st.bids if p > best_bid]:
                del st.bids[price]
            for price in [p for p in st.asks if p < best_ask]:
                del st.asks[price]
            st.bids.setdefault(best_bid, rng.randint(1, 50_000))
            st.asks.setdefault(best_ask, rng.randint(1, 50_000))
        if rng.random() < 0.2 and self.depth > 2:
            side = st.bids if rng.random() < 0.5 else st.asks
            del side[rng.choice(sorted(side)[1:-1] or sorted(side))]
        for _ in range(rng.randint(1, 4)):
            side = st.bids if rng.random() < 0.5 else st.asks
            side[rng.choice(list(side))] = rng.randint(1, 50_000)
        self._fill(st.bids, -1)
        self._fill(st.asks, +1)
        st.u += 1
        st.seq += rng.randint(1, 20)
        return _diff(old_bids, st.bids), _diff(old_asks, st.asks)

    def _levels(self, side: dict[int, int], descending: bool) -> list[list[str]]:
        return [
            [_price(p, self.tick), _size(side[p]) if side[p] else "0"]
            for p in sorted(side, reverse=descending)
        ]

    def _message(self, kind: str, bids: dict[int, int], asks: dict[int, int]) -> dict[str, Any]:
        st: _BookState = self.state
        data = {
            "s": self.symbol,
            "b": self._levels(bids, descending=True),
            "a": self._levels(asks, descending=False),
            "u": st.u,
            "seq": st.seq,
        }
        return {"topic": self.topic, "type": kind, "ts": self.next_ts(), "data": data}

    def snapshot(self) -> dict[str, Any]:
        return self._message("snapshot", self.state.bids, self.state.asks)

    def _delta(self) -> dict[str, Any]:
        bids, asks = self.step()
        return self._message("delta", bids, asks)

    def next(self) -> dict[str, Any]:
        if self.reset_pending:  # Bybit restarted its book service: u starts again at 1
            self.reset_pending = False
            self.pending.clear()
            st: _BookState = self.state
            st.bids, st.asks = self._build(max(st.bids))
            st.u = 1
            st.seq += self.rng.randint(1, 20)
            self.server.sent["ob_reset"] += 1
            return self.snapshot()
        if self.pending:
            return self.pending.pop(0)
        self.deltas += 1
        every = self.server.out_of_order_every
        if not every or self.deltas % every:
            return self._delta()
        mode = self.server.out_of_order_mode
        if mode == "alternate":
            mode = "swap" if (self.deltas // every) % 2 else "gap"
        first, second = self._delta(), self._delta()
        if mode == "swap":  # u goes backwards: second (u + 1) first, then first (u)
            self.pending.append(first)
            self.server.sent["ob_swap"] += 1
        else:  # one u never sent: a gap the client must notice
            self.server.sent["ob_gap"] += 1
        return second


def _diff(old: dict[int, int], new: dict[int, int]) -> dict[int, int]:
    changed = {p: 0 for p in old if p not in new}
    changed.update({p: s for p, s in new.items() if old.get(p) != s})
    return changed


@dataclass
class _TradeState:
    last: int
    count: int
    ts: int


class _TradeStream(_Stream):
    channel = "publicTrade"

    def fresh_state(self) -> _TradeState:
        spot = self.server.category == "spot"
        ticker = self.server.samples["ticker_spot" if spot else "ticker_linear"]
        ts = self.server._initial_ts()
        return _TradeState(self.base_ticks(ticker["data"]["lastPrice"]), 0, ts)

    def step(self) -> list[dict[str, Any]]:
        st: _TradeState = self.state
        rng = self.rng
        template = self.server.samples["trade"]["data"][0]
        trades = []
        for _ in range(rng.randint(1, 3)):
            move = rng.choice((-2, -1, 0, 0, 1, 2))
            st.last += move
            st.count += 1
            trade = dict(template)
            trade.update(
                T=st.ts,
                s=self.symbol,
                S="Buy" if move > 0 or (move == 0 and rng.random() < 0.5) else "Sell",
                v=_size(rng.randint(1, 2_000)),
                p=_price(st.last, self.tick),
                L="PlusTick" if move > 0 else "MinusTick" if move < 0 else "ZeroPlusTick",
                i=str(uuid.uuid5(_NAMESPACE, f"{self.topic}:{st.count}")),
                BT=False,
            )
            trades.append(trade)
        return trades

    def next(self) -> dict[str, Any]:
        ts = self.next_ts()
        trades = self.step()
        for trade in trades:
            trade["T"] = ts
        return {"topic": self.topic, "type": "snapshot", "ts": ts, "data": trades}


@dataclass
class _KlineState:
    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: Decimal
    updates: int
    ts: int


class _KlineStream(_Stream):
    channel = "kline"

    def fresh_state(self) -> _KlineState:
        spot = self.server.category == "spot"
        ticker = self.server.samples["ticker_spot" if spot else "ticker_linear"]
        price = self.base_ticks(ticker["data"]["lastPrice"])
        ts = self.server._initial_ts()
        start = ts - ts % KLINE_INTERVALS_MS[self.param]
        return _KlineState(start, price, price, price, price, 0, Decimal(0), 0, ts)

    def step(self) -> dict[str, Any]:
        st: _KlineState = self.state
        rng = self.rng
        interval = KLINE_INTERVALS_MS[self.param]
        if st.updates >= self.server.kline_updates_per_bar:  # the previous bar was confirmed
            st.start += interval
            st.open = st.high = st.low = st.close
            st.volume, st.turnover, st.updates = 0, Decimal(0), 0
        st.close += rng.choice((-3, -2, -1, 0, 1, 2, 3))
        st.high, st.low = max(st.high, st.close), min(st.low, st.close)
        lots = rng.randint(1, 3_000)
        st.volume += lots
        st.turnover += Decimal(lots) * _LOT * Decimal(_price(st.close, self.tick))
        st.updates += 1
        bar = dict(self.server.samples["kline"]["data"][0])
        bar.update(
            start=st.start,
            end=st.start + interval - 1,
            interval=self.param,
            open=_price(st.open, self.tick),
            close=_price(st.close, self.tick),
            high=_price(st.high, self.tick),
            low=_price(st.low, self.tick),
            volume=_size(st.volume),
            turnover=str(st.turnover),
            confirm=st.updates >= self.server.kline_updates_per_bar,
            timestamp=st.ts,
        )
        return bar

    def next(self) -> dict[str, Any]:
        ts = self.next_ts()
        bar = self.step()
        bar["timestamp"] = ts
        return {"topic": self.topic, "data": [bar], "ts": ts, "type": "snapshot"}


_STREAMS: Final[dict[str, type[_Stream]]] = {
    "tickers": _TickerStream,
    "orderbook": _OrderbookStream,
    "publicTrade": _TradeStream,
    "kline": _KlineStream,
}


# --------------------------------------------------------------------------------------------
# Connections and the server.


@dataclass(eq=False)
class _Conn:
    index: int
    conn_id: str
    ws: ServerConnection
    path: str
    remote: str
    opened_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    not_stalled: asyncio.Event = field(default_factory=asyncio.Event)
    topics: dict[str, _Stream] = field(default_factory=dict)
    final_topics: list[str] = field(default_factory=list)
    subscriptions: int = 0
    data_sent: int = 0
    frames_sent: int = 0
    junk_sent: int = 0
    pings: int = 0
    stall_handle: asyncio.TimerHandle | None = None
    dropped: bool = False
    closed: bool = False
    close_code: int | None = None
    closed_at: float | None = None


@dataclass(frozen=True)
class ConnectionInfo:
    """A read-only snapshot of one accepted connection, for assertions."""

    index: int
    conn_id: str
    path: str
    remote: str
    open: bool
    stalled: bool
    dropped: bool
    topics: tuple[str, ...]
    data_sent: int
    frames_sent: int
    pings: int
    close_code: int | None
    opened_at: float
    closed_at: float | None


class FakeBybitServer:
    """A Bybit V5 public WebSocket server on 127.0.0.1 that streams sample-based data.

    Use ``async with FakeBybitServer(...) as server:`` or ``await server.start()`` /
    ``await server.stop()``. Fault knobs are plain attributes, also changed through
    :meth:`set_faults`; they apply from the next message on every connection.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        category: str = "linear",
        rate_hz: float = 20.0,
        seed: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        message_limit: int | None = None,
        reject_topics: Iterable[str] = (),
        drop_every: int | None = None,
        drop_rst: bool = False,
        malformed_every: int | None = None,
        malformed_kinds: Sequence[str] = MALFORMED_KINDS,
        duplicate_every: int | None = None,
        out_of_order_every: int | None = None,
        out_of_order_mode: str = "alternate",
        kline_updates_per_bar: int = 10,
        start_ts_ms: int | None = None,
        base_prices: dict[str, str | Decimal] | None = None,
        tick_size: str | Decimal | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, not {category!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        if kline_updates_per_bar < 1:
            raise ValueError("kline_updates_per_bar must be >= 1")
        self.category = category
        self.seed = seed
        self.samples = load_samples(data_dir)
        self.tick_size = Decimal(tick_size) if tick_size is not None else _TICKS[category]
        self.base_prices = dict(base_prices or {})
        self.kline_updates_per_bar = kline_updates_per_bar
        self.start_ts_ms = start_ts_ms
        self.on_event = on_event
        # Knobs (validated in set_faults).
        self.rate_hz = 20.0
        self.message_limit: int | None = None
        self.reject_topics: set[str] = set()
        self.drop_every: int | None = None
        self.drop_rst = False
        self.malformed_every: int | None = None
        self.malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
        self.duplicate_every: int | None = None
        self.out_of_order_every: int | None = None
        self.out_of_order_mode = "alternate"
        self.set_faults(
            rate_hz=rate_hz,
            message_limit=message_limit,
            reject_topics=reject_topics,
            drop_every=drop_every,
            drop_rst=drop_rst,
            malformed_every=malformed_every,
            malformed_kinds=malformed_kinds,
            duplicate_every=duplicate_every,
            out_of_order_every=out_of_order_every,
            out_of_order_mode=out_of_order_mode,
        )
        # Observability.
        self.connections = 0
        self.subscribe_requests: list[tuple[int, list[str]]] = []
        self.unsubscribe_requests: list[tuple[int, list[str]]] = []
        self.pings: Counter[int] = Counter()
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.violations: list[str] = []
        self.errors: list[BaseException] = []
        self.events: deque[str] = deque(maxlen=10_000)
        self.starts = 0
        self.stalls = 0
        # Internals.
        self._port = port
        self._server: Server | None = None
        self._stopping = False
        self._conns: dict[int, _Conn] = {}
        self._market: dict[str, Any] = {}
        self._last_ts = 0

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one once started with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/v5/public/{category}`` (any path is accepted)."""
        return f"ws://{HOST}:{self._port}/v5/public/{self.category}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    async def start(self) -> None:
        """Listen on 127.0.0.1 (on the same port again after a stop); no-op when running."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handler,
            HOST,
            self._port,
            compression=None,
            ping_interval=None,
            close_timeout=1.0,
            max_size=2**20,
            reuse_address=True,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self.starts += 1
        self._event(f"listening on {self.url}")

    async def stop(self, *, graceful: bool = False) -> None:
        """Stop listening and drop every connection; no-op when stopped.

        ``graceful=False`` (default) aborts the TCP connections without a close frame, like a
        killed process; ``graceful=True`` sends close frames with code 1001 (going away).
        """
        server = self._server
        if server is None:
            return
        self._server = None
        self._stopping = True
        try:
            server.close(close_connections=False)
            for conn in self._conns.values():
                if not conn.closed:
                    self._unstall(conn, quiet=True)
            if graceful:
                closing = [c.ws.close(1001, "server stopping") for c in self._open()]
                await asyncio.gather(*closing, return_exceptions=True)
            for ws in list(server.all_connections):
                ws.transport.abort()
            await server.wait_closed()
        finally:
            self._stopping = False
        self._event("stopped" + (" (graceful)" if graceful else " (connections aborted)"))

    async def restart(self, *, down_s: float = 0.0, graceful: bool = False) -> None:
        """stop(), stay down ``down_s`` seconds (connections refused), start() on the same port."""
        self._event(f"restart (down {down_s:g} s)")
        await self.stop(graceful=graceful)
        if down_s > 0:
            await asyncio.sleep(down_s)
        await self.start()

    # ---------------------------------------------------------------- faults

    def set_faults(
        self,
        *,
        rate_hz: float = _UNSET,
        message_limit: int | None = _UNSET,
        reject_topics: Iterable[str] = _UNSET,
        drop_every: int | None = _UNSET,
        drop_rst: bool = _UNSET,
        malformed_every: int | None = _UNSET,
        malformed_kinds: Sequence[str] = _UNSET,
        duplicate_every: int | None = _UNSET,
        out_of_order_every: int | None = _UNSET,
        out_of_order_mode: str = _UNSET,
    ) -> None:
        """Change knobs at run time; arguments left out keep their value, None disables."""
        for name, value in (
            ("message_limit", message_limit),
            ("drop_every", drop_every),
            ("malformed_every", malformed_every),
            ("duplicate_every", duplicate_every),
            ("out_of_order_every", out_of_order_every),
        ):
            if value is _UNSET:
                continue
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
            setattr(self, name, value)
        if rate_hz is not _UNSET:
            if not rate_hz > 0:
                raise ValueError(f"rate_hz must be > 0, not {rate_hz!r}")
            self.rate_hz = float(rate_hz)
        if reject_topics is not _UNSET:
            self.reject_topics = set(reject_topics)
        if drop_rst is not _UNSET:
            self.drop_rst = bool(drop_rst)
        if malformed_kinds is not _UNSET:
            unknown = set(malformed_kinds) - set(MALFORMED_KINDS)
            if unknown or not malformed_kinds:
                raise ValueError(f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}")
            self.malformed_kinds = tuple(malformed_kinds)
        if out_of_order_mode is not _UNSET:
            if out_of_order_mode not in OUT_OF_ORDER_MODES:
                raise ValueError(f"out_of_order_mode must be one of {OUT_OF_ORDER_MODES}")
            self.out_of_order_mode = out_of_order_mode

    def clear_faults(self) -> None:
        """Disable every per-message fault and the message limit; end every stall."""
        self.set_faults(
            message_limit=None,
            reject_topics=(),
            drop_every=None,
            malformed_every=None,
            duplicate_every=None,
            out_of_order_every=None,
        )
        self.end_stall()

    def stall(self, seconds: float | None, *, conns: Iterable[int] | None = None) -> list[int]:
        """Make the open connections (or ``conns``) half-open for ``seconds`` (None: until
        :meth:`end_stall`): nothing is sent and nothing is read, so no pong of any kind.

        Connections accepted later are not stalled. Frames the client sent meanwhile are read
        (and answered) when the stall ends, if the socket is still there. Returns the stalled
        connection indexes.
        """
        loop = asyncio.get_running_loop()
        wanted = None if conns is None else set(conns)
        targets = [c for c in self._open() if wanted is None or c.index in wanted]
        for conn in targets:
            if conn.stall_handle is not None:
                conn.stall_handle.cancel()
                conn.stall_handle = None
            if conn.not_stalled.is_set():
                conn.not_stalled.clear()
                conn.ws.transport.pause_reading()
            if seconds is not None:
                conn.stall_handle = loop.call_later(seconds, self._unstall, conn)
        self.stalls += 1
        how_long = "until end_stall()" if seconds is None else f"for {seconds:g} s"
        self._event(f"stall {[c.index for c in targets]} {how_long}")
        return [c.index for c in targets]

    def end_stall(self) -> None:
        """End every stall now."""
        for conn in self._open():
            self._unstall(conn)

    def reset_orderbook(self) -> int:
        """Make every streaming orderbook topic send a new book as a snapshot with ``u == 1``
        (what Bybit does after a restart of its book service). Returns how many topics."""
        count = 0
        for conn in self._open():
            for stream in conn.topics.values():
                if isinstance(stream, _OrderbookStream):
                    stream.reset_pending = True
                    count += 1
        self._event(f"orderbook reset on {count} topic(s)")
        return count

    # ---------------------------------------------------------------- observability

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return sum(1 for _ in self._open())

    @property
    def pings_total(self) -> int:
        """Application-level pings received on all connections."""
        return sum(self.pings.values())

    @property
    def last_connection(self) -> int | None:
        """Index of the most recently accepted connection."""
        return self.connections - 1 if self.connections else None

    def active_topics(self, conn_index: int) -> list[str]:
        """Topics streaming on a connection, in subscription order (closed: as at close)."""
        conn = self._conns[conn_index]
        return list(conn.final_topics if conn.closed else conn.topics)

    def conn_info(self, conn_index: int) -> ConnectionInfo:
        """A snapshot of a connection's state and counters."""
        c = self._conns[conn_index]
        return ConnectionInfo(
            index=c.index,
            conn_id=c.conn_id,
            path=c.path,
            remote=c.remote,
            open=not c.closed,
            stalled=not c.closed and not c.not_stalled.is_set(),
            dropped=c.dropped,
            topics=tuple(self.active_topics(conn_index)),
            data_sent=c.data_sent,
            frames_sent=c.frames_sent,
            pings=c.pings,
            close_code=c.close_code,
            opened_at=c.opened_at,
            closed_at=c.closed_at,
        )

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = ""
    ) -> None:
        """Poll ``predicate`` every 5 ms; ``TimeoutError`` after ``timeout_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            if loop.time() >= deadline:
                raise TimeoutError(f"fake Bybit: {timeout_s} s waiting for {what or predicate}")
            await asyncio.sleep(0.005)

    async def wait_for_connections(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until ``connections >= count`` (accepted, ever)."""
        await self.wait_for(lambda: self.connections >= count, timeout_s, f"{count} connections")

    # ---------------------------------------------------------------- internals

    def _event(self, line: str) -> None:
        self.events.append(line)
        if self.on_event is not None:
            self.on_event(line)

    def _violation(self, conn: _Conn, what: str) -> None:
        line = f"conn #{conn.index}: {what}"
        self.violations.append(line)
        self._event(f"protocol violation: {line}")

    def _open(self) -> list[_Conn]:
        return [c for c in self._conns.values() if not c.closed]

    def _initial_ts(self) -> int:
        # Not the samples' (2023) times: a live feed carries current ones, so feed lag is sane.
        start = self.start_ts_ms if self.start_ts_ms is not None else int(time.time() * 1000)
        return max(start, self._last_ts)

    def _next_ts(self, previous: int) -> int:
        if self.start_ts_ms is None:
            ts = max(previous + 1, int(time.time() * 1000))
        else:
            ts = previous + max(1, round(1000 / self.rate_hz))
        self._last_ts = max(self._last_ts, ts)
        return ts

    def _unstall(self, conn: _Conn, *, quiet: bool = False) -> None:
        if conn.stall_handle is not None:
            conn.stall_handle.cancel()
            conn.stall_handle = None
        if conn.not_stalled.is_set():
            return
        conn.not_stalled.set()
        if not conn.ws.transport.is_closing():
            conn.ws.transport.resume_reading()
        if not quiet:
            self._event(f"stall of conn #{conn.index} ended")

    async def _handler(self, ws: ServerConnection) -> None:
        if self._stopping or self._server is None:
            ws.transport.abort()
            return
        index = self.connections
        self.connections += 1
        remote = ws.remote_address
        conn = _Conn(
            index=index,
            conn_id=str(uuid.uuid5(_NAMESPACE, f"{self.seed}:conn:{index}")),
            ws=ws,
            path=ws.request.path if ws.request is not None else "",
            remote=f"{remote[0]}:{remote[1]}" if remote else "?",
            opened_at=time.monotonic(),
        )
        conn.not_stalled.set()
        self._conns[index] = conn
        self._event(f"conn #{index} open from {conn.remote} path={conn.path}")
        streamer = asyncio.create_task(self._stream(conn), name=f"fake-bybit-stream-{index}")
        try:
            async for frame in ws:
                await conn.not_stalled.wait()
                if not await self._on_frame(conn, frame):
                    break
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.errors.append(exc)
            raise
        finally:
            conn.closed = True
            conn.closed_at = time.monotonic()
            self._unstall(conn, quiet=True)
            streamer.cancel()
            await asyncio.wait({streamer})
            if not streamer.cancelled() and streamer.exception() is not None:
                self.errors.append(streamer.exception())  # type: ignore[arg-type]
            conn.final_topics = list(conn.topics)
            conn.topics.clear()
            conn.close_code = ws.close_code
            how = "dropped" if conn.dropped else f"closed code={ws.close_code}"
            self._event(
                f"conn #{index} {how} data={conn.data_sent} pings={conn.pings}"
                f" topics={len(conn.final_topics)}"
            )

    async def _stream(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while not conn.dropped:
            period = 1.0 / self.rate_hz
            next_t += period
            now = loop.time()
            if next_t < now - 5 * period:  # fell behind (a busy loop): do not burst
                next_t = now
            await asyncio.sleep(max(0.0, next_t - now))
            if not conn.not_stalled.is_set():
                await conn.not_stalled.wait()
                next_t = loop.time()
                continue
            async with conn.lock:
                for topic, stream in list(conn.topics.items()):
                    if conn.topics.get(topic) is not stream or not conn.not_stalled.is_set():
                        continue
                    if self._limit_reached(conn):
                        break
                    if not await self._emit(conn, stream.next(), stream.channel):
                        return

    def _limit_reached(self, conn: _Conn) -> bool:
        return self.message_limit is not None and conn.data_sent >= self.message_limit

    async def _send(self, conn: _Conn, text: str) -> bool:
        if conn.dropped or conn.closed:
            return False
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            return False
        conn.frames_sent += 1
        return True

    async def _emit(self, conn: _Conn, message: dict[str, Any], channel: str) -> bool:
        """Send one data message, then the faults due after it. Call with ``conn.lock`` held."""
        text = _dumps(message)
        if not await self._send(conn, text):
            return False
        conn.data_sent += 1
        self.sent["data"] += 1
        self.sent[str(message.get("type"))] += 1
        self.sent[channel] += 1
        n = conn.data_sent
        if self.duplicate_every and n % self.duplicate_every == 0:
            if not await self._send(conn, text):
                return False
            self.sent["duplicate"] += 1
        if self.malformed_every and n % self.malformed_every == 0:
            kind = self.malformed_kinds[conn.junk_sent % len(self.malformed_kinds)]
            conn.junk_sent += 1
            if not await self._send(conn, self._junk(kind, message)):
                return False
            self.sent["malformed"] += 1
            self.sent[f"malformed:{kind}"] += 1
        if self.drop_every and n % self.drop_every == 0:
            await self._drop(conn, f"after {n} data messages")
            return False
        return True

    def _junk(self, kind: str, message: dict[str, Any]) -> str:
        topic = str(message.get("topic", "tickers.BTCUSDT"))
        if kind == "truncated":
            return f'{{"topic":"{topic}","data":'
        if kind == "array":
            return "[]"
        if kind == "number":
            return "42"
        if kind == "null":
            return "null"
        symbol = topic.rsplit(".", 1)[-1]
        unknown = {"topic": f"unknownTopic.{symbol}", "type": "snapshot", "data": {}}
        return _dumps({**unknown, "ts": message.get("ts", 0)})

    async def _drop(self, conn: _Conn, why: str) -> None:
        """Abort the TCP connection, no close frame, once the frames already sent are out."""
        conn.dropped = True
        transport = conn.ws.transport
        for _ in range(1000):  # at most ~1 s; the transport offers no drain event
            if not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.001)
        if self.drop_rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self.sent["drop"] += 1
        self._event(f"conn #{conn.index} drop {why}" + (" (RST)" if self.drop_rst else ""))

    async def _reply(
        self, conn: _Conn, op: str, req_id: Any, *, success: bool, ret_msg: str
    ) -> bool:
        body: dict[str, Any] = {
            "success": success,
            "ret_msg": ret_msg,
            "conn_id": conn.conn_id,
            "req_id": req_id,
            "op": op,
        }
        if op == "ping" and self.category == "spot":
            del body["req_id"]  # Bybit's public spot pong carries no req_id
        ok = await self._send(conn, _dumps(body))
        if ok:
            self.sent["pong" if op == "ping" and success else "ack"] += 1
            if not success:
                self.sent["ack_fail"] += 1
        return ok

    async def _on_frame(self, conn: _Conn, frame: str | bytes) -> bool:
        """Answer one client frame; False when the connection is gone."""
        if isinstance(frame, bytes):
            self.received["binary"] += 1
            self._violation(conn, "binary frame")
            return True
        try:
            request = json.loads(frame)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self.received["invalid"] += 1
            self._violation(conn, f"request is not a JSON object: {frame[:80]!r}")
            return await self._reply(conn, "", "", success=False, ret_msg="error:invalid request")
        op = request.get("op")
        req_id = request.get("req_id", "")
        self.received[str(op)] += 1
        if op == "ping":
            conn.pings += 1
            self.pings[conn.index] += 1
            async with conn.lock:
                return await self._reply(conn, "ping", req_id, success=True, ret_msg="pong")
        if op in ("subscribe", "unsubscribe"):
            return await self._on_subscription(conn, op, req_id, request.get("args"))
        self._violation(conn, f"unsupported op {op!r}")
        return await self._reply(
            conn, str(op), req_id, success=False, ret_msg=f"error:unsupported op {op}"
        )

    def _check_subscription(self, conn: _Conn, op: str, args: list[str]) -> str | None:
        """Why Bybit would refuse this (un)subscribe request, or None."""
        if self.category == "spot" and len(args) > SPOT_MAX_ARGS:
            self._violation(conn, f"spot {op} with {len(args)} args (>{SPOT_MAX_ARGS})")
            return f"args size >{SPOT_MAX_ARGS}"
        if op == "unsubscribe":
            return None
        seen: set[str] = set()
        for topic in args:
            if topic in self.reject_topics:
                return f"Invalid symbol :[{topic}]"
            try:
                parse_topic(topic, self.category)
            except ValueError as exc:
                self._violation(conn, f"bad topic {topic!r}")
                return str(exc)
            if topic in conn.topics or topic in seen:
                self._violation(conn, f"subscribed twice to {topic}")
                return f"error:already subscribed,topic:{topic}"
            seen.add(topic)
        return None

    async def _on_subscription(self, conn: _Conn, op: str, req_id: Any, args: Any) -> bool:
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args) or not args:
            self._violation(conn, f"{op} args must be a non-empty list of strings: {args!r}")
            args_list = [str(a) for a in args] if isinstance(args, list) else []
            (self.subscribe_requests if op == "subscribe" else self.unsubscribe_requests).append(
                (conn.index, args_list)
            )
            async with conn.lock:
                return await self._reply(conn, op, req_id, success=False, ret_msg="error:args")
        (self.subscribe_requests if op == "subscribe" else self.unsubscribe_requests).append(
            (conn.index, list(args))
        )
        async with conn.lock:
            refusal = self._check_subscription(conn, op, args)
            self._event(f"conn #{conn.index} {op} {args} -> {refusal or 'ok'}")
            if refusal is not None:
                return await self._reply(conn, op, req_id, success=False, ret_msg=refusal)
            if op == "unsubscribe":
                for topic in args:
                    conn.topics.pop(topic, None)
                return await self._reply(conn, op, req_id, success=True, ret_msg="")
            if not await self._reply(conn, op, req_id, success=True, ret_msg=""):
                return False
            new = []
            for topic in args:
                channel, param, symbol = parse_topic(topic, self.category)
                conn.subscriptions += 1
                rng = random.Random(f"{self.seed}:{topic}:{conn.index}:{conn.subscriptions}")
                conn.topics[topic] = _STREAMS[channel](self, topic, param, symbol, rng)
                new.append(conn.topics[topic])
            for stream in new:
                snapshot = stream.snapshot()
                if snapshot is None or self._limit_reached(conn):
                    continue
                if not await self._emit(conn, snapshot, stream.channel):
                    return False
            return True


# --------------------------------------------------------------------------------------------
# CLI for manual soak runs against the real runtime.


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.bybit_server",
        description="Fake Bybit V5 public WebSocket server on 127.0.0.1 with fault injection.",
    )
    add = parser.add_argument
    add("--port", type=int, default=9876, help="TCP port (0: ephemeral); default 9876")
    add("--category", choices=CATEGORIES, default="linear")
    add("--rate-hz", type=float, default=20.0, help="messages per second per topic")
    add("--seed", type=int, default=0)
    add("--data-dir", default=None, help="sample directory (default: tests/data/bybit/ws/public)")
    add("--message-limit", type=int, default=None, help="data messages per connection")
    add("--drop-every", type=int, default=None, help="abort TCP after every N data messages")
    add("--drop-rst", action="store_true", help="drop with a TCP RST instead of a FIN")
    add("--malformed-every", type=int, default=None, help="junk frame after every N messages")
    add("--duplicate-every", type=int, default=None, help="resend every Nth message")
    add("--out-of-order-every", type=int, default=None, help="swap/skip every Nth book delta")
    add("--reject-topic", action="append", default=[], help="answer success:false (repeatable)")
    add("--stall-s", type=float, default=None, help="stall open connections this long")
    add("--stall-after-s", type=float, default=20.0, help="first stall this long after start")
    add("--stall-every-s", type=float, default=None, help="repeat the stall with this period")
    add("--restart-every-s", type=float, default=None, help="restart the server periodically")
    add("--restart-down-s", type=float, default=0.0, help="stay down this long on restart")
    add("--stats-every-s", type=float, default=0.0, help="print counters periodically")
    return parser.parse_args(argv)


async def _every(first_s: float, period_s: float | None, action: Callable[[], Any]) -> None:
    await asyncio.sleep(first_s)
    while True:
        result = action()
        if asyncio.iscoroutine(result):
            await result
        if not period_s:
            return
        await asyncio.sleep(period_s)


async def _run_cli(args: argparse.Namespace) -> int:
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:9.3f}s] {line}", flush=True)

    server = FakeBybitServer(
        port=args.port,
        category=args.category,
        rate_hz=args.rate_hz,
        seed=args.seed,
        data_dir=args.data_dir,
        message_limit=args.message_limit,
        reject_topics=args.reject_topic,
        drop_every=args.drop_every,
        drop_rst=args.drop_rst,
        malformed_every=args.malformed_every,
        duplicate_every=args.duplicate_every,
        out_of_order_every=args.out_of_order_every,
        on_event=say,
    )

    def stats() -> None:
        sent = ", ".join(f"{k}={v}" for k, v in sorted(server.sent.items()))
        say(
            f"stats: connections={server.connections} open={server.open_connections}"
            f" pings={server.pings_total} violations={len(server.violations)} {sent}"
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    say(f"url {server.url}  (Ctrl-C to stop)")
    jobs = []
    if args.stall_s is not None:
        stall_s = args.stall_s

        async def stall_an_open_connection() -> None:
            # Connections come and go (drops): wait for one to be open, or the stall hits none.
            await server.wait_for(lambda: server.open_connections > 0, timeout_s=30, what="open")
            server.stall(stall_s)

        jobs.append(_every(args.stall_after_s, args.stall_every_s, stall_an_open_connection))
    if args.restart_every_s:
        down_s = args.restart_down_s
        jobs.append(
            _every(
                args.restart_every_s, args.restart_every_s, lambda: server.restart(down_s=down_s)
            )
        )
    if args.stats_every_s:
        jobs.append(_every(args.stats_every_s, args.stats_every_s, stats))
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stats()
    return 1 if server.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tests.fakes.bybit_server``."""
    return asyncio.run(_run_cli(_parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
