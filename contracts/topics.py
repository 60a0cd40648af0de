"""Topic objects and the BotEventMap: the one place where topic names are spelled.

A ``Topic[P]`` binds a stable topic name to its payload class, so ``bus.publish(TICKER, payload)``
is checked by mypy. Find a topic's publishers and subscribers by grepping for its constant.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, cast

import attrs

from contracts.analytics import FeatureVector, MarketContext, MarketDriftDetected
from contracts.control import ControlCommand, ControlState, RollbackRequested
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import (
    KlineEvent,
    MarketConnected,
    MarketConnectRequest,
    MarketDisconnected,
    MarketDisconnectRequest,
    MarketErrorEvent,
    MarketSubscribeRequest,
    OrderBookDelta,
    TickerEvent,
    TradeEvent,
)
from contracts.meta import Payload
from contracts.research import (
    BacktestCompleted,
    CandidateScenarioBuilt,
    FeatureVectorRecorded,
    NewClusterFound,
    OutcomeRecorded,
    ScenarioApproved,
    ScenarioRejected,
)
from contracts.risk import ApprovedIntent, RejectedIntent
from contracts.state import JournalFailed, RegistryChanged, StateRecovered, StateSnapshot
from contracts.strategy import Intent, ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert, ErrorEvent

P = TypeVar("P", bound=Payload)


def _check_name(_: object, __: attrs.Attribute[str], name: str) -> None:
    prefix, sep, rest = name.partition(":")
    if not sep or not prefix or not rest or "*" in name or any(c.isspace() for c in name):
        msg = f"topic name {name!r} must look like 'plane:name' (no spaces, no '*')"
        raise ValueError(msg)


@attrs.frozen
class Topic(Generic[P]):
    """A topic name bound to its payload class.

    Topics compare and hash by name and payload class, so they can key dicts.
    """

    name: str = attrs.field(validator=_check_name)
    payload: type[P]
    description: str = attrs.field(default="", eq=False)

    @property
    def prefix(self) -> str:
        """The plane part of the name (``market`` for ``market:ticker``)."""
        return self.name.partition(":")[0]

    def __str__(self) -> str:
        return self.name


CONTROL_COMMAND = Topic("control:command", ControlCommand, "operator or system command")
CONTROL_STATE = Topic("control:state", ControlState, "lifecycle state, on change and on status")
CONTROL_ROLLBACK_MODEL = Topic(
    "control:rollbackModel", RollbackRequested, "restore the previous model version"
)
MARKET_CONNECT = Topic("market:connect", MarketConnectRequest, "connect market sources")
MARKET_DISCONNECT = Topic("market:disconnect", MarketDisconnectRequest, "disconnect market sources")
MARKET_SUBSCRIBE = Topic("market:subscribe", MarketSubscribeRequest, "stream symbols/channels")
MARKET_CONNECTED = Topic("market:connected", MarketConnected, "a source is connected")
MARKET_DISCONNECTED = Topic("market:disconnected", MarketDisconnected, "a source disconnected")
MARKET_ERROR = Topic("market:error", MarketErrorEvent, "a source failed to do something")
MARKET_TICKER = Topic("market:ticker", TickerEvent, "full merged ticker state")
MARKET_TRADE = Topic("market:trade", TradeEvent, "a public trade")
MARKET_ORDERBOOK_DELTA = Topic("market:orderbook_delta", OrderBookDelta, "order-book update")
MARKET_KLINE = Topic("market:kline", KlineEvent, "an OHLCV bar (closed flag)")
ANALYTICS_FEATURES = Topic("analytics:features", FeatureVector, "indicator values")
ANALYTICS_CONTEXT = Topic("analytics:context", MarketContext, "market regime")
ANALYTICS_DRIFT = Topic(
    "analytics:marketDriftDetected", MarketDriftDetected, "a feature distribution drifted"
)
STRATEGY_INTENT = Topic("strategy:intent", Intent, "what a strategy wants (never an order)")
STRATEGY_SCENARIO_ENABLED = Topic(
    "strategy:scenarioEnabled", ScenarioEnabled, "a scenario now trades"
)
STRATEGY_SCENARIO_DISABLED = Topic(
    "strategy:scenarioDisabled", ScenarioDisabled, "a scenario stopped trading"
)
RISK_APPROVED = Topic("risk:approved_intent", ApprovedIntent, "intent approved with a size")
RISK_REJECTED = Topic("risk:rejected_intent", RejectedIntent, "intent refused with a reason code")
EXEC_ORDER_EVENT = Topic("exec:order_event", OrderEvent, "order lifecycle change")
PORTFOLIO_POSITION = Topic("portfolio:position_update", PositionUpdate, "position after a change")
STATE_SNAPSHOT = Topic("state:snapshot", StateSnapshot, "a state snapshot was written")
STATE_RECOVERY = Topic("state:recovery", StateRecovered, "what boot recovery restored")
STATE_REGISTRY = Topic(
    "state:registry", RegistryChanged, "the registry committed a scenario or model change"
)
"""Not in the BotEventMap: the storage plugin registers it (it exists only with storage on)."""
STATE_JOURNAL_FAILED = Topic(
    "state:journal_failed", JournalFailed, "the journal stopped storing events: the run stops"
)
"""Not in the BotEventMap: the storage plugin registers it; the runtime stops on it."""
ERROR_EVENT = Topic("error:event", ErrorEvent, "a handler or publish failed, isolated")
OBSERVABILITY_ALERT = Topic("observability:alert", Alert, "something an operator should see")
RESEARCH_FEATURE_RECORDED = Topic(
    "research:featureVectorRecorded", FeatureVectorRecorded, "feature vector stored"
)
RESEARCH_OUTCOME = Topic("research:outcomeRecorded", OutcomeRecorded, "vector labelled")
RESEARCH_CLUSTER = Topic("research:newClusterFound", NewClusterFound, "regime cluster found")
RESEARCH_CANDIDATE = Topic(
    "research:candidateScenarioBuilt", CandidateScenarioBuilt, "candidate scenario built"
)
RESEARCH_BACKTEST = Topic(
    "research:backtestCompleted", BacktestCompleted, "candidate backtest finished"
)
RESEARCH_APPROVED = Topic(
    "research:scenarioApproved", ScenarioApproved, "candidate proposed to the operator"
)
RESEARCH_REJECTED = Topic("research:scenarioRejected", ScenarioRejected, "candidate failed gates")

_BUILTIN: tuple[Topic[Any], ...] = (
    CONTROL_COMMAND,
    CONTROL_STATE,
    CONTROL_ROLLBACK_MODEL,
    MARKET_CONNECT,
    MARKET_DISCONNECT,
    MARKET_SUBSCRIBE,
    MARKET_CONNECTED,
    MARKET_DISCONNECTED,
    MARKET_ERROR,
    MARKET_TICKER,
    MARKET_TRADE,
    MARKET_ORDERBOOK_DELTA,
    MARKET_KLINE,
    ANALYTICS_FEATURES,
    ANALYTICS_CONTEXT,
    ANALYTICS_DRIFT,
    STRATEGY_INTENT,
    STRATEGY_SCENARIO_ENABLED,
    STRATEGY_SCENARIO_DISABLED,
    RISK_APPROVED,
    RISK_REJECTED,
    EXEC_ORDER_EVENT,
    PORTFOLIO_POSITION,
    STATE_SNAPSHOT,
    STATE_RECOVERY,
    ERROR_EVENT,
    OBSERVABILITY_ALERT,
    RESEARCH_FEATURE_RECORDED,
    RESEARCH_OUTCOME,
    RESEARCH_CLUSTER,
    RESEARCH_CANDIDATE,
    RESEARCH_BACKTEST,
    RESEARCH_APPROVED,
    RESEARCH_REJECTED,
)

BotEventMap: Mapping[str, Topic[Any]] = {t.name: t for t in _BUILTIN}
"""Every built-in topic by name. Plugins add theirs through a ``TopicRegistry``."""


class TopicClashError(ValueError):
    """Two topics claim the same name, or one payload class is bound to two names."""


class TopicRegistry(Mapping[str, Topic[Any]]):
    """The BotEventMap plus the topics plugins registered; a name clash is an error.

    ``owner`` names who added a topic (``builtin`` or a plugin name) for error messages and docs.
    """

    def __init__(self, topics: Iterable[Topic[Any]] = BotEventMap.values()) -> None:
        self._topics: dict[str, Topic[Any]] = {}
        self._owner: dict[str, str] = {}
        self._by_payload: dict[type[Payload], Topic[Any]] = {}
        for topic in topics:
            self.add(topic, owner="builtin")

    def add(self, topic: Topic[Any], owner: str) -> None:
        """Register ``topic`` for ``owner``; a clash raises ``TopicClashError`` naming both."""
        if not isinstance(cast(object, topic), Topic):  # plugins hand us anything at run time
            msg = f"{owner} registered {topic!r}, which is not a Topic"
            raise TypeError(msg)
        if not (isinstance(topic.payload, type) and issubclass(topic.payload, Payload)):
            msg = (
                f"{owner} registered topic {topic.name!r} with payload {topic.payload!r}, "
                "which is not a contracts.meta.Payload subclass"
            )
            raise TypeError(msg)
        known = self._topics.get(topic.name)
        if known is not None:
            msg = (
                f"topic {topic.name!r} from {owner} clashes with the one from "
                f"{self._owner[topic.name]} ({known.payload.__qualname__})"
            )
            raise TopicClashError(msg)
        other = self._by_payload.get(topic.payload)
        if other is not None:
            msg = (
                f"payload {topic.payload.__qualname__} of topic {topic.name!r} from {owner} is "
                f"already bound to {other.name!r} from {self._owner[other.name]}"
            )
            raise TopicClashError(msg)
        self._topics[topic.name] = topic
        self._owner[topic.name] = owner
        self._by_payload[topic.payload] = topic

    def owner(self, name: str) -> str:
        """Who registered the topic called ``name``."""
        return self._owner[name]

    def for_payload(self, payload_type: type[Payload]) -> Topic[Any]:
        """The topic a payload class is bound to."""
        return self._by_payload[payload_type]

    def __getitem__(self, name: str) -> Topic[Any]:
        return self._topics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._topics)

    def __len__(self) -> int:
        return len(self._topics)
