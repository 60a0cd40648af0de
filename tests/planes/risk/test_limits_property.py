"""Property: no sequence of intents, fills, cancels, price moves and time makes an approval breach.

A played executor fills approved orders (in parts or whole) at the current price, or cancels
or rejects them; prices move and are marked to the played portfolio, so equity moves and the
loss, drawdown and cooldown halts trip too. The test keeps its own books (positions from its
fills, open orders from the approvals) and checks, independently of the RiskManager:

* every intent gets exactly one verdict; a rejection has a known reason code and a detail;
* the worst-case position of a symbol (every open order on one side filling, none on the
  other) never exceeds ``max_position``, whatever happens;
* an approval that grows a symbol's worst-case position keeps that position's value within
  ``max_notional`` and the sum of all worst-case position values within
  ``max_gross_exposure`` at the prices of the moment (price moves later may push values past
  the limits; then only orders that do not grow them pass);
* a reduce-only approval never grows the worst case and never flips the position;
* an approved intent id submitted again is a duplicate.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from contracts.enums import OrderStatus, Side
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from tests.planes.risk.rig import Rig

ALLOWED = ("BTCUSDT", "ETHUSDT")
SYMBOLS = (*ALLOWED, "SOLUSDT")
START = {"BTCUSDT": Decimal(100), "ETHUSDT": Decimal(50), "SOLUSDT": Decimal(10)}
MAX_POSITION = {"BTCUSDT": Decimal("1.5"), "ETHUSDT": Decimal(3)}
MAX_NOTIONAL = Decimal(120)
MAX_GROSS = Decimal(200)
LIMITS = (
    "risk.default_max_position=3",
    'risk.max_position={"BTCUSDT" = 1.5}',
    f"risk.max_notional={MAX_NOTIONAL}",
    f"risk.max_gross_exposure={MAX_GROSS}",
    "risk.max_orders_per_minute=8",
    "risk.stale_data_s=30",
    "risk.cooldown_after_loss_s=10",
    "risk.daily_loss_limit=60",
    "risk.max_drawdown=0.1",
    "risk.default_qty=0.3",
    "portfolio.cash=1000",
)
CODES = {v for k, v in vars(RejectReason).items() if k.isupper()} - {RejectReason.INTERNAL_ERROR}

quantities = st.integers(-20, 400).map(lambda n: Decimal(n) / 100)
intents = st.tuples(
    st.just("intent"),
    st.sampled_from((*ALLOWED, *ALLOWED, "SOLUSDT")),
    st.sampled_from(Side),
    st.one_of(st.none(), quantities),
    st.one_of(st.none(), st.integers(-20, 20).map(lambda n: Decimal(n) / 20)),
    st.sampled_from([False, False, True]),  # reduce_only
    st.integers(0, 9),  # 0: resubmit an approved intent id
)
fills = st.tuples(st.just("fill"), st.integers(0, 1_000), st.sampled_from([1, 2, 4]))
ends = st.tuples(
    st.just("end"),
    st.integers(0, 1_000),
    st.sampled_from([OrderStatus.CANCELLED, OrderStatus.REJECTED]),
)
moves = st.tuples(
    st.just("price"),
    st.sampled_from(SYMBOLS),
    st.sampled_from(["0.5", "0.8", "0.95", "1", "1.05", "1.25", "2"]),
)
waits = st.tuples(
    st.just("wait"),
    st.sampled_from([1, 5, 20, 45, 3_600, 86_400]),
    st.booleans(),  # then fresh ticks for every symbol
)
operations = st.lists(
    st.one_of(intents, intents, fills, moves, waits, ends), min_size=20, max_size=100
)


class Books:
    """The test's own view: positions from its fills, open orders from the approvals."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
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
            assert self.worst(symbol) <= MAX_POSITION.get(symbol, Decimal(0)), symbol


def judge(books: Books, approvals: list[ApprovedIntent], op: tuple[Any, ...]) -> None:
    rig = books.rig
    _, symbol, side, size, target, reduce_only, again = op
    intent_id = approvals[-1].intent.intent_id if again == 0 and approvals else None
    before = books.worst(symbol)
    low_before, high_before = books.bounds(symbol)
    verdict = rig.intent(
        side, size, symbol=symbol, target=target, reduce_only=reduce_only, intent_id=intent_id
    )
    if isinstance(verdict, RejectedIntent):
        event(verdict.reason_code)
        assert verdict.reason_code in CODES
        assert verdict.detail
        if intent_id is not None:
            assert verdict.reason_code == RejectReason.DUPLICATE
        return
    assert intent_id is None, "an approved intent id was approved again"
    assert symbol in ALLOWED
    assert verdict.qty > 0
    if size is not None:
        assert verdict.qty <= size
        event("approved, shrunk" if verdict.qty < size else "approved")
    approvals.append(verdict)
    books.open[verdict.order_id] = (verdict, verdict.qty)
    after = books.worst(symbol)
    books.check_positions()
    if after > before:
        assert after * rig.prices[symbol] <= MAX_NOTIONAL
        assert books.gross() <= MAX_GROSS
    if reduce_only:
        assert after <= before
        low, high = books.bounds(symbol)
        if side is Side.BUY:
            assert high_before < 0
            assert high <= 0
        else:
            assert low_before > 0
            assert low >= 0


def step(books: Books, approvals: list[ApprovedIntent], op: tuple[Any, ...]) -> None:
    rig = books.rig
    kind = op[0]
    if kind == "intent":
        judge(books, approvals, op)
    elif kind == "fill" and books.open:
        order_id = sorted(books.open)[op[1] % len(books.open)]
        approved, remaining = books.open[order_id]
        qty = remaining if op[2] == 1 else (remaining / op[2]).quantize(Decimal("0.0001"))
        rig.fill(approved, qty)  # at the current price
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


@given(operations)
def test_no_sequence_of_intents_makes_an_approval_breach_a_limit(
    ops: list[tuple[Any, ...]],
) -> None:
    rig = Rig(*LIMITS)
    for symbol, price in START.items():
        rig.tick(symbol, price)
    books = Books(rig)
    approvals: list[ApprovedIntent] = []
    for op in ops:
        step(books, approvals, op)
        books.check_positions()
    # The RiskManager's view agrees with the test's at the end.
    for symbol in ALLOWED:
        low, high = books.bounds(symbol)
        buy, sell = rig.risk.pending(symbol)
        position = rig.risk.position(symbol)
        assert position == rig.qty.get(symbol, 0)
        assert (position - sell, position + buy) == (low, high)
    assert rig.risk.approved == len(approvals)
    assert not rig.errors
