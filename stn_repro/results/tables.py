"""Tables and figures comparing the runs of one suite with the paper's published numbers.

``build_tables(records, out_dir)`` writes, for the records of one suite (e.g. ``table1``):

- ``<out>/<stem>.md``: header (profile, data, seeds, iterations, generation time, a loud warning when the data is
  not the full dataset), the table in the paper's layout with cells ``paper / ours ± std (ours − paper)``, a
  provenance table (one line per cell) and the deviations from the paper's protocol;
- ``<out>/<stem>.csv``: the same numbers in long format, one row per cell of the paper's table;
- ``<out>/figures/<suite>_vs_paper.png``: ours vs paper per cell, error bars = std over seeds.

``<stem>`` is the suite name when it starts with ``table`` (``table1``), else the paper's table number
(``table2_svhn`` → ``table2``), else ``table_<suite>`` (``table_cluttered``); the recurrent STN's table is
``rnn_spn``. Means use the finished seeds only;
diverged seeds are counted and shown, never averaged. Records that mix profiles, data sources or data checksums are
refused. The compared metric follows the paper's (:func:`default_metric`): ``test/acc``, ``test/localised`` or
``test/err``; other
metrics a run recorded (e.g. ``test/crop_in_box``, ``train/step_ms``) are listed per cell below the table.

A suite that could not run at all (its data is missing) still gets its table: :func:`build_not_run_tables` writes
every cell as ``not run`` with the reason.

Command line: ``python -m stn_repro.results.tables --runs results/runs --suite table1 --out results``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stn_repro.results.records import RecordError, RunRecord, load_records
from stn_repro.results.reference import load_reference, paper_value, table_columns, table_rows
from stn_repro.results.stats import wilson_interval
from stn_repro.utils import atomic_path, shorten

__all__ = [
    "CSV_FIELDS",
    "CellSummary",
    "TableError",
    "build_not_run_tables",
    "build_tables",
    "default_metric",
    "format_cell",
    "main",
    "summarise_cells",
    "table_paths",
]

CSV_FIELDS = (
    "table",
    "row",
    "column",
    "paper",
    "mean",
    "std",
    "n_seeds",
    "n_diverged",
    "diff",
    "ci_low",
    "ci_high",
    "n_test",
    "params",
    "iterations",
    "profile",
    "source",
    "n_train",
    "full_dataset",
    "git_revision",
    "status",
)
MISSING = "—"
NOT_RUN = "not run"
#: Metrics that are a percentage of the test images (they get a Wilson interval).
PERCENT_OF_TEST_IMAGES = ("test/err", "test/acc", "test/localised")
_TITLES = {
    "table1_distorted_mnist": "Table 1: distorted MNIST",
    "translated_cluttered_mnist": "Translated cluttered MNIST (60×60, section 4.1)",
    "table2_svhn": "Table 2: SVHN multi-digit",
    "table3_cub": "Table 3: CUB-200-2011",
    "table4_mnist_addition": "MNIST addition (appendix A.1)",
    "co_localisation": "Co-localisation (appendix A.2)",
    "mnist_3d": "3D transformers on extruded MNIST (appendix A.3)",
    "recurrent_stn_mnist_sequences": "Recurrent STN on 3-digit cluttered sequences (Sønderby et al. 2015)",
}
_METRIC_LABELS = {
    "error_pct": "error %",
    "sequence_error_pct": "sequence error %",
    "accuracy_pct": "accuracy %",
    "localised_pct": "localised % (IoU > 0.5)",
}
_STEMS = {"recurrent_stn_mnist_sequences": "rnn_spn"}  # file names the docs promise


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


def table_paths(suite: str, table: str, out_dir: str | Path) -> dict[str, Path]:
    """``{"markdown", "csv", "figure"}`` output paths of a suite's table (see the module docstring for the stem)."""
    number = re.match(r"table(\d+)_", table)
    stem = suite if suite.startswith("table") else f"table{number.group(1)}" if number else f"table_{suite}"
    stem = _STEMS.get(table, stem)
    out_dir = Path(out_dir)
    return {
        "markdown": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "figure": out_dir / "figures" / f"{suite}_vs_paper.png",
    }


