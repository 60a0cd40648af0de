"""The RiskManager as a ``Stateful`` component: the limits hold across a restart.

``restart(rig)`` is what a warm restart does to the RiskManager: a new one (new bus, clock at
the same time) gets the old one's export through JSON, then lifecycle and fresh prices arrive.
The recovery property: after every event the live manager's export equals what a fresh one
rebuilds by replaying the journal so far (only its ``state_topics``, publishing nothing, its
clock elsewhere), and what one restored from any earlier export rebuilds by replaying the rest;
and the rebuilt manager then judges the next intents exactly as the live one does. Replay goes
through the storage plane's ``replay_rows`` on the events' journal text (position updates from
their ``PositionView``, as at boot), and as whole payloads to ``replay_event``.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.enums import Lifecycle, OrderStatus, OrderType, Side
from contracts.execution import OrderEvent
from contracts.meta import Payload
from contracts.ports import Stateful
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from contracts.topics import EXEC_ORDER_EVENT
from planes.config import Config, load_config
from planes.risk import manager as risk_manager
from tests.fakes.recovery import Views
from tests.fakes.recovery import replay as replay_like_boot
from tests.planes.risk.rig import BASE, DAY_MS, T0, Rig, Verdict

ZERO = Decimal(0)


def approved(verdict: Verdict) -> ApprovedIntent:
    assert isinstance(verdict, ApprovedIntent), verdict
    return verdict


def rejected(verdict: Verdict, code: str) -> RejectedIntent:
    assert isinstance(verdict, RejectedIntent), verdict
    assert verdict.reason_code == code, verdict.detail
    return verdict


def restart(rig: Rig, *sets: str) -> Rig:
    """A new RiskManager restored from ``rig``'s export; the played portfolio carries on."""
    state = json.loads(json.dumps(rig.risk.export_state()))
    new = Rig(*sets, start_ms=rig.clock.now_ms(), running=False)
    new.risk.restore_state(state)
    new.risk.recovered()
    new.cash, new.qty, new.avg = rig.cash, dict(rig.qty), dict(rig.avg)
    new.realized, new.filled = dict(rig.realized), dict(rig.filled)
    new._ids = rig._ids  # the strategy's intent ids carry on across the restart
    new.state(Lifecycle.RUNNING)
    for symbol, price in rig.prices.items():
        new.tick(symbol, price)
    assert new.alerts == []
    assert new.verdicts == []
    return new


def test_the_risk_manager_is_stateful_under_its_key() -> None:
    risk = Rig().risk
    assert isinstance(risk, Stateful)
    assert risk.state_key == "risk"
    assert risk.state_topics == {
        "portfolio:position_update",
        "exec:order_event",
        "risk:approved_intent",
    }


def test_the_export_is_json_with_decimal_strings() -> None:
    rig = Rig("risk.cooldown_after_loss_s=60", "portfolio.cash=1000")
    rig.tick("BTCUSDT", 100)
    entry = approved(rig.buy("0.50", intent_id="e"))
    rig.fill(entry, "0.2")
    state = rig.risk.export_state()
    assert json.loads(json.dumps(state)) == state
    assert state["equity"] == "1000"
    assert state["books"]["BTCUSDT"]["position"] == "0.2"
    assert state["books"]["BTCUSDT"]["pending_buy"] == "0.3"
    assert state["pending"] == {
        "sc:e": {"symbol": "BTCUSDT", "side": "buy", "remaining": "0.3", "filled": "0.2"}
    }
    assert state["approved_ids"] == ["sc:e"]
    assert state["approval_times_ms"] == [T0]
    assert "ETHUSDT" not in state["books"]  # nothing to keep about a symbol never traded


