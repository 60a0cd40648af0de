"""DriftWatch: the venue's positions and wallet against the portfolio's, alerted only when a
difference outlasts the grace period, once per difference, and never booked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal

from structlog.testing import capture_logs

from contracts.enums import Severity
from contracts.execution import PositionUpdate
from contracts.meta import EventMeta, Source
from planes.execution.drift import WALLET, DriftWatch

GRACE_S = 0.02


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


class Alerts:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Mapping[str, str]]] = []
        self.severities: list[Severity] = []

    def __call__(
        self, severity: Severity, code: str, message: str, labels: Mapping[str, str]
    ) -> None:
        self.severities.append(severity)
        self.seen.append((code, message, labels))

    @property
    def codes(self) -> list[str]:
        return [code for code, _, _ in self.seen]


def watch(
    alerts: Alerts,
    *,
    spot: bool = False,
    tolerance: str = "0.01",
    symbols: tuple[str, ...] = (),
    recovering: bool = False,
) -> DriftWatch:
    return DriftWatch(
        venue="bybit",
        quote="USDT",
        start_cash=D(1000),
        spot=spot,
        grace_s=GRACE_S,
        tolerance=D(tolerance),
        alert=alerts,
        symbols=symbols,
        recovering=recovering,
    )


def update(
    symbol: str, qty: str, *, cash: str = "1000", equity: str = "1000", unrealized: str = "0"
) -> PositionUpdate:
    return PositionUpdate(
        EventMeta(Source.TRADING, 1),
        symbol,
        D(qty),
        D(100),
        D(0),
        D(unrealized),
        D(100),
        D(equity),
        D(cash),
    )


async def settle() -> None:
    await asyncio.sleep(GRACE_S * 4)


async def test_a_position_difference_is_alerted_after_the_grace_period_once() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.venue_position("BTCUSDT", 0, D("0.5"))
    drift.portfolio(update("BTCUSDT", "0.4"))
    assert alerts.seen == []  # not before the grace period
    await settle()
    ((code, message, labels),) = alerts.seen
    assert (code, labels) == ("position_drift", {"symbol": "BTCUSDT"})
    assert "bybit holds a position of 0.5 BTCUSDT, the portfolio 0.4" in message
    assert "nothing booked" in message
    drift.venue_position("BTCUSDT", 0, D("0.5"))  # the same figures again: no second alert
    drift.check("BTCUSDT")
    assert len(alerts.seen) == 1
    drift.venue_position("BTCUSDT", 0, D("0.7"))  # another difference: alerted
    await settle()
    assert len(alerts.seen) == 2
    with capture_logs() as logs:
        drift.portfolio(update("BTCUSDT", "0.7"))
        await settle()
    assert [e["event"] for e in logs] == ["drift.resolved"]
    assert alerts.codes == ["position_drift", "position_drift", "position_drift_resolved"]
    assert alerts.severities == [Severity.WARNING, Severity.WARNING, Severity.INFO]
    drift.stop()


async def test_a_difference_that_ends_within_the_grace_period_is_not_alerted() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.venue_position("BTCUSDT", 0, D("0.5"))  # Bybit's push before our fill is booked
    drift.portfolio(update("BTCUSDT", "0.5"))
    await settle()
    assert alerts.seen == []
    assert drift.checks == 1  # checked once, after the last change
    drift.stop()


async def test_hedge_mode_sides_net_out_and_unlisted_unknown_symbols_are_not_compared() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.venue_position("ETHUSDT", 1, D(2))
    drift.venue_position("ETHUSDT", 2, D(-1))
    drift.portfolio(update("ETHUSDT", "1"))
    drift.portfolio(update("SOLUSDT", "3"))  # no report and no listing yet: no view to compare
    await settle()
    assert alerts.seen == []
    drift.venue_position("ETHUSDT", 2, D(0))
    await settle()
    assert alerts.codes == ["position_drift"]
    assert "a position of 2 ETHUSDT, the portfolio 1" in alerts.seen[0][1]
    drift.stop()


async def test_the_settled_wallet_moves_with_realised_pnl_and_fees_not_with_notional() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.wallet_baseline(D(5000))  # the venue's account holds more than the portfolio's cash
    # A buy of 1 at 100 paying 0.05: cash 899.95, marked at 101 (unrealised 1), equity 1000.95.
    drift.portfolio(update("BTCUSDT", "1", cash="899.95", equity="1000.95", unrealized="1"))
    drift.venue_wallet(D("4999.95"))  # Bybit took the fee only: the settled balance agrees
    await settle()
    assert alerts.seen == []
    drift.venue_wallet(D("4949.95"))  # 50 USDT left the account (a transfer, funding)
    await settle()
    ((code, message, labels),) = alerts.seen
    assert (code, labels) == ("wallet_drift", {"asset": "USDT"})
    assert "moved by -50.05 since the baseline, the portfolio's settled balance by -0.05" in message
    assert "difference -50.00" in message
    drift.wallet_baseline(D("4949.95"))  # a new baseline (after a resync) starts over
    assert alerts.codes == ["wallet_drift", "wallet_drift_resolved"]
    _, ended, labels = alerts.seen[1]
    assert labels == {"asset": "USDT", "ended_by": "new_baseline"}
    assert "the difference of -50.00 since the old baseline is not explained" in ended
    drift.check(WALLET)
    assert len(alerts.seen) == 2
    drift.stop()


async def test_a_spot_wallet_follows_cash_and_the_first_record_is_the_baseline() -> None:
    alerts = Alerts()
    drift = watch(alerts, spot=True, tolerance="0")
    drift.venue_wallet(D(700))  # no REST baseline: this record is it
    drift.portfolio(update("BTCUSDT", "1", cash="899.9", equity="999.9"))  # spent 100.1
    drift.venue_wallet(D("599.9"))
    await settle()
    assert alerts.seen == []
    drift.venue_wallet(D("599.89"))  # within no tolerance at all
    await settle()
    assert alerts.codes == ["wallet_drift"]
    assert "the portfolio's cash by -100.1" in alerts.seen[0][1]
    drift.stop()


async def test_a_difference_within_the_tolerance_is_not_alerted() -> None:
    alerts = Alerts()
    drift = watch(alerts, tolerance="0.01")
    drift.wallet_baseline(D(1000))
    drift.venue_wallet(D("1000.01"))
    await settle()
    assert alerts.seen == []
    drift.stop()


def boot(drift: DriftWatch) -> None:
    """A restart as the venue sees it: its resync, then the recovered books announced.

    The resync comes first (the stream connects while the venue starts, before recovery):
    Bybit's REST wallet of 4980 and its listing of a long 0.5 BTCUSDT. Then the portfolio's
    recovered books: the 0.5 bought for 50 with 20 paid in fees (settled balance 980), marked
    at 100.
    """
    drift.wallet_baseline(D(4980))
    drift.begin_listing()
    drift.listed_positions({"BTCUSDT": {0: D("0.5")}}, complete=True)
    drift.portfolio(update("BTCUSDT", "0.5", cash="930", equity="980", unrealized="0"))


async def test_a_baseline_before_the_recovered_books_would_take_them_for_a_drift() -> None:
    alerts = Alerts()
    drift = watch(alerts)  # not told the books are being recovered: the failure it prevents
    boot(drift)
    await settle()
    assert alerts.codes == ["wallet_drift"]
    assert (
        "moved by 0 since the baseline, the portfolio's settled balance by -20"
        in (alerts.seen[0][1])
    )
    drift.stop()


async def test_a_recovering_watch_compares_from_the_recovered_books_and_still_sees_drift() -> None:
    alerts = Alerts()
    drift = watch(alerts, recovering=True)
    boot(drift)
    drift.venue_wallet(D(4979))  # a record pushed during recovery: the latest balance heard
    await settle()
    assert (alerts.seen, drift.checks) == ([], 0)  # nothing compared before the books are whole
    drift.books_recovered()
    await settle()
    assert alerts.seen == []  # 4979 against the recovered 980: the baseline
    assert drift.checks == 1  # BTCUSDT, after the grace period
    drift.books_recovered()  # once only
    # A fill Bybit has and the portfolio does not: its position and its fee.
    drift.venue_position("BTCUSDT", 0, D("0.6"))
    drift.venue_wallet(D("4978.5"))
    await settle()
    assert sorted(alerts.codes) == ["position_drift", "wallet_drift"]
    (wallet,) = [message for code, message, _ in alerts.seen if code == "wallet_drift"]
    assert "moved by -0.5 since the baseline, the portfolio's settled balance by 0" in wallet
    drift.stop()


async def test_a_drift_there_at_the_restart_is_alerted_once_the_books_are_recovered() -> None:
    alerts = Alerts()
    drift = watch(alerts, recovering=True)
    drift.begin_listing()
    drift.listed_positions({"BTCUSDT": {0: D("0.8")}}, complete=True)  # closed elsewhere: 0.3
    drift.portfolio(update("BTCUSDT", "0.5"))
    drift.portfolio(update("ETHUSDT", "2"))  # Bybit's complete listing has none
    await settle()
    assert alerts.seen == []
    drift.books_recovered()
    assert alerts.seen == []  # not before the grace period
    await settle()
    assert alerts.codes == ["position_drift", "position_drift"]
    assert "a position of 0.8 BTCUSDT, the portfolio 0.5" in alerts.seen[0][1]
    assert "reported no position in ETHUSDT" in alerts.seen[1][1]
    drift.stop()


async def test_with_no_balance_heard_during_recovery_the_next_record_is_the_baseline() -> None:
    alerts = Alerts()
    drift = watch(alerts, recovering=True)
    drift.portfolio(update("BTCUSDT", "0", cash="975", equity="975"))  # flat recovered books
    drift.books_recovered()  # the resync's REST wallet failed, nothing pushed yet
    drift.venue_wallet(D(4975))  # the baseline
    drift.portfolio(update("BTCUSDT", "1", cash="874.9", equity="974.9"))  # a fee of 0.1
    drift.venue_wallet(D("4974.9"))
    await settle()
    assert alerts.seen == []
    drift.stop()


async def test_stop_cancels_pending_checks() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.venue_position("BTCUSDT", 0, D(1))
    drift.stop()
    await settle()
    assert (alerts.seen, drift.checks) == ([], 0)


async def test_spot_compares_each_symbols_base_coin_balance_with_its_position() -> None:
    alerts = Alerts()
    drift = watch(alerts, spot=True, symbols=("BTCUSDT", "ETHUSDT"))
    drift.portfolio(update("BTCUSDT", "0.5"))
    drift.venue_balances({"BTC": D("0.5"), "USDT": D(900), "XRP": D(7)})  # a pushed record
    drift.venue_position("BTCUSDT", 0, D(9))  # spot has no positions: ignored
    drift.portfolio(update("BTCEUR", "2"))  # no USDT suffix, no base coin to compare
    await settle()
    assert alerts.seen == []  # BTC agrees; XRP is no symbol of ours; ETH was never reported
    drift.venue_balances({"BTC": D("0.6")})
    await settle()
    ((code, message, labels),) = alerts.seen
    assert (code, labels) == ("position_drift", {"symbol": "BTCUSDT", "asset": "BTC"})
    assert "bybit holds 0.6 BTC (the base coin of BTCUSDT), the portfolio a position of 0.5" in (
        message
    )
    drift.venue_balances({"BTC": D("0.5")})
    await settle()
    assert alerts.codes == ["position_drift", "position_drift_resolved"]
    _, ended, labels = alerts.seen[1]
    assert labels == {"symbol": "BTCUSDT", "asset": "BTC", "ended_by": "agreement"}
    assert "bybit's BTC balance and the portfolio's position are both 0.5 (alerted 1 time)" in ended
    assert alerts.severities[1] is Severity.INFO
    drift.stop()


async def test_a_complete_spot_listing_makes_a_coin_it_leaves_out_zero() -> None:
    alerts = Alerts()
    drift = watch(alerts, spot=True, symbols=("BTCUSDT", "ETHUSDT"))
    drift.portfolio(update("BTCUSDT", "0.5"))  # nothing reported yet: nothing to compare
    drift.portfolio(update("ETHUSDT", "2"))
    drift.venue_balances({"ETH": D(2)})  # a pushed record says nothing of the coins it leaves out
    await settle()
    assert (alerts.seen, drift.checks) == ([], 1)  # ETHUSDT checked, BTCUSDT not
    drift.listed_balances({"USDT": D(1000), "ETH": D(2)}, complete=True)  # no BTC: it has none
    await settle()
    ((code, message, labels),) = alerts.seen
    assert (code, labels) == ("position_drift", {"symbol": "BTCUSDT", "asset": "BTC"})
    assert "bybit reported no BTC balance (none in its wallet at the last resync" in message
    assert "the portfolio holds a position of 0.5 BTCUSDT" in message
    drift.venue_balances({"BTC": D("0.5")})  # a push without ETH: ETH stays 2
    await settle()
    assert alerts.codes == ["position_drift", "position_drift_resolved"]
    drift.stop()


async def test_after_a_listing_a_symbol_bybit_does_not_report_is_flat_there() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.portfolio(update("BTCUSDT", "0.5"))
    await settle()
    assert (alerts.seen, drift.checks) == ([], 0)  # no listing yet: no view, not a zero view
    drift.listed_positions({}, complete=True)  # the resync's listing: Bybit holds nothing
    await settle()
    ((code, message, labels),) = alerts.seen
    assert (code, labels) == ("position_drift", {"symbol": "BTCUSDT"})
    assert "bybit reported no position in BTCUSDT (none in its listing at the last resync" in (
        message
    )
    assert "the portfolio holds 0.5" in message
    drift.portfolio(update("ETHUSDT", "1"))  # opened after the listing, and Bybit pushes nothing
    await settle()
    assert alerts.codes == ["position_drift", "position_drift"]
    assert alerts.seen[1][2] == {"symbol": "ETHUSDT"}
    drift.venue_position("ETHUSDT", 0, D(1))  # Bybit's push, late
    await settle()
    assert alerts.codes[2:] == ["position_drift_resolved"]
    assert alerts.seen[2][2] == {"symbol": "ETHUSDT", "ended_by": "agreement"}
    # A new listing replaces the view.
    drift.listed_positions({"BTCUSDT": {1: D("0.5")}}, complete=True)
    await settle()
    assert alerts.codes[3:] == ["position_drift_resolved", "position_drift"]
    assert alerts.seen[3][2] == {"symbol": "BTCUSDT", "ended_by": "agreement"}
    assert alerts.seen[4][2] == {"symbol": "ETHUSDT"}  # not in the new listing: flat again
    drift.stop()


async def test_a_drift_ends_with_one_info_alert_however_many_alerts_it_had() -> None:
    alerts = Alerts()
    drift = watch(alerts, tolerance="0")
    drift.wallet_baseline(D(5000))
    drift.venue_wallet(D(4990))
    await settle()
    drift.venue_wallet(D(4980))  # a second difference: alerted again, the same drift
    await settle()
    drift.venue_wallet(D(5000))
    await settle()
    drift.check(WALLET)  # agreement again and again: no second end
    drift.venue_wallet(D(4999))  # a new drift, and its own end
    await settle()
    drift.venue_wallet(D(5000))
    await settle()
    assert alerts.codes == [
        "wallet_drift",
        "wallet_drift",
        "wallet_drift_resolved",
        "wallet_drift",
        "wallet_drift_resolved",
    ]
    severities = [Severity.WARNING, Severity.WARNING, Severity.INFO]
    assert alerts.severities == [*severities, Severity.WARNING, Severity.INFO]
    _, ended, labels = alerts.seen[2]
    assert labels == {"asset": "USDT", "ended_by": "agreement"}
    assert "the bybit USDT wallet drift ended: the balance moved by 0 since the baseline" in ended
    assert "alerted 2 times" in ended
    assert (drift.alerts, drift.resolved) == (3, 2)
    drift.stop()


async def test_a_push_during_a_listing_wins_and_a_partial_listing_flattens_nothing() -> None:
    alerts = Alerts()
    drift = watch(alerts)
    drift.portfolio(update("BTCUSDT", "0.5"))
    drift.portfolio(update("SOLUSDT", "3"))
    drift.venue_position("XRPUSDT", 0, D(5))  # a position the portfolio does not have
    drift.begin_listing()
    drift.venue_position("BTCUSDT", 0, D("0.5"))  # the fill's push overtakes the REST answer
    # A listing with an unusable record: the good ones only (BTCUSDT's is older than the push).
    drift.listed_positions({"BTCUSDT": {0: D(0)}, "ETHUSDT": {0: D(0)}}, complete=False)
    await settle()
    # BTCUSDT as pushed; SOLUSDT not listed, but the listing was partial; XRPUSDT still 5.
    ((_, message, labels),) = alerts.seen
    assert labels == {"symbol": "XRPUSDT"}
    assert "bybit holds a position of 5 XRPUSDT, the portfolio 0" in message
    drift.begin_listing()
    drift.listed_positions({"BTCUSDT": {0: D("0.5")}, "SOLUSDT": {0: D(3)}}, complete=True)
    drift.venue_position("BTCUSDT", 0, D("0.4"))  # pushed after the listing: taken
    await settle()
    assert alerts.codes == ["position_drift", "position_drift_resolved", "position_drift"]
    assert alerts.seen[1][2] == {"symbol": "XRPUSDT", "ended_by": "agreement"}  # not listed: flat
    assert "bybit holds a position of 0.4 BTCUSDT, the portfolio 0.5" in alerts.seen[2][1]
    drift.stop()


async def test_a_spot_push_while_a_listing_is_on_its_way_wins() -> None:
    alerts = Alerts()
    drift = watch(alerts, spot=True, symbols=("BTCUSDT",))
    drift.portfolio(update("BTCUSDT", "0.5"))
    drift.begin_listing()
    drift.venue_balances({"BTC": D("0.5")})
    drift.listed_balances({"USDT": D(900)}, complete=True)  # asked before the buy: no BTC yet
    await settle()
    assert alerts.seen == []
    drift.stop()
