"""Built-in plugin of the market plane: the gateway and the synthetic source."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import ExchangeSpec, PlaneSpec
from planes.market.bybit import BybitPublicSource
from planes.market.gateway import MarketGateway
from planes.market.replay import ReplaySource
from planes.market.synthetic import SyntheticSource
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the MarketGateway."""
    return [PlaneSpec(name="gateway", plane="market", factory=MarketGateway)]


@hookimpl
def planes_register_exchanges() -> Sequence[ExchangeSpec]:
    """Register the sources: ``synthetic`` (offline generator), ``bybit`` (V5 public WS)."""
    return [
        ExchangeSpec(name="synthetic", market_data=SyntheticSource),
        ExchangeSpec(name="bybit", market_data=BybitPublicSource),
        ExchangeSpec(name="replay", market_data=ReplaySource),
    ]
