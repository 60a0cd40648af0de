"""The StateStore: atomic, checksummed JSON snapshots of the runtime's state, newest valid wins.

A snapshot is one JSON object in one file::

    {"format": 1, "snapshot_id": ..., "journal_seq": ..., "run_id": ..., "created_ms": ...,
     "reason": ..., "sections": {STATE_KEY: JSON value, ...}, "checksum": SHA256_HEX}

``checksum`` is the SHA-256 of the *canonical JSON* of every other field: keys sorted, no
whitespace, UTF-8, no NaN or infinities. A reader parses the file, drops ``checksum``,
re-canonicalises and compares, so any change to the content is caught, whatever its bytes.
Sections hold plain JSON only (``None``, ``bool``, ``int``, finite ``float``, ``str``, lists,
tuples and objects with string keys); callers store ``Decimal`` values as strings. Anything else
is refused by ``write`` with an error naming the section and where inside it.

**Files.** A snapshot of the journal up to ``journal_seq`` is
``<journal_seq:012d>-<snapshot_id>.json`` and the snapshot id starts with its creation time
(``<created_ms:013d>-<random hex>``), so sorting the names orders the snapshots by journal
position, then by time: the last name is the newest snapshot.

**Atomicity.** ``write`` writes ``.tmp-<snapshot_id>`` in the same directory, flushes and
fsyncs it, renames it over the final name with ``os.replace`` (atomic on POSIX) and fsyncs the
directory so the rename itself survives a power loss. A crash leaves either the whole new
file or none of it, plus at worst a ``.tmp-*`` leftover: readers never look at those, and the
next ``write`` deletes them. A single process writes a directory; readers may be many.

**Reading.** ``latest`` walks the snapshots from the newest and returns the first valid one
together with one message per newer file it had to skip (truncated, not JSON, checksum
mismatch, unknown format, missing or mistyped fields, a name that disagrees with the content),
each naming the file. It never raises for a bad file: recovery falls back to an older
snapshot and replays more of the journal.

**Pruning.** After each write only the newest ``keep`` snapshots stay.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import attrs
import structlog

from planes.storage.journal import make_dir

FORMAT = 1
"""The snapshot format this build writes and reads."""
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"(?P<seq>\d{12})-(?P<id>[0-9A-Za-z][0-9A-Za-z_-]*)\.json")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "snapshot_id": str,
    "journal_seq": int,
    "run_id": str,
    "created_ms": int,
    "reason": str,
    "sections": dict,
    "checksum": str,
}
"""Every field of a format-1 snapshot and the JSON type it must have."""
_MAX_SEQ = 10**12 - 1
"""The largest journal seq the 12-digit file name can hold."""

log = structlog.get_logger("planes.storage.snapshots")


class SnapshotError(Exception):
    """A snapshot could not be written or read; the message names the file and what is wrong."""


@attrs.frozen
class Snapshot:
    """One snapshot: the state ``sections`` as of journal event ``journal_seq``."""

    snapshot_id: str
    journal_seq: int
    run_id: str
    created_ms: int
    reason: str
    sections: Mapping[str, Any]
    path: Path
    size_bytes: int


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, no NaN (what the checksum hashes)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def checksum(document: Mapping[str, Any]) -> str:
    """The SHA-256 hex digest of the canonical JSON of ``document`` without its ``checksum``."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


_PLAIN = frozenset((str, int, bool, type(None)))
"""Values taken as they are, by exact type (the common case; subclasses take the long way)."""


