"""The storage plane in a real runtime: journal, snapshots, recovery, registry, outbox.

Each test runs the production planes on the replay source under the historical clock, with the
storage plane on and ``runtime.data_dir`` in the test's tmp dir; a second runtime on the same
data dir is the restart.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

from contracts.control import ControlCommand
from contracts.enums import OrderType, ScenarioState, Side
from contracts.meta import Payload
from contracts.state import RegistryChanged, StateRecovered, StateSnapshot
from contracts.strategy import ScenarioDisabled
from contracts.system import Alert
from contracts.topics import CONTROL_COMMAND, MARKET_KLINE, STATE_RECOVERY, Topic
from planes.config import load_config
from planes.runtime import Runtime, RuntimeStartError
from planes.state import StateHub
from planes.storage import plane as storage_plane
from planes.storage.journal import EventJournal, open_reader
from planes.storage.plane import StoragePlane, data_paths
from planes.storage.registry import Registry
from tests.planes.execution.harness import Bench

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"


def make_runtime(data_dir: Path, *sets: str, data: Path = DATA) -> Runtime:
    config = load_config(
        None,
        [
            "runtime.mode=backtest",
            "runtime.clock=historical",
            "runtime.start=1970-01-01T00:00:00Z",
            f"runtime.data_dir={data_dir}",
            "market.source=replay",
            f"market.replay.path={data}",
            'market.symbols=["BTCUSDT"]',
            "observability.status_interval_s=0",
            'strategy.scenarios=[{id = "fast", strategy = "sma_cross", '
            'params = {fast = 3, slow = 8, qty = "0.5"}}]',
            "risk.stale_data_s=0",
            "execution.max_volume_share=1e12",
            "storage.snapshot_interval_s=0",
            *sets,
        ],
        environ={},
        use_default_file=False,
    )
    return Runtime(config)


class Tap:
    """Every event the runtime's bus delivers, in order."""

    def __init__(self, runtime: Runtime) -> None:
        runtime.assemble()
        self.events: list[tuple[str, Payload]] = []
        runtime.bus.subscribe_all(self._on)

    def _on(self, topic: Topic[Any], payload: Payload) -> None:
        self.events.append((topic.name, payload))

    def of(self, kind: type[Any]) -> list[Any]:
        return [p for _, p in self.events if isinstance(p, kind)]


def storage_of(runtime: Runtime) -> StoragePlane:
    return next(c for plane, _, c in runtime.components if isinstance(c, StoragePlane))


async def run(runtime: Runtime) -> None:
    await asyncio.wait_for(runtime.run(), 60)


async def test_every_event_is_journaled_once_in_order_with_contiguous_seq(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "var")
    tap = Tap(runtime)
    await run(runtime)
    journal, _, _ = data_paths(tmp_path / "var")
    records = list(open_reader(journal).read())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    seen = [name for name, _ in tap.events]
    # the journal holds what the bus delivered while storage was running, in the same order
    assert [r.topic for r in records] == seen[: len(records)]
    assert len(records) >= len(seen) - 5  # only the last few shutdown events come after it
    assert {r.run_id for r in records} == {storage_of(runtime).run_id} == {runtime.run_id}
    assert sum(r.topic == "market:kline" for r in records) == 500
    orders = [json.loads(r.payload) for r in records if r.topic == "exec:order_event"]
    fills = [o for o in orders if o["last_fill_qty"] is not None]
    assert fills, "the scenario traded"
    line = json.loads(records[0].to_json_line())
    assert set(line) == {"seq", "run_id", "topic", "source", "ts", "correlation_id", "payload"}


async def test_a_restart_recovers_the_state_the_first_run_ended_with(tmp_path: Path) -> None:
    first = make_runtime(tmp_path / "var")
    await run(first)
    ended = first.state.export()
    assert any(ended.values())

    second = make_runtime(tmp_path / "var", "market.replay.path=" + str(DATA))
    tap = Tap(second)
    at_recovery: dict[str, Any] = {}

    def capture(_: StateRecovered) -> None:
        at_recovery.update(second.state.export())

    second.bus.subscribe(STATE_RECOVERY, capture)
    await second.start()
    await second.stop()
    assert at_recovery == ended
    recovered = tap.of(StateRecovered)[0]
    assert recovered.ok
    assert recovered.snapshot_id is not None  # the first run's shutdown snapshot
    assert recovered.enabled_scenarios == 1
    journal, _, _ = data_paths(tmp_path / "var")
    records = list(open_reader(journal).read())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert len({r.run_id for r in records}) == 2


