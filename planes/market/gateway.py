"""MarketGateway: turns ``market:connect|disconnect|subscribe`` requests into source calls.

It owns the configured source (``market.source``, looked up among registered exchanges) and
reports ``market:connected``, ``market:disconnected`` and ``market:error``. Requests are
handled one at a time in arrival order, so a disconnect never overtakes the connect before it;
a disconnect request cancels a connect still in progress instead of waiting behind it.
``stop()`` cancels requests still in flight (a source whose connect hangs cannot block shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from contracts.market import (
    CONNECT_FAILED,
    MarketConnected,
    MarketConnectRequest,
    MarketDisconnected,
    MarketDisconnectRequest,
    MarketErrorEvent,
    MarketSubscribeRequest,
)
from contracts.ports import ComponentContext, MarketDataSource
from contracts.topics import (
    MARKET_CONNECT,
    MARKET_CONNECTED,
    MARKET_DISCONNECT,
    MARKET_DISCONNECTED,
    MARKET_ERROR,
    MARKET_SUBSCRIBE,
)
from planes.config import Config

log = structlog.get_logger("planes.market")


class UnknownSourceError(LookupError):
    """``market.source`` names no registered exchange with market data."""


class MarketGateway:
    """Owns market sources; see the module docstring."""

    name = "gateway"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the MarketGateway needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        name = config.market.source
        spec = ctx.exchanges.get(name)
        if spec is None or spec.market_data is None:
            known = sorted(n for n, s in ctx.exchanges.items() if s.market_data is not None)
            msg = f"market.source {name!r} is not a registered source (known: {', '.join(known)})"
            raise UnknownSourceError(msg)
        self.sources: dict[str, MarketDataSource] = {name: spec.market_data(ctx)}
        self._lock = asyncio.Lock()
        self._requests: set[asyncio.Task[Any]] = set()
        self._connecting: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Subscribe to the request topics."""
        self._bus.subscribe(MARKET_CONNECT, self._on_connect)
        self._bus.subscribe(MARKET_DISCONNECT, self._on_disconnect)
        self._bus.subscribe(MARKET_SUBSCRIBE, self._on_subscribe)

    async def stop(self) -> None:
        """Cancel requests in flight, then disconnect every source (idempotent)."""
        pending = [task for task in self._requests if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._lock:
            for source in self.sources.values():
                await self._guard(source, "disconnect_failed", source.disconnect)

    def _track(self, *groups: set[asyncio.Task[Any]]) -> None:
        task = asyncio.current_task()
        if task is not None:
            for group in (self._requests, *groups):
                group.add(task)
                task.add_done_callback(group.discard)

    def _selected(self, name: str | None) -> list[MarketDataSource]:
        if name is None:
            return list(self.sources.values())
        source = self.sources.get(name)
        if source is None:
            bus = self._bus
            bus.publish(
                MARKET_ERROR,
                MarketErrorEvent(bus.meta(), name, "unknown_source", f"no source {name!r}"),
            )
            return []
        return [source]

    async def _guard(
        self,
        source: MarketDataSource,
        code: str,
        call: Callable[[], Coroutine[Any, Any, None]],
        correlation_id: str | None = None,
    ) -> bool:
        try:
            await call()
        except Exception as exc:  # noqa: BLE001 - a failing source is reported, never fatal
            log.warning("market.source_failed", source=source.name, code=code, error=str(exc))
            bus = self._bus
            bus.publish(
                MARKET_ERROR,
                MarketErrorEvent(
                    bus.meta(correlation_id), source.name, code, f"{type(exc).__name__}: {exc}"
                ),
            )
            return False
        return True

    async def _on_connect(self, request: MarketConnectRequest) -> None:
        self._track(self._connecting)
        async with self._lock:
            for source in self._selected(request.source):
                if await self._guard(source, CONNECT_FAILED, source.connect):
                    bus = self._bus
                    meta = bus.meta(request.meta.correlation_id)
                    bus.publish(
                        MARKET_CONNECTED, MarketConnected(meta, source.name, source.endpoint)
                    )

    async def _on_subscribe(self, request: MarketSubscribeRequest) -> None:
        self._track()
        async with self._lock:
            for source in self._selected(request.source):

                async def call(source: MarketDataSource = source) -> None:
                    await source.subscribe(request.symbols, request.channels)

                await self._guard(source, "subscribe_failed", call, request.meta.correlation_id)

    async def _on_disconnect(self, request: MarketDisconnectRequest) -> None:
        self._track()
        # A disconnect overrides a connect still in progress (a source stuck connecting).
        for task in list(self._connecting):
            task.cancel()
        async with self._lock:
            for source in self._selected(request.source):
                await self._guard(source, "disconnect_failed", source.disconnect)
                bus = self._bus
                meta = bus.meta(request.meta.correlation_id)
                bus.publish(
                    MARKET_DISCONNECTED,
                    MarketDisconnected(meta, source.name, request.reason or "requested", False),
                )
