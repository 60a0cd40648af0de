"""Control-plane payloads: operator commands, lifecycle state, model rollback."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from contracts.enums import Lifecycle
from contracts.meta import Payload


@attrs.frozen
class ControlCommand(Payload):
    """An operator (or the system) asks the runtime to do something.

    ``name`` is the command (``status``, ``pause``, ``resume``, ``stop``, ``scenario.enable`` ...),
    ``args`` its positional arguments; ``command_id`` is echoed as ``ControlState.reply_to``.
    """

    name: str
    args: tuple[str, ...] = ()
    command_id: str | None = None


@attrs.frozen
class ControlState(Payload):
    """The lifecycle as the Orchestrator sees it; published on every change and on ``status``.

    ``info`` carries the answer to a ``status`` command (uptime, counters) as text values.
    """

    lifecycle: Lifecycle
    paused: bool
    detail: str = ""
    reply_to: str | None = None
    info: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class RollbackRequested(Payload):
    """Restore the previous version of a model (or the one named by ``to_version``)."""

    model: str
    to_version: str | None = None
    reason: str = ""
