"""Recovery of the execution plane: state exported, restored and rebuilt from the journal.

The journal here is a catch-all subscriber that keeps every event in bus order, decoded the way
the storage plane decodes it (the contracts converter), and the state after every event (what a
snapshot taken between two dispatches would hold). Recovery goes through the real ``StateHub``
and the storage plane's ``replay_rows`` on the events' journal text, so the paper venue's bars
and the portfolio's position updates are replayed from their views as at boot; the property
test replays whole payloads too.
The Bybit cases run against the loopback Bybit REST fake.
"""

from __future__ import annotations

import asyncio
import copy
import decimal
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.converter import CONVERTER, fast_dumps
from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import PositionView
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import Reconciling, Stateful, ViewReplaying
from contracts.topics import MARKET_KLINE, BotEventMap, Topic
from planes.execution import bybit as bybit_module
from planes.execution.adapter import remember
from planes.execution.bybit import BybitExecution
from planes.execution.ledger import Ledger
from planes.execution.paper import BarView
from planes.state import StateHub
from planes.storage.rebuild import replay_rows
from tests.fakes.bybit_http import CANCEL, CREATE, FakeBybitHTTP
from tests.fakes.recovery import Views, replay_as_the_reader_sends
from tests.planes.execution.harness import BAR_MS, Bench, D
from tests.planes.execution.test_bybit import Bench as BybitBench

S = OrderStatus
SYMBOLS = ("BTCUSDT", "ETHUSDT")
Event = tuple[str, Payload]
TYPES = {name: topic.payload for name, topic in BotEventMap.items()}


# -- the journal and the hub ---------------------------------------------------------------


def snapshot(hub: StateHub) -> dict[str, Any]:
    """The hub's export as a snapshot file would hold it (``json.dumps`` refuses a Decimal)."""
    loaded: dict[str, Any] = json.loads(json.dumps(hub.export()))
    return loaded


class Journal:
    """Every event in bus order, decoded as the journal decodes it, and the state after each."""

    def __init__(self, hub: StateHub | None = None) -> None:
        self.hub = hub
        self.events: list[Event] = []
        self.states: list[dict[str, Any]] = []

    def __call__(self, topic: Topic[Any], payload: Payload) -> None:
        decoded = CONVERTER.loads(CONVERTER.dumps(payload), type(payload))
        self.events.append((topic.name, decoded))
        if self.hub is not None:
            self.states.append(snapshot(self.hub))


def hub_of(*components: object) -> StateHub:
    hub = StateHub()
    for component in components:
        hub.add(component, type(component).__name__)
    return hub


def replay(hub: StateHub, events: Sequence[Event], *, views: Views = True) -> None:
    """Replay ``events`` as recovery does: their journal text, views where the hub has them.

    ``views=False``: every payload whole to ``replay_event`` (what recovery did before views);
    ``"groups"``: the rows as the journal's reader process sends them (a long tail at boot).
    """
    if not views:
        for topic, payload in events:
            if topic in hub.topics:
                hub.replay(topic, payload)
        return
    rows = [
        (seq, topic, fast_dumps(payload))
        for seq, (topic, payload) in enumerate(events, 1)
        if topic in hub.topics
    ]
    if views == "groups":
        assert replay_as_the_reader_sends(hub, rows) == len(rows)
    else:
        assert replay_rows(hub, rows, TYPES) == len(rows)


def test_the_components_are_stateful_under_distinct_keys() -> None:
    b = Bench()
    assert isinstance(b.paper, Stateful)
    assert isinstance(b.positions, Stateful)
    hub = hub_of(b.paper, b.positions)
    assert hub.keys == ["execution.paper", "execution.portfolio"]
    assert b.positions.state_topics == {"exec:order_event", "portfolio:position_update"}
    assert b.paper.state_topics == {"risk:approved_intent", "exec:order_event", "market:kline"}
    assert isinstance(b.paper, ViewReplaying)
    assert isinstance(b.positions, ViewReplaying)
    # Bars and position updates from their views; fills and approvals whole.
    assert dict(hub.views) == {"market:kline": BarView, "portfolio:position_update": PositionView}
    idle = Bench("execution.venue=bybit")
    assert idle.paper.state_topics == frozenset()  # it replays nothing: no bar is read for it
    assert hub_of(idle.paper, idle.positions).topics == b.positions.state_topics


