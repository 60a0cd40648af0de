"""The Orchestrator: sole owner of the lifecycle, driven by ``control:command``.

Boot: STARTING, state recovery when storage is on (``control:command recover``, then wait for
``state:recovery``, ``storage.recovery_timeout_s``; a failed recovery fails the boot),
``market:connect``, ``market:subscribe`` (configured symbols and channels), wait
for ``market:connected`` (``control.connect_timeout_s``; a ``market:error`` with code
``connect_failed`` fails the boot at once), RUNNING. Shutdown (``stop`` command):
STOPPING, ``market:disconnect``, wait for ``market:disconnected``
(``control.disconnect_timeout_s``), STOPPED; the runtime then stops the other planes (storage
flushes last). Pause is a flag: PAUSED stops trading (risk rejects with ``paused``) while market
data, analytics and research go on.

Commands handled: ``status`` (answered with ``control:state`` carrying ``reply_to`` and ``info``),
``pause``, ``resume``, ``stop``. Other command names belong to other planes and are ignored here.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog

from contracts.control import ControlCommand, ControlState
from contracts.enums import Lifecycle
from contracts.market import (
    CONNECT_FAILED,
    END_OF_DATA,
    MarketConnected,
    MarketConnectRequest,
    MarketDisconnected,
    MarketDisconnectRequest,
    MarketErrorEvent,
    MarketSubscribeRequest,
)
from contracts.ports import ComponentContext
from contracts.state import StateRecovered
from contracts.topics import (
    CONTROL_COMMAND,
    CONTROL_STATE,
    MARKET_CONNECT,
    MARKET_CONNECTED,
    MARKET_DISCONNECT,
    MARKET_DISCONNECTED,
    MARKET_ERROR,
    MARKET_SUBSCRIBE,
    STATE_RECOVERY,
)
from planes.config import Config, Mode

log = structlog.get_logger("planes.control")

LIFECYCLE_COMMANDS = frozenset({"status", "pause", "resume", "stop"})
RECOVER_COMMAND = "recover"
"""Sent at boot when storage is on; the storage plane answers with ``state:recovery``."""


class BootError(RuntimeError):
    """The boot sequence did not reach RUNNING."""


class Orchestrator:
    """Owns lifecycle transitions; see the module docstring."""

    name = "orchestrator"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the Orchestrator needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._config = config
        self.lifecycle: Lifecycle | None = None
        self.paused = False
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connect_failed = asyncio.Event()
        self._ever_connected = False
        self._data_ended = False
        self._last_market_error = ""
        self._stop_task: asyncio.Task[None] | None = None
        self._started_wall = time.monotonic()
        self._commands = 0

    async def start(self) -> None:
        """Run the boot sequence; raise ``BootError`` when the market does not connect in time."""
        bus = self._bus
        bus.subscribe(CONTROL_COMMAND, self._on_command)
        bus.subscribe(MARKET_CONNECTED, self._on_connected)
        bus.subscribe(MARKET_DISCONNECTED, self._on_disconnected)
        bus.subscribe(MARKET_ERROR, self._on_market_error)
        self._set(Lifecycle.STARTING, "booting")
        if self._config.storage_on:
            await self._recover()
        market = self._config.market
        bus.publish(MARKET_CONNECT, MarketConnectRequest(bus.meta()))
        bus.publish(
            MARKET_SUBSCRIBE,
            MarketSubscribeRequest(bus.meta(), symbols=market.symbols, channels=market.channels),
        )
        timeout = self._config.control.connect_timeout_s
        waiters = [
            asyncio.ensure_future(self._connected.wait()),
            asyncio.ensure_future(self._connect_failed.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not self._ever_connected:
            if self._connect_failed.is_set():
                reason = f"market source {market.source!r} failed to connect"
            else:
                reason = f"market source {market.source!r} did not connect within {timeout:g}s"
            if self._last_market_error:
                reason += f" (last error: {self._last_market_error})"
            raise BootError(reason)
        if self.lifecycle is Lifecycle.STARTING:
            self._set(Lifecycle.RUNNING, f"market {market.source} connected")
            if self._data_ended and self._config.control.stop_on_end_of_data:
                # A short file or bounded generator can end while the boot finishes.
                self._begin_stop("market data ended")

    async def _recover(self) -> None:
        """Ask storage to rebuild the state (``recover``) and wait for ``state:recovery``."""
        bus = self._bus
        done: asyncio.Future[StateRecovered] = asyncio.get_running_loop().create_future()

        def on_recovered(event: StateRecovered) -> None:
            if not done.done():
                done.set_result(event)

        bus.subscribe(STATE_RECOVERY, on_recovered)
        bus.publish(CONTROL_COMMAND, ControlCommand(bus.meta(), RECOVER_COMMAND))
        timeout = self._config.storage.recovery_timeout_s
        try:
            recovered = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            msg = (
                f"state recovery did not finish within {timeout:g}s (storage.recovery_timeout_s); "
                "with storage.enabled the planes.storage plugin must be loaded"
            )
            raise BootError(msg) from None
        if not recovered.ok:
            raise BootError("state recovery failed: " + "; ".join(recovered.warnings))
        self._set(
            Lifecycle.STARTING,
            f"state recovered: {recovered.journal_events_replayed} events replayed, "
            f"{recovered.positions} positions, {recovered.enabled_scenarios} scenarios enabled",
        )

    async def stop(self) -> None:
        """Make sure the shutdown sequence ran (the runtime calls this after STOPPED)."""
        if self._stop_task is None and self.lifecycle is not Lifecycle.STOPPED:
            self._begin_stop("runtime stopping")
        if self._stop_task is not None:
            await self._stop_task

    def _set(self, lifecycle: Lifecycle, detail: str, reply_to: str | None = None) -> None:
        changed = lifecycle is not self.lifecycle
        self.lifecycle = lifecycle
        self.paused = lifecycle is Lifecycle.PAUSED
        if changed:
            log.info("control.lifecycle", lifecycle=lifecycle.value, detail=detail)
        self._publish_state(detail, reply_to)

    def _publish_state(
        self, detail: str, reply_to: str | None = None, info: dict[str, str] | None = None
    ) -> None:
        assert self.lifecycle is not None  # noqa: S101 - set before the first publish
        self._bus.publish(
            CONTROL_STATE,
            ControlState(
                self._bus.meta(),
                lifecycle=self.lifecycle,
                paused=self.paused,
                detail=detail,
                reply_to=reply_to,
                info=info or {},
            ),
        )

    def _on_command(self, command: ControlCommand) -> None:
        if command.name not in LIFECYCLE_COMMANDS:
            return
        self._commands += 1
        reply = command.command_id
        state = self.lifecycle
        if command.name == "status":
            self._publish_state("status", reply, self._status_info())
        elif command.name == "pause":
            if state is Lifecycle.RUNNING:
                self._set(Lifecycle.PAUSED, "paused by operator: no trading", reply)
            else:
                self._publish_state(f"cannot pause while {state}", reply)
        elif command.name == "resume":
            if state is Lifecycle.PAUSED:
                self._set(Lifecycle.RUNNING, "resumed by operator", reply)
            else:
                self._publish_state(f"cannot resume while {state}", reply)
        elif self._stop_task is None:
            reason = " ".join(command.args) or f"stop from {command.meta.source.value}"
            self._begin_stop(reason, reply)
        else:
            self._publish_state("already stopping", reply)

    def _status_info(self) -> dict[str, str]:
        return {
            "mode": self._config.runtime.mode.value,
            "market_source": self._config.market.source,
            "symbols": ",".join(self._config.market.symbols),
            "uptime_s": f"{time.monotonic() - self._started_wall:.1f}",
            "clock": datetime.fromtimestamp(self._clock.now_ms() / 1000, UTC).isoformat(),
            "market_connected": str(self._connected.is_set()).lower(),
            "commands": str(self._commands),
        }

    def _begin_stop(self, reason: str, reply_to: str | None = None) -> None:
        """STOPPING at once, the rest of the shutdown as a task.

        Set here, not in the task: from the event that asked for the stop on, the RiskManager
        refuses every intent (``lifecycle``), even under the historical clock, where the replay
        would otherwise run on until the task's first turn.
        """
        self._set(Lifecycle.STOPPING, reason, reply_to)
        self._stop_task = asyncio.ensure_future(self._shutdown(reason))

    async def _shutdown(self, reason: str) -> None:
        bus = self._bus
        self._disconnected.clear()
        bus.publish(MARKET_DISCONNECT, MarketDisconnectRequest(bus.meta(), reason=reason))
        timeout = self._config.control.disconnect_timeout_s
        try:
            await asyncio.wait_for(self._disconnected.wait(), timeout)
        except TimeoutError:
            log.warning("control.disconnect_timeout", waited_s=timeout)
        self._set(Lifecycle.STOPPED, reason)

    def _on_connected(self, event: MarketConnected) -> None:
        self._ever_connected = True
        self._connected.set()

    def _on_disconnected(self, event: MarketDisconnected) -> None:
        self._disconnected.set()
        if event.will_reconnect:
            return
        self._connected.clear()
        ended = event.reason == END_OF_DATA
        self._data_ended = self._data_ended or ended
        stop_on_end = self._config.control.stop_on_end_of_data
        if ended and self.lifecycle in (Lifecycle.RUNNING, Lifecycle.PAUSED) and stop_on_end:
            if self._stop_task is None:
                self._begin_stop("market data ended")
        elif self._config.runtime.mode is not Mode.BACKTEST and self._stop_task is None:
            log.warning("control.market_disconnected", source=event.source, reason=event.reason)

    def _on_market_error(self, event: MarketErrorEvent) -> None:
        self._last_market_error = f"{event.code}: {event.message}"
        if event.code == CONNECT_FAILED and self.lifecycle is Lifecycle.STARTING:
            self._connect_failed.set()