@pytest.mark.parametrize("reader_process", [False, True])
async def test_without_snapshots_the_journal_alone_rebuilds_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader_process: bool
) -> None:
    if reader_process:  # the journal's reader process reads even this short tail
        monkeypatch.setattr(storage_plane, "READER_PROCESS_FROM", 0)
    first = make_runtime(tmp_path / "var")
    await run(first)
    ended = first.state.export()
    _, _, snapshots = data_paths(tmp_path / "var")
    for path in snapshots.iterdir():
        path.unlink()
    second = make_runtime(tmp_path / "var")
    at_recovery: dict[str, Any] = {}
    second.assemble()
    second.bus.subscribe(STATE_RECOVERY, lambda _: at_recovery.update(second.state.export()))
    tap = Tap(second)
    await second.start()
    await second.stop()
    assert at_recovery == ended
    recovered = tap.of(StateRecovered)[0]
    assert recovered.snapshot_id is None
    assert recovered.journal_events_replayed > 0


def journal_a_paper_session(data_dir: Path) -> dict[str, Any]:
    """Journal a paper session over three symbols; return the venue's and portfolio's state.

    Three hundred bars a symbol, among them bars the venue leaves aside (not closed, a repeat,
    an older one, another interval), market orders that fill, partial fills, limit and stop
    orders still working at the end, a cancel and a duplicate approval: what the bars replayed
    from their views must leave exactly as their whole payloads do.
    """
    bench = Bench("execution.max_volume_share=0.5", "execution.fee_bps_taker=5")
    journal = EventJournal(data_paths(data_dir)[0], "recorded")
    journal.open()
    bench.bus.subscribe_all(lambda topic, payload: journal.append(topic.name, payload))
    asyncio.run(bench.start())
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    for i in range(300):
        for k, symbol in enumerate(symbols):
            price = 100 + (i * (k + 3)) % 17
            bench.bar(price, price + 2, price - 2, price + 1, 1 + i % 5, symbol=symbol)
            last = bench.bars[symbol][-1]
            if i % 7 == k or i == 299:  # bars the venue leaves aside (all of them at the end)
                odd = (
                    attrs.evolve(last, closed=False),
                    attrs.evolve(last, close=last.close + 1),
                    attrs.evolve(last, start_ts=last.start_ts - 60_000, end_ts=last.start_ts - 1),
                    attrs.evolve(last, interval="5"),
                )
                for bar in odd if i == 299 else odd[i % 4 : i % 4 + 1]:
                    bench.market.publish(MARKET_KLINE, bar)
            if i % 11 == k:
                side = Side.BUY if i % 2 else Side.SELL
                bench.approve(side, 3, symbol=symbol, intent_id=f"m-{symbol}-{i}")
        if i % 50 == 10:
            bench.approve(Side.BUY, 1, OrderType.LIMIT, limit="50", intent_id=f"limit-{i}")
            bench.approve(Side.BUY, 1, OrderType.STOP, stop="500", symbol="ETHUSDT",
                          intent_id=f"stop-{i}")  # fmt: skip
    bench.approve(Side.SELL, 3, symbol="SOLUSDT", intent_id="m-SOLUSDT-2")  # a duplicate
    working = asyncio.run(bench.paper.open_orders())
    asyncio.run(bench.paper.cancel(working[0].order_id))
    bench.approve(Side.SELL, 1, symbol="SOLUSDT", intent_id="last")  # waits for the next bar
    journal.close()
    state = StateHub()
    state.add(bench.paper, "paper")
    state.add(bench.positions, "positions")
    exported: dict[str, Any] = json.loads(json.dumps(state.export()))
    return exported


