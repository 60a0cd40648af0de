"""Market-plane payloads: connection requests and reports, and normalized market data.

Prices and sizes are ``Decimal``; timestamps are unix milliseconds.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from contracts.enums import Side
from contracts.meta import Payload

END_OF_DATA = "end_of_data"
"""``MarketDisconnected.reason`` of a source whose data ran out (replays, bounded generators)."""
CONNECT_FAILED = "connect_failed"
"""``MarketErrorEvent.code`` when a source's ``connect()`` raised: the boot fails at once."""


@attrs.frozen
class MarketConnectRequest(Payload):
    """Ask the MarketGateway to connect its sources (``source=None``: all of them)."""

    source: str | None = None


@attrs.frozen
class MarketDisconnectRequest(Payload):
    """Ask the MarketGateway to disconnect its sources (``source=None``: all of them)."""

    source: str | None = None
    reason: str = ""


@attrs.frozen
class MarketSubscribeRequest(Payload):
    """Ask the MarketGateway to stream ``channels`` (empty: the configured ones) for ``symbols``."""

    symbols: tuple[str, ...]
    channels: tuple[str, ...] = ()
    source: str | None = None


@attrs.frozen
class MarketConnected(Payload):
    """A source is connected and streaming (sent again after every reconnection)."""

    source: str
    endpoint: str = ""
    reconnect: bool = False


@attrs.frozen
class MarketDisconnected(Payload):
    """A source lost or closed its connection; ``will_reconnect`` tells whether it retries."""

    source: str
    reason: str = ""
    will_reconnect: bool = False


@attrs.frozen
class MarketErrorEvent(Payload):
    """A source failed to do something (connect, subscribe a topic, parse a frame ...)."""

    source: str
    code: str
    message: str
    topic: str | None = None


@attrs.frozen
class TickerEvent(Payload):
    """The full, merged state of a ticker (deltas are merged into the last snapshot first)."""

    exchange: str
    symbol: str
    last_price: Decimal
    exchange_ts: int
    bid_price: Decimal | None = None
    bid_size: Decimal | None = None
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    turnover_24h: Decimal | None = None
    price_24h_pcnt: Decimal | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    open_interest: Decimal | None = None
    funding_rate: Decimal | None = None
    seq: int | None = None


@attrs.frozen
class TradeEvent(Payload):
    """One public trade."""

    exchange: str
    symbol: str
    trade_id: str
    price: Decimal
    qty: Decimal
    side: Side
    exchange_ts: int


@attrs.frozen
class BookLevel:
    """One price level of an order book; ``size == 0`` in a delta deletes the level."""

    price: Decimal
    size: Decimal


@attrs.frozen
class OrderBookDelta(Payload):
    """An order-book update: a full snapshot (``snapshot=True``) or changed levels only."""

    exchange: str
    symbol: str
    snapshot: bool
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    update_id: int
    exchange_ts: int
    seq: int | None = None


@attrs.frozen
class KlineEvent(Payload):
    """An OHLCV bar; ``closed`` is true once the bar is final."""

    exchange: str
    symbol: str
    interval: str
    start_ts: int
    end_ts: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool
    turnover: Decimal | None = None
