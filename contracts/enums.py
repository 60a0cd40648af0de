"""Closed vocabularies shared by several payloads."""

from __future__ import annotations

import enum


class Lifecycle(enum.StrEnum):
    """Runtime lifecycle, owned by the Orchestrator.

    STARTING -> RUNNING <-> PAUSED -> STOPPING -> STOPPED.
    """

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class Side(enum.StrEnum):
    """Direction of a trade, an order or an intent."""

    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """How an order is to be executed."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class OrderStatus(enum.StrEnum):
    """Order lifecycle states reported on ``exec:order_event``."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Severity(enum.StrEnum):
    """Severity of an ``observability:alert``."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Trend(enum.StrEnum):
    """Trend label of a market context."""

    UP = "up"
    DOWN = "down"
    RANGE = "range"


class VolatilityBucket(enum.StrEnum):
    """Volatility label of a market context."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class ScenarioState(enum.StrEnum):
    """Where a scenario stands in the registry."""

    PROPOSED = "proposed"
    ENABLED = "enabled"
    DISABLED = "disabled"
    RETIRED = "retired"
