"""Storage-plane payloads: snapshots written and state recovered at boot."""

from __future__ import annotations

import attrs

from contracts.meta import Payload


@attrs.frozen
class StateSnapshot(Payload):
    """A state snapshot was written atomically, covering the journal up to ``journal_seq``."""

    snapshot_id: str
    journal_seq: int
    reason: str
    size_bytes: int = 0


@attrs.frozen
class StateRecovered(Payload):
    """What boot-time recovery restored and what reconciliation with the venue did."""

    snapshot_id: str | None
    journal_events_replayed: int
    positions: int
    open_orders: int
    enabled_scenarios: int
    reconciled: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
