"""BybitNormalizer on real Bybit V5 frames (tests/data/bybit/ws/public) and on broken ones.

The samples come through the fake server's loader (``tests/fakes/bybit_samples.py``).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.enums import Side
from contracts.market import KlineEvent, OrderBookDelta, TickerEvent, TradeEvent
from contracts.meta import EventMeta, Source
from contracts.topics import MARKET_ORDERBOOK_DELTA, MARKET_TICKER
from planes.market.bybit_parse import _TICKER_FIELDS, BybitNormalizer
from tests.fakes.bybit_server import SAMPLE_FILES, load_samples

_BY_FILE = {file: key for key, file in SAMPLE_FILES.items()}


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(load_samples()[_BY_FILE[name]])


def normalizer() -> BybitNormalizer:
    return BybitNormalizer(lambda: EventMeta(Source.MARKET, 1), lambda: 1_700_000_000_000)


def feed(n: BybitNormalizer, message: dict[str, Any] | str) -> Any:
    return n.handle(message if isinstance(message, str) else json.dumps(message))


def test_linear_ticker_snapshot_then_deltas_merge_into_the_full_state() -> None:
    n = normalizer()
    snap = sample("ticker_linear_snapshot.json")
    first = feed(n, snap).events
    assert [t for t, _ in first] == [MARKET_TICKER]
    ticker = first[0][1]
    assert isinstance(ticker, TickerEvent)
    assert ticker.symbol == "BTCUSDT"
    assert ticker.last_price == Decimal("17216.00")
    assert ticker.bid_price == Decimal("17215.50")
    assert ticker.ask_size == Decimal("83.020")
    assert ticker.funding_rate == Decimal("-0.000212")
    assert ticker.open_interest == Decimal("68744.761")
    assert ticker.seq == snap["cs"]
    assert ticker.exchange_ts == snap["ts"]

    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "cs": snap["cs"] + 1,
        "ts": snap["ts"] + 100,
        "data": {"symbol": "BTCUSDT", "lastPrice": "17220.50", "bid1Price": "17220.00"},
    }
    merged = feed(n, delta).events[0][1]
    assert merged.last_price == Decimal("17220.50")
    assert merged.bid_price == Decimal("17220.00")
    # fields the delta omitted keep their snapshot values
    assert merged.ask_price == Decimal("17216.00")
    assert merged.mark_price == Decimal("17217.33")
    assert merged.volume_24h == Decimal("91705.276")


def test_spot_ticker_snapshot() -> None:
    ticker = feed(normalizer(), sample("ticker_spot_snapshot.json")).events[0][1]
    assert ticker.last_price == Decimal("21109.77")
    assert ticker.high_24h == Decimal("21426.99")
    assert ticker.mark_price is None


def test_a_ticker_delta_before_any_snapshot_and_a_repeated_cs_are_skipped() -> None:
    n = normalizer()
    snap = sample("ticker_linear_snapshot.json")
    delta = {**snap, "type": "delta", "data": {"symbol": "BTCUSDT", "lastPrice": "1"}}
    assert feed(n, delta).problem.startswith("out_of_order")
    feed(n, snap)
    again = feed(n, snap)
    assert again.events == []
    assert again.problem.startswith("duplicate")
    assert n.metrics.duplicates == 1
    assert n.metrics.out_of_order == 1


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([*sorted(_TICKER_FIELDS), "lastPrice"]),
            st.integers(1, 10**6).map(lambda v: f"{v / 100:.2f}"),
            min_size=1,
        ),
        max_size=20,
    )
)
def test_the_merged_ticker_never_loses_a_field_a_delta_omitted(
    deltas: list[dict[str, str]],
) -> None:
    n = normalizer()
    snap = sample("ticker_linear_snapshot.json")
    feed(n, snap)
    model = dict(snap["data"])
    for i, change in enumerate(deltas, start=1):
        frame = {
            "topic": "tickers.BTCUSDT",
            "type": "delta",
            "cs": snap["cs"] + i,
            "ts": snap["ts"] + i,
            "data": {"symbol": "BTCUSDT", **change},
        }
        ticker = feed(n, frame).events[0][1]
        model.update(change)
        assert ticker.last_price == Decimal(model["lastPrice"])
        for raw, field in _TICKER_FIELDS.items():
            assert getattr(ticker, field) == Decimal(model[raw]), raw


def _book_delta(u: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {
        "topic": "orderbook.50.BTCUSDT",
        "type": "delta",
        "ts": 1672304485000 + u,
        "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": 7961638724 + u},
    }


def test_orderbook_snapshot_delta_delete_and_u1_reset() -> None:
    n = normalizer()
    snap = sample("orderbook_snapshot.json")
    u0 = snap["data"]["u"]
    event = feed(n, snap).events[0][1]
    assert isinstance(event, OrderBookDelta)
    assert event.snapshot
    book = n.books["orderbook.50.BTCUSDT"]
    assert book.best_bid == Decimal("16493.50")
    real = sample("orderbook_delta.json")
    # the real delta's levels, renumbered to follow the snapshot
    delta = _book_delta(u0 + 1, real["data"]["b"], real["data"]["a"])
    parsed = feed(n, delta)
    assert [t for t, _ in parsed.events] == [MARKET_ORDERBOOK_DELTA]
    assert not parsed.events[0][1].snapshot
    assert Decimal("30240.00") not in book.bids  # size "0" deletes
    assert book.bids[Decimal("30247.20")] == Decimal("30.028")
    assert book.update_id == u0 + 1
    feed(n, _book_delta(u0 + 2, [["16493.50", "0"]], []))
    assert Decimal("16493.50") not in book.bids
    restart = _book_delta(1, [["100", "1"]], [["101", "2"]])
    assert feed(n, restart).events[0][1].snapshot
    assert book.bids == {Decimal(100): Decimal(1)}
    assert book.asks == {Decimal(101): Decimal(2)}


def test_orderbook_duplicates_out_of_order_and_gaps() -> None:
    n = normalizer()
    snap = sample("orderbook_snapshot.json")
    u0 = snap["data"]["u"]
    feed(n, snap)
    feed(n, _book_delta(u0 + 1, [["16490", "1"]], []))
    assert feed(n, _book_delta(u0 + 1, [["16490", "5"]], [])).problem.startswith("duplicate")
    assert feed(n, _book_delta(u0, [], [])).problem.startswith("out_of_order")
    gap = feed(n, _book_delta(u0 + 5, [["16491", "1"]], []))
    assert gap.problem.startswith("gap")
    assert gap.resync == "orderbook.50.BTCUSDT"
    assert n.metrics.gaps == 1
    # the book is stale: deltas are skipped until a fresh snapshot
    assert feed(n, _book_delta(u0 + 6, [], [])).events == []
    assert feed(n, snap).events[0][1].snapshot
    assert feed(n, _book_delta(u0 + 1, [], [])).events


def test_trades_once_each() -> None:
    n = normalizer()
    frame = sample("public_trade.json")
    trade = feed(n, frame).events[0][1]
    assert isinstance(trade, TradeEvent)
    assert trade.side is Side.BUY
    assert trade.price == Decimal("16578.50")
    assert trade.qty == Decimal("0.001")
    assert trade.trade_id == "20f43950-d8dd-5b31-9112-a178eb6023af"
    assert feed(n, frame).problem.startswith("duplicate")
    more = copy.deepcopy(frame)
    more["data"].append({**frame["data"][0], "i": "another", "S": "Sell"})
    fresh = feed(n, more).events
    assert [e.trade_id for _, e in fresh] == ["another"]
    assert fresh[0][1].side is Side.SELL


def test_klines_closed_from_confirm_and_repeats_skipped() -> None:
    n = normalizer()
    frame = sample("kline_5.json")
    bar = feed(n, frame).events[0][1]
    assert isinstance(bar, KlineEvent)
    assert not bar.closed
    assert bar.interval == "5"
    assert bar.symbol == "BTCUSDT"
    assert (bar.open, bar.close, bar.high, bar.low) == (
        Decimal("16649.5"),
        Decimal("16677"),
        Decimal("16677"),
        Decimal("16608"),
    )
    assert feed(n, frame).problem.startswith("duplicate")
    closing = copy.deepcopy(frame)
    closing["data"][0]["confirm"] = True
    assert feed(n, closing).events[0][1].closed


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('{"topic": "tickers.BTCUSDT", "data": ', "malformed"),
        ("[]", "malformed"),
        ("42", "malformed"),
        ('{"topic": 5}', "malformed"),
        ('{"topic": "liquidation.BTCUSDT", "data": {}}', "unknown"),
        ('{"hello": "world"}', "unknown"),
        ('{"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 1, "data": []}', "malformed"),
        (
            '{"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 1,'
            ' "data": {"symbol": "BTCUSDT", "lastPrice": "abc"}}',
            "malformed",
        ),
        ('{"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "data": {"s": "X"}}', "malformed"),
        ('{"topic": "publicTrade.BTCUSDT", "data": [{"i": "1", "S": "Up"}]}', "malformed"),
        ('{"topic": "kline.1.BTCUSDT", "data": [{"start": "x"}]}', "malformed"),
    ],
)
def test_bad_frames_are_counted_and_never_raise(raw: str, kind: str) -> None:
    n = normalizer()
    parsed = n.handle(raw)
    assert parsed.events == []
    assert parsed.problem is not None
    assert parsed.problem.startswith(kind)
    assert getattr(n.metrics, kind) == 1


def test_control_frames() -> None:
    n = normalizer()
    ack = n.handle('{"success":false,"ret_msg":"bad","conn_id":"c","req_id":"7","op":"subscribe"}')
    assert ack.control is not None
    assert (ack.control.op, ack.control.success, ack.control.req_id) == ("subscribe", False, "7")
    pong = n.handle('{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"p","op":"ping"}')
    assert pong.control is not None
    assert pong.control.op == "ping"
    spot_pong = n.handle('{"op":"pong","args":["1675418560633"],"conn_id":"c"}')
    assert spot_pong.control is not None
    assert spot_pong.control.op == "ping"
    assert n.metrics.control == 3


def test_feed_lag_is_measured_from_the_exchange_ts() -> None:
    n = normalizer()
    snap = sample("ticker_linear_snapshot.json")
    feed(n, snap)
    assert n.metrics.lag_ms_last == 1_700_000_000_000 - snap["ts"]
