"""The ledger: balanced postings, average-cost PnL, and exact equity for any fills and marks.

"Balanced" means: the amounts of an entry's legs, all in the quote currency (debit positive),
sum to exactly zero across the accounts ``capital``, ``cash``, ``asset:SYMBOL`` (at cost),
``realized:SYMBOL``, ``fees`` and the ``fees:ASSET`` memo accounts (always 0 in quote).

Fills pay their fee in the quote currency ("" or "USDT"), in the symbol's base coin (a share of
the quantity, as Bybit spot buys do) or in another coin the books cannot value (BNB, MNT). Every
strategy draws negative fees too: maker rebates, booked with their sign.
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
from contracts.execution import FeeKind
from planes.execution.ledger import (
    CAPITAL,
    CASH,
    FEES,
    Ledger,
    asset_account,
    fee_account,
    realized_account,
)
from tests.strategies import finite_decimals

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ZERO = Decimal(0)
EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


@pytest.fixture(autouse=True)
def exact_arithmetic() -> Iterator[None]:
    """Let the tests' own sums be exact too, so a mismatch is the ledger's, not the test's."""
    with decimal.localcontext(EXACT):
        yield


# -- strategies ----------------------------------------------------------------------------


def _scaled(low: int, high: int, places: int) -> SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda n: Decimal(n).scaleb(-places))


_wild = finite_decimals.map(abs).filter(lambda d: d != 0)
"""Any positive finite decimal: long coefficients, tiny and huge exponents."""

quantities = st.one_of(_scaled(1, 10**6, 4), _scaled(1, 10**9, 8), _wild)
prices = st.one_of(_scaled(1, 10**8, 2), _scaled(1, 10**10, 8), _wild)
fees = st.one_of(
    st.just(ZERO), _scaled(0, 10**6, 6), _wild, _scaled(-(10**6), -1, 6), _wild.map(lambda d: -d)
)
"""Fees and rebates (negative fees), in the coin they are charged in."""


rates = st.one_of(
    st.just(ZERO),
    _scaled(1, 10**4 - 1, 4),
    _scaled(1, 10**4, 7),
    _scaled(-(10**4 - 1), -1, 4),
    _scaled(-(10**4), -1, 7),
)
"""A base-coin fee as a share of the fill's quantity: above -1 and below 1 (negative: a
rebate)."""
OTHER_ASSETS = ("BNB", "MNT", "mnt")
fee_assets = st.sampled_from(("", "USDT", "usdt", "base", "base", *OTHER_ASSETS))
"""Where a fee is charged: quote ("" is quote too), the symbol's base coin, or another coin."""


def base_of(symbol: str) -> str:
    return symbol.removesuffix("USDT")


@attrs.frozen
class Fill:
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str = ""

    @property
    def kind(self) -> FeeKind:
        if not self.fee or self.fee_asset.upper() in ("", "USDT"):
            return FeeKind.QUOTE
        return FeeKind.BASE if self.fee_asset == base_of(self.symbol) else FeeKind.OTHER

    @property
    def moved(self) -> Decimal:
        """The position's change: the signed quantity, less a base-coin fee."""
        return signed(self) - (self.fee if self.kind is FeeKind.BASE else 0)

    @property
    def cash(self) -> Decimal:
        """The change in cash: a quote fee is paid from it."""
        return -signed(self) * self.price - (self.fee if self.kind is FeeKind.QUOTE else 0)

    @property
    def fee_value(self) -> Decimal:
        """The fee in quote: a base-coin fee at the fill price; another coin's is not valued."""
        if self.kind is FeeKind.BASE:
            return self.fee * self.price
        return self.fee if self.kind is FeeKind.QUOTE else ZERO


def fee_for(symbol: str, qty: Decimal) -> SearchStrategy[tuple[Decimal, str]]:
    """A fee for a fill of ``qty`` of ``symbol`` and the asset it is charged in."""
    in_base = st.tuples(rates.map(lambda r: EXACT.multiply(qty, r)), st.just(base_of(symbol)))
    return fee_assets.flatmap(lambda a: in_base if a == "base" else st.tuples(fees, st.just(a)))


@st.composite
def fills(draw: st.DrawFn) -> Fill:
    symbol, qty = draw(symbols), draw(quantities)
    fee, asset = draw(fee_for(symbol, qty))
    return Fill(symbol, draw(st.sampled_from(Side)), qty, draw(prices), fee, asset)


@attrs.frozen
class Mark:
    symbol: str
    price: Decimal


symbols = st.sampled_from(SYMBOLS)
marks = st.builds(Mark, symbols, prices)
operations = st.lists(st.one_of(fills(), fills(), marks), max_size=30)
starting_cash = st.one_of(st.just(D(10_000)), _scaled(0, 10**12, 2))


