"""The StateStore: atomic, checksummed snapshots; a damaged newest one falls back to an older."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planes.storage.snapshots import (
    FORMAT,
    Snapshot,
    SnapshotError,
    StateStore,
    canonical_json,
    checksum,
)

SECTIONS: dict[str, Any] = {
    "ledger": {"cash": "10000.00", "positions": [{"symbol": "BTCUSDT", "qty": "0.5"}]},
    "risk": {"halted": False, "day_pnl": -12.5, "trades_today": 3},
    "strategy": {"sma_cross_demo": {"last_signal": None, "bars": [1, 2, 3]}},
}

# -- strategies ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
sections_st = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4)


DISK_BOUND = settings(deadline=None)
"""Each example writes (and fsyncs) a snapshot file: its time is the disk's, which a loaded
machine stretches past the fast profile's 200 ms deadline; the ci profile has none either."""


def write(store: StateStore, seq: int, now_ms: int = 1_000, **sections: Any) -> Snapshot:
    return store.write(seq, sections or SECTIONS, run_id="run-1", reason="periodic", now_ms=now_ms)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: NaN-free, and -0.0 vs 0.0 told apart like the file does."""
    return canonical_json(a) == canonical_json(b)


# -- round trip and file layout ------------------------------------------------------------


def test_write_then_latest_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "snapshots")
    written = write(store, 42, now_ms=1_700_000_000_000)
    found, problems = store.latest()
    assert problems == []
    assert found is not None
    assert found == written
    assert found.sections == SECTIONS
    assert (found.journal_seq, found.run_id, found.reason) == (42, "run-1", "periodic")
    assert found.created_ms == 1_700_000_000_000
    assert found.size_bytes == found.path.stat().st_size


def test_file_name_content_and_checksum(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    snap = write(store, 7, now_ms=123)
    assert re.fullmatch(r"000000000007-0000000000123-[0-9a-f]{8}\.json", snap.path.name)
    assert snap.snapshot_id == snap.path.name[13:-5]
    assert [p.name for p in tmp_path.iterdir()] == [snap.path.name]  # no temp file left
    document = json.loads(snap.path.read_bytes())
    assert document["format"] == FORMAT == 1
    assert set(document) == {
        "format",
        "snapshot_id",
        "journal_seq",
        "run_id",
        "created_ms",
        "reason",
        "sections",
        "checksum",
    }
    body = {k: v for k, v in document.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert document["checksum"] == hashlib.sha256(canonical.encode()).hexdigest()


@DISK_BOUND
@given(
    sections=sections_st,
    run_id=st.sampled_from(['"sections":null', 'r"', "\u00e9"]) | st.text(max_size=20),
    reason=st.sampled_from(['{"sections":null}', "\\", "x"]) | st.text(max_size=20),
)
def test_the_file_is_the_canonical_json_of_its_document(
    sections: dict[str, Any], run_id: str, reason: str
) -> None:
    # The sections are encoded once and put into the rest's text (canonical_json's own result
    # must come out, whatever the strings around them hold).
    with tempfile.TemporaryDirectory() as tmp:
        try:
            written = StateStore(Path(tmp)).write(
                1, sections, run_id=run_id, reason=reason, now_ms=5
            )
        except SnapshotError:  # a lone surrogate in the text: refused as before
            return
        data = written.path.read_bytes()
        document = json.loads(data)
        assert data == canonical_json(document).encode("utf-8")
        assert document["run_id"] == run_id
        assert document["reason"] == reason
        assert document["checksum"] == checksum(document)


@DISK_BOUND
@given(sections=sections_st, seq=st.integers(0, 10**12 - 1))
def test_any_json_sections_round_trip(sections: dict[str, Any], seq: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        written = store.write(seq, sections, run_id="r", reason="x", now_ms=5)
        found, problems = store.latest()
        assert problems == []
        assert found is not None
        assert found.journal_seq == seq
        assert same_json(found.sections, sections)
        assert same_json(written.sections, found.sections)


def test_list_is_oldest_first_and_newest_is_by_seq_then_time(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=10)
    a = write(store, 5, now_ms=900)
    b = write(store, 5, now_ms=1_000)
    c = write(store, 4, now_ms=2_000)  # written later, but covers less of the journal
    assert store.list() == [c.path, a.path, b.path]
    found, _ = store.latest()
    assert found is not None
    assert found.snapshot_id == b.snapshot_id


def test_missing_or_empty_directory_has_no_snapshot(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "nope").latest() == (None, [])
    assert StateStore(tmp_path / "nope").list() == []
    assert StateStore(tmp_path).latest() == (None, [])


def test_foreign_files_are_ignored(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    snap = write(store, 1)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "999999999999-x.json.bak").write_text("{}")
    (tmp_path / "000000000009-bad name.json").write_text("{}")
    assert store.list() == [snap.path]


# -- atomicity -----------------------------------------------------------------------------


def test_leftover_temp_file_is_ignored_then_cleaned_by_the_next_write(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    first = write(store, 1)
    leftover = tmp_path / ".tmp-0000000000999-deadbeef"
    leftover.write_bytes(b'{"format": 1, "journal_seq": 99, "sec')  # a crash mid-write
    assert store.list() == [first.path]
    found, problems = store.latest()
    assert found == first
    assert problems == []
    assert leftover.exists()  # a reader never deletes: the writer may be mid-write
    second = write(store, 2)
    assert not leftover.exists()
    assert store.list() == [first.path, second.path]


def test_clean_returns_what_it_removed(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.clean() == []
    leftover = tmp_path / ".tmp-abc"
    leftover.write_text("x")
    assert store.clean() == [leftover]
    assert not leftover.exists()


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_no_file_and_keeps_the_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = StateStore(tmp_path)
    old = write(store, 1)

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(SnapshotError, match=r"could not write the snapshot: .*No space left"):
        write(store, 2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.path.name]
    assert store.latest() == (old, [])


def test_the_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write(StateStore(tmp_path), 1)
    assert calls == ["file", "replace", "dir"]


# -- damaged files -------------------------------------------------------------------------


def damage_newest(store: StateStore, change: Callable[[bytes], bytes]) -> Path:
    newest = store.list()[-1]
    newest.write_bytes(change(newest.read_bytes()))
    return newest


def edit_document(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        document = json.loads(data)
        change(document)
        return json.dumps(document).encode()

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document[key] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        del document[key]

    return change


def _poke_section(document: dict[str, Any]) -> None:
    document["sections"]["risk"]["halted"] = True


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda data: data[: len(data) // 2], r"truncated"),
    "empty": (lambda data: b"", r"empty file"),
    "garbage inside": (lambda data: b"#" + data[1:], r"not valid JSON \(Expecting value"),
    "not utf-8": (lambda data: b"\xff\xfe" + data, r"not UTF-8"),
    "not an object": (lambda data: b"[1, 2, 3]", r"not a snapshot \(the JSON is a list"),
    "NaN": (lambda data: data.replace(b"-12.5", b"NaN"), r"NaN is not allowed"),
    # A flipped digit in an exponent: Python reads 1e999 as inf, which has no canonical JSON.
    "float out of range": (
        lambda data: data.replace(b"-12.5", b"-12.5e999"),
        r"-12.5e999 is out of a float's range",
    ),
    "value changed": (edit_document(_poke_section), r"checksum mismatch"),
    "checksum changed": (edit_document(_set("checksum", "0" * 64)), r"checksum mismatch"),
    "format 2": (edit_document(_set("format", 2)), r"unknown snapshot format 2"),
    "format missing": (edit_document(_drop("format")), r"unknown snapshot format None"),
    "field missing": (edit_document(_drop("run_id")), r"missing field\(s\) run_id"),
    "extra field": (edit_document(_set("extra", 1)), r"unexpected field\(s\) extra"),
    "wrong type": (edit_document(_set("journal_seq", "2")), r"'journal_seq' has the wrong type"),
    "bool seq": (edit_document(_set("journal_seq", True)), r"'journal_seq' has the wrong type"),
    "sections list": (edit_document(_set("sections", [])), r"'sections' has the wrong type"),
    "negative ms": (edit_document(_set("created_ms", -1)), r"'created_ms' is negative"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_newest_snapshot_falls_back_to_the_previous(tmp_path: Path, kind: str) -> None:
    change, problem = DAMAGE[kind]
    store = StateStore(tmp_path)
    good = write(store, 1)
    write(store, 2)
    bad = damage_newest(store, change)
    found, problems = store.latest()
    assert found == good
    assert len(problems) == 1
    assert problems[0].startswith(f"{bad}: ")
    assert re.search(problem, problems[0]), problems[0]
    with pytest.raises(SnapshotError, match=problem):
        store.load(bad)


def test_a_snapshot_whose_name_disagrees_with_its_content_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    good = write(store, 1)
    moved = write(store, 2).path
    renamed = moved.with_name("000000000003" + moved.name[12:])
    moved.rename(renamed)
    snapshot_id = moved.name[13:-5]
    found, problems = store.latest()
    assert found == good
    assert problems == [
        f"{renamed}: the name says seq 3 id {snapshot_id!r}, "
        f"the content says seq 2 id {snapshot_id!r}"
    ]


def test_every_problem_newer_than_the_valid_one_is_listed(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=10)
    good = write(store, 1)
    second = write(store, 2)
    third = write(store, 3)
    second.path.write_bytes(b"")
    third.path.write_bytes(b"{")
    found, problems = store.latest()
    assert found == good
    assert [p.split(": ")[0] for p in problems] == [str(third.path), str(second.path)]


def test_no_valid_snapshot_at_all(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    snap = write(store, 1)
    snap.path.write_bytes(b'{"format": 1')
    found, problems = store.latest()
    assert found is None
    assert problems == [f"{snap.path}: truncated (12 bytes, the JSON object never closes)"]


def test_non_files_are_skipped_and_an_unreadable_file_is_named(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    good = write(store, 1)
    (tmp_path / "000000000002-0000000000001-aaaaaaaa.json").mkdir()  # a directory, not a file
    unreadable = tmp_path / "000000000003-0000000000001-bbbbbbbb.json"
    unreadable.symlink_to(tmp_path / "missing-target")
    found, problems = store.latest()
    assert found == good
    assert problems == []  # a dangling link is not a file: list() leaves it out
    with pytest.raises(SnapshotError, match=r"cannot be read"):
        store.load(unreadable)


@DISK_BOUND
@given(data=st.data(), sections=sections_st)
def test_any_truncation_is_detected(data: st.DataObject, sections: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        good = StateStore(Path(tmp) / "good").write(3, sections, run_id="r", reason="x", now_ms=1)
        raw = good.path.read_bytes()
        cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
        damaged_dir = Path(tmp) / "damaged"
        damaged_dir.mkdir()
        (damaged_dir / good.path.name).write_bytes(raw[:cut])
        found, problems = StateStore(damaged_dir).latest()
        assert found is None
        assert len(problems) == 1
        assert problems[0].startswith(str(damaged_dir / good.path.name))


@DISK_BOUND
@given(data=st.data(), sections=sections_st)
def test_a_flipped_byte_is_detected_or_changes_nothing(
    data: st.DataObject, sections: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        good = store.write(3, sections, run_id="r", reason="x", now_ms=1)
        raw = bytearray(good.path.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
        good.path.write_bytes(bytes(raw))
        found, problems = store.latest()
        if found is None:
            assert len(problems) == 1
        else:  # e.g. "1e+16" -> "1e016": other bytes, the same value
            assert problems == []
            assert same_json(found.sections, good.sections)
            assert (found.snapshot_id, found.journal_seq) == (good.snapshot_id, 3)


# -- pruning -------------------------------------------------------------------------------


def test_only_the_newest_keep_snapshots_remain(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=3)
    written = [write(store, seq) for seq in range(1, 8)]
    assert store.list() == [s.path for s in written[-3:]]
    assert sorted(tmp_path.iterdir()) == [s.path for s in written[-3:]]


def test_pruning_never_deletes_the_snapshot_just_written(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=2)
    write(store, 10)
    write(store, 11)
    late = write(store, 3)  # a lower seq sorts oldest; it must survive its own write
    assert late.path.exists()
    assert len(store.list()) == 3


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be at least 1"):
        StateStore(tmp_path, keep=0)


# -- refused input -------------------------------------------------------------------------

REFUSED: dict[str, tuple[dict[Any, Any], str]] = {
    "decimal": (
        {"ledger": {"positions": [{"qty": Decimal("0.5")}]}},
        r"snapshot section 'ledger'\['positions'\]\[0\]\['qty'\]: Decimal Decimal\('0.5'\) is "
        r"not a JSON value \(store Decimals as strings\)",
    ),
    "nan": ({"risk": {"pnl": math.nan}}, r"section 'risk'\['pnl'\]: nan is not a JSON number"),
    "infinity": ({"risk": [math.inf]}, r"section 'risk'\[0\]: inf is not a JSON number"),
    "set": ({"s": {1, 2}}, r"section 's': set \{1, 2\} is not a JSON value"),
    "bytes": ({"s": {"b": b"x"}}, r"section 's'\['b'\]: bytes b'x' is not a JSON value"),
    "int key": ({"s": {1: "a"}}, r"section 's': key 1 is not a string \(JSON object keys are\)"),
    "object": ({"s": object()}, r"section 's': object .* is not a JSON value"),
    "deep": (
        {"a": [{"b": [1, "x", {"c": [math.nan]}]}]},
        r"section 'a'\[0\]\['b'\]\[2\]\['c'\]\[0\]: nan is not a JSON number",
    ),
    "section name": ({1: {}}, r"snapshot section name 1 is not a string"),
    "lone surrogate": ({"s": "\ud800"}, r"cannot be encoded as JSON"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_non_json_sections_are_refused_and_nothing_is_written(tmp_path: Path, kind: str) -> None:
    sections, message = REFUSED[kind]
    store = StateStore(tmp_path)
    with pytest.raises(SnapshotError, match=message):
        store.write(1, sections, run_id="r", reason="x", now_ms=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"journal_seq": -1}, r"journal_seq must be an integer in 0\.\.999999999999, got -1"),
        ({"journal_seq": 10**12}, r"journal_seq must be an integer"),
        ({"journal_seq": 1.0}, r"journal_seq must be an integer"),
        ({"journal_seq": True}, r"journal_seq must be an integer"),
        ({"now_ms": -5}, r"now_ms must be an integer"),
        ({"run_id": None}, r"run_id must be a string, got NoneType None"),
        ({"reason": 3}, r"reason must be a string"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"journal_seq": 1, "run_id": "r", "reason": "x", "now_ms": 1}
    call.update(arguments)
    seq = call.pop("journal_seq")
    with pytest.raises(SnapshotError, match=message):
        StateStore(tmp_path).write(seq, {}, **call)
    assert list(tmp_path.iterdir()) == []


def test_tuples_are_stored_as_lists(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    write(store, 1, s={"t": (1, "a")})
    found, _ = store.latest()
    assert found is not None
    assert found.sections == {"s": {"t": [1, "a"]}}
