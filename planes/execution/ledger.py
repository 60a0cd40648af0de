"""A Decimal double-entry ledger of one trading account, with positions and PnL.

Accounts, each with a balance in the quote currency (debits positive, credits negative):

==================  ================================================================
``capital``         the owner's stake; credited with the starting cash
``cash``            the quote currency on hand (goes negative when buying on margin)
``asset:SYMBOL``    the base asset of a symbol, carried at cost; negative when short
``realized:SYMBOL`` price PnL realised on the symbol; credited with gains
``fees``            trading fees, valued in quote: debited with fees, credited with rebates
``fees:ASSET``      a memo account for fees in an asset the books cannot value (below):
                    its balance stays 0, its legs carry the amount in ``ASSET``
==================  ================================================================

Every fill posts one ``Entry`` whose legs sum to zero in quote terms:

* the **asset leg** moves the symbol's quantity by what the account received or gave: the signed
  fill quantity, less a fee charged in the base asset; its amount is the cost that enters
  (``qty * price`` for the part that opens or adds) or leaves (the average cost of the part that
  reduces);
* the **quote leg** moves cash by ``-signed_qty * price``, less a fee charged in quote;
* the **fee leg** debits ``fees`` with the fee's value in quote (a rebate, a negative fee,
  credits it);
* the **realized leg**, only when the fill reduces a position, credits the gain: the proceeds
  of the reducing part minus the cost it releases (average-cost method). A fill that flips a
  position closes the old side at its average cost and opens the rest at the fill price.

Fees, by the asset a venue charges them in (``fee_asset``; empty means the quote currency, which
is what journals written before fee assets counted hold):

* **quote** (``fee_asset`` is the ledger's ``quote``): paid from cash; the fee leg is the fee.
* **base** (``fee_asset`` is the symbol's base asset, the symbol less its quote suffix: ``BTC``
  of ``BTCUSDT``). Bybit spot charges a buy's fee so: buy 1 BTC with a fee of 0.001 BTC and
  the position grows by 0.999, while cash pays for the whole 1. The fee reduces the asset
  received (or, on a sell, takes that much more of the asset), and the fee leg records its
  **value in quote at the fill price** (``fee * price``, 0.001 * price here), which is what
  ``fees``, the positions' fees and the PnL identities below count. The position's cost enters
  at the fill price too (``0.999 * price``): the fee is an expense, not part of the cost basis,
  exactly as a quote fee is. A base fee must be smaller than the fill's quantity.
* **any other asset** (BNB, MNT, ...): the books hold no price for it, so it is not converted.
  The asset and quote legs are booked as for a fee of zero, the ``fees`` leg is 0, and a memo
  leg on ``fees:ASSET`` (amount 0, ``qty`` the fee in that asset) records it; the per-asset total
  is in ``unvalued_fees`` and in the export. Equity therefore leaves such fees out (it is
  overstated by their value); the PositionManager alerts once per asset so that an operator
  knows.

**Rebates.** A negative fee is a rebate (Bybit pays makers on some accounts and reports it as a
negative ``execFee``). It is booked by the same rules with the sign kept: a quote rebate adds
to cash and credits ``fees``; a base-coin rebate adds to the asset received (or takes less of
it on a sell) and credits ``fees`` with its value at the fill price; another coin's rebate
lowers that coin's ``unvalued_fees``. ``fees`` is then net of rebates and may go below zero, and
every identity below holds as it is. A base-coin fee or rebate must be smaller than the fill's
quantity in size.

Cash accounting is spot-like for both sides: selling short credits cash, buying back debits it.
Hence, with ``mark`` the last price seen per symbol:

* ``unrealized_pnl = qty * mark - cost``;
* ``equity = cash + sum(qty * mark)``, which always equals
  ``starting cash + realized - fees + unrealized`` (the balances sum to zero);
* a round trip at one price changes equity by exactly minus the sum of its fee legs (a rebate
  counts negative: it adds).

Sums and products run in an unbounded-precision context, so these identities hold exactly.
The one division, the share of cost a partial reduction releases, is rounded to 28 significant
digits; the rounded amount is what is posted, so the books still balance exactly.

``export()`` gives the books as plain JSON (Decimals as exact strings): every balance, every
position, the unvalued fees per asset and the number of entries posted, but not the entries
themselves (a snapshot must not grow with the history). ``Ledger.restore(exported)`` checks that
the balances still sum to zero and agree with the positions, and rebuilds books equal to the
exported ones; its ``entries`` then hold only what is posted after the restore, numbered on from
the exported count. An export without ``unvalued_fees`` (written before fee assets counted) has
none.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import attrs

from contracts.enums import Side
from contracts.execution import FeeKind, fee_kind

ZERO = Decimal(0)
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
"""Sums and products of finite decimals are exact here (never divide in it: 1/3 never ends)."""
_ROUND = decimal.Context(prec=28)
"""Divisions (average prices, released cost) round to 28 significant digits."""

CAPITAL = "capital"
CASH = "cash"
FEES = "fees"


def asset_account(symbol: str) -> str:
    """The account that holds ``symbol``'s base asset at cost."""
    return f"asset:{symbol}"


