"""``planes replay``: re-run a recorded run's market data and compare what the planes decide.

The recorded market events of one run go through the production planes again, under the
historical clock, and the intents and order events that come out are compared with the recorded
ones.

* **The run.** ``--run-id``, or by default the last run of the journal that has ``market:kline``
  events. One writer holds a journal at a time, so each run's events form one contiguous seq
  block: a single pass over the market-data topics finds every run's block (``find_runs``), and
  everything else is read inside the chosen one.
* **The source.** ``journal`` is a market-data source that this module registers as a plugin
  (hook ``planes_register_exchanges``, loaded with ``plugins.modules = ["cli.replay"]``,
  selected with ``market.source = "journal"``, configured by ``[plugins.settings."cli.replay"]``
  ``journal``, optional ``run_id``). It publishes the run's recorded ``market:kline``,
  ``market:ticker``, ``market:trade`` and ``market:orderbook_delta`` events in seq order, each
  at its recorded time (the historical clock is advanced to its ``meta.ts``; correlation ids
  are kept), then ``market:disconnected`` with reason ``end_of_data``, on which the
  Orchestrator stops the runtime. Like the ``replay`` source it plays once it is connected,
  subscribed and the lifecycle is RUNNING. The planes never read the journal: this module does,
  and only the bus carries the events to them.
* **The configuration** is the one given (``--config``, ``--set``: pass the recorded run's) with
  the recorded run's scenarios (the last ``strategy:scenarioEnabled`` of each: strategy,
  params, regime, version; all enabled, in the order its intents imply, see
  ``scenario_order``), the symbols it subscribed, the cash it started with when its first fill
  tells (``starting_cash``; else ``portfolio.cash``), ``runtime.mode = backtest`` under the
  historical clock from the run's first event, ``execution.venue = paper``, and
  ``storage.enabled = false`` with a scratch ``runtime.data_dir``: nothing is written beside
  the journal.
* **Fees** are read as the ledger books them (``planes.execution.ledger.fill_terms``, in the
  configuration's ``portfolio.quote``): the starting cash undoes the first fill's cash change
  (a quote fee is part of it, a base-coin or another coin's fee is not). Fees the recorded run
  paid in a coin the books cannot value are summed per coin into the report's
  ``unvalued_fees`` (present only when there are some) and named in the summary: the replay's
  paper venue charges its own fees, and the comparison below does not look at fees.
* **The comparison.** The sequences of ``(intent_id, scenario_id, symbol, side)`` of
  ``strategy:intent`` and of ``(client_order_id, status, filled_qty, avg_fill_price)`` of
  ``exec:order_event``, recorded vs replayed, position by position. ``matched`` is the length
  of the common prefix; ``first_divergence`` is the earlier (in event time) of the two first
  mismatches, with the entry on each side (``null`` where a sequence had ended).

Exit status: 0 deterministic, 1 diverged, 2 bad input (no journal, no such run, a recorded
scenario the runtime cannot build, an unwritable report). ``--report``'s directory is checked
before the replay runs; a report that still cannot be written afterwards is saved in a
temporary file, named on stderr (the summary is printed all the same).

* **A run that began from recovered state** (its ``state:recovery`` restored a snapshot or
  replayed journal events) is replayed from that same state: the replay's scratch data dir gets
  the journal as it stood when the run booted (every event before the run's first one) and the
  snapshots written before then, and the replay runs with ``storage.enabled = true`` on it, so
  its Orchestrator recovers exactly as the recorded run's did (the same snapshot, the same
  journal tail) before the first recorded bar is played. The recorded journal and its data dir
  are only read.

What a replay cannot reproduce, and reports as a divergence: scenario changes in the middle of
a run (enable, disable, rollback), which are not replayed, and a recovery whose snapshot has
since been deleted *and* whose journal no longer starts at seq 1 (the state cannot be rebuilt;
the summary says so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import structlog

from cli.backtest import keep_report, output_problem
from contracts.control import ControlState
from contracts.enums import Lifecycle
from contracts.execution import FeeKind, OrderEvent, PositionUpdate, fee_kind
from contracts.market import (
    END_OF_DATA,
    MarketDisconnected,
    MarketErrorEvent,
    MarketSubscribeRequest,
)
from contracts.meta import Payload
from contracts.ports import ComponentContext, ExchangeSpec
from contracts.state import StateRecovered
from contracts.strategy import Intent, ScenarioEnabled
from contracts.topics import (
    CONTROL_STATE,
    EXEC_ORDER_EVENT,
    MARKET_DISCONNECTED,
    MARKET_ERROR,
    MARKET_KLINE,
    MARKET_ORDERBOOK_DELTA,
    MARKET_SUBSCRIBE,
    MARKET_TICKER,
    MARKET_TRADE,
    PORTFOLIO_POSITION,
    STATE_RECOVERY,
    STRATEGY_INTENT,
    STRATEGY_SCENARIO_ENABLED,
    BotEventMap,
    Topic,
)
from planes.clock import HistoricalClock
from planes.config import Config, ConfigError, load_config, structure_config, to_tree
from planes.execution.ledger import fill_terms
from planes.logs import configure_logging
from planes.market.gateway import MarketGateway
from planes.runtime import Runtime, RuntimeFailedError, RuntimeStartError
from planes.storage.journal import JournalError, JournalReader, JournalRecord, decode, open_reader
from planes.storage.plane import data_paths
from planes.storage.snapshots import StateStore
from planes.tasks import cancel_and_wait
from plugins.hookspecs import hookimpl
from plugins.manager import PluginError

log = structlog.get_logger("planes.cli.replay")

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_USAGE = 2

EXCHANGE = "journal"
"""The source's name: ``market.source = "journal"``."""
PLUGIN = "cli.replay"
"""This module as a plugin: its name in ``plugins.modules`` and ``plugins.settings``."""
MARKET_DATA: Mapping[str, Topic[Any]] = {
    t.name: t for t in (MARKET_KLINE, MARKET_TICKER, MARKET_TRADE, MARKET_ORDERBOOK_DELTA)
}
"""The recorded topics the source plays back."""
CHANNELS: Mapping[str, str] = {
    "kline": MARKET_KLINE.name,
    "tickers": MARKET_TICKER.name,
    "trades": MARKET_TRADE.name,
    "orderbook": MARKET_ORDERBOOK_DELTA.name,
}
"""Subscription channel names (the Bybit ones) and the topic each selects."""
YIELD_EVERY = 32
"""Events between two turns given to the event loop (as the ``replay`` source does)."""
INTENT_FIELDS = ("intent_id", "scenario_id", "symbol", "side")
ORDER_FIELDS = ("client_order_id", "status", "filled_qty", "avg_fill_price")