def summarise_cells(records: Sequence[RunRecord], metric: str = "test/err") -> tuple[str, list[CellSummary]]:
    """``(table key, summaries of every cell of that table in the paper's order)`` after checking the records.

    Raises:
        TableError: no records; records of several suites or tables; an unknown table, row or column; one cell
            name used for two paper cells (or two names for one); a repeated seed; mixed profiles, data sources
            or data checksums; a finished run without ``metric``.
    """
    table = _check_records(records)
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


def build_tables(records: Sequence[RunRecord], out_dir: str | Path, metric: str | None = None) -> dict[str, Path]:
    """Write the Markdown table, CSV and figure of one suite's records; returns their paths.

    Args:
        records: the run records of one suite (e.g. from :func:`~stn_repro.results.records.load_records`).
        out_dir: folder for ``<stem>.md`` and ``<stem>.csv``; the figure goes to ``out_dir/figures/``.
        metric: the metric compared with the paper, in the paper's unit (percent); ``None``:
            :func:`default_metric` of the records' table.

    Returns:
        ``{"markdown": path, "csv": path, "figure": path}``.

    Raises:
        TableError: see :func:`summarise_cells`.
    """
    if metric is None:
        metric = default_metric(_check_records(records))
    table, summaries = summarise_cells(records, metric)
    suite = records[0].suite
    paths = table_paths(suite, table, out_dir)
    paths["figure"].parent.mkdir(parents=True, exist_ok=True)
    generated = max(record.created for record in records)  # from the records: a rebuild is byte for byte the same
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(_markdown(table, suite, summaries, records, metric, generated), encoding="utf-8")
    with atomic_path(paths["csv"]) as tmp:
        _write_csv(tmp, table, summaries)
    with atomic_path(paths["figure"]) as tmp:
        _plot(tmp, table, suite, summaries, records, metric)
    return paths


