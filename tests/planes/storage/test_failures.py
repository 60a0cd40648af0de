"""What the storage plane does when its own parts fail: a recovery that cannot rebuild the state,
a journal writer that dies mid-run, a notifier still sending while recovery resumes the outbox.

In process, with the graceful-restart test's runtime (a replay of hourly bars, one limit buy that
the eighth bar fills), on a data dir under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import time
import types
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.control import ControlState
from contracts.enums import Lifecycle, Severity
from contracts.execution import OrderEvent, PositionUpdate
from contracts.meta import EventMeta, Source
from contracts.ports import NotifierSpec
from contracts.state import JournalFailed, StateRecovered
from contracts.system import Alert, ErrorEvent
from contracts.topics import OBSERVABILITY_ALERT
from planes.runtime import Runtime, RuntimeFailedError, RuntimeStartError
from planes.state import StateHub
from planes.storage.journal import EventJournal, open_reader
from planes.storage.outbox import Outbox
from planes.storage.plane import data_paths
from planes.storage.snapshots import SnapshotError, StateStore
from plugins.builtin import BUILTIN_PLUGINS
from plugins.hookspecs import hookimpl
from tests.planes.storage.harness import PlanesRun, journal_records
from tests.planes.storage.test_graceful_restart import (
    LIMIT,
    QUIET,
    TOUCH,
    Tap,
    make_runtime,
    run,
    write_bars,
)
from tests.planes.storage.test_kill import SETTINGS as KILL_SETTINGS
from tests.planes.storage.test_plane import Tap as PlaneTap
from tests.planes.storage.test_plane import make_runtime as plane_runtime
from tests.planes.storage.test_plane import storage_of


def snapshot_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_paths(data_dir)[2].iterdir())


async def test_a_failed_recovery_writes_no_snapshot_and_the_next_boot_recovers_all(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    first = make_runtime(data_dir, write_bars(tmp_path / "a.csv", 0, [*QUIET, *TOUCH]))
    first_tap = Tap(first)
    await run(first)
    assert first_tap.of(PositionUpdate)[-1].qty == 1  # the limit buy filled on hour 7
    # No snapshot (as a crash before the first one leaves it) and a damaged fill row: the
    # recovery replays the whole journal and cannot decode that row.
    for path in StateStore(data_paths(data_dir)[2]).list():
        path.unlink()
    journal = data_paths(data_dir)[0]
    with sqlite3.connect(journal) as db:
        seq, payload = db.execute(
            "SELECT seq, payload FROM events WHERE topic = 'exec:order_event' "
            "AND payload LIKE '%\"filled\"%'"
        ).fetchone()
        db.execute("UPDATE events SET payload = '{\"broken' WHERE seq = ?", (seq,))
    db.close()

    second = make_runtime(data_dir, write_bars(tmp_path / "b.csv", 9, QUIET))
    second_tap = Tap(second)
    with pytest.raises(RuntimeStartError, match=f"state recovery failed.*seq {seq}"):
        await run(second)
    (failed,) = second_tap.of(StateRecovered)
    assert not failed.ok
    # A snapshot of the half-rebuilt state would claim the whole history up to its seq.
    assert snapshot_files(data_dir) == []

    with sqlite3.connect(journal) as db:
        db.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
    db.close()
    third = make_runtime(data_dir, write_bars(tmp_path / "c.csv", 9, QUIET))
    third_tap = Tap(third)
    await run(third)
    (recovered,) = third_tap.of(StateRecovered)
    assert recovered.ok
    assert recovered.snapshot_id is None
    assert recovered.journal_events_replayed > 0
    position = third_tap.of(PositionUpdate)[-1]
    assert (position.qty, position.avg_price) == (Decimal(1), LIMIT)


# -- the outbox ----------------------------------------------------------------------------


class SlowNotifier:
    """Takes ``delay_s`` per send and records each (text, dedupe key)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.sent: list[tuple[str, str]] = []

    async def send(self, text: str, *, dedupe_key: str) -> None:
        await asyncio.sleep(self.delay_s)
        self.sent.append((text, dedupe_key))


