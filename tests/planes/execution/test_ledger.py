"""The ledger: balanced postings, average-cost PnL, and exact equity for any fills and marks.

"Balanced" means: the amounts of an entry's legs, all in the quote currency (debit positive),
sum to exactly zero across the accounts ``capital``, ``cash``, ``asset:SYMBOL`` (at cost),
``realized:SYMBOL`` and ``fees``.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Sequence
from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from contracts.enums import Side
from planes.execution.ledger import (
    CAPITAL,
    CASH,
    FEES,
    Ledger,
    asset_account,
    realized_account,
)
from tests.strategies import finite_decimals

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ZERO = Decimal(0)


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


@pytest.fixture(autouse=True)
def exact_arithmetic() -> Iterator[None]:
    """Let the tests' own sums be exact too, so a mismatch is the ledger's, not the test's."""
    context = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    with decimal.localcontext(context):
        yield


# -- strategies ----------------------------------------------------------------------------


def _scaled(low: int, high: int, places: int) -> SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda n: Decimal(n).scaleb(-places))


_wild = finite_decimals.map(abs).filter(lambda d: d != 0)
"""Any positive finite decimal: long coefficients, tiny and huge exponents."""

quantities = st.one_of(_scaled(1, 10**6, 4), _scaled(1, 10**9, 8), _wild)
prices = st.one_of(_scaled(1, 10**8, 2), _scaled(1, 10**10, 8), _wild)
fees = st.one_of(st.just(ZERO), _scaled(0, 10**6, 6), _wild)


@attrs.frozen
class Fill:
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal


@attrs.frozen
class Mark:
    symbol: str
    price: Decimal


symbols = st.sampled_from(SYMBOLS)
fills = st.builds(Fill, symbols, st.sampled_from(Side), quantities, prices, fees)
marks = st.builds(Mark, symbols, prices)
operations = st.lists(st.one_of(fills, fills, marks), max_size=30)
starting_cash = st.one_of(st.just(D(10_000)), _scaled(0, 10**12, 2))


def apply(ledger: Ledger, ops: Sequence[Fill | Mark]) -> None:
    for op in ops:
        if isinstance(op, Fill):
            ledger.fill(op.symbol, op.side, op.qty, op.price, op.fee)
        else:
            ledger.mark(op.symbol, op.price)


def signed(fill: Fill) -> Decimal:
    return fill.qty if fill.side is Side.BUY else -fill.qty


# -- properties ----------------------------------------------------------------------------


@given(starting_cash, operations)
def test_equity_is_cash_plus_marked_positions_exactly(
    cash: Decimal, ops: list[Fill | Mark]
) -> None:
    ledger = Ledger(cash)
    # An independent model: cash moves by -signed qty * price - fee, qty by signed qty; the mark
    # is the last mark, or the first fill's price until a mark comes.
    model_cash, model_qty = cash, dict.fromkeys(SYMBOLS, ZERO)
    model_mark: dict[str, Decimal] = {}
    for op in ops:
        apply(ledger, [op])
        if isinstance(op, Fill):
            model_cash -= signed(op) * op.price + op.fee
            model_qty[op.symbol] += signed(op)
            model_mark.setdefault(op.symbol, op.price)
        else:
            model_mark[op.symbol] = op.price
        value = sum((q * model_mark[s] for s, q in model_qty.items() if q), ZERO)
        assert ledger.cash == model_cash
        assert ledger.equity() == model_cash + value
        assert ledger.equity() == ledger.cash + ledger.market_value()
        for symbol, qty in model_qty.items():
            assert ledger.position(symbol).qty == qty


