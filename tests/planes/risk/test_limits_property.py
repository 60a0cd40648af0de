"""Property: no sequence of intents, fills, cancels, price moves and time makes an approval breach.

A played executor fills approved orders (in parts or whole) at the current price, or cancels
or rejects them; prices move and are marked to the played portfolio, so equity moves and the
loss, drawdown and cooldown halts trip too. The test keeps its own books (positions from its
fills, open orders from the approvals) and its own record of what the bus carried (every
``portfolio:position_update``'s equity and time, every ticker's time, every approval's time),
and checks, independently of the RiskManager:

* every intent gets exactly one verdict; a rejection has a known reason code and a detail;
* the worst-case position of a symbol (every open order on one side filling, none on the
  other) never exceeds ``max_position``, whatever happens;
* an approval that grows a symbol's worst-case position keeps that position's value within
  ``max_notional`` and the sum of all worst-case position values within
  ``max_gross_exposure`` at the prices of the moment (price moves later may push values past
  the limits; then only orders that do not grow them pass);
* a reduce-only approval never grows the worst case and never flips the position;
* an approved intent id submitted again is a duplicate;
* order rate: no 60 s of clock time holds more than ``max_orders_per_minute`` approvals, and
  ``rate_limit`` is given only when the last 60 s already hold that many;
* the halts - the daily-loss kill switch (the day's starting equity, the last one published
  before the UTC midnight, less the lowest equity published since, reached
  ``daily_loss_limit``: latched until the next midnight), the drawdown halt (the last equity
  is ``max_drawdown`` or more below the highest one, ``portfolio.cash`` included), the
  cooldown (a fill that shrank or flipped the symbol's position at a loss less than
  ``cooldown_after_loss_s`` ago) and stale data: while one holds, an approval only reduces,
  as a reduce-only one does; and a halt's code is given only while the test's own record says
  that halt holds, to an intent with nothing to reduce on its side (reducing stays allowed).

Two mixes drive the same checks. ``limits``: tight position and value limits, from flat.
``halts``: positions held from the start, larger limits, bigger price moves, short waits, and
per example a daily loss limit, drawdown, cooldown and order rate drawn from a few values (a
halt checked first hides those after it, so which one trips first must vary). Each limit is
reached in a good share of examples (``--hypothesis-show-statistics`` lists the events); a copy
of the RiskManager with any one of the rate, loss, drawdown, cooldown or stale-data checks
removed, unlatched, never reset or letting a halted order grow fails this test.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from typing import Any

import attrs
from hypothesis import event, given
from hypothesis import strategies as st

from contracts.enums import OrderStatus, Side
from contracts.execution import PositionUpdate
from contracts.market import TickerEvent
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from contracts.topics import MARKET_TICKER, PORTFOLIO_POSITION
from planes.config import Config, load_config
from tests.planes.risk.rig import BASE, DAY_MS, Rig

ALLOWED = ("BTCUSDT", "ETHUSDT")
SYMBOLS = (*ALLOWED, "SOLUSDT")
START = {"BTCUSDT": Decimal(100), "ETHUSDT": Decimal(50), "SOLUSDT": Decimal(10)}
RATE_WINDOW_MS = 60_000
CODES = {v for k, v in vars(RejectReason).items() if k.isupper()} - {RejectReason.INTERNAL_ERROR}
HALT_CODES = frozenset(
    (
        RejectReason.STALE_DATA,
        RejectReason.DAILY_LOSS,
        RejectReason.MAX_DRAWDOWN,
        RejectReason.COOLDOWN,
    )
)


@attrs.frozen
class Limits:
    """The risk configuration of one mix, as values the checks read and as ``--set`` lines."""

    max_position: tuple[tuple[str, Decimal], ...]
    """Per-symbol quantity limits; the other allowed symbols get ``default_max_position``."""
    default_max_position: Decimal
    max_notional: Decimal
    max_gross: Decimal
    orders_per_minute: int
    stale_s: int
    cooldown_s: int
    daily_loss: Decimal
    drawdown: str
    default_qty: str
    cash: Decimal = Decimal(1000)

    def position_limit(self, symbol: str) -> Decimal:
        if symbol not in ALLOWED:
            return Decimal(0)
        return dict(self.max_position).get(symbol, self.default_max_position)

    def sets(self) -> tuple[str, ...]:
        per_symbol = ", ".join(f'"{s}" = {q}' for s, q in self.max_position)
        return (
            f"risk.default_max_position={self.default_max_position}",
            f"risk.max_position={{{per_symbol}}}",
            f"risk.max_notional={self.max_notional}",
            f"risk.max_gross_exposure={self.max_gross}",
            f"risk.max_orders_per_minute={self.orders_per_minute}",
            f"risk.stale_data_s={self.stale_s}",
            f"risk.cooldown_after_loss_s={self.cooldown_s}",
            f"risk.daily_loss_limit={self.daily_loss}",
            f"risk.max_drawdown={self.drawdown}",
            f"risk.default_qty={self.default_qty}",
            f"portfolio.cash={self.cash}",
        )


LIMITS = Limits(
    max_position=(("BTCUSDT", Decimal("1.5")),),
    default_max_position=Decimal(3),
    max_notional=Decimal(120),
    max_gross=Decimal(200),
    orders_per_minute=8,
    stale_s=30,
    cooldown_s=10,
    daily_loss=Decimal(60),
    drawdown="0.1",
    default_qty="0.3",
)
HALTS = Limits(
    max_position=(("BTCUSDT", Decimal(4)),),
    default_max_position=Decimal(6),
    max_notional=Decimal(400),
    max_gross=Decimal(600),
    orders_per_minute=4,
    stale_s=30,
    cooldown_s=10,
    daily_loss=Decimal(30),
    drawdown="0.05",
    default_qty="0.5",
)
# Drawn per example: which of the daily loss and the drawdown trips first (or whether either is
# on), how long a cooldown lasts and how tight the order rate is all vary: a halt checked first
# hides the ones after it.
halt_limits = st.builds(
    lambda loss, drawdown, cooldown, rate: attrs.evolve(
        HALTS,
        daily_loss=Decimal(loss),
        drawdown=drawdown,
        cooldown_s=cooldown,
        orders_per_minute=rate,
    ),
    st.sampled_from([20, 30, 60, 0]),  # 0: off
    st.sampled_from(["0.03", "0.05", "0.08", "0"]),
    st.sampled_from([5, 10, 30]),
    st.sampled_from([3, 4, 6]),
)
# Positions held from the start: the first price move moves equity, and a halt has something
# to let reduce (and an oversized reduction something to flip).
holdings = st.fixed_dictionaries(
    {symbol: st.sampled_from([2, -2, 1, -1, 0]).map(Decimal) for symbol in ALLOWED}
)


@cache
def config_of(limits: Limits) -> Config:
    return load_config(None, [*BASE, *limits.sets()], environ={}, use_default_file=False)


def operations(
    *,
    symbols: tuple[str, ...],
    max_qty: int,
    targets: bool,
    factors: tuple[str, ...],
    waits_s: tuple[int, ...],
    fresh: tuple[bool, ...],
    weights: tuple[int, int, int, int, int],
    size: tuple[int, int],
) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Lists of operations: intents, fills, cancels or rejects, price moves, waits.

    Intents and price moves pick from ``symbols`` (repeat one to weight it); ``targets`` lets
    intents carry a target exposure; ``fresh`` says whether a wait is followed by fresh ticks
    for every symbol; ``weights`` weigh intents, fills, ends, moves and waits; ``size`` bounds
    the length of a list.
    """
    quantities = st.integers(-20, max_qty).map(lambda n: Decimal(n) / 100)
    exposures = st.integers(-20, 20).map(lambda n: Decimal(n) / 20)
    intents = st.tuples(
        st.just("intent"),
        st.sampled_from(symbols),
        st.sampled_from(Side),
        st.one_of(st.none(), quantities),
        st.one_of(st.none(), exposures) if targets else st.none(),
        st.sampled_from([False, False, True]),  # reduce_only
        st.integers(0, 9),  # 0: resubmit an approved intent id
    )
    fills = st.tuples(st.just("fill"), st.integers(0, 1_000), st.sampled_from([1, 2, 4]))
    ends = st.tuples(
        st.just("end"),
        st.integers(0, 1_000),
        st.sampled_from([OrderStatus.CANCELLED, OrderStatus.REJECTED]),
    )
    moves = st.tuples(st.just("price"), st.sampled_from(symbols), st.sampled_from(factors))
    waits = st.tuples(st.just("wait"), st.sampled_from(waits_s), st.sampled_from(fresh))
    parts = (intents, fills, ends, moves, waits)
    # one_of() draws each distinct strategy alike, however often it is listed: weigh by index.
    picks = [i for i, weight in enumerate(weights) for _ in range(weight)]
    operation = st.sampled_from(picks).flatmap(parts.__getitem__)
    return st.lists(operation, min_size=size[0], max_size=size[1])


