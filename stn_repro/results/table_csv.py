"""The CSV of a suite's table: one row per paper cell, long format (:data:`CSV_FIELDS`)."""

from __future__ import annotations

import csv
from pathlib import Path

from stn_repro.results.summaries import CellSummary, distinct

__all__ = ["CSV_FIELDS", "write_csv"]

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


def write_csv(path: Path, table: str, summaries: list[CellSummary]) -> None:
    """Write ``summaries`` (cells of paper table ``table``) to ``path``: a header, then one row per summary."""
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
                    "n_test": distinct((r.data["n_test"] for r in runs), "/"),
                    "params": distinct((r.params for r in runs), "/"),
                    "iterations": distinct((r.iterations for r in runs), "/"),
                    "profile": distinct((r.profile for r in runs), "/"),
                    "source": distinct((r.data["source"] for r in runs), "/"),
                    "n_train": distinct((r.data["n_train"] for r in runs), "/"),
                    "full_dataset": distinct((str(r.data["full_dataset"]).lower() for r in runs), "/"),
                    "git_revision": distinct((r.git_revision for r in runs), "/"),
                    "status": summary.status,
                }
            )


def _csv_number(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    return repr(round(value, digits) + 0.0) if digits is not None else repr(value)