@given(starting_cash, operations)
def test_every_entry_balances_and_accounts_match_the_books(
    cash: Decimal, ops: list[Fill | Mark]
) -> None:
    ledger = Ledger(cash)
    apply(ledger, ops)
    assert all(entry.total() == 0 for entry in ledger.entries)
    assert sum(ledger.balances.values(), ZERO) == 0
    balances = ledger.balances
    assert balances[CAPITAL] == -cash
    assert balances[CASH] == ledger.cash
    assert balances.get(FEES, ZERO) == ledger.fees
    asset_qty: dict[str, Decimal] = {}
    for entry in ledger.entries[1:]:  # the first one is the opening entry
        names = [leg.account for leg in entry.legs]
        assert names[:3] == [asset_account(entry.legs[0].account[6:]), CASH, FEES]
        asset = entry.legs[0]
        asset_qty[asset.account] = asset_qty.get(asset.account, ZERO) + asset.qty
        assert entry.legs[2].amount >= 0  # the fee leg
    for pos in ledger.positions():
        assert balances.get(asset_account(pos.symbol), ZERO) == pos.cost
        assert asset_qty.get(asset_account(pos.symbol), ZERO) == pos.qty
        assert balances.get(realized_account(pos.symbol), ZERO) == -pos.realized
        if not pos.qty:
            assert pos.cost == 0


@given(starting_cash, operations)
def test_realized_plus_unrealized_minus_fees_is_the_change_in_equity(
    cash: Decimal, ops: list[Fill | Mark]
) -> None:
    ledger = Ledger(cash)
    paid = ZERO
    for op in ops:
        apply(ledger, [op])
        if isinstance(op, Fill):
            paid += op.fee
        assert ledger.fees == paid >= 0
        assert ledger.equity() - cash == ledger.realized + ledger.unrealized() - ledger.fees
        assert ledger.realized == sum((p.realized for p in ledger.positions()), ZERO)


@given(
    cash=starting_cash,
    before=operations,
    symbol=symbols,
    qty=quantities,
    price=prices,
    fee_in=fees,
    fee_out=fees,
    long=st.booleans(),
)
def test_a_round_trip_at_one_price_costs_exactly_the_fees(
    *,
    cash: Decimal,
    before: list[Fill | Mark],
    symbol: str,
    qty: Decimal,
    price: Decimal,
    fee_in: Decimal,
    fee_out: Decimal,
    long: bool,
) -> None:
    ledger = Ledger(cash)
    apply(ledger, before)
    ledger.mark(symbol, price)
    equity = ledger.equity()
    held = ledger.position(symbol).qty
    first, second = (Side.BUY, Side.SELL) if long else (Side.SELL, Side.BUY)
    ledger.fill(symbol, first, qty, price, fee_in)
    ledger.fill(symbol, second, qty, price, fee_out)
    assert ledger.equity() - equity == -(fee_in + fee_out)
    assert ledger.position(symbol).qty == held


@given(starting_cash, operations)
def test_the_books_do_not_depend_on_the_callers_decimal_context(
    cash: Decimal, ops: list[Fill | Mark]
) -> None:
    exact = Ledger(cash)
    apply(exact, ops)
    with decimal.localcontext(decimal.Context(prec=3)):
        coarse = Ledger(cash)
        apply(coarse, ops)
        coarse_equity = coarse.equity()
    assert coarse_equity == exact.equity()
    assert coarse.balances == exact.balances
    assert [e.legs for e in coarse.entries] == [e.legs for e in exact.entries]


# -- examples ------------------------------------------------------------------------------


def test_average_cost_long_then_partial_and_full_exit() -> None:
    ledger = Ledger(D(10_000))
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("0.1"))
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(110), D("0.1"))
    pos = ledger.position("BTCUSDT")
    assert (pos.qty, pos.cost, pos.avg_price) == (D(2), D(210), D(105))
    ledger.fill("BTCUSDT", Side.SELL, D("0.5"), D(120), D("0.05"))
    assert pos.realized == D("7.5")  # 0.5 * (120 - 105)
    assert pos.avg_price == D(105)
    ledger.mark("BTCUSDT", D(100))
    assert pos.unrealized == D("-7.5")  # 1.5 * (100 - 105)
    ledger.fill("BTCUSDT", Side.SELL, D("1.5"), D(100), D(0))
    assert (pos.qty, pos.cost) == (D(0), D(0))
    assert pos.realized == D(0)  # +7.5 then -7.5
    assert ledger.fees == D("0.25")
    assert ledger.equity() == D(10_000) - D("0.25")