def realized_account(symbol: str) -> str:
    """The account that collects ``symbol``'s realised price PnL (gains are credits)."""
    return f"realized:{symbol}"


def fee_account(asset: str) -> str:
    """The memo account of fees paid in ``asset``, an asset the books cannot value."""
    return f"fees:{asset}"


_BUY = Side.BUY  # enum members as module constants: each Side.BUY costs an attribute lookup


class FillTerms(NamedTuple):
    """What one fill moves, by the module docstring's rules (``fill_terms``)."""

    kind: FeeKind
    moved: Decimal
    """The position's change: the signed quantity, less a base-coin fee."""
    cash: Decimal
    """The change in cash: ``-signed qty * price``, less a quote fee."""
    fee_value: Decimal
    """The fee leg, in quote: a quote fee as is, a base-coin fee at the fill price, else 0."""


def fill_terms(
    symbol: str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    fee: Decimal,
    *,
    fee_asset: str,
    quote: str,
) -> FillTerms:
    """How a fill is booked in ``quote`` books; ``ValueError`` when its figures cannot be.

    Reports read fills with it as the ledger books them (``Ledger.fill`` posts these terms).
    """
    _check_fill(qty, price, fee)
    ex = _EXACT
    signed = qty if side is _BUY else ex.minus(qty)
    cash = ex.minus(ex.multiply(signed, price))
    kind = fee_kind(symbol, fee_asset, quote) if fee else FeeKind.QUOTE
    if kind is FeeKind.QUOTE:
        return FillTerms(kind, signed, ex.subtract(cash, fee), fee)
    if kind is FeeKind.BASE:
        if ex.abs(fee) >= qty:
            msg = f"a fee of {fee} {fee_asset} takes the whole fill of {qty} {symbol}"
            raise ValueError(msg)
        return FillTerms(kind, ex.subtract(signed, fee), cash, ex.multiply(fee, price))
    return FillTerms(kind, signed, cash, ZERO)


_QUOTE, _OTHER = FeeKind.QUOTE, FeeKind.OTHER


@attrs.frozen
class Leg:
    """One line of an entry: ``amount`` (quote, debit positive) on ``account``.

    ``qty`` is the change in the account's own units: base quantity for an asset leg, the fee's
    asset for a ``fees:ASSET`` memo leg (whose amount is 0), quote for the others (then equal to
    ``amount``).
    """

    account: str
    amount: Decimal
    qty: Decimal


@attrs.frozen
class Entry:
    """A balanced posting: its legs' amounts sum to zero."""

    seq: int
    ts: int
    ref: str
    legs: tuple[Leg, ...]

    def total(self) -> Decimal:
        """The sum of the legs' amounts (zero for every entry the ledger posts)."""
        total = ZERO
        for leg in self.legs:
            total = _EXACT.add(total, leg.amount)
        return total