_TYPES: Mapping[str, type[Payload]] = {name: topic.payload for name, topic in BotEventMap.items()}
_PROG = "planes replay"

IntentKey = tuple[str, str, str, str]
"""``INTENT_FIELDS`` of one ``strategy:intent``."""
OrderKey = tuple[str, str, str, str | None]
"""``ORDER_FIELDS`` of one ``exec:order_event`` (quantities and prices as exact strings)."""
K = TypeVar("K")


class ReplayInputError(ValueError):
    """The journal or the run cannot be replayed; the message says why."""


# -- runs -------------------------------------------------------------------------------------


@attrs.frozen
class RunSpan:
    """Where one run's events lie in a journal."""

    run_id: str
    first_seq: int
    """Its first market-data event."""
    last_seq: int
    """Its last market-data event."""
    market_events: int
    klines: int
    since_seq: int
    """Every event of the run comes after this seq (the previous run's last market event)."""
    until_seq: int | None
    """... and at or before this one (before the next run's first market event)."""


def find_runs(reader: JournalReader) -> list[RunSpan]:
    """Every run that has market data, in seq order; one pass over the market-data topics."""
    stats: dict[str, list[int]] = {}  # run_id -> [first seq, last seq, events, klines]
    kline = MARKET_KLINE.name
    for record in reader.read(topics=MARKET_DATA):
        entry = stats.get(record.run_id)
        if entry is None:
            stats[record.run_id] = [record.seq, record.seq, 1, int(record.topic == kline)]
        else:
            entry[1] = record.seq
            entry[2] += 1
            entry[3] += record.topic == kline
    ordered = sorted(stats.items(), key=lambda item: item[1][0])
    runs = []
    for i, (run_id, (first, last, events, klines)) in enumerate(ordered):
        since = ordered[i - 1][1][1] if i else 0
        until = ordered[i + 1][1][0] - 1 if i + 1 < len(ordered) else None
        runs.append(RunSpan(run_id, first, last, events, klines, since, until))
    return runs


