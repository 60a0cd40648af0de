"""The parts of the EventBus that stay interpreted when ``planes/bus.py`` is compiled.

* Its exceptions: mypyc compiles no class with two built-in bases (``BusError`` + ``TypeError``).
* The adapter that runs an ``async def`` handler as a task: compiled, the task bookkeeping
  crashed the garbage collector (reproduced with mypy 2.4.1's mypyc; see ``planes/native.py``).

``planes.bus`` re-exports the exceptions: import them from there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol


class BusError(Exception):
    """Base class of the errors the bus raises."""


class PayloadTypeError(BusError, TypeError):
    """A payload is not of its topic's class, or has no ``EventMeta``."""


class UnknownTopicError(BusError, KeyError):
    """A topic that was never registered was published or subscribed."""

    def __str__(self) -> str:
        return str(self.args[0])


class PublishDeniedError(BusError, PermissionError):
    """A plane tried to publish a topic it has no right to, or with another plane's source."""


class TaskHost(Protocol):
    """What an ``AsyncAdapter`` needs of the bus: its loop, its task set, its error report."""

    @property
    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop bound by ``bind_loop``, if any."""
        ...

    @property
    def handler_tasks(self) -> set[asyncio.Task[object]]:
        """The async handler tasks in flight (``drain`` waits for them)."""
        ...

    def report_error(self, origin: str, topic_name: str, exc: BaseException) -> None:
        """Count, log and publish ``error:event``."""
        ...


class AsyncAdapter:
    """A receiver that schedules ``handler(*args)`` on the bus's loop and tracks the task.

    ``__wrapped__`` is the handler (``functools.update_wrapper``), so the adapter is described,
    and found again on a second subscription, as the handler it runs.
    """

    def __init__(
        self, host: TaskHost, handler: Callable[..., Any], where: str, origin: str
    ) -> None:
        self.host = host
        self.handler = handler
        self.where = where
        self.origin = origin
        functools.update_wrapper(self, handler)

    def __call__(self, *args: Any) -> None:
        host = self.host
        loop = host.bound_loop
        if loop is None or loop.is_closed():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                msg = f"async handler {self.origin} needs a running event loop"
                raise RuntimeError(msg) from None
        name = f"{self.where}:{self.origin}"
        task: asyncio.Task[object] = loop.create_task(self.handler(*args), name=name)
        host.handler_tasks.add(task)
        topic_name = args[0].name if len(args) == 2 else self.where
        task.add_done_callback(functools.partial(self._done, topic_name))

    def _done(self, topic_name: str, task: asyncio.Task[object]) -> None:
        self.host.handler_tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.host.report_error(self.origin, topic_name, exc)
