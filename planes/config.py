"""Configuration: TOML layered defaults < file < environment < ``--set``, into attrs classes.

* The defaults are the attrs defaults below; ``configs/default.toml`` spells the same values out
  (a test keeps them equal) and is read when no ``--config`` is given.
* ``PLANES__SECTION__KEY=value`` sets ``section.key``; ``--set section.key=value`` too. Their
  values are read as TOML values when they parse as one (``["BTCUSDT"]``, ``3``, ``true``) and as
  plain strings otherwise (``state/run1``).
* An unknown key or a bad value fails fast with ``ConfigError`` naming the key path, the reason
  and the layer the value came from. Secrets are read from the environment only, never from here.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.strategies import configure_union_passthrough

from contracts.converter import SCALARS, strict_scalar, structure_decimal, structure_enum

ENV_PREFIX = "PLANES__"
DEFAULT_CONFIG = Path("configs") / "default.toml"

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key and why."""


class _BadValueError(ValueError):
    """Raised by validators so the error walker can name the key inside its section."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


class Mode(enum.StrEnum):
    """What the runtime trades against."""

    BACKTEST = "backtest"
    PAPER = "paper"
    LIVE = "live"


class ClockKind(enum.StrEnum):
    """Which clock drives the runtime; ``auto`` is historical in backtests, real time otherwise."""

    AUTO = "auto"
    REALTIME = "realtime"
    HISTORICAL = "historical"


class LogFormat(enum.StrEnum):
    """How logs are rendered; ``auto`` is console on a TTY and JSON otherwise."""

    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise _BadValueError(attribute.name, f"must be > 0, got {value}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise _BadValueError(attribute.name, f"must be >= 0, got {value}")


MAX_FEE_BPS = 10_000.0
"""A fee or rebate of a whole notional (10 000 bps) is no fee: refused."""


def _taker_fee(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value < MAX_FEE_BPS:
        reason = (
            f"must be >= 0 and below {MAX_FEE_BPS:g} bps, got {value}: a taker always pays "
            "(only execution.fee_bps_maker may be negative, a maker rebate)"
        )
        raise _BadValueError(attribute.name, reason)


def _maker_fee(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not -MAX_FEE_BPS < value < MAX_FEE_BPS:
        reason = (
            f"must be above {-MAX_FEE_BPS:g} and below {MAX_FEE_BPS:g} bps, got {value} "
            "(negative: a maker rebate)"
        )
        raise _BadValueError(attribute.name, reason)


def _non_negative_decimal(_: object, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    if not (value.is_finite() and value >= 0):
        raise _BadValueError(attribute.name, f"must be a finite number >= 0, got {value}")


def _positive_decimal(_: object, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    if not (value.is_finite() and value > 0):
        raise _BadValueError(attribute.name, f"must be a finite number > 0, got {value}")


def _off_or_positive_decimal(_: object, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    # A negative limit would read as "off" (0) to the check that skips it: refused instead.
    if not (value.is_finite() and value >= 0):
        reason = f"must be a finite number >= 0 (0 turns the check off), got {value}"
        raise _BadValueError(attribute.name, reason)


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        reason = f"must be a fraction from 0 (off) to 1, got {value}: 0.25 is a 25 % drop"
        raise _BadValueError(attribute.name, reason)


_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")


def _not_a_symbol(symbol: str) -> str:
    return f"{symbol!r} is not a symbol like 'BTCUSDT' (upper-case letters and digits)"


def _per_symbol(*, positive: bool) -> Any:
    """A validator of a ``{symbol: Decimal}`` table: symbol keys, finite values > 0 or >= 0."""
    bound = "> 0" if positive else ">= 0"

    def check(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, Decimal]) -> None:
        for symbol, amount in value.items():
            key = f"{attribute.name}[{symbol}]"
            if not _SYMBOL.fullmatch(symbol):
                raise _BadValueError(key, _not_a_symbol(symbol))
            if not (amount.is_finite() and (amount > 0 if positive else amount >= 0)):
                raise _BadValueError(key, f"must be a finite number {bound}, got {amount}")

    return check


def _bps(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value < MAX_FEE_BPS:
        # 10 000 bps of slippage would move a sell's price to zero or below.
        reason = f"must be >= 0 and below {MAX_FEE_BPS:g} bps, got {value}"
        raise _BadValueError(attribute.name, reason)


def _asset(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not re.fullmatch(r"[A-Z0-9]{2,10}", value):
        reason = f"{value!r} is not an asset like 'USDT' (2 to 10 upper-case letters and digits)"
        raise _BadValueError(attribute.name, reason)


def _symbols(_: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise _BadValueError(attribute.name, "needs at least one symbol")
    _symbol_list(_, attribute, value)


def _symbol_list(_: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    """Symbols, possibly none (``risk.allowlist``: empty means ``market.symbols``)."""
    for symbol in value:
        if not _SYMBOL.fullmatch(symbol):
            raise _BadValueError(attribute.name, _not_a_symbol(symbol))
    if len(set(value)) != len(value):
        raise _BadValueError(attribute.name, f"lists a symbol twice: {list(value)}")


def _log_level(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value.lower() not in LOG_LEVELS:
        raise _BadValueError(attribute.name, f"{value!r} is not one of {', '.join(LOG_LEVELS)}")


def _iso_instant(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        reason = f"{value!r} is not an ISO-8601 instant like 2024-01-01T00:00:00Z"
        raise _BadValueError(attribute.name, reason) from None


@attrs.frozen
class RuntimeSection:
    """``[runtime]``: mode, where data lives, which clock."""

    mode: Mode = Mode.PAPER
    data_dir: str = "var"
    clock: ClockKind = ClockKind.AUTO
    start: str = attrs.field(default="2024-01-01T00:00:00Z", validator=_iso_instant)
    """Where the historical clock starts (the synthetic source's first bar in backtests)."""


@attrs.frozen
class SyntheticSection:
    """``[market.synthetic]``: the deterministic generator used offline."""

    seed: int = 7
    tick_ms: int = attrs.field(default=500, validator=_positive)
    bar_s: int = attrs.field(default=5, validator=_positive)
    """Bar length; 5 s by default so the offline demo trades within a minute or two."""
    max_bars: int = attrs.field(default=0, validator=_non_negative)
    """Stop after this many closed bars per symbol (0: never); the end is ``end_of_data``."""
    regime_mean_bars: int = attrs.field(default=240, validator=_positive)
    spread_bps: float = attrs.field(default=2.0, validator=_non_negative)
    start_prices: dict[str, Decimal] = attrs.field(
        factory=lambda: {"BTCUSDT": Decimal(60000), "ETHUSDT": Decimal(3000)},
        validator=_per_symbol(positive=True),
    )
    """Start price per symbol; symbols not listed start at 100."""


class BybitCategory(enum.StrEnum):
    """Bybit V5 public stream category."""

    LINEAR = "linear"
    SPOT = "spot"


BYBIT_CHANNELS = ("tickers", "trades", "orderbook", "kline")
BYBIT_KLINE_INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
BYBIT_DEPTHS = {BybitCategory.LINEAR: (1, 50, 200, 500), BybitCategory.SPOT: (1, 50, 200)}


def _one_of(choices: tuple[Any, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if item not in choices:
                reason = f"{item!r} is not one of {', '.join(map(str, choices))}"
                raise _BadValueError(attribute.name, reason)

    return check


def _ws_url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not re.fullmatch(r"wss?://[^\s/]+(/\S*)?", value):
        raise _BadValueError(attribute.name, f"{value!r} is not a ws:// or wss:// URL")


@attrs.frozen
class BybitSection:
    """``[market.bybit]``: the Bybit V5 public WebSocket client."""

    ws_url: str = attrs.field(default="wss://stream.bybit.com/v5/public/linear", validator=_ws_url)
    category: BybitCategory = BybitCategory.LINEAR
    channels: tuple[str, ...] = attrs.field(
        default=("tickers", "kline"), validator=_one_of(BYBIT_CHANNELS)
    )
    orderbook_depth: int = 50
    kline_interval: str = attrs.field(default="1", validator=_one_of(BYBIT_KLINE_INTERVALS))
    ping_interval_s: float = attrs.field(default=20.0, validator=_positive)
    watchdog_s: float = attrs.field(default=30.0, validator=_positive)
    """Reconnect when nothing at all arrived for this long (catches half-open sockets)."""
    backoff_initial_s: float = attrs.field(default=0.5, validator=_positive)
    backoff_max_s: float = attrs.field(default=30.0, validator=_positive)
    alert_after_failures: int = attrs.field(default=5, validator=_positive)
    """Consecutive failed connection attempts before an alert (it keeps retrying)."""
    open_timeout_s: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        depths = BYBIT_DEPTHS[self.category]
        if self.orderbook_depth not in depths:
            reason = (
                f"{self.orderbook_depth} is not a {self.category.value} depth "
                f"({', '.join(map(str, depths))})"
            )
            raise _BadValueError("orderbook_depth", reason)
        if self.backoff_max_s < self.backoff_initial_s:
            reason = f"{self.backoff_max_s} is below backoff_initial_s {self.backoff_initial_s}"
            raise _BadValueError("backoff_max_s", reason)
        if self.watchdog_s <= self.ping_interval_s:
            reason = f"{self.watchdog_s} must exceed ping_interval_s {self.ping_interval_s}"
            raise _BadValueError("watchdog_s", reason)


class ReplayFormat(enum.StrEnum):
    """File formats the replay source reads."""

    AUTO = "auto"
    CSV = "csv"
    BYBIT_JSON = "bybit_json"


@attrs.frozen
class ReplaySection:
    """``[market.replay]``: closed bars from an OHLCV file."""

    path: str = ""
    format: ReplayFormat = ReplayFormat.AUTO
    symbol: str = ""
    """The symbol of a CSV file (Bybit JSON names its own); empty: the first of market.symbols."""
    interval: str = ""
    """The bar interval label (``1``, ``5``, ``60``, ``D`` ...); empty: inferred from the data."""
    speed: float = attrs.field(default=0.0, validator=_non_negative)
    """0: as fast as the clock allows (full speed under the historical clock); N > 0: N times
    real time under the real-time clock (1 = the bars' own pace)."""


@attrs.frozen
class MarketSection:
    """``[market]``: which source, which symbols."""

    source: str = "synthetic"
    symbols: tuple[str, ...] = attrs.field(default=("BTCUSDT", "ETHUSDT"), validator=_symbols)
    channels: tuple[str, ...] = ()
    """What the Orchestrator subscribes at boot; empty: each source's own configured channels."""
    synthetic: SyntheticSection = attrs.field(factory=SyntheticSection)
    bybit: BybitSection = attrs.field(factory=BybitSection)
    replay: ReplaySection = attrs.field(factory=ReplaySection)


INDICATOR_KINDS = ("returns", "sma", "ema", "rsi", "atr", "volatility", "zscore")


@attrs.frozen
class FeatureSpec:
    """One ``[[analytics.features]]`` entry: an indicator by kind and window, named."""

    name: str
    kind: str = attrs.field(validator=_one_of(INDICATOR_KINDS))
    window: int = attrs.field(default=14, validator=_positive)


def _default_features() -> tuple[FeatureSpec, ...]:
    return (
        FeatureSpec("ret_1", "returns", 1),
        FeatureSpec("sma_20", "sma", 20),
        FeatureSpec("ema_20", "ema", 20),
        FeatureSpec("rsi_14", "rsi", 14),
        FeatureSpec("atr_14", "atr", 14),
        FeatureSpec("vol_20", "volatility", 20),
        FeatureSpec("zscore_20", "zscore", 20),
    )


@attrs.frozen
class AnalyticsSection:
    """``[analytics]``: features per symbol and timeframe, and the market-context rules."""

    features: tuple[FeatureSpec, ...] = attrs.field(factory=_default_features)
    context: bool = True
    """Publish analytics:context (the regime); off, the MarketContextBuilder stays idle."""
    trend_fast: int = attrs.field(default=20, validator=_positive)
    """EMA window of the fast trend line."""
    trend_slow: int = attrs.field(default=50, validator=_positive)
    """EMA window of the slow trend line; |fast - slow| / slow under trend_band is a range."""
    trend_band: float = attrs.field(default=0.001, validator=_non_negative)
    vol_window: int = attrs.field(default=20, validator=_positive)
    """Bars of log returns whose standard deviation buckets the volatility."""
    vol_low: float = attrs.field(default=0.001, validator=_non_negative)
    """Per-bar volatility below this is ``low``."""
    vol_high: float = attrs.field(default=0.004, validator=_non_negative)
    """Per-bar volatility above this is ``high``."""


@attrs.frozen
class ScenarioSpec:
    """One ``[[strategy.scenarios]]`` entry: strategy + params + regime condition + version."""

    id: str
    strategy: str
    params: dict[str, str | int | float | bool] = attrs.field(factory=dict)
    symbols: tuple[str, ...] = ()
    """The symbols it trades; empty: all of market.symbols."""
    regime: str = ""
    """Act only while analytics:context says this regime (empty: always)."""
    version: int = 1
    enabled: bool = True


def _default_scenarios() -> tuple[ScenarioSpec, ...]:
    return (ScenarioSpec("sma_cross_demo", "sma_cross", {"fast": 3, "slow": 8}),)


@attrs.frozen
class StrategySection:
    """``[strategy]``: the scenarios, and strategies loaded by class path."""

    scenarios: tuple[ScenarioSpec, ...] = attrs.field(factory=_default_scenarios)
    class_paths: tuple[str, ...] = ()
    """More strategies: ``"name = pkg.module:Class"`` (the class takes the params mapping)."""


@attrs.frozen
class RiskSection:
    """``[risk]``: every limit the RiskManager enforces (money in the quote currency)."""

    allowlist: tuple[str, ...] = attrs.field(default=(), validator=_symbol_list)
    """Symbols that may be traded; empty: market.symbols."""
    default_qty: Decimal = attrs.field(default=Decimal("0.01"), validator=_non_negative_decimal)
    """Size of an intent that carries neither size_hint nor target_exposure (0: ``no_size``)."""
    max_position: dict[str, Decimal] = attrs.field(
        factory=dict, validator=_per_symbol(positive=False)
    )
    """Largest absolute position per symbol (quantity); others: default_max_position.

    The limits are >= 0; a limit of 0 lets nothing be opened (reducing still passes)."""
    default_max_position: Decimal = attrs.field(default=Decimal(1), validator=_non_negative_decimal)
    max_notional: Decimal = attrs.field(default=Decimal(100_000), validator=_non_negative_decimal)
    """Largest absolute position value per symbol."""
    max_gross_exposure: Decimal = attrs.field(
        default=Decimal(250_000), validator=_non_negative_decimal
    )
    """Largest sum of absolute position values."""
    daily_loss_limit: Decimal = attrs.field(
        default=Decimal(5_000), validator=_off_or_positive_decimal
    )
    """Loss since the UTC day started that halts new entries (reducing is still allowed); 0: off."""
    max_drawdown: float = attrs.field(default=0.25, validator=_fraction)
    """Drop from peak equity (fraction, at most 1) that halts new entries; 0: off."""
    cooldown_after_loss_s: float = attrs.field(default=0.0, validator=_non_negative)
    """No new entry on a symbol for this long after a losing exit on it."""
    stale_data_s: float = attrs.field(default=120.0, validator=_non_negative)
    """No new risk when the symbol's last market data is older (clock time); 0: off."""
    max_orders_per_minute: int = attrs.field(default=60, validator=_positive)


class FillModel(enum.StrEnum):
    """When paper market orders fill."""

    NEXT_OPEN = "next_open"
    CLOSE = "close"


class SlippageModel(enum.StrEnum):
    """How paper fills are moved against the trader."""

    FIXED = "fixed"
    VOLUME = "volume"


@attrs.frozen
class BybitExecutionSection:
    """``[execution.bybit]``: the Bybit V5 REST venue (pybit). Keys come from the environment."""

    base_url: str = "https://api.bybit.com"
    category: BybitCategory = BybitCategory.LINEAR
    api_key_env: str = "BYBIT_API_KEY"
    """Name of the environment variable holding the API key (never the key itself)."""
    api_secret_env: str = "BYBIT_API_SECRET"  # noqa: S105 - the variable's name, not a secret
    recv_window_ms: int = attrs.field(default=5000, validator=_positive)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    """Retries of a transient failure (timeout, 429, 5xx, retryable retCode)."""
    backoff_initial_s: float = attrs.field(default=0.2, validator=_positive)
    backoff_max_s: float = attrs.field(default=5.0, validator=_positive)
    breaker_failures: int = attrs.field(default=5, validator=_positive)
    """Consecutive failures that open an endpoint group's circuit breaker."""
    breaker_reset_s: float = attrs.field(default=30.0, validator=_positive)
    """How long an open breaker refuses calls before letting one through."""
    private_stream: bool = False
    """Take fills and order updates live from the private WebSocket (else only ``poll()``)."""
    private_ws_url: str = attrs.field(
        default="wss://stream.bybit.com/v5/private", validator=_ws_url
    )
    """Testnet: ``wss://stream-testnet.bybit.com/v5/private``."""
    ping_interval_s: float = attrs.field(default=20.0, validator=_positive)
    pong_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    """A ping not answered within this long ends the connection (it is reconnected)."""
    reconnect_initial_s: float = attrs.field(default=0.5, validator=_positive)
    reconnect_max_s: float = attrs.field(default=30.0, validator=_positive)
    drift_grace_s: float = attrs.field(default=5.0, validator=_positive)
    """How long the stream's position/wallet may disagree with the portfolio before an alert."""
    wallet_drift_tolerance: Decimal = attrs.field(
        default=Decimal("0.01"), validator=_non_negative_decimal
    )
    """Quote amount the wallet's change may differ from the portfolio's without an alert."""

    def __attrs_post_init__(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            reason = f"{self.backoff_max_s} is below backoff_initial_s {self.backoff_initial_s}"
            raise _BadValueError("backoff_max_s", reason)
        if self.reconnect_max_s < self.reconnect_initial_s:
            reason = (
                f"{self.reconnect_max_s} is below reconnect_initial_s {self.reconnect_initial_s}"
            )
            raise _BadValueError("reconnect_max_s", reason)
        if self.pong_timeout_s >= self.ping_interval_s:
            reason = f"{self.pong_timeout_s} must be below ping_interval_s {self.ping_interval_s}"
            raise _BadValueError("pong_timeout_s", reason)


@attrs.frozen
class ExecutionSection:
    """``[execution]``: the venue and the paper/backtest fill, fee and slippage models."""

    venue: str = "paper"
    fill: FillModel = FillModel.NEXT_OPEN
    fee_bps_taker: float = attrs.field(default=5.5, validator=_taker_fee)
    """Market and stop fills; >= 0."""
    fee_bps_maker: float = attrs.field(default=2.0, validator=_maker_fee)
    """Limit fills; negative is a maker rebate (the fill's fee is negative)."""
    slippage: SlippageModel = SlippageModel.FIXED
    slippage_bps: float = attrs.field(default=0.0, validator=_bps)
    """Fixed model: bps against the trader. Volume model: bps per 1 % of the bar's volume."""
    max_volume_share: float = attrs.field(default=1.0, validator=_positive)
    """Largest share of a bar's volume one order may fill in that bar (< 1: partial fills).

    It may exceed 1 (fill more than the bar traded): ``planes backtest`` sets 1e12, no cap."""
    spot_buy_fee_in_base: bool = False
    """Paper: charge a buy's fee in the base coin (the position gets less), as Bybit spot does."""
    cancel_on_stop: bool = False
    """Paper: cancel working orders at a graceful stop (``planes backtest`` does); else they are
    kept, snapshotted and working again after a restart, as a venue keeps them."""
    bybit: BybitExecutionSection = attrs.field(factory=BybitExecutionSection)


@attrs.frozen
class PortfolioSection:
    """``[portfolio]``: starting cash of the ledger."""

    cash: Decimal = attrs.field(default=Decimal(10_000), validator=_positive_decimal)
    """Equity starts here: returns, the drawdown peak and exposure sizing are relative to it."""
    quote: str = attrs.field(default="USDT", validator=_asset)


@attrs.frozen
class ControlSection:
    """``[control]``: how long the Orchestrator waits at boot and shutdown."""

    connect_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    disconnect_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    drain_timeout_s: float = attrs.field(default=5.0, validator=_non_negative)
    stop_on_end_of_data: bool = True
    """Stop the runtime when every market source reports ``end_of_data``."""


class Synchronous(enum.StrEnum):
    """SQLite ``synchronous`` level of the journal (durability against crashes; see operations)."""

    OFF = "off"
    NORMAL = "normal"
    FULL = "full"


class ReconcilePolicy(enum.StrEnum):
    """What recovery does with an open order the venue has and the recovered state does not."""

    ALERT = "alert"
    ADOPT = "adopt"
    CANCEL = "cancel"


@attrs.frozen
class StorageSection:
    """``[storage]``: the journal, snapshots, registry and outbox under ``runtime.data_dir``."""

    enabled: bool = True
    """Journal every event, snapshot state, recover at boot (backtests turn it off)."""
    synchronous: Synchronous = Synchronous.NORMAL
    batch_size: int = attrs.field(default=512, validator=_positive)
    """Events per journal transaction at most."""
    flush_interval_s: float = attrs.field(default=0.05, validator=_positive)
    """The longest an appended event waits before its batch is committed."""
    queue_size: int = attrs.field(default=65536, validator=_positive)
    """Events waiting for the writer; when full, trading topics block and market data is sampled."""
    sample_every: int = attrs.field(default=10, validator=_positive)
    """With the queue full, keep one market event in this many."""
    snapshot_interval_s: float = attrs.field(default=60.0, validator=_non_negative)
    """Seconds between periodic snapshots (0: only on changes and at shutdown)."""
    snapshot_every_events: int = attrs.field(default=50_000, validator=_non_negative)
    """Snapshot after this many journaled events (0: never by count): bounds the journal tail a
    recovery after a crash replays, and so the recovery time."""
    snapshot_after_change_s: float = attrs.field(default=1.0, validator=_non_negative)
    """A fill or a registry change is followed by a snapshot this many seconds later (or sooner,
    once ``snapshot_every_events`` more events are journaled meanwhile)."""
    snapshot_keep: int = attrs.field(default=5, validator=_positive)
    stale_snapshot_s: float = attrs.field(default=86400.0, validator=_non_negative)
    """Warn at recovery when the last snapshot is older than this (0: never)."""
    recovery_timeout_s: float = attrs.field(default=60.0, validator=_positive)
    reconcile: ReconcilePolicy = ReconcilePolicy.ALERT
    notifiers: tuple[str, ...] = ()
    """Notifier names that receive alerts through the outbox (empty: no notifications)."""
    notify_min_severity: str = attrs.field(
        default="warning", validator=_one_of(("info", "warning", "critical"))
    )
    outbox_max_attempts: int = attrs.field(default=8, validator=_positive)


@attrs.frozen
class LoggingSection:
    """``[logging]``: level, renderer, on/off."""

    level: str = attrs.field(default="info", validator=_log_level)
    format: LogFormat = LogFormat.AUTO
    enabled: bool = True


@attrs.frozen
class ObservabilitySection:
    """``[observability]``: the periodic status line."""

    status_interval_s: float = attrs.field(default=10.0, validator=_non_negative)
    """Seconds between status lines (0: none)."""


@attrs.frozen
class PluginsSection:
    """``[plugins]``: where plugins come from and which to leave out."""

    entry_points: bool = True
    """Load plugins from the ``planes`` entry-point group."""
    modules: tuple[str, ...] = ()
    """Extra plugins by module name (``pkg.mod``) or class path (``pkg.mod:Class``)."""
    disabled: tuple[str, ...] = ()
    """Plugin names not to load (built-in ones too, e.g. ``planes.observability``)."""
    optional: tuple[str, ...] = ()
    """Plugin names whose failure to load is logged and skipped instead of failing start-up."""
    settings: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    """Each plugin's own table, ``[plugins.settings.<name>]``, handed to it as ``ctx.settings``."""


@attrs.frozen
class Config:
    """The whole configuration."""

    runtime: RuntimeSection = attrs.field(factory=RuntimeSection)
    market: MarketSection = attrs.field(factory=MarketSection)
    analytics: AnalyticsSection = attrs.field(factory=AnalyticsSection)
    strategy: StrategySection = attrs.field(factory=StrategySection)
    risk: RiskSection = attrs.field(factory=RiskSection)
    execution: ExecutionSection = attrs.field(factory=ExecutionSection)
    portfolio: PortfolioSection = attrs.field(factory=PortfolioSection)
    control: ControlSection = attrs.field(factory=ControlSection)
    storage: StorageSection = attrs.field(factory=StorageSection)
    logging: LoggingSection = attrs.field(factory=LoggingSection)
    observability: ObservabilitySection = attrs.field(factory=ObservabilitySection)
    plugins: PluginsSection = attrs.field(factory=PluginsSection)

    @property
    def storage_on(self) -> bool:
        """Storage is enabled and its plugin not disabled.

        Then state is journaled and recovered, and the registry switches scenarios.
        """
        return self.storage.enabled and STORAGE_PLUGIN not in self.plugins.disabled


STORAGE_PLUGIN = "planes.storage"
"""The built-in plugin of the storage plane (``plugins.disabled`` can leave it out)."""


# -- strict structuring ------------------------------------------------------------------


def make_config_converter() -> cattrs.Converter:
    """A converter that refuses extra keys and never coerces ("3" is not an int, 1 not a bool)."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind, accepts, what in SCALARS:
        converter.register_structure_hook(kind, strict_scalar(kind, accepts, what))
    converter.register_structure_hook(Decimal, structure_decimal)
    # Strategy params are TOML scalars kept as they came (3 stays an int, 0.5 a float).
    configure_union_passthrough(str | int | float | bool, converter)

    def is_tuple(cl: Any) -> bool:
        return getattr(cl, "__origin__", None) is tuple

    base_tuple = converter.get_structure_hook(tuple[str, ...])

    def structure_tuple(value: Any, cl: Any) -> Any:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            msg = (
                f'expected a list (a TOML array like ["a", "b"]), '
                f"got {type(value).__name__} {value!r}"
            )
            raise TypeError(msg)
        return base_tuple(value, cl)

    converter.register_structure_hook_func(is_tuple, structure_tuple)
    converter.register_structure_hook_func(
        lambda cl: isinstance(cl, type) and issubclass(cl, enum.Enum), structure_enum
    )

    def table_first(cl: Any) -> Any:
        structure = (
            cattrs.gen.make_dict_structure_fn(cl, converter, _cattrs_forbid_extra_keys=True)
            if attrs.has(cl)
            else converter.gen_structure_mapping(cl)
        )

        def check(value: Any, cl: Any) -> Any:
            if not isinstance(value, Mapping):
                msg = f"expected a table, got {type(value).__name__} {value!r}"
                raise TypeError(msg)
            return structure(value, cl)

        return check

    converter.register_structure_hook_factory(
        lambda cl: attrs.has(cl) or getattr(cl, "__origin__", None) is dict, table_first
    )
    return converter


_CONVERTER = make_config_converter()


# -- layering ----------------------------------------------------------------------------


def parse_value(raw: str) -> Any:
    """Read ``raw`` as a TOML value when it parses as one, else as a plain string."""
    try:
        document = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    if list(document) != ["v"]:  # "3\nw = 4" is not one value
        return raw
    value = document["v"]
    # No field holds a TOML date/time; keep it as typed so runtime.start=2024-01-01T00:00:00Z works.
    return raw if isinstance(value, date | time) else value


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any, origin: str) -> None:
    node = tree
    for depth, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            msg = f"{where} (from {origin}) is a value, so {'.'.join(path)} cannot be set"
            raise ConfigError(msg)
        node = child
    node[path[-1]] = value


def _split_key(key: str, origin: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not re.fullmatch(r"[A-Za-z0-9_\-]+", p) for p in parts):
        msg = f"{origin}: {key!r} is not a key path like market.symbols"
        raise ConfigError(msg)
    return parts


def _merge(
    base: dict[str, Any],
    layer: Mapping[str, Any],
    origin: str,
    origins: dict[str, str],
    prefix: str = "",
) -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, origins, path + ".")
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
            origins[path] = origin


_SYMBOL_KEYED = (("market", "synthetic", "start_prices"), ("risk", "max_position"))
"""Tables keyed by symbol: the environment layer keeps their keys upper-case."""


def env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The ``PLANES__SECTION__KEY`` variables as one layer per variable.

    Key names are lower-cased, except the symbols under ``market.synthetic.start_prices`` and
    ``risk.max_position``.
    """
    layers: dict[str, dict[str, Any]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if tuple(parts[:-1]) in _SYMBOL_KEYED:
            parts[-1] = parts[-1].upper()  # symbols are upper-case; names of keys are not
        key = ".".join(parts)
        origin = f"environment variable {name}"
        tree: dict[str, Any] = {}
        _set_path(tree, _split_key(key, origin), parse_value(environ[name]), origin)
        layers[origin] = tree
    return layers


def set_layer(assignment: str) -> tuple[str, dict[str, Any]]:
    """One ``--set key=value`` as a layer."""
    key, sep, raw = assignment.partition("=")
    origin = f"--set {assignment}"
    if not sep:
        msg = f'{origin}: expected key=value, like market.symbols=["BTCUSDT"]'
        raise ConfigError(msg)
    tree: dict[str, Any] = {}
    _set_path(tree, _split_key(key.strip(), origin), parse_value(raw.strip()), origin)
    return origin, tree


def default_config_path(cwd: Path | None = None) -> Path | None:
    """``configs/default.toml`` in ``cwd`` or in the source tree; None when neither exists."""
    for root in (cwd or Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = root / DEFAULT_CONFIG
        if candidate.is_file():
            return candidate
    return None


_PARSED: dict[str, tuple[bytes, dict[str, Any]]] = {}
"""The last files ``read_toml`` parsed, by path: their bytes and what they parsed to."""
_PARSED_KEPT = 8


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax is a ``ConfigError`` naming the file.

    The file is read every time; a file whose bytes are the ones parsed before is not parsed
    again (``tomllib`` takes milliseconds for the default file, and a parameter sweep builds a
    config per run): the caller gets a copy of the parse of its own.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"config file {path} does not exist"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"config file {path} cannot be read: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    key = os.fspath(path)
    parsed = _PARSED.get(key)
    if parsed is None or parsed[0] != data:
        try:
            tree = tomllib.loads(data.decode())
        except UnicodeDecodeError as exc:
            msg = f"config file {path} is not UTF-8 text: {exc}"
            raise ConfigError(msg) from None
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path} is not valid TOML: {exc}"
            raise ConfigError(msg) from None
        _PARSED.pop(key, None)
        while len(_PARSED) >= _PARSED_KEPT:
            del _PARSED[next(iter(_PARSED))]
        parsed = _PARSED[key] = (data, tree)
    return cast(dict[str, Any], _copy_tree(parsed[1]))


def _copy_tree(value: Any) -> Any:
    """A copy of parsed TOML: new tables and arrays, the same (immutable) scalars."""
    if type(value) is dict:
        return {key: _copy_tree(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy_tree(item) for item in value]
    return value


def load_config(
    path: Path | None = None,
    sets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    use_default_file: bool = True,
) -> Config:
    """Build the ``Config``: defaults < ``path`` (or ``configs/default.toml``) < env < ``sets``."""
    environ = os.environ if environ is None else environ
    # The defaults are the first layer, so a partial table (one more start price) merges.
    tree: dict[str, Any] = to_tree(Config())
    origins: dict[str, str] = {}
    if path is None and use_default_file:
        path = default_config_path()
    if path is not None:
        _merge(tree, read_toml(path), f"file {path}", origins)
    for origin, layer in env_layer(environ).items():
        _merge(tree, layer, origin, origins)
    for assignment in sets:
        origin, layer = set_layer(assignment)
        _merge(tree, layer, origin, origins)
    return structure_config(tree, origins)


def structure_config(tree: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> Config:
    """Turn a merged tree into ``Config``; errors name each key path, reason and origin."""
    try:
        config = _CONVERTER.structure(tree, Config)
    except (ClassValidationError, ForbiddenExtraKeysError, IterableValidationError) as exc:
        problems = list(_walk(exc, ()))
    except (TypeError, ValueError) as exc:
        problems = [((), str(exc))]
    else:
        if origins:
            ident = id(config)
            _ORIGINS[ident] = dict(origins)
            weakref.finalize(config, _ORIGINS.pop, ident, None)
        return config
    lines = []
    for path, reason in problems:
        key = ".".join(path) or "(top level)"
        origin = _origin_of(path, origins or {})
        lines.append(f"  {key}: {reason}" + (f" (from {origin})" if origin else ""))
    noun = "problem" if len(lines) == 1 else "problems"
    raise ConfigError(f"invalid configuration, {len(lines)} {noun}:\n" + "\n".join(lines))


_ORIGINS: dict[int, Mapping[str, str]] = {}
"""Where each live ``Config`` that ``structure_config`` built got its keys, by ``id(config)``
(the entry goes with the config): checks made after loading, such as the runtime's check of
``execution.venue`` against the registered venues, can name the layer too."""


def origin_of(config: Config, key: str) -> str | None:
    """The layer ``key`` (a dotted path like ``execution.venue``) of ``config`` came from.

    E.g. ``--set execution.venue=papr``. None for a built-in default, and for a config that
    ``load_config`` or ``structure_config`` did not build (``attrs.evolve`` makes a new one).
    """
    origins = _ORIGINS.get(id(config))
    return None if origins is None else _origin_of(key.split("."), origins)


def _origin_of(path: Sequence[str], origins: Mapping[str, str]) -> str | None:
    # Origins are recorded as dotted keys: "symbols[0]" was set as "symbols", "start_prices[X]"
    # as "start_prices.X".
    keys = re.sub(r"\[([^\]]*)\]", r".\1", ".".join(path)).split(".") if path else []
    for end in range(len(keys), 0, -1):
        origin = origins.get(".".join(keys[:end]))
        if origin is not None:
            return origin
    return None


def _walk(exc: BaseException, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield (*path, key), f"unknown key (known: {', '.join(_known_keys(exc.cl))})"
        return
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", [])
            step = path
            for note in notes:
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                if name is not None:
                    step = (*path, str(name))
                elif index is not None:
                    step = (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",)
            yield from _walk(sub, step)
        return
    if isinstance(exc, _BadValueError):
        yield (*path, exc.key), str(exc)
        return
    if isinstance(exc, KeyError):
        yield path, "required key is missing"
        return
    yield path, str(exc)


def _known_keys(cl: type) -> list[str]:
    return [a.name for a in attrs.fields(cl)] if attrs.has(cl) else []


def _tree_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(Decimal, str)
    return converter


_TREE_CONVERTER = _tree_converter()
"""Made once: cattrs generates its unstructure functions on first use and keeps them."""


def to_tree(config: Config) -> dict[str, Any]:
    """``config`` as plain data (enums and Decimals as strings), e.g. to compare with a file."""
    tree: dict[str, Any] = _TREE_CONVERTER.unstructure(config)
    return tree