# -- the ledger ----------------------------------------------------------------------------

prices = st.integers(1, 10**6).map(lambda n: Decimal(n).scaleb(-2))
quantities = st.integers(1, 10**5).map(lambda n: Decimal(n).scaleb(-3))
fees = st.integers(0, 10**4).map(lambda n: Decimal(n).scaleb(-4))
fee_assets = st.sampled_from(("", "USDT", "base", "BNB"))
"""Quote, the symbol's base coin (the fee then a share of the quantity), or a coin not valued."""
LedgerOp = tuple[str, Side, Decimal, Decimal, Decimal, str]
ledger_ops = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS), st.sampled_from(Side), quantities, prices, fees, fee_assets
    ),
    max_size=20,
)


def apply_ops(ledger: Ledger, ops: Sequence[LedgerOp]) -> None:
    for symbol, side, qty, price, fee, asset in ops:
        if fee > Decimal("0.9"):  # about one op in ten is a mark instead
            ledger.mark(symbol, price)
        elif asset == "base":
            base = symbol.removesuffix("USDT")
            ledger.fill(symbol, side, qty, price, qty * fee / 2, fee_asset=base)  # fee < qty
        else:
            ledger.fill(symbol, side, qty, price, fee, fee_asset=asset)


@given(ledger_ops, ledger_ops)
def test_a_restored_ledger_equals_the_exported_one_and_goes_on_alike(
    before: list[LedgerOp], after: list[LedgerOp]
) -> None:
    ledger = Ledger(D(10_000))
    apply_ops(ledger, before)
    exported = ledger.export()
    restored = Ledger.restore(json.loads(json.dumps(exported)))
    assert restored.export() == exported
    assert restored.posted == ledger.posted == len(ledger.entries)
    apply_ops(ledger, after)
    apply_ops(restored, after)
    assert restored.export() == ledger.export()
    assert [e.seq for e in restored.entries] == list(range(exported["entries"], restored.posted))
    # The identities of the books hold for the restored ledger too (checked in exact arithmetic).
    exact = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    with decimal.localcontext(exact):
        assert sum(restored.balances.values(), D(0)) == 0
        change = restored.equity() - restored.starting_cash
        assert change == restored.realized + restored.unrealized() - restored.fees


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("cash",), "9999", "account cash holds"),
        (("balances", "fees"), "1", "sum to 0.8, not 0"),
        (("positions", "BTCUSDT", "cost"), "0", "asset:BTCUSDT holds"),
        (("positions", "BTCUSDT", "realized"), "5", "realized is"),
        (("positions", "BTCUSDT", "mark"), "NaN", "not a finite number"),
        (("unvalued_fees", "BNB"), "-1", "unvalued fees in BNB without a fees:BNB posting"),
        (("unvalued_fees", "BNB"), "NaN", "not a finite number"),
        (("balances", "fees:BNB"), "0", "accounts no position or fee explains: fees:BNB"),
    ],
)
def test_a_ledger_state_that_does_not_add_up_is_refused(
    path: tuple[str, ...], value: str, match: str
) -> None:
    ledger = Ledger(D(1_000))
    ledger.fill("BTCUSDT", Side.BUY, D(2), D(100), D("0.1"))
    ledger.fill("BTCUSDT", Side.SELL, D(1), D(110), D("0.1"))
    state = ledger.export()
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        Ledger.restore(state)


# -- any journal prefix rebuilds the live state ---------------------------------------------


@attrs.frozen
class BarStep:
    symbol: str
    open: Decimal
    close: Decimal
    volume: Decimal
    interval: str
    kind: str
    """``next`` bar, ``open`` (the next one, not closed), ``again`` (the last closed bar's start
    once more) or ``earlier`` (the bar before it): the venue takes only the first kind."""


@attrs.frozen
class ApprovalStep:
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    offset: Decimal
    reduce_only: bool
    again: int | None
    """Repeat the intent of the n-th earlier approval (a duplicate), when there is one."""


@attrs.frozen
class CancelStep:
    pick: int


