"""The RiskManager, one check (and reason code) at a time, on a bare bus with a played market."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.enums import Lifecycle, OrderStatus, Severity, Side
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from contracts.strategy import Intent
from tests.planes.risk.rig import DAY_MS, T0, Rig, Verdict

ZERO = Decimal(0)


def approved(verdict: Verdict) -> ApprovedIntent:
    assert isinstance(verdict, ApprovedIntent), verdict
    return verdict


def rejected(verdict: Verdict, code: str) -> RejectedIntent:
    assert isinstance(verdict, RejectedIntent), verdict
    assert verdict.reason_code == code, verdict.detail
    assert verdict.detail
    return verdict


def fresh(*sets: str, price: int = 100) -> Rig:
    """A running rig with a BTCUSDT price of ``price`` seen just now."""
    rig = Rig(*sets)
    rig.tick("BTCUSDT", price)
    return rig


# -- approval ------------------------------------------------------------------------------


def test_an_approval_carries_the_size_a_deterministic_order_id_and_the_correlation() -> None:
    rig = fresh()
    verdict = approved(rig.buy("0.5", intent_id="i-1", scenario="sma"))
    assert verdict.qty == Decimal("0.5")
    assert verdict.order_id == "sma:i-1"
    assert verdict.meta.correlation_id == "corr-i-1"
    assert verdict.meta.source.value == "risk"
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.5"), ZERO)
    assert (rig.risk.approved, rig.risk.rejected) == (1, 0)


# -- 1, 2: paused and lifecycle ---------------------------------------------------------------


def test_paused_rejects_everything_even_reductions() -> None:
    rig = fresh()
    rig.hold("BTCUSDT", "0.5", 100)
    rig.state(Lifecycle.PAUSED, paused=True)
    rejected(rig.buy(1), RejectReason.PAUSED)
    rejected(rig.sell("0.5", reduce_only=True), RejectReason.PAUSED)
    rig.state(Lifecycle.RUNNING)
    approved(rig.buy("0.1"))


@pytest.mark.parametrize("lifecycle", [None, Lifecycle.STARTING, Lifecycle.STOPPING])
def test_not_running_is_rejected_with_the_state(lifecycle: Lifecycle | None) -> None:
    rig = Rig(running=False)
    rig.tick("BTCUSDT", 100)
    if lifecycle is not None:
        rig.state(lifecycle)
    verdict = rejected(rig.buy(1), RejectReason.LIFECYCLE)
    assert (lifecycle.value if lifecycle else "not started") in verdict.detail


# -- 3: duplicates ---------------------------------------------------------------------------


def test_the_same_intent_approved_twice_is_a_duplicate() -> None:
    rig = fresh()
    approved(rig.buy("0.1", intent_id="x"))
    verdict = rejected(rig.buy("0.1", intent_id="x"), RejectReason.DUPLICATE)
    assert "sc:x" in verdict.detail
    approved(rig.buy("0.1", intent_id="x", scenario="other"))  # another scenario's intent


def test_an_intent_rejected_before_may_be_approved_later() -> None:
    rig = fresh()
    rig.state(Lifecycle.PAUSED, paused=True)
    rejected(rig.buy("0.1", intent_id="x"), RejectReason.PAUSED)
    rig.state(Lifecycle.RUNNING)
    approved(rig.buy("0.1", intent_id="x"))


# -- 4: allowlist ----------------------------------------------------------------------------


def test_symbols_default_to_market_symbols() -> None:
    rig = fresh()
    rig.tick("SOLUSDT", 10)
    verdict = rejected(rig.buy(1, symbol="SOLUSDT"), RejectReason.SYMBOL_NOT_ALLOWED)
    assert "BTCUSDT, ETHUSDT" in verdict.detail


def test_an_explicit_allowlist_wins() -> None:
    rig = fresh('risk.allowlist=["ETHUSDT"]')
    rig.tick("ETHUSDT", 100)
    rejected(rig.buy("0.1"), RejectReason.SYMBOL_NOT_ALLOWED)
    approved(rig.buy("0.1", symbol="ETHUSDT"))


# -- 5: stale data ---------------------------------------------------------------------------


def test_no_market_data_at_all_is_stale() -> None:
    rig = Rig()
    verdict = rejected(rig.buy("0.1"), RejectReason.STALE_DATA)
    assert "none yet" in verdict.detail


def test_data_older_than_stale_data_s_is_stale_and_a_new_tick_or_bar_fixes_it() -> None:
    rig = fresh("risk.stale_data_s=120")
    rig.advance(120)
    approved(rig.buy("0.1"))  # exactly the limit is still fresh
    rig.advance(1)
    verdict = rejected(rig.buy("0.1"), RejectReason.STALE_DATA)
    assert "121 s old" in verdict.detail
    rig.kline("BTCUSDT", 100)  # a bar counts as market data too
    approved(rig.buy("0.1"))


def test_stale_data_still_lets_a_reduction_through_clipped_to_the_position() -> None:
    rig = fresh()
    rig.hold("BTCUSDT", "0.3", 100)
    rig.advance(600)
    rejected(rig.buy("0.1"), RejectReason.STALE_DATA)
    verdict = approved(rig.sell(1))  # wants to flip short: only the reduction passes
    assert verdict.qty == Decimal("0.3")


def test_stale_data_gate_off() -> None:
    rig = fresh("risk.stale_data_s=0")
    rig.advance(86_400)
    approved(rig.buy("0.1"))


# -- 6: order rate ---------------------------------------------------------------------------


def test_rate_limit_counts_approvals_over_a_sliding_minute() -> None:
    rig = fresh("risk.max_orders_per_minute=3", "risk.stale_data_s=0")
    approved(rig.buy("0.1"))
    rig.advance(30)
    approved(rig.buy("0.1"))
    rejected(rig.sell(1, reduce_only=True), RejectReason.NOTHING_TO_REDUCE)  # not counted
    approved(rig.buy("0.1"))
    verdict = rejected(rig.buy("0.1"), RejectReason.RATE_LIMIT)
    assert "3 orders" in verdict.detail
    rig.advance(29.999)
    rejected(rig.buy("0.1"), RejectReason.RATE_LIMIT)
    rig.advance(0.001)  # the first approval left the window
    approved(rig.buy("0.1"))
    rejected(rig.buy("0.1"), RejectReason.RATE_LIMIT)
    rig.advance(30)
    approved(rig.buy("0.1"))
    approved(rig.buy("0.1"))


def test_the_rate_window_holds_only_the_approvals_that_can_still_count() -> None:
    rig = fresh("risk.max_orders_per_minute=1000000", "risk.stale_data_s=0")  # a backtest's
    for _ in range(3):
        approved(rig.buy("0.1"))
        rig.advance(40)
    approved(rig.buy("0.1"))
    # T0 + 0, 40, 80, 120 s: the first two are out of the last approval's minute, for good.
    assert rig.risk.export_state()["approval_times_ms"] == [T0 + 80_000, T0 + 120_000]


# -- 7: daily loss kill switch ---------------------------------------------------------------


def test_daily_loss_halts_entries_allows_reductions_and_resets_next_utc_day() -> None:
    rig = fresh("risk.daily_loss_limit=500", "portfolio.cash=10000")
    rig.hold("BTCUSDT", "0.5", 100)
    rig.position("BTCUSDT", equity=9501)
    approved(rig.buy("0.1"))  # a loss of 499: below the limit
    rig.position("BTCUSDT", equity=9500)
    (alert,) = rig.alerts
    assert alert.code == "risk_daily_loss_halt"
    assert alert.severity is Severity.CRITICAL

    verdict = rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)
    assert "500" in verdict.detail
    rejected(rig.sell("0.1", symbol="ETHUSDT"), RejectReason.STALE_DATA)
    rig.tick("ETHUSDT", 10)
    rejected(rig.sell("0.1", symbol="ETHUSDT"), RejectReason.DAILY_LOSS)  # flat: an entry
    assert approved(rig.sell("0.2")).qty == Decimal("0.2")
    # 0.5 held, 0.1 bought pending, 0.2 sold pending: at most 0.3 more can be sold for sure.
    assert approved(rig.sell(5)).qty == Decimal("0.3")
    rejected(rig.sell("0.1"), RejectReason.DAILY_LOSS)  # nothing left that surely reduces

    rig.position("BTCUSDT", equity=10_000)  # recovering does not lift the switch today
    rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)
    rig.clock.advance_to(T0 + DAY_MS - 1)
    rig.tick("BTCUSDT", 100)
    rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)
    rig.advance(0.001)  # midnight UTC
    approved(rig.buy("0.1"))
    assert not rig.risk.daily_halt


def test_the_day_starts_from_the_equity_at_midnight() -> None:
    rig = fresh("risk.daily_loss_limit=500", "portfolio.cash=10000")
    rig.position("BTCUSDT", equity=9600)  # lost 400 on day one
    rig.clock.advance_to(T0 + DAY_MS + 1_000)
    rig.tick("BTCUSDT", 100)
    rig.position("BTCUSDT", equity=9200)  # another 400: 800 since yesterday, 400 today
    approved(rig.buy("0.1"))
    rig.position("BTCUSDT", equity=9100)
    rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)


def test_daily_loss_limit_zero_is_off() -> None:
    rig = fresh("risk.daily_loss_limit=0", "risk.max_drawdown=0")
    rig.position("BTCUSDT", equity=1)
    approved(rig.buy("0.1"))


# -- 8: drawdown -----------------------------------------------------------------------------


def test_drawdown_from_peak_halts_entries_until_equity_recovers() -> None:
    rig = fresh("risk.max_drawdown=0.1", "risk.daily_loss_limit=0", "portfolio.cash=10000")
    rig.hold("BTCUSDT", "0.5", 100)
    rig.position("BTCUSDT", equity=20_000)  # a new peak
    rig.position("BTCUSDT", equity=18_001)
    approved(rig.buy("0.1"))
    rig.position("BTCUSDT", equity=18_000)  # 10 % below the peak
    assert [a.code for a in rig.alerts] == ["risk_drawdown_halt"]
    verdict = rejected(rig.buy("0.1"), RejectReason.MAX_DRAWDOWN)
    assert "20000" in verdict.detail
    approved(rig.sell("0.5", reduce_only=True))
    rig.position("BTCUSDT", equity=18_500)
    approved(rig.buy("0.1"))


# -- 9: cooldown after a losing exit ----------------------------------------------------------


def test_a_losing_exit_starts_a_cooldown_on_that_symbol_only() -> None:
    rig = fresh("risk.cooldown_after_loss_s=300", "risk.stale_data_s=0")
    rig.tick("ETHUSDT", 10)
    entry = approved(rig.buy(1))
    rig.fill(entry, price=100)
    rig.tick("BTCUSDT", 90)
    exit_ = approved(rig.sell("0.5", reduce_only=True))
    rig.fill(exit_)  # realized -5
    verdict = rejected(rig.buy("0.1"), RejectReason.COOLDOWN)
    assert "300 s" in verdict.detail
    approved(rig.buy("0.1", symbol="ETHUSDT"))
    assert approved(rig.sell(2)).qty == Decimal("0.5")  # exits still pass, never flipping
    rig.advance(299.999)
    rejected(rig.buy("0.1"), RejectReason.COOLDOWN)
    rig.advance(0.001)
    approved(rig.buy("0.1"))


def test_a_winning_exit_or_an_entry_fee_starts_no_cooldown() -> None:
    rig = fresh("risk.cooldown_after_loss_s=300")
    entry = approved(rig.buy(1))
    rig.fill(entry, price=100)
    rig.tick("BTCUSDT", 110)
    rig.fill(approved(rig.sell("0.5")))  # realized +5
    approved(rig.buy("0.1"))
    # Realized PnL falling while the position grows (a fee on an entry) is no losing exit.
    rig.realized["BTCUSDT"] = Decimal(-1)
    rig.fill(approved(rig.buy("0.1")))
    approved(rig.buy("0.1"))


# -- 10: sizing ------------------------------------------------------------------------------


def test_without_size_or_target_the_default_qty_is_used() -> None:
    rig = fresh("risk.default_qty=0.25")
    assert approved(rig.buy()).qty == Decimal("0.25")


@pytest.mark.parametrize("size", ["0", "-1", "NaN", "Infinity"])
def test_a_size_hint_that_is_not_a_positive_number_is_no_size(size: str) -> None:
    rig = fresh()
    rejected(rig.buy(size), RejectReason.NO_SIZE)


def test_default_qty_zero_is_no_size() -> None:
    rig = fresh("risk.default_qty=0")
    rejected(rig.buy(), RejectReason.NO_SIZE)


def test_target_exposure_moves_the_position_to_a_fraction_of_equity() -> None:
    rig = fresh("portfolio.cash=10000", "risk.default_max_position=1000")
    rig.tick("BTCUSDT", 300)
    assert approved(rig.buy(target="0.5")).qty == Decimal("16.66666666")  # rounded down
    rig.hold("ETHUSDT", 20, 100)
    # 0.5 of 10000 at 100 is 50 ETH; 20 are held: buy 30.
    assert approved(rig.buy(target="0.5", symbol="ETHUSDT")).qty == 30
    # Pending buys count as held: the target is reached.
    verdict = rejected(rig.buy(target="0.5", symbol="ETHUSDT"), RejectReason.NO_SIZE)
    assert "needs no buy" in verdict.detail
    # A negative target on the sell side: from 50 (with pending) to -10.
    assert approved(rig.sell(target="-0.1", symbol="ETHUSDT")).qty == 60
    # The side must agree with the move.
    rejected(rig.sell(target="0.9", symbol="ETHUSDT"), RejectReason.NO_SIZE)


def test_target_exposure_needs_a_price() -> None:
    rig = Rig("risk.stale_data_s=0")
    rejected(rig.buy(target="0.5"), RejectReason.NO_PRICE)


# -- reduce only ------------------------------------------------------------------------------


def test_reduce_only_is_clipped_to_the_position_net_of_pending_reductions() -> None:
    rig = fresh()
    verdict = rejected(rig.sell(1, reduce_only=True), RejectReason.NOTHING_TO_REDUCE)
    assert "nothing to reduce" in verdict.detail
    rig.hold("BTCUSDT", "0.4", 100)
    rejected(rig.buy("0.1", reduce_only=True), RejectReason.NOTHING_TO_REDUCE)  # wrong side
    first = approved(rig.sell(1, reduce_only=True))
    assert first.qty == Decimal("0.4")
    rejected(rig.sell(1, reduce_only=True), RejectReason.NOTHING_TO_REDUCE)
    rig.order_event(first, OrderStatus.CANCELLED)  # releases the pending reduction
    assert approved(rig.sell("0.1", reduce_only=True)).qty == Decimal("0.1")


def test_reduce_only_buy_covers_a_short() -> None:
    rig = fresh()
    rig.hold("BTCUSDT", "-0.7", 100)
    assert approved(rig.buy(2, reduce_only=True)).qty == Decimal("0.7")


# -- 11: limits ------------------------------------------------------------------------------


def test_max_position_shrinks_the_order_then_rejects() -> None:
    rig = fresh("risk.default_max_position=1", "risk.max_notional=1000000")
    assert approved(rig.buy("0.7")).qty == Decimal("0.7")
    assert approved(rig.buy("0.7")).qty == Decimal("0.3")
    verdict = rejected(rig.buy("0.1"), RejectReason.MAX_POSITION)
    assert "risk.max_position 1" in verdict.detail
    # The buys may never fill: a sell must fit as if they did not, so it may go short by 1.
    assert approved(rig.sell(5)).qty == 1


def test_max_position_per_symbol_overrides_the_default() -> None:
    rig = fresh('risk.max_position={"BTCUSDT" = 0.2}', "risk.default_max_position=5")
    rig.tick("ETHUSDT", 10)
    assert approved(rig.buy(1)).qty == Decimal("0.2")
    assert approved(rig.buy(1, symbol="ETHUSDT")).qty == 1


def test_max_notional_caps_the_position_value() -> None:
    rig = fresh("risk.max_notional=30000", "risk.default_max_position=10", price=60_000)
    assert approved(rig.buy(1)).qty == Decimal("0.5")
    verdict = rejected(rig.buy("0.01"), RejectReason.MAX_NOTIONAL)
    assert "risk.max_notional 30000" in verdict.detail


def test_max_notional_rounds_down_to_the_quantity_step() -> None:
    rig = fresh("risk.max_notional=1000", "risk.default_max_position=10", price=300)
    assert approved(rig.buy(5)).qty == Decimal("3.33333333")


def test_gross_exposure_sums_every_symbol() -> None:
    rig = fresh(
        "risk.max_gross_exposure=1000",
        "risk.max_notional=800",
        "risk.default_max_position=100",
    )
    rig.tick("ETHUSDT", 50)
    btc = approved(rig.buy(6))
    assert btc.qty == 6  # 600 of BTC
    eth = approved(rig.sell(10, symbol="ETHUSDT"))
    assert eth.qty == 8  # 400 of ETH: a short counts too
    verdict = rejected(rig.buy(1), RejectReason.MAX_GROSS_EXPOSURE)
    assert "risk.max_gross_exposure 1000" in verdict.detail
    rig.fill(btc)
    rig.fill(eth)
    rejected(rig.buy(1), RejectReason.MAX_GROSS_EXPOSURE)
    # A price rise elsewhere eats the room: BTC at 120 makes 720, only 280 left for ETH.
    rig.tick("BTCUSDT", 120)
    rejected(rig.sell(1, symbol="ETHUSDT"), RejectReason.MAX_GROSS_EXPOSURE)
    # Covering the short always fits; going long 2 more (100) fits the 280 left.
    assert approved(rig.buy(10, symbol="ETHUSDT")).qty == 10
    assert approved(rig.buy(10, symbol="ETHUSDT")).qty == Decimal("3.6")


def test_pending_orders_count_so_a_burst_cannot_breach() -> None:
    rig = fresh("risk.default_max_position=1", "risk.max_orders_per_minute=100")
    sizes = [approved(rig.buy("0.4")).qty, approved(rig.buy("0.4")).qty]
    sizes.append(approved(rig.buy("0.4")).qty)
    assert sizes == [Decimal("0.4"), Decimal("0.4"), Decimal("0.2")]
    rejected(rig.buy("0.4"), RejectReason.MAX_POSITION)


def test_pending_sells_do_not_offset_pending_buys() -> None:
    # A pending sell may be cancelled: a buy must fit as if it never fills.
    rig = fresh("risk.default_max_position=1")
    approved(rig.buy(1))
    approved(rig.sell(1))
    rejected(rig.buy("0.1"), RejectReason.MAX_POSITION)


def test_fills_move_pending_into_the_position_and_terminal_events_release_it() -> None:
    rig = fresh("risk.default_max_position=1")
    order = approved(rig.buy(1))
    rig.fill(order, "0.25")
    assert rig.risk.position("BTCUSDT") == Decimal("0.25")
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.75"), ZERO)
    rig.filled[order.order_id] -= Decimal("0.25")  # the played venue sends the last one again
    rig.order_event(order, OrderStatus.PARTIALLY_FILLED, fill=Decimal("0.25"))
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.75"), ZERO)
    rig.order_event(order, OrderStatus.CANCELLED)
    assert rig.risk.pending("BTCUSDT") == (ZERO, ZERO)
    assert approved(rig.buy(1)).qty == Decimal("0.75")
    other = approved(rig.sell("0.5"))
    rig.order_event(other, OrderStatus.REJECTED)
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.75"), ZERO)


def test_a_fill_counts_before_the_position_update_that_reflects_it() -> None:
    rig = fresh("risk.default_max_position=1")
    order = approved(rig.buy(1))
    rig.order_event(order, OrderStatus.FILLED, fill=Decimal(1), price=Decimal(100))
    assert rig.risk.pending("BTCUSDT") == (ZERO, ZERO)
    assert rig.risk.position("BTCUSDT") == 1  # the fill, in flight
    rejected(rig.buy("0.1"), RejectReason.MAX_POSITION)
    rig.trade("BTCUSDT", Decimal(1), Decimal(100))  # the portfolio's update: no double count
    assert rig.risk.position("BTCUSDT") == 1
    rig.tick("BTCUSDT", 101)
    rig.position("BTCUSDT")  # marks do not move it
    assert rig.risk.position("BTCUSDT") == 1


def test_fills_of_orders_risk_never_approved_still_count() -> None:
    rig = fresh("risk.default_max_position=1")
    stray = ApprovedIntent(
        rig.strategy.meta(),
        Intent(rig.strategy.meta(), "manual", "ops", "manual", "BTCUSDT", Side.BUY),
        Decimal(1),
        "ops:manual",
    )
    rig.order_event(stray, OrderStatus.FILLED, fill=Decimal("0.6"), price=Decimal(100))
    assert rig.risk.position("BTCUSDT") == Decimal("0.6")
    assert approved(rig.buy(1)).qty == Decimal("0.4")


def test_a_limit_needs_a_price_to_value_other_positions() -> None:
    rig = fresh("risk.stale_data_s=0")
    rig.trade("ETHUSDT", Decimal(1), Decimal(0))  # a position whose mark is unknown (0)
    rig.prices.pop("ETHUSDT")
    verdict = rejected(rig.buy("0.1"), RejectReason.NO_PRICE)
    assert "ETHUSDT" in verdict.detail


# -- failing closed --------------------------------------------------------------------------


def test_an_internal_failure_still_gives_one_rejection_and_an_error_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = fresh()

    class BrokenClock:  # what decide() asks for the time; the manager may be compiled (mypyc),
        def now_ms(self) -> int:  # so its own methods cannot be patched, its collaborators can
            raise ArithmeticError("boom")

    monkeypatch.setattr(rig.risk, "_clock", BrokenClock())
    verdict = rejected(rig.buy("0.1"), RejectReason.INTERNAL_ERROR)
    assert verdict.detail == "ArithmeticError: boom"
    (error,) = rig.errors
    assert error.error_type == "ArithmeticError"
    assert error.topic == "strategy:intent"
