"""Built-in plugin of the control plane."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec
from planes.control.orchestrator import Orchestrator
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the Orchestrator."""
    return [PlaneSpec(name="orchestrator", plane="control", factory=Orchestrator)]