levels = st.integers(50, 150).map(Decimal)
symbols = st.sampled_from((*SYMBOLS, SYMBOLS[0], SYMBOLS[0]))  # mostly one: orders meet bars
bar_steps = st.builds(
    BarStep,
    symbols,
    levels,
    levels,
    st.integers(0, 8).map(Decimal),
    st.sampled_from(("1", "1", "1", "1", "5")),
    st.sampled_from(("next", "next", "next", "next", "next", "open", "again", "earlier")),
)
approval_steps = st.builds(
    ApprovalStep,
    symbols,
    st.sampled_from(Side),
    st.integers(1, 30).map(lambda n: Decimal(n).scaleb(-1)),
    st.sampled_from(OrderType),
    st.integers(-5, 5).map(Decimal),
    st.sampled_from((False, False, True)),
    st.integers(-100, 20).map(lambda n: n if n >= 0 else None),  # about one in six
)
orders_in = st.integers(0, 4).flatmap(
    lambda n: st.builds(CancelStep, st.integers(0, 5)) if n == 0 else approval_steps
)
steps = st.lists(
    st.tuples(st.lists(orders_in, max_size=3), bar_steps), min_size=2, max_size=12
).map(lambda rounds: [step for orders, bar in rounds for step in (*orders, bar)])
"""Rounds of a few approvals (or cancels) followed by a bar, so that most orders meet bars."""


def run_step(b: Bench, step: BarStep | ApprovalStep | CancelStep, intents: list[str]) -> None:
    if isinstance(step, BarStep):
        high, low = max(step.open, step.close) + 2, min(step.open, step.close) - 2
        last = b.bars.get(step.symbol)
        if step.kind in ("again", "earlier") and last:
            start = last[-1].start_ts - (BAR_MS if step.kind == "earlier" else 0)
            bar = KlineEvent(
                b.market.meta(),
                exchange="test",
                symbol=step.symbol,
                interval=step.interval,
                start_ts=start,
                end_ts=start + BAR_MS - 1,
                open=step.open,
                high=high,
                low=low,
                close=step.close,
                volume=step.volume,
                closed=True,
            )
            b.market.publish(MARKET_KLINE, bar)
            return
        b.bar(
            step.open,
            high,
            low,
            step.close,
            step.volume,
            symbol=step.symbol,
            interval=step.interval,
            closed=step.kind != "open",
        )
    elif isinstance(step, ApprovalStep):
        if step.again is not None and intents:
            intent_id = intents[step.again % len(intents)]
        else:
            intent_id = f"i-{len(intents)}"
        intents.append(intent_id)
        bars = b.bars.get(step.symbol)
        level = str((bars[-1].close if bars else D(100)) + step.offset)
        b.approve(
            step.side,
            str(step.qty),
            step.order_type,
            limit=level if step.order_type is OrderType.LIMIT else None,
            stop=level if step.order_type is OrderType.STOP else None,
            symbol=step.symbol,
            reduce_only=step.reduce_only,
            intent_id=intent_id,
        )
    else:
        working = asyncio.run(b.paper.open_orders())
        if working:
            asyncio.run(b.paper.cancel(working[step.pick % len(working)].order_id))


def check_replay(
    hub: StateHub,
    events: Sequence[Event],
    start: int,
    boundaries: Sequence[int],
    states: Sequence[dict[str, Any]],
    *,
    views: Views = True,
) -> None:
    """Replay ``events[start:]`` into ``hub``; at every boundary its state is the live one."""
    done = start
    for end, state in zip(boundaries, states, strict=True):
        if end < start:
            continue
        replay(hub, events[done:end], views=views)
        done = end
        assert snapshot(hub) == state


