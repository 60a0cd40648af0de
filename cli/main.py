"""The ``planes`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import structlog

from cli.backtest import (
    backtest_config,
    keep_report,
    output_problem,
    plot,
    plot_problem,
    run_backtest,
    unvalued_note,
    write_report,
)
from cli.journal import BUILTIN_TOPICS, cmd_journal, not_a_directory, parse_seq
from cli.replay import cmd_replay
from cli.topics import render_markdown, render_text
from contracts.topics import TopicClashError, TopicRegistry
from planes import native
from planes.config import Config, ConfigError, load_config
from planes.logs import configure_logging
from planes.runtime import Runtime, RuntimeFailedError, RuntimeStartError
from plugins.builtin import BUILTIN_PLUGINS
from plugins.manager import PluginError, PluginHost

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = structlog.get_logger("planes.cli")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file (default: configs/default.toml)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set market.symbols='[\"BTCUSDT\"]' (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="planes", description="planes-bot trading runtime")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the runtime")
    _add_config_args(run)
    run.add_argument(
        "--headless", action="store_true", help="no interactive shell, even on a terminal"
    )
    run.add_argument(
        "--duration", type=float, metavar="S", help="stop cleanly after S seconds (wall time)"
    )

    topics = sub.add_parser("topics", help="print the BotEventMap (with plugin topics)")
    _add_config_args(topics)
    topics.add_argument("--markdown", action="store_true", help="the docs/topics.md format")

    backtest = sub.add_parser(
        "backtest", help="run a strategy over an OHLCV file with the production planes"
    )
    backtest.add_argument("--data", required=True, type=Path, help="OHLCV CSV or Bybit kline JSON")
    backtest.add_argument("--strategy", required=True, help="a registered strategy (sma_cross ...)")
    backtest.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="strategy param (repeatable)"
    )
    backtest.add_argument("--symbol", help="the symbol of a CSV file (default: BTCUSDT)")
    backtest.add_argument("--fill", choices=["next_open", "close"], help="market order fills")
    backtest.add_argument("--qty", type=str, help="quantity per entry (the strategy's qty param)")
    backtest.add_argument("--cash", type=str, help="starting cash (default: portfolio.cash)")
    backtest.add_argument("--fee-bps", type=float, help="fee in bps of notional, maker and taker")
    backtest.add_argument("--slippage-bps", type=float, help="fixed slippage in bps")
    backtest.add_argument(
        "--analytics",
        action="store_true",
        help="compute the configured features and market context too (off by default: the "
        "built-in strategies read neither)",
    )
    backtest.add_argument("--report", type=Path, help="write the JSON report here")
    backtest.add_argument("--plot", type=Path, help="draw equity and drawdown (PNG, matplotlib)")
    _add_config_args(backtest)

    plugins = sub.add_parser("plugins", help="list plugins: name, origin, version, what they add")
    _add_config_args(plugins)

    journal = sub.add_parser("journal", help="read the event journal of a data dir")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    export = journal_sub.add_parser(
        "export", help="events as JSON Lines, one per line, in seq order (stdout or --out)"
    )
    export.add_argument(
        "--data-dir", type=Path, metavar="D", help="the data dir (default: runtime.data_dir)"
    )
    export.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="T",
        help="an exact topic name or a prefix:* pattern (repeatable; default: every topic)",
    )
    export.add_argument(
        "--since", type=parse_seq, default=0, metavar="SEQ", help="only events after this seq"
    )
    export.add_argument(
        "--until", type=parse_seq, metavar="SEQ", help="only events up to this seq (inclusive)"
    )
    export.add_argument("--correlation-id", metavar="C", help="only events of this causal chain")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    _add_config_args(export)

    replay = sub.add_parser(
        "replay",
        help="re-run a recorded run's market data and compare its intents and orders",
    )
    replay.add_argument("--journal", required=True, type=Path, metavar="F", help="journal.sqlite3")
    replay.add_argument(
        "--run-id", metavar="R", help="the run to replay (default: the last one with klines)"
    )
    replay.add_argument("--report", type=Path, metavar="OUT.json", help="write the JSON report")
    _add_config_args(replay)
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.sets)


def data_dir_problem(config: Config) -> str | None:
    """Why the storage plane could not use ``runtime.data_dir``, or None (storage off: none)."""
    if not config.storage.enabled:
        return None
    return not_a_directory(Path(config.runtime.data_dir), "runtime.data_dir")


def _host(config: Config) -> PluginHost:
    return PluginHost(
        builtin=BUILTIN_PLUGINS,
        entry_points=config.plugins.entry_points,
        modules=config.plugins.modules,
        disabled=config.plugins.disabled,
        optional=config.plugins.optional,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``planes run``: boot, run until stopped, shut down cleanly."""
    config = _config(args)
    lg = config.logging
    configure_logging(lg.level, lg.format.value, enabled=lg.enabled)
    if args.duration is not None and args.duration <= 0:
        print(f"planes run: --duration must be > 0, got {args.duration}", file=sys.stderr)
        return EXIT_USAGE
    problem = data_dir_problem(config)
    if problem is not None:
        print(f"planes run: {problem}", file=sys.stderr)
        return EXIT_USAGE
    interactive = not args.headless and sys.stdin.isatty() and sys.stdout.isatty()
    return asyncio.run(_run(config, args.duration, interactive=interactive))


