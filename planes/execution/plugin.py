"""Built-in plugin of the execution plane."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec
from planes.execution.bybit import BybitExecution
from planes.execution.paper import PaperExecution
from planes.execution.positions import PositionManager
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the venues and the PositionManager.

    Every venue is built; only the one ``execution.venue`` names trades, the others stay idle.
    """
    return [
        PlaneSpec(name="paper_execution", plane="execution", factory=PaperExecution),
        PlaneSpec(name="bybit_execution", plane="execution", factory=BybitExecution),
        PlaneSpec(name="position_manager", plane="execution", factory=PositionManager),
    ]