@settings(deadline=None)
@given(st.sampled_from(("next_open", "close")), steps, st.booleans(), st.data())
def test_replaying_any_journal_prefix_rebuilds_the_live_state(
    fill: str,
    plan: list[BarStep | ApprovalStep | CancelStep],
    base_fees: bool,
    data: st.DataObject,
) -> None:
    sets = (
        f"execution.fill={fill}",
        "execution.max_volume_share=0.5",
        "execution.slippage_bps=3",
        f"execution.spot_buy_fee_in_base={str(base_fees).lower()}",  # buys pay fees in BTC/ETH
    )
    live = Bench(*sets)
    asyncio.run(live.start())
    hub = hub_of(live.paper, live.positions)
    journal = Journal(hub)
    live.bus.subscribe_all(journal)  # last: it sees each event after every component did
    boundaries: list[int] = []
    states: list[dict[str, Any]] = []
    intents: list[str] = []
    for step in plan:
        run_step(live, step, intents)
        boundaries.append(len(journal.events))
        states.append(snapshot(hub))
    events = journal.events
    views: Views
    # Bars and updates from their views, as at boot: from the text and from the reader
    # process's groups; then every payload whole.
    for views in (True, "groups", False):
        # From nothing: the journal alone, prefix by prefix.
        fresh = Bench(*sets)
        hub = hub_of(fresh.paper, fresh.positions)
        check_replay(hub, events, 0, boundaries, states, views=views)
        # From a snapshot taken after any event (mid-cascade too): the rest of its cascade leads
        # to the live state. ``restore`` replaces the whole state, so one set of components
        # serves.
        fresh = Bench(*sets)
        restored = hub_of(fresh.paper, fresh.positions)
        for j, state in enumerate(journal.states):
            assert restored.restore(copy.deepcopy(state)) == []
            assert snapshot(restored) == state
            end = next(k for k, end in enumerate(boundaries) if end > j)
            bounds, wanted = boundaries[end : end + 1], states[end : end + 1]
            check_replay(restored, events, j + 1, bounds, wanted, views=views)
        # And from a drawn one through to the end of the journal.
        if events:
            j = data.draw(st.integers(0, len(events) - 1), label="snapshot after event")
            restored.restore(copy.deepcopy(journal.states[j]))
            check_replay(restored, events, j + 1, boundaries, states, views=views)


# -- restarts of the paper venue -------------------------------------------------------------


class Run:
    """One run of the paper venue and the portfolio, with its journal."""

    def __init__(self, *sets: str, before: Run | None = None) -> None:
        self.sets = sets
        self.bench = Bench(*sets)
        if before is not None:  # the market goes on where the previous run stopped
            self.bench.bars = {s: list(bars) for s, bars in before.bench.bars.items()}
            self.bench.clock.advance_to(before.bench.clock.now_ms())
        self.hub = hub_of(self.bench.paper, self.bench.positions)
        self.journal = Journal(self.hub)

    async def start(self) -> Run:
        await self.bench.start()
        self.bench.bus.subscribe_all(self.journal)
        return self

    async def restart(self, *, upto: int | None = None, snapshot_after: int | None = None) -> Run:
        """A new run recovered from this one's journal (``upto`` events of it survived)."""
        new = Run(*self.sets, before=self)
        events = self.journal.events[:upto]
        start = 0
        if snapshot_after is not None:
            new.hub.restore(copy.deepcopy(self.journal.states[snapshot_after]))
            start = snapshot_after + 1
        await new.start()
        replay(new.hub, events[start:])
        new.hub.recovered()
        return new


async def test_a_pending_next_open_order_survives_a_restart_and_fills_once() -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    approved = first.bench.approve(Side.BUY, 2, intent_id="i-1")
    assert first.bench.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    second = await first.restart()  # killed: no shutdown, no cancellation
    b = second.bench
    assert b.orders == []  # recovery published no order event
    assert [o.order_id for o in await b.paper.open_orders()] == [approved.order_id]
    b.bar(103, 104, 102, 103)
    (fill,) = b.fills()
    assert (fill.order_id, fill.last_fill_qty, fill.last_fill_price) == (
        approved.order_id,
        D(2),
        D(103),
    )
    b.bar(105, 106, 104, 105)
    b.bar(107, 108, 106, 107)
    assert len(b.fills()) == 1
    assert b.positions.ledger.position("BTCUSDT").qty == D(2)
    assert b.positions.fills == 1
    assert await b.paper.open_orders() == []


@pytest.mark.parametrize(
    ("order_type", "price", "touch"),
    [
        (OrderType.LIMIT, "95", (96, 97, 94, 96)),
        (OrderType.STOP, "105", (104, 106, 103, 105)),
    ],
)
async def test_a_resting_order_survives_a_restart_from_a_snapshot_and_fills_once(
    order_type: OrderType, price: str, touch: tuple[int, int, int, int]
) -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    limit, stop = (price, None) if order_type is OrderType.LIMIT else (None, price)
    approved = first.bench.approve(Side.BUY, 1, order_type, limit=limit, stop=stop, intent_id="i-1")
    first.bench.bar(100, 101, 99, 100)  # not touched
    mid = len(first.journal.events) - 1
    first.bench.bar(100, 101, 98, 99)  # not touched either: only in the journal after it
    second = await first.restart(snapshot_after=mid)
    b = second.bench
    b.bar(100, 101, 99, 100)
    assert b.fills() == []
    b.bar(*touch)
    b.bar(*touch)
    (fill,) = b.fills()
    assert fill.order_id == approved.order_id
    assert fill.last_fill_price == D(price)
    assert b.positions.ledger.position("BTCUSDT").qty == D(1)


