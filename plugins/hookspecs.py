"""Every hook a planes plugin can implement, in one place.

A plugin is a module or an object with functions marked ``@hookimpl`` (see ``plugins/template``).
Built-in planes are plugins registered exactly like outside ones. Each hook is called once per
runtime start-up, in registration order, with no arguments unless stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from contracts.ports import ExchangeSpec, NotifierSpec, PlaneSpec, StrategySpec
from contracts.topics import Topic

PROJECT = "planes"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def planes_register_topics() -> Sequence[Topic[Any]]:
    """Add topics to the BotEventMap.

    Called first, before the bus is built. A name or payload class that clashes with a built-in
    or another plugin's topic fails start-up naming both plugins.

    :return: the plugin's ``Topic`` objects (payloads subclass ``contracts.meta.Payload``).
    """
    raise NotImplementedError


@hookspec
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Add components to built-in planes, or new planes.

    Called after topics are registered. Each ``PlaneSpec.factory`` is called with a
    ``ComponentContext`` whose bus handle is bound to ``PlaneSpec.plane``.

    :return: the plugin's ``PlaneSpec`` objects.
    """
    raise NotImplementedError


@hookspec
def planes_register_exchanges() -> Sequence[ExchangeSpec]:
    """Add venues: a market-data source and/or an execution adapter under one name.

    ``market.source = "<name>"`` selects the market-data source. A name registered twice fails
    start-up naming both plugins.

    :return: the plugin's ``ExchangeSpec`` objects.
    """
    raise NotImplementedError


@hookspec
def planes_register_strategies() -> Sequence[StrategySpec]:
    """Add strategies by name, for scenarios to use.

    :return: the plugin's ``StrategySpec`` objects.
    """
    raise NotImplementedError


@hookspec
def planes_register_notifiers() -> Sequence[NotifierSpec]:
    """Add notifiers (Telegram, e-mail ...) by name.

    :return: the plugin's ``NotifierSpec`` objects.
    """
    raise NotImplementedError
