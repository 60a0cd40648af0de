"""Risk-plane payloads: the verdict on every intent."""

from __future__ import annotations

from decimal import Decimal

import attrs

from contracts.meta import Payload
from contracts.strategy import Intent


class RejectReason:
    """Reason codes of ``RejectedIntent.reason_code``; stable API (alerts and reports use them).

    Listed in the order the RiskManager checks them (``docs/risk.md`` explains each one).
    """

    PAUSED = "paused"
    """The operator paused trading."""
    LIFECYCLE = "lifecycle"
    """The runtime is not RUNNING (starting, stopping, stopped)."""
    DUPLICATE = "duplicate"
    """An intent with this scenario and intent id was approved before."""
    SYMBOL_NOT_ALLOWED = "symbol_not_allowed"
    """The symbol is not in ``risk.allowlist`` (or ``market.symbols`` when that is empty)."""
    STALE_DATA = "stale_data"
    """The symbol's last ticker or kline is older than ``risk.stale_data_s`` (or never came)."""
    RATE_LIMIT = "rate_limit"
    """``risk.max_orders_per_minute`` approvals within the last 60 s of clock time."""
    DAILY_LOSS = "daily_loss_limit"
    """The kill switch: the loss since the UTC day started reached ``risk.daily_loss_limit``."""
    MAX_DRAWDOWN = "max_drawdown"
    """Equity is ``risk.max_drawdown`` (a fraction) or more below its peak."""
    COOLDOWN = "cooldown"
    """A losing exit on this symbol less than ``risk.cooldown_after_loss_s`` ago."""
    NO_SIZE = "no_size"
    """No positive quantity: a bad size hint, a target already reached, or a zero default size."""
    NO_PRICE = "no_price"
    """Sizing or a value limit needs a market price the RiskManager has not seen."""
    NOTHING_TO_REDUCE = "nothing_to_reduce"
    """A ``reduce_only`` intent with no position (net of pending orders) on the other side."""
    MAX_POSITION = "max_position"
    """No room left under ``risk.max_position`` / ``risk.default_max_position``."""
    MAX_NOTIONAL = "max_notional"
    """No room left under ``risk.max_notional`` (position value of the symbol)."""
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    """No room left under ``risk.max_gross_exposure`` (sum of position values)."""
    INTERNAL_ERROR = "internal_error"
    """The RiskManager itself failed on this intent; it fails closed (``error:event`` too)."""


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