async def test_a_duplicate_approval_after_a_restart_is_ignored() -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(Side.BUY, 1, intent_id="i-1")
    first.bench.bar(100, 101, 99, 100)  # filled
    second = await first.restart()
    b = second.bench
    b.approve(Side.BUY, 1, intent_id="i-1")  # the same intent, approved again
    b.approve(Side.BUY, 1, intent_id="i-2")  # a new one
    b.bar(100, 101, 99, 100)
    assert b.paper.duplicates == 1
    assert {e.order_id for e in b.orders} == {"sc-1:i-2"}
    assert b.positions.ledger.position("BTCUSDT").qty == D(2)
    assert b.paper.book.position("BTCUSDT").qty == D(2)


async def test_recovered_publishes_every_position_flat_ones_too_and_no_order_event() -> None:
    first = await Run("execution.fee_bps_taker=10").start()
    for symbol in SYMBOLS:
        first.bench.bar(100, 101, 99, 100, symbol=symbol)
    first.bench.approve(Side.BUY, 2, intent_id="i-1")
    first.bench.approve(Side.SELL, 1, symbol="ETHUSDT", intent_id="i-2")
    first.bench.approve(Side.BUY, 1, OrderType.LIMIT, limit="50", intent_id="i-3")
    for symbol in SYMBOLS:
        first.bench.bar(100, 101, 99, 102, symbol=symbol)
    first.bench.approve(Side.BUY, 1, symbol="ETHUSDT", intent_id="i-4")
    first.bench.bar(100, 101, 99, 102, symbol="ETHUSDT")  # ETH is flat again
    live = [first.bench.positions.update(symbol) for symbol in SYMBOLS]
    assert [u.qty for u in live] == [D(2), D(0)]
    second = await first.restart()
    b = second.bench
    assert b.orders == []
    # The flat ETHUSDT too: with nothing open it would be the only word of the cash and equity.
    figures = [(u.symbol, u.qty, u.mark_price, u.equity, u.cash) for u in b.updates]
    assert figures == [(u.symbol, u.qty, u.mark_price, u.equity, u.cash) for u in live]
    assert {u.meta.source.value for u in b.updates} == {"trading"}
    assert b.positions.fills == first.bench.positions.fills == 3
    assert second.hub.export() == first.hub.export()
    assert [o.order_id for o in await b.paper.open_orders()] == ["sc-1:i-3"]


async def test_an_approval_whose_answer_the_journal_lost_is_answered_not_filled() -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(Side.BUY, 1, intent_id="i-1")
    topics = [topic for topic, _ in first.journal.events]
    assert topics[-3:] == ["risk:approved_intent", "exec:order_event", "exec:order_event"]
    second = await first.restart(upto=len(topics) - 2)  # the crash lost submitted + accepted
    b = second.bench
    assert [(e.status, e.last_fill_qty) for e in b.orders] == [(S.ACCEPTED, None)]
    b.bar(104, 105, 103, 104)
    assert [(e.status, e.last_fill_price) for e in b.fills()] == [(S.FILLED, D(104))]
    assert b.positions.ledger.position("BTCUSDT").qty == D(1)


async def test_a_fill_already_in_a_snapshot_is_not_booked_twice() -> None:
    first = await Run("execution.max_volume_share=0.5").start()
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(Side.BUY, 3, intent_id="i-1")
    first.bench.bar(101, 102, 100, 101, volume=2)  # fills 1 of 3
    topics = [topic for topic, _ in first.journal.events]
    kline = len(topics) - 1 - topics[::-1].index("market:kline")
    assert topics[kline + 1] == "exec:order_event"  # the fill, still queued at the snapshot
    state = first.journal.states[kline]["execution.paper"]
    assert state["counters"]["fills"] == 1  # the venue had filled it when the snapshot ran
    assert D(state["open_orders"][0]["filled"]) == 1
    second = await first.restart(snapshot_after=kline)
    b = second.bench
    assert b.paper.book.position("BTCUSDT").qty == D(1)
    assert b.positions.ledger.position("BTCUSDT").qty == D(1)
    assert b.paper.fills == b.positions.fills == 1
    assert second.hub.export() == first.hub.export()
    b.bar(101, 102, 100, 101, volume=10)
    assert [e.last_fill_qty for e in b.fills()] == [D(2)]
    assert b.positions.ledger.position("BTCUSDT").qty == D(3)


