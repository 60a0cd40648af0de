"""docs/topics.md is the rendered BotEventMap, and the renderer covers every topic."""

from __future__ import annotations

from pathlib import Path

from cli.main import _topics
from cli.topics import publishers, render_markdown, render_text
from contracts.topics import BotEventMap, TopicRegistry
from plugins.builtin import BUILTIN_PLUGINS
from plugins.manager import PluginHost

ROOT = Path(__file__).resolve().parents[2]
TOPICS_MD = ROOT / "docs" / "topics.md"


def test_docs_topics_md_is_up_to_date() -> None:
    # what `make docs` renders: the BotEventMap plus the built-in plugins' topics
    host = PluginHost(builtin=BUILTIN_PLUGINS, entry_points=False)
    rendered = render_markdown(_topics(host))
    assert TOPICS_MD.read_text(encoding="utf-8") == rendered, (
        "docs/topics.md is out of date with contracts.topics: run `make docs` and commit it"
    )


def test_markdown_has_a_row_and_a_section_per_topic() -> None:
    rendered = render_markdown(TopicRegistry())
    for name, topic in BotEventMap.items():
        assert f"| `{name}` | `{topic.payload.__name__}` |" in rendered
        assert f"### `{name}` → `{topic.payload.__name__}`" in rendered
    assert "`meta`" not in rendered  # meta is described once, not per payload


def test_text_lists_every_topic_on_its_own_line() -> None:
    lines = render_text(TopicRegistry()).splitlines()
    assert [line.split()[0] for line in lines] == list(BotEventMap)


def test_reserved_topics_name_their_only_publisher() -> None:
    registry = TopicRegistry()
    assert publishers(registry["control:state"]) == ["control"]
    assert publishers(registry["risk:approved_intent"]) == ["risk"]
    assert publishers(registry["exec:order_event"]) == ["execution"]
    assert "research" in publishers(registry["analytics:marketDriftDetected"])
