"""The registry: scenarios and model versions in SQLite, every change with its audit line.

One SQLite file (``registry.sqlite3``, shared with the outbox) in WAL mode with
``synchronous=FULL``: a committed change survives a power loss. Tables:

=====================  ============================================================================
``scenarios``          the current row of each scenario: strategy, status, version, params, regime
``scenario_versions``  every version a scenario ever had, with the evidence that brought it
``models``             every registered version of every model, with its status and, once
                       activated, its place in the activation order (``activation``)
``audit``              one line per change: when, who (``actor``, a ``Source`` value), which
                       command, the entity, its state ``before`` and ``after`` (JSON), a detail
``meta``               the schema version of each part (``registry.schema``, ``outbox.schema``)
=====================  ============================================================================

**One change, one transaction.** Every mutating method runs in one ``BEGIN IMMEDIATE``
transaction that writes the rows *and* the audit line, so the trail and the rows never
disagree: either both are on disk or neither is. A refused change (``RegistryError``) writes
nothing. For each entity, an audit line's ``before`` is the previous line's ``after``, and the
last ``after`` is the entity's current state.

**Scenario status.** ``proposed`` (waiting for an operator), ``enabled`` (trades), ``disabled``
and ``retired`` (final). The allowed transitions are ``TRANSITIONS``::

    proposed -> enabled | retired      enabled -> disabled      disabled -> enabled | retired

**Scenario versions.** ``propose`` stores version 1 of a new scenario as ``proposed``. Proposing
other params (or strategy, or regime) for an existing scenario adds the next version and makes it
current, ``proposed`` again; that is refused while the scenario is ``enabled`` (a proposal never
changes what trades: disable it first) and once it is ``retired``. Proposing what is already
current changes nothing. ``rollback_scenario`` makes the version before the current one current
again, keeping the status; numbers are never reused, so a later proposal takes max + 1.
``seed`` inserts a scenario from the config at first boot and never touches an existing one.

**Model versions.** A registered version is ``registered`` until activated; at most one version
of a model is ``active``. ``activate_model`` demotes the active one to ``previous``;
``rollback_model`` retires the active one (it is what went wrong) and re-activates the most
recently active ``previous`` version, or the version it names. Rolling back repeatedly walks back
through the activation history.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog

from contracts.enums import ScenarioState
from contracts.strategy import ParamValue

SCHEMA_VERSION = 1
"""The registry schema this build writes; a newer one in the file is refused."""
CONFIG_ACTOR = "config"
"""The audit actor of scenarios seeded from the configuration."""

TRANSITIONS: Mapping[ScenarioState, frozenset[ScenarioState]] = {
    ScenarioState.PROPOSED: frozenset({ScenarioState.ENABLED, ScenarioState.RETIRED}),
    ScenarioState.ENABLED: frozenset({ScenarioState.DISABLED}),
    ScenarioState.DISABLED: frozenset({ScenarioState.ENABLED, ScenarioState.RETIRED}),
    ScenarioState.RETIRED: frozenset(),
}
"""Each scenario status and the statuses it may move to."""

_VERBS = {
    ScenarioState.PROPOSED: "propose",
    ScenarioState.ENABLED: "enable",
    ScenarioState.DISABLED: "disable",
    ScenarioState.RETIRED: "retire",
}

log = structlog.get_logger("planes.storage.registry")


class RegistryError(Exception):
    """A registry change was refused or failed; the message names the entity and why."""


class ModelStatus(enum.StrEnum):
    """Where a model version stands."""

    REGISTERED = "registered"
    """Stored, never activated."""
    ACTIVE = "active"
    """The version in use (at most one per model)."""
    PREVIOUS = "previous"
    """Was active and was replaced by an activation: a rollback target."""
    RETIRED = "retired"
    """Was rolled back from; activate or name it to use it again."""


@attrs.frozen
class ScenarioRecord:
    """A scenario's current row."""

    scenario_id: str
    strategy: str
    status: ScenarioState
    version: int
    params: Mapping[str, ParamValue]
    regime: str | None
    updated_ms: int