async def test_a_clipped_reduce_only_order_is_rebuilt_with_its_clipped_qty() -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(Side.BUY, 1, intent_id="i-1")
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(
        Side.SELL, 3, OrderType.LIMIT, limit="150", reduce_only=True, intent_id="i-2"
    )
    (order,) = first.hub.export()["execution.paper"]["open_orders"]
    assert (order["qty"], order["request"]["qty"]) == ("1", "3")
    second = await first.restart()
    assert second.hub.export() == first.hub.export()


async def test_a_bar_without_volume_does_not_trigger_a_stop() -> None:
    first = await Run().start()
    first.bench.bar(100, 101, 99, 100)
    first.bench.approve(Side.BUY, 1, OrderType.STOP, stop="105", intent_id="i-1")
    first.bench.bar(104, 110, 103, 108, volume=0)  # through the stop, but nothing traded
    (order,) = first.hub.export()["execution.paper"]["open_orders"]
    assert order["triggered"] is False
    second = await first.restart()
    assert second.hub.export() == first.hub.export()
    b = second.bench
    b.bar(100, 101, 99, 100)  # below the stop: an untriggered stop does not fill
    assert b.fills() == []
    b.bar(104, 106, 103, 105)
    assert [e.last_fill_price for e in b.fills()] == [D(105)]


async def test_the_venue_books_no_mark_when_asked_for_positions() -> None:
    b = await Bench().start()
    hub = hub_of(b.paper, b.positions)
    b.bar(100, 101, 99, 100)
    b.approve(Side.BUY, 1)
    b.bar(100, 101, 99, 100)
    b.bar(120, 121, 119, 120)
    before = snapshot(hub)
    (position,) = await b.paper.positions()
    assert (position.mark_price, position.unrealized_pnl) == (D(120), D(20))
    assert (await b.paper.wallet()).equity == D(10_020) - D("0.055")
    assert snapshot(hub) == before


# -- Bybit: state and reconciliation against the fake REST server ---------------------------


@pytest.fixture
def server() -> Iterator[FakeBybitHTTP]:
    with FakeBybitHTTP() as fake:
        yield fake


class BybitRun:
    """One run of the Bybit venue and the portfolio against the fake, with its journal."""

    def __init__(self, server: FakeBybitHTTP, *sets: str) -> None:
        self.bench = BybitBench(server, *sets)
        self.hub = hub_of(self.bench.venue, self.bench.positions)
        self.journal = Journal()

    async def start(self) -> BybitRun:
        await self.bench.venue.start()
        await self.bench.positions.start()
        self.bench.bus.subscribe_all(self.journal)
        return self

    async def stop(self) -> None:
        await self.bench.bus.drain(5)
        await self.bench.venue.stop()


@pytest.fixture
async def runs(server: FakeBybitHTTP) -> AsyncIterator[list[BybitRun]]:
    made: list[BybitRun] = []
    yield made
    for run in made:
        await run.stop()


async def bybit_run(
    runs: list[BybitRun],
    server: FakeBybitHTTP,
    *,
    restore: dict[str, Any] | None = None,
    events: Sequence[Event] = (),
) -> BybitRun:
    run = BybitRun(server)
    runs.append(run)
    if restore is not None:
        run.hub.restore(copy.deepcopy(restore))
    await run.start()
    replay(run.hub, events)
    run.hub.recovered()
    return run


def held(qty: str) -> list[dict[str, str]]:
    return [{"symbol": "BTCUSDT", "side": "Buy", "size": qty, "avgPrice": "100"}]


