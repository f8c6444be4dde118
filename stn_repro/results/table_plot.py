"""The figure of a suite's table: ours vs the paper per cell."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from stn_repro.results.records import RunRecord
from stn_repro.results.reference import table_columns, table_rows
from stn_repro.results.summaries import CellSummary
from stn_repro.results.table_page import metric_label, table_title

__all__ = ["plot_table"]

_NOTE_STYLE = {"ha": "center", "va": "bottom", "fontsize": 7, "color": "tab:red"}


def plot_table(
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
        ax.set_title(metric_label(table) if column is None else column, fontsize=10)
        ax.set_yscale("log")  # the paper's errors (0.5-5%) stay readable beside ours
        ax.grid(axis="y", alpha=0.3, which="both")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"{metric_label(table)} ({metric})")
    axes[0].legend(fontsize=8)
    data = records[0].data
    sample = "" if all(r.data.get("full_dataset") is True for r in records) else ", NOT the full dataset"
    figure.suptitle(
        f"{table_title(table)}: paper vs ours (suite {suite}, profile {records[0].profile}, "
        f"{data['source']} {data['digits']}{sample})",
        fontsize=10,
    )
    figure.savefig(path, dpi=110, format="png")