@attrs.frozen
class ScenarioVersion:
    """One version of a scenario and the evidence that brought it."""

    scenario_id: str
    version: int
    strategy: str
    params: Mapping[str, ParamValue]
    regime: str | None
    evidence: Mapping[str, Any]
    created_ms: int


@attrs.frozen
class ModelRecord:
    """One registered version of a model."""

    model: str
    version: str
    status: ModelStatus
    created_ms: int
    meta: Mapping[str, Any]


@attrs.frozen
class AuditRecord:
    """One audit line; ``before``/``after`` are the entity's state as JSON (None: absent)."""

    id: int
    ts_ms: int
    actor: str
    command: str
    entity: str
    entity_id: str
    before: str | None
    after: str | None
    detail: str


# -- the SQLite file, shared with the outbox --------------------------------------------------


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating it and its folder) the registry file: WAL, ``synchronous=FULL``.

    The connection is in autocommit mode: group statements with ``transaction``. It may be
    used from any thread, one at a time (callers hold a lock).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        msg = f"{path}: cannot open the registry database: {exc}"
        raise RegistryError(msg) from exc
    try:
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    except sqlite3.Error as exc:
        conn.close()
        msg = f"{path}: not a usable registry database: {exc}"
        raise RegistryError(msg) from exc
    if mode != "wal":
        conn.close()
        msg = f"{path}: cannot switch the registry database to WAL (journal_mode={mode})"
        raise RegistryError(msg)
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction: commit, or roll back and re-raise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_schema(conn: sqlite3.Connection, path: Path, key: str, version: int) -> None:
    """Record schema ``version`` under ``key`` in ``meta``; refuse a file from a newer build."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, str(version)))
    elif int(row[0]) > version:
        msg = (
            f"{path}: {key} is version {row[0]}, written by a newer build "
            f"(this one knows version {version})"
        )
        raise RegistryError(msg)


def dump_json(value: Any, what: str) -> str:
    """``value`` as compact JSON with sorted keys; ``RegistryError`` naming ``what`` if not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"{what} is not JSON: {exc}"
        raise RegistryError(msg) from None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenario_versions(
    scenario_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    strategy TEXT NOT NULL,
    params TEXT NOT NULL,
    regime TEXT,
    evidence TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, version)
);
CREATE TABLE IF NOT EXISTS scenarios(
    scenario_id TEXT PRIMARY KEY,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('proposed', 'enabled', 'disabled', 'retired')),
    version INTEGER NOT NULL,
    params TEXT NOT NULL,
    regime TEXT,
    updated_ms INTEGER NOT NULL,
    FOREIGN KEY (scenario_id, version) REFERENCES scenario_versions(scenario_id, version)
);
CREATE TABLE IF NOT EXISTS models(
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('registered', 'active', 'previous', 'retired')),
    created_ms INTEGER NOT NULL,
    meta TEXT NOT NULL,
    activation INTEGER,
    PRIMARY KEY (model, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_active ON models(model) WHERE status = 'active';
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    command TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    before TEXT,
    after TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_entity ON audit(entity_id, id);
"""
# ``activation`` orders a model's activations (max + 1 on each); it is how a rollback finds the
# most recently active previous version.


def _params(scenario_id: str, params: Mapping[str, Any]) -> str:
    for key, value in params.items():
        ok = isinstance(value, str | int | bool) or (
            isinstance(value, float) and math.isfinite(value)
        )
        if not isinstance(key, str) or not ok:
            msg = (
                f"scenario {scenario_id!r}: param {key!r} = {value!r} is not a string, integer, "
                "finite number or boolean"
            )
            raise RegistryError(msg)
    return dump_json(dict(params), f"scenario {scenario_id!r} params")


def _scenario(row: sqlite3.Row) -> ScenarioRecord:
    return ScenarioRecord(
        scenario_id=row["scenario_id"],
        strategy=row["strategy"],
        status=ScenarioState(row["status"]),
        version=row["version"],
        params=json.loads(row["params"]),
        regime=row["regime"],
        updated_ms=row["updated_ms"],
    )


def scenario_state(record: ScenarioRecord) -> str:
    """A scenario's state as its audit lines store it (JSON)."""
    return dump_json(
        {
            "scenario_id": record.scenario_id,
            "strategy": record.strategy,
            "status": record.status.value,
            "version": record.version,
            "params": dict(record.params),
            "regime": record.regime,
            "updated_ms": record.updated_ms,
        },
        "scenario state",
    )


def model_state(records: list[ModelRecord]) -> str | None:
    """A model's state as its audit lines store it: the active version and each one's status."""
    if not records:
        return None
    active = [r.version for r in records if r.status is ModelStatus.ACTIVE]
    return dump_json(
        {
            "active": active[0] if active else None,
            "versions": {r.version: r.status.value for r in records},
        },
        "model state",
    )


class Registry:
    """Scenarios, model versions and the audit trail; see the module docstring.

    Safe to call from several threads (one call at a time runs). ``actor`` is who asked (a
    ``Source`` value such as ``"cli"``), ``command`` what they asked (``"enable"``,
    ``"control:rollbackModel"``...), ``now_ms`` the bus clock's time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = open_database(self.path)
        self._conn.row_factory = sqlite3.Row
        try:
            with transaction(self._conn) as conn:
                # Statement by statement: executescript() would commit the open transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                check_schema(conn, self.path, "registry.schema", SCHEMA_VERSION)
        except (sqlite3.Error, RegistryError) as exc:
            self.close()
            if isinstance(exc, RegistryError):
                raise
            msg = f"{self.path}: cannot create the registry tables: {exc}"
            raise RegistryError(msg) from exc

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; SQLite failures become ``RegistryError``."""
        with self._lock:
            conn = self._connection()
            try:
                with transaction(conn):
                    yield conn
            except sqlite3.Error as exc:
                msg = f"{self.path}: {what} failed: {exc}"
                raise RegistryError(msg) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            msg = f"{self.path}: the registry is closed"
            raise RegistryError(msg)
        return self._conn

    def _audit(
        self,
        conn: sqlite3.Connection,
        *,
        now_ms: int,
        actor: str,
        command: str,
        entity: str,
        entity_id: str,
        before: str | None,
        after: str | None,
        detail: str,
    ) -> None:
        conn.execute(
            "INSERT INTO audit(ts_ms, actor, command, entity, entity_id, before, after, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (now_ms, str(actor), command, entity, entity_id, before, after, detail),
        )

    # -- scenarios -----------------------------------------------------------------------

    def scenario(self, scenario_id: str) -> ScenarioRecord | None:
        """The scenario's current row, or None if there is no such scenario."""
        with self._lock:
            return self._get_scenario(self._connection(), scenario_id)

    def scenarios(self, status: ScenarioState | str | None = None) -> list[ScenarioRecord]:
        """Every scenario (with ``status`` only, if given), ordered by id."""
        with self._lock:
            conn = self._connection()
            if status is None:
                rows = conn.execute("SELECT * FROM scenarios ORDER BY scenario_id")
            else:
                wanted = _scenario_status(status)
                rows = conn.execute(
                    "SELECT * FROM scenarios WHERE status = ? ORDER BY scenario_id",
                    (wanted.value,),
                )
            return [_scenario(row) for row in rows]

    def versions(self, scenario_id: str) -> list[ScenarioVersion]:
        """Every version the scenario ever had, oldest first (empty for an unknown scenario)."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT * FROM scenario_versions WHERE scenario_id = ? ORDER BY version",
                (scenario_id,),
            )
            return [
                ScenarioVersion(
                    scenario_id=row["scenario_id"],
                    version=row["version"],
                    strategy=row["strategy"],
                    params=json.loads(row["params"]),
                    regime=row["regime"],
                    evidence=json.loads(row["evidence"]),
                    created_ms=row["created_ms"],
                )
                for row in rows
            ]

    def propose(
        self,
        scenario_id: str,
        strategy: str,
        params: Mapping[str, ParamValue],
        regime: str | None = None,
        *,
        evidence: Mapping[str, Any],
        actor: str,
        command: str,
        now_ms: int,
    ) -> ScenarioRecord:
        """Store a proposal: a new ``proposed`` scenario, or a new version of an existing one.

        Returns the current row, unchanged when the proposal is what is already current.
        Refused for an ``enabled`` scenario (disable it first) and for a ``retired`` one.
        """
        _require_name("scenario id", scenario_id)
        _require_name(f"scenario {scenario_id!r} strategy", strategy)
        params_json = _params(scenario_id, params)
        evidence_json = dump_json(dict(evidence), f"scenario {scenario_id!r} evidence")
        regime = regime or None
        with self._write(f"propose scenario {scenario_id!r}") as conn:
            current = self._get_scenario(conn, scenario_id)
            if current is None:
                version = 1
            else:
                same = (
                    current.strategy == strategy
                    and _params(scenario_id, current.params) == params_json
                    and current.regime == regime
                )
                if same:
                    return current
                if current.status is ScenarioState.RETIRED:
                    msg = f"scenario {scenario_id!r} is retired: cannot propose a new version"
                    raise RegistryError(msg)
                if current.status is ScenarioState.ENABLED:
                    msg = (
                        f"scenario {scenario_id!r} is enabled at version {current.version}: "
                        "disable it before proposing other params"
                    )
                    raise RegistryError(msg)
                version = self._max_version(conn, scenario_id) + 1
            record = ScenarioRecord(
                scenario_id=scenario_id,
                strategy=strategy,
                status=ScenarioState.PROPOSED,
                version=version,
                params=json.loads(params_json),
                regime=regime,
                updated_ms=now_ms,
            )
            self._insert_version(conn, record, evidence_json)
            self._store_scenario(
                conn,
                before=current,
                after=record,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=f"version {version} proposed",
            )
        log.info("scenario_proposed", scenario_id=scenario_id, version=version, actor=actor)
        return record

    def seed(
        self,
        scenario_id: str,
        strategy: str,
        params: Mapping[str, ParamValue],
        regime: str | None = None,
        *,
        version: int = 1,
        enabled: bool = True,
        now_ms: int,
    ) -> ScenarioRecord | None:
        """Insert a scenario from the config if absent (``enabled``, or ``disabled``).

        Returns the new row, or None when the scenario already exists: the registry, not the
        config, is the truth after first boot, so an existing row is never changed.
        """
        _require_name("scenario id", scenario_id)
        _require_name(f"scenario {scenario_id!r} strategy", strategy)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            msg = f"scenario {scenario_id!r}: version must be an integer >= 1, got {version!r}"
            raise RegistryError(msg)
        params_json = _params(scenario_id, params)
        with self._write(f"seed scenario {scenario_id!r}") as conn:
            if self._get_scenario(conn, scenario_id) is not None:
                return None
            record = ScenarioRecord(
                scenario_id=scenario_id,
                strategy=strategy,
                status=ScenarioState.ENABLED if enabled else ScenarioState.DISABLED,
                version=version,
                params=json.loads(params_json),
                regime=regime or None,
                updated_ms=now_ms,
            )
            self._insert_version(conn, record, dump_json({"source": "config"}, "evidence"))
            self._store_scenario(
                conn,
                before=None,
                after=record,
                now_ms=now_ms,
                actor=CONFIG_ACTOR,
                command="seed",
                detail=f"seeded from the config as {record.status.value}",
            )
        log.info("scenario_seeded", scenario_id=scenario_id, status=record.status.value)
        return record

    def set_status(
        self,
        scenario_id: str,
        status: ScenarioState | str,
        *,
        actor: str,
        command: str,
        now_ms: int,
        detail: str = "",
    ) -> ScenarioRecord:
        """Move the scenario to ``status``; ``RegistryError`` if the transition is not allowed."""
        wanted = _scenario_status(status)
        with self._write(f"{_VERBS[wanted]} scenario {scenario_id!r}") as conn:
            current = self._require_scenario(conn, scenario_id)
            if current.status is wanted:
                msg = f"scenario {scenario_id!r} is already {wanted.value}"
                raise RegistryError(msg)
            allowed = TRANSITIONS[current.status]
            if wanted not in allowed:
                msg = (
                    f"scenario {scenario_id!r} is {current.status.value}: cannot "
                    f"{_VERBS[wanted]} it ({_allowed_text(current.status)})"
                )
                raise RegistryError(msg)
            record = attrs.evolve(current, status=wanted, updated_ms=now_ms)
            self._store_scenario(
                conn,
                before=current,
                after=record,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=detail,
            )
        log.info("scenario_status", scenario_id=scenario_id, status=wanted.value, actor=actor)
        return record

    def rollback_scenario(
        self,
        scenario_id: str,
        *,
        actor: str,
        command: str,
        now_ms: int,
        detail: str = "",
    ) -> ScenarioRecord:
        """Make the version before the current one current again; the status is kept."""
        with self._write(f"roll back scenario {scenario_id!r}") as conn:
            current = self._require_scenario(conn, scenario_id)
            if current.status is ScenarioState.RETIRED:
                msg = f"scenario {scenario_id!r} is retired: cannot roll it back"
                raise RegistryError(msg)
            row = conn.execute(
                "SELECT * FROM scenario_versions WHERE scenario_id = ? AND version < ?"
                " ORDER BY version DESC LIMIT 1",
                (scenario_id, current.version),
            ).fetchone()
            if row is None:
                msg = (
                    f"scenario {scenario_id!r} is at version {current.version}: there is no "
                    "earlier version to roll back to"
                )
                raise RegistryError(msg)
            record = attrs.evolve(
                current,
                strategy=row["strategy"],
                version=row["version"],
                params=json.loads(row["params"]),
                regime=row["regime"],
                updated_ms=now_ms,
            )
            self._store_scenario(
                conn,
                before=current,
                after=record,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=detail or f"rolled back from version {current.version}",
            )
        log.info(
            "scenario_rolled_back",
            scenario_id=scenario_id,
            version=record.version,
            from_version=current.version,
            actor=actor,
        )
        return record

    def _get_scenario(self, conn: sqlite3.Connection, scenario_id: str) -> ScenarioRecord | None:
        row = conn.execute(
            "SELECT * FROM scenarios WHERE scenario_id = ?", (scenario_id,)
        ).fetchone()
        return None if row is None else _scenario(row)

    def _require_scenario(self, conn: sqlite3.Connection, scenario_id: str) -> ScenarioRecord:
        record = self._get_scenario(conn, scenario_id)
        if record is None:
            msg = f"unknown scenario {scenario_id!r}"
            raise RegistryError(msg)
        return record

    def _max_version(self, conn: sqlite3.Connection, scenario_id: str) -> int:
        row = conn.execute(
            "SELECT max(version) FROM scenario_versions WHERE scenario_id = ?", (scenario_id,)
        ).fetchone()
        return int(row[0] or 0)

    def _insert_version(
        self, conn: sqlite3.Connection, record: ScenarioRecord, evidence_json: str
    ) -> None:
        conn.execute(
            "INSERT INTO scenario_versions"
            "(scenario_id, version, strategy, params, regime, evidence, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.scenario_id,
                record.version,
                record.strategy,
                dump_json(dict(record.params), "params"),
                record.regime,
                evidence_json,
                record.updated_ms,
            ),
        )

    def _store_scenario(
        self,
        conn: sqlite3.Connection,
        *,
        before: ScenarioRecord | None,
        after: ScenarioRecord,
        now_ms: int,
        actor: str,
        command: str,
        detail: str,
    ) -> None:
        conn.execute(
            "INSERT INTO scenarios"
            "(scenario_id, strategy, status, version, params, regime, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(scenario_id) DO UPDATE SET strategy = excluded.strategy,"
            " status = excluded.status, version = excluded.version, params = excluded.params,"
            " regime = excluded.regime, updated_ms = excluded.updated_ms",
            (
                after.scenario_id,
                after.strategy,
                after.status.value,
                after.version,
                dump_json(dict(after.params), "params"),
                after.regime,
                after.updated_ms,
            ),
        )
        self._audit(
            conn,
            now_ms=now_ms,
            actor=actor,
            command=command,
            entity="scenario",
            entity_id=after.scenario_id,
            before=None if before is None else scenario_state(before),
            after=scenario_state(after),
            detail=detail,
        )

    # -- models --------------------------------------------------------------------------

    def models(self, model: str | None = None) -> list[ModelRecord]:
        """Every registered model version (of ``model`` only, if given), by model then age."""
        with self._lock:
            return self._models(self._connection(), model)

    def active_model(self, model: str) -> str | None:
        """The active version of ``model``, or None."""
        with self._lock:
            row = (
                self._connection()
                .execute(
                    "SELECT version FROM models WHERE model = ? AND status = 'active'", (model,)
                )
                .fetchone()
            )
            return None if row is None else str(row[0])

    def register_model(
        self,
        model: str,
        version: str,
        *,
        meta: Mapping[str, Any],
        actor: str,
        command: str,
        now_ms: int,
    ) -> ModelRecord:
        """Store a new version of ``model`` as ``registered`` (not active)."""
        _require_name("model name", model)
        _require_name(f"model {model!r} version", version)
        meta_json = dump_json(dict(meta), f"model {model!r} version {version!r} meta")
        with self._write(f"register model {model!r} version {version!r}") as conn:
            before = self._models(conn, model)
            if any(r.version == version for r in before):
                msg = f"model {model!r} version {version!r} is already registered"
                raise RegistryError(msg)
            conn.execute(
                "INSERT INTO models(model, version, status, created_ms, meta)"
                " VALUES (?, ?, 'registered', ?, ?)",
                (model, version, now_ms, meta_json),
            )
            record = ModelRecord(model, version, ModelStatus.REGISTERED, now_ms, dict(meta))
            self._audit_model(
                conn,
                model,
                before,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=f"version {version} registered",
            )
        log.info("model_registered", model=model, version=version, actor=actor)
        return record

    def activate_model(
        self,
        model: str,
        version: str,
        *,
        actor: str,
        command: str,
        now_ms: int,
        detail: str = "",
    ) -> ModelRecord:
        """Make ``version`` the active one; the formerly active version becomes ``previous``."""
        with self._write(f"activate model {model!r} version {version!r}") as conn:
            before = self._models(conn, model)
            target = _find_version(model, version, before)
            if target.status is ModelStatus.ACTIVE:
                msg = f"model {model!r} version {version!r} is already active"
                raise RegistryError(msg)
            self._switch(conn, model, version, demote_to=ModelStatus.PREVIOUS)
            self._audit_model(
                conn,
                model,
                before,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=detail or f"version {version} activated",
            )
        log.info("model_activated", model=model, version=version, actor=actor)
        return attrs.evolve(target, status=ModelStatus.ACTIVE)

    def rollback_model(
        self,
        model: str,
        to_version: str | None = None,
        *,
        actor: str,
        command: str,
        now_ms: int,
        detail: str = "",
    ) -> str:
        """Retire the active version and re-activate the previous one (or ``to_version``).

        Returns the version now active.
        """
        with self._write(f"roll back model {model!r}") as conn:
            before = self._models(conn, model)
            if not before:
                msg = f"unknown model {model!r}"
                raise RegistryError(msg)
            active = next((r for r in before if r.status is ModelStatus.ACTIVE), None)
            if to_version is None:
                if active is None:
                    msg = f"model {model!r} has no active version to roll back from"
                    raise RegistryError(msg)
                row = conn.execute(
                    "SELECT version FROM models WHERE model = ? AND status = 'previous'"
                    " ORDER BY activation DESC LIMIT 1",
                    (model,),
                ).fetchone()
                if row is None:
                    msg = (
                        f"model {model!r} has no previous version to roll back to "
                        f"(active: {active.version!r})"
                    )
                    raise RegistryError(msg)
                target = str(row[0])
            else:
                target = _find_version(model, to_version, before).version
                if active is not None and active.version == target:
                    msg = f"model {model!r} version {target!r} is already active"
                    raise RegistryError(msg)
            self._switch(conn, model, target, demote_to=ModelStatus.RETIRED)
            origin = "nothing active" if active is None else f"version {active.version}"
            self._audit_model(
                conn,
                model,
                before,
                now_ms=now_ms,
                actor=actor,
                command=command,
                detail=detail or f"rolled back from {origin} to version {target}",
            )
        log.info("model_rolled_back", model=model, version=target, actor=actor)
        return target

    def _models(self, conn: sqlite3.Connection, model: str | None) -> list[ModelRecord]:
        if model is None:
            rows = conn.execute("SELECT * FROM models ORDER BY model, created_ms, version")
        else:
            rows = conn.execute(
                "SELECT * FROM models WHERE model = ? ORDER BY created_ms, version", (model,)
            )
        return [
            ModelRecord(
                model=row["model"],
                version=row["version"],
                status=ModelStatus(row["status"]),
                created_ms=row["created_ms"],
                meta=json.loads(row["meta"]),
            )
            for row in rows
        ]

    def _switch(
        self, conn: sqlite3.Connection, model: str, version: str, *, demote_to: ModelStatus
    ) -> None:
        conn.execute(
            "UPDATE models SET status = ? WHERE model = ? AND status = 'active'",
            (demote_to.value, model),
        )
        conn.execute(
            "UPDATE models SET status = 'active',"
            " activation = (SELECT coalesce(max(activation), 0) + 1 FROM models WHERE model = ?)"
            " WHERE model = ? AND version = ?",
            (model, model, version),
        )

    def _audit_model(
        self,
        conn: sqlite3.Connection,
        model: str,
        before: list[ModelRecord],
        *,
        now_ms: int,
        actor: str,
        command: str,
        detail: str,
    ) -> None:
        self._audit(
            conn,
            now_ms=now_ms,
            actor=actor,
            command=command,
            entity="model",
            entity_id=model,
            before=model_state(before),
            after=model_state(self._models(conn, model)),
            detail=detail,
        )

    # -- audit ---------------------------------------------------------------------------

    def audit(
        self,
        entity_id: str | None = None,
        limit: int | None = None,
        *,
        entity: str | None = None,
    ) -> list[AuditRecord]:
        """Audit lines, oldest first: those of ``entity_id`` and ``entity`` if given.

        With ``limit``, only the last ``limit`` lines (still oldest first).
        """
        clauses: list[str] = []
        args: list[object] = []
        if entity_id is not None:
            clauses.append("entity_id = ?")
            args.append(entity_id)
        if entity is not None:
            clauses.append("entity = ?")
            args.append(entity)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT * FROM audit{where} ORDER BY id DESC"  # noqa: S608 - fixed fragments
        if limit is not None:
            query += " LIMIT ?"
            args.append(max(0, limit))
        with self._lock:
            rows = self._connection().execute(query, args).fetchall()
        return [
            AuditRecord(
                id=row["id"],
                ts_ms=row["ts_ms"],
                actor=row["actor"],
                command=row["command"],
                entity=row["entity"],
                entity_id=row["entity_id"],
                before=row["before"],
                after=row["after"],
                detail=row["detail"],
            )
            for row in reversed(rows)
        ]


def _require_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        msg = f"{what} must be a non-empty string, got {value!r}"
        raise RegistryError(msg)


def _scenario_status(status: ScenarioState | str) -> ScenarioState:
    try:
        return ScenarioState(status)
    except ValueError:
        choices = " | ".join(s.value for s in ScenarioState)
        msg = f"{status!r} is not a scenario status ({choices})"
        raise RegistryError(msg) from None


def _allowed_text(status: ScenarioState) -> str:
    allowed = sorted(TRANSITIONS[status], key=list(ScenarioState).index)
    if not allowed:
        return f"{status.value} is final"
    return "from here it can only be " + " or ".join(s.value for s in allowed)


def _find_version(model: str, version: str, records: list[ModelRecord]) -> ModelRecord:
    for record in records:
        if record.version == version:
            return record
    if not records:
        msg = f"unknown model {model!r}"
    else:
        known = ", ".join(repr(r.version) for r in records)
        msg = f"model {model!r} has no version {version!r} (registered: {known})"
    raise RegistryError(msg)
