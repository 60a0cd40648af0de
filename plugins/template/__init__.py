"""A template for third-party planes plugins: copy it, rename it, keep only what you need.

``plugin.py`` is a complete, type-checked plugin with one of everything; ``pyproject.toml.example``
shows how to publish it under the ``planes`` entry-point group. A plugin is a module (or a class,
instantiated with no arguments) with functions marked ``@plugins.hookspecs.hookimpl``. Every hook
is optional, but a plugin that implements none adds nothing. Each hook is called once at start-up
and returns a list (``None`` counts as empty).

+------------------------------+----------+-----------------------------------------------------+
| Hook                         | Required | Returns                                             |
+==============================+==========+=====================================================+
| planes_register_topics       | optional | ``Topic`` objects; payloads subclass ``Payload``    |
|                              |          | and are ``@attrs.frozen``; a name or payload class  |
|                              |          | that is already taken fails start-up                |
+------------------------------+----------+-----------------------------------------------------+
| planes_register_planes       | optional | ``PlaneSpec``: a component factory on a built-in or |
|                              |          | a new plane; a new plane publishes only what its    |
|                              |          | ``publishes`` patterns name                         |
+------------------------------+----------+-----------------------------------------------------+
| planes_register_exchanges    | optional | ``ExchangeSpec``: a market-data source factory      |
|                              |          | and/or an execution adapter factory, by name        |
+------------------------------+----------+-----------------------------------------------------+
| planes_register_strategies   | optional | ``StrategySpec``: a strategy factory by name        |
+------------------------------+----------+-----------------------------------------------------+
| planes_register_notifiers    | optional | ``NotifierSpec``: a notifier factory by name        |
+------------------------------+----------+-----------------------------------------------------+

What the factories build (Protocols in ``contracts.ports``):

+-----------------------------------------+-------------+---------------------------------------+
| Member                                  | Requirement | Notes                                 |
+=========================================+=============+=======================================+
| ``Component.name``                      | required    | shown in logs and start-up errors     |
| ``Component.start()``                   | required    | async; subscribe, create tasks        |
| ``Component.stop()``                    | required    | async; cancel tasks, release; called  |
|                                         |             | once, even after a failed ``start``   |
+-----------------------------------------+-------------+---------------------------------------+
| ``MarketDataSource.name``, ``endpoint`` | required    | ``name`` is ``market.source``         |
| ``MarketDataSource.connect()``          | required    | async, idempotent; return once        |
|                                         |             | streaming; pace with ``ctx.clock``    |
| ``MarketDataSource.disconnect()``       | required    | async, idempotent; end every task     |
| ``MarketDataSource.subscribe()``        | required    | async; may come before ``connect``    |
+-----------------------------------------+-------------+---------------------------------------+
| ``Strategy.on_event()``                 | required    | sync, pure: events in, ``Intent``     |
|                                         |             | list out; no I/O, no clock, no venue  |
+-----------------------------------------+-------------+---------------------------------------+
| ``Notifier.send()``                     | required    | async; raise on failure (the outbox   |
|                                         |             | retries), deliver once per key        |
+-----------------------------------------+-------------+---------------------------------------+
| execution adapter                       | optional    | ``ExchangeSpec.execution``; no port   |
|                                         |             | yet, leave it ``None``                |
+-----------------------------------------+-------------+---------------------------------------+

Factories of components, sources and notifiers get a ``ComponentContext``: ``bus`` (a handle bound
to the plane, which stamps ``meta.source`` and enforces publish rights), ``clock``, ``config``,
``settings`` (the plugin's ``[plugins.settings.<plugin name>]`` table) and the registries. A market
source gets the MarketGateway's context, so it publishes as the market plane, with its own
plugin's ``settings``. Strategy factories get the scenario's params.

Configuration: ``plugins.disabled`` leaves a plugin out by name; ``plugins.optional`` turns its
failure (import error, a hook raising or returning the wrong type) from a start-up error into a
logged skip. ``planes plugins`` lists what was loaded, from where, with what version.
"""