def test_the_kill_switch_holds_across_a_restart_until_the_next_utc_day() -> None:
    sets = ("risk.daily_loss_limit=500", "portfolio.cash=10000")
    rig = Rig(*sets)
    rig.tick("BTCUSDT", 100)
    rig.position("BTCUSDT", equity=9500)
    rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)
    rig = restart(rig, *sets)
    verdict = rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)
    assert "500" in verdict.detail
    assert rig.alerts == []  # the halt was announced before the restart, not again
    rig.clock.advance_to((T0 // DAY_MS + 1) * DAY_MS)
    rig.tick("BTCUSDT", 100)
    approved(rig.buy("0.1"))


def test_the_day_baseline_survives_a_restart() -> None:
    sets = ("risk.daily_loss_limit=500", "portfolio.cash=10000")
    rig = Rig(*sets)
    rig.tick("BTCUSDT", 100)
    rig.position("BTCUSDT", equity=9600)  # 400 lost today
    rig = restart(rig, *sets)
    approved(rig.buy("0.1"))
    rig.position("BTCUSDT", equity=9500)  # 500 since the day started, not since the restart
    rejected(rig.buy("0.1"), RejectReason.DAILY_LOSS)


def test_the_drawdown_peak_survives_a_restart() -> None:
    sets = ("risk.max_drawdown=0.1", "risk.daily_loss_limit=0", "portfolio.cash=10000")
    rig = Rig(*sets)
    rig.tick("BTCUSDT", 100)
    rig.position("BTCUSDT", equity=20_000)
    rig.position("BTCUSDT", equity=18_001)
    rig = restart(rig, *sets)
    approved(rig.buy("0.1"))
    rig.position("BTCUSDT", equity=18_000)  # 10 % below the peak seen before the restart
    rejected(rig.buy("0.1"), RejectReason.MAX_DRAWDOWN)


def test_a_cooldown_survives_a_restart() -> None:
    sets = ("risk.cooldown_after_loss_s=300", "risk.stale_data_s=0")
    rig = Rig(*sets)
    rig.tick("BTCUSDT", 100)
    rig.fill(approved(rig.buy(1)), price=100)
    rig.tick("BTCUSDT", 90)
    rig.fill(approved(rig.sell("0.5", reduce_only=True)))  # a losing exit
    rig.advance(100)
    rig = restart(rig, *sets)
    rejected(rig.buy("0.1"), RejectReason.COOLDOWN)
    rig.advance(199.999)
    rejected(rig.buy("0.1"), RejectReason.COOLDOWN)
    rig.advance(0.001)
    approved(rig.buy("0.1"))


def test_the_rate_window_and_duplicates_survive_a_restart() -> None:
    sets = ("risk.max_orders_per_minute=3",)
    rig = Rig(*sets)
    rig.tick("BTCUSDT", 100)
    approved(rig.buy("0.1", intent_id="x"))
    rig.advance(30)
    approved(rig.buy("0.1"))
    approved(rig.buy("0.1"))
    rig = restart(rig, *sets)
    rejected(rig.buy("0.1", intent_id="x"), RejectReason.DUPLICATE)
    rejected(rig.buy("0.1"), RejectReason.RATE_LIMIT)
    rig.advance(30)  # the first approval left the window
    approved(rig.buy("0.1"))
    rejected(rig.buy("0.1"), RejectReason.RATE_LIMIT)


def test_orders_pending_at_a_restart_still_count_and_their_fills_are_not_counted_twice() -> None:
    rig = Rig("risk.default_max_position=1")
    rig.tick("BTCUSDT", 100)
    entry = approved(rig.buy("0.8"))
    rig.fill(entry, "0.3")
    rig = restart(rig, "risk.default_max_position=1")
    assert rig.risk.position("BTCUSDT") == Decimal("0.3")
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.5"), ZERO)
    assert approved(rig.buy("0.5")).qty == Decimal("0.2")  # 0.3 held + 0.5 pending + 0.2
    rig.fill(entry)  # the rest of the order approved before the restart
    assert rig.risk.position("BTCUSDT") == Decimal("0.8")
    assert rig.risk.pending("BTCUSDT") == (Decimal("0.2"), ZERO)
    rejected(rig.buy("0.1"), RejectReason.MAX_POSITION)


def test_the_duplicate_check_remembers_a_bounded_number_of_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(risk_manager, "APPROVED_IDS_KEPT", 3)
    rig = Rig("risk.default_max_position=100")
    rig.tick("BTCUSDT", 100)
    for n in range(4):
        approved(rig.buy("0.1", intent_id=f"i{n}"))
    assert rig.risk.export_state()["approved_ids"] == ["sc:i1", "sc:i2", "sc:i3"]
    rig = restart(rig, "risk.default_max_position=100")
    rejected(rig.buy("0.1", intent_id="i3"), RejectReason.DUPLICATE)
    approved(rig.buy("0.1", intent_id="i0"))  # forgotten: the oldest of four


def test_an_unknown_state_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        Rig().risk.restore_state({"format": 2})


# -- the recovery property ---------------------------------------------------------------------

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = {"BTCUSDT": Decimal(100), "ETHUSDT": Decimal(50)}
LIMITS = (
    "risk.default_max_position=3",
    "risk.max_notional=250",
    "risk.max_gross_exposure=400",
    "risk.max_orders_per_minute=4",
    "risk.stale_data_s=30",
    "risk.cooldown_after_loss_s=10",
    "risk.daily_loss_limit=40",
    "risk.max_drawdown=0.05",
    "risk.default_qty=0.3",
    "portfolio.cash=1000",
)


@functools.cache
def limits_config() -> Config:
    return load_config(None, [*BASE, *LIMITS], environ={}, use_default_file=False)


quantities = st.integers(1, 200).map(lambda n: Decimal(n) / 100)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("intent"),
            st.sampled_from(SYMBOLS),
            st.sampled_from(Side),
            st.one_of(st.none(), quantities),
            st.booleans(),  # reduce_only
            st.integers(0, 5),  # 0: resubmit the last intent id
        ),
        st.tuples(st.just("fill"), st.integers(0, 100), st.sampled_from([1, 2, 3])),
        st.tuples(
            st.just("end"),
            st.integers(0, 100),
            st.sampled_from([OrderStatus.CANCELLED, OrderStatus.REJECTED]),
        ),
        st.tuples(
            st.just("price"),
            st.sampled_from(SYMBOLS),
            st.sampled_from(["0.8", "0.97", "1.02", "1.25"]),
        ),
        st.tuples(st.just("wait"), st.sampled_from([1, 15, 61, 6 * 3_600, DAY_MS // 1000])),
        st.tuples(st.just("manual"), st.sampled_from(SYMBOLS), st.sampled_from(Side), quantities),
        st.tuples(st.just("loss"), st.sampled_from(SYMBOLS), quantities),
    ),
    max_size=30,
)


class Script:
    """Plays operations on a rig, keeping the approved orders that are still open."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.open: list[ApprovedIntent] = []
        self.last_id: str | None = None
        self.manual = 0

    def play(self, op: tuple[Any, ...]) -> None:
        rig, kind = self.rig, op[0]
        if kind == "intent":
            _, symbol, side, size, reduce_only, again = op
            iid = self.last_id if again == 0 else None
            verdict = rig.intent(side, size, symbol=symbol, reduce_only=reduce_only, intent_id=iid)
            self.last_id = verdict.intent.intent_id
            if isinstance(verdict, ApprovedIntent):
                self.open.append(verdict)
        elif kind == "fill" and self.open:
            order = self.open[op[1] % len(self.open)]
            left = order.qty - rig.filled.get(order.order_id, ZERO)
            qty = left if op[2] == 1 else (left / op[2]).quantize(Decimal("0.0001"))
            rig.fill(order, qty)
            if qty == left:
                self.open.remove(order)
        elif kind == "end" and self.open:
            rig.order_event(self.open.pop(op[1] % len(self.open)), op[2])
        elif kind == "price":
            symbol = op[1]
            rig.tick(symbol, rig.prices[symbol] * Decimal(op[2]))
            rig.position(symbol)  # marked to market: equity moves, halts may trip
        elif kind == "wait":
            rig.advance(op[1])
            for symbol in SYMBOLS:
                rig.tick(symbol, rig.prices[symbol])
        elif kind == "loss":  # a round trip that loses: entry filled, exit filled lower
            _, symbol, qty = op
            for side, move in ((Side.BUY, "0.97"), (Side.SELL, "1")):
                verdict = rig.intent(side, qty, symbol=symbol, reduce_only=side is Side.SELL)
                if isinstance(verdict, ApprovedIntent):
                    rig.fill(verdict)
                rig.tick(symbol, rig.prices[symbol] * Decimal(move))
        elif kind == "manual":  # a fill of an order the RiskManager never approved
            _, symbol, side, qty = op
            self.manual += 1
            price = rig.prices[symbol]
            event = OrderEvent(
                rig.execution.meta(),
                order_id=f"manual-{self.manual}",
                client_order_id=f"manual-{self.manual}",
                venue="test",
                symbol=symbol,
                side=side,
                order_type=OrderType.MARKET,
                status=OrderStatus.FILLED,
                qty=qty,
                filled_qty=qty,
                last_fill_qty=qty,
                last_fill_price=price,
            )
            rig.execution.publish(EXEC_ORDER_EVENT, event)
            rig.trade(symbol, qty if side is Side.BUY else -qty, price)


def probe(rig: Rig) -> list[tuple[str, str | Decimal]]:
    """The verdicts of a fixed set of intents, with fresh prices (what a restart sees next)."""
    rig.state(Lifecycle.RUNNING)
    for symbol in SYMBOLS:
        rig.tick(symbol, rig.prices[symbol])
    out: list[tuple[str, str | Decimal]] = []
    for n, (side, reduce_only, symbol) in enumerate(
        (
            (Side.BUY, False, "BTCUSDT"),
            (Side.SELL, True, "BTCUSDT"),
            (Side.SELL, False, "ETHUSDT"),
            (Side.BUY, False, "ETHUSDT"),
        )
    ):
        verdict = rig.intent(side, symbol=symbol, reduce_only=reduce_only, intent_id=f"probe{n}")
        if isinstance(verdict, ApprovedIntent):
            out.append(("approved", verdict.qty))  # equal numbers, maybe not equal strings
        else:
            out.append(("rejected", verdict.reason_code))
    return out


def replica(live: Rig, start_ms: int) -> tuple[Rig, list[str]]:
    """A started RiskManager on its own bus, and the topics it publishes."""
    other = Rig(config=limits_config(), start_ms=start_ms, running=False)
    other.prices = dict(live.prices)
    published: list[str] = []
    other.bus.subscribe_all(lambda t, _: published.append(t.name))
    return other, published


def replay(rig: Rig, events: list[tuple[str, Payload]], *, views: Views) -> None:
    """Replay ``events`` into the RiskManager as recovery does (``tests.fakes.recovery``)."""
    replay_like_boot(rig.risk, "risk", events, views=views)


@pytest.mark.parametrize("views", [True, "groups", False], ids=["views", "groups", "payloads"])
@given(ops=operations)
def test_replay_and_restore_rebuild_the_live_state_after_every_event(
    views: Views, ops: list[tuple[Any, ...]]
) -> None:
    live = Rig(config=limits_config())
    journal: list[tuple[str, Payload]] = []
    live.bus.subscribe_all(lambda t, p: journal.append((t.name, p)))
    for symbol, price in START.items():
        live.tick(symbol, price)
    script = Script(live)
    states = [live.risk.export_state()]
    marks = [len(journal)]
    for op in ops:
        script.play(op)
        states.append(live.risk.export_state())
        marks.append(len(journal))
    for state in states:
        assert json.loads(json.dumps(state)) == state
    later = live.clock.now_ms() + 365 * DAY_MS  # replay must not read the clock

    fresh, published = replica(live, later)
    for k in range(len(states)):
        replay(fresh, journal[marks[k - 1] if k else 0 : marks[k]], views=views)
        assert fresh.risk.export_state() == states[k], f"replay up to operation {k}"
    assert published == []

    for j, snapshot in enumerate(states):
        restored, published = replica(live, later)
        restored.risk.restore_state(json.loads(json.dumps(snapshot)))
        assert restored.risk.export_state() == snapshot
        for k in range(j + 1, len(states)):
            replay(restored, journal[marks[k - 1] : marks[k]], views=views)
            assert restored.risk.export_state() == states[k], f"restore {j} + replay to {k}"
        assert published == []

    # Restarted now (restore the middle export, replay the rest), it judges as the live one.
    j = len(states) // 2
    restarted, _ = replica(live, live.clock.now_ms())
    restarted.risk.restore_state(json.loads(json.dumps(states[j])))
    replay(restarted, journal[marks[j] :], views=views)
    assert probe(restarted) == probe(live)