class Position:
    """One symbol's position; a live view owned by the ledger (read it, never assign to it)."""

    __slots__ = ("avg_price", "cost", "fees", "mark", "qty", "realized", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.qty = ZERO
        """Signed base quantity (negative: short)."""
        self.cost = ZERO
        """Cost basis in quote: what the open quantity cost (negative when short)."""
        self.realized = ZERO
        """Realised price PnL of the symbol so far, gross of fees."""
        self.fees = ZERO
        """Fees paid on the symbol's fills, valued in quote (unvalued ones left out)."""
        self.mark = ZERO
        """The last price seen (a mark, or the last fill when no mark came yet)."""
        self.avg_price = ZERO
        """Average entry price of the open quantity, ``cost / qty`` rounded (0 when flat)."""

    @property
    def value(self) -> Decimal:
        """Mark-to-market value: ``qty * mark``."""
        return _EXACT.multiply(self.qty, self.mark)

    @property
    def unrealized(self) -> Decimal:
        """Unrealised PnL at the mark: ``qty * mark - cost``."""
        return self.unrealized_at(self.mark)

    def unrealized_at(self, price: Decimal) -> Decimal:
        """Unrealised PnL if ``price`` were the mark: ``qty * price - cost``."""
        return _EXACT.subtract(_EXACT.multiply(self.qty, price), self.cost)

    def __repr__(self) -> str:
        return (
            f"Position({self.symbol} qty={self.qty} cost={self.cost} "
            f"realized={self.realized} mark={self.mark})"
        )


class Ledger:
    """The books of one account in one quote currency; see the module docstring."""

    def __init__(self, cash: Decimal, quote: str = "USDT") -> None:
        if not cash.is_finite():
            msg = f"starting cash must be a finite Decimal, got {cash}"
            raise ValueError(msg)
        self.quote = quote
        self.starting_cash = cash
        self.cash = cash
        self.fees = ZERO
        """Fees paid, valued in quote (quote fees, and base fees at their fill prices)."""
        self.unvalued_fees: dict[str, Decimal] = {}
        """Fees paid in assets the books cannot value, per asset (upper case), in that asset."""
        self.realized = ZERO
        self.entries: list[Entry] = []
        """The entries posted by this object (after a restore: since the restore)."""
        self.posted = 0
        """How many entries the books hold, the opening one included; the next entry's seq."""
        self._positions: dict[str, Position] = {}
        self._balances: dict[str, Decimal] = {}
        self._accounts: dict[str, tuple[str, str]] = {}
        """Per symbol, the names of its asset and realized accounts (made once)."""
        credit = _EXACT.minus(cash)
        self._post(0, "opening", (Leg(CASH, cash, cash), Leg(CAPITAL, credit, credit)))

    # -- reading -------------------------------------------------------------------------

    def position(self, symbol: str) -> Position:
        """``symbol``'s position (a detached flat one when it never traded or was marked)."""
        pos = self._positions.get(symbol)
        return Position(symbol) if pos is None else pos

    def positions(self) -> Iterator[Position]:
        """Every symbol that ever traded or was marked, flat ones included."""
        return iter(self._positions.values())

    def open_positions(self) -> Iterator[Position]:
        """The non-zero positions."""
        return (p for p in self._positions.values() if p.qty)

    @property
    def balances(self) -> Mapping[str, Decimal]:
        """Every account's balance in quote (debit positive); they sum to zero."""
        return self._balances

    def market_value(self, marks: Mapping[str, Decimal] | None = None) -> Decimal:
        """``sum(qty * mark)`` over the open positions; ``marks`` overrides some marks."""
        total = ZERO
        for pos in self._positions.values():
            if pos.qty:
                mark = pos.mark if marks is None else marks.get(pos.symbol, pos.mark)
                total = _EXACT.add(total, _EXACT.multiply(pos.qty, mark))
        return total

    def unrealized(self) -> Decimal:
        """Unrealised PnL over every position at its mark."""
        total = ZERO
        for pos in self._positions.values():
            if pos.qty:
                total = _EXACT.add(total, pos.unrealized)
        return total

    def equity(self, marks: Mapping[str, Decimal] | None = None) -> Decimal:
        """``cash + sum(qty * mark)``; ``marks`` overrides some marks (the books keep theirs)."""
        return _EXACT.add(self.cash, self.market_value(marks))

    def fee_kind(self, symbol: str, fee_asset: str) -> FeeKind:
        """How a fee in ``fee_asset`` on a fill of ``symbol`` is booked ("" means quote)."""
        return fee_kind(symbol, fee_asset, self.quote)

    def valuation(self, symbol: str) -> tuple[Position, Decimal, Decimal]:
        """``symbol``'s position, its unrealised PnL and the equity, in one pass."""
        ex = _EXACT
        target = self._positions.get(symbol) or Position(symbol)
        equity, unrealized = self.cash, ZERO
        for pos in self._positions.values():
            if pos.qty:
                value = ex.multiply(pos.qty, pos.mark)
                equity = ex.add(equity, value)
                if pos is target:
                    unrealized = ex.subtract(value, pos.cost)
        return target, unrealized, equity

    # -- writing -------------------------------------------------------------------------

    def mark(self, symbol: str, price: Decimal) -> None:
        """Take ``price`` as ``symbol``'s mark (no entry: marks move no money)."""
        (self._positions.get(symbol) or self._position(symbol)).mark = price

    def fill(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        fee: Decimal = ZERO,
        *,
        fee_asset: str = "",
        ts: int = 0,
        ref: str = "",
    ) -> Entry:
        """Book a fill of ``qty`` (> 0) at ``price`` (> 0) paying ``fee`` in ``fee_asset``.

        ``fee`` is finite; a negative one is a rebate. ``fee_asset`` is the quote currency when
        empty; a fee in the base asset must be smaller than ``qty`` in size; see the module
        docstring for each kind. Returns the posted entry. The fill price becomes the mark when
        none was seen yet.
        """
        terms = fill_terms(symbol, side, qty, price, fee, fee_asset=fee_asset, quote=self.quote)
        kind, moved, cash_amount, fee_value = terms
        ex = _EXACT
        pos = self._positions.get(symbol) or self._position(symbol)
        accounts = self._accounts.get(symbol)
        if accounts is None:
            accounts = self._accounts[symbol] = (asset_account(symbol), realized_account(symbol))
        old = pos.qty
        if old == 0 or (old > 0) == (moved > 0):
            closing = ZERO
        else:
            closing = moved if ex.abs(moved) <= ex.abs(old) else ex.minus(old)
        opening = ex.subtract(moved, closing)
        asset_amount = ex.multiply(opening, price)
        if closing:
            if closing == ex.minus(old):
                released = ex.minus(pos.cost)  # the whole cost leaves: no rounding
            else:
                released = _ROUND.divide(ex.multiply(pos.cost, closing), old)
            asset_amount = ex.add(asset_amount, released)
            realized_amount = ex.subtract(ex.multiply(closing, price), released)
            legs = [
                Leg(accounts[0], asset_amount, moved),
                Leg(CASH, cash_amount, cash_amount),
                Leg(FEES, fee_value, fee_value),
                Leg(accounts[1], realized_amount, realized_amount),
            ]
            gain = ex.minus(realized_amount)
            pos.realized = ex.add(pos.realized, gain)
            self.realized = ex.add(self.realized, gain)
        else:
            legs = [
                Leg(accounts[0], asset_amount, moved),
                Leg(CASH, cash_amount, cash_amount),
                Leg(FEES, fee_value, fee_value),
            ]
        if kind is _OTHER:
            asset = fee_asset.upper()
            legs.append(Leg(fee_account(asset), ZERO, fee))
            unvalued = self.unvalued_fees
            unvalued[asset] = ex.add(unvalued.get(asset, ZERO), fee)
        pos.qty = ex.add(old, moved)
        pos.cost = ex.add(pos.cost, asset_amount)
        pos.avg_price = _ROUND.divide(pos.cost, pos.qty) if pos.qty else ZERO
        pos.fees = ex.add(pos.fees, fee_value)
        if not pos.mark:
            pos.mark = price
        self.cash = ex.add(self.cash, cash_amount)
        self.fees = ex.add(self.fees, fee_value)
        return self._post(ts, ref, tuple(legs))

    def _position(self, symbol: str) -> Position:
        pos = self._positions.get(symbol)
        if pos is None:
            pos = self._positions[symbol] = Position(symbol)
        return pos

    def _post(self, ts: int, ref: str, legs: tuple[Leg, ...]) -> Entry:
        entry = Entry(self.posted, ts, ref, legs)
        balances, add = self._balances, _EXACT.add
        for leg in legs:
            account = leg.account
            balances[account] = add(balances.get(account, ZERO), leg.amount)
        self.entries.append(entry)
        self.posted += 1
        return entry

    # -- state ---------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The books as JSON-able data (Decimals as exact strings); see the module docstring."""
        return {
            "quote": self.quote,
            "starting_cash": str(self.starting_cash),
            "cash": str(self.cash),
            "fees": str(self.fees),
            "unvalued_fees": {asset: str(fee) for asset, fee in self.unvalued_fees.items()},
            "realized": str(self.realized),
            "entries": self.posted,
            "balances": {account: str(amount) for account, amount in self._balances.items()},
            "positions": {
                pos.symbol: {
                    "qty": str(pos.qty),
                    "cost": str(pos.cost),
                    "avg_price": str(pos.avg_price),
                    "realized": str(pos.realized),
                    "fees": str(pos.fees),
                    "mark": str(pos.mark),
                }
                for pos in self._positions.values()
            },
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> Ledger:
        """Books equal to exported ones; ``ValueError`` naming what does not add up."""
        ledger = cls(_decimal(state, "starting_cash"), str(state["quote"]))
        ledger.entries = []
        ledger.posted = int(state["entries"])
        ledger.cash = _decimal(state, "cash")
        ledger.fees = _decimal(state, "fees")
        unvalued = state.get("unvalued_fees", {})  # absent from exports older than fee assets
        ledger.unvalued_fees = {str(k): _decimal(unvalued, k) for k in unvalued}
        ledger.realized = _decimal(state, "realized")
        balances = state["balances"]
        ledger._balances = {str(k): _decimal(balances, k) for k in balances}
        positions = state["positions"]
        for symbol in positions:
            fields = positions[symbol]
            pos = ledger._position(str(symbol))
            pos.qty = _decimal(fields, "qty")
            pos.cost = _decimal(fields, "cost")
            pos.avg_price = _decimal(fields, "avg_price")
            pos.realized = _decimal(fields, "realized")
            pos.fees = _decimal(fields, "fees")
            pos.mark = _decimal(fields, "mark")
        ledger._check()
        return ledger

    def _check(self) -> None:
        """Raise ``ValueError`` unless the balances and the positions tell the same story."""
        ex = _EXACT
        balances = self._balances
        problems: list[str] = []
        total = ZERO
        for amount in balances.values():
            total = ex.add(total, amount)
        if total:
            problems.append(f"the balances sum to {total}, not 0")
        expected = {
            CAPITAL: ex.minus(self.starting_cash),
            CASH: self.cash,
            FEES: self.fees,
        }
        for asset in self.unvalued_fees:
            expected[fee_account(asset)] = ZERO  # a memo account: its legs carry no quote
            if fee_account(asset) not in balances:  # any sign: rebates may outweigh fees
                problems.append(f"unvalued fees in {asset} without a {fee_account(asset)} posting")
        realized = fees = ZERO
        for pos in self._positions.values():
            expected[asset_account(pos.symbol)] = pos.cost
            expected[realized_account(pos.symbol)] = ex.minus(pos.realized)
            realized = ex.add(realized, pos.realized)
            fees = ex.add(fees, pos.fees)
            if not pos.qty and pos.cost:
                problems.append(f"{pos.symbol} is flat but carries a cost of {pos.cost}")
        for account, amount in expected.items():
            if balances.get(account, ZERO) != amount:
                got = balances.get(account, ZERO)
                problems.append(f"account {account} holds {got}, the books say {amount}")
        strays = sorted(set(balances) - set(expected))
        if strays:
            problems.append(f"accounts no position or fee explains: {', '.join(strays)}")
        if realized != self.realized:
            problems.append(f"realized is {self.realized}, the positions sum to {realized}")
        if fees != self.fees:
            problems.append(f"fees are {self.fees}, the positions paid {fees}")
        if problems:
            raise ValueError("ledger state does not add up: " + "; ".join(problems))


def _check_fill(qty: Decimal, price: Decimal, fee: Decimal) -> None:
    """Raise ``ValueError`` unless ``qty`` and ``price`` are > 0 and all three are finite."""
    if not (qty.is_finite() and qty > 0):
        msg = f"fill qty must be > 0, got {qty}"
        raise ValueError(msg)
    if not (price.is_finite() and price > 0):
        msg = f"fill price must be > 0, got {price}"
        raise ValueError(msg)
    if not fee.is_finite():
        msg = f"a fee must be finite (negative: a rebate), got {fee}"
        raise ValueError(msg)


def _decimal(fields: Mapping[str, Any], key: str) -> Decimal:
    """``fields[key]``, an exported Decimal string, as a finite Decimal."""
    value = fields[key]
    if not isinstance(value, str):
        msg = f"{key}: expected a decimal string, got {value!r}"
        raise TypeError(msg)
    try:
        number = Decimal(value)
    except decimal.InvalidOperation:
        msg = f"{key}: {value!r} is not a decimal number"
        raise ValueError(msg) from None
    if not number.is_finite():
        msg = f"{key}: {value!r} is not a finite number"
        raise ValueError(msg)
    return number
