"""Build the Markdown page, CSV and figure of one suite's table from its run records; the command line.

``build_tables(records, out_dir)`` writes, for the records of one suite (e.g. ``table1``):

- ``<out>/<stem>.md``: the page of :func:`~stn_repro.results.table_page.table_markdown`, cells
  ``paper / ours ± std (ours − paper)``;
- ``<out>/<stem>.csv``: the same numbers in long format (:mod:`stn_repro.results.table_csv`);
- ``<out>/figures/<suite>_vs_paper.png``: ours vs paper per cell (:mod:`stn_repro.results.table_plot`).

``<stem>`` is the suite name when it starts with ``table`` (``table1``), else the paper's table number
(``table2_svhn`` → ``table2``), else ``table_<suite>`` (``table_cluttered``); the recurrent STN's table is
``rnn_spn``. Means use the finished seeds only; diverged seeds are counted and shown, never averaged
(:mod:`stn_repro.results.summaries`, which also refuses records that mix profiles, data sources or checksums).

A suite that could not run at all (its data is missing) still gets its table: :func:`build_not_run_tables` writes
every cell as ``not run`` with the reason.

Command line: ``python -m stn_repro.results.tables --runs results/runs --suite table1 --out results``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from stn_repro.console import say
from stn_repro.results.records import RecordError, RunRecord, load_records
from stn_repro.results.reference import paper_value, table_columns, table_rows
from stn_repro.results.summaries import CellSummary, TableError, check_records, default_metric, summarise_cells
from stn_repro.results.table_csv import write_csv
from stn_repro.results.table_page import NOT_RUN_BANNER, not_run_markdown, table_markdown
from stn_repro.results.table_plot import plot_table
from stn_repro.utils import atomic_path, shorten

__all__ = ["build_not_run_tables", "build_tables", "main", "table_paths"]

_STEMS = {"recurrent_stn_mnist_sequences": "rnn_spn"}  # file names the docs promise


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


def build_tables(records: Sequence[RunRecord], out_dir: str | Path, metric: str | None = None) -> dict[str, Path]:
    """Write the Markdown table, CSV and figure of one suite's records; returns their paths.

    Args:
        records: the run records of one suite, in any order (e.g. from :func:`~stn_repro.results.records.load_records`).
        out_dir: folder for ``<stem>.md`` and ``<stem>.csv``; the figure goes to ``out_dir/figures/``.
        metric: the metric compared with the paper, in the paper's unit (percent); ``None``:
            :func:`~stn_repro.results.summaries.default_metric` of the records' table.

    Returns:
        ``{"markdown": path, "csv": path, "figure": path}``.

    Raises:
        TableError: see :func:`~stn_repro.results.summaries.summarise_cells`.
    """
    records = sorted(records, key=lambda record: (record.cell, record.seed))  # as load_records: any order, one page
    if metric is None:
        metric = default_metric(check_records(records))
    table, summaries = summarise_cells(records, metric)
    suite = records[0].suite
    paths = table_paths(suite, table, out_dir)
    paths["figure"].parent.mkdir(parents=True, exist_ok=True)
    generated = max(record.created for record in records)  # from the records: a rebuild is byte for byte the same
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(table_markdown(table, suite, summaries, records, metric, generated), encoding="utf-8")
    with atomic_path(paths["csv"]) as tmp:
        write_csv(tmp, table, summaries)
    with atomic_path(paths["figure"]) as tmp:
        plot_table(tmp, table, suite, summaries, records, metric)
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
    if paths["markdown"].is_file() and NOT_RUN_BANNER not in paths["markdown"].read_text(encoding="utf-8"):
        return {}
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    summaries = [
        CellSummary(row, column, paper_value(table, row, column), (), ())
        for row in table_rows(table)
        for column in table_columns(table)
    ]
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(not_run_markdown(suite, table, cells, reason, summaries), encoding="utf-8")
    ours = set(cells.values())
    with atomic_path(paths["csv"]) as tmp:
        write_csv(tmp, table, [s for s in summaries if (s.row, s.column) in ours])
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
        say(f"error: {exc}", error=True)
        return 2
    for path in paths.values():
        say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
