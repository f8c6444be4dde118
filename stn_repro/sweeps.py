"""What a Hydra multirun leaves behind besides its runs: job folders named by their swept values, and a summary.

- ``job_suffix``: the resolver behind ``hydra.sweep.subdir`` (``conf/train.yaml``), ``-key=value,...`` of a job's
  overrides less the bookkeeping ones (experiment, seed, profile, paths, progress), made safe for a folder name.
- :class:`SweepSummary`: a Hydra callback; when the multirun ends it reads each job's ``run.json`` (written by
  :func:`stn_repro.train.run`: where its record is) and ``.hydra/overrides.yaml``, and writes ``summary.md`` and
  ``summary.csv`` into the sweep folder, one row per swept point (its overrides less the seed): runs, finished
  runs, and the mean of ``val/err`` and ``test/err`` over seeds with a 95% Student-t interval (``±`` half-width;
  none for one seed). It also prints the Markdown table.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from stn_repro.console import say, show
from stn_repro.results.markdown import markdown_table
from stn_repro.results.records import RecordError, RunRecord, read_record
from stn_repro.utils import atomic_path, shorten

#: Overrides that say which job it is, not which point of the sweep: these keys, and every key under these groups.
_BOOKKEEPING_KEYS = ("experiment", "seed", "profile", "suite", "rerun")
_BOOKKEEPING_GROUPS = ("paths", "hydra", "progress")
METRICS = ("val/err", "test/err")
# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (more: the normal's 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def swept_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` less the bookkeeping ones (e.g. ``seed=1``, ``paths.runs=...``; ``profile.iterations=20`` is
    kept: it changes the run)."""
    kept = []
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key not in _BOOKKEEPING_KEYS and key.split(".")[0] not in _BOOKKEEPING_GROUPS:
            kept.append(override)
    return kept


def job_suffix(override_dirname: str) -> str:
    """``-<overrides>`` for a job folder name (``/`` and odd characters replaced, at most 160 characters, so the
    name stays under 255 bytes); ``""`` without any. ``override_dirname`` is Hydra's ``key=value,key=value`` of the
    job's overrides."""
    kept = swept_overrides([o for o in override_dirname.split(",") if o])
    text = re.sub(r"[^A-Za-z0-9._=+-]", "_", ",".join(kept))
    return f"-{shorten(text, 160)}" if text else ""


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, half-width of the 95% Student-t interval)``; ``None`` for the half-width of one value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def summarise(jobs: Sequence[tuple[list[str], RunRecord | None]]) -> list[dict[str, Any]]:
    """One row per experiment and swept point from ``(overrides, record or None)`` per job: ``experiment``,
    ``point``, ``runs``, ``finished``, ``<metric> mean`` / ``<metric> ±`` for :data:`METRICS` and ``seeds``."""
    points: dict[tuple[str, str], list[RunRecord | None]] = {}
    for overrides, record in jobs:
        experiment = next((o.partition("=")[2] for o in overrides if o.startswith("experiment=")), "(default)")
        point = ", ".join(swept_overrides(overrides)) or "(no override)"
        points.setdefault((experiment, point), []).append(record)
    rows = []
    for (experiment, point), records in points.items():
        finished = [r for r in records if r is not None and r.status == "finished"]
        row: dict[str, Any] = {
            "experiment": experiment,
            "point": point,
            "runs": len(records),
            "finished": len(finished),
        }
        for metric in METRICS:
            values = [r.metrics[metric] for r in finished if metric in r.metrics]
            row[f"{metric} mean"], row[f"{metric} ±"] = mean_interval(values) if values else (None, None)
        row["seeds"] = " ".join(str(r.seed) for r in finished)
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    header = ["experiment", "swept point", "runs (finished)", *(f"{m} (%)" for m in METRICS), "seeds"]
    lines = [f"# Sweep summary: {title}", "", "Mean over seeds ± half-width of the 95% Student-t interval.", ""]
    best: dict[str, float] = {}  # the lowest mean val/err of each experiment
    for row in rows:
        if row["val/err mean"] is not None and row["val/err mean"] < best.get(row["experiment"], math.inf):
            best[row["experiment"]] = row["val/err mean"]
    table = []
    for row in rows:
        points = sum(other["experiment"] == row["experiment"] for other in rows)
        lowest = points > 1 and row["val/err mean"] is not None and row["val/err mean"] == best[row["experiment"]]
        point = f"`{row['point']}`" + (" **(best val/err)**" if lowest else "")
        cells = [f"`{row['experiment']}`", point, f"{row['runs']} ({row['finished']})"]
        for metric in METRICS:
            mean, half = row[f"{metric} mean"], row[f"{metric} ±"]
            cells.append("—" if mean is None else f"{mean:.2f}" + ("" if half is None else f" ± {half:.2f}"))
        cells.append(row["seeds"] or "—")
        table.append(cells)
    lines += markdown_table(header, table, compact=True)
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path) -> Path | None:
    """Write ``summary.md`` / ``summary.csv`` of the jobs in ``sweep_dir``; returns the Markdown path, or ``None``
    when no job folder holds a ``.hydra/overrides.yaml``."""
    jobs = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        jobs.append((overrides, _job_record(job)))
    if not jobs:
        return None
    rows = summarise(jobs)
    text = markdown(rows, str(sweep_dir))
    with atomic_path(sweep_dir / "summary.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(sweep_dir / "summary.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    show(text)
    return sweep_dir / "summary.md"


def _job_record(job: Path) -> RunRecord | None:
    pointer = job / "run.json"
    if not pointer.is_file():
        return None  # the job failed before recording
    try:
        return read_record(json.loads(pointer.read_text())["record"])
    except (RecordError, OSError, ValueError, KeyError) as error:
        say(f"warning: sweep summary: {job.name}: {error}")
        return None


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): :func:`write_summary` when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(OmegaConf.select(config, "hydra.sweep.dir"))
        if sweep_dir.is_dir():
            path = write_summary(sweep_dir)
            if path is not None:
                say(f"sweep summary -> {path} (and summary.csv)")


OmegaConf.register_new_resolver("job_suffix", job_suffix, replace=True)
