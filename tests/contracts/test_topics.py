"""Topic names, the BotEventMap, the TopicRegistry, and the contracts' import boundary."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import contracts
from contracts.market import TickerEvent
from contracts.meta import Payload
from contracts.topics import MARKET_TICKER, BotEventMap, Topic, TopicClashError, TopicRegistry

SPEC_TOPICS = [
    "control:command",
    "control:state",
    "control:rollbackModel",
    "market:connect",
    "market:disconnect",
    "market:subscribe",
    "market:connected",
    "market:disconnected",
    "market:error",
    "market:ticker",
    "market:trade",
    "market:orderbook_delta",
    "market:kline",
    "analytics:features",
    "analytics:context",
    "analytics:marketDriftDetected",
    "strategy:intent",
    "strategy:scenarioEnabled",
    "strategy:scenarioDisabled",
    "risk:approved_intent",
    "risk:rejected_intent",
    "exec:order_event",
    "portfolio:position_update",
    "state:snapshot",
    "state:recovery",
    "error:event",
    "observability:alert",
    "research:featureVectorRecorded",
    "research:outcomeRecorded",
    "research:newClusterFound",
    "research:candidateScenarioBuilt",
    "research:backtestCompleted",
    "research:scenarioApproved",
    "research:scenarioRejected",
]
"""The SPEC §2 table: stable API."""


@attrs.frozen
class PluginPing(Payload):
    """A payload a plugin would bring along with its topic."""

    n: int = 0


@attrs.frozen
class NotAPayload:
    n: int = 0


@pytest.mark.parametrize(
    "name", ["bad", "a b:c", "x:*", "market:*", ":x", "x:", "", "a\tb:c", "x:y\n"]
)
def test_bad_topic_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="must look like 'plane:name'"):
        Topic(name, PluginPing)


@pytest.mark.parametrize("name", ["plugin:ping", "market:ticker", "research:newClusterFound"])
def test_good_topic_names_are_accepted(name: str) -> None:
    topic = Topic(name, PluginPing)
    assert topic.name == name
    assert str(topic) == name
    assert topic.prefix == name.partition(":")[0]


def test_topics_compare_by_name_and_payload_not_description() -> None:
    assert Topic("plugin:ping", PluginPing, "one") == Topic("plugin:ping", PluginPing, "two")
    assert hash(Topic("plugin:ping", PluginPing, "a")) == hash(Topic("plugin:ping", PluginPing))
    assert Topic("plugin:ping", PluginPing) != Topic("plugin:pong", PluginPing)


@pytest.mark.parametrize(("key", "topic"), BotEventMap.items(), ids=list(BotEventMap))
def test_bot_event_map_key_is_the_topic_name(key: str, topic: Topic[object]) -> None:
    assert key == topic.name


@pytest.mark.parametrize("name", SPEC_TOPICS)
def test_spec_topic_exists(name: str) -> None:
    assert name in BotEventMap


def test_bot_event_map_is_exactly_the_spec_table() -> None:
    # A new built-in topic is an API change: add it to SPEC §2 and to SPEC_TOPICS.
    assert len(SPEC_TOPICS) == len(set(SPEC_TOPICS)) == 34
    assert set(BotEventMap) == set(SPEC_TOPICS)


def test_payload_classes_are_unique_across_topics() -> None:
    classes = [topic.payload for topic in BotEventMap.values()]
    duplicates = {cls.__name__ for cls in classes if classes.count(cls) > 1}
    assert duplicates == set()


def test_registry_starts_as_the_bot_event_map() -> None:
    registry = TopicRegistry()
    assert dict(registry) == dict(BotEventMap)
    assert registry.owner("market:ticker") == "builtin"
    assert registry.for_payload(TickerEvent) is MARKET_TICKER


def test_registry_adds_a_plugin_topic() -> None:
    registry = TopicRegistry()
    ping = Topic("plugin:ping", PluginPing, "a plugin's own topic")
    registry.add(ping, owner="pinger")
    assert registry["plugin:ping"] is ping
    assert registry.owner("plugin:ping") == "pinger"
    assert registry.for_payload(PluginPing) is ping
    assert len(registry) == len(BotEventMap) + 1
    assert "plugin:ping" not in BotEventMap


def test_name_clash_names_both_owners() -> None:
    registry = TopicRegistry()
    registry.add(Topic("plugin:ping", PluginPing), owner="first-plugin")

    @attrs.frozen
    class OtherPing(Payload):
        pass

    with pytest.raises(TopicClashError, match="'plugin:ping' from second-plugin") as info:
        registry.add(Topic("plugin:ping", OtherPing), owner="second-plugin")
    assert "first-plugin" in str(info.value)
    assert registry.owner("plugin:ping") == "first-plugin"


def test_clash_with_a_builtin_topic_names_builtin() -> None:
    registry = TopicRegistry()
    with pytest.raises(TopicClashError, match="from hijacker clashes with the one from builtin"):
        registry.add(Topic("market:ticker", PluginPing), owner="hijacker")
    assert registry["market:ticker"] is MARKET_TICKER


def test_one_payload_class_bound_to_two_names_is_rejected() -> None:
    registry = TopicRegistry()
    registry.add(Topic("plugin:ping", PluginPing), owner="pinger")
    with pytest.raises(TopicClashError, match="already bound to 'plugin:ping' from pinger"):
        registry.add(Topic("plugin:ping2", PluginPing), owner="copycat")
    with pytest.raises(TopicClashError, match="already bound to 'market:ticker' from builtin"):
        registry.add(Topic("plugin:ticker", TickerEvent), owner="copycat")
    assert "plugin:ping2" not in registry
    assert "plugin:ticker" not in registry


def test_non_payload_class_is_rejected_naming_the_owner() -> None:
    registry = TopicRegistry()
    with pytest.raises(TypeError, match="sloppy-plugin registered topic 'plugin:bad'"):
        registry.add(Topic("plugin:bad", NotAPayload), owner="sloppy-plugin")  # type: ignore[type-var]
    assert "plugin:bad" not in registry


def test_non_topic_is_rejected_naming_the_owner() -> None:
    registry = TopicRegistry()
    with pytest.raises(TypeError, match="sloppy-plugin registered 'plugin:bad', which is not"):
        registry.add("plugin:bad", owner="sloppy-plugin")  # type: ignore[arg-type]


FORBIDDEN_PACKAGES = {"planes", "plugins", "research", "cli"}
CONTRACTS_DIR = Path(contracts.__file__).parent
CONTRACTS_FILES = sorted(CONTRACTS_DIR.rglob("*.py"))


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module is not None:
                yield node.module
            elif node.level > 1:  # climbs out of the contracts package
                yield "." * node.level + (node.module or "")


def test_contracts_files_are_found() -> None:
    names = {path.name for path in CONTRACTS_FILES}
    assert {"__init__.py", "meta.py", "topics.py", "converter.py"} <= names


@pytest.mark.parametrize(
    "path", CONTRACTS_FILES, ids=[str(p.relative_to(CONTRACTS_DIR)) for p in CONTRACTS_FILES]
)
def test_contracts_import_nothing_of_ours_outside_contracts(path: Path) -> None:
    bad = [
        module
        for module in _imports(path)
        if module.startswith(".") or module.partition(".")[0] in FORBIDDEN_PACKAGES
    ]
    assert bad == [], f"{path.name} imports {bad}"