@pytest.mark.network
async def test_bybit_state_is_rebuilt_from_its_events_and_goes_on_after_a_restart(
    server: FakeBybitHTTP, runs: list[BybitRun]
) -> None:
    first = await bybit_run(runs, server)
    assert isinstance(first.bench.venue, Reconciling)
    resting = await first.bench.place(Side.SELL, "1", OrderType.LIMIT, limit="120", intent_id="a")
    market = await first.bench.place(Side.BUY, "0.5", intent_id="b")
    server.fill(first.bench.link(market), "0.2", "100", "0.01")
    assert await first.bench.venue.poll() == 1
    state = snapshot(first.hub)
    assert [o["order_id"] for o in state["execution.bybit"]["open_orders"]] == [
        resting.order_id,
        market.order_id,
    ]
    first_requests = len(server.requests)
    # Killed; the next run has the journal only.
    second = await bybit_run(runs, server, events=first.journal.events)
    assert snapshot(second.hub) == state
    b = second.bench
    assert b.orders == []
    assert len(server.requests) == first_requests  # recovery itself asks Bybit nothing
    again = await b.place(Side.SELL, "1", OrderType.LIMIT, limit="120", intent_id="a")
    assert b.of(again.order_id) == []
    assert len(server.calls(CREATE)) == 2
    server.fill(first.bench.link(market), "0.3", "101", "0.02")
    assert await b.venue.poll() == 1
    (fill,) = [e for e in b.orders if e.last_fill_qty]
    assert (fill.status, fill.last_fill_qty, fill.last_fill_price, fill.fee) == (
        S.FILLED,
        D("0.3"),
        D(101),
        D("0.02"),
    )
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")
    assert b.positions.fills == 2


@pytest.mark.network
async def test_reconcile_publishes_what_bybit_did_while_down_and_invents_nothing(
    server: FakeBybitHTTP, runs: list[BybitRun]
) -> None:
    first = await bybit_run(runs, server)
    filled = await first.bench.place(Side.BUY, "0.5", intent_id="filled")
    gone = await first.bench.place(Side.BUY, "1", OrderType.LIMIT, limit="90", intent_id="gone")
    still = await first.bench.place(Side.BUY, "1", OrderType.LIMIT, limit="80", intent_id="open")
    state = snapshot(first.hub)
    orders = state["execution.bybit"]["open_orders"]
    lost = dict(orders[0], order_id="sc-1:lost", client_order_id="pb-lost", status="accepted")
    unsent = dict(orders[0], order_id="sc-1:unsent", client_order_id="pb-unsent")
    unsent["status"] = "submitted"
    orders.extend([lost, unsent])
    # While the bot was down:
    server.fill(first.bench.link(filled), "0.5", "100", "0.03")
    server.set_status(first.bench.link(gone), "Cancelled", cancelType="CancelByAdmin")
    server.positions = held("0.5")
    second = await bybit_run(runs, server, restore=state)
    lines = await second.bench.venue.reconcile("alert")
    b = second.bench
    assert lines == [
        f"order {filled.order_id}: not open on Bybit, filled, filled 0.5 of 0.5 at 100",
        f"order {gone.order_id}: not open on Bybit, cancelled, filled 0 of 1",
        "order sc-1:lost: accepted in the state, but Bybit has no record of it; "
        "kept for poll(), nothing booked",
        "order sc-1:unsent: never reached Bybit, rejected",
    ]
    assert [(e.order_id, e.status, e.last_fill_qty) for e in b.orders] == [
        (filled.order_id, S.FILLED, D("0.5")),
        (gone.order_id, S.CANCELLED, None),
        ("sc-1:unsent", S.REJECTED, None),
    ]
    assert b.of(gone.order_id)[0].reason.startswith("venue_cancelled: CancelByAdmin")
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")
    open_now = [o["order_id"] for o in b.venue.export_state()["open_orders"]]
    assert open_now == [still.order_id, "sc-1:lost"]
    (alert,) = b.alerts
    assert alert.code == "bybit_reconciled"
    assert "sc-1:lost" in alert.message
    assert await b.venue.reconcile("alert") == [lines[2]]  # done once: nothing new to publish


