"""DriftWatch: compare what the venue says the account holds with what the portfolio booked.

The Bybit venue feeds it two views and asks it to alert when they part:

* **the venue's**: for ``linear``, the private stream's ``position`` records (the signed size
  per symbol and ``positionIdx``, summed per symbol, so a hedge-mode account's two sides net
  out); for ``spot``, where a symbol's position is the balance of its base coin (``BTC`` for
  ``BTCUSDT``), the ``wallet`` records' per-coin ``walletBalance``. Both kinds also have the
  quote coin's ``walletBalance``. At each resync the venue adds a **listing**: every position
  (linear) or every coin balance (spot) Bybit holds, from its REST API;
* **ours**: every ``portfolio:position_update`` (the quantity per symbol; the account's equity,
  cash and each symbol's unrealised PnL).

**Positions** are compared per symbol, quantity against quantity, exactly: for linear, the
venue's summed size; for spot, the venue's balance of the symbol's base coin (the symbol less
``quote``: a symbol without that suffix has no base coin to compare and is left out). Spot
compares the base coins of ``symbols`` (what the bot may trade) and of every symbol the
portfolio reported; other coins in the wallet (dust, airdrops, other quote coins) are not ours
to compare. A symbol the venue has **not reported** (no record pushed, not in a listing) is
compared only once a complete listing came: what a complete listing leaves out is flat there,
and from then on a symbol the venue never reports counts as 0 (Bybit pushes a position, or a
wallet balance, with every fill: a position we opened that Bybit did not report within the
grace period is one Bybit does not have). Before that, no report is no view, not a zero view.
A complete listing replaces the venue's view; a partial one (the venue found a record it could
not use) and a pushed record update what they list. A push that comes while a listing is on
its way (``begin_listing()``) keeps its figure: it is at least as new as the listing.

**The wallet** is compared by change since a baseline (the portfolio's starting cash is
configuration, not the venue's balance): the venue's balance less the baseline balance against
our figure less the baseline figure, within ``tolerance`` (quote). Our figure is what the
balance moves with: cash for spot (cash accounting, fees in quote), and for derivatives the
settled balance that fills realise, ``equity - sum(unrealised)``: starting cash plus realised
PnL less fees. The baseline is set by ``wallet_baseline()`` (the venue asks Bybit's REST wallet
after each resync) or else by the first ``wallet`` record.

**A restart** (``recovering``: storage is on, so the boot recovers the portfolio's books): the
venue's first resync runs while the venue starts, before the Orchestrator asks for recovery,
and our figure then is still ``start_cash``; the recovered books reach us later (the
``portfolio:position_update`` announcements of recovery). A baseline taken then would count
the step from ``start_cash`` to the recovered books as a change of ours that the venue's
balance does not have. So until ``books_recovered()`` (the venue calls it on
``state:recovery``) both views are kept and nothing is compared; the wallet comparison then
starts from the venue's balance as last heard and our recovered figure, and every symbol is
checked after the grace period. Positions are compared absolutely: only a recovery slower
than ``grace_s`` could have compared them with books not announced yet; they wait all the same.

A difference is alerted (``WARNING``) only once it has lasted ``grace_s`` with neither side
changing the figures compared (a fill on its way is booked within that time), and once per
difference: the same pair of figures is not alerted twice, a new pair is. A drift ends when the
figures agree again, or (the wallet) when a new baseline starts the comparison over; its end is
alerted once (``INFO``, the code with ``_resolved``, the drift's labels plus ``ended_by``
``agreement`` or ``new_baseline``), however many alerts the drift had, and logged
``drift.resolved``. The alerts say what each side holds; nothing is ever booked from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Final

import attrs
import structlog

from contracts.enums import Severity
from contracts.execution import PositionUpdate, base_asset

log = structlog.get_logger("planes.execution.drift")

WALLET: Final = "wallet"
POSITION_CODE: Final = "position_drift"
WALLET_CODE: Final = "wallet_drift"
RESOLVED: Final = "_resolved"
"""Added to a drift's code for the alert that it ended."""
POSITION_RESOLVED_CODE: Final = POSITION_CODE + RESOLVED
WALLET_RESOLVED_CODE: Final = WALLET_CODE + RESOLVED
AGREEMENT: Final = "agreement"
NEW_BASELINE: Final = "new_baseline"
_ZERO = Decimal(0)

AlertSink = Callable[[Severity, str, str, Mapping[str, str]], None]
"""``(severity, code, message, labels)``: publish one drift alert."""


@attrs.define
class _Drift:
    """A difference alerted and not ended yet."""

    theirs: Decimal
    ours: Decimal
    alerts: int = 1


