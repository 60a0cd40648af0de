"""Execution-plane payloads: order lifecycle and positions, and the view recovery reads of one."""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs

from contracts.enums import OrderStatus, OrderType, Side
from contracts.meta import EventMeta, Payload


@attrs.frozen
class OrderEvent(Payload):
    """A change in an order's life: submitted, accepted, (partially) filled, cancelled, rejected.

    On fills ``last_fill_qty``/``last_fill_price``/``fee`` describe this fill; ``filled_qty`` and
    ``avg_fill_price`` the order so far.
    """

    order_id: str
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    order_type: OrderType
    status: OrderStatus
    qty: Decimal
    filled_qty: Decimal = Decimal(0)
    price: Decimal | None = None
    avg_fill_price: Decimal | None = None
    last_fill_qty: Decimal | None = None
    last_fill_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    fee_asset: str = ""
    intent_id: str | None = None
    scenario_id: str | None = None
    reason: str = ""
    exchange_ts: int | None = None


@attrs.frozen
class PositionUpdate(Payload):
    """A position after a fill or a mark-to-market; money in the quote currency."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    mark_price: Decimal
    equity: Decimal
    cash: Decimal


@attrs.define
class PositionView:
    """What recovery reads of a ``portfolio:position_update``: the fields its replayers need.

    A view (``contracts.ports.ViewReplaying``): the PositionManager takes the mark, the
    StrategyManager the quantity, the RiskManager the rest (its equity path is stamped with
    ``meta.ts``). The payload's other fields are never decoded at boot. Not frozen, as views
    are not (a frozen class's ``__init__`` costs about three times as much, once per journaled
    update); nothing writes to a view once it is built.
    """

    meta: EventMeta
    symbol: str
    qty: Decimal
    realized_pnl: Decimal
    mark_price: Decimal
    equity: Decimal


# -- fees: how a fill's fee is booked (the ledger books by it, risk counts by it) ---------


def base_asset(symbol: str, quote: str) -> str:
    """``symbol``'s base asset: ``symbol`` less its ``quote`` suffix ("" when it has none)."""
    if len(symbol) > len(quote) and symbol.upper().endswith(quote.upper()):
        return symbol[: len(symbol) - len(quote)]
    return ""


class FeeKind(enum.StrEnum):
    """How a fill's fee is booked, by the asset it is charged in (``planes.execution.ledger``)."""

    QUOTE = "quote"
    """Paid from cash."""
    BASE = "base"
    """Taken from the asset traded; valued in quote at the fill price."""
    OTHER = "other"
    """Not valued: kept per asset in ``Ledger.unvalued_fees``."""


def fee_kind(symbol: str, fee_asset: str, quote: str) -> FeeKind:
    """How a fee in ``fee_asset`` on a fill of ``symbol`` is booked in ``quote`` books."""
    asset = fee_asset.upper()
    if not asset or asset == quote.upper():
        return FeeKind.QUOTE
    if asset == base_asset(symbol, quote).upper():
        return FeeKind.BASE
    return FeeKind.OTHER
