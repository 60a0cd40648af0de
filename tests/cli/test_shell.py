"""The interactive shell drives a real runtime only through the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from cli.shell import Shell
from contracts.control import ControlCommand, ControlState
from contracts.enums import Lifecycle
from contracts.topics import CONTROL_COMMAND, CONTROL_STATE
from planes.config import load_config
from planes.runtime import Runtime


def _runtime(tmp_path: object) -> Runtime:
    config = load_config(
        sets=[
            f"runtime.data_dir={tmp_path}",
            "market.synthetic.tick_ms=20",
            "observability.status_interval_s=0",
        ],
        environ={},
    )
    return Runtime(config)


async def test_commands_publish_control_command_and_print_replies(tmp_path: object) -> None:
    runtime = _runtime(tmp_path)
    runtime.assemble()
    lines: list[str] = []
    shell = Shell(runtime.attach("cli"), write=lines.append)
    shell.attach()
    commands: list[ControlCommand] = []
    states: list[ControlState] = []
    runtime.bus.subscribe(CONTROL_COMMAND, commands.append)
    runtime.bus.subscribe(CONTROL_STATE, states.append)
    await runtime.start()
    try:
        assert shell.execute("status")
        assert shell.execute("pause")
        assert runtime.paused
        assert shell.execute("resume")
        assert shell.execute("nonsense")
        assert shell.execute("")
        assert shell.execute("help")
        assert not shell.execute("quit")
        assert await runtime.wait_stopped(5)
    finally:
        await runtime.stop()
    assert commands[0].name == "recover"  # the Orchestrator's own, at boot
    commands = [c for c in commands if c.meta.source.value == "cli"]
    assert [c.name for c in commands] == ["status", "pause", "resume", "stop"]
    assert all(c.command_id for c in commands)
    replies = [s for s in states if s.reply_to is not None]
    assert [s.reply_to for s in replies[:3]] == [c.command_id for c in commands[:3]]
    assert any(line.startswith("RUNNING: status") for line in lines)
    assert any("market_source" in line and "synthetic" in line for line in lines)
    assert any(line.startswith("PAUSED (paused)") for line in lines)
    assert any("unknown command 'nonsense'" in line for line in lines)
    assert any(line.strip().startswith("pause") for line in lines)  # help text
    assert states[-1].lifecycle is Lifecycle.STOPPED


async def test_prompt_loop_reads_lines_until_quit(tmp_path: object) -> None:
    runtime = _runtime(tmp_path)
    runtime.assemble()
    lines: list[str] = []
    await runtime.start()
    try:
        with create_pipe_input() as pipe:
            session: PromptSession[str] = PromptSession(input=pipe, output=DummyOutput())
            shell = Shell(runtime.attach("cli"), session=session, write=lines.append)
            shell.attach()
            pipe.send_text("status\npause\n")
            task = asyncio.create_task(shell.run())
            for _ in range(100):
                if runtime.paused:
                    break
                await asyncio.sleep(0.01)
            assert runtime.paused
            pipe.send_text("quit\n")
            await asyncio.wait_for(task, 5)
        assert await runtime.wait_stopped(5)
    finally:
        await runtime.stop()
    assert any(line.startswith("RUNNING: status") for line in lines)


async def test_end_of_input_stops_the_runtime(tmp_path: object) -> None:
    runtime = _runtime(tmp_path)
    runtime.assemble()
    await runtime.start()
    try:
        with create_pipe_input() as pipe:
            session: PromptSession[str] = PromptSession(input=pipe, output=DummyOutput())
            shell = Shell(runtime.attach("cli"), session=session, write=lambda _: None)
            shell.attach()
            pipe.close()
            await asyncio.wait_for(shell.run(), 5)
        assert await runtime.wait_stopped(5)
    finally:
        await runtime.stop()


def test_attach_needs_an_assembled_runtime(tmp_path: object) -> None:
    with pytest.raises(RuntimeError, match="assemble"):
        _runtime(tmp_path).attach("cli")


async def wait_until(condition: Callable[[], object], timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_scenario_commands_switch_a_scenario_and_print_the_answer(tmp_path: object) -> None:
    runtime = _runtime(tmp_path)
    runtime.assemble()
    lines: list[str] = []
    shell = Shell(runtime.attach("cli"), write=lines.append)
    shell.attach()
    commands: list[ControlCommand] = []
    runtime.bus.subscribe(CONTROL_COMMAND, commands.append)
    await runtime.start()
    try:
        (scenario,) = runtime.config.strategy.scenarios
        assert shell.execute(f"scenario disable {scenario.id}")
        await wait_until(lambda: any(f"] {scenario.id} disabled" in line for line in lines))
        assert shell.execute(f"scenario.enable {scenario.id}")
        await wait_until(lambda: any(f"] {scenario.id} enabled" in line for line in lines))
        assert shell.execute("scenario enable no_such_scenario")
        await wait_until(lambda: any(line.startswith("[refused]") for line in lines))
        assert shell.execute("scenario frobnicate x")
        assert shell.execute("scenario disable")
    finally:
        await runtime.stop()
    sent = [(c.name, c.args) for c in commands if c.meta.source.value == "cli"]
    assert sent == [
        ("scenario.disable", (scenario.id,)),
        ("scenario.enable", (scenario.id,)),
        ("scenario.enable", ("no_such_scenario",)),
    ]
    refused = next(line for line in lines if line.startswith("[refused]"))
    assert "no_such_scenario" in refused
    assert lines.count("usage: scenario enable|disable|retire|rollback ID") == 2


@pytest.mark.parametrize("handler", [False, True])
async def test_ctrl_c_at_the_prompt_stops_the_runtime(tmp_path: object, handler: bool) -> None:
    runtime = _runtime(tmp_path)
    runtime.assemble()
    interrupts: list[str] = []

    def on_interrupt() -> None:  # what planes run passes: its SIGINT handler
        interrupts.append("SIGINT")
        runtime.request_stop("signal SIGINT")

    await runtime.start()
    try:
        with create_pipe_input() as pipe:
            session: PromptSession[str] = PromptSession(input=pipe, output=DummyOutput())
            shell = Shell(
                runtime.attach("cli"),
                session=session,
                write=lambda _: None,
                on_interrupt=on_interrupt if handler else None,
            )
            shell.attach()
            pipe.send_text("\x03")  # Ctrl-C
            await asyncio.wait_for(shell.run(), 5)
        assert await runtime.wait_stopped(5)
    finally:
        await runtime.stop()
    assert interrupts == (["SIGINT"] if handler else [])


async def test_without_storage_the_strategy_plane_answers_scenario_commands(
    tmp_path: object,
) -> None:
    runtime = Runtime(
        load_config(
            sets=[
                f"runtime.data_dir={tmp_path}",
                "storage.enabled=false",
                "market.synthetic.tick_ms=20",
                "observability.status_interval_s=0",
            ],
            environ={},
        )
    )
    runtime.assemble()
    lines: list[str] = []
    shell = Shell(runtime.attach("cli"), write=lines.append)
    shell.attach()
    await runtime.start()
    try:
        (scenario,) = runtime.config.strategy.scenarios
        shell.execute(f"scenario disable {scenario.id}")
        await wait_until(lambda: any(f"] {scenario.id} disabled" in line for line in lines))
        shell.execute("scenario enable nope")
        shell.execute(f"scenario retire {scenario.id}")
        await wait_until(lambda: sum(line.startswith("[refused]") for line in lines) == 2)
    finally:
        await runtime.stop()
    refused = [line for line in lines if line.startswith("[refused]")]
    assert "no scenario 'nope'" in refused[0]
    assert "scenario.retire needs the registry" in refused[1]
    assert not any(line.startswith("unknown command") for line in lines)
