"""A Decimal double-entry ledger of one trading account, with positions and PnL.

Accounts, each with a balance in the quote currency (debits positive, credits negative):

==================  ================================================================
``capital``         the owner's stake; credited with the starting cash
``cash``            the quote currency on hand (goes negative when buying on margin)
``asset:SYMBOL``    the base asset of a symbol, carried at cost; negative when short
``realized:SYMBOL`` price PnL realised on the symbol; credited with gains
``fees``            trading fees paid; only ever debited
==================  ================================================================

Every fill posts one ``Entry`` whose legs sum to zero in quote terms:

* the **asset leg** moves the symbol's quantity by the signed fill quantity; its amount is the
  cost that enters (``qty * price`` for the part that opens or adds) or leaves (the average cost
  of the part that reduces);
* the **quote leg** moves cash by ``-signed_qty * price - fee`` (the fee is paid from cash);
* the **fee leg** debits ``fees`` with the fee;
* the **realized leg**, only when the fill reduces a position, credits the gain: the proceeds
  of the reducing part minus the cost it releases (average-cost method). A fill that flips a
  position closes the old side at its average cost and opens the rest at the fill price.

Cash accounting is spot-like for both sides: selling short credits cash, buying back debits it.
Hence, with ``mark`` the last price seen per symbol:

* ``unrealized_pnl = qty * mark - cost``;
* ``equity = cash + sum(qty * mark)``, which always equals
  ``starting cash + realized - fees + unrealized`` (the balances sum to zero).

Sums and products run in an unbounded-precision context, so these identities hold exactly.
The one division, the share of cost a partial reduction releases, is rounded to 28 significant
digits; the rounded amount is what is posted, so the books still balance exactly.

``export()`` gives the books as plain JSON (Decimals as exact strings): every balance, every
position and the number of entries posted, but not the entries themselves (a snapshot must not
grow with the history). ``Ledger.restore(exported)`` checks that the balances still sum to zero
and agree with the positions, and rebuilds books equal to the exported ones; its ``entries``
then hold only what is posted after the restore, numbered on from the exported count.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import attrs

from contracts.enums import Side

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


@attrs.frozen
class Leg:
    """One line of an entry: ``amount`` (quote, debit positive) on ``account``.

    ``qty`` is the change in the account's own units: base quantity for an asset leg, quote for
    the others (then equal to ``amount``).
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
        """Fees paid on the symbol's fills."""
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
        self.realized = ZERO
        self.entries: list[Entry] = []
        """The entries posted by this object (after a restore: since the restore)."""
        self.posted = 0
        """How many entries the books hold, the opening one included; the next entry's seq."""
        self._positions: dict[str, Position] = {}
        self._balances: dict[str, Decimal] = {}
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

    def valuation(self, symbol: str) -> tuple[Position, Decimal, Decimal]:
        """``symbol``'s position, its unrealised PnL and the equity, in one pass."""
        ex = _EXACT
        target = self.position(symbol)
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
        self._position(symbol).mark = price

    def fill(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        fee: Decimal = ZERO,
        *,
        ts: int = 0,
        ref: str = "",
    ) -> Entry:
        """Book a fill of ``qty`` (> 0) at ``price`` (> 0) paying ``fee`` (>= 0) in quote.

        Returns the posted entry. The fill price becomes the mark when none was seen yet.
        """
        if not (qty.is_finite() and qty > 0):
            msg = f"fill qty must be > 0, got {qty}"
            raise ValueError(msg)
        if not (price.is_finite() and price > 0):
            msg = f"fill price must be > 0, got {price}"
            raise ValueError(msg)
        if not (fee.is_finite() and fee >= 0):
            msg = f"fees are never negative, got {fee}"
            raise ValueError(msg)
        ex = _EXACT
        pos = self._position(symbol)
        signed = qty if side is Side.BUY else ex.minus(qty)
        old = pos.qty
        if old == 0 or (old > 0) == (signed > 0):
            closing = ZERO
        else:
            closing = signed if ex.abs(signed) <= ex.abs(old) else ex.minus(old)
        opening = ex.subtract(signed, closing)
        legs: list[Leg] = []
        asset_amount = ex.multiply(opening, price)
        if closing:
            if closing == ex.minus(old):
                released = ex.minus(pos.cost)  # the whole cost leaves: no rounding
            else:
                released = _ROUND.divide(ex.multiply(pos.cost, closing), old)
            asset_amount = ex.add(asset_amount, released)
            realized_amount = ex.subtract(ex.multiply(closing, price), released)
            legs.append(Leg(realized_account(symbol), realized_amount, realized_amount))
            gain = ex.minus(realized_amount)
            pos.realized = ex.add(pos.realized, gain)
            self.realized = ex.add(self.realized, gain)
        cash_amount = ex.subtract(ex.minus(ex.multiply(signed, price)), fee)
        legs[:0] = (
            Leg(asset_account(symbol), asset_amount, signed),
            Leg(CASH, cash_amount, cash_amount),
            Leg(FEES, fee, fee),
        )
        pos.qty = ex.add(old, signed)
        pos.cost = ex.add(pos.cost, asset_amount)
        pos.avg_price = _ROUND.divide(pos.cost, pos.qty) if pos.qty else ZERO
        pos.fees = ex.add(pos.fees, fee)
        if not pos.mark:
            pos.mark = price
        self.cash = ex.add(self.cash, cash_amount)
        self.fees = ex.add(self.fees, fee)
        return self._post(ts, ref, tuple(legs))

    def _position(self, symbol: str) -> Position:
        pos = self._positions.get(symbol)
        if pos is None:
            pos = self._positions[symbol] = Position(symbol)
        return pos

    def _post(self, ts: int, ref: str, legs: tuple[Leg, ...]) -> Entry:
        entry = Entry(self.posted, ts, ref, legs)
        balances = self._balances
        for leg in legs:
            balances[leg.account] = _EXACT.add(balances.get(leg.account, ZERO), leg.amount)
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
            problems.append(f"accounts without a position: {', '.join(strays)}")
        if realized != self.realized:
            problems.append(f"realized is {self.realized}, the positions sum to {realized}")
        if fees != self.fees:
            problems.append(f"fees are {self.fees}, the positions paid {fees}")
        if problems:
            raise ValueError("ledger state does not add up: " + "; ".join(problems))


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
