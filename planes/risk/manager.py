"""RiskManager: every ``strategy:intent`` gets ``risk:approved_intent`` or ``risk:rejected_intent``.

Checks, in order, each rejection with a reason code (``contracts.risk.RejectReason``):

1. ``paused`` - the operator paused trading (``control:state`` with ``paused``);
2. ``lifecycle`` - the runtime is not RUNNING (starting, stopping, stopped);
3. ``no_size`` - the intent carries no positive ``size_hint``.

The approved quantity is the intent's size hint; the order id is derived from scenario and
intent id, so resubmitting the same intent cannot create a second order. Position, notional,
exposure, loss and rate limits are added by the risk issue (#4) on top of this gate.
"""

from __future__ import annotations

import structlog

from contracts.control import ControlState
from contracts.enums import Lifecycle
from contracts.ports import ComponentContext
from contracts.risk import ApprovedIntent, RejectedIntent, RejectReason
from contracts.strategy import Intent
from contracts.topics import CONTROL_STATE, RISK_APPROVED, RISK_REJECTED, STRATEGY_INTENT

log = structlog.get_logger("planes.risk")


class RiskManager:
    """The gate; see the module docstring."""

    name = "risk_manager"

    def __init__(self, ctx: ComponentContext) -> None:
        self._bus = ctx.bus
        self.lifecycle: Lifecycle | None = None
        self.paused = False
        self.approved = 0
        self.rejected = 0

    async def start(self) -> None:
        """Follow the lifecycle and judge intents."""
        self._bus.subscribe(CONTROL_STATE, self._on_state)
        self._bus.subscribe(STRATEGY_INTENT, self._on_intent)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    def _on_state(self, state: ControlState) -> None:
        self.lifecycle = state.lifecycle
        self.paused = state.paused

    def check(self, intent: Intent) -> tuple[str, str] | None:
        """The first failed check as ``(reason_code, detail)``, or None when all pass."""
        if self.paused:
            return RejectReason.PAUSED, "trading is paused by the operator"
        if self.lifecycle is not Lifecycle.RUNNING:
            state = self.lifecycle.value if self.lifecycle else "not started"
            return RejectReason.LIFECYCLE, f"runtime is {state}, not RUNNING"
        if intent.size_hint is None or intent.size_hint <= 0:
            return RejectReason.NO_SIZE, f"size_hint is {intent.size_hint}"
        return None

    def _on_intent(self, intent: Intent) -> None:
        bus = self._bus
        meta = bus.meta(intent.meta.correlation_id)
        verdict = self.check(intent)
        if verdict is not None:
            code, detail = verdict
            self.rejected += 1
            log.info("risk.rejected", intent=intent.intent_id, reason=code, detail=detail)
            bus.publish(RISK_REJECTED, RejectedIntent(meta, intent, code, detail))
            return
        assert intent.size_hint is not None  # noqa: S101 - check() refused None
        self.approved += 1
        order_id = f"{intent.scenario_id}:{intent.intent_id}"
        bus.publish(RISK_APPROVED, ApprovedIntent(meta, intent, intent.size_hint, order_id))