class DriftWatch:
    """See the module docstring."""

    def __init__(
        self,
        *,
        venue: str,
        quote: str,
        start_cash: Decimal,
        spot: bool,
        grace_s: float,
        tolerance: Decimal,
        alert: AlertSink,
        symbols: Iterable[str] = (),
        recovering: bool = False,
    ) -> None:
        self.venue = venue
        self.quote = quote
        self._spot = spot
        self._grace_s = grace_s
        self._tolerance = tolerance
        self._alert = alert
        self._symbols: set[str] = set(symbols)
        """Spot: the symbols whose base coins are compared (grows with the portfolio's)."""
        self._venue_qty: dict[str, dict[int, Decimal]] = {}
        self._coins: dict[str, Decimal] = {}
        """Spot: the venue's balance per coin (upper case), the quote coin left out."""
        self._listed = False
        """A complete listing came: a symbol the venue has not reported is flat there."""
        self._pushed: set[str] | None = None
        """Symbols (linear) or coins (spot) pushed since ``begin_listing()``; None: no listing
        asked for."""
        self._ours_qty: dict[str, Decimal] = {}
        self._unrealized: dict[str, Decimal] = {}
        self._equity = start_cash
        self._cash = start_cash
        self._wallet: Decimal | None = None
        self._base: tuple[Decimal, Decimal] | None = None
        """``(venue balance, our figure)`` when the wallet comparison started."""
        self._recovering = recovering
        """The portfolio's books are not whole yet (boot recovery): nothing is compared."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._alerted: dict[str, _Drift] = {}
        self.alerts = 0
        """Drift alerts raised."""
        self.resolved = 0
        """Drift-ended alerts raised."""
        self.checks = 0

    # -- the venue's view ----------------------------------------------------------------

    def venue_position(self, symbol: str, position_idx: int, qty: Decimal) -> None:
        """Take the venue's signed size of ``symbol`` on one ``positionIdx`` (linear only).

        Ignored by a spot watch: a spot account's positions are its coin balances.
        """
        if self._spot:
            return
        sides = self._venue_qty.get(symbol)
        first = sides is None
        if sides is None:
            sides = self._venue_qty[symbol] = {}
        if self._pushed is not None:
            self._pushed.add(symbol)
        before = sum(sides.values(), _ZERO)
        sides[position_idx] = qty
        if first or sum(sides.values(), _ZERO) != before:  # a repeated figure does not re-arm
            self._arm(symbol)

    def venue_balances(self, balances: Mapping[str, Decimal]) -> None:
        """Take a pushed ``wallet`` record's coin balances (spot: a base coin's is a position).

        Only the coins it lists change (a coin it leaves out is not 0). The quote coin is left
        out (``venue_wallet`` has it). Ignored by a linear watch.
        """
        if not self._spot:
            return
        coins = self._non_quote(balances)
        changed = {coin for coin, qty in coins.items() if self._coins.get(coin) != qty}
        self._coins.update(coins)
        if self._pushed is not None:
            self._pushed.update(coins)
        for symbol in sorted(self._symbols):
            if self._coin(symbol) in changed:
                self._arm(symbol)

    def begin_listing(self) -> None:
        """Say a listing was asked for: what is pushed from now on may be newer than it.

        A symbol (a coin) pushed between this call and the listing keeps its pushed figure:
        the push is at least as new as the listing, and any later change is pushed too.
        """
        self._pushed = set()

    def listed_positions(
        self, listing: Mapping[str, Mapping[int, Decimal]], *, complete: bool
    ) -> None:
        """Take a listing of the venue's positions (size per symbol and positionIdx).

        ``complete`` (every record of the listing was usable): it replaces the venue's view,
        so a symbol it leaves out is flat, and from now on so is a symbol the venue never
        reports; else it updates the symbols it lists. Symbols pushed since
        ``begin_listing()`` keep their pushed figures. Every symbol either side knows is
        checked again. Ignored by a spot watch.
        """
        if self._spot:
            return
        pushed, self._pushed = self._pushed or set(), None
        before = set(self._venue_qty)
        view = {} if complete else self._venue_qty
        for symbol, sides in listing.items():
            if symbol not in pushed:
                view[symbol] = dict(sides)
        for symbol in pushed:
            view[symbol] = self._venue_qty[symbol]
        self._venue_qty = view
        self._listed = self._listed or complete
        for symbol in sorted(before | set(view) | set(self._ours_qty)):
            self._arm(symbol)

    def listed_balances(self, balances: Mapping[str, Decimal], *, complete: bool) -> None:
        """Take a listing of the account's coin balances (spot), as ``listed_positions``.

        ``complete``: it lists every coin the account holds (the REST wallet at a resync), so
        a coin it leaves out is 0. The quote coin is left out. Ignored by a linear watch.
        """
        if not self._spot:
            return
        pushed, self._pushed = self._pushed or set(), None
        coins = {} if complete else self._coins
        for coin, qty in self._non_quote(balances).items():
            if coin not in pushed:
                coins[coin] = qty
        for coin in pushed:
            coins[coin] = self._coins[coin]
        self._coins = coins
        self._listed = self._listed or complete
        for symbol in sorted(self._symbols):
            self._arm(symbol)

    def venue_wallet(self, balance: Decimal) -> None:
        """Take the venue's balance of the quote coin (the first one is the baseline if none)."""
        if self._base is None and not self._recovering:
            self.wallet_baseline(balance)
            return
        if balance != self._wallet:
            self._wallet = balance
            self._arm(WALLET)

    def wallet_baseline(self, balance: Decimal) -> None:
        """Start the wallet comparison over: ``balance`` now matches what we hold now.

        A wallet drift alerted until now ends here (``ended_by`` ``new_baseline``). While the
        books are being recovered, ``balance`` is only kept: ``books_recovered()`` starts the
        comparison from it (or from a balance pushed since).
        """
        self._wallet = balance
        if self._recovering:
            log.debug("drift.wallet_baseline_held", balance=str(balance))
            return
        self._base = (balance, self._ours_wallet())
        log.debug("drift.wallet_baseline", balance=str(balance), ours=str(self._base[1]))
        drift = self._alerted.pop(WALLET, None)
        if drift is None:
            return
        message = (
            f"the {self.venue} {self.quote} wallet drift ended by a new baseline "
            f"({self.venue}'s balance {balance} after a resync): the difference of "
            f"{drift.theirs - drift.ours} since the old baseline is not explained, only no "
            f"longer compared ({_times(drift.alerts)}); nothing booked"
        )
        self._end(WALLET, WALLET_RESOLVED_CODE, message, self._labels(WALLET), NEW_BASELINE)

    def books_recovered(self) -> None:
        """Start comparing: the portfolio's books are whole (boot recovery announced them).

        Until now (``recovering``) both views were kept and nothing was compared. The wallet
        comparison starts from the venue's balance as last heard (a resync's REST wallet, or a
        record pushed since) against our figure now; with none heard yet, the next resync or
        ``wallet`` record is the baseline. Every symbol either side knows is checked once
        ``grace_s`` passes. Called again, it does nothing.
        """
        if not self._recovering:
            return
        self._recovering = False
        if self._wallet is not None:
            self.wallet_baseline(self._wallet)
        for symbol in sorted(self._symbols | set(self._venue_qty)):
            self._arm(symbol)

    # -- ours ----------------------------------------------------------------------------

    def portfolio(self, update: PositionUpdate) -> None:
        """Take a ``portfolio:position_update``."""
        symbol = update.symbol
        wallet_before = self._ours_wallet()
        qty_before = self._ours_qty.get(symbol, _ZERO)
        self._symbols.add(symbol)
        self._ours_qty[symbol] = update.qty
        self._unrealized[symbol] = update.unrealized_pnl
        self._equity = update.equity
        self._cash = update.cash
        if update.qty != qty_before and self._view(symbol) is not None:
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
        """Compare one symbol (or ``WALLET``) now; alert a new difference, or its end.

        Nothing is compared while the books are being recovered.
        """
        self._timers.pop(key, None)
        if self._recovering:
            return
        self.checks += 1
        if key == WALLET:
            self._check_wallet()
        else:
            self._check_position(key)

    def _view(self, symbol: str) -> tuple[Decimal, bool] | None:
        """The venue's quantity of ``symbol`` and whether it reported it; None: no view."""
        if self._spot:
            coin = self._coin(symbol)
            if not coin:
                return None
            qty = self._coins.get(coin)
        else:
            sides = self._venue_qty.get(symbol)
            qty = None if sides is None else sum(sides.values(), _ZERO)
        if qty is not None:
            return qty, True
        return (_ZERO, False) if self._listed else None

    def _check_position(self, symbol: str) -> None:
        view = self._view(symbol)
        if view is None:
            return
        theirs, reported = view
        ours = self._ours_qty.get(symbol, _ZERO)
        labels = self._labels(symbol)
        if theirs == ours:
            drift = self._alerted.pop(symbol, None)
            if drift is not None:
                message = (
                    f"the {symbol} position drift ended: {self._venue_side(symbol)} and the "
                    f"portfolio's position are both {ours} ({_times(drift.alerts)}); "
                    "nothing booked"
                )
                self._end(symbol, POSITION_RESOLVED_CODE, message, labels, AGREEMENT)
            return
        if not self._note(symbol, theirs, ours):
            return
        venue, coin, grace = self.venue, self._coin(symbol), f"for {self._grace_s:g} s"
        if self._spot and reported:
            message = (
                f"{venue} holds {theirs} {coin} (the base coin of {symbol}), the portfolio a "
                f"position of {ours} {symbol} ({grace}): fills missed or booked twice, a trade "
                "elsewhere, or a deposit or withdrawal"
            )
        elif self._spot:
            message = (
                f"{venue} reported no {coin} balance (none in its wallet at the last resync, "
                f"none pushed since), the portfolio holds a position of {ours} {symbol} "
                f"({grace}): fills booked that {venue} does not have, or the coins sold or "
                "withdrawn elsewhere"
            )
        elif reported:
            message = (
                f"{venue} holds a position of {theirs} {symbol}, the portfolio {ours} ({grace}): "
                "fills missed or booked twice, or a trade elsewhere"
            )
        else:
            message = (
                f"{venue} reported no position in {symbol} (none in its listing at the last "
                f"resync, none pushed since), the portfolio holds {ours} ({grace}): fills "
                f"booked that {venue} does not have, or the position closed elsewhere"
            )
        message += "; nothing booked"
        self._raise(POSITION_CODE, message, labels)

    def _check_wallet(self) -> None:
        if self._base is None or self._wallet is None:
            return
        base_theirs, base_ours = self._base
        theirs = self._wallet - base_theirs
        ours = self._ours_wallet() - base_ours
        what = "cash" if self._spot else "settled balance"
        if abs(theirs - ours) <= self._tolerance:
            drift = self._alerted.pop(WALLET, None)
            if drift is not None:
                message = (
                    f"the {self.venue} {self.quote} wallet drift ended: the balance moved by "
                    f"{theirs} since the baseline, the portfolio's {what} by {ours} "
                    f"(difference {theirs - ours}, tolerance {self._tolerance}; "
                    f"{_times(drift.alerts)}); nothing booked"
                )
                self._end(WALLET, WALLET_RESOLVED_CODE, message, self._labels(WALLET), AGREEMENT)
            return
        if not self._note(WALLET, theirs, ours):
            return
        message = (
            f"the {self.venue} {self.quote} wallet balance moved by {theirs} since the baseline, "
            f"the portfolio's {what} by {ours} (difference {theirs - ours}, tolerance "
            f"{self._tolerance}): funding, a transfer, or fills not booked; nothing booked"
        )
        self._raise(WALLET_CODE, message, self._labels(WALLET))

    def _note(self, key: str, theirs: Decimal, ours: Decimal) -> bool:
        """Remember a difference of ``key``; False when it is the one alerted already."""
        drift = self._alerted.get(key)
        if drift is None:
            self._alerted[key] = _Drift(theirs, ours)
            return True
        if (drift.theirs, drift.ours) == (theirs, ours):
            return False
        drift.theirs, drift.ours = theirs, ours
        drift.alerts += 1
        return True

    def _raise(self, code: str, message: str, labels: Mapping[str, str]) -> None:
        self.alerts += 1
        log.warning("drift.detected", code=code, message=message, **labels)
        self._alert(Severity.WARNING, code, message, labels)

    def _end(
        self, key: str, code: str, message: str, labels: Mapping[str, str], ended_by: str
    ) -> None:
        self.resolved += 1
        log.info("drift.resolved", key=key, ended_by=ended_by, message=message)
        self._alert(Severity.INFO, code, message, {**labels, "ended_by": ended_by})

    def _labels(self, key: str) -> dict[str, str]:
        if key == WALLET:
            return {"asset": self.quote}
        if self._spot:
            return {"symbol": key, "asset": self._coin(key)}
        return {"symbol": key}

    def _venue_side(self, symbol: str) -> str:
        if self._spot:
            return f"{self.venue}'s {self._coin(symbol)} balance"
        return f"{self.venue}'s position"

    def _non_quote(self, balances: Mapping[str, Decimal]) -> dict[str, Decimal]:
        quote = self.quote.upper()
        return {coin.upper(): qty for coin, qty in balances.items() if coin.upper() != quote}

    def _coin(self, symbol: str) -> str:
        """``symbol``'s base coin, upper case ("" when it does not end with the quote coin)."""
        return base_asset(symbol, self.quote).upper()

    def _arm(self, key: str) -> None:
        """Check ``key`` once ``grace_s`` passed without another change to it."""
        if self._recovering:
            return  # books_recovered() arms every key
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self._grace_s, self.check, key)

    def _ours_wallet(self) -> Decimal:
        if self._spot:
            return self._cash
        return self._equity - sum(self._unrealized.values(), _ZERO)


def _times(alerts: int) -> str:
    return f"alerted {alerts} time" + ("" if alerts == 1 else "s")
