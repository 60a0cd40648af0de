"""Risk-plane payloads: the verdict on every intent."""

from __future__ import annotations

from decimal import Decimal

import attrs

from contracts.meta import Payload
from contracts.strategy import Intent


class RejectReason:
    """Reason codes of ``RejectedIntent.reason_code``; stable API (alerts and reports use them)."""

    PAUSED = "paused"
    LIFECYCLE = "lifecycle"
    NO_SIZE = "no_size"


@attrs.frozen
class ApprovedIntent(Payload):
    """The RiskManager let an intent through with a final quantity."""

    intent: Intent
    qty: Decimal
    order_id: str


@attrs.frozen
class RejectedIntent(Payload):
    """The RiskManager refused an intent; ``reason_code`` is machine-readable (``paused`` ...)."""

    intent: Intent
    reason_code: str
    detail: str = ""