async def _run(config: Config, duration: float | None, *, interactive: bool = False) -> int:
    runtime = Runtime(config)
    shell_task: asyncio.Task[None] | None = None
    if interactive:
        runtime.assemble()
        from cli.shell import Shell  # noqa: PLC0415 - prompt_toolkit: 0.1 s of every other command

        shell = Shell(runtime.attach("cli"), on_interrupt=lambda: on_signal(signal.SIGINT))
        shell.attach()
        shell_task = asyncio.get_running_loop().create_task(shell.run(), name="shell")
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals_seen: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals_seen.append(sig.name)
        if len(signals_seen) == 1:
            runtime.request_stop(f"signal {sig.name}")
        elif main is not None:
            log.warning("cli.forced_exit", signal=sig.name)
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await runtime.run(duration)
    except (RuntimeStartError, RuntimeFailedError, PluginError) as exc:
        log.error("runtime.failed", error=str(exc))  # noqa: TRY400 - the message says it all
        print(f"planes run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except asyncio.CancelledError:
        print("planes run: interrupted twice, stopped without a clean shutdown", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if shell_task is not None:
            shell_task.cancel()
            await asyncio.gather(shell_task, return_exceptions=True)
    log.info("runtime.stopped", run_id=runtime.run_id)
    return EXIT_OK


def cmd_topics(args: argparse.Namespace) -> int:
    """``planes topics``: the BotEventMap plus plugin topics."""
    config = _config(args)
    configure_logging("warning", "auto")
    try:
        registry = _topics(_host(config))
    except (PluginError, TopicClashError) as exc:
        print(f"planes topics: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(render_markdown(registry) if args.markdown else render_text(registry))
    return EXIT_OK


def _topics(host: PluginHost) -> TopicRegistry:
    """Load plugins and build the topic map they make (a clash raises naming both owners)."""
    host.load()
    registry = TopicRegistry()
    for owned in host.collect().topics:
        try:
            registry.add(owned.item, owned.owner)
        except (TopicClashError, TypeError) as exc:
            raise PluginError(f"plugin {owned.owner!r}: {exc}") from exc
    return registry


def _topic_names(config: Config) -> tuple[Collection[str], str | None]:
    """The topic map's names with the configured plugins' (for ``journal export --topic``).

    A plugin that fails to load leaves the built-in names, and the reason, which the export
    adds to its message should a topic be unknown.
    """
    try:
        registry = _topics(_host(config))
    except (PluginError, TopicClashError) as exc:
        return BUILTIN_TOPICS, f"plugin topics are not known: {exc}"
    return BUILTIN_TOPICS | frozenset(registry), None


def _cmd_journal(args: argparse.Namespace) -> int:
    return cmd_journal(args, _topic_names)


def cmd_plugins(args: argparse.Namespace) -> int:
    """``planes plugins``: what was loaded, from where, and what each plugin provides."""
    config = _config(args)
    configure_logging("warning", "auto")
    host = _host(config)
    failure: PluginError | None = None
    try:
        _topics(host)
    except PluginError as exc:
        failure = exc
    rows = [("NAME", "ORIGIN", "VERSION", "STATUS", "PROVIDES")]
    for rec in host.records:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in rec.provides.items())
        status = rec.status if not rec.error else f"{rec.status} ({rec.error})"
        rows.append((rec.name, rec.origin, rec.version, status, provides or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    if failure is not None:
        print(f"planes plugins: {failure}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    """``planes backtest``: print the stats, write the report and the plot when asked.

    The output paths are checked before the run (exit 2). A write that fails after it is
    named, exit 1: a report that could not be written goes to a temporary file (or, if that
    fails too, to stdout), so the run is not lost; the summary line is printed either way.
    """
    try:
        config = backtest_config(args)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"planes backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = [
        output_problem(args.report, "--report") if args.report else None,
        plot_problem(args.plot) if args.plot else None,
        data_dir_problem(config),
    ]
    for problem in problems:
        if problem is not None:
            print(f"planes backtest: {problem}", file=sys.stderr)
            return EXIT_USAGE
    configure_logging("warning", config.logging.format.value, enabled=config.logging.enabled)
    try:
        result = asyncio.run(run_backtest(config, progress=sys.stderr.isatty()))
    except (RuntimeStartError, RuntimeFailedError, PluginError) as exc:
        print(f"planes backtest: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    report = result.report
    status = EXIT_OK
    if args.report:
        text = json.dumps(report, indent=2) + "\n"
        try:
            write_report(text, args.report)
        except OSError as exc:
            status = EXIT_FAILURE
            print(
                f"planes backtest: cannot write --report {args.report}: {_why(exc)}",
                file=sys.stderr,
            )
            kept = keep_report(text)
            if kept is not None:
                print(f"planes backtest: the report is saved in {kept} instead", file=sys.stderr)
            else:
                print("planes backtest: the report follows on stdout", file=sys.stderr)
                sys.stdout.write(text)
    if args.plot:
        try:
            plot(report, result.equity, args.plot)
        except (OSError, RuntimeError, ValueError) as exc:
            status = EXIT_FAILURE
            print(f"planes backtest: cannot write --plot {args.plot}: {_why(exc)}", file=sys.stderr)
    _print_summary(report, config)
    return status


def _print_summary(report: dict[str, Any], config: Config) -> None:
    stats = report["stats"]
    print(
        f"{report['bars']} bars in {report['elapsed_s']:.2f}s ({report['bars_per_s']:,.0f} bars/s)"
        f"  trades {stats['n_trades']}  return {stats['total_return']:.2%}"
        f"  sharpe {stats['sharpe']:.2f}  max drawdown {stats['max_drawdown']:.2%}"
        f"  win rate {stats['win_rate']:.0%}  final equity {stats['final_equity']:.2f}"
    )
    note = unvalued_note(report, config.portfolio.quote)
    if note:
        print(f"planes backtest: {note}", file=sys.stderr)
    speed = native.status()
    if not speed.compiled:  # the same results, at a fraction of the speed: say why
        print(f"planes backtest: the hot modules run {speed.describe()}", file=sys.stderr)


def _why(exc: BaseException) -> str:
    """An exception as a reason: an OSError's text without its errno and path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


COMMANDS = {
    "run": cmd_run,
    "backtest": cmd_backtest,
    "topics": cmd_topics,
    "plugins": cmd_plugins,
    "journal": _cmd_journal,
    "replay": cmd_replay,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planes`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"planes {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