def apply(ledger: Ledger, ops: Sequence[Fill | Mark]) -> None:
    for op in ops:
        if isinstance(op, Fill):
            ledger.fill(op.symbol, op.side, op.qty, op.price, op.fee, fee_asset=op.fee_asset)
        else:
            ledger.mark(op.symbol, op.price)


def signed(fill: Fill) -> Decimal:
    return fill.qty if fill.side is Side.BUY else -fill.qty


def unvalued(ops: Sequence[Fill | Mark]) -> dict[str, Decimal]:
    """Fees in coins the books cannot value, per coin (upper case), as the model sums them."""
    total: dict[str, Decimal] = {}
    for op in ops:
        if isinstance(op, Fill) and op.kind is FeeKind.OTHER:
            asset = op.fee_asset.upper()
            total[asset] = total.get(asset, ZERO) + op.fee
    return total


# -- properties ----------------------------------------------------------------------------


@given(starting_cash, operations)
def test_equity_is_cash_plus_marked_positions_exactly(
    cash: Decimal, ops: list[Fill | Mark]
) -> None:
    ledger = Ledger(cash)
    # An independent model: cash moves by -signed qty * price (- a quote fee), qty by signed qty
    # (- a base fee); the mark is the last mark, or the first fill's price until a mark comes.
    model_cash, model_qty = cash, dict.fromkeys(SYMBOLS, ZERO)
    model_mark: dict[str, Decimal] = {}
    for op in ops:
        apply(ledger, [op])
        if isinstance(op, Fill):
            model_cash += op.cash
            model_qty[op.symbol] += op.moved
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
    memo: dict[str, Decimal] = {}
    fills = [op for op in ops if isinstance(op, Fill)]
    for entry, fill in zip(ledger.entries[1:], fills, strict=True):  # [0]: the opening entry
        names = [leg.account for leg in entry.legs]
        assert names[:3] == [asset_account(fill.symbol), CASH, FEES]
        asset = entry.legs[0]
        asset_qty[asset.account] = asset_qty.get(asset.account, ZERO) + asset.qty
        assert asset.qty == fill.moved
        assert entry.legs[1].amount == fill.cash
        assert entry.legs[2].amount == fill.fee_value  # the fee leg, in quote (< 0: a rebate)
        if fill.kind is not FeeKind.OTHER:
            assert (entry.legs[2].amount < 0) == (fill.fee < 0)
        for leg in entry.legs[3:]:
            if leg.account.startswith(FEES + ":"):  # a memo leg: no quote, the fee in its coin
                assert (leg.amount, leg.qty) == (ZERO, fill.fee)
                memo[leg.account] = memo.get(leg.account, ZERO) + leg.qty
    assert ledger.unvalued_fees == unvalued(ops)
    assert memo == {fee_account(asset): fee for asset, fee in ledger.unvalued_fees.items()}
    for account in memo:
        assert balances[account] == 0
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
            paid += op.fee_value
        assert ledger.fees == paid  # net of rebates: it may be below zero
        assert ledger.equity() - cash == ledger.realized + ledger.unrealized() - ledger.fees
        assert ledger.realized == sum((p.realized for p in ledger.positions()), ZERO)


@given(cash=starting_cash, before=operations, symbol=symbols, data=st.data(), long=st.booleans())
def test_a_round_trip_at_one_price_costs_exactly_the_fees(
    *, cash: Decimal, before: list[Fill | Mark], symbol: str, data: st.DataObject, long: bool
) -> None:
    ledger = Ledger(cash)
    apply(ledger, before)
    price = data.draw(prices, label="price")
    ledger.mark(symbol, price)
    equity = ledger.equity()
    held = ledger.position(symbol).qty
    first, second = (Side.BUY, Side.SELL) if long else (Side.SELL, Side.BUY)
    qty = data.draw(quantities, label="qty")
    fee_in, asset_in = data.draw(fee_for(symbol, qty), label="fee in")
    fill_in = Fill(symbol, first, qty, price, fee_in, asset_in)
    # The way back trades what the way in moved (less, when a base-coin fee was kept from it),
    # itself less any base-coin fee it pays: the position returns to where it was.
    moved = abs(fill_in.moved)
    rate = data.draw(rates, label="base rate back") / 2  # |rate| < 1/2: the fee is below the qty
    if data.draw(st.booleans(), label="base fee back") and rate:
        fee_out, asset_out = moved * rate, base_of(symbol)
        back = moved + fee_out if second is Side.BUY else moved - fee_out
    else:
        back = moved
        fee_out, asset_out = data.draw(fees, label="fee back"), data.draw(fee_assets)
        asset_out = asset_out if asset_out != "base" else "USDT"
    fill_out = Fill(symbol, second, back, price, fee_out, asset_out)
    apply(ledger, [fill_in, fill_out])
    assert ledger.position(symbol).qty == held
    assert ledger.equity() - equity == -(fill_in.fee_value + fill_out.fee_value)
    assert ledger.unvalued_fees == unvalued([*before, fill_in, fill_out])


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
        (D(1), D(1), D("NaN"), "a fee must be finite"),
        (D(1), D(1), D("-Infinity"), "a fee must be finite"),
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


