"""Bybit V5 public frames -> normalized ``market:*`` payloads, with no I/O.

``BybitNormalizer.handle(raw)`` turns one WebSocket frame into a ``Parsed`` result: payloads to
publish, a control reply (subscribe ack, pong), or a problem it counted (malformed, unknown,
duplicate, gap). It never raises on bad input, so nothing that arrives can stop the stream.

Per topic it keeps what the stream needs to be read correctly:

* ``tickers.{S}``: linear sends a snapshot, then deltas that omit unchanged fields; they are
  merged so every ``TickerEvent`` carries the full current state. ``cs`` detects duplicates.
* ``orderbook.{depth}.{S}``: a local book; a snapshot (or a delta with ``u == 1``, Bybit's
  service restart) replaces it, a delta with size 0 deletes a level. ``u`` must grow by one: an
  equal or lower ``u`` is a duplicate / out-of-order frame and is skipped; a jump is a gap: the
  book is marked stale, deltas are ignored and a resync (fresh snapshot) is requested.
* ``publicTrade.{S}``: each trade once, by trade id.
* ``kline.{interval}.{S}``: bars, ``closed`` from ``confirm``; a repeated update is skipped.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from contracts.enums import Side
from contracts.market import BookLevel, KlineEvent, OrderBookDelta, TickerEvent, TradeEvent
from contracts.meta import EventMeta, Payload
from contracts.topics import (
    MARKET_KLINE,
    MARKET_ORDERBOOK_DELTA,
    MARKET_TICKER,
    MARKET_TRADE,
    Topic,
)
from planes.market.orderbook import LocalBook

EXCHANGE = "bybit"
_TRADE_IDS_KEPT = 2048

# Bybit ticker field -> TickerEvent field (Decimal valued; lastPrice is required).
_TICKER_FIELDS: Mapping[str, str] = {
    "bid1Price": "bid_price",
    "bid1Size": "bid_size",
    "ask1Price": "ask_price",
    "ask1Size": "ask_size",
    "highPrice24h": "high_24h",
    "lowPrice24h": "low_24h",
    "volume24h": "volume_24h",
    "turnover24h": "turnover_24h",
    "price24hPcnt": "price_24h_pcnt",
    "markPrice": "mark_price",
    "indexPrice": "index_price",
    "openInterest": "open_interest",
    "fundingRate": "funding_rate",
}
_TICKER_DECIMALS: Mapping[str, str] = {"lastPrice": "last_price", **_TICKER_FIELDS}


class FrameError(ValueError):
    """A frame that cannot be read; the message says why."""


@attrs.define
class FeedMetrics:
    """Counters of one feed; read by the observability plane and the tests."""

    messages: int = 0
    data_messages: int = 0
    events: int = 0
    control: int = 0
    malformed: int = 0
    unknown: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    subscribe_rejected: int = 0
    watchdog_trips: int = 0
    pings_sent: int = 0
    publish_errors: int = 0
    lag_ms_last: int = 0
    lag_ms_max: int = 0

    def as_dict(self) -> dict[str, int]:
        """Every counter by name."""
        return attrs.asdict(self)


@attrs.frozen
class Control:
    """A reply to one of our requests: ``op`` is ``subscribe``, ``unsubscribe`` or ``ping``."""

    op: str
    success: bool
    ret_msg: str
    req_id: str


@attrs.define
class Parsed:
    """What one frame amounted to."""

    events: list[tuple[Topic[Any], Payload]] = attrs.field(factory=list)
    control: Control | None = None
    problem: str | None = None
    """``malformed``, ``unknown``, ``duplicate``, ``out_of_order`` or ``gap`` with a reason."""
    resync: str | None = None
    """A topic whose book must be rebuilt from a fresh snapshot."""


def _dec(value: Any, field: str) -> Decimal:
    if value.__class__ is str:  # the common case, kept short: it runs ~15 times per ticker
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise FrameError(f"{field}: {value!r} is not a number") from None
        if result.is_finite():
            return result
        raise FrameError(f"{field}: {value!r} is not finite")
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(f"{field}: expected a decimal string, got {value!r}")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise FrameError(f"{field}: {value!r} is not a number") from None
    if not result.is_finite():
        raise FrameError(f"{field}: {value!r} is not finite")
    return result


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise FrameError(f"{field}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise FrameError(f"{field}: expected an integer, got {value!r}")


def _levels(raw: Any, field: str) -> tuple[BookLevel, ...]:
    if raw.__class__ is list:
        # The fast path: well-formed [["price", "size"], ...]. Decimal() refuses anything that
        # is not a number (the checked path then says which); NaN and infinities are refused here.
        try:
            levels = tuple([BookLevel(Decimal(p), Decimal(q)) for p, q in raw])
        except (ValueError, TypeError, ArithmeticError):
            pass
        else:
            for level in levels:
                if not (level.price.is_finite() and level.size.is_finite()):
                    break
            else:
                return levels
    return _levels_checked(raw, field)


def _levels_checked(raw: Any, field: str) -> tuple[BookLevel, ...]:
    """The slow path, for a precise error message."""
    if not isinstance(raw, list):
        raise FrameError(f"{field}: expected a list of [price, size], got {raw!r}")
    levels = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise FrameError(f"{field}: expected [price, size], got {item!r}")
        levels.append(BookLevel(_dec(item[0], field), _dec(item[1], field)))
    return tuple(levels)


class BybitNormalizer:
    """Reads frames of one connection family; state survives reconnections on purpose."""

    def __init__(
        self,
        meta: Callable[[], EventMeta],
        now_ms: Callable[[], int],
        metrics: FeedMetrics | None = None,
    ) -> None:
        self._meta = meta
        self._now_ms = now_ms
        self.metrics = metrics or FeedMetrics()
        self.tickers: dict[str, dict[str, Any]] = {}
        self._ticker_cs: dict[str, int] = {}
        self.books: dict[str, LocalBook] = {}
        self.stale_books: set[str] = set()
        self._trade_ids: dict[str, tuple[set[str], deque[str]]] = {}
        self._kline_last: dict[str, tuple[int, int, bool]] = {}

    def reset_topic(self, topic: str) -> None:
        """Forget a topic's sequence state (before a resubscription brings a snapshot)."""
        self._ticker_cs.pop(topic, None)
        self._kline_last.pop(topic, None)

    def handle(self, raw: str | bytes) -> Parsed:  # noqa: PLR0911 - one return per frame kind
        """Read one frame (see the module docstring); never raises on bad input."""
        metrics = self.metrics
        metrics.messages += 1
        try:
            message = json.loads(raw)
        except ValueError as exc:
            metrics.malformed += 1
            return Parsed(problem=f"malformed: not JSON ({exc})")
        if not isinstance(message, dict):
            metrics.malformed += 1
            return Parsed(problem=f"malformed: a JSON {type(message).__name__}, not an object")
        topic = message.get("topic")
        if topic is None:
            return self._control(message)
        if not isinstance(topic, str):
            metrics.malformed += 1
            return Parsed(problem=f"malformed: topic {topic!r}")
        kind = topic.partition(".")[0]
        try:
            if kind == "tickers":
                parsed = self._ticker(topic, message)
            elif kind == "orderbook":
                parsed = self._orderbook(topic, message)
            elif kind == "publicTrade":
                parsed = self._trades(topic, message)
            elif kind == "kline":
                parsed = self._klines(topic, message)
            else:
                metrics.unknown += 1
                return Parsed(problem=f"unknown: topic {topic!r}")
        except FrameError as exc:
            metrics.malformed += 1
            return Parsed(problem=f"malformed: {topic}: {exc}")
        metrics.data_messages += 1
        metrics.events += len(parsed.events)
        ts = message.get("ts")
        if isinstance(ts, int) and not isinstance(ts, bool):
            lag = self._now_ms() - ts
            metrics.lag_ms_last = lag
            metrics.lag_ms_max = max(metrics.lag_ms_max, lag)
        return parsed

    def _control(self, message: dict[str, Any]) -> Parsed:
        op = message.get("op")
        if not isinstance(op, str):
            self.metrics.unknown += 1
            return Parsed(problem=f"unknown: frame without topic or op: {str(message)[:120]}")
        self.metrics.control += 1
        if op == "pong":  # spot answers a ping with {"op": "pong", "args": [...]}
            return Parsed(control=Control("ping", True, "pong", str(message.get("req_id", ""))))
        return Parsed(
            control=Control(
                op=op,
                success=bool(message.get("success", True)),
                ret_msg=str(message.get("ret_msg", "")),
                req_id=str(message.get("req_id", "")),
            )
        )

    # -- tickers ---------------------------------------------------------------------------

    def _ticker(self, topic: str, message: dict[str, Any]) -> Parsed:
        data = message.get("data")
        if not isinstance(data, dict):
            raise FrameError(f"data: expected an object, got {data!r}")
        cs = message.get("cs")
        if isinstance(cs, int) and not isinstance(cs, bool):
            last = self._ticker_cs.get(topic)
            if last is not None and cs <= last:
                self.metrics.duplicates += 1
                return Parsed(problem=f"duplicate: {topic} cs {cs} <= {last}")
        if message.get("type") == "delta":
            known = self.tickers.get(topic)
            if known is None:
                self.metrics.out_of_order += 1
                return Parsed(problem=f"out_of_order: {topic} delta before its snapshot")
            state = dict(known)  # a copy: a bad field must leave the known state untouched
        else:
            state = {}
        fields = _TICKER_DECIMALS
        for key, value in data.items():
            name = fields.get(key)
            if name is not None:
                state[name] = _dec(value, key) if value != "" else None
            elif key == "symbol":
                if not isinstance(value, str):
                    raise FrameError(f"symbol: {value!r}")
                state["symbol"] = value
        if state.get("last_price") is None or "symbol" not in state:
            raise FrameError("a ticker needs symbol and lastPrice")
        event = TickerEvent(
            self._meta(),
            exchange=EXCHANGE,
            exchange_ts=_int(message.get("ts"), "ts"),
            seq=cs if isinstance(cs, int) and not isinstance(cs, bool) else None,
            **state,
        )
        self.tickers[topic] = state
        if isinstance(cs, int) and not isinstance(cs, bool):
            self._ticker_cs[topic] = cs
        return Parsed(events=[(MARKET_TICKER, event)])

    # -- order book ------------------------------------------------------------------------

    def _orderbook(self, topic: str, message: dict[str, Any]) -> Parsed:
        data = message.get("data")
        if not isinstance(data, dict):
            raise FrameError(f"data: expected an object, got {data!r}")
        symbol = data.get("s")
        if not isinstance(symbol, str):
            raise FrameError(f"s: {symbol!r}")
        update_id = _int(data.get("u"), "u")
        seq = data.get("seq")
        bids = _levels(data.get("b", []), "b")
        asks = _levels(data.get("a", []), "a")
        book = self.books.get(topic)
        snapshot = message.get("type") == "snapshot" or update_id == 1
        if snapshot:
            book = self.books[topic] = book or LocalBook()
            book.apply_snapshot(bids, asks, update_id)
            self.stale_books.discard(topic)
        elif book is None or topic in self.stale_books:
            self.metrics.out_of_order += 1
            return Parsed(problem=f"out_of_order: {topic} delta u {update_id} without a snapshot")
        elif update_id <= book.update_id:
            if update_id == book.update_id:
                self.metrics.duplicates += 1
                return Parsed(problem=f"duplicate: {topic} u {update_id}")
            self.metrics.out_of_order += 1
            return Parsed(problem=f"out_of_order: {topic} u {update_id} after {book.update_id}")
        elif update_id != book.update_id + 1:
            self.metrics.gaps += 1
            self.stale_books.add(topic)
            missing = update_id - book.update_id - 1
            return Parsed(
                problem=f"gap: {topic} u {book.update_id} -> {update_id} ({missing} missing)",
                resync=topic,
            )
        else:
            book.apply_delta(bids, asks, update_id)
        event = OrderBookDelta(
            self._meta(),
            exchange=EXCHANGE,
            symbol=symbol,
            snapshot=snapshot,
            bids=bids,
            asks=asks,
            update_id=update_id,
            exchange_ts=_int(message.get("ts"), "ts"),
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        )
        return Parsed(events=[(MARKET_ORDERBOOK_DELTA, event)])

    # -- trades ----------------------------------------------------------------------------

    def _trades(self, topic: str, message: dict[str, Any]) -> Parsed:
        data = message.get("data")
        if not isinstance(data, list):
            raise FrameError(f"data: expected a list of trades, got {data!r}")
        seen, order = self._trade_ids.setdefault(topic, (set(), deque()))
        events: list[tuple[Topic[Any], Payload]] = []
        fresh: list[TradeEvent] = []
        for item in data:
            if not isinstance(item, dict):
                raise FrameError(f"trade: expected an object, got {item!r}")
            trade_id = item.get("i")
            if not isinstance(trade_id, str):
                raise FrameError(f"i: {trade_id!r}")
            side = item.get("S")
            if side not in ("Buy", "Sell"):
                raise FrameError(f"S: {side!r} is not Buy or Sell")
            symbol = item.get("s")
            if not isinstance(symbol, str):
                raise FrameError(f"s: {symbol!r}")
            if trade_id in seen:
                continue
            fresh.append(
                TradeEvent(
                    self._meta(),
                    exchange=EXCHANGE,
                    symbol=symbol,
                    trade_id=trade_id,
                    price=_dec(item.get("p"), "p"),
                    qty=_dec(item.get("v"), "v"),
                    side=Side.BUY if side == "Buy" else Side.SELL,
                    exchange_ts=_int(item.get("T"), "T"),
                )
            )
        if data and not fresh:
            self.metrics.duplicates += 1
            return Parsed(problem=f"duplicate: {topic} trades already seen")
        for trade in fresh:
            seen.add(trade.trade_id)
            order.append(trade.trade_id)
            if len(order) > _TRADE_IDS_KEPT:
                seen.discard(order.popleft())
            events.append((MARKET_TRADE, trade))
        return Parsed(events=events)

    # -- klines ----------------------------------------------------------------------------

    def _klines(self, topic: str, message: dict[str, Any]) -> Parsed:
        data = message.get("data")
        if not isinstance(data, list):
            raise FrameError(f"data: expected a list of bars, got {data!r}")
        symbol = topic.rsplit(".", 1)[-1]
        events: list[tuple[Topic[Any], Payload]] = []
        last = self._kline_last.get(topic)
        for bar in data:
            if not isinstance(bar, dict):
                raise FrameError(f"bar: expected an object, got {bar!r}")
            start = _int(bar.get("start"), "start")
            stamp = _int(bar.get("timestamp", message.get("ts")), "timestamp")
            confirm = bar.get("confirm")
            if not isinstance(confirm, bool):
                raise FrameError(f"confirm: {confirm!r}")
            key = (start, stamp, confirm)
            if last is not None and key <= last:
                continue
            event = KlineEvent(
                self._meta(),
                exchange=EXCHANGE,
                symbol=symbol,
                interval=str(bar.get("interval", topic.split(".")[1])),
                start_ts=start,
                end_ts=_int(bar.get("end"), "end"),
                open=_dec(bar.get("open"), "open"),
                high=_dec(bar.get("high"), "high"),
                low=_dec(bar.get("low"), "low"),
                close=_dec(bar.get("close"), "close"),
                volume=_dec(bar.get("volume"), "volume"),
                closed=confirm,
                turnover=_dec(bar.get("turnover"), "turnover") if "turnover" in bar else None,
            )
            events.append((MARKET_KLINE, event))
            last = key
        if data and not events:
            self.metrics.duplicates += 1
            return Parsed(problem=f"duplicate: {topic} bar update already seen")
        if last is not None:
            self._kline_last[topic] = last
        return Parsed(events=events)