def notifier_runtime(
    data_dir: Path, notifier: SlowNotifier, monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """A real-time replay (one bar a second, so it lasts) with ``notifier`` as ``pager``."""
    module = types.ModuleType("planes_test_slow_notifier")
    module.planes_register_notifiers = hookimpl(  # type: ignore[attr-defined]
        lambda: [NotifierSpec("pager", lambda _ctx: notifier)]
    )
    monkeypatch.setitem(sys.modules, "planes_test_slow_notifier", module)
    config = plane_runtime(
        data_dir,
        'storage.notifiers=["pager"]',
        "runtime.clock=realtime",
        "market.replay.speed=3600",
    ).config
    return Runtime(config, builtin=[*BUILTIN_PLUGINS, ("test", "planes_test_slow_notifier")])


async def wait_for(condition: Callable[[], object], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_send_in_progress_while_recovery_runs_is_recorded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    outbox = Outbox(data_paths(data_dir)[1])
    now = int(time.time() * 1000)
    outbox.enqueue("pager", "left over", dedupe_key="pager:left", now_ms=now)  # pending
    outbox.enqueue("pager", "cut off", dedupe_key="pager:cut", now_ms=now)
    outbox.claim_due(now, limit=1)  # the first: "sending", as a process stopped mid-send
    outbox.close()
    # Recovery takes longer than the dispatcher's first poll and one send (a venue's round
    # trips): the dispatcher is sending while recovery runs.
    reconcile = StateHub.reconcile

    async def slow_reconcile(self: StateHub, policy: str) -> list[str]:
        await asyncio.sleep(1.0)
        return await reconcile(self, policy)

    monkeypatch.setattr(StateHub, "reconcile", slow_reconcile)
    notifier = SlowNotifier(1.0)  # the first claim (0.5 s) is still sending at 1 s
    runtime = notifier_runtime(data_dir, notifier, monkeypatch)
    tap = Tap(runtime)
    await runtime.start()
    try:
        await wait_for(lambda: tap.of(StateRecovered) and len(notifier.sent) >= 2)
        bus = runtime.bus
        alert = Alert(EventMeta(Source.SYSTEM, 5), Severity.CRITICAL, "feed_stale", "no data")
        bus.publish(OBSERVABILITY_ALERT, alert)
        await wait_for(lambda: len(notifier.sent) >= 3)  # the dispatcher is still alive
    finally:
        await runtime.stop()
    (recovered,) = tap.of(StateRecovered)
    assert "outbox: 1 interrupted sends resumed" in recovered.reconciled
    assert sorted(text for text, _ in notifier.sent) == [
        "[critical] feed_stale: no data",
        "cut off",
        "left over",
    ]
    outbox = Outbox(data_paths(data_dir)[1])
    try:
        assert {state: n for state, n in outbox.backlog().items() if n} == {"sent": 3}
    finally:
        outbox.close()


async def test_alerts_of_one_code_at_one_time_are_each_notified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = SlowNotifier(0)
    runtime = notifier_runtime(tmp_path / "var", notifier, monkeypatch)
    await runtime.start()
    try:
        bus = runtime.bus
        meta = EventMeta(Source.STORAGE, 7)
        for problem in ("a.json: truncated", "b.json: bad checksum", "a.json: truncated"):
            bus.publish(
                OBSERVABILITY_ALERT, Alert(meta, Severity.CRITICAL, "snapshot_invalid", problem)
            )
        await wait_for(lambda: len(notifier.sent) >= 2)
        await asyncio.sleep(0.6)  # a dispatcher poll more: nothing else comes
    finally:
        await runtime.stop()
    texts = [text for text, _ in notifier.sent]
    assert texts == [
        "[critical] snapshot_invalid: a.json: truncated",
        "[critical] snapshot_invalid: b.json: bad checksum",
    ]
    keys = [key for _, key in notifier.sent]
    assert all(key.startswith("pager:snapshot_invalid:7:") for key in keys)
    assert len(set(keys)) == 2


# -- the journal's writer dies -------------------------------------------------------------


async def test_when_the_journal_writer_dies_trading_stops_and_the_run_fails(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    # Ten bars a second of real time, sma_cross 3/8: orders within a second or two.
    runtime = plane_runtime(data_dir, "runtime.clock=realtime", "market.replay.speed=36000")
    tap = PlaneTap(runtime)
    run_task = asyncio.ensure_future(runtime.run())
    storage = storage_of(runtime)
    await wait_for(lambda: storage.recovered is not None and tap.of(OrderEvent), 30)
    pid = storage.journal.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeFailedError, match="the journal failed: the writer of journal"):
        await asyncio.wait_for(run_task, 30)

    (failed,) = tap.of(JournalFailed)
    at = next(i for i, (_, p) in enumerate(tap.events) if p is failed)
    codes = [p.code for _, p in tap.events[at - 1 :] if isinstance(p, Alert)]
    assert "journal_failed" in codes
    # From the failure on, nothing trades: the runtime stops, risk refuses every intent.
    after = [name for name, _ in tap.events[at:]]
    assert "risk:approved_intent" not in after
    assert "exec:order_event" not in after
    states = [p.lifecycle for _, p in tap.events[at:] if isinstance(p, ControlState)]
    assert states[:1] == [Lifecycle.STOPPING]
    assert sum(storage.unstored.values()) >= len(tap.events) - at - 1
    # What the journal holds is every event up to the failure's durable seq, in order.
    records = list(open_reader(data_paths(data_dir)[0]).read())
    assert [r.seq for r in records] == list(range(1, failed.durable_seq + 1))
    # No snapshot claims more than that.
    store = StateStore(data_paths(data_dir)[2])
    assert all(store.load(path).journal_seq <= failed.durable_seq for path in store.list())

    # A restart recovers from what is stored and trades on.
    second = plane_runtime(data_dir)
    second_tap = PlaneTap(second)
    await asyncio.wait_for(second.run(), 60)
    (recovered,) = second_tap.of(StateRecovered)
    assert recovered.ok
    records = list(open_reader(data_paths(data_dir)[0]).read())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


def writer_of(pid: int) -> int | None:
    """The pid of ``pid``'s journal writer process, if it has one now."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"journal_writer" in cmdline:
                return int(child)
    return None


@pytest.mark.subprocess
def test_planes_run_whose_journal_writer_dies_stops_and_exits_1(
    planes_run: PlanesRun, tmp_path: Path
) -> None:
    data_dir = tmp_path / "var"
    process = planes_run(data_dir, *KILL_SETTINGS)
    deadline = time.monotonic() + 60
    while len(journal_records(data_dir)) < 20 or (writer := writer_of(process.pid)) is None:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out waiting for the journal"
        time.sleep(0.05)
    os.kill(writer, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err[-3000:]
    assert "planes run: the journal failed: the writer of journal" in err
    records = journal_records(data_dir)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


async def test_a_journal_writer_that_cannot_start_stops_a_historical_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_start(self: EventJournal) -> None:
        raise OSError("no interpreter for the writer")

    monkeypatch.setattr(EventJournal, "_start_process", cannot_start)
    runtime = plane_runtime(tmp_path / "var")  # the historical clock: the replay runs flat out
    tap = PlaneTap(runtime)
    with pytest.raises(RuntimeFailedError, match="no interpreter for the writer"):
        await asyncio.wait_for(runtime.run(), 60)
    (failed,) = tap.of(JournalFailed)
    assert failed.durable_seq == 0
    at = next(i for i, (_, p) in enumerate(tap.events) if p is failed)
    after = [name for name, _ in tap.events[at:]]
    assert "risk:approved_intent" not in after
    assert "exec:order_event" not in after
    storage = storage_of(runtime)
    assert storage.unstored  # counted, not raised per event
    assert not [p for _, p in tap.events if isinstance(p, ErrorEvent)]
    assert list(StateStore(data_paths(tmp_path / "var")[2]).list()) == []


async def test_a_data_dir_that_is_a_file_fails_start_up_naming_it(tmp_path: Path) -> None:
    blocked = tmp_path / "var"
    blocked.write_text("not a directory")
    runtime = plane_runtime(blocked)
    expected = re.escape(f"{blocked} is not a directory: a file is in the way")
    with pytest.raises(RuntimeStartError, match=expected):
        await asyncio.wait_for(runtime.run(), 30)
    assert blocked.read_text() == "not a directory"


def test_a_snapshot_directory_blocked_by_a_file_is_a_snapshot_error(tmp_path: Path) -> None:
    blocked = tmp_path / "snapshots"
    blocked.write_text("")
    with pytest.raises(SnapshotError, match=r"no snapshot: .* is not a directory"):
        StateStore(blocked).write(1, {}, run_id="r", reason="test", now_ms=1)
