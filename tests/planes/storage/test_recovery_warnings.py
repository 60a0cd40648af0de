"""Recovery's warnings: a stale snapshot (WARNING) and a journal behind its snapshot (CRITICAL).

In process, on the runtime of ``test_plane``: a first run leaves a data dir, which the test ages
or rewinds, and a second runtime recovers from it. Both warnings leave the recovery ``ok``: the
state is still the snapshot's, and the alert and the ``StateRecovered.warnings`` line say what
an operator should look at.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.enums import Severity
from contracts.state import StateRecovered
from contracts.system import Alert
from contracts.topics import STATE_RECOVERY
from planes.runtime import Runtime
from planes.storage.journal import open_reader
from planes.storage.plane import data_paths
from planes.storage.snapshots import StateStore
from tests.planes.storage.test_plane import Tap, make_runtime, run

HOUR_MS = 3_600_000


async def recover(runtime: Runtime) -> tuple[StateRecovered, list[Alert], dict[str, Any]]:
    """Boot ``runtime`` and stop it: its recovery report, its alerts, the state at recovery."""
    tap = Tap(runtime)
    at_recovery: dict[str, Any] = {}
    runtime.bus.subscribe(STATE_RECOVERY, lambda _: at_recovery.update(runtime.state.export()))
    await runtime.start()
    await runtime.stop()
    [recovered] = tap.of(StateRecovered)
    return recovered, tap.of(Alert), at_recovery


def age_snapshots(snapshots: Path, age_ms: int) -> str:
    """Leave one snapshot in ``snapshots``: the newest one's state, written ``age_ms`` ago.

    ``created_ms`` is under the checksum and in the snapshot id (so in the file name): the old
    snapshot is a new write of the same state with a ``now_ms`` in the past. Returns its id.
    """
    store = StateStore(snapshots)
    newest, problems = store.latest()
    assert newest is not None
    assert not problems
    for path in store.list():
        path.unlink()
    aged = store.write(
        newest.journal_seq,
        newest.sections,
        run_id=newest.run_id,
        reason=newest.reason,
        now_ms=int(time.time() * 1000) - age_ms,
    )
    assert store.list() == [aged.path]
    return aged.snapshot_id


@pytest.mark.parametrize(
    ("age_ms", "stale_s", "warns"),
    [
        pytest.param(2 * HOUR_MS, 3600, True, id="two-hours-old"),
        pytest.param(2 * HOUR_MS, 0, False, id="never-stale"),
        pytest.param(0, 3600, False, id="just-written"),
    ],
)
async def test_a_snapshot_older_than_stale_snapshot_s_is_restored_with_a_warning(
    tmp_path: Path, age_ms: int, stale_s: int, warns: bool
) -> None:
    data_dir = tmp_path / "var"
    first = make_runtime(data_dir)
    await run(first)
    ended = first.state.export()
    snapshot_id = age_snapshots(data_paths(data_dir)[2], age_ms)

    second = make_runtime(data_dir, f"storage.stale_snapshot_s={stale_s}")
    recovered, alerts, at_recovery = await recover(second)
    assert recovered.ok
    assert recovered.snapshot_id == snapshot_id
    assert at_recovery == ended
    stale = [a for a in alerts if a.code == "stale_snapshot"]
    if not warns:
        assert not stale
        assert recovered.warnings == ()
        return
    [alert] = stale
    assert alert.severity is Severity.WARNING
    assert recovered.warnings == (alert.message,)
    match = re.fullmatch(rf"last snapshot {snapshot_id} is (\d+)s old \(> 3600s\)", alert.message)
    assert match is not None, alert.message
    assert 7200 <= int(match[1]) < 7200 + 60
    assert not [a for a in alerts if a.severity is Severity.CRITICAL]


def last_seq(data_dir: Path) -> int:
    """The seq of the last event in ``data_dir``'s journal."""
    return max(record.seq for record in open_reader(data_paths(data_dir)[0]).read())


def journal_files(data_dir: Path) -> list[Path]:
    """The journal's SQLite file and its WAL companions, if any."""
    journal = data_paths(data_dir)[0]
    return sorted(data_dir.glob(journal.name + "*"))


async def test_a_snapshot_beyond_the_journals_end_is_restored_with_a_critical_alert(
    tmp_path: Path,
) -> None:
    data_dir, backup = tmp_path / "var", tmp_path / "backup"
    first = make_runtime(data_dir)
    await run(first)
    backup.mkdir()
    for path in journal_files(data_dir):
        shutil.copy2(path, backup / path.name)
    journal_end = last_seq(data_dir)

    second = make_runtime(data_dir)  # journals its boot and stop past the backup's end
    await second.start()
    await second.stop()
    ended = second.state.export()
    store = StateStore(data_paths(data_dir)[2])
    newest, _ = store.latest()
    assert newest is not None
    assert newest.journal_seq > journal_end

    for path in journal_files(data_dir):  # the journal restored from the older backup
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, data_dir / path.name)
    assert last_seq(data_dir) == journal_end

    third = make_runtime(data_dir)
    recovered, alerts, at_recovery = await recover(third)
    assert recovered.ok  # the snapshot is whole: its state is restored, nothing to replay
    assert recovered.snapshot_id == newest.snapshot_id
    assert recovered.journal_events_replayed == 0
    assert at_recovery == ended
    [alert] = [a for a in alerts if a.code == "journal_behind_snapshot"]
    assert alert.severity is Severity.CRITICAL
    assert alert.message == (
        f"snapshot covers seq {newest.journal_seq} but the journal ends at {journal_end}: "
        "the journal lost committed events (restored from a backup?)"
    )
    assert recovered.warnings == (alert.message,)
