"""PaperExecution: the paper and backtest venue, filling orders against closed bars.

It takes ``risk:approved_intent`` (the only way orders come in) and reports every order's life on
``exec:order_event`` (``venue="paper"``); the PositionManager books the fills. It is active only
while ``execution.venue = "paper"``; another venue leaves it idle.

Orders, fills and timing (``docs/execution.md`` has the full story):

* Every approval is ``submitted``, then ``rejected`` (bad quantity, missing limit/stop price,
  a reduce-only order that would not reduce) or ``accepted``. A second approval with the same
  ``client_order_id`` (same scenario and intent id) is ignored: the first order answers for it.
* Fills use the closed bars of the order's symbol that start after the last closed bar seen when
  the order was accepted (the bar it "arrived on"). One bar interval per symbol: bars of another
  interval than the first one seen, and bars not newer than the last one, are ignored.
* **Market** orders fill at the next bar's open (``execution.fill = "next_open"``; the event's
  ``exchange_ts`` is that bar's start) or at the close of the bar they arrived on (``"close"``;
  ``exchange_ts`` is its end). With ``close`` and no bar seen yet, they fill at the close of the
  next bar.
* **Limit** orders fill at touch: a buy when ``low <= limit``, at the open if the bar opens at or
  below the limit, else at the limit (sells mirror it). No slippage, maker fee.
* **Stop** orders trigger when ``high >= stop`` (buy) or ``low <= stop`` (sell) and fill at
  ``max(open, stop)`` / ``min(open, stop)``; from then on they are market orders. Taker fee.
  A bar without volume neither fills nor triggers them (nothing traded through the stop).
* **Fees** are bps of the fill's notional, taker for market and stop fills, maker for limit
  fills (a negative maker fee is a rebate: the fill's fee is negative), charged in the quote
  currency; with ``execution.spot_buy_fee_in_base`` a buy's fee is
  charged in the base coin instead (that share of its quantity, ``fee_asset`` the base: 1 BTC
  bought at 5.5 bps pays 0.00055 BTC and the position grows by 0.99945), as Bybit spot does.
  **Slippage** (market and stop fills) moves the price
  against the trader: ``fixed`` by ``slippage_bps``, ``volume`` by ``slippage_bps`` per 1 % of the
  bar's volume the fill takes.
* **Partial fills**: one order fills at most ``max_volume_share * volume`` of a bar; the rest
  keeps working on the next bars (``partially_filled`` ... ``filled``). A bar without volume
  fills nothing, and the order simply stays open.
* **Reduce-only** orders never grow ``|position|`` (the venue's own position): rejected when
  they would open or add, clipped to the position at acceptance, and cancelled (reason
  ``reduce_only``) when the position is gone by the time they fill.
* Orders stay working until filled or cancelled through ``cancel()``; a new intent never cancels
  older orders. At a graceful stop they are cancelled (reason ``shutdown``) only with
  ``execution.cancel_on_stop`` (what ``planes backtest`` sets); by default they are left working,
  so the storage plane's shutdown snapshot holds them and the next run on the same data dir
  resumes them, as a venue keeps a stopped client's orders.

Under the real-time clock (live paper) it also follows ``market:ticker`` to mark its own book for
``positions()`` and ``wallet()``; fills still come from closed bars.

Recovery (``contracts.ports.Stateful``, key ``execution.paper``): the state is the working orders
(request, quantities, trigger, arrival bar), the latest ``CLIENT_IDS_KEPT`` client order ids seen
(the duplicate check's memory, bounded so the snapshot does not grow with the whole history), the
last bar per symbol, the venue's book and the counters. It is rebuilt from the journal in three
parts: ``risk:approved_intent`` admits the order as ``place`` does (duplicates are counted and
dropped); the venue's own ``exec:order_event`` then says what became of it (accepted with its
quantity, rejected, each fill, cancelled), because the live venue decided that from the state it had
when it handled the approval, which a replay reaches only once those events are applied;
``market:kline`` keeps the last bar (no matching). Klines are replayed from their ``BarView``
(``replay_views``: the fields the bar filter and an arriving order read), so recovery builds no bar
but the last one taken per symbol, when the state is exported or recovery ends. Replay publishes
nothing and fills nothing the journal does not show; a fill already in the restored state (a
snapshot taken while its event was still queued) is skipped by its cumulative quantity. An approval
whose answer did not reach the journal before a crash is answered in ``recovered()`` (accepted or
rejected, never filled there); the next bars fill it. An idle venue (another ``execution.venue``)
has no state topics: it rebuilds nothing.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import attrs
import structlog

from contracts.converter import CONVERTER
from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, base_asset
from contracts.market import KlineEvent, TickerEvent
from contracts.ports import ComponentContext
from contracts.risk import ApprovedIntent
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE, MARKET_TICKER, RISK_APPROVED
from planes.config import Config, FillModel, SlippageModel
from planes.execution.adapter import OrderReason, OrderRequest, VenuePosition, Wallet, remember
from planes.execution.ledger import ZERO, Ledger

log = structlog.get_logger("planes.execution.paper")

VENUE = "paper"
STATE_KEY: Final = "execution.paper"
CLIENT_IDS_KEPT = 10_000
"""How many of the latest client order ids the duplicate check remembers (and snapshots)."""
_ROUND = decimal.Context(prec=28)
_WORKING = (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


@attrs.define
class BarView:
    """What the venue's replay reads of a ``market:kline``: the bar filter's fields and the end.

    Not frozen: recovery builds one per journaled kline, and a frozen class's ``__init__`` sets
    each field through ``object.__setattr__`` (about three times the cost); nothing writes to a
    view once it is built.
    """

    symbol: str
    interval: str
    start_ts: int
    end_ts: int
    closed: bool


def _fraction_of_bps(bps: float) -> Decimal:
    """``bps`` (a config float) as an exact Decimal fraction: 5.5 -> 0.00055."""
    return Decimal(repr(bps)).scaleb(-4)


class _Order:
    """The venue's state of one order."""

    __slots__ = ("after_ts", "fees", "filled", "notional", "qty", "req", "status", "triggered")

    def __init__(self, req: OrderRequest) -> None:
        self.req = req
        self.qty = req.qty
        self.filled = ZERO
        self.notional = ZERO
        self.fees = ZERO
        self.status = OrderStatus.SUBMITTED
        self.triggered = False
        self.after_ts: int | None = None
        """Only bars starting after this (the arrival bar's end) may fill the order."""

    @property
    def price(self) -> Decimal | None:
        if self.req.order_type is OrderType.LIMIT:
            return self.req.limit_price
        if self.req.order_type is OrderType.STOP:
            return self.req.stop_price
        return None

    @property
    def avg_price(self) -> Decimal | None:
        return _ROUND.divide(self.notional, self.filled) if self.filled else None

    def export(self) -> dict[str, Any]:
        return {
            "request": CONVERTER.unstructure(self.req),
            "status": self.status.value,
            "qty": str(self.qty),
            "filled": str(self.filled),
            "notional": str(self.notional),
            "fees": str(self.fees),
            "triggered": self.triggered,
            "after_ts": self.after_ts,
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> _Order:
        order = cls(CONVERTER.structure(state["request"], OrderRequest))
        order.status = OrderStatus(state["status"])
        order.qty = Decimal(state["qty"])
        order.filled = Decimal(state["filled"])
        order.notional = Decimal(state["notional"])
        order.fees = Decimal(state["fees"])
        order.triggered = bool(state["triggered"])
        after = state["after_ts"]
        order.after_ts = None if after is None else int(after)
        return order


class PaperExecution:
    """The paper venue (implements ``ExecutionAdapter``); see the module docstring."""

    name = "paper_execution"
    venue = VENUE
    state_key = STATE_KEY
    state_topics = frozenset((RISK_APPROVED.name, EXEC_ORDER_EVENT.name, MARKET_KLINE.name))
    replay_views: Mapping[str, type] = {MARKET_KLINE.name: BarView}

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "PaperExecution needs planes.config.Config"
            raise TypeError(msg)
        execution = config.execution
        self._bus = ctx.bus
        self._clock = ctx.clock
        self.active = execution.venue == VENUE
        if not self.active:  # an idle venue replays nothing: recovery reads no bar for it
            self.state_topics = frozenset()
        self.quote = config.portfolio.quote
        self.book = Ledger(config.portfolio.cash, self.quote)
        """The venue's own account: what ``positions()`` and ``wallet()`` report."""
        self._at_close = execution.fill is FillModel.CLOSE
        self._taker = _fraction_of_bps(execution.fee_bps_taker)
        self._maker = _fraction_of_bps(execution.fee_bps_maker)
        self._by_volume = execution.slippage is SlippageModel.VOLUME
        self._slippage_bps = Decimal(repr(execution.slippage_bps))
        self._slippage = self._slippage_bps.scaleb(-4)
        self._share = Decimal(repr(execution.max_volume_share))
        self._buy_fee_in_base = execution.spot_buy_fee_in_base
        self._cancel_on_stop = execution.cancel_on_stop
        self._bars: dict[str, KlineEvent] = {}
        self._held: dict[str, tuple[BarView, Callable[[], Any]]] = {}
        """Bars taken in replay from their view: each symbol's last, loaded by ``_settle``."""
        self._prices: dict[str, Decimal] = {}
        self._working: dict[str, list[_Order]] = {}
        self._by_id: dict[str, _Order] = {}
        self._pending: dict[str, _Order] = {}
        """Replayed approvals whose answer (accepted, rejected) the journal has not shown yet."""
        self._client_ids: dict[str, None] = {}
        """The client order ids seen, oldest first (an ordered set): the last
        ``CLIENT_IDS_KEPT`` are remembered against duplicates."""
        self.submitted = 0
        self.rejected = 0
        self.fills = 0
        self.cancelled = 0
        self.duplicates = 0

    # -- component -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take approved intents and closed bars (and tickers under the real-time clock)."""
        if not self.active:
            log.info("paper.idle", reason="execution.venue is not paper")
            return
        bus = self._bus
        bus.subscribe(RISK_APPROVED, self._on_approved)
        bus.subscribe(MARKET_KLINE, self._on_kline)
        if self._clock.is_realtime:
            bus.subscribe(MARKET_TICKER, self._on_ticker)

    async def stop(self) -> None:
        """With ``cancel_on_stop``, cancel what is still working (``shutdown``); else keep it."""
        if not self._cancel_on_stop:
            if self._by_id:
                log.info("paper.orders_kept", working=len(self._by_id))
            return
        for order in list(self._by_id.values()):
            self._cancel(order, f"{OrderReason.SHUTDOWN}: the runtime is stopping")

    # -- ExecutionAdapter ----------------------------------------------------------------

    async def submit(self, order: OrderRequest) -> None:
        """Place ``order`` (see ``place``)."""
        self.place(order)

    async def cancel(self, order_id: str) -> bool:
        """Cancel a working order (reason ``requested``); False when it is not working."""
        order = self._by_id.get(order_id)
        if order is None:
            return False
        self._cancel(order, f"{OrderReason.REQUESTED}: cancelled on request")
        return True

    async def open_orders(self) -> Sequence[OrderEvent]:
        """The working orders as their latest state, oldest first."""
        return [self._event(o, o.status) for o in self._by_id.values()]

    async def positions(self) -> Sequence[VenuePosition]:
        """The paper account's non-zero positions, marked at the last price seen."""
        marks = self._marks()
        positions = []
        for pos in self.book.open_positions():
            mark = marks.get(pos.symbol, pos.mark)
            positions.append(
                VenuePosition(pos.symbol, pos.qty, pos.avg_price, mark, pos.unrealized_at(mark))
            )
        return positions

    async def wallet(self) -> Wallet:
        """The paper account's cash and equity in the quote currency."""
        return Wallet(self.quote, self.book.cash, self.book.equity(self._marks()))

    def _marks(self) -> dict[str, Decimal]:
        """The last price seen per symbol (a query marks with them; the book keeps its own)."""
        marks = {symbol: bar.close for symbol, bar in self._bars.items()}
        marks.update(self._prices)
        return marks

    # -- orders in -----------------------------------------------------------------------

    def _on_approved(self, approved: ApprovedIntent) -> None:
        self.place(OrderRequest.from_approved(approved))

    def place(self, req: OrderRequest) -> None:
        """Submit, validate and accept (or reject) ``req``; a ``close`` market order fills now."""
        order = self._admit(req)
        if order is None:
            return
        self._publish(order, OrderStatus.SUBMITTED)
        if not self._decide(order):
            return
        last = self._bars.get(req.symbol)
        if self._at_close and last is not None and req.order_type is OrderType.MARKET:
            self._fill(order, last)
            self._sweep(req.symbol)

    def _admit(self, req: OrderRequest) -> _Order | None:
        """The new order ``req`` asks for, arrived on the last bar; None for a duplicate."""
        if req.client_order_id in self._client_ids:
            self.duplicates += 1
            log.warning("paper.duplicate_order", order_id=req.order_id, client=req.client_order_id)
            return None
        remember(self._client_ids, req.client_order_id, None, CLIENT_IDS_KEPT)
        self.submitted += 1
        order = _Order(req)
        held = self._held.get(req.symbol) if self._held else None
        last = held[0] if held is not None else self._bars.get(req.symbol)
        order.after_ts = last.end_ts if last is not None else None
        return order

    def _decide(self, order: _Order) -> bool:
        """Reject or accept a submitted order and say so; True when it is working."""
        req = order.req
        refusal = self._refusal(req)
        if refusal:
            self.rejected += 1
            order.status = OrderStatus.REJECTED
            log.info("paper.rejected", order_id=req.order_id, reason=refusal)
            self._publish(order, OrderStatus.REJECTED, reason=refusal)
            return False
        note = ""
        if req.reduce_only:
            held = abs(self.book.position(req.symbol).qty)
            if req.qty > held:
                order.qty = held
                note = f"{OrderReason.REDUCE_ONLY}: qty clipped from {req.qty} to {held}"
        order.status = OrderStatus.ACCEPTED
        self._publish(order, OrderStatus.ACCEPTED, reason=note)
        self._register(order)
        return True

    def _register(self, order: _Order) -> None:
        self._by_id[order.req.order_id] = order
        self._working.setdefault(order.req.symbol, []).append(order)

    def _refusal(self, req: OrderRequest) -> str:
        if not (req.qty.is_finite() and req.qty > 0):
            return f"{OrderReason.INVALID_QTY}: qty must be > 0, got {req.qty}"
        if req.order_type is OrderType.LIMIT and not _positive(req.limit_price):
            return f"{OrderReason.MISSING_PRICE}: a limit order needs limit_price > 0"
        if req.order_type is OrderType.STOP and not _positive(req.stop_price):
            return f"{OrderReason.MISSING_PRICE}: a stop order needs stop_price > 0"
        if req.reduce_only:
            held = self.book.position(req.symbol).qty
            if not (held < 0 if req.side is Side.BUY else held > 0):
                return (
                    f"{OrderReason.REDUCE_ONLY}: a {req.side.value} would open or increase "
                    f"the position ({held})"
                )
        return ""

    # -- market data ---------------------------------------------------------------------

    def _on_ticker(self, ticker: TickerEvent) -> None:
        self._prices[ticker.symbol] = ticker.last_price

    def _on_kline(self, bar: KlineEvent) -> None:
        # _take_bar, inlined: this runs for every bar, and most find no order working.
        if not bar.closed:
            return
        symbol, bars = bar.symbol, self._bars
        last = bars.get(symbol)
        if last is not None and (bar.start_ts <= last.start_ts or bar.interval != last.interval):
            return
        bars[symbol] = bar
        working = self._working.get(symbol)
        if working:
            start = bar.start_ts
            for order in tuple(working):
                after = order.after_ts
                if (after is None or start > after) and order.status in _WORKING:
                    self._fill(order, bar)
            self._sweep(symbol)

    def _take_bar(self, bar: KlineEvent) -> bool:
        """Remember ``bar`` as its symbol's last; False when it is not a newer closed bar."""
        if not bar.closed:
            return False
        last = self._bars.get(bar.symbol)
        if last is not None and (bar.start_ts <= last.start_ts or bar.interval != last.interval):
            return False
        self._bars[bar.symbol] = bar
        return True

    def _sweep(self, symbol: str) -> None:
        working = [o for o in self._working.get(symbol, ()) if o.status in _WORKING]
        if working:
            self._working[symbol] = working
        else:
            del self._working[symbol]

    # -- matching ------------------------------------------------------------------------

    def _touch(self, order: _Order, bar: KlineEvent) -> tuple[Decimal, int, bool] | None:
        """Where ``bar`` fills ``order``: ``(price, exchange_ts, taker)``, or None (no touch)."""
        req = order.req
        buy = req.side is Side.BUY
        if req.order_type is OrderType.LIMIT:
            limit = req.limit_price
            assert limit is not None  # noqa: S101 - _refusal checked it
            if buy:
                price = bar.open if bar.open <= limit else (limit if bar.low <= limit else None)
            else:
                price = bar.open if bar.open >= limit else (limit if bar.high >= limit else None)
            return None if price is None else (price, bar.start_ts, False)
        if req.order_type is OrderType.STOP and not order.triggered:
            stop = req.stop_price
            assert stop is not None  # noqa: S101 - _refusal checked it
            if buy:
                price = bar.open if bar.open >= stop else (stop if bar.high >= stop else None)
            else:
                price = bar.open if bar.open <= stop else (stop if bar.low <= stop else None)
            if price is None:
                return None
            return price, bar.start_ts, True  # _fill marks it triggered once it trades
        if self._at_close:
            return bar.close, bar.end_ts, True
        return bar.open, bar.start_ts, True

    def _fill(self, order: _Order, bar: KlineEvent) -> None:
        """Fill what ``bar`` allows of ``order`` (nothing when it does not touch or trade)."""
        touch = self._touch(order, bar)
        if touch is None:
            return
        price, ts, taker = touch
        req = order.req
        buy = req.side is Side.BUY
        qty = min(order.qty - order.filled, self._share * bar.volume)
        position = self.book.position(req.symbol)
        if req.reduce_only:
            reducible = -position.qty if buy else position.qty
            if reducible <= 0:
                self._cancel(order, f"{OrderReason.REDUCE_ONLY}: the position is already closed")
                return
            qty = min(qty, reducible)
        if qty <= 0:
            return  # no volume to trade against: the order stays working
        if taker:
            price = self._slipped(price, buy, qty, bar.volume)
        rate = self._taker if taker else self._maker
        base = base_asset(req.symbol, self.quote) if buy and self._buy_fee_in_base else ""
        fee, fee_asset = (qty * rate, base) if base else (qty * price * rate, self.quote)
        done = self._book_fill(order, qty, price, fee, ts, fee_asset=fee_asset)
        self._publish(
            order,
            order.status,
            last_qty=qty,
            last_price=price,
            fee=fee,
            fee_asset=fee_asset,
            exchange_ts=ts,
        )
        if done:
            self._forget(order)
        elif req.reduce_only and not self.book.position(req.symbol).qty:
            self._cancel(order, f"{OrderReason.REDUCE_ONLY}: the position is closed")

    def _book_fill(
        self, order: _Order, qty: Decimal, price: Decimal, fee: Decimal, ts: int, *, fee_asset: str
    ) -> bool:
        """Add one fill to ``order`` and to the book; True when the order is now filled."""
        req = order.req
        symbol, ref = req.symbol, req.order_id
        # The book first: a fill it refuses leaves the order as it was, not filled unbooked.
        self.book.fill(symbol, req.side, qty, price, fee, fee_asset=fee_asset, ts=ts, ref=ref)
        order.filled += qty
        order.notional += qty * price
        order.fees += fee
        if req.order_type is OrderType.STOP:
            order.triggered = True  # a market order from now on
        self.fills += 1
        done = order.filled >= order.qty
        order.status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
        return done

    def _slipped(self, price: Decimal, buy: bool, qty: Decimal, volume: Decimal) -> Decimal:
        if not self._slippage_bps:
            return price
        if self._by_volume:
            # slippage_bps per 1 % of the bar's volume: bps * (100 * qty / volume) / 10_000.
            share = _ROUND.divide(self._slippage_bps * qty, volume * 100)
            move = (price * share).quantize(_quantum(price), rounding=decimal.ROUND_UP)
        else:
            move = price * self._slippage
        if buy:
            return price + move
        if move >= price:  # a sell slips at most to the smallest price step above 0
            return _quantum(price)
        return price - move

    # -- orders out ----------------------------------------------------------------------

    def _cancel(self, order: _Order, reason: str) -> None:
        self.cancelled += 1
        order.status = OrderStatus.CANCELLED
        self._forget(order)
        self._publish(order, OrderStatus.CANCELLED, reason=reason)

    def _forget(self, order: _Order) -> None:
        self._by_id.pop(order.req.order_id, None)

    def _event(
        self,
        order: _Order,
        status: OrderStatus,
        *,
        reason: str = "",
        last_qty: Decimal | None = None,
        last_price: Decimal | None = None,
        fee: Decimal = ZERO,
        fee_asset: str = "",
        exchange_ts: int | None = None,
    ) -> OrderEvent:
        req = order.req
        # Positional, in OrderEvent's field order (three of these per order: keywords cost).
        return OrderEvent(
            self._bus.meta(req.correlation_id),
            req.order_id,  # order_id
            req.client_order_id,  # client_order_id
            VENUE,  # venue
            req.symbol,  # symbol
            req.side,  # side
            req.order_type,  # order_type
            status,  # status
            order.qty,  # qty
            order.filled,  # filled_qty
            order.price,  # price
            order.avg_price,  # avg_fill_price
            last_qty,  # last_fill_qty
            last_price,  # last_fill_price
            fee,  # fee
            fee_asset or self.quote,  # fee_asset
            req.intent_id,  # intent_id
            req.scenario_id,  # scenario_id
            reason,  # reason
            exchange_ts,  # exchange_ts
        )

    def _publish(
        self,
        order: _Order,
        status: OrderStatus,
        *,
        reason: str = "",
        last_qty: Decimal | None = None,
        last_price: Decimal | None = None,
        fee: Decimal = ZERO,
        fee_asset: str = "",
        exchange_ts: int | None = None,
    ) -> None:
        event = self._event(
            order,
            status,
            reason=reason,
            last_qty=last_qty,
            last_price=last_price,
            fee=fee,
            fee_asset=fee_asset,
            exchange_ts=exchange_ts,
        )
        self._bus.publish(EXEC_ORDER_EVENT, event)

    # -- Stateful ------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Working orders, seen client order ids, last bars, the book and the counters."""
        self._settle()
        orders = [*self._by_id.values(), *self._pending.values()]
        return {
            "open_orders": [order.export() for order in orders],
            "client_order_ids": list(self._client_ids),  # oldest first
            "bars": {symbol: CONVERTER.unstructure(bar) for symbol, bar in self._bars.items()},
            "book": self.book.export(),
            "counters": {
                "submitted": self.submitted,
                "rejected": self.rejected,
                "fills": self.fills,
                "cancelled": self.cancelled,
                "duplicates": self.duplicates,
            },
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace the venue's state with an exported one."""
        book = Ledger.restore(state["book"])
        bars = state["bars"]
        self._bars = {str(s): CONVERTER.structure(bars[s], KlineEvent) for s in bars}
        self._held = {}
        kept = [str(c) for c in state["client_order_ids"]][-CLIENT_IDS_KEPT:]
        self._client_ids = dict.fromkeys(kept)
        self._by_id, self._pending, self._working = {}, {}, {}
        for item in state["open_orders"]:
            order = _Order.restore(item)
            if order.status is OrderStatus.SUBMITTED:
                self._pending[order.req.order_id] = order
            else:
                self._register(order)
        counters = state["counters"]
        self.submitted = int(counters["submitted"])
        self.rejected = int(counters["rejected"])
        self.fills = int(counters["fills"])
        self.cancelled = int(counters["cancelled"])
        self.duplicates = int(counters["duplicates"])
        self.book = book

    def replay_event(self, topic: str, payload: Any) -> None:
        """Apply one journaled event as the live venue did (see the module docstring)."""
        if not self.active:
            return
        if topic == RISK_APPROVED.name and isinstance(payload, ApprovedIntent):
            order = self._admit(OrderRequest.from_approved(payload))
            if order is not None:
                self._pending[order.req.order_id] = order
        elif topic == EXEC_ORDER_EVENT.name and isinstance(payload, OrderEvent):
            if payload.venue == VENUE:
                self._replay_order(payload)
        elif topic == MARKET_KLINE.name and isinstance(payload, KlineEvent):
            self._settle()
            self._take_bar(payload)

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Take a journaled kline from its view as ``_take_bar`` would; ``load`` it only if kept."""
        if not self.active or topic != MARKET_KLINE.name or not isinstance(view, BarView):
            return
        if not view.closed:
            return
        symbol = view.symbol
        held = self._held.get(symbol)
        last = held[0] if held is not None else self._bars.get(symbol)
        if last is not None and (view.start_ts <= last.start_ts or view.interval != last.interval):
            return
        self._held[symbol] = (view, load)

    def _settle(self) -> None:
        """Load the bars taken from views into ``_bars`` (the state is read or goes live)."""
        if not self._held:
            return
        held, self._held = self._held, {}
        for symbol, (view, load) in held.items():
            bar = load()
            if not isinstance(bar, KlineEvent) or (bar.symbol, bar.start_ts) != (
                view.symbol,
                view.start_ts,
            ):
                msg = f"the bar loaded for {symbol} is not the one its view showed: {bar!r}"
                raise TypeError(msg)
            self._bars[symbol] = bar

    def _replay_order(self, event: OrderEvent) -> None:
        status, order_id = event.status, event.order_id
        if status is OrderStatus.ACCEPTED:
            order = self._pending.pop(order_id, None)
            if order is not None:
                order.qty = event.qty
                order.status = OrderStatus.ACCEPTED
                self._register(order)
        elif status is OrderStatus.REJECTED:
            if self._pending.pop(order_id, None) is not None:
                self.rejected += 1
        elif status is OrderStatus.CANCELLED:
            order = self._by_id.get(order_id)
            if order is not None:
                self.cancelled += 1
                order.status = OrderStatus.CANCELLED
                self._forget(order)
                self._sweep(order.req.symbol)
        elif event.last_fill_qty and event.last_fill_price is not None:
            order = self._by_id.get(order_id)
            if order is None or event.filled_qty <= order.filled:
                return  # the restored state holds this fill already
            ts = event.exchange_ts if event.exchange_ts is not None else event.meta.ts
            qty, price = event.last_fill_qty, event.last_fill_price
            if self._book_fill(order, qty, price, event.fee, ts, fee_asset=event.fee_asset):
                self._forget(order)
                self._sweep(order.req.symbol)

    def recovered(self) -> None:
        """Load the bars taken from views; answer the approvals the journal shows unanswered."""
        self._settle()
        pending, self._pending = self._pending, {}
        for order in pending.values():
            log.warning("paper.unanswered_order", order_id=order.req.order_id)
            self._decide(order)


def _quantum(price: Decimal) -> Decimal:
    """Four more decimal places than ``price`` shows: where volume slippage is rounded."""
    exponent = price.as_tuple().exponent
    places = min(exponent, 0) if isinstance(exponent, int) else 0
    return Decimal(1).scaleb(places - 4)


def _positive(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0
