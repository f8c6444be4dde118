"""The per-cell numbers of a suite's table: its records checked, grouped by paper cell and summarised over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from stn_repro.results.records import RunRecord
from stn_repro.results.reference import load_reference, paper_value, table_columns, table_rows
from stn_repro.results.stats import wilson_interval
from stn_repro.utils import shorten

__all__ = [
    "MISSING",
    "NOT_RUN",
    "PERCENT_OF_TEST_IMAGES",
    "CellSummary",
    "TableError",
    "check_records",
    "default_metric",
    "distinct",
    "format_cell",
    "summarise_cells",
]

MISSING = "—"
NOT_RUN = "not run"
#: Metrics that are a percentage of the test images (they get a Wilson interval).
PERCENT_OF_TEST_IMAGES = ("test/err", "test/acc", "test/localised")


class TableError(ValueError):
    """The records cannot be tabulated together (mixed profiles / data, duplicates, unknown cells, no records)."""


@dataclass(frozen=True)
class CellSummary:
    """One cell of a paper table and the runs that reproduce it.

    Attributes:
        row, column: the paper's labels (``column`` is ``None`` for single-column tables).
        paper: the published number, or ``None`` where the paper has none.
        records: this cell's runs, sorted by seed (empty for a cell nobody ran).
        values: the metric of each finished run, in seed order (diverged runs excluded).
        interval: the 95% Wilson interval (percent) of the metric over the finished runs' test images pooled
            (``values`` are percentages of ``n_test`` images), or ``None`` (another metric, nothing finished).
    """

    row: str
    column: str | None
    paper: float | None
    records: tuple[RunRecord, ...]
    values: tuple[float, ...]
    interval: tuple[float, float] | None = None

    @property
    def cell(self) -> str | None:
        """The runs' cell name, or ``None`` for a cell without runs."""
        return self.records[0].cell if self.records else None

    @property
    def n_seeds(self) -> int:
        """Seeds run, diverged ones included."""
        return len(self.records)

    @property
    def n_diverged(self) -> int:
        return sum(record.status == "diverged" for record in self.records)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1) over the finished seeds; ``None`` with fewer than two."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    @property
    def status(self) -> str:
        """``finished`` (at least one seed finished), ``diverged`` (all seeds diverged) or ``not run``."""
        if not self.records:
            return NOT_RUN
        return "finished" if self.values else "diverged"

    @property
    def diff(self) -> float | None:
        """``mean − paper`` rounded to 2 decimals (``None`` if either is missing)."""
        if self.mean is None or self.paper is None:
            return None
        return round(self.mean - self.paper, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def default_metric(table: str) -> str:
    """The recorded metric that matches the paper's: ``test/acc`` for accuracy tables, ``test/localised`` for
    co-localisation, else ``test/err``."""
    kind = load_reference()[table].get("metric")
    return {"accuracy_pct": "test/acc", "localised_pct": "test/localised"}.get(kind, "test/err")


def summarise_cells(records: Sequence[RunRecord], metric: str = "test/err") -> tuple[str, list[CellSummary]]:
    """``(table key, summaries of every cell of that table in the paper's order)`` after checking the records.

    Raises:
        TableError: no records; records of several suites or tables; an unknown table, row or column; one cell
            name used for two paper cells (or two names for one); a repeated seed; mixed profiles, data sources
            or data checksums; a finished run without ``metric``.
    """
    table = check_records(records)
    by_cell: dict[tuple[str, str | None], list[RunRecord]] = {}
    for record in records:
        by_cell.setdefault((record.row, record.column), []).append(record)
    summaries = []
    for row in table_rows(table):
        for column in table_columns(table):
            runs = tuple(sorted(by_cell.get((row, column), []), key=lambda record: record.seed))
            values = tuple(float(_metric(record, metric)) for record in runs if record.status == "finished")
            interval = _pooled_interval(runs, values) if metric in PERCENT_OF_TEST_IMAGES else None
            summaries.append(CellSummary(row, column, paper_value(table, row, column), runs, values, interval))
    return table, summaries


def _pooled_interval(runs: Sequence[RunRecord], values: Sequence[float]) -> tuple[float, float] | None:
    """The Wilson interval of the finished runs' test images pooled: ``values[i]`` percent of run i's ``n_test``."""
    finished = [record for record in runs if record.status == "finished"]
    if not finished:
        return None
    n = sum(record.data["n_test"] for record in finished)
    hits = sum(round(value * record.data["n_test"] / 100) for value, record in zip(values, finished, strict=True))
    return wilson_interval(hits, n)


def format_cell(summary: CellSummary) -> str:
    """``paper / ours ± std [low, high] (diff)``, e.g. ``1.2 / 2.00 ± 1.00 [1.6, 2.5] (+0.80)``: ``±`` the
    standard deviation over seeds (none for one seed), ``[low, high]`` the 95% Wilson interval over the test images;
    ``1.2 / —`` when nothing ran; diverged seeds as ``diverged (k/n)``, after the mean of the others or alone."""
    paper = MISSING if summary.paper is None else f"{summary.paper:g}"
    if not summary.records:
        return f"{paper} / {MISSING}"
    parts = []
    if summary.mean is not None:
        ours = f"{summary.mean:.2f}"
        if summary.std is not None:
            ours += f" ± {summary.std:.2f}"
        if summary.interval is not None:
            ours += f" [{summary.interval[0]:.1f}, {summary.interval[1]:.1f}]"
        if summary.diff is not None:
            ours += f" ({summary.diff:+.2f})"
        parts.append(ours)
    if summary.n_diverged:
        parts.append(f"diverged ({summary.n_diverged}/{summary.n_seeds})")
    return f"{paper} / {', '.join(parts)}"


def distinct(values: Iterable[object], sep: str = ", ", thousands: bool = False) -> str:
    """The distinct ``values`` in first-seen order, joined by ``sep`` (ints as ``1,000`` when ``thousands``)."""
    unique = dict.fromkeys(values)
    return sep.join(f"{value:,}" if thousands and isinstance(value, int) else str(value) for value in unique)


# --- checks -----------------------------------------------------------------------------------------------------


def check_records(records: Sequence[RunRecord]) -> str:
    """The table key shared by ``records``, after every consistency check (see :func:`summarise_cells`)."""
    if not records:
        raise TableError("no run records to tabulate; run the suite first")
    suite = records[0].suite
    _check_same(records, "suite", lambda r: r.suite, f"records of suite {suite!r}", _cells, "pass one suite's records")
    _check_same(records, "table", lambda r: r.table, f"suite {suite!r}", _cells, "give each suite one paper table")
    table = records[0].table
    reference = load_reference()
    if table not in reference:
        raise TableError(f"suite {suite!r}: unknown paper table {table!r}; known: {', '.join(reference)}")
    rows, columns = table_rows(table), table_columns(table)
    cells: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.row not in rows or record.column not in columns:
            raise TableError(
                f"suite {suite!r}, cell {record.cell!r}: {table} has no row {record.row!r} / column "
                f"{record.column!r} (rows: {', '.join(rows)}; columns: {', '.join(map(str, columns))}); fix the "
                "experiment's row/column labels and re-run that cell"
            )
        cells.setdefault(record.cell, []).append(record)
    owners: dict[tuple[str, str | None], str] = {}
    for cell, runs in cells.items():
        _check_same(runs, "paper cell", _paper_cell, f"suite {suite!r}, cell {cell!r}", _seeds, _STALE_HINT)
        key = (runs[0].row, runs[0].column)
        if key in owners:
            raise TableError(
                f"suite {suite!r}: cells {owners[key]!r} and {cell!r} both claim {_paper_cell(runs[0])}; "
                "remove the stale one"
            )
        owners[key] = cell
        seeds = [record.seed for record in runs]
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise TableError(
                f"suite {suite!r}, cell {cell!r}: seed {', '.join(map(str, repeated))} appears twice; "
                "pass each run record once"
            )
    for what, value_of, hint in _UNIFORM:
        for cell, runs in cells.items():
            _check_same(runs, what, value_of, f"suite {suite!r}, cell {cell!r}", _seeds, hint.format(suite=suite))
        _check_same(records, what, value_of, f"suite {suite!r}", _cells, hint.format(suite=suite))
    return table


_STALE_HINT = "delete the stale records of that cell and re-run it"
_MIX_HINT = "remove the odd records (or all of results/runs/{suite}) and re-run them"
# Values that must be the same for every record of a table: (what, value, what to do).
_UNIFORM: tuple[tuple[str, Callable[[RunRecord], object], str], ...] = (
    ("profile", lambda r: r.profile, _MIX_HINT + ", or pass --profile to tabulate one profile"),
    ("data source", lambda r: r.data["source"], _MIX_HINT + " on one data source"),
    ("data checksum", lambda r: r.data["checksum"], _MIX_HINT + " on the same digits"),
)


def _check_same(
    records: Iterable[RunRecord],
    what: str,
    value_of: Callable[[RunRecord], object],
    scope: str,
    units: Callable[[list[RunRecord]], str],
    hint: str,
) -> None:
    groups: dict[object, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(value_of(record), []).append(record)
    if len(groups) > 1:
        mixed = " and ".join(f"{value!r} ({units(runs)})" for value, runs in groups.items())
        raise TableError(f"{scope} mixes {what} values {mixed}; {hint}")


def _cells(records: list[RunRecord]) -> str:
    return shorten("cells " + ", ".join(dict.fromkeys(record.cell for record in records)), 120)


def _seeds(records: list[RunRecord]) -> str:
    return "seed" + ("s " if len(records) > 1 else " ") + ", ".join(str(record.seed) for record in records)


def _paper_cell(record: RunRecord) -> str:
    return f"{record.table} {record.row!r}" + ("" if record.column is None else f" / {record.column!r}")


def _metric(record: RunRecord, metric: str) -> float:
    assert record.metrics is not None  # finished records always have metrics
    if metric not in record.metrics:
        raise TableError(
            f"suite {record.suite!r}, cell {record.cell!r}, seed {record.seed}: no metric {metric!r} (it has "
            f"{', '.join(record.metrics)}); pass --metric with one of those"
        )
    return record.metrics[metric]