LIMITS_OPS = operations(
    symbols=(*ALLOWED, *ALLOWED, "SOLUSDT"),
    max_qty=400,
    targets=True,
    factors=("0.5", "0.8", "0.95", "1", "1.05", "1.25", "2"),
    waits_s=(1, 5, 20, 45, 3_600, 86_400),
    fresh=(False, True),
    weights=(2, 1, 1, 1, 1),
    size=(20, 100),
)
HALTS_OPS = operations(
    symbols=(*ALLOWED, *ALLOWED, *ALLOWED, "SOLUSDT"),
    max_qty=300,
    targets=False,
    factors=("0.7", "0.8", "0.9", "0.95", "1.05", "1.1", "1.25", "1.4"),
    waits_s=(1, 2, 4, 7, 11, 20, 61, 3_600, 86_400),
    fresh=(True, True, True, False),
    weights=(3, 2, 1, 3, 2),
    size=(60, 150),
)


class Books:
    """The test's own view: positions from its fills, open orders from the approvals."""

    def __init__(self, rig: Rig, limits: Limits) -> None:
        self.rig = rig
        self.limits = limits
        self.open: dict[str, tuple[ApprovedIntent, Decimal]] = {}

    def bounds(self, symbol: str) -> tuple[Decimal, Decimal]:
        position = self.rig.qty.get(symbol, Decimal(0))
        low = high = position
        for approved, remaining in self.open.values():
            if approved.intent.symbol == symbol:
                if approved.intent.side is Side.BUY:
                    high += remaining
                else:
                    low -= remaining
        return low, high

    def worst(self, symbol: str) -> Decimal:
        low, high = self.bounds(symbol)
        return max(-low, high)

    def gross(self) -> Decimal:
        return sum((self.worst(s) * self.rig.prices[s] for s in SYMBOLS), Decimal(0))

    def check_positions(self) -> None:
        for symbol in SYMBOLS:
            assert self.worst(symbol) <= self.limits.position_limit(symbol), symbol

    def reducible(self, symbol: str, side: Side) -> bool:
        """Whether an order on ``side`` shrinks the worst case whatever the open orders do."""
        low, high = self.bounds(symbol)
        return high < 0 if side is Side.BUY else low > 0