def test_a_fee_in_the_base_coin_reduces_the_asset_received() -> None:
    ledger = Ledger(D(10_000))
    buy = ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("0.001"), fee_asset="BTC")
    assert [(leg.account, leg.amount, leg.qty) for leg in buy.legs] == [
        ("asset:BTCUSDT", D("99.9"), D("0.999")),
        ("cash", D(-100), D(-100)),  # the whole 1 BTC is paid for
        ("fees", D("0.1"), D("0.1")),  # 0.001 BTC, valued at the fill price
    ]
    pos = ledger.position("BTCUSDT")
    assert (pos.qty, pos.cost, pos.avg_price, pos.fees) == (D("0.999"), D("99.9"), D(100), D("0.1"))
    assert ledger.equity() == D(10_000) - D("0.1")
    sell = ledger.fill("BTCUSDT", Side.SELL, D("0.999"), D(110), D("0.10989"), fee_asset="USDT")
    assert [(leg.account, leg.amount) for leg in sell.legs] == [
        ("asset:BTCUSDT", D("-99.9")),
        ("cash", D("109.78011")),
        ("fees", D("0.10989")),
        ("realized:BTCUSDT", D("-9.99")),
    ]
    assert (pos.qty, pos.realized) == (D(0), D("9.99"))
    assert ledger.fees == D("0.20989")
    assert ledger.equity() == D(10_000) + D("9.99") - D("0.20989")


def test_a_fee_in_the_base_coin_on_a_sell_takes_that_much_more_of_it() -> None:
    ledger = Ledger(D(1_000))
    ledger.fill("ETHUSDT", Side.BUY, D(2), D(50))
    ledger.fill("ETHUSDT", Side.SELL, D(1), D(60), D("0.01"), fee_asset="ETH")
    pos = ledger.position("ETHUSDT")
    assert pos.qty == D("0.99")
    assert pos.realized == D("10.1")  # 1.01 ETH left the position at 60, bought at 50
    assert ledger.fees == D("0.6")
    assert ledger.cash == D(1_000) - 100 + 60


def test_a_fee_in_another_coin_is_kept_apart_and_not_converted() -> None:
    ledger = Ledger(D(1_000))
    entry = ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("0.0002"), fee_asset="BNB")
    ledger.fill("ETHUSDT", Side.SELL, D(1), D(10), D("0.0001"), fee_asset="bnb")
    ledger.fill("ETHUSDT", Side.BUY, D(1), D(10), D(3), fee_asset="MNT")
    assert [(leg.account, leg.amount, leg.qty) for leg in entry.legs] == [
        ("asset:BTCUSDT", D(100), D(1)),
        ("cash", D(-100), D(-100)),
        ("fees", D(0), D(0)),
        ("fees:BNB", D(0), D("0.0002")),  # a memo leg: the fee in its own coin
    ]
    assert ledger.unvalued_fees == {"BNB": D("0.0003"), "MNT": D(3)}
    assert ledger.fees == 0
    assert ledger.position("BTCUSDT").qty == 1
    assert ledger.equity() == D(1_000)  # the equity leaves them out
    assert ledger.balances[fee_account("BNB")] == 0
    restored = Ledger.restore(ledger.export())
    assert restored.unvalued_fees == ledger.unvalued_fees
    assert ledger.export()["unvalued_fees"] == {"BNB": "0.0003", "MNT": "3"}


@pytest.mark.parametrize(
    ("symbol", "fee_asset", "kind"),
    [
        ("BTCUSDT", "", FeeKind.QUOTE),
        ("BTCUSDT", "USDT", FeeKind.QUOTE),
        ("BTCUSDT", "usdt", FeeKind.QUOTE),
        ("BTCUSDT", "BTC", FeeKind.BASE),
        ("BTCUSDT", "ETH", FeeKind.OTHER),
        ("BTCUSDT", "BNB", FeeKind.OTHER),
        ("BTCEUR", "BTC", FeeKind.OTHER),  # not a USDT symbol: its base is unknown here
        ("USDT", "USDT", FeeKind.QUOTE),
    ],
)
def test_fee_kinds(symbol: str, fee_asset: str, kind: FeeKind) -> None:
    assert Ledger(D(0)).fee_kind(symbol, fee_asset) is kind


