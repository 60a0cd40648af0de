"""The registry: enforced scenario transitions, versions and rollback, model versions, and an
audit trail that always agrees with the rows."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.enums import ScenarioState
from contracts.meta import Source
from planes.storage.registry import (
    CONFIG_ACTOR,
    TRANSITIONS,
    ModelStatus,
    Registry,
    RegistryError,
    ScenarioRecord,
    model_state,
    open_database,
    scenario_state,
)

PROPOSED, ENABLED, DISABLED, RETIRED = (
    ScenarioState.PROPOSED,
    ScenarioState.ENABLED,
    ScenarioState.DISABLED,
    ScenarioState.RETIRED,
)
CLI = Source.CLI.value
RESEARCH = Source.RESEARCH.value


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry.sqlite3") as reg:
        yield reg


def propose(
    reg: Registry,
    scenario_id: str = "s1",
    fast: int = 3,
    *,
    regime: str | None = None,
    now: int = 1,
) -> ScenarioRecord:
    return reg.propose(
        scenario_id,
        "sma_cross",
        {"fast": fast, "slow": 8},
        regime,
        evidence={"oos_sharpe": 1.4, "trades": 31},
        actor=RESEARCH,
        command="research:scenarioApproved",
        now_ms=now,
    )


def move(
    reg: Registry, status: ScenarioState, scenario_id: str = "s1", now: int = 2
) -> ScenarioRecord:
    return reg.set_status(scenario_id, status, actor=CLI, command=f"scenario {status}", now_ms=now)


def table(reg: Registry, name: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(reg.path) as conn:
        return conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()  # noqa: S608


# -- the file ------------------------------------------------------------------------------


def test_the_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "registry.sqlite3"
    Registry(path).close()
    conn = open_database(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"scenarios", "scenario_versions", "models", "audit", "meta"} <= tables
    finally:
        conn.close()


def test_not_a_database_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match=f"{path}: not a usable registry database"):
        Registry(path)


def test_a_schema_from_a_newer_build_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    Registry(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'registry.schema'")
    conn.close()
    with pytest.raises(RegistryError, match=r"registry.schema is version 99, written by a newer"):
        Registry(path)


def test_a_closed_registry_says_so(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.sqlite3")
    reg.close()
    reg.close()  # idempotent
    with pytest.raises(RegistryError, match="the registry is closed"):
        reg.scenarios()


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path) as reg:
        propose(reg)
        move(reg, ENABLED)
        reg.register_model("m", "v1", meta={"auc": 0.61}, actor=RESEARCH, command="train", now_ms=3)
        reg.activate_model("m", "v1", actor=CLI, command="activate", now_ms=4)
        before = (reg.scenarios(), reg.versions("s1"), reg.models(), reg.audit())
    with Registry(path) as reg:
        assert (reg.scenarios(), reg.versions("s1"), reg.models(), reg.audit()) == before
        assert reg.active_model("m") == "v1"


# -- scenarios: proposals and versions -----------------------------------------------------


def test_a_proposal_is_stored_as_version_1_with_its_evidence_and_audit(registry: Registry) -> None:
    record = propose(registry, regime="trend", now=10)
    assert record == ScenarioRecord(
        scenario_id="s1",
        strategy="sma_cross",
        status=PROPOSED,
        version=1,
        params={"fast": 3, "slow": 8},
        regime="trend",
        updated_ms=10,
    )
    assert registry.scenario("s1") == record
    [version] = registry.versions("s1")
    assert (version.version, version.evidence, version.created_ms) == (
        1,
        {"oos_sharpe": 1.4, "trades": 31},
        10,
    )
    [line] = registry.audit("s1")
    assert (line.ts_ms, line.actor, line.command, line.entity, line.entity_id) == (
        10,
        "research",
        "research:scenarioApproved",
        "scenario",
        "s1",
    )
    assert line.before is None
    assert line.after == scenario_state(record)
    assert line.detail == "version 1 proposed"


def test_proposing_what_is_current_changes_nothing(registry: Registry) -> None:
    first = propose(registry)
    assert propose(registry, now=99) == first
    assert len(registry.versions("s1")) == 1
    assert len(registry.audit()) == 1


def test_other_params_make_a_new_version(registry: Registry) -> None:
    propose(registry, fast=3)
    second = propose(registry, fast=5, now=20)
    assert (second.version, second.status, second.params["fast"]) == (2, PROPOSED, 5)
    move(registry, ENABLED)
    move(registry, DISABLED)
    third = propose(registry, fast=3, regime="range", now=30)  # back from disabled: proposed
    assert (third.version, third.status, third.regime) == (3, PROPOSED, "range")
    assert [v.version for v in registry.versions("s1")] == [1, 2, 3]


def test_an_empty_regime_is_no_regime(registry: Registry) -> None:
    assert propose(registry, regime="").regime is None
    assert propose(registry, regime=None) == registry.scenario("s1")


def test_a_proposal_never_changes_an_enabled_scenario(registry: Registry) -> None:
    propose(registry)
    move(registry, ENABLED)
    with pytest.raises(
        RegistryError,
        match=r"scenario 's1' is enabled at version 1: disable it before proposing other params",
    ):
        propose(registry, fast=4)
    assert registry.scenario("s1") == attrs.evolve(propose(registry), status=ENABLED)


def test_a_retired_scenario_takes_no_new_version(registry: Registry) -> None:
    propose(registry)
    move(registry, RETIRED)
    with pytest.raises(RegistryError, match=r"scenario 's1' is retired: cannot propose"):
        propose(registry, fast=4)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": None}, r"scenario 's1': param 'fast' = None is not a string, integer"),
        ({"fast": float("nan")}, r"param 'fast' = nan"),
        ({"fast": [1]}, r"param 'fast' = \[1\]"),
        ({1: 2}, r"param 1 = 2"),
    ],
)
def test_bad_params_are_refused(registry: Registry, params: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.propose("s1", "sma", params, evidence={}, actor=RESEARCH, command="x", now_ms=1)
    assert registry.scenarios() == []
    assert registry.audit() == []


def test_non_json_evidence_and_empty_names_are_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"scenario 's1' evidence is not JSON"):
        registry.propose(
            "s1", "sma", {}, evidence={"x": object()}, actor=RESEARCH, command="x", now_ms=1
        )
    with pytest.raises(RegistryError, match=r"scenario id must be a non-empty string"):
        registry.propose(" ", "sma", {}, evidence={}, actor=RESEARCH, command="x", now_ms=1)
    with pytest.raises(RegistryError, match=r"scenario 's1' strategy must be a non-empty"):
        registry.propose("s1", "", {}, evidence={}, actor=RESEARCH, command="x", now_ms=1)
    assert registry.audit() == []


# -- scenarios: status transitions ---------------------------------------------------------

ALL = list(ScenarioState)


def put_in(reg: Registry, status: ScenarioState) -> None:
    """Bring scenario s1 to ``status`` through allowed transitions."""
    propose(reg)
    path = {
        PROPOSED: [],
        ENABLED: [ENABLED],
        DISABLED: [ENABLED, DISABLED],
        RETIRED: [RETIRED],
    }[status]
    for step in path:
        move(reg, step)
    record = reg.scenario("s1")
    assert record is not None
    assert record.status is status


@pytest.mark.parametrize("start", ALL)
@pytest.mark.parametrize("target", ALL)
def test_transitions_are_enforced(
    tmp_path: Path, start: ScenarioState, target: ScenarioState
) -> None:
    with Registry(tmp_path / "r.sqlite3") as reg:
        put_in(reg, start)
        before, trail = reg.scenario("s1"), reg.audit()
        if target in TRANSITIONS[start]:
            record = move(reg, target, now=50)
            assert record.status is target
            assert reg.scenario("s1") == record
            assert record.updated_ms == 50
            assert len(reg.audit()) == len(trail) + 1
        else:
            with pytest.raises(RegistryError, match=r"^scenario 's1' is ") as caught:
                move(reg, target, now=50)
            assert reg.scenario("s1") == before
            assert reg.audit() == trail
            message = str(caught.value)
            if start is target:
                assert message == f"scenario 's1' is already {target}"
            else:
                assert message.startswith(f"scenario 's1' is {start}: cannot ")


def test_the_allowed_transitions_are_those_of_the_design() -> None:
    assert {s: set(t) for s, t in TRANSITIONS.items()} == {
        PROPOSED: {ENABLED, RETIRED},
        ENABLED: {DISABLED},
        DISABLED: {ENABLED, RETIRED},
        RETIRED: set(),
    }


def test_refusals_say_what_is_allowed(registry: Registry) -> None:
    put_in(registry, ENABLED)
    with pytest.raises(RegistryError) as caught:
        move(registry, RETIRED)
    assert str(caught.value) == (
        "scenario 's1' is enabled: cannot retire it (from here it can only be disabled)"
    )
    move(registry, DISABLED)
    move(registry, RETIRED)
    with pytest.raises(RegistryError) as caught:
        move(registry, ENABLED)
    assert str(caught.value) == "scenario 's1' is retired: cannot enable it (retired is final)"


def test_unknown_scenarios_and_statuses(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"^unknown scenario 'nope'$"):
        move(registry, ENABLED, scenario_id="nope")
    with pytest.raises(RegistryError, match=r"'paused' is not a scenario status \(proposed \|"):
        registry.set_status("s1", "paused", actor=CLI, command="x", now_ms=1)
    assert registry.scenario("nope") is None
    assert registry.versions("nope") == []


def test_status_as_a_string_and_listing_by_status(registry: Registry) -> None:
    propose(registry, "a")
    propose(registry, "b")
    propose(registry, "c")
    registry.set_status("b", "enabled", actor=CLI, command="enable", now_ms=5, detail="go")
    assert [s.scenario_id for s in registry.scenarios()] == ["a", "b", "c"]
    assert [s.scenario_id for s in registry.scenarios(ENABLED)] == ["b"]
    assert [s.scenario_id for s in registry.scenarios("proposed")] == ["a", "c"]
    assert registry.audit("b")[-1].detail == "go"


# -- scenarios: rollback -------------------------------------------------------------------


def test_rollback_restores_the_previous_version_and_keeps_the_status(registry: Registry) -> None:
    propose(registry, fast=3, regime="trend")
    move(registry, ENABLED)
    move(registry, DISABLED)
    propose(registry, fast=5)
    move(registry, ENABLED)
    back = registry.rollback_scenario("s1", actor=CLI, command="rollback", now_ms=70)
    assert (back.version, back.params, back.regime, back.status) == (
        1,
        {"fast": 3, "slow": 8},
        "trend",
        ENABLED,
    )
    assert registry.scenario("s1") == back
    assert registry.audit("s1")[-1].detail == "rolled back from version 2"
    with pytest.raises(
        RegistryError, match=r"scenario 's1' is at version 1: there is no earlier version"
    ):
        registry.rollback_scenario("s1", actor=CLI, command="rollback", now_ms=71)
    move(registry, DISABLED)
    assert propose(registry, fast=9).version == 3  # numbers are never reused


def test_rollback_walks_back_one_version_at_a_time(registry: Registry) -> None:
    for fast in (1, 2, 3):
        propose(registry, fast=fast)
    for expected in (2, 1):
        back = registry.rollback_scenario("s1", actor=CLI, command="rollback", now_ms=5)
        assert (back.version, back.params["fast"]) == (expected, expected)


def test_rollback_is_refused_when_retired_or_unknown(registry: Registry) -> None:
    propose(registry, fast=1)
    propose(registry, fast=2)
    move(registry, RETIRED)
    with pytest.raises(RegistryError, match=r"scenario 's1' is retired: cannot roll it back"):
        registry.rollback_scenario("s1", actor=CLI, command="rollback", now_ms=5)
    with pytest.raises(RegistryError, match=r"unknown scenario 'x'"):
        registry.rollback_scenario("x", actor=CLI, command="rollback", now_ms=5)


# -- scenarios: seeding from the config ----------------------------------------------------


def test_seed_inserts_an_absent_scenario_as_enabled(registry: Registry) -> None:
    record = registry.seed("demo", "sma_cross", {"fast": 3}, "", version=2, now_ms=1)
    assert record is not None
    assert (record.status, record.version, record.regime) == (ENABLED, 2, None)
    [line] = registry.audit("demo")
    assert (line.actor, line.command) == (CONFIG_ACTOR, "seed")
    assert registry.versions("demo")[0].evidence == {"source": "config"}


def test_seed_never_overrides_an_existing_scenario(registry: Registry) -> None:
    registry.seed("demo", "sma_cross", {"fast": 3}, now_ms=1)
    move(registry, DISABLED, scenario_id="demo")
    assert registry.seed("demo", "sma_cross", {"fast": 99}, enabled=True, now_ms=5) is None
    record = registry.scenario("demo")
    assert record is not None
    assert (record.status, record.params) == (DISABLED, {"fast": 3})
    assert len(registry.audit("demo")) == 2


def test_seed_a_disabled_scenario_and_bad_versions(registry: Registry) -> None:
    record = registry.seed("off", "sma_cross", {}, enabled=False, now_ms=1)
    assert record is not None
    assert record.status is DISABLED
    with pytest.raises(RegistryError, match=r"version must be an integer >= 1, got 0"):
        registry.seed("x", "sma_cross", {}, version=0, now_ms=1)


# -- audit atomicity -----------------------------------------------------------------------


def fail_audit_inserts(reg: Registry) -> None:
    with sqlite3.connect(reg.path) as conn:
        conn.execute(
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    conn.close()


def test_a_failed_audit_line_undoes_the_row_change(registry: Registry) -> None:
    propose(registry)
    registry.register_model("m", "v1", meta={}, actor=RESEARCH, command="train", now_ms=1)
    rows = {name: table(registry, name) for name in ("scenarios", "scenario_versions", "models")}
    trail = registry.audit()
    fail_audit_inserts(registry)
    attempts: list[Callable[[], object]] = [
        lambda: move(registry, ENABLED),
        lambda: propose(registry, fast=7),
        lambda: propose(registry, "s2"),
        lambda: registry.seed("s3", "sma", {}, now_ms=1),
        lambda: registry.register_model("m", "v2", meta={}, actor=RESEARCH, command="t", now_ms=1),
        lambda: registry.activate_model("m", "v1", actor=CLI, command="a", now_ms=1),
    ]
    for attempt in attempts:
        with pytest.raises(RegistryError, match=r"failed: disk on fire"):
            attempt()
    assert {name: table(registry, name) for name in rows} == rows
    assert registry.audit() == trail


def test_a_mutation_is_one_transaction_even_if_python_fails_midway(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    propose(registry)

    def broken_audit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash between the row and its audit line")

    monkeypatch.setattr(registry, "_audit", broken_audit)
    with pytest.raises(RuntimeError, match="crash between"):
        move(registry, ENABLED)
    monkeypatch.undo()
    record = registry.scenario("s1")
    assert record is not None
    assert record.status is PROPOSED
    assert len(registry.audit()) == 1


# -- models --------------------------------------------------------------------------------


def register(reg: Registry, *versions: str) -> None:
    for n, version in enumerate(versions):
        reg.register_model(
            "drift", version, meta={"n": n}, actor=RESEARCH, command="train", now_ms=n
        )


def statuses(reg: Registry) -> dict[str, str]:
    return {m.version: m.status.value for m in reg.models("drift")}


def test_register_then_activate(registry: Registry) -> None:
    register(registry, "v1", "v2")
    assert registry.active_model("drift") is None
    assert statuses(registry) == {"v1": "registered", "v2": "registered"}
    record = registry.activate_model("drift", "v1", actor=CLI, command="activate", now_ms=10)
    assert (record.version, record.status, record.meta) == ("v1", ModelStatus.ACTIVE, {"n": 0})
    registry.activate_model("drift", "v2", actor=CLI, command="activate", now_ms=11)
    assert registry.active_model("drift") == "v2"
    assert statuses(registry) == {"v1": "previous", "v2": "active"}


def test_rollback_walks_back_through_the_activation_history(registry: Registry) -> None:
    register(registry, "v1", "v2", "v3", "v4")
    for version in ("v2", "v1", "v3"):  # activation order, not registration order
        registry.activate_model("drift", version, actor=CLI, command="activate", now_ms=5)

    def rollback() -> str:
        return registry.rollback_model(
            "drift", actor=Source.CLI, command="control:rollbackModel", now_ms=9
        )

    assert rollback() == "v1"
    assert statuses(registry) == {
        "v1": "active",
        "v2": "previous",
        "v3": "retired",
        "v4": "registered",
    }
    assert rollback() == "v2"
    assert statuses(registry) == {
        "v1": "retired",
        "v2": "active",
        "v3": "retired",
        "v4": "registered",
    }
    with pytest.raises(
        RegistryError,
        match=r"model 'drift' has no previous version to roll back to \(active: 'v2'\)",
    ):
        rollback()
    assert registry.audit("drift")[-1].actor == "cli"


def test_rollback_to_a_named_version(registry: Registry) -> None:
    register(registry, "v1", "v2", "v3")
    registry.activate_model("drift", "v1", actor=CLI, command="a", now_ms=1)
    registry.activate_model("drift", "v2", actor=CLI, command="a", now_ms=2)
    assert registry.rollback_model("drift", "v3", actor=CLI, command="r", now_ms=3) == "v3"
    assert statuses(registry) == {"v1": "previous", "v2": "retired", "v3": "active"}
    assert registry.audit("drift")[-1].detail == "rolled back from version v2 to version v3"
    assert registry.rollback_model("drift", "v2", actor=CLI, command="r", now_ms=4) == "v2"
    with pytest.raises(RegistryError, match=r"model 'drift' version 'v2' is already active"):
        registry.rollback_model("drift", "v2", actor=CLI, command="r", now_ms=5)
    with pytest.raises(
        RegistryError, match=r"model 'drift' has no version 'v9' \(registered: 'v1', 'v2', 'v3'\)"
    ):
        registry.rollback_model("drift", "v9", actor=CLI, command="r", now_ms=5)


def test_model_refusals(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"^unknown model 'drift'$"):
        registry.rollback_model("drift", actor=CLI, command="r", now_ms=1)
    with pytest.raises(RegistryError, match=r"^unknown model 'drift'$"):
        registry.activate_model("drift", "v1", actor=CLI, command="a", now_ms=1)
    register(registry, "v1")
    with pytest.raises(RegistryError, match=r"model 'drift' version 'v1' is already registered"):
        register(registry, "v1")
    with pytest.raises(RegistryError, match=r"model 'drift' has no active version to roll back"):
        registry.rollback_model("drift", actor=CLI, command="r", now_ms=1)
    registry.activate_model("drift", "v1", actor=CLI, command="a", now_ms=1)
    with pytest.raises(RegistryError, match=r"model 'drift' version 'v1' is already active"):
        registry.activate_model("drift", "v1", actor=CLI, command="a", now_ms=1)
    with pytest.raises(RegistryError, match=r"model 'drift' version 'v2' meta is not JSON"):
        registry.register_model(
            "drift", "v2", meta={"f": float("inf")}, actor=RESEARCH, command="t", now_ms=1
        )
    assert len(registry.audit("drift")) == 2


def test_at_most_one_active_version_is_enforced_by_the_database(registry: Registry) -> None:
    register(registry, "v1", "v2")
    registry.activate_model("drift", "v1", actor=CLI, command="a", now_ms=1)
    with sqlite3.connect(registry.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE models SET status = 'active' WHERE version = 'v2'")
    conn.close()


def test_audit_filters_and_limit(registry: Registry) -> None:
    propose(registry, "a", now=1)
    propose(registry, "b", now=2)
    register(registry, "v1")
    move(registry, ENABLED, "a", now=4)
    assert [(r.entity, r.entity_id) for r in registry.audit()] == [
        ("scenario", "a"),
        ("scenario", "b"),
        ("model", "drift"),
        ("scenario", "a"),
    ]
    assert [r.ts_ms for r in registry.audit("a")] == [1, 4]
    assert [r.entity_id for r in registry.audit(limit=2)] == ["drift", "a"]
    assert [r.entity_id for r in registry.audit(entity="model")] == ["drift"]
    assert registry.audit(limit=0) == []
    ids = [r.id for r in registry.audit()]
    assert ids == sorted(ids)


# -- property: the audit trail agrees with the rows ----------------------------------------

SCENARIO_IDS = ("s1", "s2")
MODEL_VERSIONS = ("v1", "v2", "v3")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("propose"), st.sampled_from(SCENARIO_IDS), st.integers(1, 3)),
        st.tuples(st.just("seed"), st.sampled_from(SCENARIO_IDS), st.booleans()),
        st.tuples(st.just("status"), st.sampled_from(SCENARIO_IDS), st.sampled_from(ALL)),
        st.tuples(st.just("rollback"), st.sampled_from(SCENARIO_IDS), st.none()),
        st.tuples(st.just("register"), st.sampled_from(MODEL_VERSIONS), st.none()),
        st.tuples(st.just("activate"), st.sampled_from(MODEL_VERSIONS), st.none()),
        st.tuples(st.just("rollback_model"), st.sampled_from((None, *MODEL_VERSIONS)), st.none()),
    ),
    max_size=25,
)


def apply(reg: Registry, op: tuple[str, Any, Any], now: int) -> None:
    kind, target, arg = op
    if kind == "propose":
        propose(reg, target, fast=arg, now=now)
    elif kind == "seed":
        reg.seed(target, "sma_cross", {"fast": 1, "slow": 8}, enabled=arg, now_ms=now)
    elif kind == "status":
        move(reg, arg, target, now=now)
    elif kind == "rollback":
        reg.rollback_scenario(target, actor=CLI, command="rollback", now_ms=now)
    elif kind == "register":
        reg.register_model("m", target, meta={}, actor=RESEARCH, command="train", now_ms=now)
    elif kind == "activate":
        reg.activate_model("m", target, actor=CLI, command="activate", now_ms=now)
    else:
        reg.rollback_model("m", target, actor=CLI, command="rollback", now_ms=now)


@given(ops=operations)
def test_any_sequence_of_operations_keeps_the_audit_trail_consistent(
    ops: list[tuple[str, Any, Any]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Registry(Path(tmp) / "r.sqlite3") as reg:
        changes = 0
        for now, op in enumerate(ops, start=1):
            kind, target, arg = op
            lines = len(reg.audit())
            before = reg.scenario(target) if isinstance(target, str) else None
            try:
                apply(reg, op, now)
            except RegistryError:
                assert len(reg.audit()) == lines  # a refusal writes nothing
                if kind == "status" and before is not None and before.status is not arg:
                    assert arg not in TRANSITIONS[before.status]  # only bad moves are refused
                continue
            changes += len(reg.audit()) - lines
            if kind == "status":
                assert before is not None
                assert arg in TRANSITIONS[before.status]  # only allowed moves succeed
        # Every successful change wrote exactly one line, and no-op calls none.
        assert changes == len(reg.audit())
        # Per entity, the lines chain (before == previous after) and end at the current state.
        last: dict[tuple[str, str], str | None] = {}
        for line in reg.audit():
            key = (line.entity, line.entity_id)
            assert line.before == last.get(key)
            assert line.after != line.before
            last[key] = line.after
        for record in reg.scenarios():
            assert last[("scenario", record.scenario_id)] == scenario_state(record)
            current = [v for v in reg.versions(record.scenario_id) if v.version == record.version]
            assert len(current) == 1
            assert (current[0].params, current[0].regime) == (record.params, record.regime)
        assert {k[1] for k in last if k[0] == "scenario"} == {
            s.scenario_id for s in reg.scenarios()
        }
        models = reg.models("m")
        if models:
            assert last[("model", "m")] == model_state(models)
            active = [m.version for m in models if m.status is ModelStatus.ACTIVE]
            assert len(active) <= 1
            assert reg.active_model("m") == (active[0] if active else None)
            assert json.loads(model_state(models) or "{}")["active"] == reg.active_model("m")
        else:
            assert ("model", "m") not in last