class Record:
    """What the bus carried, as the test saw it, and the halts and the rate that follow from it.

    It subscribes after the RiskManager, so it sees every position update and ticker the
    RiskManager saw, with the same ``meta.ts``; approvals and losing fills are noted by the
    test as it makes them.
    """

    def __init__(self, rig: Rig, limits: Limits) -> None:
        self.rig = rig
        self.limits = limits
        self.equities: list[tuple[int, Decimal]] = []
        self.ticks: dict[str, int] = {}
        self.approvals: list[int] = []
        self.cooldown_until: dict[str, int] = {}
        rig.bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        rig.bus.subscribe(MARKET_TICKER, self._on_ticker)

    def _on_position(self, update: PositionUpdate) -> None:
        self.equities.append((update.meta.ts, update.equity))

    def _on_ticker(self, ticker: TickerEvent) -> None:
        self.ticks[ticker.symbol] = ticker.meta.ts

    def now(self) -> int:
        return self.rig.clock.now_ms()

    def in_window(self) -> int:
        """Approvals in the last 60 s of clock time."""
        edge = self.now() - RATE_WINDOW_MS
        return sum(1 for ts in self.approvals if ts > edge)

    def daily_halt(self) -> bool:
        if not self.limits.daily_loss:
            return False
        midnight = self.now() // DAY_MS * DAY_MS
        before = [e for ts, e in self.equities if ts < midnight]
        start = before[-1] if before else self.limits.cash
        today = (e for ts, e in self.equities if ts >= midnight)
        return any(start - e >= self.limits.daily_loss for e in today)

    def drawdown_halt(self) -> bool:
        if not self.equities or not Decimal(self.limits.drawdown):
            return False
        equity = self.equities[-1][1]
        peak = max(self.limits.cash, *(e for _, e in self.equities))
        return peak - equity >= Decimal(self.limits.drawdown) * peak

    def cooldown(self, symbol: str) -> bool:
        return self.now() < self.cooldown_until.get(symbol, 0)

    def stale(self, symbol: str) -> bool:
        seen = self.ticks.get(symbol)
        return seen is None or self.now() - seen > self.limits.stale_s * 1000

    def halts(self, symbol: str) -> dict[str, bool]:
        return {
            RejectReason.STALE_DATA: self.stale(symbol),
            RejectReason.DAILY_LOSS: self.daily_halt(),
            RejectReason.MAX_DRAWDOWN: self.drawdown_halt(),
            RejectReason.COOLDOWN: self.cooldown(symbol),
        }

    def filled(self, symbol: str, before: Decimal, realized_before: Decimal) -> None:
        """Start the cooldown after a fill that shrank or flipped the position at a loss."""
        after = self.rig.qty.get(symbol, Decimal(0))
        lost = self.rig.realized.get(symbol, Decimal(0)) < realized_before
        if before and lost and (abs(after) < abs(before) or (after > 0) is not (before > 0)):
            self.cooldown_until[symbol] = self.now() + self.limits.cooldown_s * 1000


