"""Claim 6's figure: histograms of the test digits' pose before / after each ST model's transformer.

``plot_poses(records, path)`` draws one panel per ST model of Table 1 (columns) and measured quantity (rows: the
rotation on R, the rotation on RTS, the log scale on RTS), from the ``pose`` histograms of the records
(:func:`stn_repro.results.pose.pose_metrics`): the distortion's pose in grey, the pose after the transformer in blue.
An upright standard pose is a narrow blue peak at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stn_repro.results.records import RunRecord
from stn_repro.utils import atomic_path

PANELS = (("R", "angle_deg", "rotation on R (°)"), ("RTS", "angle_deg", "rotation on RTS (°)"),
          ("RTS", "log_scale", "log scale on RTS"))  # fmt: skip
MODELS = tuple(f"{st} {family}" for st in ("ST-FCN", "ST-CNN") for family in ("Aff", "Proj", "TPS"))


def plot_poses(records: Sequence[RunRecord], path: str | Path) -> Path | None:
    """Write the figure to ``path`` (PNG, atomically) from the lowest seed of each model; ``None`` (nothing
    written) when no record holds pose histograms."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first: dict[tuple[str, str], RunRecord] = {}
    for record in sorted(records, key=lambda r: r.seed):
        if record.status == "finished" and record.pose:
            first.setdefault((record.row, record.column), record)
    if not first:
        return None
    figure = Figure(figsize=(2.3 * len(MODELS), 2.1 * len(PANELS) + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(PANELS), len(MODELS), squeeze=False)
    for row, (distortion, quantity, label) in enumerate(PANELS):
        for column, model in enumerate(MODELS):
            ax = axes[row][column]
            record = first.get((model, distortion))
            if record is None:
                ax.set_axis_off()
                ax.set_title(f"{model}: not run", fontsize=8)
                continue
            histogram = record.pose[quantity]
            edges = histogram["edges"]
            for key, colour in (("before", "0.6"), ("after", "tab:blue")):
                ax.stairs(histogram[key], edges, fill=key == "before", color=colour, label=key)
            ax.set_title(model if row == 0 else "", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
    drawn = next(ax for ax in axes.ravel() if ax.get_legend_handles_labels()[0])
    figure.legend(*drawn.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=2)
    sample = next(iter(first.values()))
    figure.suptitle(
        f"Claim 6: pose of the test digits before (grey) and after (blue) the transformer (profile {sample.profile}, "
        f"{sample.data['source']} digits, seed {sample.seed})",
        fontsize=10,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return path
