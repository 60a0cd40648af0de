"""RiskManager: the only gate between ``strategy:intent`` and execution.

Every intent gets exactly one verdict, ``risk:approved_intent`` (with the final quantity and a
deterministic order id ``"{scenario_id}:{intent_id}"``) or ``risk:rejected_intent`` (with a
``contracts.risk.RejectReason`` code and a detail for humans). Checks run in this order; the
first that fails decides:

1. ``paused`` - the operator paused trading (``control:state``);
2. ``lifecycle`` - the runtime is not RUNNING;
3. ``duplicate`` - this scenario's intent id was approved before;
4. ``symbol_not_allowed`` - not in ``risk.allowlist`` (empty: ``market.symbols``);
5. ``stale_data`` (halt) - the symbol's last ticker or kline is older than ``risk.stale_data_s``
   of clock time, or none came yet;
6. ``rate_limit`` - ``risk.max_orders_per_minute`` approvals in the last 60 s of clock time;
7. ``daily_loss_limit`` (halt) - the kill switch: equity fell ``risk.daily_loss_limit`` below its
   value when the UTC day started (latched until the next UTC day);
8. ``max_drawdown`` (halt) - equity is ``risk.max_drawdown`` (fraction) or more below its peak;
9. ``cooldown`` (halt) - a losing exit on the symbol less than ``risk.cooldown_after_loss_s`` ago;
10. sizing - ``size_hint``, else the order that moves the position to ``target_exposure``
    (signed fraction of equity at the last price), else ``risk.default_qty``: ``no_size``,
    ``no_price``; a ``reduce_only`` intent is clipped to the position (``nothing_to_reduce``);
11. limits - the worst-case position after the order stays within ``risk.max_position``
    (``default_max_position``), its value within ``risk.max_notional``, and the sum of all
    worst-case position values within ``risk.max_gross_exposure``. An order that does not fit
    is **shrunk** to the largest quantity that does (rounded down to ``QTY_STEP``) and rejected
    (``max_position`` / ``max_notional`` / ``max_gross_exposure``) only when nothing fits.

The *halt* checks stop new risk only: an intent on the side that shrinks the position still
passes, turned into a reduce-only order (clipped so it never flips the position).

Positions are the last ``portfolio:position_update`` per symbol, plus fills seen on
``exec:order_event`` that no position update reflects yet, plus the approved quantity not yet
filled (released by fills, ``cancelled`` and ``rejected``). Pending buys and sells are kept
apart and the limits hold for every subset of them filling, so no burst of approvals can breach
a limit together. Equity comes from ``portfolio:position_update`` (``portfolio.cash`` before
the first one). See ``docs/risk.md``.

Recovery (``contracts.ports.Stateful``, key ``risk``): what the limits depend on survives a
restart - equity, its peak and the drawdown halt, the day's starting equity and the kill switch,
per-symbol positions, fills in flight, realized PnL and cooldowns, the approved orders still
pending, the recent approval times of the rate limit and the approved order ids used against
duplicates (the last ``APPROVED_IDS_KEPT``). All of it is built by ``portfolio:position_update``,
``exec:order_event`` and the RiskManager's own ``risk:approved_intent``, stamped with their
``meta.ts`` (never the clock at handling time), so replaying them rebuilds it exactly (a position
update from its ``PositionView``, the fields read here, without decoding the rest). Lifecycle and
pause come again from ``control:state``; prices and data freshness from the market, so after a
restart nothing adds risk before fresh market data arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

import attrs
import structlog

from contracts.control import ControlState
from contracts.enums import Lifecycle, OrderStatus, Severity, Side
from contracts.execution import FeeKind, OrderEvent, PositionUpdate, PositionView, fee_kind
from contracts.market import KlineEvent, TickerEvent
from contracts.ports import ComponentContext
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from contracts.strategy import Intent
from contracts.system import Alert, ErrorEvent
from contracts.topics import (
    CONTROL_STATE,
    ERROR_EVENT,
    EXEC_ORDER_EVENT,
    MARKET_KLINE,
    MARKET_TICKER,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    RISK_REJECTED,
    STRATEGY_INTENT,
)
from planes.config import Config

log = structlog.get_logger("planes.risk")

QTY_STEP = Decimal("0.00000001")
"""Quantities the RiskManager computes (target sizing, shrinking) are rounded down to this."""
DAY_MS = 86_400_000
RATE_WINDOW_MS = 60_000
APPROVED_IDS_KEPT = 10_000
"""How many of the latest approved order ids the duplicate check remembers."""
STATE_FORMAT = 1
_ZERO = Decimal(0)
_DONE = frozenset((OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED))
_FILLS = frozenset((OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED))


def _num(value: Decimal) -> str:
    """``value`` as a canonical string: equal numbers export equal ("1.50" and "1.5": "1.5")."""
    return format(value.normalize(), "f") if value else "0"


def _floor(value: Decimal) -> Decimal:
    """``value`` rounded towards zero to ``QTY_STEP`` (unchanged when too large to quantize)."""
    try:
        floored = value.quantize(QTY_STEP, ROUND_DOWN)
    except InvalidOperation:
        return value
    return value if floored == value else floored  # keep "1.5", not "1.50000000"


class _Book:
    """What the RiskManager knows about one symbol."""

    __slots__ = (
        "cooldown_until",
        "data_ts",
        "inflight",
        "max_position",
        "pending_buy",
        "pending_sell",
        "position",
        "price",
        "realized",
        "symbol",
    )

    def __init__(self, symbol: str, max_position: Decimal) -> None:
        self.symbol = symbol
        self.max_position = max_position
        self.position = _ZERO
        """Signed quantity of the last ``portfolio:position_update``."""
        self.inflight = _ZERO
        """Signed fills seen on ``exec:order_event`` that no position update reflects yet."""
        self.pending_buy = _ZERO
        """Approved buy quantity not filled, cancelled or rejected yet."""
        self.pending_sell = _ZERO
        self.price: Decimal | None = None
        self.data_ts: int | None = None
        self.realized: Decimal | None = None
        self.cooldown_until = 0

    def low(self) -> Decimal:
        """The position if every pending sell fills and no pending buy does."""
        return self.position + self.inflight - self.pending_sell

    def high(self) -> Decimal:
        """The position if every pending buy fills and no pending sell does."""
        return self.position + self.inflight + self.pending_buy

    def worst_size(self) -> Decimal:
        """The largest absolute position any mix of pending fills can make."""
        return max(self.pending_sell - self.position - self.inflight, self.high())


class _Pending:
    """An approved order whose quantity still counts against the limits."""

    __slots__ = ("book", "buy", "filled", "remaining")

    def __init__(self, book: _Book, buy: bool, qty: Decimal) -> None:
        self.book = book
        self.buy = buy
        self.remaining = qty
        self.filled = _ZERO


class RiskManager:
    """The gate; see the module docstring for the checks and their order."""

    name = "risk_manager"
    state_key = "risk"
    state_topics = frozenset((PORTFOLIO_POSITION.name, EXEC_ORDER_EVENT.name, RISK_APPROVED.name))
    replay_views: Mapping[str, type] = {PORTFOLIO_POSITION.name: PositionView}

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the RiskManager needs planes.config.Config"
            raise TypeError(msg)
        risk = config.risk
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._allowlist = frozenset(risk.allowlist or config.market.symbols)
        self._max_positions = dict(risk.max_position)
        self._default_max_position = risk.default_max_position
        self._default_qty = risk.default_qty
        self._max_notional = risk.max_notional
        self._max_gross = risk.max_gross_exposure
        self._daily_loss_limit = risk.daily_loss_limit
        self._max_drawdown = Decimal(str(risk.max_drawdown))
        self._cooldown_ms = round(risk.cooldown_after_loss_s * 1000)
        self._stale_ms = round(risk.stale_data_s * 1000)
        # The approval times of the last max_orders_per_minute approvals, oldest first, less
        # those already out of the window (they can never count again): the limit is reached
        # when that many are held and the oldest is still inside the window.
        self._rate_limit = risk.max_orders_per_minute
        self._rate_times: deque[int] = deque()
        self._books: dict[str, _Book] = {}
        self._pending: dict[str, _Pending] = {}
        self._approved_ids: set[str] = set()
        self._approved_order: deque[str] = deque()
        self.lifecycle: Lifecycle | None = None
        self.paused = False
        self.equity = config.portfolio.cash
        self._quote = config.portfolio.quote
        self.peak_equity = self.equity
        # The day changes only with equity (a position update): a verdict reads the new day
        # without storing it, so the state is a function of the replayable events alone.
        self._day_start = self.equity
        self._next_day_ms = 0  # the first equity change starts the day
        self._daily_halt = False
        self.drawdown_halt = False
        self._drawdown_peak: Decimal | None = None
        self._drawdown_room = _ZERO  # drawdown * _drawdown_peak: how far equity may fall
        self.approved = 0
        self.rejected = 0
        self.rejections: dict[str, int] = {}
        """Rejections per reason code, for metrics and the status line."""

    async def start(self) -> None:
        """Follow lifecycle, market data, orders and positions; judge intents."""
        bus = self._bus
        bus.subscribe(CONTROL_STATE, self._on_state)
        bus.subscribe(MARKET_TICKER, self._on_ticker)
        bus.subscribe(MARKET_KLINE, self._on_kline)
        bus.subscribe(EXEC_ORDER_EVENT, self._on_order)
        bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        bus.subscribe(STRATEGY_INTENT, self._on_intent)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    @property
    def daily_halt(self) -> bool:
        """True while the kill switch holds (until the next UTC day starts)."""
        return self._daily_halt and self._clock.now_ms() < self._next_day_ms

    @property
    def day_start_equity(self) -> Decimal:
        """Equity when the current UTC day started."""
        return self.equity if self._clock.now_ms() >= self._next_day_ms else self._day_start

    # -- what the RiskManager watches ----------------------------------------------------

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            limit = self._max_positions.get(symbol, self._default_max_position)
            book = self._books[symbol] = _Book(symbol, limit)
        return book

    def position(self, symbol: str) -> Decimal:
        """The position of ``symbol`` as the RiskManager sees it (pending orders excluded)."""
        book = self._books.get(symbol)
        return _ZERO if book is None else book.position + book.inflight

    def pending(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Approved but unfilled ``(buy, sell)`` quantity of ``symbol``."""
        book = self._books.get(symbol)
        return (_ZERO, _ZERO) if book is None else (book.pending_buy, book.pending_sell)

    def _on_state(self, state: ControlState) -> None:
        self.lifecycle = state.lifecycle
        self.paused = state.paused

    def _on_ticker(self, ticker: TickerEvent) -> None:
        book = self._books.get(ticker.symbol) or self._book(ticker.symbol)
        book.price = ticker.last_price
        book.data_ts = ticker.meta.ts

    def _on_kline(self, kline: KlineEvent) -> None:
        book = self._books.get(kline.symbol) or self._book(kline.symbol)
        book.price = kline.close
        book.data_ts = kline.meta.ts

    def _on_order(self, event: OrderEvent) -> None:
        pending = self._pending
        key = event.client_order_id
        record = pending.get(key)
        if record is None:
            key = event.order_id
            record = pending.get(key)
        if record is None:
            # Not an order we approved (recovered, manual): its fills still move the position.
            fill = event.last_fill_qty
            if fill and event.status in _FILLS:
                book = self._book(event.symbol)
                book.inflight += self._moved(event, fill if event.side is Side.BUY else -fill)
            return
        book = record.book
        filled = event.filled_qty  # cumulative, so a repeated event changes nothing
        if filled > record.filled:
            fill = filled - record.filled
            record.filled = filled
            book.inflight += self._moved(event, fill if record.buy else -fill)
            used = min(fill, record.remaining)
            record.remaining -= used
            if record.buy:
                book.pending_buy -= used
            else:
                book.pending_sell -= used
        if event.status in _DONE or record.remaining <= 0:
            if record.buy:
                book.pending_buy -= record.remaining
            else:
                book.pending_sell -= record.remaining
            del pending[key]

    def _moved(self, event: OrderEvent, signed: Decimal) -> Decimal:
        """What a fill of ``signed`` moves the position by: less a fee taken in the base coin.

        As the ledger books it (``contracts.execution.fee_kind``): a spot buy that pays its fee
        in BTC holds that much less, and the position update that follows says so. Counted
        gross, the difference would stay in flight for good.
        """
        fee = event.fee
        if fee and fee_kind(event.symbol, event.fee_asset, self._quote) is FeeKind.BASE:
            return signed - fee
        return signed

    def _on_position(self, update: PositionUpdate) -> None:
        # A mark on a bar (most updates) moves equity only: the same as _apply_position, with
        # its equity step inlined and without the call.
        book = self._books.get(update.symbol)
        equity = update.equity
        if (
            book is None
            or update.qty != book.position
            or update.realized_pnl != book.realized
            or book.price is None
            or equity == self.equity
        ):
            self._apply_position(update, live=True)
        else:
            self._on_equity(equity, update.meta.ts, live=True)

    def _apply_position(self, update: PositionUpdate | PositionView, *, live: bool) -> None:
        # A view has every field read here, under the same names: replay takes it as it is.
        book = self._books.get(update.symbol) or self._book(update.symbol)
        qty = update.qty
        before = book.position
        if qty != before:
            book.position = qty
            moved = qty - before
            inflight = book.inflight
            # The update reflects fills already counted in flight (the portfolio reacts to
            # exec:order_event): absorb them, never past zero; a move the other way is news.
            if inflight and (moved > 0) is (inflight > 0):
                book.inflight = inflight - moved if abs(moved) < abs(inflight) else _ZERO
        realized = update.realized_pnl
        last = book.realized
        if realized != last:
            book.realized = realized
            # A losing exit: realized PnL fell in an update that shrank or flipped the position.
            if (
                last is not None
                and realized < last
                and self._cooldown_ms
                and before
                and (abs(qty) < abs(before) or (qty > 0) is not (before > 0))
            ):
                book.cooldown_until = update.meta.ts + self._cooldown_ms
        if book.price is None and update.mark_price > 0:
            book.price = update.mark_price
        equity = update.equity
        if equity != self.equity:
            self._on_equity(equity, update.meta.ts, live=live)

    def _on_equity(self, equity: Decimal, now: int, *, live: bool) -> None:
        if now >= self._next_day_ms:
            self._new_day(now)  # the day starts from the last equity of the day before
        self.equity = equity
        peak = self.peak_equity
        if equity > peak:
            peak = self.peak_equity = equity
        limit = self._daily_loss_limit
        if not self._daily_halt and limit > 0 and self._day_start - equity >= limit:
            self._daily_halt = True
            if live:
                self._alert(
                    "risk_daily_loss_halt",
                    f"daily loss {self._day_start - equity} reached risk.daily_loss_limit "
                    f"{limit}: new entries halted until the next UTC day, reducing still allowed",
                )
        drawdown = self._max_drawdown
        if drawdown > 0:
            if peak is not self._drawdown_peak:  # drawdown * peak changes only with the peak
                self._drawdown_peak, self._drawdown_room = peak, drawdown * peak
            down = peak - equity >= self._drawdown_room
            if down is not self.drawdown_halt:
                self.drawdown_halt = down
                if not down:
                    log.info("risk.drawdown_cleared", equity=str(equity))
                elif live:
                    self._alert(
                        "risk_drawdown_halt",
                        f"equity {equity} is {drawdown:%} or more below its peak "
                        f"{self.peak_equity}: new entries halted, reducing still allowed",
                    )

    def _new_day(self, now: int) -> None:
        self._next_day_ms = (now // DAY_MS + 1) * DAY_MS
        self._day_start = self.equity
        if self._daily_halt:
            self._daily_halt = False
            log.info("risk.daily_loss_reset", equity=str(self.equity))

    def _alert(self, code: str, message: str) -> None:
        log.warning(code, message=message)
        bus = self._bus
        bus.publish(OBSERVABILITY_ALERT, Alert(bus.meta(), Severity.CRITICAL, code, message))

    # -- recovery (contracts.ports.Stateful) ---------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """What the limits depend on, as JSON (numbers as canonical decimal strings)."""
        books = {
            symbol: {
                "position": _num(book.position),
                "inflight": _num(book.inflight),
                "pending_buy": _num(book.pending_buy),
                "pending_sell": _num(book.pending_sell),
                "realized": None if book.realized is None else _num(book.realized),
                "cooldown_until": book.cooldown_until,
            }
            for symbol, book in sorted(self._books.items())
            if book.position
            or book.inflight
            or book.pending_buy
            or book.pending_sell
            or book.realized is not None
            or book.cooldown_until
        }
        pending = {
            order_id: {
                "symbol": record.book.symbol,
                "side": (Side.BUY if record.buy else Side.SELL).value,
                "remaining": _num(record.remaining),
                "filled": _num(record.filled),
            }
            for order_id, record in sorted(self._pending.items())
        }
        return {
            "format": STATE_FORMAT,
            "equity": _num(self.equity),
            "peak_equity": _num(self.peak_equity),
            "day_start_equity": _num(self._day_start),
            "next_day_ms": self._next_day_ms,
            "daily_halt": self._daily_halt,
            "drawdown_halt": self.drawdown_halt,
            "books": books,
            "pending": pending,
            "approved_ids": list(self._approved_order),
            "approval_times_ms": list(self._rate_times),
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace what the limits depend on with an exported state."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown risk state format {state.get('format')!r}")
        self.equity = Decimal(state["equity"])
        self.peak_equity = Decimal(state["peak_equity"])
        self._day_start = Decimal(state["day_start_equity"])
        self._next_day_ms = int(state["next_day_ms"])
        self._daily_halt = bool(state["daily_halt"])
        self.drawdown_halt = bool(state["drawdown_halt"])
        self._books = {}
        for symbol, fields in state["books"].items():
            book = self._book(symbol)
            book.position = Decimal(fields["position"])
            book.inflight = Decimal(fields["inflight"])
            book.pending_buy = Decimal(fields["pending_buy"])
            book.pending_sell = Decimal(fields["pending_sell"])
            realized = fields["realized"]
            book.realized = None if realized is None else Decimal(realized)
            book.cooldown_until = int(fields["cooldown_until"])
        self._pending = {}
        for order_id, fields in state["pending"].items():
            record = _Pending(
                self._book(fields["symbol"]),
                Side(fields["side"]) is Side.BUY,
                Decimal(fields["remaining"]),
            )
            record.filled = Decimal(fields["filled"])
            self._pending[order_id] = record
        kept = list(state["approved_ids"])[-APPROVED_IDS_KEPT:]
        self._approved_order = deque(kept)
        self._approved_ids = set(kept)
        times = [int(t) for t in state["approval_times_ms"]]
        self._rate_times = deque(times[-self._rate_limit :])

    def replay_event(self, topic: str, payload: Any) -> None:
        """Apply a journaled position, order event or approval; publish nothing."""
        if topic == PORTFOLIO_POSITION.name and isinstance(payload, PositionUpdate):
            self._apply_position(payload, live=False)
        elif topic == EXEC_ORDER_EVENT.name and isinstance(payload, OrderEvent):
            self._on_order(payload)
        elif topic == RISK_APPROVED.name and isinstance(payload, ApprovedIntent):
            self._book_approval(payload)

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Apply a journaled position from its view, as ``replay_event`` applies the update."""
        if topic == PORTFOLIO_POSITION.name and isinstance(view, PositionView):
            self._apply_position(view, live=False)

    def recovered(self) -> None:
        """Log the halts and pending orders that survived the restart (their alerts went out)."""
        log.info(
            "risk.recovered",
            equity=str(self.equity),
            peak_equity=str(self.peak_equity),
            daily_halt=self.daily_halt,
            drawdown_halt=self.drawdown_halt,
            pending_orders=len(self._pending),
        )

    # -- the verdict ---------------------------------------------------------------------

    def _on_intent(self, intent: Intent) -> None:
        try:
            verdict = self.decide(intent)
        except Exception as exc:  # fail closed: the intent still gets a verdict
            log.exception("risk.failed", intent=intent.intent_id)
            bus = self._bus
            error = type(exc).__name__
            origin = "planes.risk.RiskManager"
            bus.publish(
                ERROR_EVENT,
                ErrorEvent(bus.meta(), origin, STRATEGY_INTENT.name, error, str(exc)),
            )
            verdict = self._reject(intent, RejectReason.INTERNAL_ERROR, f"{error}: {exc}")
        if isinstance(verdict, ApprovedIntent):
            self._bus.publish(RISK_APPROVED, verdict)
        else:
            self._bus.publish(RISK_REJECTED, verdict)

    def _reject(self, intent: Intent, code: str, detail: str) -> RejectedIntent:
        self.rejected += 1
        self.rejections[code] = self.rejections.get(code, 0) + 1
        log.info("risk.rejected", intent=intent.intent_id, reason=code, detail=detail)
        meta = self._bus.meta(intent.meta.correlation_id)
        return RejectedIntent(meta, intent, code, detail)

    def decide(self, intent: Intent) -> ApprovedIntent | RejectedIntent:  # noqa: PLR0911, PLR0912, PLR0915 - the checks, in order
        """Judge ``intent`` and book an approval; the caller publishes the verdict."""
        if self.paused:
            return self._reject(intent, RejectReason.PAUSED, "trading is paused by the operator")
        if self.lifecycle is not Lifecycle.RUNNING:
            state = self.lifecycle.value if self.lifecycle else "not started"
            detail = f"runtime is {state}, not RUNNING"
            return self._reject(intent, RejectReason.LIFECYCLE, detail)
        order_id = f"{intent.scenario_id}:{intent.intent_id}"
        if order_id in self._approved_ids:
            detail = f"intent {intent.intent_id} was already approved as order {order_id}"
            return self._reject(intent, RejectReason.DUPLICATE, detail)
        symbol = intent.symbol
        if symbol not in self._allowlist:
            allowed = ", ".join(sorted(self._allowlist))
            detail = f"{symbol} is not an allowed symbol (allowed: {allowed})"
            return self._reject(intent, RejectReason.SYMBOL_NOT_ALLOWED, detail)

        book = self._books.get(symbol) or self._book(symbol)
        buy = intent.side is Side.BUY
        # What this side can take off the position whatever pending orders do (never a flip).
        reducible = -book.high() if buy else book.low()
        if reducible < 0:
            reducible = _ZERO
        now = self._clock.now_ms()
        only_reduce = intent.reduce_only  # halts below turn a reducing intent into this

        stale_ms = self._stale_ms
        if stale_ms:
            seen = book.data_ts
            if seen is None or now - seen > stale_ms:
                if not reducible:
                    age = "none yet" if seen is None else f"{(now - seen) / 1000:g} s old"
                    detail = (
                        f"market data for {symbol} is {age} (risk.stale_data_s "
                        f"{stale_ms / 1000:g}): no new risk"
                    )
                    return self._reject(intent, RejectReason.STALE_DATA, detail)
                only_reduce = True

        times = self._rate_times
        if len(times) >= self._rate_limit and times[0] > now - RATE_WINDOW_MS:
            limit = self._rate_limit
            detail = f"{limit} orders approved in the last 60 s (risk.max_orders_per_minute)"
            return self._reject(intent, RejectReason.RATE_LIMIT, detail)

        if self._daily_halt and now < self._next_day_ms:
            if not reducible:
                detail = (
                    f"kill switch: loss since the UTC day started "
                    f"{self._day_start - self.equity} reached risk.daily_loss_limit "
                    f"{self._daily_loss_limit}; only reducing until the next UTC day"
                )
                return self._reject(intent, RejectReason.DAILY_LOSS, detail)
            only_reduce = True
        if self.drawdown_halt:
            if not reducible:
                detail = (
                    f"equity {self.equity} is {self._max_drawdown:%} or more below its peak "
                    f"{self.peak_equity} (risk.max_drawdown); only reducing"
                )
                return self._reject(intent, RejectReason.MAX_DRAWDOWN, detail)
            only_reduce = True
        if now < book.cooldown_until:
            if not reducible:
                left = (book.cooldown_until - now) / 1000
                detail = (
                    f"{symbol} had a losing exit; cooldown (risk.cooldown_after_loss_s) "
                    f"ends in {left:g} s"
                )
                return self._reject(intent, RejectReason.COOLDOWN, detail)
            only_reduce = True

        qty = intent.size_hint
        if qty is not None:
            if not (qty.is_finite() and qty > 0):
                return self._reject(intent, RejectReason.NO_SIZE, f"size_hint is {qty}")
        elif intent.target_exposure is not None:
            target = intent.target_exposure
            price = book.price
            if price is None or price <= 0:
                detail = f"target_exposure needs a price and none was seen for {symbol}"
                return self._reject(intent, RejectReason.NO_PRICE, detail)
            if not target.is_finite() or self.equity <= 0:
                detail = f"target_exposure {target} of equity {self.equity} gives no size"
                return self._reject(intent, RejectReason.NO_SIZE, detail)
            expected = book.position + book.inflight + book.pending_buy - book.pending_sell
            delta = target * self.equity / price - expected
            qty = _floor(delta if buy else -delta)
            if qty <= 0:
                detail = (
                    f"target_exposure {target} ({target * self.equity / price:.8g} {symbol}) "
                    f"needs no {intent.side.value}: the position with pending orders is "
                    f"{expected}"
                )
                return self._reject(intent, RejectReason.NO_SIZE, detail)
        else:
            qty = self._default_qty
            if qty <= 0:
                detail = f"no size_hint or target_exposure and risk.default_qty is {qty}"
                return self._reject(intent, RejectReason.NO_SIZE, detail)

        if only_reduce:
            if not reducible:
                detail = (
                    f"reduce_only {intent.side.value} but the {symbol} position "
                    f"{book.position + book.inflight} (net of pending orders) has nothing "
                    "to reduce on that side"
                )
                return self._reject(intent, RejectReason.NOTHING_TO_REDUCE, detail)
            qty = min(qty, reducible)
        elif qty > reducible:
            # The part beyond the reducible one adds risk: it must fit every limit.
            edge = book.high() if buy else -book.low()
            room = book.max_position - edge
            code = RejectReason.MAX_POSITION
            price = book.price
            if price is None or price <= 0:
                detail = f"no price seen for {symbol} to value the position"
                return self._reject(intent, RejectReason.NO_PRICE, detail)
            notional_room = _floor(self._max_notional / price) - edge
            if notional_room < room:
                room, code = notional_room, RejectReason.MAX_NOTIONAL
            others = _ZERO
            for other in self._books.values():
                if other is book:
                    continue
                size = other.worst_size()
                if size:
                    if other.price is None:
                        detail = f"no price seen for {other.symbol} to value its position"
                        return self._reject(intent, RejectReason.NO_PRICE, detail)
                    others += size * other.price
            gross_room = _floor((self._max_gross - others) / price) - edge
            if gross_room < room:
                room, code = gross_room, RejectReason.MAX_GROSS_EXPOSURE
            if qty > room:
                qty = max(_floor(room), reducible)
                if qty <= 0:
                    return self._reject(intent, code, self._limit_detail(code, book, others))

        if only_reduce and not intent.reduce_only:
            # A halt let a reducing intent through: the venue must clip it to what it holds,
            # so it never opens the other side (reduce-only, as docs/risk.md says).
            intent = attrs.evolve(intent, reduce_only=True)
        approval = ApprovedIntent(self._bus.meta(intent.meta.correlation_id), intent, qty, order_id)
        self._book_approval(approval)
        return approval

    def _book_approval(self, approval: ApprovedIntent) -> None:
        """Count an approval: duplicate check, rate window, pending quantity (idempotent)."""
        order_id = approval.order_id
        if order_id in self._approved_ids:
            return
        remembered = self._approved_order
        if len(remembered) >= APPROVED_IDS_KEPT:
            self._approved_ids.discard(remembered.popleft())
        remembered.append(order_id)
        self._approved_ids.add(order_id)
        times, ts = self._rate_times, approval.meta.ts
        times.append(ts)
        edge = ts - RATE_WINDOW_MS
        while len(times) > self._rate_limit or times[0] <= edge:
            times.popleft()
        intent = approval.intent
        book = self._books.get(intent.symbol) or self._book(intent.symbol)
        buy = intent.side is Side.BUY
        qty = approval.qty
        self._pending[order_id] = _Pending(book, buy, qty)
        if buy:
            book.pending_buy += qty
        else:
            book.pending_sell += qty
        self.approved += 1

    def _limit_detail(self, code: str, book: _Book, others: Decimal) -> str:
        state = (
            f"{book.symbol} position {book.position + book.inflight}, pending buy "
            f"{book.pending_buy}, pending sell {book.pending_sell}"
        )
        if code == RejectReason.MAX_POSITION:
            return f"{state}: no room under risk.max_position {book.max_position}"
        if code == RejectReason.MAX_NOTIONAL:
            return f"{state} at {book.price}: no room under risk.max_notional {self._max_notional}"
        return (
            f"{state} at {book.price}, other symbols {others}: no room under "
            f"risk.max_gross_exposure {self._max_gross}"
        )
