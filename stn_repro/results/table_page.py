"""The Markdown page of a suite's table: header, the table in the paper's layout, other metrics, provenance and
deviations; and the page of a suite that could not run."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from stn_repro.results.markdown import markdown_table
from stn_repro.results.records import RunRecord
from stn_repro.results.reference import load_reference, table_columns, table_rows
from stn_repro.results.summaries import MISSING, NOT_RUN, CellSummary, distinct, format_cell
from stn_repro.utils import shorten

__all__ = ["NOT_RUN_BANNER", "metric_label", "not_run_markdown", "table_markdown", "table_title"]

NOT_RUN_BANNER = "> **Not run:**"
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


def table_title(table: str) -> str:
    """The paper table's title, e.g. ``Table 1: distorted MNIST``."""
    return _TITLES.get(table, table.replace("_", " "))


def metric_label(table: str) -> str:
    """The paper table's metric in words, e.g. ``error %``."""
    metric = load_reference()[table].get("metric", "")
    return _METRIC_LABELS.get(metric, metric or "value")


def table_markdown(
    table: str,
    suite: str,
    summaries: list[CellSummary],
    records: Sequence[RunRecord],
    metric: str,
    generated: str,
) -> str:
    """The page of one suite's table; ``summaries`` from :func:`~stn_repro.results.summaries.summarise_cells`,
    ``generated``: the time the header shows (the newest record's, so a rebuild is byte for byte the same)."""
    label = metric_label(table)
    lines = [f"# {table_title(table)}: ours vs paper", ""]
    lines += [
        f"Suite `{suite}`, {len(records)} run records; metric `{metric}` ({label}). Each cell: "
        "`paper / ours ± std over seeds [95% Wilson interval over the test images] (ours − paper)`; "
        f"`diverged (k/n)`: k of n seeds diverged (NaN/inf) and are left out of the mean; `{MISSING}`: not run.",
        "",
    ]
    lines += _header(records, summaries, generated)
    header = ["model", *(label if column is None else column for column in table_columns(table))]
    rows = ([row, *(format_cell(s) for s in summaries if s.row == row)] for row in table_rows(table))
    lines += ["", *markdown_table(header, rows)]
    lines += _other_metrics(summaries, metric)
    lines += ["", "## Provenance", ""]
    lines += _provenance(summaries)
    lines += ["", "## Deviations from the paper", ""]
    lines += _deviations(summaries)
    return "\n".join(lines) + "\n"


def not_run_markdown(
    suite: str, table: str, cells: Mapping[str, tuple[str, str | None]], reason: str, summaries: list[CellSummary]
) -> str:
    """The page of a suite none of whose ``cells`` (``{name: (row, column)}``) ran: theirs read ``paper / not run``,
    the paper's other cells ``paper / —``; ``summaries``: every cell of the paper's table, without runs."""
    ours = set(cells.values())
    header = ["model", *(metric_label(table) if column is None else column for column in table_columns(table))]
    lines = [f"# {table_title(table)}: ours vs paper", ""]
    lines += [
        f"Suite `{suite}`: **{NOT_RUN}** ({len(cells)} cells: {', '.join(f'`{cell}`' for cell in cells)}). Each "
        f"cell: `paper / ours`; `{MISSING}`: a row of the paper this suite does not reproduce.",
        "",
        f"{NOT_RUN_BANNER} {reason}",
        "",
        f"- Generated: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
    ]
    rows = []
    for row in table_rows(table):
        texts = []
        for summary in (s for s in summaries if s.row == row):
            paper = MISSING if summary.paper is None else f"{summary.paper:g}"
            texts.append(f"{paper} / {NOT_RUN if (row, summary.column) in ours else MISSING}")
        rows.append([row, *texts])
    lines += markdown_table(header, rows)
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
        f"- Seeds: {distinct(sorted({r.seed for r in records}))} ({_span(per_cell)} per cell; "
        f"{len(ran)} of {len(summaries)} cells run)",
        f"- Iterations: {distinct((r.iterations for r in records), thousands=True)}; "
        f"batch size {distinct(r.batch_size for r in records)}",
        f"- Code: git {distinct(r.git_revision for r in records)}; devices: {distinct(r.device for r in records)}",
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
    rows = []
    for summary, runs in finished:
        if runs:
            values = [[r.metrics[name] for r in runs if name in r.metrics] for name in names]
            rows.append([f"`{summary.cell}`", *(f"{statistics.fmean(v):.2f}" if v else MISSING for v in values)])
    return ["", "## Other metrics (mean over finished seeds)", "", *markdown_table(["cell", *names], rows)]


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
    rows = []
    for summary in summaries:
        runs = summary.records
        if not runs:
            continue
        wall = statistics.fmean(record.wall_time_s for record in runs)
        rows.append(
            [
                f"`{summary.cell}`",
                summary.row,
                MISSING if summary.column is None else summary.column,
                _seed_text(summary),
                distinct((r.params for r in runs), thousands=True),
                distinct((r.iterations for r in runs), thousands=True),
                distinct(r.batch_size for r in runs),
                distinct(r.profile for r in runs),
                distinct(r.data["source"] for r in runs),
                distinct((r.data["n_train"] for r in runs), thousands=True),
                _duration(wall),
                distinct(r.device for r in runs),
                distinct(r.git_revision for r in runs),
            ]
        )
    return markdown_table(header, rows)


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


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
