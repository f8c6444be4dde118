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
import functools
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import (
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
    with_config,
)
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict  # pydantic needs it, not typing's, on Python < 3.12

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
# Strict: a bool is not an int or float (JSON true is not 1), an int is a float, None only where annotated.
_STRICT = ConfigDict(strict=True, extra="forbid")


@with_config(ConfigDict(strict=True, extra="allow"))
class _Data(TypedDict):
    """Required keys of ``RunRecord.data`` (extra keys, e.g. ``"location"``, are kept)."""

    source: str
    digits: str
    full_dataset: bool
    n_train: int
    n_val: int
    n_test: int
    checksum: str


@with_config(ConfigDict(strict=True, extra="allow"))
class _Outcomes(TypedDict):
    n: int
    wrong: str


@with_config(ConfigDict(strict=True, extra="allow"))
class _Histogram(TypedDict):
    edges: list[float]
    before: list[int]
    after: list[int]


class RecordError(ValueError):
    """A run record is invalid, or its file is missing, corrupt, half-written or misplaced."""


def _one_line_errors(cls: type) -> type:
    """Make ``cls(...)`` raise :class:`RecordError` with pydantic's first error as one line, not ``ValidationError``."""
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as exc:
            raise RecordError(_first_error(exc)) from exc

    cls.__init__ = __init__
    return cls


@_one_line_errors
@dataclass(frozen=True, config=_STRICT)
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
    data: _Data
    params: int
    iterations: int
    batch_size: int
    wall_time_s: float
    device: str
    git_revision: str
    config_hash: str
    created: str
    deviations: list[str]
    outcomes: _Outcomes | None = None
    pose: dict[str, _Histogram] | None = None

    # Pydantic checks the types above; these validators check what types cannot say. Each raises one line.

    @field_validator("wall_time_s", "metrics", "data", "outcomes", "pose", mode="wrap")
    @classmethod
    def _as_given(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Type-check, but keep the value as given: pydantic would turn ``95`` into ``95.0`` and reorder ``data``."""
        handler(value)
        return value

    @field_validator("suite", "cell")
    @classmethod
    def _folder_name(cls, value: str, info: ValidationInfo) -> str:
        _check_name(info.field_name, value)
        return value

    @field_validator("table", "row", "profile", "device", "git_revision", "config_hash")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            raise ValueError(f"field {info.field_name!r} is empty")
        return value

    @field_validator("seed", "params", "iterations", "batch_size")
    @classmethod
    def _not_negative(cls, value: int, info: ValidationInfo) -> int:
        if value < 0:
            raise ValueError(f"field {info.field_name!r} is {value}; expected a value >= 0")
        return value

    @field_validator("wall_time_s")
    @classmethod
    def _finite_time(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"field 'wall_time_s' is {value!r}; expected a finite value >= 0")
        return value

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in STATUSES:
            raise ValueError(f"field 'status' is {value!r}; expected one of {', '.join(STATUSES)}")
        return value

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, number in (value or {}).items():
            if not math.isfinite(number):
                raise ValueError(
                    f"metric {name!r} is {number!r}; expected a finite number (record a NaN/inf run as 'diverged')"
                )
        return value

    @field_validator("created")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"field 'created' is {value!r}; expected an ISO 8601 time") from None
        return value

    @field_validator("pose")
    @classmethod
    def _histograms(cls, value: dict[str, _Histogram] | None) -> dict[str, _Histogram] | None:
        for name, histogram in (value or {}).items():
            if not len(histogram["before"]) == len(histogram["after"]) == len(histogram["edges"]) - 1:
                raise ValueError(
                    f"field 'pose' [{name!r}] must be {{'edges': [k+1 numbers], 'before'/'after': [k counts]}}"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunRecord:
        if self.status == "diverged" and self.metrics is not None:
            raise ValueError("a diverged run must have metrics None, never numbers")
        if self.status == "finished" and not self.metrics:
            raise ValueError("a finished run needs a non-empty metrics dict")
        if self.canonical and self.overrides:
            raise ValueError("a canonical record has no overrides")
        n_test = self.data["n_test"]
        if self.outcomes is not None and (self.outcomes["n"] < n_test or self.outcomes["n"] % max(n_test, 1)):
            raise ValueError(f"field 'outcomes' must be {{'n': a multiple of n_test ({n_test}), 'wrong': base64}}")
        return self

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
    except RecordError as exc:
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


def _first_error(exc: ValidationError) -> str:
    """Pydantic's first error as one line naming the field, e.g. ``field 'seed' is True; expected a valid integer``."""
    error = exc.errors(include_url=False)[0]
    kind, loc, message = error["type"], error["loc"], error["msg"]
    if kind == "value_error":  # raised by a validator of RunRecord: already one line
        return message.removeprefix("Value error, ")
    if kind == "missing":
        return f"{_field(loc[:-1])} lacks {loc[-1]!r}"
    if message.startswith("Input should be "):
        return f"{_field(loc)} is {error['input']!r}; expected {message.removeprefix('Input should be ')}"
    return f"{_field(loc)}: {message}"  # e.g. an unexpected keyword argument


def _field(loc: tuple[int | str, ...]) -> str:
    """``field 'metrics' ['test/err']`` for pydantic's location ``("metrics", "test/err")``, ``a run record`` for ()."""
    if not loc:
        return "a run record"
    return f"field {loc[0]!r}" + "".join(f" [{key!r}]" for key in loc[1:])


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
