"""The BotEventMap: event metadata, every payload, Topic objects, the converter and the ports.

``contracts`` imports nothing else of ours; every other package imports it.
"""

from contracts.meta import EventMeta, Source
from contracts.topics import BotEventMap, Topic, TopicRegistry

__all__ = ["BotEventMap", "EventMeta", "Source", "Topic", "TopicRegistry"]
