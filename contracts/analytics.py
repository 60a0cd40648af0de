"""Analytics-plane payloads: feature vectors, market context, drift."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from contracts.enums import Trend, VolatilityBucket
from contracts.meta import Payload


@attrs.frozen
class FeatureVector(Payload):
    """Indicator values for one symbol and timeframe at ``ts`` (floats: research-grade)."""

    symbol: str
    timeframe: str
    ts: int
    values: Mapping[str, float]
    version: str = "1"


@attrs.frozen
class MarketContext(Payload):
    """The regime a symbol is in: trend, volatility bucket, or a research model's cluster."""

    symbol: str
    timeframe: str
    ts: int
    trend: Trend
    volatility: VolatilityBucket
    regime: str
    cluster_id: int | None = None
    model_version: str | None = None


@attrs.frozen
class MarketDriftDetected(Payload):
    """A drift detector saw a feature's distribution change."""

    symbol: str
    feature: str
    detector: str
    ts: int
    score: float
    detail: str = ""
