"""Replaying events into one component as boot-time recovery does (the tests of each plane)."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.converter import fast_dumps
from contracts.execution import PositionView
from contracts.meta import Payload
from contracts.ports import Stateful
from contracts.topics import PORTFOLIO_POSITION, STATE_REGISTRY, BotEventMap
from planes.state import StateHub
from planes.storage.rebuild import replay_rows

TYPES = {name: topic.payload for name, topic in BotEventMap.items()}
TYPES[STATE_REGISTRY.name] = STATE_REGISTRY.payload  # the storage plugin's topic, as at boot


def replay(
    component: Stateful, key: str, events: Sequence[tuple[str, Payload]], *, views: bool
) -> None:
    """Replay ``events`` as recovery does: their journal text, position updates from views.

    ``views=False``: every payload whole to ``replay_event``.
    """
    if not views:
        for topic, payload in events:
            if topic in component.state_topics:
                component.replay_event(topic, payload)
        return
    hub = StateHub()
    hub.add(component, key)
    assert dict(hub.views) == {PORTFOLIO_POSITION.name: PositionView}
    rows = [
        (seq, topic, fast_dumps(payload))
        for seq, (topic, payload) in enumerate(events, 1)
        if topic in hub.topics
    ]
    assert replay_rows(hub, rows, TYPES) == len(rows)