def test_replaying_bars_from_their_views_restores_what_decoding_every_payload_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = journal_a_paper_session(tmp_path / "recorded")
    assert len(live["execution.paper"]["open_orders"]) >= 5
    assert live["execution.paper"]["counters"]["fills"] > 100
    assert live["execution.paper"]["counters"]["duplicates"] == 1
    assert len(live["execution.paper"]["bars"]) == 3

    def recover(data_dir: Path) -> tuple[dict[str, Any], StateRecovered]:
        shutil.copytree(tmp_path / "recorded", data_dir)
        runtime = make_runtime(data_dir, "storage.snapshot_every_events=0")
        tap = Tap(runtime)
        at_recovery: dict[str, Any] = {}
        runtime.bus.subscribe(
            STATE_RECOVERY,
            lambda _: at_recovery.update(json.loads(json.dumps(runtime.state.export()))),
        )

        async def boot() -> None:
            await runtime.start()
            await runtime.stop()

        asyncio.run(boot())
        return at_recovery, tap.of(StateRecovered)[0]

    fast, fast_recovery = recover(tmp_path / "views")
    with monkeypatch.context() as patch:  # the rows read and matched by the reader process
        patch.setattr(storage_plane, "READER_PROCESS_FROM", 0)
        parsed, parsed_recovery = recover(tmp_path / "parsed")
    with monkeypatch.context() as patch:  # recovery as it was: every payload decoded whole
        patch.setattr(StateHub, "views", property(lambda _: {}))
        whole, whole_recovery = recover(tmp_path / "whole")
    assert fast_recovery.ok
    assert fast_recovery.journal_events_replayed == whole_recovery.journal_events_replayed
    assert fast == whole
    assert parsed == whole
    assert parsed_recovery.journal_events_replayed == whole_recovery.journal_events_replayed
    for key in ("execution.paper", "execution.portfolio"):
        assert fast[key] == live[key]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
async def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one_with_an_alert(
    tmp_path: Path, damage: str
) -> None:
    first = make_runtime(tmp_path / "var")
    await run(first)
    ended = first.state.export()
    _, _, snapshots = data_paths(tmp_path / "var")
    newest = sorted(snapshots.glob("*.json"))[-1]
    raw = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 2])
    else:
        newest.write_bytes(raw.replace(b'"qty"', b'"qtz"', 1) if b'"qty"' in raw else raw[:-2])
    second = make_runtime(tmp_path / "var")
    tap = Tap(second)
    at_recovery: dict[str, Any] = {}
    second.bus.subscribe(STATE_RECOVERY, lambda _: at_recovery.update(second.state.export()))
    await second.start()
    await second.stop()
    assert at_recovery == ended  # previous snapshot + the longer journal tail
    recovered = tap.of(StateRecovered)[0]
    assert recovered.ok
    assert any(newest.name in w for w in recovered.warnings)
    assert any(a.code == "snapshot_invalid" for a in tap.of(Alert))


async def test_scenario_commands_are_committed_before_they_take_effect(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "var", "market.replay.speed=0")
    tap = Tap(runtime)
    await runtime.start()
    cli = runtime.attach("cli")
    registry_path = data_paths(tmp_path / "var")[1]
    committed: list[str] = []

    def on_registry(event: RegistryChanged) -> None:
        # the row is in the database by the time anyone hears of the change
        reader = Registry(registry_path)
        try:
            record = reader.scenario(event.entity_id)
            assert record is not None
            committed.append(record.status.value)
        finally:
            reader.close()

    from contracts.topics import STATE_REGISTRY  # noqa: PLC0415

    runtime.bus.subscribe(STATE_REGISTRY, on_registry)
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.disable", ("fast",), "c1"))
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.retire", ("nope",), "c2"))
    await runtime.stop()
    assert committed == ["disabled"]
    assert [d.scenario_id for d in tap.of(ScenarioDisabled)] == ["fast"]
    assert any(a.code == "command_refused" and "nope" in a.message for a in tap.of(Alert))
    reader = Registry(registry_path)
    try:
        record = reader.scenario("fast")
        assert record is not None
        assert record.status is ScenarioState.DISABLED
        audit = reader.audit("fast")
        assert [a.command for a in audit][-1] == "scenario.disable"
        assert audit[-1].actor == "cli"
    finally:
        reader.close()
    # the operator's decision outlives the process: the config still says enabled
    again = make_runtime(tmp_path / "var")
    tap2 = Tap(again)
    await again.start()
    await again.stop()
    assert tap2.of(StateRecovered)[0].enabled_scenarios == 0


async def test_a_journal_that_cannot_be_opened_fails_the_boot_naming_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "journal.sqlite3").write_text("not a database")
    runtime = make_runtime(data_dir)
    with pytest.raises(RuntimeStartError, match=r"journal\.sqlite3"):
        await runtime.start()