@pytest.mark.network
@pytest.mark.parametrize("policy", ["adopt", "cancel", "alert"])
async def test_an_open_order_unknown_to_the_state_is_handled_by_policy(
    server: FakeBybitHTTP, runs: list[BybitRun], policy: str
) -> None:
    first = await bybit_run(runs, server)
    lost = await first.bench.place(Side.BUY, "0.5", intent_id="lost")
    link = first.bench.link(lost)
    server.fill(link, "0.2", "100")
    server.positions = held("0.2")
    second = await bybit_run(runs, server)  # its journal lost the order
    b = second.bench
    lines = await b.venue.reconcile(policy)
    what = f"unknown open order {server.order(link)['orderId']} (orderLinkId {link}: BTCUSDT Buy"
    assert lines[0].startswith(what)
    if policy == "adopt":
        assert lines == [
            f"{what} 0.5 Market, filled 0.2): adopted, partially_filled, filled 0.2 of 0.5 at 100"
        ]
        assert [(e.status, e.last_fill_qty, e.reason[:8]) for e in b.orders] == [
            (S.ACCEPTED, None, "adopted:"),
            (S.PARTIALLY_FILLED, D("0.2"), ""),
        ]
        assert b.positions.ledger.position("BTCUSDT").qty == D("0.2")  # Bybit's fill, booked
        third = await bybit_run(runs, server, events=second.journal.events)
        assert snapshot(third.hub) == snapshot(second.hub)
        assert len(third.bench.venue.export_state()["open_orders"]) == 1
        await b.place(Side.BUY, "0.5", intent_id="lost")  # its approval again: ignored
        assert len(server.calls(CREATE)) == 1
        server.fill(link, "0.3", "102")
        assert await b.venue.poll() == 1
        assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")
        return
    assert b.orders == []
    assert b.positions.ledger.position("BTCUSDT").qty == 0
    assert lines[1] == "position BTCUSDT: Bybit has 0.2, the portfolio 0; nothing booked"
    if policy == "cancel":
        assert lines[0].endswith(": cancelled")
        assert server.order(link)["orderStatus"] == "Cancelled"
        assert server.calls(CANCEL)[0].params["orderLinkId"] == link
    else:
        assert lines[0].endswith(": left alone (policy alert)")
        assert server.order(link)["orderStatus"] == "PartiallyFilled"
        assert server.calls(CANCEL) == []
    assert b.venue.export_state()["open_orders"] == []


@pytest.mark.network
async def test_a_position_that_differs_from_bybits_is_reported_never_booked(
    server: FakeBybitHTTP, runs: list[BybitRun]
) -> None:
    first = await bybit_run(runs, server)
    bought = await first.bench.place(Side.BUY, "0.5", intent_id="b")
    server.fill(first.bench.link(bought), "0.5", "100")
    await first.bench.venue.poll()
    server.positions = held("0.5")
    second = await bybit_run(runs, server, restore=snapshot(first.hub))
    assert [u.qty for u in second.bench.updates] == [D("0.5")]  # recovered() told the venue
    assert await second.bench.venue.reconcile("adopt") == []
    server.positions = [{"symbol": "ETHUSDT", "side": "Sell", "size": "2", "avgPrice": "10"}]
    third = await bybit_run(runs, server, restore=snapshot(second.hub))
    assert await third.bench.venue.reconcile("adopt") == [
        "position BTCUSDT: Bybit has 0, the portfolio 0.5; nothing booked",
        "position ETHUSDT: Bybit has -2, the portfolio 0; nothing booked",
    ]
    assert third.bench.orders == []
    assert third.bench.positions.ledger.position("BTCUSDT").qty == D("0.5")
    assert third.bench.positions.ledger.position("ETHUSDT").qty == 0


async def test_an_idle_bybit_venue_reconciles_nothing_and_a_bad_policy_is_refused() -> None:
    b = Bench()  # execution.venue = paper
    venue = BybitExecution(b.ctx("execution"), environ={})
    assert await venue.reconcile("cancel") == []
    with pytest.raises(ValueError, match="'forget' is not a valid ReconcilePolicy"):
        await venue.reconcile("forget")
    assert venue.export_state() == {"open_orders": [], "client_order_ids": []}


def test_the_bybit_venue_remembers_the_latest_client_ids_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bybit_module, "CLIENT_IDS_KEPT", 2)
    venue = BybitExecution(Bench().ctx("execution"), environ={})
    venue.restore_state({"open_orders": [], "client_order_ids": ["a", "b", "c"]})
    assert venue.export_state()["client_order_ids"] == ["b", "c"]  # the latest, oldest first
    # what submit, the replay and adoption add through
    remember(venue._client_ids, "d", None, bybit_module.CLIENT_IDS_KEPT)
    assert venue.export_state()["client_order_ids"] == ["c", "d"]