def judge(
    books: Books, record: Record, approvals: list[ApprovedIntent], op: tuple[Any, ...]
) -> None:
    rig, limits = books.rig, books.limits
    _, symbol, side, size, target, reduce_only, again = op
    intent_id = approvals[-1].intent.intent_id if again == 0 and approvals else None
    before = books.worst(symbol)
    low_before, high_before = books.bounds(symbol)
    could_reduce = books.reducible(symbol, side)
    halts = record.halts(symbol)
    verdict = rig.intent(
        side, size, symbol=symbol, target=target, reduce_only=reduce_only, intent_id=intent_id
    )
    if isinstance(verdict, RejectedIntent):
        code = verdict.reason_code
        event(code)
        assert code in CODES
        assert verdict.detail
        if intent_id is not None:
            assert code == RejectReason.DUPLICATE
        if code == RejectReason.RATE_LIMIT:
            assert record.in_window() >= limits.orders_per_minute
        if code in HALT_CODES:
            assert halts[code], f"{code} while the test's record says it does not hold"
            assert not could_reduce, f"{code} refused an intent that reduces"
        return
    assert intent_id is None, "an approved intent id was approved again"
    assert symbol in ALLOWED
    assert verdict.qty > 0
    if size is not None:
        assert verdict.qty <= size
        event("approved, shrunk" if verdict.qty < size else "approved")
    assert record.in_window() < limits.orders_per_minute, "an approval past the order rate"
    record.approvals.append(rig.clock.now_ms())
    approvals.append(verdict)
    books.open[verdict.order_id] = (verdict, verdict.qty)
    after = books.worst(symbol)
    books.check_positions()
    if after > before:
        assert after * rig.prices[symbol] <= limits.max_notional
        assert books.gross() <= limits.max_gross
    halted = sorted(code for code, holds in halts.items() if holds)
    for code in halted:
        event(f"approved a reduction under {code}")
    if reduce_only or halted:
        assert after <= before, f"grew the position under {halted or 'reduce_only'}"
        low, high = books.bounds(symbol)
        if side is Side.BUY:
            assert high_before < 0
            assert high <= 0
        else:
            assert low_before > 0
            assert low >= 0


