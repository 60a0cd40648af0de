"""The interactive operator shell (prompt-toolkit), a client of the bus like any other.

Every command publishes ``control:command`` through a ``cli`` plane handle; what comes back is
read from ``control:state``. Output is throttled by design: the shell prints lifecycle changes
and the answers to its own commands, never a line per tick, and log lines print above the prompt.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.patch_stdout import patch_stdout

from contracts.control import ControlCommand, ControlState
from contracts.enums import Lifecycle
from contracts.ports import BusHandle
from contracts.topics import CONTROL_COMMAND, CONTROL_STATE

HELP = {
    "status": "show the lifecycle and runtime counters",
    "pause": "stop trading (risk rejects every intent); market data and monitoring go on",
    "resume": "trade again",
    "stop": "shut the runtime down cleanly",
    "quit": "stop the runtime and leave the shell",
    "help": "this list",
}
BUS_COMMANDS = frozenset({"status", "pause", "resume", "stop"})


class Shell:
    """Reads commands at a prompt and publishes them; prints what the runtime answers."""

    def __init__(
        self,
        bus: BusHandle,
        *,
        session: PromptSession[str] | None = None,
        write: Callable[[str], None] = print,
    ) -> None:
        self._bus = bus
        self._session = session
        self._write = write
        self._ids = itertools.count(1)
        self._mine: set[str] = set()
        self._lifecycle: Lifecycle | None = None

    def attach(self) -> None:
        """Start listening to ``control:state``."""
        self._bus.subscribe(CONTROL_STATE, self._on_state)

    def _on_state(self, state: ControlState) -> None:
        if state.reply_to in self._mine:
            self._mine.discard(state.reply_to)
            self._write(
                f"{state.lifecycle.value}{' (paused)' if state.paused else ''}: {state.detail}"
            )
            for key, value in sorted(state.info.items()):
                self._write(f"  {key:<16} {value}")
        elif state.lifecycle is not self._lifecycle:
            self._write(f"[{state.lifecycle.value}] {state.detail}")
        self._lifecycle = state.lifecycle

    def execute(self, line: str) -> bool:
        """Run one command line; False when the shell should end."""
        words = line.split()
        if not words:
            return True
        name, args = words[0].lower(), tuple(words[1:])
        if name in ("help", "?"):
            for command, text in HELP.items():
                self._write(f"  {command:<8} {text}")
            return True
        if name in ("quit", "exit"):
            name = "stop"
        if name not in BUS_COMMANDS:
            self._write(f"unknown command {words[0]!r}; type help")
            return True
        command_id = f"cli-{next(self._ids)}"
        self._mine.add(command_id)
        meta = self._bus.meta()
        self._bus.publish(CONTROL_COMMAND, ControlCommand(meta, name, args, command_id))
        return name != "stop"

    async def run(self) -> None:
        """Prompt until ``quit``/``stop``, end of input (Ctrl-D) or cancellation."""
        session = self._session or PromptSession(completer=WordCompleter(list(HELP)))
        with patch_stdout(raw=True):
            while True:
                try:
                    line = await session.prompt_async("planes> ")
                except EOFError:
                    self.execute("stop")
                    return
                except KeyboardInterrupt:
                    continue
                if not self.execute(line):
                    return
                await asyncio.sleep(0)  # let the command's effects print before the next prompt
