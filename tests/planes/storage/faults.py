"""Fault injection for the SIGKILL tests: a plugin that stalls one snapshot write half-way.

Load it into ``planes run`` with ``plugins.modules=["tests.planes.storage.faults"]`` (the
harness puts the repository on ``PYTHONPATH``). Loaded as a plugin (its hook is called), it
wraps ``StateStore._write_atomically``: the first write that finds at least ``ARM_AFTER``
snapshots in its directory and writes a state with ``MIN_FILLS`` fills and a position open
writes its ``.tmp-*`` file whole and fsyncs it, as the store does, and then, before the
rename, writes ``STALLED`` in the data dir (holding the temp file's name) and sleeps, holding
the event loop, until the test kills the process. Every other write is the store's own.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from contracts.topics import Topic
from planes.execution.positions import STATE_KEY
from planes.storage.snapshots import StateStore
from plugins.hookspecs import hookimpl

STALLED = "snapshot-write-stalled"
"""The marker file, in the data dir (the snapshot dir's parent), written once the write stalls."""
ARM_AFTER = 3
MIN_FILLS = 2
STALL_S = 60.0
"""Longer than any test waits: the kill comes first."""

_write_atomically = StateStore._write_atomically
_stalled = False


def _holds_a_position(data: bytes) -> bool:
    portfolio: dict[str, Any] = json.loads(data)["sections"].get(STATE_KEY) or {}
    positions = portfolio.get("ledger", {}).get("positions", {})
    open_ = any(Decimal(position["qty"]) for position in positions.values())
    return open_ and int(portfolio.get("fills", 0)) >= MIN_FILLS


def _stalling_write(self: StateStore, path: Path, tmp: Path, data: bytes) -> None:
    global _stalled  # noqa: PLW0603 - one stall per process
    if _stalled or len(self.list()) < ARM_AFTER or not _holds_a_position(data):
        _write_atomically(self, path, tmp, data)
        return
    _stalled = True
    with tmp.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    marker = self.directory.parent / STALLED
    staged = marker.with_suffix(".part")  # renamed, so the test never reads half a marker
    staged.write_text(tmp.name)
    staged.replace(marker)
    time.sleep(STALL_S)
    tmp.unlink()  # not killed after all: finish as the store would
    _write_atomically(self, path, tmp, data)


@hookimpl
def planes_register_topics() -> list[Topic[Any]]:
    """Arm the fault and register no topic: called only where the module is a plugin.

    Importing the module (the tests read its constants) changes nothing: only a runtime that
    loads it as a plugin (``planes run`` of the test) gets the stalling write.
    """
    StateStore._write_atomically = _stalling_write  # type: ignore[method-assign]  # the fault
    return []