def step(
    books: Books, record: Record, approvals: list[ApprovedIntent], op: tuple[Any, ...]
) -> None:
    rig = books.rig
    kind = op[0]
    if kind == "intent":
        judge(books, record, approvals, op)
    elif kind == "fill" and books.open:
        order_id = sorted(books.open)[op[1] % len(books.open)]
        approved, remaining = books.open[order_id]
        qty = remaining if op[2] == 1 else (remaining / op[2]).quantize(Decimal("0.0001"))
        symbol = approved.intent.symbol
        position, realized = rig.qty.get(symbol, Decimal(0)), rig.realized.get(symbol, Decimal(0))
        rig.fill(approved, qty)  # at the current price
        record.filled(symbol, position, realized)
        remaining -= qty
        if remaining > 0:
            books.open[order_id] = (approved, remaining)
        else:
            del books.open[order_id]
    elif kind == "end" and books.open:
        order_id = sorted(books.open)[op[1] % len(books.open)]
        rig.order_event(books.open.pop(order_id)[0], op[2])
    elif kind == "price":
        symbol = op[1]
        rig.tick(symbol, rig.prices[symbol] * Decimal(op[2]))
        if symbol in rig.qty:
            rig.position(symbol)  # marked to market: equity moves
    elif kind == "wait":
        rig.advance(op[1])
        if op[2]:
            for symbol in SYMBOLS:
                rig.tick(symbol, rig.prices[symbol])


def run(
    limits: Limits, ops: list[tuple[Any, ...]], held: Mapping[str, Decimal] | None = None
) -> None:
    """Play ``ops`` from flat or, given ``held``, from those positions at the start prices."""
    rig = Rig(config=config_of(limits))
    record = Record(rig, limits)
    for symbol, price in START.items():
        rig.tick(symbol, price)
    for symbol, qty in (held or {}).items():
        if qty:
            rig.hold(symbol, qty, START[symbol])
    books = Books(rig, limits)
    approvals: list[ApprovedIntent] = []
    for op in ops:
        step(books, record, approvals, op)
        books.check_positions()
    # The RiskManager's view agrees with the test's at the end.
    for symbol in ALLOWED:
        low, high = books.bounds(symbol)
        buy, sell = rig.risk.pending(symbol)
        position = rig.risk.position(symbol)
        assert position == rig.qty.get(symbol, 0)
        assert (position - sell, position + buy) == (low, high)
    assert rig.risk.approved == len(approvals)
    assert rig.risk.daily_halt is record.daily_halt()
    assert rig.risk.drawdown_halt is record.drawdown_halt()
    assert not rig.errors


@given(LIMITS_OPS)
def test_no_sequence_of_intents_makes_an_approval_breach_a_limit(
    ops: list[tuple[Any, ...]],
) -> None:
    run(LIMITS, ops)


@given(halt_limits, holdings, HALTS_OPS)
def test_no_sequence_of_intents_gets_past_a_halt_or_the_order_rate(
    limits: Limits, held: dict[str, Decimal], ops: list[tuple[Any, ...]]
) -> None:
    run(limits, ops, held)
