"""Run records: one small JSON file per finished run, ``<runs_root>/<suite>/<cell>/seed<seed>-<config_hash>.json``.

A record says what was run (suite, cell, the paper's table / row / column it reproduces, seed, profile, the
overrides that differ from the cell's experiment and whether it is the suite's canonical run of that cell), what
came out (``status`` and ``metrics``), on which data (source, counts, checksum) and how (parameter count,
iterations, batch size, wall time, device, git revision, config hash), and every deviation from the paper's
protocol. Keyed by seed and config hash (:mod:`stn_repro.identity`), runs that differ in anything that determines
their result never share a file, and a record is never overwritten: :func:`write_record` refuses an existing file
and a forced re-run first moves the old record into ``<cell>/replaced/`` (:func:`archive_record`).

A run whose loss became NaN / inf is recorded with ``status="diverged"`` and ``metrics=None``: a diverged run
never turns into a number. Files are written atomically (temporary file in the same folder, then ``os.replace``),
so a crash leaves either the old record or the new one; a corrupt or invalid file is reported, never skipped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stn_repro.utils import atomic_path

__all__ = [
    "RECORD_FORMAT_VERSION",
    "STATUSES",
    "RecordError",
    "RunRecord",
    "archive_record",
    "find_record",
    "load_records",
    "read_record",
    "record_path",
    "write_record",
]

#: Stored as ``record_format`` in every file; bump when a field changes meaning.
RECORD_FORMAT_VERSION = 2
STATUSES = ("finished", "diverged")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
_RECORD_FILE = re.compile(r"seed(\d+)-([0-9a-f]{16})\.json")
# Required keys of RunRecord.data and their types (extra keys, e.g. "location", are kept).
_DATA_FIELDS: dict[str, type | tuple[type, ...]] = {
    "source": str,
    "digits": str,
    "full_dataset": bool,
    "n_train": int,
    "n_val": int,
    "n_test": int,
    "checksum": str,
}


class RecordError(ValueError):
    """A run record is invalid, or its file is missing, corrupt, half-written or misplaced."""


@dataclass(frozen=True)
class RunRecord:
    """The outcome and provenance of one training run (one cell of a table, one seed).

    Attributes:
        suite: suite name, e.g. ``"table1"`` or ``"cluttered"`` (a folder name).
        cell: cell name within the suite, e.g. ``"st_cnn_aff_rts"`` (a folder name).
        table: key of the paper's table in ``reference.yaml``, e.g. ``"table1_distorted_mnist"``.
        row: the paper's row label, e.g. ``"ST-CNN Aff"``.
        column: the paper's column label, e.g. ``"RTS"``; ``None`` for single-column tables.
        seed: the run's seed (``>= 0``).
        profile: training profile, e.g. ``"quick"`` or ``"paper"``.
        overrides: ``key=value`` for every result-determining value that differs from the cell's experiment under
            its profile (:func:`stn_repro.identity.protocol_overrides`); ``[]`` for an unmodified cell.
        canonical: the suite's own run of this cell (``<suite>/<cell>`` is an experiment and nothing differs);
            only canonical records make the committed tables.
        status: ``"finished"`` or ``"diverged"``.
        metrics: final metrics by name, e.g. ``{"test/err": 1.2}`` (error in percent, like the paper); ``None``
            exactly when the run diverged.
        data: the digits used: ``source``, ``digits``, ``full_dataset``, ``n_train``, ``n_val``, ``n_test``,
            ``checksum`` (more keys allowed).
        params: number of model parameters.
        iterations: optimiser steps taken.
        batch_size: training batch size.
        wall_time_s: training wall time in seconds.
        device: e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``.
        git_revision: short commit hash, with ``"+dirty"`` for uncommitted changes, or ``"unknown"``.
        config_hash: hash of the resolved run configuration (a changed config means a stale record).
        created: ISO 8601 time the record was written.
        deviations: free-text deviations from the paper's protocol for this run.
        outcomes: which test items the run got wrong, in test-set order (:func:`stn_repro.results.stats.pack_outcomes`:
            ``{"n": N, "wrong": base64}``), for paired tests between models: one per test image (``N = n_test``), or
            one per digit of each test sequence where the metric is per digit (``N = L · n_test``, sample-major);
            ``None`` where the task does not say per item, for a diverged run, or in records made before this field
            existed (it may be absent).
        pose: claim 6's histograms of the test digits' rotation (degrees) and log scale before / after the input
            transformer (:func:`stn_repro.results.pose.pose_metrics`: ``{"angle_deg" | "log_scale": {"edges",
            "before", "after"}}``); ``None`` for models without one, off R / RTS, or in older records.
    """

    suite: str
    cell: str
    table: str
    row: str
    column: str | None
    seed: int
    profile: str
    overrides: list[str]
    canonical: bool
    status: str
    metrics: dict[str, float] | None
    data: dict[str, Any]
    params: int
    iterations: int
    batch_size: int
    wall_time_s: float
    device: str
    git_revision: str
    config_hash: str
    created: str
    deviations: list[str]
    outcomes: dict[str, Any] | None = None
    pose: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy, with ``record_format`` first."""
        return {"record_format": RECORD_FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """Record from :meth:`to_dict` output; ``record_format`` may be omitted (current format assumed).

        Raises:
            RecordError: missing, unknown or ill-typed fields, or inconsistent values.
        """
        if not isinstance(values, dict):
            raise RecordError(f"a run record must be a JSON object, not {type(values).__name__}")
        values = dict(values)
        version = values.pop("record_format", RECORD_FORMAT_VERSION)
        if version != RECORD_FORMAT_VERSION:
            raise RecordError(f"record_format is {version!r}, this code reads {RECORD_FORMAT_VERSION}")
        names = [field.name for field in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        unknown = sorted(set(values) - set(names))
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else []
            )
            raise RecordError(f"run record fields: {'; '.join(problems)}")
        return cls(**values)


def run_key(seed: int, config_hash: str) -> str:
    """``seed<seed>-<config_hash>``: the name of a run's record (``.json``) and of its other files."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecordError(f"seed must be an integer >= 0, not {seed!r}")
    if not re.fullmatch(r"[0-9a-f]{16}", str(config_hash)):
        raise RecordError(f"config hash {config_hash!r} is not 16 hex digits")
    return f"seed{seed}-{config_hash}"


def record_path(runs_root: str | Path, suite: str, cell: str, seed: int, config_hash: str) -> Path:
    """``<runs_root>/<suite>/<cell>/seed<seed>-<config_hash>.json``; ``suite`` / ``cell`` use letters, digits,
    ``._-``."""
    for what, name in (("suite", suite), ("cell", cell)):
        _check_name(what, name)
    return Path(runs_root).expanduser() / suite / cell / f"{run_key(seed, config_hash)}.json"


def write_record(runs_root: str | Path, record: RunRecord) -> Path:
    """Atomically write ``record`` to :func:`record_path`; returns the path. Never replaces a record: move the
    old one aside first (:func:`archive_record`).

    Raises:
        RecordError: a record is already there.
        OSError: the folder cannot be created or written; no temporary file is left behind.
    """
    path = record_path(runs_root, record.suite, record.cell, record.seed, record.config_hash)
    text = json.dumps(record.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
        if path.exists():
            raise RecordError(f"{path}: a record is already there; it is kept (re-run with rerun=true to replace it)")
    return path


def archive_record(path: str | Path, why: str) -> Path:
    """Move the record file ``path`` to ``<cell>/replaced/<name>.<why>-<UTC time>.json``, where no table reads it;
    returns the new path."""
    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.parent / "replaced" / f"{path.stem}.{why}-{stamp}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def read_record(path: str | Path) -> RunRecord:
    """The record stored in ``path``.

    Raises:
        RecordError: the file is missing, unreadable, not valid JSON (e.g. half-written) or not a valid record;
            the one-line message names the file and says to delete it.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no such run record") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: unreadable or corrupt run record ({_one_line(exc)}); {_DELETE_HINT}") from exc
    try:
        return RunRecord.from_dict(values)
    except (RecordError, TypeError) as exc:
        raise RecordError(f"{path}: invalid run record ({_one_line(exc)}); {_DELETE_HINT}") from exc


