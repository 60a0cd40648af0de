"""Built-in plugin of the risk plane."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec
from planes.risk.manager import RiskManager
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the RiskManager."""
    return [PlaneSpec(name="risk_manager", plane="risk", factory=RiskManager)]
