"""DriftWatch: compare what the venue says the account holds with what the portfolio booked.

The Bybit venue feeds it two views and asks it to alert when they part:

* **the venue's**: the private stream's ``position`` records (the signed size per symbol and
  ``positionIdx``, summed per symbol, so a hedge-mode account's two sides net out) and
  ``wallet`` records (the quote coin's ``walletBalance``);
* **ours**: every ``portfolio:position_update`` (the quantity per symbol; the account's equity,
  cash and each symbol's unrealised PnL).

**Positions** are compared per symbol the venue has reported, quantity against quantity,
exactly. **The wallet** is compared by change since a baseline (the portfolio's starting cash is
configuration, not the venue's balance): the venue's balance less the baseline balance against
our figure less the baseline figure, within ``tolerance`` (quote). Our figure is what the
balance moves with: cash for spot (cash accounting, fees in quote), and for derivatives
(``settled``) the balance that fills realise, ``equity - sum(unrealised)``: starting cash plus
realised PnL less fees. The baseline is set by ``wallet_baseline()`` (the venue asks Bybit's
REST wallet after each resync) or else by the first ``wallet`` record.

A difference is alerted only once it has lasted ``grace_s`` with neither side changing the
figures compared (a fill on its way is booked within that time), and once per difference: the
same pair of figures is not alerted twice; agreement ends it (logged
``drift.resolved``). The alert says what each side holds; nothing is ever booked from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final

import structlog

from contracts.execution import PositionUpdate

log = structlog.get_logger("planes.execution.drift")

WALLET: Final = "wallet"
POSITION_CODE: Final = "position_drift"
WALLET_CODE: Final = "wallet_drift"
_ZERO = Decimal(0)

AlertSink = Callable[[str, str, Mapping[str, str]], None]
"""``(code, message, labels)``: publish one drift alert."""


class DriftWatch:
    """See the module docstring."""

    def __init__(
        self,
        *,
        venue: str,
        quote: str,
        start_cash: Decimal,
        settled: bool,
        grace_s: float,
        tolerance: Decimal,
        alert: AlertSink,
    ) -> None:
        self.venue = venue
        self.quote = quote
        self._settled = settled
        self._grace_s = grace_s
        self._tolerance = tolerance
        self._alert = alert
        self._venue_qty: dict[str, dict[int, Decimal]] = {}
        self._ours_qty: dict[str, Decimal] = {}
        self._unrealized: dict[str, Decimal] = {}
        self._equity = start_cash
        self._cash = start_cash
        self._wallet: Decimal | None = None
        self._base: tuple[Decimal, Decimal] | None = None
        """``(venue balance, our figure)`` when the wallet comparison started."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._alerted: dict[str, tuple[Decimal, Decimal]] = {}
        self.alerts = 0
        self.checks = 0

    # -- the venue's view ----------------------------------------------------------------

    def venue_position(self, symbol: str, position_idx: int, qty: Decimal) -> None:
        """Take the venue's signed size of ``symbol`` on one ``positionIdx``."""
        sides = self._venue_qty.get(symbol)
        first = sides is None
        if sides is None:
            sides = self._venue_qty[symbol] = {}
        before = sum(sides.values(), _ZERO)
        sides[position_idx] = qty
        if first or sum(sides.values(), _ZERO) != before:  # a repeated figure does not re-arm
            self._arm(symbol)

    def venue_wallet(self, balance: Decimal) -> None:
        """Take the venue's balance of the quote coin (the first one is the baseline if none)."""
        if self._base is None:
            self.wallet_baseline(balance)
            return
        if balance != self._wallet:
            self._wallet = balance
            self._arm(WALLET)

    def wallet_baseline(self, balance: Decimal) -> None:
        """Start the wallet comparison over: ``balance`` now matches what we hold now."""
        self._wallet = balance
        self._base = (balance, self._ours_wallet())
        self._alerted.pop(WALLET, None)
        log.debug("drift.wallet_baseline", balance=str(balance), ours=str(self._base[1]))

    # -- ours ----------------------------------------------------------------------------

    def portfolio(self, update: PositionUpdate) -> None:
        """Take a ``portfolio:position_update``."""
        symbol = update.symbol
        wallet_before = self._ours_wallet()
        qty_before = self._ours_qty.get(symbol, _ZERO)
        self._ours_qty[symbol] = update.qty
        self._unrealized[symbol] = update.unrealized_pnl
        self._equity = update.equity
        self._cash = update.cash
        if symbol in self._venue_qty and update.qty != qty_before:
            self._arm(symbol)
        if self._base is not None and self._ours_wallet() != wallet_before:
            self._arm(WALLET)

    def stop(self) -> None:
        """Cancel the pending checks."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- checking ------------------------------------------------------------------------

    def check(self, key: str) -> None:
        """Compare one symbol (or ``WALLET``) now; alert a new difference."""
        self._timers.pop(key, None)
        self.checks += 1
        if key == WALLET:
            self._check_wallet()
        else:
            self._check_position(key)

    def _check_position(self, symbol: str) -> None:
        theirs = sum(self._venue_qty.get(symbol, {}).values(), _ZERO)
        ours = self._ours_qty.get(symbol, _ZERO)
        if theirs == ours:
            self._resolved(symbol, theirs, ours)
            return
        if self._alerted.get(symbol) == (theirs, ours):
            return
        self._alerted[symbol] = (theirs, ours)
        message = (
            f"{self.venue} holds a position of {theirs} {symbol}, the portfolio {ours} "
            f"(for {self._grace_s:g} s): fills missed or booked twice, or a trade elsewhere; "
            "nothing booked"
        )
        self._raise(POSITION_CODE, message, {"symbol": symbol})

    def _check_wallet(self) -> None:
        if self._base is None or self._wallet is None:
            return
        base_theirs, base_ours = self._base
        theirs = self._wallet - base_theirs
        ours = self._ours_wallet() - base_ours
        if abs(theirs - ours) <= self._tolerance:
            self._resolved(WALLET, theirs, ours)
            return
        if self._alerted.get(WALLET) == (theirs, ours):
            return
        self._alerted[WALLET] = (theirs, ours)
        what = "settled balance" if self._settled else "cash"
        message = (
            f"the {self.venue} {self.quote} wallet balance moved by {theirs} since the baseline, "
            f"the portfolio's {what} by {ours} (difference {theirs - ours}, tolerance "
            f"{self._tolerance}): funding, a transfer, or fills not booked; nothing booked"
        )
        self._raise(WALLET_CODE, message, {"asset": self.quote})

    def _raise(self, code: str, message: str, labels: Mapping[str, str]) -> None:
        self.alerts += 1
        log.warning("drift.detected", code=code, message=message, **labels)
        self._alert(code, message, labels)

    def _resolved(self, key: str, theirs: Decimal, ours: Decimal) -> None:
        if self._alerted.pop(key, None) is not None:
            log.info("drift.resolved", key=key, venue=str(theirs), ours=str(ours))

    def _arm(self, key: str) -> None:
        """Check ``key`` once ``grace_s`` passed without another change to it."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self._grace_s, self.check, key)

    def _ours_wallet(self) -> Decimal:
        if not self._settled:
            return self._cash
        return self._equity - sum(self._unrealized.values(), _ZERO)
