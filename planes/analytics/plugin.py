"""Built-in plugin of the analytics plane."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ports import PlaneSpec
from planes.analytics.context import MarketContextBuilder
from planes.analytics.features import FeatureEngine
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the MarketContextBuilder and the FeatureEngine.

    The context builder comes first: it subscribes ``market:kline`` first, so for every bar its
    ``analytics:context`` is delivered before that bar's ``analytics:features``, and a strategy
    acting on a feature vector already sees the regime of the same bar.
    """
    return [
        PlaneSpec(name="market_context", plane="analytics", factory=MarketContextBuilder),
        PlaneSpec(name="feature_engine", plane="analytics", factory=FeatureEngine),
    ]
