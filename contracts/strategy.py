"""Strategy-plane payloads: intents and scenario switches."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import attrs

from contracts.enums import OrderType, Side
from contracts.meta import Payload

ParamValue = str | int | float | bool
"""A strategy parameter value (TOML/JSON scalar)."""


@attrs.frozen
class Intent(Payload):
    """What a strategy wants, declaratively: a side and a size hint, never an order.

    ``target_exposure`` (fraction of equity, signed) or ``size_hint`` (quantity) guide the
    RiskManager, which alone decides the final size. ``reduce_only`` intents only shrink a position.
    """

    intent_id: str
    scenario_id: str
    strategy: str
    symbol: str
    side: Side
    size_hint: Decimal | None = None
    target_exposure: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""


@attrs.frozen
class IntentDraft:
    """What a strategy returns: the wish without the bookkeeping.

    The StrategyManager turns each draft into an ``Intent``: it stamps ``meta`` (with the
    causing event's correlation id), a deterministic ``intent_id``, the scenario, the strategy
    name and the symbol. ``size_hint`` is a quantity; ``target_exposure`` a signed fraction of
    equity; with neither, the RiskManager applies its default size.
    """

    side: Side
    size_hint: Decimal | None = None
    target_exposure: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""


@attrs.frozen
class ScenarioEnabled(Payload):
    """A scenario (strategy + params + optional regime condition + version) now trades."""

    scenario_id: str
    strategy: str
    version: int
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    regime: str | None = None
    enabled_by: str = ""


@attrs.frozen
class ScenarioDisabled(Payload):
    """A scenario stopped trading (operator command, rollback, or a strategy failure)."""

    scenario_id: str
    version: int
    reason: str = ""
