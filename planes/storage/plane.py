"""StoragePlane: the journal, snapshots, registry and outbox of one data dir, on the bus.

* **Journal.** A catch-all subscription appends every event to ``journal.sqlite3`` (see
  ``planes.storage.journal``): seq contiguous across runs, batched off the loop by a writer
  thread, trading topics never dropped.
* **Snapshots.** The ``StateHub`` exports every ``Stateful`` component between two bus
  dispatches, so the export matches the journal's last assigned seq exactly; the journal is
  flushed up to that seq, then the snapshot file is written atomically and ``state:snapshot``
  published. Snapshots come every ``storage.snapshot_interval_s``, after every
  ``snapshot_every_events`` journaled events (which bounds what a crash recovery replays;
  the snapshot loop counts them on its polls, so the bus calls the journal directly),
  ``snapshot_after_change_s`` after a fill or a registry change, after recovery, and at shutdown.
* **Recovery** runs when the Orchestrator asks (``control:command recover``, at boot, before
  the market connects): the newest valid snapshot (a corrupted or truncated newer one is
  skipped with an alert), then every journaled event after it up to the previous run's last
  one, on the topics the components rebuild state from (``planes.storage.rebuild``: for a
  tail of ``READER_PROCESS_FROM`` events or more, a reader process reads the rows and matches
  each payload's regex beside this one; a topic
  whose components name a view, the paper venue's ``market:kline``, is read as views and
  decoded whole only for the events they keep), then ``recovered()`` (positions are announced, flat
  ones too, never filled), the registry's scenarios (``state:registry`` ``restored``),
  reconciliation with the venue, the outbox's interrupted sends, and ``state:recovery``.
* **Registry.** ``scenario.enable|disable|retire|rollback ID`` commands and
  ``control:rollbackModel`` are committed to ``registry.sqlite3`` (row and audit line in one
  transaction) *before* ``state:registry`` tells the strategy plane to act on them.
* **Outbox.** Alerts at or above ``storage.notify_min_severity`` are persisted for each notifier
  in ``storage.notifiers`` before anything is sent; a dispatcher sends due items, retries with
  backoff (a notifier's ``retry_after_s`` is honoured), and dead-letters after
  ``storage.outbox_max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from contracts.control import ControlCommand, RollbackRequested
from contracts.enums import ScenarioState, Severity
from contracts.execution import OrderEvent, PositionUpdate
from contracts.meta import Payload
from contracts.ports import ComponentContext, Notifier, Subscription
from contracts.state import JournalFailed, RegistryChanged, StateRecovered, StateSnapshot
from contracts.strategy import ScenarioDisabled
from contracts.system import Alert
from contracts.topics import (
    CONTROL_COMMAND,
    CONTROL_ROLLBACK_MODEL,
    EXEC_ORDER_EVENT,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    STATE_JOURNAL_FAILED,
    STATE_RECOVERY,
    STATE_REGISTRY,
    STATE_SNAPSHOT,
    STRATEGY_SCENARIO_DISABLED,
    BotEventMap,
    Topic,
)
from planes.collector import collector_paused
from planes.config import Config
from planes.state import StateError, StateHub
from planes.storage.journal import EventJournal, JournalError
from planes.storage.outbox import Outbox, OutboxError
from planes.storage.rebuild import ReplayPlan
from planes.storage.registry import Registry, RegistryError, ScenarioRecord
from planes.storage.snapshots import SnapshotError, StateStore

log = structlog.get_logger("planes.storage")

JOURNAL_FILE = "journal.sqlite3"
REGISTRY_FILE = "registry.sqlite3"
SNAPSHOT_DIR = "snapshots"
RECOVER = "recover"
"""The ``control:command`` the Orchestrator sends at boot."""

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_SCENARIO_COMMANDS = {
    "scenario.enable": ScenarioState.ENABLED,
    "scenario.disable": ScenarioState.DISABLED,
    "scenario.retire": ScenarioState.RETIRED,
}
READER_PROCESS_FROM = 10_000
"""A journal tail of at least this many seqs is read by the journal's reader process; a
shorter one here (the process's start, some tens of milliseconds, would cost more than it saves)."""
_OUTBOX_POLL_S = 0.5
_CHANGE_POLL_S = 0.05


def data_paths(data_dir: Path) -> tuple[Path, Path, Path]:
    """``(journal, registry, snapshot dir)`` of a data dir."""
    return data_dir / JOURNAL_FILE, data_dir / REGISTRY_FILE, data_dir / SNAPSHOT_DIR


class StoragePlane:
    """See the module docstring."""

    name = "storage"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the StoragePlane needs planes.config.Config"
            raise TypeError(msg)
        hub = getattr(ctx, "state", None)
        self._hub = hub if isinstance(hub, StateHub) else StateHub()
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._config = config
        self._settings = config.storage
        self.enabled = self._settings.enabled
        # The runtime's own: its log lines and the journal's rows name the same run.
        self.run_id = str(getattr(ctx, "run_id", "") or secrets.token_hex(6))
        journal, registry, snapshots = data_paths(Path(config.runtime.data_dir))
        self.journal = EventJournal(
            journal,
            self.run_id,
            synchronous=self._settings.synchronous.value,
            batch_size=self._settings.batch_size,
            flush_interval_s=self._settings.flush_interval_s,
            queue_size=self._settings.queue_size,
            sample_every=self._settings.sample_every,
        )
        self._snapshot_every = self._settings.snapshot_every_events
        self._registry_path = registry
        self.store = StateStore(snapshots, keep=self._settings.snapshot_keep)
        self.registry: Registry | None = None
        self.outbox: Outbox | None = None
        self._notifiers: dict[str, Notifier] = {}
        for name in self._settings.notifiers:
            spec = ctx.notifiers.get(name)
            if spec is None:
                known = ", ".join(sorted(ctx.notifiers)) or "none"
                msg = f"storage.notifiers names {name!r}, which is not registered (known: {known})"
                raise ValueError(msg)
            self._notifiers[name] = spec.factory(ctx)
        self._min_rank = _SEVERITY_RANK[Severity(self._settings.notify_min_severity)]
        self.boot_seq = 0
        """The journal's last seq when this run opened it: recovery replays up to here."""
        self.recovered: StateRecovered | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: asyncio.Future[None] | None = None
        """A periodic snapshot in progress (``stop()`` lets it finish)."""
        self._dirty = asyncio.Event()
        self._recovering = False
        self._resumed = 0
        self._tap: Subscription | None = None
        self.journal_failure: str | None = None
        """Why the journal stopped storing events, once it has (the run then stops)."""
        self.unstored: dict[str, int] = {}
        """Events per topic published after the journal failed, which it did not store."""
        """Outbox sends interrupted by an earlier run, put back to ``pending`` at start."""
        self.snapshots_written = 0
        self._snapshot_seq = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the files, journal every event from now on, seed the registry."""
        if not self.enabled:
            return
        try:
            self.journal.open()
        except JournalError as exc:
            raise RuntimeError(f"storage: {exc}") from exc
        loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()

        def on_failure(reason: str) -> None:
            if threading.get_ident() == loop_thread:  # found by an append: act on it now
                self._journal_failed(reason)
                return
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over anyway
                loop.call_soon_threadsafe(self._journal_failed, reason)

        # At once: the writer process may die while it starts, before the bus is tapped.
        self.journal.on_failure = on_failure
        if self.journal.failure is not None:
            on_failure(self.journal.failure)
        self.boot_seq = self._snapshot_seq = self.journal.last_seq
        try:
            self.registry = Registry(self._registry_path)
            self.outbox = Outbox(
                self._registry_path, max_attempts=self._settings.outbox_max_attempts
            )
            # Sends a stopped process left in ``sending`` go back to ``pending`` now, before
            # this run's dispatcher claims anything: at recovery it could be sending them.
            self._resumed = self.outbox.resume(self._wall_ms())
        except (RegistryError, OutboxError) as exc:
            self.journal.close()
            raise RuntimeError(f"storage: {exc}") from exc
        now = self._wall_ms()
        for scenario in self._config.strategy.scenarios:
            self.registry.seed(
                scenario.id,
                scenario.strategy,
                dict(scenario.params),
                scenario.regime or None,
                version=scenario.version,
                enabled=scenario.enabled,
                now_ms=now,
            )
        bus = self._bus
        if self.journal_failure is None:  # else the failure's counting tap is already on
            self._tap = bus.subscribe_all(self.journal.append)
        bus.subscribe(CONTROL_COMMAND, self._on_command)
        bus.subscribe(CONTROL_ROLLBACK_MODEL, self._on_rollback_model)
        bus.subscribe(EXEC_ORDER_EVENT, self._on_order)
        bus.subscribe(OBSERVABILITY_ALERT, self._on_alert)
        bus.subscribe(STRATEGY_SCENARIO_DISABLED, self._on_scenario_disabled)
        self._tasks.append(loop.create_task(self._snapshot_loop(), name="storage-snapshots"))
        if self._notifiers:
            self._tasks.append(loop.create_task(self._outbox_loop(), name="storage-outbox"))
        log.info(
            "storage.started",
            data_dir=self._config.runtime.data_dir,
            run_id=self.run_id,
            journal_seq=self.boot_seq,
            synchronous=self._settings.synchronous.value,
        )

    async def stop(self) -> None:
        """Last snapshot, flush and close the journal and the databases."""
        if not self.enabled:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._inflight is not None:  # a periodic snapshot waiting for the journal: finish it
            await asyncio.gather(self._inflight, return_exceptions=True)
            self._inflight = None
        if self.journal.last_seq and self._state_whole():
            try:
                self.snapshot("shutdown")
            except (SnapshotError, StateError, JournalError) as exc:
                log.error("storage.snapshot_failed", reason="shutdown", error=str(exc))  # noqa: TRY400 - the message is the point
        try:
            self.journal.close()
        except JournalError as exc:  # the writer died: close() released the file all the same
            if self.journal_failure is None:
                log.error("storage.journal_close_failed", error=str(exc))  # noqa: TRY400 - the message is the point
        if self.outbox is not None:
            self.outbox.resume(self._wall_ms())  # a send cut off by the cancel goes out next run
            self.outbox.close()
        if self.registry is not None:
            self.registry.close()
        if self.unstored:
            log.error(
                "storage.events_not_stored",
                events=sum(self.unstored.values()),
                by_topic=dict(self.unstored),
                reason=self.journal_failure,
            )
        m = self.journal.metrics
        log.info(
            "storage.stopped",
            journal_seq=self.journal.durable_seq,
            appended=m.appended,
            sampled=m.sampled,
            blocked=m.blocked,
            snapshots=self.snapshots_written,
        )

    def _state_whole(self) -> bool:
        """Whether the components hold the whole state: recovery ran and succeeded.

        Before recovery (a boot that failed earlier) and after a failed one, the components
        hold a part of the state at best. A snapshot of it would say "everything up to this
        seq" and the next boot would trust it, replaying only what came after: no snapshot is
        written then, and the next boot recovers from the last good snapshot and the journal.
        """
        recovered = self.recovered
        whole = not self._recovering and recovered is not None and recovered.ok
        return whole and self.journal_failure is None

    # -- the journal -----------------------------------------------------------------------

    def _count_due(self) -> bool:
        """True once ``snapshot_every_events`` were journaled since the last snapshot's seq.

        The snapshot loop asks on each of its polls; per event the bus calls the journal's
        ``append`` directly (the catch-all tap), without a handler of this plane in between.
        """
        every = self._snapshot_every
        seq = self.journal.last_seq
        if every and seq - self._snapshot_seq >= every:
            self._snapshot_seq = seq  # once per stretch
            return True
        return False

    def _journal_failed(self, reason: str) -> None:
        """The journal's writer died: say so, count what is not stored, let the runtime stop.

        Events published from now on cannot be stored. They are counted per topic instead of
        each failing in the journal's ``append`` (an ``error:event`` per event), and the
        runtime, told by ``state:journal_failed``, stops trading at once and ends the run as
        failed. A restart recovers from what the journal holds (``durable_seq``).
        """
        if self.journal_failure is not None:
            return
        self.journal_failure = reason
        bus = self._bus
        if self._tap is not None:
            self._tap.cancel()
        self._tap = bus.subscribe_all(self._count_unstored)
        durable = self.journal.durable_seq
        log.critical("storage.journal_failed", reason=reason, durable_seq=durable)
        self._alert(
            Severity.CRITICAL,
            "journal_failed",
            f"{reason}: trading stops and the run ends; a restart recovers up to seq {durable}",
        )
        bus.publish(STATE_JOURNAL_FAILED, JournalFailed(bus.meta(), reason, durable))

    def _count_unstored(self, topic: Topic[Any], _payload: Payload) -> None:
        name = topic.name
        self.unstored[name] = self.unstored.get(name, 0) + 1

    # -- snapshots -------------------------------------------------------------------------

    def export(self) -> tuple[int, dict[str, Any]]:
        """Every component's state and the journal seq it matches (call between dispatches)."""
        return self.journal.last_seq, self._hub.export()

    def snapshot(
        self,
        reason: str,
        exported: tuple[int, dict[str, Any]] | None = None,
        *,
        flushed: bool = False,
    ) -> StateSnapshot:
        """Export (unless given), flush the journal to the export's seq, write, publish.

        ``flushed``: the caller has made the journal durable up to the export's seq already.
        """
        seq, sections = exported or self.export()
        if not flushed or self.journal.durable_seq < seq:
            self.journal.flush()
        written = self.store.write(
            seq, sections, run_id=self.run_id, reason=reason, now_ms=self._wall_ms()
        )
        self.snapshots_written += 1
        self._snapshot_seq = max(self._snapshot_seq, seq)
        bus = self._bus
        event = StateSnapshot(bus.meta(), written.snapshot_id, seq, reason, written.size_bytes)
        bus.publish(STATE_SNAPSHOT, event)
        return event

    async def _snapshot_loop(self) -> None:
        interval = self._settings.snapshot_interval_s
        settle = self._settings.snapshot_after_change_s
        loop = asyncio.get_running_loop()
        while True:
            # Poll the change flag rather than wait_for(Event.wait()): nothing to cancel but a
            # sleep, and a change is noticed within _CHANGE_POLL_S.
            deadline = loop.time() + interval if interval else None
            counted = False  # snapshot_every_events reached: no settling, the count is the bound
            while not self._dirty.is_set() and (deadline is None or loop.time() < deadline):
                await asyncio.sleep(_CHANGE_POLL_S)
                if self._count_due():
                    counted = True
                    self._dirty.set()
            reason = "periodic"
            if self._dirty.is_set():
                reason = "change"
                # A change settles, but not past snapshot_every_events: a busy bus (a backtest)
                # journals that many events well within the settle time, and they bound what a
                # crash replays.
                end = loop.time() + settle
                while not counted and (left := end - loop.time()) > 0:
                    await asyncio.sleep(min(_CHANGE_POLL_S, left))
                    counted = self._count_due()
            self._dirty.clear()
            if not self._state_whole():
                continue  # nothing to snapshot before the state is whole
            # Shielded: a stop that comes while the journal catches up lets this one finish.
            self._inflight = asyncio.ensure_future(self._periodic_snapshot(reason))
            await asyncio.shield(self._inflight)

    async def _periodic_snapshot(self, reason: str) -> None:
        try:
            # Exported here, between two dispatches; the wait for the journal to commit up to
            # that seq happens off the loop, so the bus does not stall behind the disk.
            exported = self.export()
            await asyncio.to_thread(self.journal.flush)
            self.snapshot(reason, exported, flushed=True)
        except (SnapshotError, StateError, JournalError) as exc:
            log.error("storage.snapshot_failed", reason=reason, error=str(exc))  # noqa: TRY400 - the message is the point
            self._alert(Severity.CRITICAL, "snapshot_failed", f"snapshot failed: {exc}")

    def _on_order(self, event: OrderEvent) -> None:
        if event.last_fill_qty:
            self._dirty.set()

    # -- recovery --------------------------------------------------------------------------

    def _on_command(self, command: ControlCommand) -> None:
        if command.name == RECOVER:
            self._tasks.append(asyncio.ensure_future(self._recover()))
        elif command.name in _SCENARIO_COMMANDS or command.name == "scenario.rollback":
            self._scenario_command(command)

    async def _recover(self) -> None:
        started = time.perf_counter()
        self._recovering = True
        warnings: list[str] = []
        replayed = 0
        snapshot_id: str | None = None
        ok = True
        positions = 0
        try:
            snapshot_id, since = await self._restore_snapshot(warnings)
            if since > self.boot_seq:
                message = (
                    f"snapshot covers seq {since} but the journal ends at {self.boot_seq}: "
                    "the journal lost committed events (restored from a backup?)"
                )
                warnings.append(message)
                self._alert(Severity.CRITICAL, "journal_behind_snapshot", message)
            replayed = self._replay(since)
            self._publish_registry()
            positions = self._announce()
            reconciled = await self._hub.reconcile(self._settings.reconcile.value)
            if self._resumed:  # resumed at start, reported here
                reconciled.append(f"outbox: {self._resumed} interrupted sends resumed")
        except (StateError, JournalError, SnapshotError, RegistryError) as exc:
            ok = False
            reconciled = []
            warnings.append(f"recovery failed: {exc}")
            log.error("storage.recovery_failed", error=str(exc))  # noqa: TRY400 - the message is the point
            self._alert(Severity.CRITICAL, "recovery_failed", str(exc))
        self._recovering = False
        exported = self.export() if ok else None
        registry = self.registry
        enabled = len(registry.scenarios(ScenarioState.ENABLED)) if registry is not None else 0
        bus = self._bus
        self.recovered = StateRecovered(
            bus.meta(),
            snapshot_id=snapshot_id,
            journal_events_replayed=replayed,
            positions=positions,
            open_orders=_open_orders(exported[1]) if exported else 0,
            enabled_scenarios=enabled,
            reconciled=tuple(reconciled),
            warnings=tuple(warnings),
            ok=ok,
        )
        log.info(
            "storage.recovered",
            ok=ok,
            snapshot=snapshot_id,
            replayed=replayed,
            positions=positions,
            reconciled=len(reconciled),
            warnings=len(warnings),
            elapsed_s=round(time.perf_counter() - started, 3),
        )
        bus.publish(STATE_RECOVERY, self.recovered)
        if exported is not None:
            try:
                # The journal catches up to the export off the loop (on a new journal the
                # writer process may still be starting): the bus goes on meanwhile. Snapshots
                # are ordered by seq, so a periodic one written first stays the newest.
                await asyncio.to_thread(self.journal.flush)
                self.snapshot("recovery", exported, flushed=True)
            except (SnapshotError, StateError, JournalError) as exc:
                log.error("storage.snapshot_failed", reason="recovery", error=str(exc))  # noqa: TRY400 - the message is the point

    async def _restore_snapshot(self, warnings: list[str]) -> tuple[str | None, int]:
        """Restore the newest valid snapshot; return its id and seq (None, 0 without one)."""
        snapshot_id: str | None = None
        snapshot, problems = await asyncio.to_thread(self.store.latest)
        for problem in problems:
            warnings.append(f"snapshot skipped: {problem}")
            self._alert(Severity.CRITICAL, "snapshot_invalid", problem)
        since = 0
        if snapshot is not None:
            snapshot_id, since = snapshot.snapshot_id, snapshot.journal_seq
            missing = self._hub.restore(snapshot.sections)
            if missing:
                warnings.append(f"snapshot has no state for {', '.join(missing)}")
            age_s = (self._wall_ms() - snapshot.created_ms) / 1000
            stale = self._settings.stale_snapshot_s
            if stale and age_s > stale:
                message = f"last snapshot {snapshot_id} is {age_s:.0f}s old (> {stale:g}s)"
                warnings.append(message)
                self._alert(Severity.WARNING, "stale_snapshot", message)
        return snapshot_id, since

    def _replay(self, since: int) -> int:
        """Feed the journal after ``since`` up to the previous run's end to the components."""
        topics = self._hub.topics
        if not topics or since >= self.boot_seq:
            return 0
        types = {name: topic.payload for name, topic in BotEventMap.items()}
        types[STATE_REGISTRY.name] = STATE_REGISTRY.payload
        plan = ReplayPlan(self._hub, types)
        # The rebuilt state (ledger entries, order records) lives on: collections during the
        # replay would walk it again and again and free nothing.
        with collector_paused():
            if self.boot_seq - since < READER_PROCESS_FROM:
                return plan.replay(self.journal.payloads(since, self.boot_seq, topics))
            # A reader process reads the rows and matches their regexes while this one rebuilds.
            with self.journal.parsed(since, self.boot_seq, topics, plan.patterns) as rows:
                return plan.replay(rows, rows.text)

    def _announce(self) -> int:
        """``recovered()`` on every component; return how many open positions they announced.

        The portfolio announces flat symbols too (for their cash and equity): not counted.
        """
        announced: list[PositionUpdate] = []
        sub = self._bus.subscribe(PORTFOLIO_POSITION, announced.append)
        try:
            self._hub.recovered()
        finally:
            sub.cancel()
        return sum(1 for update in announced if update.qty)

    # -- registry --------------------------------------------------------------------------

    def _publish_registry(self) -> None:
        """Tell the strategy plane the registry's scenarios as they stand (``restored``)."""
        if self.registry is None:
            return
        for record in self.registry.scenarios():
            self._registry_changed(record, "restored", None, "", "")

    def _registry_changed(
        self,
        record: ScenarioRecord,
        action: str,
        command_id: str | None,
        actor: str,
        detail: str,
    ) -> None:
        bus = self._bus
        bus.publish(
            STATE_REGISTRY,
            RegistryChanged(
                bus.meta(),
                entity="scenario",
                entity_id=record.scenario_id,
                action=action,
                status=record.status.value,
                version=str(record.version),
                strategy=record.strategy,
                params=dict(record.params),
                regime=record.regime,
                actor=actor,
                command_id=command_id,
                detail=detail,
            ),
        )
        self._dirty.set()

    def _scenario_command(self, command: ControlCommand) -> None:
        registry = self.registry
        if registry is None:
            return
        actor = command.meta.source.value
        if len(command.args) != 1:
            self._alert(Severity.WARNING, "command_usage", f"usage: {command.name} SCENARIO_ID")
            return
        scenario_id = command.args[0]
        now = self._wall_ms()
        try:
            if command.name == "scenario.rollback":
                record = registry.rollback_scenario(
                    scenario_id, actor=actor, command=command.name, now_ms=now
                )
                action = "rolled_back"
            else:
                wanted = _SCENARIO_COMMANDS[command.name]
                record = registry.set_status(
                    scenario_id, wanted, actor=actor, command=command.name, now_ms=now
                )
                action = wanted.value
        except RegistryError as exc:
            log.warning("storage.command_refused", command=command.name, reason=str(exc))
            self._alert(Severity.WARNING, "command_refused", f"{command.name}: {exc}")
            return
        self._registry_changed(record, action, command.command_id, actor, command.name)

    def _on_scenario_disabled(self, event: ScenarioDisabled) -> None:
        """A scenario the strategy plane stopped by itself (its strategy raised) stays stopped."""
        registry = self.registry
        if registry is None or self._recovering:
            return
        record = registry.scenario(event.scenario_id)
        if record is None or record.status is not ScenarioState.ENABLED:
            return  # unknown here, or the registry already said so (an operator's disable)
        actor = event.meta.source.value
        try:
            record = registry.set_status(
                event.scenario_id,
                ScenarioState.DISABLED,
                actor=actor,
                command=STRATEGY_SCENARIO_DISABLED.name,
                now_ms=self._wall_ms(),
                detail=event.reason,
            )
        except RegistryError as exc:
            log.warning("storage.disable_not_recorded", scenario=event.scenario_id, error=str(exc))
            return
        self._registry_changed(record, "disabled", None, actor, event.reason)

    def _on_rollback_model(self, request: RollbackRequested) -> None:
        registry = self.registry
        if registry is None:
            return
        actor = request.meta.source.value
        try:
            version = registry.rollback_model(
                request.model,
                request.to_version,
                actor=actor,
                command=CONTROL_ROLLBACK_MODEL.name,
                now_ms=self._wall_ms(),
                detail=request.reason,
            )
        except RegistryError as exc:
            self._alert(Severity.WARNING, "command_refused", f"model rollback: {exc}")
            return
        bus = self._bus
        bus.publish(
            STATE_REGISTRY,
            RegistryChanged(
                bus.meta(),
                entity="model",
                entity_id=request.model,
                action="rolled_back",
                status="active",
                version=version,
                actor=actor,
                detail=request.reason,
            ),
        )
        self._dirty.set()

    # -- outbox ----------------------------------------------------------------------------

    def _on_alert(self, alert: Alert) -> None:
        outbox = self.outbox
        if outbox is None or not self._notifiers:
            return
        if _SEVERITY_RANK[alert.severity] < self._min_rank:
            return
        text = f"[{alert.severity.value}] {alert.code}: {alert.message}"
        # The same alert twice is one message; two alerts of one code at one time (two bad
        # snapshot files, one bar's alerts under the historical clock) are two.
        labels = "".join(f"\n{k}={v}" for k, v in sorted(alert.labels.items()))
        digest = hashlib.blake2b(f"{text}{labels}".encode(), digest_size=8).hexdigest()
        key = f"{alert.code}:{alert.meta.correlation_id or alert.meta.ts}:{digest}"
        for name in self._notifiers:
            outbox.enqueue(name, text, dedupe_key=f"{name}:{key}", now_ms=self._wall_ms())

    async def _outbox_loop(self) -> None:
        outbox = self.outbox
        assert outbox is not None  # noqa: S101 - started only with an outbox
        while True:
            await asyncio.sleep(_OUTBOX_POLL_S)
            for item in outbox.claim_due(self._wall_ms()):
                notifier = self._notifiers.get(item.channel)
                if notifier is None:
                    reason = f"no notifier {item.channel!r} configured"
                    outbox.mark_failed(item.id, reason, self._wall_ms(), permanent=True)
                    continue
                try:
                    await notifier.send(item.body, dedupe_key=item.dedupe_key)
                except Exception as exc:  # noqa: BLE001 - every failure is retried or dead-lettered
                    retry_after = getattr(exc, "retry_after_s", None)
                    after_ms = (
                        round(retry_after * 1000) if isinstance(retry_after, int | float) else None
                    )
                    error = f"{type(exc).__name__}: {exc}"
                    self._record_send(outbox, item.id, error, after_ms)
                else:
                    self._record_send(outbox, item.id)

    def _record_send(
        self, outbox: Outbox, item_id: int, error: str | None = None, after_ms: int | None = None
    ) -> None:
        """Mark a claimed item sent (or failed with ``error``); a failure to do so is logged.

        Nothing else changes a claimed item, so this should not fail; if it does (the database
        went away, say), the item stays ``sending``, the next run's start sends it again, and
        this dispatcher goes on with the other items.
        """
        try:
            if error is None:
                outbox.mark_sent(item_id, self._wall_ms())
            else:
                outbox.mark_failed(item_id, error, self._wall_ms(), after_ms)
        except OutboxError as exc:
            log.error("storage.outbox_not_recorded", item=item_id, error=str(exc))  # noqa: TRY400 - the message is the point

    # -- helpers ---------------------------------------------------------------------------

    def _alert(self, severity: Severity, code: str, message: str) -> None:
        bus = self._bus
        with contextlib.suppress(Exception):
            bus.publish(OBSERVABILITY_ALERT, Alert(bus.meta(), severity, code, message))

    def _wall_ms(self) -> int:
        """Wall-clock ms for file metadata (snapshots, audit, outbox), whatever the bus clock."""
        return int(time.time() * 1000)


def _open_orders(sections: dict[str, Any]) -> int:
    """Open orders the venues hold, from their exported ``open_orders``."""
    count = 0
    for section in sections.values():
        orders = section.get("open_orders") if isinstance(section, dict) else None
        if isinstance(orders, list | dict):
            count += len(orders)
    return count