def _signed_json(document: dict[str, Any]) -> bytes:
    """Add ``document``'s ``checksum`` to it; return its canonical JSON, encoding it once.

    The sections (nearly all of the text) are encoded once for both the checksum and the file:
    the rest is encoded with ``"sections":null`` in their place, which no string value can
    contain (canonical JSON escapes the quotes in strings), and the sections' text put there.
    The result is ``canonical_json(document)``, checksum included.
    """
    sections = document["sections"]
    slot, filled = '"sections":null', '"sections":' + canonical_json(sections)
    shell = {key: value for key, value in document.items() if key != "checksum"}
    shell["sections"] = None
    body = canonical_json(shell).replace(slot, filled, 1)
    document["checksum"] = shell["checksum"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return canonical_json(shell).replace(slot, filled, 1).encode("utf-8")


def check_json_value(value: Any, where: str) -> None:
    """Raise ``SnapshotError`` unless ``value`` is plain JSON; ``where`` names it in the error."""
    # An explicit walk rather than json.dumps: its errors do not say where the value was, and
    # it silently turns int keys into strings, which would not read back as written. A path is
    # kept as a chain of (parent, key) links and spelled out only for an error.
    stack: builtins.list[tuple[Any, Any]] = [(value, None)]
    plain = _PLAIN
    while stack:
        item, link = stack.pop()
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    msg = (
                        f"{_spell(where, link)}: key {key!r} is not a string (JSON object keys are)"
                    )
                    raise SnapshotError(msg)
                if type(child) not in plain:
                    stack.append((child, (link, key)))
        elif isinstance(item, builtins.list | tuple):
            for i, child in enumerate(item):
                if type(child) not in plain:
                    stack.append((child, (link, i)))
        elif isinstance(item, float):
            if not math.isfinite(item):
                msg = (
                    f"{_spell(where, link)}: {item!r} is not a JSON number "
                    "(NaN and infinities are refused)"
                )
                raise SnapshotError(msg)
        elif not (item is None or isinstance(item, bool | int | str)):
            hint = " (store Decimals as strings)" if isinstance(item, Decimal) else ""
            msg = f"{_spell(where, link)}: {type(item).__name__} {item!r} is not a JSON value{hint}"
            raise SnapshotError(msg)


def _spell(where: str, link: Any) -> str:
    """The path of ``check_json_value``'s link chain: ``where`` and each key in brackets."""
    keys: builtins.list[object] = []
    while link is not None:
        link, key = link
        keys.append(key)
    return where + "".join(f"[{key!r}]" for key in reversed(keys))


def _require_int(name: str, value: object, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        msg = f"{name} must be an integer in 0..{high}, got {value!r}"
        raise SnapshotError(msg)


def _fsync_directory(directory: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(directory, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    """Snapshots in one directory; see the module docstring."""

    def __init__(self, directory: Path, *, keep: int = 5) -> None:
        if keep < 1:
            msg = f"keep must be at least 1, got {keep}"
            raise ValueError(msg)
        self.directory = Path(directory)
        self.keep = keep

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        journal_seq: int,
        sections: Mapping[str, Any],
        *,
        run_id: str,
        reason: str,
        now_ms: int,
    ) -> Snapshot:
        """Write a snapshot of ``sections`` covering the journal up to ``journal_seq``.

        The file is complete and durable when this returns; older snapshots beyond ``keep``
        are deleted. Raises ``SnapshotError`` for non-JSON sections or a failed write (then no
        snapshot file is left behind).
        """
        _require_int("journal_seq", journal_seq, _MAX_SEQ)
        _require_int("now_ms", now_ms, 10**13 - 1)
        # The annotations are not enforced at run time, and a snapshot written with a field of
        # the wrong type would be refused when read back: refuse it now instead.
        named: tuple[tuple[str, object], ...] = (("run_id", run_id), ("reason", reason))
        for name, text in named:
            if not isinstance(text, str):
                msg = f"{name} must be a string, got {type(text).__name__} {text!r}"
                raise SnapshotError(msg)
        for key, value in cast(Mapping[object, Any], sections).items():
            if not isinstance(key, str):
                msg = f"snapshot section name {key!r} is not a string"
                raise SnapshotError(msg)
            check_json_value(value, f"snapshot section {key!r}")
        snapshot_id = f"{now_ms:013d}-{secrets.token_hex(4)}"
        document: dict[str, Any] = {
            "format": FORMAT,
            "snapshot_id": snapshot_id,
            "journal_seq": journal_seq,
            "run_id": run_id,
            "created_ms": now_ms,
            "reason": reason,
            "sections": dict(sections),
        }
        try:
            data = _signed_json(document)
        except ValueError as exc:  # e.g. an int longer than Python will print
            msg = f"snapshot sections cannot be encoded as JSON: {exc}"
            raise SnapshotError(msg) from exc
        path = self.directory / f"{journal_seq:012d}-{snapshot_id}.json"
        problem = make_dir(self.directory)
        if problem is not None:
            raise SnapshotError(f"no snapshot: {problem}")
        self.clean()
        self._write_atomically(path, self.directory / f"{TMP_PREFIX}{snapshot_id}", data)
        self._prune(keep_path=path)
        log.debug("snapshot_written", path=str(path), journal_seq=journal_seq, size=len(data))
        return Snapshot(
            snapshot_id=snapshot_id,
            journal_seq=journal_seq,
            run_id=run_id,
            created_ms=now_ms,
            reason=reason,
            sections=document["sections"],
            path=path,
            size_bytes=len(data),
        )

    def _write_atomically(self, path: Path, tmp: Path, data: bytes) -> None:
        try:
            with tmp.open("xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_directory(self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            msg = f"{path}: could not write the snapshot: {exc}"
            raise SnapshotError(msg) from exc

    def clean(self) -> builtins.list[Path]:
        """Delete the ``.tmp-*`` files a crashed write left behind; return what was deleted.

        Only the writing process may call this: a reader would race the writer's temp file.
        """
        removed: builtins.list[Path] = []
        if not self.directory.is_dir():
            return removed
        for path in self.directory.iterdir():
            if path.name.startswith(TMP_PREFIX):
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("snapshot_tmp_not_removed", path=str(path), error=str(exc))
                else:
                    removed.append(path)
        if removed:
            log.info("snapshot_tmp_removed", paths=[str(p) for p in removed])
        return removed

    def _prune(self, keep_path: Path) -> None:
        paths = self.list()
        if paths and paths[-1] != keep_path:
            log.warning(
                "snapshot_not_newest",
                path=str(keep_path),
                newest=str(paths[-1]),
                detail="an existing snapshot covers a later journal seq",
            )
        for path in paths[: -self.keep]:
            if path == keep_path:
                continue
            try:
                path.unlink()
            except OSError as exc:
                log.warning("snapshot_not_pruned", path=str(path), error=str(exc))

    # -- reading -------------------------------------------------------------------------

    def list(self) -> builtins.list[Path]:
        """The snapshot files, oldest first (temp files and foreign names are left out)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            (p for p in self.directory.iterdir() if _NAME.fullmatch(p.name) and p.is_file()),
            key=lambda p: p.name,
        )

    def latest(self) -> tuple[Snapshot | None, builtins.list[str]]:
        """The newest valid snapshot (None if there is none) and the problems of newer files.

        Each problem names the file and what is wrong with it; nothing here raises for a bad
        file.
        """
        problems: builtins.list[str] = []
        for path in reversed(self.list()):
            try:
                snapshot = self.load(path)
            except SnapshotError as exc:
                problems.append(str(exc))
                log.warning("snapshot_invalid", path=str(path), problem=str(exc))
            else:
                return snapshot, problems
        return None, problems

    def load(self, path: Path) -> Snapshot:
        """Read and verify one snapshot file; ``SnapshotError`` says what is wrong with it."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            msg = f"{path}: cannot be read: {exc}"
            raise SnapshotError(msg) from exc
        document = _parse(path, data)
        _check_fields(path, document)
        expected = checksum(document)
        if document["checksum"] != expected:
            msg = (
                f"{path}: checksum mismatch (stored {document['checksum'][:16]}..., "
                f"computed {expected[:16]}...): the content was changed or damaged"
            )
            raise SnapshotError(msg)
        match = _NAME.fullmatch(path.name)
        if match is not None and (
            int(match["seq"]) != document["journal_seq"] or match["id"] != document["snapshot_id"]
        ):
            msg = (
                f"{path}: the name says seq {int(match['seq'])} id {match['id']!r}, the content "
                f"says seq {document['journal_seq']} id {document['snapshot_id']!r}"
            )
            raise SnapshotError(msg)
        return Snapshot(
            snapshot_id=document["snapshot_id"],
            journal_seq=document["journal_seq"],
            run_id=document["run_id"],
            created_ms=document["created_ms"],
            reason=document["reason"],
            sections=document["sections"],
            path=path,
            size_bytes=len(data),
        )


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    if not data:
        msg = f"{path}: empty file (the write never completed)"
        raise SnapshotError(msg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{path}: not UTF-8 text (bad byte at offset {exc.start})"
        raise SnapshotError(msg) from None

    def refuse_constant(name: str) -> Any:
        msg = f"{path}: not valid JSON ({name} is not allowed)"
        raise SnapshotError(msg)

    def finite_float(literal: str) -> float:
        number = float(literal)  # "1e999" parses as inf, which the checksum cannot hash
        if not math.isfinite(number):
            msg = f"{path}: not valid JSON ({literal} is out of a float's range)"
            raise SnapshotError(msg)
        return number

    try:
        document = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except json.JSONDecodeError as exc:
        # A complete snapshot is one object, so it ends with "}"; anything else was cut short.
        if not text.rstrip().endswith("}"):
            msg = f"{path}: truncated ({len(data)} bytes, the JSON object never closes)"
        else:
            msg = f"{path}: not valid JSON ({exc.msg} at offset {exc.pos})"
        raise SnapshotError(msg) from None
    except (ValueError, RecursionError) as exc:  # over-long integers, absurd nesting
        msg = f"{path}: not valid JSON ({exc})"
        raise SnapshotError(msg) from None
    if not isinstance(document, dict):
        msg = f"{path}: not a snapshot (the JSON is a {type(document).__name__}, not an object)"
        raise SnapshotError(msg)
    return document


def _check_fields(path: Path, document: dict[str, Any]) -> None:
    fmt = document.get("format")
    if fmt != FORMAT or isinstance(fmt, bool):
        msg = f"{path}: unknown snapshot format {fmt!r} (this build reads format {FORMAT})"
        raise SnapshotError(msg)
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        msg = f"{path}: missing field(s) {', '.join(missing)}"
        raise SnapshotError(msg)
    extra = sorted(set(document) - set(_FIELDS))
    if extra:
        msg = f"{path}: unexpected field(s) {', '.join(extra)}"
        raise SnapshotError(msg)
    for name, kind in _FIELDS.items():
        value = document[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            msg = f"{path}: field {name!r} has the wrong type ({type(value).__name__} {value!r})"
            raise SnapshotError(msg)
    for name in ("journal_seq", "created_ms"):
        if document[name] < 0:
            msg = f"{path}: field {name!r} is negative ({document[name]})"
            raise SnapshotError(msg)
