"""Built-in plugin of the observability plane."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec
from planes.observability.status import StatusReporter
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the StatusReporter."""
    return [PlaneSpec(name="status", plane="observability", factory=StatusReporter)]