def load_records(runs_root: str | Path, suite: str) -> list[RunRecord]:
    """Every record of ``suite`` under ``runs_root``, sorted by cell and seed; ``[]`` if the suite has no folder.

    Every ``*.json`` file in ``<runs_root>/<suite>/<cell>/`` must be a valid record named
    ``seed<N>-<config_hash>.json`` whose suite, cell, seed and hash match its location: nothing is skipped silently
    (``<cell>/replaced/`` holds records replaced by forced re-runs and is not read).

    Raises:
        RecordError: an invalid, corrupt, misnamed or misplaced file (the message names it).
    """
    _check_name("suite", suite)
    folder = Path(runs_root).expanduser() / suite
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*/*.json")):
        match = _RECORD_FILE.fullmatch(path.name)
        if match is None:
            raise RecordError(f"{path}: not a run record name (expected seed<N>-<config hash>.json); move or delete it")
        records.append(_read_in_place(path, suite, path.parent.name, int(match.group(1)), match.group(2)))
    return sorted(records, key=lambda record: (record.cell, record.seed))


def find_record(runs_root: str | Path, suite: str, cell: str, seed: int, config_hash: str) -> RunRecord | None:
    """The record of ``suite`` / ``cell`` / ``seed`` made with ``config_hash``, or ``None`` when there is none.

    Raises:
        RecordError: the file exists but is corrupt, invalid or misplaced.
    """
    path = record_path(runs_root, suite, cell, seed, config_hash)
    if not path.is_file():
        return None
    return _read_in_place(path, suite, cell, seed, config_hash)


_DELETE_HINT = "delete it to re-run that cell"


def _read_in_place(path: Path, suite: str, cell: str, seed: int, config_hash: str) -> RunRecord:
    record = read_record(path)
    found = (record.suite, record.cell, record.seed, record.config_hash)
    if found != (suite, cell, seed, config_hash):
        raise RecordError(
            f"{path}: holds suite/cell/seed/hash {'/'.join(map(str, found))}, not "
            f"{suite}/{cell}/{seed}/{config_hash} as its location says (moved or copied by hand?); {_DELETE_HINT}"
        )
    return record


def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise RecordError(f"{what} {name!r} must be a folder name of letters, digits, '.', '_' and '-'")


def _validate(record: RunRecord) -> None:
    """Raise :class:`RecordError` naming the first field of ``record`` that is ill-typed or inconsistent."""
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        expected = _FIELD_TYPES[field.name]
        if not _is_instance(value, expected):
            raise RecordError(f"field {field.name!r} is {value!r}; expected {_type_names(expected)}")
    _check_name("suite", record.suite)
    _check_name("cell", record.cell)
    for name in ("table", "row", "profile", "device", "git_revision", "config_hash"):
        if not getattr(record, name):
            raise RecordError(f"field {name!r} is empty")
    for name in ("seed", "params", "iterations", "batch_size"):
        if getattr(record, name) < 0:
            raise RecordError(f"field {name!r} is {getattr(record, name)}; expected a value >= 0")
    if not math.isfinite(record.wall_time_s) or record.wall_time_s < 0:
        raise RecordError(f"field 'wall_time_s' is {record.wall_time_s!r}; expected a finite value >= 0")
    if record.status not in STATUSES:
        raise RecordError(f"field 'status' is {record.status!r}; expected one of {', '.join(STATUSES)}")
    if record.status == "diverged" and record.metrics is not None:
        raise RecordError("a diverged run must have metrics None, never numbers")
    if record.status == "finished":
        if not record.metrics:
            raise RecordError("a finished run needs a non-empty metrics dict")
        for name, value in record.metrics.items():
            if not isinstance(name, str) or not _is_instance(value, (int, float)) or not math.isfinite(value):
                raise RecordError(
                    f"metric {name!r} is {value!r}; expected a finite number (record a NaN/inf run as 'diverged')"
                )
    for key, expected in _DATA_FIELDS.items():
        if key not in record.data:
            raise RecordError(f"field 'data' lacks {key!r} (needs {', '.join(_DATA_FIELDS)})")
        if not _is_instance(record.data[key], expected):
            raise RecordError(f"data[{key!r}] is {record.data[key]!r}; expected {_type_names(expected)}")
    for name in ("deviations", "overrides"):
        if not all(isinstance(item, str) for item in getattr(record, name)):
            raise RecordError(f"field {name!r} must be a list of strings")
    if record.canonical and record.overrides:
        raise RecordError("a canonical record has no overrides")
    if record.outcomes is not None:
        n, wrong = record.outcomes.get("n"), record.outcomes.get("wrong")
        n_test = record.data["n_test"]
        if not _is_instance(n, int) or n < n_test or n % max(n_test, 1) or not isinstance(wrong, str):
            raise RecordError(f"field 'outcomes' must be {{'n': a multiple of n_test ({n_test}), 'wrong': base64}}")
    for name, histogram in (record.pose or {}).items():
        edges, before, after = (histogram.get(k) if isinstance(histogram, dict) else None for k in _POSE_KEYS)
        if not (isinstance(edges, list) and isinstance(before, list) and isinstance(after, list)) or not (
            len(before) == len(after) == len(edges) - 1 and all(_is_instance(c, int) for c in before + after)
        ):
            raise RecordError(
                f"field 'pose' [{name!r}] must be {{'edges': [k+1 numbers], 'before'/'after': [k counts]}}"
            )
    try:
        datetime.fromisoformat(record.created)
    except ValueError as exc:
        raise RecordError(f"field 'created' is {record.created!r}; expected an ISO 8601 time") from exc


_POSE_KEYS = ("edges", "before", "after")
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "suite": str,
    "cell": str,
    "table": str,
    "row": str,
    "column": (str, type(None)),
    "seed": int,
    "profile": str,
    "overrides": list,
    "canonical": bool,
    "status": str,
    "metrics": (dict, type(None)),
    "data": dict,
    "params": int,
    "iterations": int,
    "batch_size": int,
    "wall_time_s": (int, float),
    "device": str,
    "git_revision": str,
    "config_hash": str,
    "created": str,
    "deviations": list,
    "outcomes": (dict, type(None)),
    "pose": (dict, type(None)),
}


def _is_instance(value: object, expected: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that a bool is not accepted as an int or float (JSON true is not 1)."""
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("None" if kind is type(None) else kind.__name__ for kind in types)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