def select_run(runs: Sequence[RunSpan], run_id: str | None, journal: Path) -> RunSpan:
    """The run called ``run_id``, or the last one with klines; ``ReplayInputError`` if none."""
    if run_id is None:
        with_klines = [run for run in runs if run.klines]
        if not with_klines:
            msg = f"{journal}: no run has market:kline events, so there is nothing to replay"
            raise ReplayInputError(msg)
        return with_klines[-1]
    for run in runs:
        if run.run_id == run_id:
            return run
    known = ", ".join(run.run_id for run in runs) or "none"
    msg = f"{journal}: run {run_id!r} has no market data there (runs with market data: {known})"
    raise ReplayInputError(msg)


def _run_records(
    reader: JournalReader,
    span: RunSpan,
    topics: Iterable[str] | None = None,
    since_seq: int = 0,
) -> Iterable[JournalRecord]:
    """The run's events (on ``topics`` when given) after ``since_seq``, in seq order."""
    records = reader.read(
        max(span.since_seq, since_seq),
        span.until_seq,
        topics=None if topics is None else sorted(topics),
    )
    return (record for record in records if record.run_id == span.run_id)


# -- the journal source -----------------------------------------------------------------------


class JournalSource:
    """The ``journal`` market-data source (see the module docstring)."""

    name = EXCHANGE

    def __init__(self, ctx: ComponentContext) -> None:
        settings = ctx.settings
        journal = settings.get("journal")
        if not isinstance(journal, str) or not journal:
            msg = (
                f'the journal source needs [plugins.settings."{PLUGIN}"] '
                'journal = "<path of a journal.sqlite3>"'
            )
            raise ValueError(msg)
        run_id = settings.get("run_id")
        if run_id is not None and not isinstance(run_id, str):
            msg = f'[plugins.settings."{PLUGIN}"] run_id must be a string, got {run_id!r}'
            raise ValueError(msg)
        self.path = Path(journal)
        self.endpoint = f"journal:{journal}"
        self._run_id = run_id or None
        self._bus = ctx.bus
        self._clock = ctx.clock
        self.span: RunSpan | None = None
        self._reader: JournalReader | None = None
        self.published = 0
        """How many recorded events have been published."""
        self.position = 0
        """The seq of the last recorded event played: ``connect()`` resumes after it."""
        self.failure: str | None = None
        """Why playback stopped before the end of the run (an unreadable event), if it did."""
        self._symbols: set[str] = set()
        self._topics: set[str] = set()
        self._subscribed = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()  # until a control plane says it is booting
        self._task: asyncio.Task[None] | None = None
        ctx.bus.subscribe(CONTROL_STATE, self._on_state)

    def _on_state(self, state: ControlState) -> None:
        if state.lifecycle in (Lifecycle.RUNNING, Lifecycle.PAUSED):
            self._running.set()
        else:
            self._running.clear()

    async def connect(self) -> None:
        """Open the journal and find the run (first time only), then play from ``position``.

        Idempotent; raises ``JournalError`` or ``ReplayInputError`` for a journal or a run
        that cannot be played.
        """
        if self._task is not None and not self._task.done():
            return
        if self._reader is None:
            reader = open_reader(self.path)
            self.span = select_run(find_runs(reader), self._run_id, self.path)
            self._reader = reader
            log.info(
                "journal_source.loaded",
                path=str(self.path),
                run_id=self.span.run_id,
                events=self.span.market_events,
                first_seq=self.span.first_seq,
                last_seq=self.span.last_seq,
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-source")

    async def disconnect(self) -> None:
        """Stop playback and wait for it (idempotent); ``connect()`` resumes."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Play ``symbols`` (none named: all) on ``channels`` (none named: every recorded one)."""
        bus = self._bus
        for channel in dict.fromkeys(channels):
            topic = CHANNELS.get(channel)
            if topic is None:
                message = f"the journal source plays {sorted(CHANNELS)}, not {channel!r}"
                bus.publish(
                    MARKET_ERROR,
                    MarketErrorEvent(
                        bus.meta(), self.name, "unsupported_channel", message, topic=channel
                    ),
                )
            else:
                self._topics.add(topic)
        self._symbols.update(symbols)
        self._subscribed.set()

    async def _run(self) -> None:
        await self._subscribed.wait()
        await self._running.wait()
        span = self.span
        assert span is not None  # noqa: S101 - connect() set it
        bus = self._bus
        try:
            await self._play(span)
        except (JournalError, ReplayInputError) as exc:
            # The data ends here: say why, then end it as a source that ran out would, so the
            # runtime stops instead of waiting for events that will never come.
            self.failure = str(exc)
            log.error("journal_source.failed", run_id=span.run_id, error=self.failure)  # noqa: TRY400 - the message is the point
            bus.publish(
                MARKET_ERROR,
                MarketErrorEvent(bus.meta(), self.name, "journal_unreadable", self.failure),
            )
        else:
            log.info("journal_source.end_of_data", run_id=span.run_id, events=self.published)
        bus.publish(
            MARKET_DISCONNECTED,
            MarketDisconnected(bus.meta(), self.name, END_OF_DATA, will_reconnect=False),
        )

    async def _play(self, span: RunSpan) -> None:
        """Publish the run's market events after ``position``, each at its recorded time."""
        reader = self._reader
        assert reader is not None  # noqa: S101 - connect() set it
        bus, clock = self._bus, self._clock
        publish, meta, sleep = bus.publish, bus.meta, asyncio.sleep
        # The historical clock's advance_to is pace without a coroutine per event.
        advance = clock.advance_to if isinstance(clock, HistoricalClock) else None
        symbols = self._symbols
        for record in _run_records(reader, span, self._topics or MARKET_DATA, self.position):
            payload = decode(record, _TYPES)
            if not symbols or getattr(payload, "symbol", None) in symbols:
                ts = max(record.ts, clock.now_ms())  # a recorded wall clock may have stepped back
                if advance is None:
                    await clock.pace(ts)
                elif advance(ts):  # a sleeper became due: let it (and what it starts) run
                    await sleep(0)
                    await sleep(0)
                stamped = attrs.evolve(payload, meta=meta(payload.meta.correlation_id))
                publish(MARKET_DATA[record.topic], stamped)
                self.published += 1
                if not self.published % YIELD_EVERY:
                    await sleep(0)
            self.position = record.seq


@hookimpl
def planes_register_exchanges() -> Sequence[ExchangeSpec]:
    """Register the ``journal`` market-data source (``market.source = "journal"``)."""
    return [ExchangeSpec(name=EXCHANGE, market_data=JournalSource)]


# -- what the run recorded --------------------------------------------------------------------


@attrs.frozen
class Recorded:
    """What the comparison and the replay's configuration need from the recorded run."""

    span: RunSpan
    start_ms: int
    """The time of the run's first event: the replay's historical clock starts there."""
    boot_seq: int
    """The last seq before the run's first event: the journal as the run found it at boot."""
    symbols: tuple[str, ...]
    scenarios: tuple[ScenarioEnabled, ...]
    """The last announcement of each scenario, in replay order."""
    intents: tuple[IntentKey, ...]
    intent_ts: tuple[int, ...]
    orders: tuple[OrderKey, ...]
    order_ts: tuple[int, ...]
    cash: Decimal | None
    """The cash the run started with, when its first fill tells."""
    recovery: StateRecovered | None
    unvalued_fees: Mapping[str, Decimal] = attrs.field(factory=dict)
    """Fees the run paid in coins its books could not value, per coin (upper case)."""


def intent_key(intent: Intent) -> IntentKey:
    """What the comparison looks at in an intent."""
    return (intent.intent_id, intent.scenario_id, intent.symbol, intent.side.value)


def order_key(event: OrderEvent) -> OrderKey:
    """What the comparison looks at in an order event."""
    price = event.avg_fill_price
    return (
        event.client_order_id,
        event.status.value,
        str(event.filled_qty),
        None if price is None else str(price),
    )


def starting_cash(
    first_fill: OrderEvent | None, update: PositionUpdate, quote: str = "USDT"
) -> Decimal:
    """The ledger's cash before the run's first fill, from the first position update.

    The first ``portfolio:position_update`` of a run is the one the first fill caused (the bus
    delivers in order), and a fill moves cash as the ledger books it in ``quote``:
    ``-signed qty * price``, less its fee when that is in quote; an update with no fill before
    it announces a recovered position, and its cash is the starting cash.
    """
    if first_fill is None or first_fill.last_fill_qty is None:
        return update.cash
    qty, price = first_fill.last_fill_qty, first_fill.last_fill_price
    if price is None:
        return update.cash
    terms = fill_terms(
        first_fill.symbol,
        first_fill.side,
        qty,
        price,
        first_fill.fee,
        fee_asset=first_fill.fee_asset,
        quote=quote,
    )
    return update.cash - terms.cash


def scenario_order(announced: Sequence[str], intents: Iterable[tuple[str, str, int]]) -> list[str]:
    """Order the scenarios as the recorded run's config did, as far as its intents tell.

    The StrategyManager asks the scenarios of a symbol in config order, but announces them
    sorted by id. Where two scenarios emitted intents for the same symbol at the same time
    (``(scenario_id, symbol, ts)`` in seq order), the first to appear came first in the config;
    the rest keep the announced order. Contradicting evidence leaves the announced order.
    """
    before: dict[str, set[str]] = {scenario: set() for scenario in announced}
    group: tuple[str, int] | None = None
    seen: list[str] = []
    for scenario, symbol, ts in intents:
        if (symbol, ts) != group:
            group, seen = (symbol, ts), []
        if scenario in before and scenario not in seen:
            if seen:
                before[scenario].add(seen[-1])
            seen.append(scenario)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(announced):
        ready = next((s for s in announced if s not in placed and before[s] <= placed), None)
        if ready is None:  # a cycle: no single config order explains the intents
            return list(announced)
        order.append(ready)
        placed.add(ready)
    return order


@attrs.define
class _Reading:
    """What ``read_recorded`` gathers in its pass over the run."""

    quote: str
    scenarios: dict[str, ScenarioEnabled] = attrs.field(factory=dict)
    symbols: dict[str, None] = attrs.field(factory=dict)
    intents: list[IntentKey] = attrs.field(factory=list)
    intent_ts: list[int] = attrs.field(factory=list)
    emitted: list[tuple[str, str, int]] = attrs.field(factory=list)
    orders: list[OrderKey] = attrs.field(factory=list)
    order_ts: list[int] = attrs.field(factory=list)
    first_fill: OrderEvent | None = None
    cash: Decimal | None = None
    recovery: StateRecovered | None = None
    unvalued: dict[str, Decimal] = attrs.field(factory=dict)

    def add(self, record: JournalRecord) -> None:
        if record.topic == PORTFOLIO_POSITION.name:
            if self.cash is None:  # only the first update tells; the others are not decoded
                update = decode(record, _TYPES)
                assert isinstance(update, PositionUpdate)  # noqa: S101 - the topic's class
                self.cash = starting_cash(self.first_fill, update, self.quote)
            return
        payload = decode(record, _TYPES)
        if isinstance(payload, Intent):
            self.intents.append(intent_key(payload))
            self.intent_ts.append(record.ts)
            self.emitted.append((payload.scenario_id, payload.symbol, record.ts))
        elif isinstance(payload, OrderEvent):
            self.orders.append(order_key(payload))
            self.order_ts.append(record.ts)
            if self.first_fill is None and payload.last_fill_qty:
                self.first_fill = payload
            if payload.last_fill_qty and payload.fee:
                self._fee(payload)
        elif isinstance(payload, ScenarioEnabled):
            # Popped first, so the dict keeps the order of the last announcements.
            self.scenarios.pop(payload.scenario_id, None)
            self.scenarios[payload.scenario_id] = payload
        elif isinstance(payload, StateRecovered):
            self.recovery = payload
        elif isinstance(payload, MarketSubscribeRequest):
            self.symbols.update(dict.fromkeys(payload.symbols))

    def _fee(self, fill: OrderEvent) -> None:
        """Sum a fill's fee per coin when the books cannot value it."""
        if fee_kind(fill.symbol, fill.fee_asset, self.quote) is FeeKind.OTHER:
            asset = fill.fee_asset.upper()
            self.unvalued[asset] = self.unvalued.get(asset, Decimal(0)) + fill.fee


_RECORDED_TOPICS = (
    STRATEGY_SCENARIO_ENABLED.name,
    STATE_RECOVERY.name,
    MARKET_SUBSCRIBE.name,
    STRATEGY_INTENT.name,
    EXEC_ORDER_EVENT.name,
    PORTFOLIO_POSITION.name,
)


def read_recorded(reader: JournalReader, span: RunSpan, quote: str = "USDT") -> Recorded:
    """Read what the run recorded: scenarios, symbols, intents, orders, cash, recovery, fees.

    ``quote`` is the recorded run's ``portfolio.quote``: fees are read as its books took them.
    """
    first = next(iter(_run_records(reader, span)), None)
    if first is None:  # unreachable: the span holds the run's market events
        raise ReplayInputError(f"run {span.run_id}: no events found")
    reading = _Reading(quote)
    for record in _run_records(reader, span, _RECORDED_TOPICS):
        reading.add(record)
    symbols = reading.symbols
    if not symbols:  # no subscription recorded: the symbols the data carries
        for record in _run_records(reader, span, MARKET_DATA):
            symbols[getattr(decode(record, _TYPES), "symbol", "")] = None
        symbols.pop("", None)
    order = scenario_order(list(reading.scenarios), reading.emitted)
    return Recorded(
        span=span,
        start_ms=first.ts,
        boot_seq=first.seq - 1,
        symbols=tuple(symbols),
        scenarios=tuple(reading.scenarios[s] for s in order),
        intents=tuple(reading.intents),
        intent_ts=tuple(reading.intent_ts),
        orders=tuple(reading.orders),
        order_ts=tuple(reading.order_ts),
        cash=reading.cash,
        recovery=reading.recovery,
        unvalued_fees=reading.unvalued,
    )


# -- the replay -------------------------------------------------------------------------------


def _iso_ms(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def began_recovered(recovery: StateRecovered | None) -> bool:
    """Whether a run's boot restored anything: a snapshot, or journaled events replayed."""
    return recovery is not None and bool(recovery.snapshot_id or recovery.journal_events_replayed)


def seed_data_dir(journal: Path, recorded: Recorded, data_dir: Path) -> int:
    """Give ``data_dir`` the journal and snapshots that ``recorded``'s run booted from.

    The journal is copied through SQLite's backup (committed rows only, the source untouched)
    and cut after ``recorded.boot_seq``; every snapshot of the journal's data dir that covers no
    later event is copied beside it. Return how many snapshots were copied.
    """
    target_journal, _, target_snapshots = data_paths(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(journal.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target_journal)
        try:
            source.backup(copy)
            copy.execute("DELETE FROM events WHERE seq > ?", (recorded.boot_seq,))
            copy.commit()
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot copy the journal {journal} to replay from: {exc}") from exc
    finally:
        source.close()
    copied = 0
    target_snapshots.mkdir(exist_ok=True)
    for path in StateStore(data_paths(journal.parent)[2]).list():
        if int(path.name[:12]) <= recorded.boot_seq:  # <journal_seq:012d>-<id>.json
            shutil.copy2(path, target_snapshots / path.name)
            copied += 1
    return copied


def replay_config(
    base: Config, journal: Path, recorded: Recorded, data_dir: Path, *, recover: bool = False
) -> Config:
    """``base`` set up to replay ``recorded`` from ``journal`` (see the module docstring).

    With ``recover``, ``data_dir`` holds what ``seed_data_dir`` put there and storage is on, so
    the replay boots from the run's recovered state; otherwise it starts flat, storage off.
    """
    tree = to_tree(base)
    start = _iso_ms(recorded.start_ms)
    tree["runtime"].update(mode="backtest", clock="historical", start=start, data_dir=str(data_dir))
    if recorded.symbols:
        tree["market"]["symbols"] = list(recorded.symbols)
    tree["market"]["source"] = EXCHANGE
    tree["storage"]["enabled"] = recover
    if recover:  # the recorded snapshot is as old as the recording: that is expected here
        tree["storage"]["stale_snapshot_s"] = 0.0
    tree["execution"]["venue"] = "paper"
    tree["control"]["stop_on_end_of_data"] = True
    tree["observability"]["status_interval_s"] = 0.0
    if recorded.cash is not None and not recover:
        tree["portfolio"]["cash"] = str(recorded.cash)
    tree["strategy"]["scenarios"] = [
        {
            "id": s.scenario_id,
            "strategy": s.strategy,
            "params": dict(s.params),
            "regime": s.regime or "",
            "version": s.version,
            "enabled": True,
        }
        for s in recorded.scenarios
    ]
    plugins = tree["plugins"]
    plugins["modules"] = list(dict.fromkeys([*plugins["modules"], PLUGIN]))
    plugins["settings"] = {
        **plugins["settings"],
        PLUGIN: {"journal": str(journal.resolve()), "run_id": recorded.span.run_id},
    }
    return structure_config(tree)


@attrs.define
class Replayed:
    """What the replay produced."""

    intents: list[IntentKey] = attrs.field(factory=list)
    intent_ts: list[int] = attrs.field(factory=list)
    orders: list[OrderKey] = attrs.field(factory=list)
    order_ts: list[int] = attrs.field(factory=list)
    events: int = 0
    """Recorded market events the journal source published."""
    failure: str | None = None
    """Why the journal source stopped early, if it did."""

    def on_intent(self, intent: Intent) -> None:
        """Keep an intent."""
        self.intents.append(intent_key(intent))
        self.intent_ts.append(intent.meta.ts)

    def on_order(self, event: OrderEvent) -> None:
        """Keep an order event."""
        self.orders.append(order_key(event))
        self.order_ts.append(event.meta.ts)


async def run_replay(config: Config) -> Replayed:
    """Run the runtime that ``replay_config`` describes until the data ends."""
    runtime = Runtime(config)
    runtime.assemble()
    replayed = Replayed()
    runtime.bus.subscribe(STRATEGY_INTENT, replayed.on_intent)
    runtime.bus.subscribe(EXEC_ORDER_EVENT, replayed.on_order)
    await runtime.run()
    for _, _, component in runtime.components:
        if isinstance(component, MarketGateway):
            source = component.sources.get(EXCHANGE)
            if isinstance(source, JournalSource):
                replayed.events = source.published
                replayed.failure = source.failure
    return replayed


# -- the comparison ---------------------------------------------------------------------------


def first_mismatch(recorded: Sequence[K], replayed: Sequence[K]) -> int | None:
    """The first index where the sequences differ (one may end there); None when equal."""
    for index, (a, b) in enumerate(zip(recorded, replayed, strict=False)):
        if a != b:
            return index
    if len(recorded) != len(replayed):
        return min(len(recorded), len(replayed))
    return None


def _entry(fields: Sequence[str], keys: Sequence[tuple[Any, ...]], index: int) -> Any:
    return dict(zip(fields, keys[index], strict=True)) if index < len(keys) else None


def _at(times: Sequence[int], index: int) -> int | None:
    return times[index] if index < len(times) else None


def build_report(recorded: Recorded, replayed: Replayed) -> dict[str, Any]:
    """The report (see the module docstring); ``deterministic`` when nothing diverged."""
    sides: list[
        tuple[str, str, Sequence[str], Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]],
              Sequence[int], Sequence[int]]
    ] = [
        ("intent", "intents", INTENT_FIELDS, recorded.intents, replayed.intents,
         recorded.intent_ts, replayed.intent_ts),
        ("order", "orders", ORDER_FIELDS, recorded.orders, replayed.orders,
         recorded.order_ts, replayed.order_ts),
    ]  # fmt: skip
    report: dict[str, Any] = {
        "run_id": recorded.span.run_id,
        "events_replayed": replayed.events,
    }
    divergences: list[tuple[int, int, dict[str, Any]]] = []
    for rank, (kind, key, fields, was, now, was_ts, now_ts) in enumerate(sides):
        index = first_mismatch(was, now)
        matched = len(was) if index is None else index
        report[key] = {"recorded": len(was), "replayed": len(now), "matched": matched}
        if index is not None:
            times = [t for t in (_at(was_ts, index), _at(now_ts, index)) if t is not None]
            divergence = {
                "kind": kind,
                "index": index,
                "recorded": _entry(fields, was, index),
                "replayed": _entry(fields, now, index),
            }
            divergences.append((min(times), rank, divergence))
    report["first_divergence"] = min(divergences, key=lambda d: d[:2])[2] if divergences else None
    report["deterministic"] = not divergences
    if recorded.unvalued_fees:
        report["unvalued_fees"] = {a: str(fee) for a, fee in recorded.unvalued_fees.items()}
    return report


def summary(report: Mapping[str, Any]) -> str:
    """The lines ``planes replay`` prints."""
    lines = [f"run {report['run_id']}: {report['events_replayed']} market events replayed"]
    for key in ("intents", "orders"):
        counts = report[key]
        lines.append(
            f"  {key:<8}{counts['recorded']:>8} recorded{counts['replayed']:>8} replayed"
            f"{counts['matched']:>8} matched"
        )
    divergence = report["first_divergence"]
    if divergence is None:
        lines.append("deterministic: every intent and order event was reproduced")
    else:
        lines += [
            f"DIVERGED at {divergence['kind']} #{divergence['index']}:",
            f"  recorded: {json.dumps(divergence['recorded'])}",
            f"  replayed: {json.dumps(divergence['replayed'])}",
        ]
    unvalued = report.get("unvalued_fees")
    if unvalued:
        paid = ", ".join(f"{fee} {asset}" for asset, fee in unvalued.items())
        lines.append(f"note: the recorded run paid fees its books could not value: {paid}")
    return "\n".join(lines)


def _recovery_note(recovery: StateRecovered | None, snapshots: int) -> str | None:
    if recovery is None or not began_recovered(recovery):
        return None
    restored = (
        f"snapshot {recovery.snapshot_id}" if recovery.snapshot_id else "no snapshot"
    ) + f" + {recovery.journal_events_replayed} journal events"
    note = (
        f"note: the run began from recovered state ({restored}; positions: "
        f"{recovery.positions}, open orders: {recovery.open_orders}); the replay recovers the same"
    )
    if recovery.snapshot_id and not snapshots:
        note += (
            f", but snapshot {recovery.snapshot_id} is gone: it replays the whole journal before "
            "the run instead"
        )
    return note


def cmd_replay(args: argparse.Namespace) -> int:
    """``planes replay``: see the module docstring."""
    base = load_config(args.config, args.sets)
    journal = Path(args.journal)
    problem = None if args.report is None else output_problem(Path(args.report), "--report")
    if problem is not None:
        print(f"{_PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        reader = open_reader(journal)
        span = select_run(find_runs(reader), args.run_id, journal)
        recorded = read_recorded(reader, span, base.portfolio.quote)
    except (JournalError, ReplayInputError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("warning", base.logging.format.value, enabled=base.logging.enabled)
    recover = began_recovered(recorded.recovery)
    with tempfile.TemporaryDirectory(prefix="planes-replay-") as scratch:
        data_dir = Path(scratch) / "var"
        try:
            snapshots = seed_data_dir(journal, recorded, data_dir) if recover else 0
        except (JournalError, OSError) as exc:
            print(f"{_PROG}: run {span.run_id} cannot be replayed: {exc}", file=sys.stderr)
            return EXIT_USAGE
        note = _recovery_note(recorded.recovery, snapshots)
        if note:
            print(f"{_PROG}: {note}", file=sys.stderr)
        try:
            config = replay_config(base, journal, recorded, data_dir, recover=recover)
            replayed = asyncio.run(run_replay(config))
        except (ConfigError, RuntimeStartError, RuntimeFailedError, PluginError) as exc:
            print(f"{_PROG}: run {span.run_id} cannot be replayed: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if replayed.failure is not None:
        print(f"{_PROG}: run {span.run_id} cannot be replayed: {replayed.failure}", file=sys.stderr)
        return EXIT_USAGE
    report = build_report(recorded, replayed)
    status = EXIT_OK if report["deterministic"] else EXIT_DIVERGED
    if args.report is not None:
        text = json.dumps(report, indent=2) + "\n"
        try:
            Path(args.report).write_text(text, encoding="utf-8")
        except OSError as exc:
            status = EXIT_USAGE
            print(f"{_PROG}: cannot write --report {args.report}: {exc}", file=sys.stderr)
            kept = keep_report(text, prefix="planes-replay-")
            if kept is not None:
                print(f"{_PROG}: the report is saved in {kept} instead", file=sys.stderr)
    print(summary(report))
    return status
