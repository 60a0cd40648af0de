"""Built-in plugin of the strategy plane: the StrategyManager and the built-in strategies."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec, StrategySpec
from planes.strategy.builtin import BUILTIN_STRATEGIES
from planes.strategy.manager import StrategyManager
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the StrategyManager."""
    return [PlaneSpec(name="strategy_manager", plane="strategy", factory=StrategyManager)]


@hookimpl
def planes_register_strategies() -> Sequence[StrategySpec]:
    """Register ``sma_cross``, ``rsi_reversion`` and ``breakout``."""
    return list(BUILTIN_STRATEGIES)