@pytest.mark.parametrize("settle_s", [0, 600])  # a fill's settle time does not delay them
async def test_snapshots_come_every_so_many_events_so_a_crash_replays_only_the_tail(
    tmp_path: Path, settle_s: int
) -> None:
    runtime = make_runtime(
        tmp_path / "var",
        "storage.snapshot_every_events=200",
        f"storage.snapshot_after_change_s={settle_s}",
        "runtime.clock=realtime",
        "market.replay.speed=3600000",  # 1000 hourly bars a second: the loop gets its turns
    )
    tap = Tap(runtime)
    await run(runtime)
    taken = [s for s in tap.of(StateSnapshot) if s.reason == "change"]
    assert len(taken) >= 2
    seqs = [s.journal_seq for s in taken]
    assert seqs == sorted(seqs)
    # a crash now: the shutdown snapshot is gone, the last periodic one bounds the replay
    _, _, snapshots = data_paths(tmp_path / "var")
    newest = sorted(snapshots.glob("*.json"))[-1]
    newest.unlink()
    again = make_runtime(tmp_path / "var")
    tap2 = Tap(again)
    await again.start()
    await again.stop()
    recovered = tap2.of(StateRecovered)[0]
    assert recovered.ok
    assert recovered.snapshot_id is not None
    last = max(s.journal_seq for s in tap.of(StateSnapshot) if s.reason != "shutdown")
    total = max(s.journal_seq for s in tap.of(StateSnapshot))
    assert recovered.journal_events_replayed <= total - last


class FlakyNotifier:
    """Fails its first send with a rate limit (retry after 0.2 s), then delivers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.calls = 0

    async def send(self, text: str, *, dedupe_key: str) -> None:
        self.calls += 1
        if self.calls == 1:
            exc = RuntimeError("429 Too Many Requests")
            exc.retry_after_s = 0.2  # type: ignore[attr-defined]
            raise exc
        self.sent.append((text, dedupe_key))


async def test_alerts_reach_notifiers_through_the_outbox_once_despite_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    from contracts.enums import Severity  # noqa: PLC0415
    from contracts.meta import EventMeta, Source  # noqa: PLC0415
    from contracts.ports import NotifierSpec  # noqa: PLC0415
    from contracts.topics import OBSERVABILITY_ALERT  # noqa: PLC0415
    from planes.storage.outbox import Outbox  # noqa: PLC0415
    from plugins.builtin import BUILTIN_PLUGINS  # noqa: PLC0415
    from plugins.hookspecs import hookimpl  # noqa: PLC0415

    notifier = FlakyNotifier()
    module = types.ModuleType("planes_test_notifier")
    module.planes_register_notifiers = hookimpl(  # type: ignore[attr-defined]
        lambda: [NotifierSpec("pager", lambda _ctx: notifier)]
    )
    monkeypatch.setitem(sys.modules, "planes_test_notifier", module)
    config = make_runtime(
        tmp_path / "var",
        'storage.notifiers=["pager"]',
        "runtime.clock=realtime",
        "market.replay.speed=3600",  # one bar a second: the run lasts
    ).config
    runtime = Runtime(config, builtin=[*BUILTIN_PLUGINS, ("test", "planes_test_notifier")])
    await runtime.start()
    try:
        bus = runtime.bus
        meta = EventMeta(Source.SYSTEM, 1, "incident-1")
        for severity in (Severity.CRITICAL, Severity.CRITICAL, Severity.INFO):
            bus.publish(OBSERVABILITY_ALERT, Alert(meta, severity, "feed_stale", "no data"))
        for _ in range(100):
            if notifier.sent:
                break
            await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    # the duplicate was deduplicated, the info alert is below storage.notify_min_severity
    ((text, key),) = notifier.sent
    assert text == "[critical] feed_stale: no data"
    assert key.startswith("pager:feed_stale:incident-1:")  # + a digest of the text
    assert notifier.calls == 2
    outbox = Outbox(data_paths(tmp_path / "var")[1])
    try:
        assert outbox.backlog().get("sent") == 1
        (item,) = outbox.items()
        assert item.attempts == 2  # the rate-limited one and the delivery
    finally:
        outbox.close()