def test_short_sale_credits_cash_and_profits_when_the_price_falls() -> None:
    ledger = Ledger(D(1_000))
    entry = ledger.fill("ETHUSDT", Side.SELL, D(2), D(50), D(1))
    assert ledger.cash == D(1_099)
    assert [(leg.account, leg.amount, leg.qty) for leg in entry.legs] == [
        ("asset:ETHUSDT", D(-100), D(-2)),
        ("cash", D(99), D(99)),
        ("fees", D(1), D(1)),
    ]
    ledger.mark("ETHUSDT", D(40))
    pos = ledger.position("ETHUSDT")
    assert pos.unrealized == D(20)
    assert ledger.equity() == D(1_099) - D(80)
    cover = ledger.fill("ETHUSDT", Side.BUY, D(1), D(40))
    assert pos.realized == D(10)
    assert [leg.account for leg in cover.legs] == [
        "asset:ETHUSDT",
        "cash",
        "fees",
        "realized:ETHUSDT",
    ]
    assert cover.legs[3].amount == D(-10)  # a gain is a credit


def test_a_flip_closes_at_average_cost_and_opens_the_rest_at_the_fill_price() -> None:
    ledger = Ledger(D(0))
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(100))
    ledger.fill("BTCUSDT", Side.SELL, D(3), D(130))
    pos = ledger.position("BTCUSDT")
    assert pos.realized == D(30)
    assert (pos.qty, pos.cost, pos.avg_price) == (D(-2), D(-260), D(130))


def test_a_partial_reduction_rounds_released_cost_but_the_books_still_balance() -> None:
    ledger = Ledger(D(0))
    ledger.fill("BTCUSDT", Side.BUY, D(3), D(100))
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(101))  # cost 401 for 4: avg 100.25
    ledger.fill("BTCUSDT", Side.SELL, D(1), D(7))
    ledger.fill("BTCUSDT", Side.SELL, D(2), D(7))
    assert all(entry.total() == 0 for entry in ledger.entries)
    ledger.mark("BTCUSDT", D(9))
    assert ledger.equity() == ledger.realized + ledger.unrealized() - ledger.fees


@pytest.mark.parametrize(
    ("qty", "price", "fee", "match"),
    [
        (D(0), D(1), D(0), "qty must be > 0"),
        (D(-1), D(1), D(0), "qty must be > 0"),
        (D(1), D(0), D(0), "price must be > 0"),
        (D(1), D(1), D("-0.01"), "never negative"),
        (D("NaN"), D(1), D(0), "qty must be > 0"),
    ],
)
def test_bad_fills_are_refused(qty: Decimal, price: Decimal, fee: Decimal, match: str) -> None:
    ledger = Ledger(D(100))
    with pytest.raises(ValueError, match=match):
        ledger.fill("BTCUSDT", Side.BUY, qty, price, fee)
    assert len(ledger.entries) == 1
    assert ledger.cash == D(100)


def test_the_example_in_the_docs() -> None:
    ledger = Ledger(D(1_000))
    buy = ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("0.1"))
    sell = ledger.fill("BTCUSDT", Side.SELL, D(1), D(110), D("0.11"))
    assert [(leg.account, leg.amount) for leg in buy.legs] == [
        ("asset:BTCUSDT", D(100)),
        ("cash", D("-100.1")),
        ("fees", D("0.1")),
    ]
    assert [(leg.account, leg.amount) for leg in sell.legs] == [
        ("asset:BTCUSDT", D(-100)),
        ("cash", D("109.89")),
        ("fees", D("0.11")),
        ("realized:BTCUSDT", D(-10)),
    ]
    assert ledger.equity() == D(1_000) + 10 - D("0.21")
