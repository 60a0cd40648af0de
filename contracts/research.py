"""Discovery-contour payloads.

Research may publish only these and ``analytics:marketDriftDetected``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from contracts.meta import Payload
from contracts.strategy import ParamValue


@attrs.frozen
class FeatureVectorRecorded(Payload):
    """A feature vector was stored in the FeatureStore."""

    symbol: str
    timeframe: str
    ts: int
    feature_version: str
    record_id: int


@attrs.frozen
class OutcomeRecorded(Payload):
    """A stored feature vector got its forward-return label."""

    symbol: str
    timeframe: str
    ts: int
    horizon_bars: int
    forward_return: float
    label: str


@attrs.frozen
class NewClusterFound(Payload):
    """Clustering of recent vectors found a regime cluster."""

    model_version: str
    cluster_id: int
    size: int
    score: float
    centroid: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen
class CandidateScenarioBuilt(Payload):
    """A candidate scenario (strategy template x params x regime) waits to be backtested."""

    candidate_id: str
    strategy: str
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    regime: str | None = None
    cluster_id: int | None = None


@attrs.frozen
class BacktestCompleted(Payload):
    """Walk-forward backtest of a candidate finished, with out-of-sample scores."""

    candidate_id: str
    n_trades: int
    oos_sharpe: float
    max_drawdown: float
    total_return: float
    baseline_return: float
    folds: int


@attrs.frozen
class ScenarioApproved(Payload):
    """A candidate passed the gates: *proposed* in the registry, waiting for an operator."""

    candidate_id: str
    scenario_id: str
    strategy: str
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    regime: str | None = None
    evidence: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen
class ScenarioRejected(Payload):
    """A candidate failed the gates; ``reasons`` names each failed gate."""

    candidate_id: str
    reasons: tuple[str, ...]
