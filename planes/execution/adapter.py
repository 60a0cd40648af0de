"""The port every execution venue implements (paper now, Bybit later), and what it exchanges.

An adapter takes ``OrderRequest`` values and reports every change in an order's life on
``exec:order_event`` itself (it holds the execution plane's bus handle): ``submitted``, then
``accepted`` or ``rejected``, then ``partially_filled`` / ``filled`` as fills come, or
``cancelled``. It never books positions: the PositionManager does, from those events. The
queries (``open_orders``, ``positions``, ``wallet``) are the venue's own view, which boot-time
recovery reconciles with the ledger.

This module imports only ``contracts``, so it can move to ``contracts.ports`` unchanged once a
plugin outside this package needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol, TypeVar

import attrs

from contracts.enums import OrderType, Side
from contracts.execution import OrderEvent
from contracts.risk import ApprovedIntent

K = TypeVar("K")
V = TypeVar("V")


def remember(recent: dict[K, V], key: K, value: V, kept: int) -> None:
    """Put ``key`` last in ``recent`` (oldest first), dropping the oldest past ``kept`` entries.

    The venues' and the portfolio's duplicate checks remember this way (an ordered dict, or an
    ordered set with ``None`` values), so their snapshots do not grow with the whole history.
    """
    recent.pop(key, None)
    recent[key] = value
    if len(recent) > kept:
        del recent[next(iter(recent))]


class OrderReason:
    """Reason codes at the start of ``OrderEvent.reason`` (``"code: detail"``); stable API."""

    INVALID_QTY = "invalid_qty"
    MISSING_PRICE = "missing_price"
    REDUCE_ONLY = "reduce_only"
    REQUESTED = "requested"
    SHUTDOWN = "shutdown"


def client_order_id(scenario_id: str, intent_id: str) -> str:
    """The venue-side id of the order an intent causes: the same inputs give the same id.

    36 characters of ``[0-9a-z-]`` (Bybit's ``orderLinkId`` limit), so resubmitting an intent
    after a timeout cannot create a second order on any venue that deduplicates by it.
    """
    digest = hashlib.sha256(f"{scenario_id}\x1f{intent_id}".encode()).hexdigest()
    return f"pb-{digest[:33]}"


@attrs.frozen
class OrderRequest:
    """An order to place: what ``ExecutionAdapter.submit`` takes (built from an approval)."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    intent_id: str | None = None
    scenario_id: str | None = None
    correlation_id: str | None = None

    @classmethod
    def from_approved(cls, approved: ApprovedIntent) -> OrderRequest:
        """The order an approved intent asks for; the correlation id is the intent's."""
        intent = approved.intent
        return cls(
            order_id=approved.order_id,
            client_order_id=client_order_id(intent.scenario_id, intent.intent_id),
            symbol=intent.symbol,
            side=intent.side,
            order_type=intent.order_type,
            qty=approved.qty,
            limit_price=intent.limit_price,
            stop_price=intent.stop_price,
            reduce_only=intent.reduce_only,
            intent_id=intent.intent_id,
            scenario_id=intent.scenario_id,
            correlation_id=intent.meta.correlation_id or approved.meta.correlation_id,
        )


@attrs.frozen
class VenuePosition:
    """A position as the venue reports it; ``qty`` is signed (negative: short)."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None


@attrs.frozen
class Wallet:
    """The venue account in its settlement asset: free ``cash`` and marked ``equity``."""

    asset: str
    cash: Decimal
    equity: Decimal


class ExecutionAdapter(Protocol):
    """A venue that executes orders.

    =================  ========  =====================================================
    member             required  what it does
    =================  ========  =====================================================
    ``venue``          yes       the name on every ``OrderEvent.venue`` it publishes
    ``submit``         yes       place an order; idempotent per ``client_order_id``
    ``cancel``         yes       cancel a working order
    ``open_orders``    yes       the orders still working, as their latest event
    ``positions``      yes       the venue's positions (non-zero ones)
    ``wallet``         yes       the venue's balance and equity
    =================  ========  =====================================================

    Methods are coroutines: a remote venue does I/O (with retries and a circuit breaker); the
    paper venue answers at once.
    """

    venue: str

    async def submit(self, order: OrderRequest) -> None:
        """Place ``order`` and report it on ``exec:order_event``.

        Every outcome is an event, never an exception: ``rejected`` with a reason code when the
        venue refuses it. Submitting a ``client_order_id`` the venue already knows does not
        create a second order.
        """
        ...

    async def cancel(self, order_id: str) -> bool:
        """Cancel the working order ``order_id``; True when it was working and is now cancelled.

        The ``cancelled`` event (reason ``requested``) is published like any other.
        """
        ...

    async def open_orders(self) -> Sequence[OrderEvent]:
        """The orders still working (accepted or partially filled), oldest first."""
        ...

    async def positions(self) -> Sequence[VenuePosition]:
        """The venue's non-zero positions, by symbol."""
        ...

    async def wallet(self) -> Wallet:
        """The venue's cash and equity in the settlement (quote) asset."""
        ...