@pytest.mark.parametrize("fee", ["1", "-1", "-1.5"])
def test_a_base_coin_fee_or_rebate_that_takes_the_whole_fill_is_refused(fee: str) -> None:
    ledger = Ledger(D(100))
    with pytest.raises(ValueError, match=f"a fee of {fee} BTC takes the whole fill of 1 BTCUSDT"):
        ledger.fill("BTCUSDT", Side.SELL, D(1), D(1), D(fee), fee_asset="BTC")
    assert len(ledger.entries) == 1
    assert ledger.position("BTCUSDT").qty == 0


def test_a_maker_rebate_in_quote_adds_to_cash_and_credits_the_fee_account() -> None:
    ledger = Ledger(D(1_000))
    buy = ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("-0.01"))
    assert [(leg.account, leg.amount) for leg in buy.legs] == [
        ("asset:BTCUSDT", D(100)),
        ("cash", D("-99.99")),  # the rebate comes back to cash
        ("fees", D("-0.01")),  # a credit: the fee account records the rebate
    ]
    sell = ledger.fill("BTCUSDT", Side.SELL, D(1), D(100), D("0.055"))
    assert sell.total() == 0
    assert ledger.fees == D("0.045")  # net of the rebate
    assert ledger.position("BTCUSDT").fees == D("0.045")
    assert ledger.equity() == D(1_000) - D("0.045")
    ledger.fill("ETHUSDT", Side.BUY, D(1), D(10), D("-0.5"))
    ledger.fill("ETHUSDT", Side.SELL, D(1), D(10), D("-0.5"))
    assert ledger.fees == D("-0.955")  # more rebates than fees: below zero
    assert ledger.equity() == D(1_000) + D("0.955")
    assert ledger.balances[FEES] == D("-0.955")
    assert Ledger.restore(ledger.export()).export() == ledger.export()


def test_a_rebate_in_the_base_coin_adds_to_the_asset_and_in_another_coin_is_kept_apart() -> None:
    ledger = Ledger(D(1_000))
    buy = ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("-0.001"), fee_asset="BTC")
    assert [(leg.account, leg.amount, leg.qty) for leg in buy.legs] == [
        ("asset:BTCUSDT", D("100.1"), D("1.001")),  # the rebate grows the position
        ("cash", D(-100), D(-100)),
        ("fees", D("-0.1"), D("-0.1")),  # valued at the fill price
    ]
    sell = ledger.fill("BTCUSDT", Side.SELL, D(1), D(100), D("-0.001"), fee_asset="BTC")
    assert sell.legs[0].qty == D("-0.999")  # a sell's rebate takes less of the position
    assert ledger.position("BTCUSDT").qty == D("0.002")
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(100), D("0.3"), fee_asset="MNT")
    ledger.fill("BTCUSDT", Side.SELL, D(1), D(100), D("-0.5"), fee_asset="MNT")
    assert ledger.unvalued_fees == {"MNT": D("-0.2")}
    assert ledger.equity() == D(1_000) + D("0.2")
    assert Ledger.restore(ledger.export()).unvalued_fees == {"MNT": D("-0.2")}


OLD_EXPORT = {
    "quote": "USDT",
    "starting_cash": "1000",
    "cash": "889.79",
    "fees": "0.21",
    "realized": "0",
    "entries": 2,
    "balances": {
        "cash": "889.79",
        "capital": "-1000",
        "asset:BTCUSDT": "110",
        "fees": "0.21",
    },
    "positions": {
        "BTCUSDT": {
            "qty": "1",
            "cost": "110",
            "avg_price": "110",
            "realized": "0",
            "fees": "0.21",
            "mark": "110",
        }
    },
}
"""A ledger exported before fee assets counted (no ``unvalued_fees``): one buy of 1 at 110."""


def test_an_export_from_before_fee_assets_restores_and_goes_on() -> None:
    ledger = Ledger.restore(OLD_EXPORT)
    assert ledger.unvalued_fees == {}
    assert ledger.export() == {**OLD_EXPORT, "unvalued_fees": {}}
    ledger.fill("BTCUSDT", Side.BUY, D(1), D(110), D("0.001"), fee_asset="BTC")
    ledger.fill("BTCUSDT", Side.SELL, D(1), D(110), D(1), fee_asset="BNB")
    assert ledger.position("BTCUSDT").qty == D("0.999")
    assert ledger.fees == D("0.21") + D("0.11")
    assert ledger.unvalued_fees == {"BNB": D(1)}
    assert Ledger.restore(ledger.export()).export() == ledger.export()
