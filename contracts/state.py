"""Storage-plane payloads: snapshots written and state recovered at boot."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from contracts.meta import Payload
from contracts.strategy import ParamValue


@attrs.frozen
class StateSnapshot(Payload):
    """A state snapshot was written atomically, covering the journal up to ``journal_seq``."""

    snapshot_id: str
    journal_seq: int
    reason: str
    size_bytes: int = 0


@attrs.frozen
class JournalFailed(Payload):
    """The journal stopped storing events (its writer died, its disk failed): the run stops.

    Every event up to ``durable_seq`` is stored; none after it is. The runtime stops trading at
    once and the run ends as failed; a restart recovers from the journal as it stands.
    """

    reason: str
    durable_seq: int


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
    ok: bool = True
    """False when the state could not be rebuilt (the boot then fails, naming the warnings)."""


@attrs.frozen
class RegistryChanged(Payload):
    """The registry committed a change; planes act on it only after this event.

    ``entity`` is ``scenario`` or ``model``; ``action`` what happened (``seeded``, ``proposed``,
    ``enabled``, ``disabled``, ``retired``, ``rolled_back``, ``restored`` at boot for the
    current state, ``registered``, ``activated``); ``status`` the entity's status after it.
    A scenario carries what it takes to build it (strategy, params, regime, version).
    ``actor`` is the ``meta.source`` of the command that caused it, ``command_id`` its id.
    """

    entity: str
    entity_id: str
    action: str
    status: str
    version: str
    strategy: str = ""
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    regime: str | None = None
    actor: str = ""
    command_id: str | None = None
    detail: str = ""