def build_not_run_tables(
    suite: str, table: str, cells: Mapping[str, tuple[str, str | None]], reason: str, out_dir: str | Path
) -> dict[str, Path]:
    """Write the Markdown table and CSV of a suite none of whose cells could run (e.g. its data is missing).

    Args:
        suite: the suite's name.
        table: its paper table.
        cells: ``{cell name: (row, column)}`` of the suite's cells; they read ``paper / not run``, the other rows
            of the paper's table (other methods) ``paper / —``.
        reason: why nothing ran, printed above the table.
        out_dir: see :func:`build_tables`.

    Returns ``{"markdown": path, "csv": path}``. A figure of earlier runs is removed: it would not match the table.
    A table built from runs is never replaced: then nothing is written and ``{}`` is returned.
    """
    paths = table_paths(suite, table, out_dir)
    if paths["markdown"].is_file() and _NOT_RUN_BANNER not in paths["markdown"].read_text(encoding="utf-8"):
        return {}
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    ours = set(cells.values())
    summaries = [
        CellSummary(row, column, paper_value(table, row, column), (), ())
        for row in table_rows(table)
        for column in table_columns(table)
    ]
    columns = table_columns(table)
    header = ["model", *(_metric_label(table) if column is None else column for column in columns)]
    lines = [f"# {_title(table)}: ours vs paper", ""]
    lines += [
        f"Suite `{suite}`: **{NOT_RUN}** ({len(cells)} cells: {', '.join(f'`{cell}`' for cell in cells)}). Each "
        f"cell: `paper / ours`; `{MISSING}`: a row of the paper this suite does not reproduce.",
        "",
        f"{_NOT_RUN_BANNER} {reason}",
        "",
        f"- Generated: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        _md_row(header),
        _md_row(["---"] * len(header)),
    ]
    for row in table_rows(table):
        texts = []
        for summary in (s for s in summaries if s.row == row):
            paper = MISSING if summary.paper is None else f"{summary.paper:g}"
            texts.append(f"{paper} / {NOT_RUN if (row, summary.column) in ours else MISSING}")
        lines.append(_md_row([row, *texts]))
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_path(paths["csv"]) as tmp:
        _write_csv(tmp, table, [s for s in summaries if (s.row, s.column) in ours])
    paths.pop("figure").unlink(missing_ok=True)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the tables of one suite from its run records; exit status 2 on a readable error."""
    parser = argparse.ArgumentParser(
        prog="python -m stn_repro.results.tables", description="Tabulate a suite's run records next to the paper."
    )
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="run records root (results/runs)")
    parser.add_argument("--suite", required=True, help="suite to tabulate, e.g. table1 or cluttered")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (results)")
    parser.add_argument("--metric", help="metric compared with the paper (default: test/acc or test/err, as the paper)")
    parser.add_argument("--profile", help="use only the records of this profile (e.g. quick or paper)")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.runs, args.suite)
        variants = [f"{r.cell} seed {r.seed}" for r in records if not r.canonical]
        if variants:
            raise TableError(
                f"{args.runs / args.suite} holds variant records ({shorten(', '.join(variants), 120)}): committed "
                "tables come from canonical runs only; move them to paths.variants"
            )
        if args.profile is not None:
            records = [record for record in records if record.profile == args.profile]
        if not records:
            which = f" with profile {args.profile!r}" if args.profile else ""
            raise TableError(f"no run records{which} in {args.runs / args.suite}; run the {args.suite} suite first")
        paths = build_tables(records, args.out, args.metric)
    except (RecordError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(f"wrote {path}")
    return 0


# --- checks -----------------------------------------------------------------------------------------------------


def _check_records(records: Sequence[RunRecord]) -> str:
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


_NOT_RUN_BANNER = "> **Not run:**"
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


# --- markdown ---------------------------------------------------------------------------------------------------


def _markdown(
    table: str,
    suite: str,
    summaries: list[CellSummary],
    records: Sequence[RunRecord],
    metric: str,
    generated: str,
) -> str:
    metric_label = _metric_label(table)
    lines = [f"# {_title(table)}: ours vs paper", ""]
    lines += [
        f"Suite `{suite}`, {len(records)} run records; metric `{metric}` ({metric_label}). Each cell: "
        "`paper / ours ± std over seeds [95% Wilson interval over the test images] (ours − paper)`; "
        f"`diverged (k/n)`: k of n seeds diverged (NaN/inf) and are left out of the mean; `{MISSING}`: not run.",
        "",
    ]
    lines += _header(records, summaries, generated)
    columns = table_columns(table)
    header = ["model", *(metric_label if column is None else column for column in columns)]
    lines += ["", _md_row(header), _md_row(["---"] * len(header))]
    for row in table_rows(table):
        cells = [format_cell(summary) for summary in summaries if summary.row == row]
        lines.append(_md_row([row, *cells]))
    lines += _other_metrics(summaries, metric)
    lines += ["", "## Provenance", ""]
    lines += _provenance(summaries)
    lines += ["", "## Deviations from the paper", ""]
    lines += _deviations(summaries)
    return "\n".join(lines) + "\n"


def _header(records: Sequence[RunRecord], summaries: list[CellSummary], generated: str) -> list[str]:
    data = records[0].data
    counts = {
        (r.data["n_train"], r.data["n_val"], r.data["n_test"]): r.data.get("full_dataset") is True for r in records
    }
    count_text = "; ".join(f"{n:,} train / {v:,} val / {t:,} test" for n, v, t in counts)
    full = all(counts.values())
    ran = [summary for summary in summaries if summary.records]
    per_cell = sorted({summary.n_seeds for summary in ran})
    lines = [
        f"- Profile: `{records[0].profile}`",
        f"- Data: {data['digits']} from `{data['source']}`, {count_text}; "
        f"{'full dataset' if full else 'NOT the full dataset'} (checksum `{str(data['checksum'])[:12]}`)",
        f"- Seeds: {_distinct(sorted({r.seed for r in records}))} ({_span(per_cell)} per cell; "
        f"{len(ran)} of {len(summaries)} cells run)",
        f"- Iterations: {_distinct((r.iterations for r in records), thousands=True)}; "
        f"batch size {_distinct(r.batch_size for r in records)}",
        f"- Code: git {_distinct(r.git_revision for r in records)}; devices: {_distinct(r.device for r in records)}",
        f"- Newest record: {generated}",
    ]
    variants = [r for r in records if not r.canonical]
    if variants:
        overrides = list(dict.fromkeys(o for r in variants for o in r.overrides)) or ["no experiment of their own"]
        lines += [
            "",
            f"> **VARIANT RUNS, NOT THE SUITE'S CANONICAL CELLS** ({len(variants)} of {len(records)} records differ "
            f"from their experiment: {shorten(', '.join(overrides), 300)}). Not the paper's protocol.",
        ]
    if not full:
        lines += [
            "",
            f"> **WARNING: NOT THE FULL {data['digits'].upper()} DATASET** ({data['source']}: {count_text}). "
            "The paper trained on the full dataset; these numbers are not comparable with the paper's.",
        ]
    if any(r.data["source"] == "bundled" for r in records):
        lines += [
            "",
            "> **The bundled sample's test error is optimistic.** Its 1,000 test digits come from MNIST's training "
            "set, so they share writers with the training digits. Measured (issue 15, the same trained models): "
            "MNIST's official 10,000-digit test set gave 0.8–2.1 points more error for the models that learn "
            "(CNN R 9.47 vs 7.40, ST-CNN Aff R 6.73 vs 5.90, ST-CNN Aff RTS 7.05 vs 5.30).",
        ]
    return lines


def _other_metrics(summaries: list[CellSummary], metric: str) -> list[str]:
    """A table of the other metrics the finished runs recorded (mean over seeds), if any besides err/acc/val."""
    skip = {metric, "test/err", "test/acc", "val/err"}
    finished = [(s, [r for r in s.records if r.status == "finished"]) for s in summaries]
    names = sorted({name for _, runs in finished for r in runs for name in (r.metrics or {}) if name not in skip})
    if not names:
        return []
    lines = ["", "## Other metrics (mean over finished seeds)", "", _md_row(["cell", *names])]
    lines.append(_md_row(["---"] * (len(names) + 1)))
    for summary, runs in finished:
        if runs:
            values = [[r.metrics[name] for r in runs if name in r.metrics] for name in names]
            cells = [f"{statistics.fmean(v):.2f}" if v else MISSING for v in values]
            lines.append(_md_row([f"`{summary.cell}`", *cells]))
    return lines


def _provenance(summaries: list[CellSummary]) -> list[str]:
    header = [
        "cell",
        "row",
        "column",
        "seeds",
        "params",
        "iterations",
        "batch",
        "profile",
        "source",
        "n_train",
        "wall time / seed",
        "device",
        "git revision",
    ]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for summary in summaries:
        runs = summary.records
        if not runs:
            continue
        wall = statistics.fmean(record.wall_time_s for record in runs)
        lines.append(
            _md_row(
                [
                    f"`{summary.cell}`",
                    summary.row,
                    MISSING if summary.column is None else summary.column,
                    _seed_text(summary),
                    _distinct((r.params for r in runs), thousands=True),
                    _distinct((r.iterations for r in runs), thousands=True),
                    _distinct(r.batch_size for r in runs),
                    _distinct(r.profile for r in runs),
                    _distinct(r.data["source"] for r in runs),
                    _distinct((r.data["n_train"] for r in runs), thousands=True),
                    _duration(wall),
                    _distinct(r.device for r in runs),
                    _distinct(r.git_revision for r in runs),
                ]
            )
        )
    return lines


def _deviations(summaries: list[CellSummary]) -> list[str]:
    runs = [record for summary in summaries for record in summary.records]
    cells_of: dict[str, list[str]] = {}
    for record in runs:
        for deviation in record.deviations:
            cells = cells_of.setdefault(deviation.strip(), [])
            if record.cell not in cells:
                cells.append(record.cell)
    if not cells_of:
        return ["None recorded."]
    all_cells = set(record.cell for record in runs)
    lines = []
    for deviation, cells in cells_of.items():
        only = "" if set(cells) == all_cells else f" (only {', '.join(f'`{cell}`' for cell in cells)})"
        lines.append(f"- {deviation}{only}")
    return lines


def _seed_text(summary: CellSummary) -> str:
    text = f"{', '.join(str(record.seed) for record in summary.records)} (n={summary.n_seeds}"
    return text + (f", {summary.n_diverged} diverged)" if summary.n_diverged else ")")


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _distinct(values: Iterable[object], sep: str = ", ", thousands: bool = False) -> str:
    unique = dict.fromkeys(values)
    return sep.join(f"{value:,}" if thousands and isinstance(value, int) else str(value) for value in unique)


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _title(table: str) -> str:
    return _TITLES.get(table, table.replace("_", " "))


def _metric_label(table: str) -> str:
    metric = load_reference()[table].get("metric", "")
    return _METRIC_LABELS.get(metric, metric or "value")


# --- csv --------------------------------------------------------------------------------------------------------


def _write_csv(path: Path, table: str, summaries: list[CellSummary]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for summary in summaries:
            runs = summary.records
            writer.writerow(
                {
                    "table": table,
                    "row": summary.row,
                    "column": summary.column or "",
                    "paper": _csv_number(summary.paper),
                    "mean": _csv_number(summary.mean, 4),
                    "std": _csv_number(summary.std, 4),
                    "n_seeds": summary.n_seeds,
                    "n_diverged": summary.n_diverged,
                    "diff": _csv_number(summary.diff, 2),
                    "ci_low": _csv_number(summary.interval and summary.interval[0], 3),
                    "ci_high": _csv_number(summary.interval and summary.interval[1], 3),
                    "n_test": _distinct((r.data["n_test"] for r in runs), "/"),
                    "params": _distinct((r.params for r in runs), "/"),
                    "iterations": _distinct((r.iterations for r in runs), "/"),
                    "profile": _distinct((r.profile for r in runs), "/"),
                    "source": _distinct((r.data["source"] for r in runs), "/"),
                    "n_train": _distinct((r.data["n_train"] for r in runs), "/"),
                    "full_dataset": _distinct((str(r.data["full_dataset"]).lower() for r in runs), "/"),
                    "git_revision": _distinct((r.git_revision for r in runs), "/"),
                    "status": summary.status,
                }
            )


def _csv_number(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    return repr(round(value, digits) + 0.0) if digits is not None else repr(value)


# --- figure -----------------------------------------------------------------------------------------------------


_NOTE_STYLE = {"ha": "center", "va": "bottom", "fontsize": 7, "color": "tab:red"}


def _plot(
    path: Path, table: str, suite: str, summaries: list[CellSummary], records: Sequence[RunRecord], metric: str
) -> None:
    """Grouped bars on a log axis, one panel per paper column (two panels a row): paper (grey) vs ours (blue, error
    bar = the 95% Wilson interval over the test images); cells with diverged seeds are marked ``div k/n`` in red,
    cells not run have no blue bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = table_rows(table), table_columns(table)
    ncols = min(2, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    panel_width = max(5.0, 0.6 * len(rows) + 1.5)
    figure = Figure(figsize=(panel_width * ncols, 3.6 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    width = 0.4
    for ax, column in zip(axes, columns, strict=False):
        cells = [summary for summary in summaries if summary.column == column]
        xs = range(len(cells))
        paper = [math.nan if s.paper is None else s.paper for s in cells]
        ours = [math.nan if s.mean is None else s.mean for s in cells]
        low = [0.0 if s.interval is None or s.mean is None else s.mean - s.interval[0] for s in cells]
        high = [0.0 if s.interval is None or s.mean is None else s.interval[1] - s.mean for s in cells]
        ax.bar([x - width / 2 for x in xs], paper, width, color="0.65", label="paper")
        ax.bar([x + width / 2 for x in xs], ours, width, yerr=[low, high], capsize=3, color="tab:blue", label="ours")
        for x, summary in zip(xs, cells, strict=True):
            if summary.n_diverged:
                top = summary.interval[1] if summary.interval else max(summary.mean or 0.0, 0.1)
                note = f"div {summary.n_diverged}/{summary.n_seeds}"
                ax.annotate(note, (x + width / 2, top), xytext=(0, 3), textcoords="offset points", **_NOTE_STYLE)
        ax.set_xticks(list(xs), [summary.row for summary in cells], rotation=35, ha="right", fontsize=8)
        ax.set_title(_metric_label(table) if column is None else column, fontsize=10)
        ax.set_yscale("log")  # the paper's errors (0.5-5%) stay readable beside ours
        ax.grid(axis="y", alpha=0.3, which="both")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"{_metric_label(table)} ({metric})")
    axes[0].legend(fontsize=8)
    data = records[0].data
    sample = "" if all(r.data.get("full_dataset") is True for r in records) else ", NOT the full dataset"
    figure.suptitle(
        f"{_title(table)}: paper vs ours (suite {suite}, profile {records[0].profile}, "
        f"{data['source']} {data['digits']}{sample})",
        fontsize=10,
    )
    figure.savefig(path, dpi=110, format="png")


if __name__ == "__main__":
    sys.exit(main())
