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
from contracts.strategy import ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert
from contracts.topics import (
    CONTROL_COMMAND,
    CONTROL_STATE,
    OBSERVABILITY_ALERT,
    STRATEGY_SCENARIO_DISABLED,
    STRATEGY_SCENARIO_ENABLED,
)

HELP = {
    "status": "show the lifecycle, mode, market and clock",
    "pause": "no new trades (risk rejects every intent); working orders, data, monitoring go on",
    "resume": "trade again",
    "scenario": "scenario enable|disable|retire|rollback ID: switch a scenario (the registry's)",
    "stop": "shut the runtime down cleanly (also Ctrl-C; a second Ctrl-C forces it)",
    "quit": "stop the runtime and leave the shell",
    "help": "this list",
}
BUS_COMMANDS = frozenset({"status", "pause", "resume", "stop"})
SCENARIO_VERBS = ("enable", "disable", "retire", "rollback")
"""``scenario VERB ID`` (or ``scenario.VERB ID``) publishes ``control:command scenario.VERB``."""
_ANSWERS = frozenset({"command_refused", "command_usage"})
"""Alert codes that answer an operator's command: printed (other alerts are log lines)."""


class Shell:
    """Reads commands at a prompt and publishes them; prints what the runtime answers."""

    def __init__(
        self,
        bus: BusHandle,
        *,
        session: PromptSession[str] | None = None,
        write: Callable[[str], None] = print,
        on_interrupt: Callable[[], object] | None = None,
    ) -> None:
        self._bus = bus
        self._session = session
        self._write = write
        self._on_interrupt = on_interrupt
        """Called for Ctrl-C at the prompt (``planes run``: what a first SIGINT does), which
        then ends the shell; without it, Ctrl-C is ``stop``."""
        self._ids = itertools.count(1)
        self._mine: set[str] = set()
        self._lifecycle: Lifecycle | None = None

    def attach(self) -> None:
        """Start listening to ``control:state``, scenario changes and command refusals."""
        bus = self._bus
        bus.subscribe(CONTROL_STATE, self._on_state)
        bus.subscribe(STRATEGY_SCENARIO_ENABLED, self._on_enabled)
        bus.subscribe(STRATEGY_SCENARIO_DISABLED, self._on_disabled)
        bus.subscribe(OBSERVABILITY_ALERT, self._on_alert)

    def _on_enabled(self, event: ScenarioEnabled) -> None:
        by = f" by {event.enabled_by}" if event.enabled_by else ""
        self._write(f"[scenario] {event.scenario_id} enabled (v{event.version}){by}")

    def _on_disabled(self, event: ScenarioDisabled) -> None:
        why = f": {event.reason}" if event.reason else ""
        self._write(f"[scenario] {event.scenario_id} disabled (v{event.version}){why}")

    def _on_alert(self, alert: Alert) -> None:
        if alert.code in _ANSWERS:
            self._write(f"[refused] {alert.message}")

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
        if name == "scenario" and args:
            name, args = f"scenario.{args[0].lower()}", args[1:]
        if name == "scenario" or name.startswith("scenario."):
            verb = name.partition(".")[2]
            if verb not in SCENARIO_VERBS or len(args) != 1:
                self._write(f"usage: scenario {'|'.join(SCENARIO_VERBS)} ID")
                return True
        elif name not in BUS_COMMANDS:
            self._write(f"unknown command {words[0]!r}; type help")
            return True
        command_id = f"cli-{next(self._ids)}"
        self._mine.add(command_id)
        meta = self._bus.meta()
        self._bus.publish(CONTROL_COMMAND, ControlCommand(meta, name, args, command_id))
        return name != "stop"

    async def run(self) -> None:
        """Prompt until ``quit``/``stop``, Ctrl-C, end of input (Ctrl-D) or cancellation."""
        session = self._session or PromptSession(completer=WordCompleter(list(HELP)))
        with patch_stdout(raw=True):
            while True:
                try:
                    line = await session.prompt_async("planes> ")
                except EOFError:
                    self.execute("stop")
                    return
                except KeyboardInterrupt:  # Ctrl-C at the prompt: what it does anywhere else
                    self._write("stopping (Ctrl-C; press it again to force)")
                    if self._on_interrupt is None:
                        self.execute("stop")
                    else:
                        self._on_interrupt()
                    return
                if not self.execute(line):
                    return
                await asyncio.sleep(0)  # let the command's effects print before the next prompt
