"""Does supervising the transformer's θ speed up learning, and how much of the target must be known? ST-CNN Aff on
R and RTS, unsupervised (the paper), supervised towards the true inverse distortion, and weakly supervised (a noisy
target, or only its rotation angle known); validation error along the same quick schedule.

    python scripts/theta_supervision.py [--variants none system.theta_loss_weight=1 ...] [--iterations 1000]

A variant is ``none`` (the paper's setting) or comma-separated overrides, e.g.
``system.theta_loss_weight=1,system.theta_target=rotation`` (weak supervision: only the angle known),
``system.theta_loss_weight=1,system.theta_target_noise=0.2`` (a noisy target) or ``model.theta_to_classifier=true``
(θ fed forward, paper §3.4). Each run is a normal ``stn_repro.train.run`` (same data, seed, model and schedule;
only those keys differ); the validation error every ``--every`` iterations is read back from the run's CSV log.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hydra import compose, initialize_config_dir

from stn_repro.results.markdown import markdown_table
from stn_repro.train import git_revision, quiet_lightning, run

CONF = Path(__file__).resolve().parents[1] / "conf"
W = "system.theta_loss_weight=1"
ROTATION = f"{W},system.theta_target=rotation"
VARIANTS = ("none", W, f"{W},system.theta_target_noise=0.2", ROTATION, f"{ROTATION},system.theta_target_noise=0.3",
            "model.theta_to_classifier=true")  # fmt: skip


def validation_curve(output_dir: Path) -> dict[int, float]:
    """``{iteration: val/err}`` from the CSV log of a run."""
    curve = {}
    for path in output_dir.rglob("metrics.csv"):
        with path.open() as file:
            for row in csv.DictReader(file):
                if row.get("val/err"):
                    curve[int(row["step"]) + 1] = float(row["val/err"])
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["table1/st_cnn_aff_r", "table1/st_cnn_aff_rts"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", type=Path, default=Path("results/theta_supervision.md"))
    args = parser.parse_args(argv)
    quiet_lightning()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for cell in args.cells:
            for variant in args.variants:
                changes = [] if variant == "none" else variant.split(",")
                overrides = [
                    f"experiment={cell}", *changes, f"profile.iterations={args.iterations}",
                    f"profile.val_every={args.every}", f"paths.data={args.data}", f"paths.runs={scratch}/runs",
                    f"paths.variants={scratch}/runs", f"paths.models={scratch}/models",
                    f"paths.checkpoints={scratch}/ckpt",
                ]  # fmt: skip
                with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                    cfg = compose("train", overrides=overrides)
                cfg.suite = "theta_supervision"  # records stay in the scratch folder under their own suite name
                output = Path(scratch) / f"{cell.replace('/', '-')}-{len(rows)}"
                record = run(cfg, output)
                rows.append((cell, variant, validation_curve(output), record))
    steps = sorted({step for _, _, curve, _ in rows for step in curve})
    source = rows[0][3].data
    lines = [
        "# Supervised, weakly supervised and unsupervised transformer training (R, RTS)",
        "",
        f"Measured by `scripts/theta_supervision.py`, {datetime.now(UTC).isoformat(timespec='seconds')}, git "
        f"{git_revision()}. ST-CNN Aff, quick profile ({args.iterations:,} iterations, seed 0), data: "
        f"{source['source']} {source['digits']} ({source['n_train']:,} train / {source['n_val']:,} val / "
        f"{source['n_test']:,} test; distortions re-drawn every epoch). Weight 0 is the paper's unsupervised training; "
        "weight w adds w × MSE(θ, true inverse distortion) to the loss (target `full`), or w × 2(1 − cos Δ) of the "
        "rotation angles only (target `rotation`: only the rotation is known); noise σ: Gaussian noise on the target "
        "(θ parameters, or the angle in radians), a noisy annotation of each sample; `model.theta_to_classifier`: θ "
        "also feeds the classifier's output layer. Validation error % after each "
        "number of iterations, the final test error, and the rotation spread after the transformer (53.6° on R, "
        "26.0° on RTS before it).",
        "",
    ]
    header = ["cell", "variant (θ loss weight, target, noise σ)", *(f"val err @ {s:,}" for s in steps)]
    header += ["test err", "rotation spread after"]
    table = []
    for cell, variant, curve, record in rows:
        values = [f"{curve[s]:.2f}" if s in curve else "—" for s in steps]
        test = f"{record.metrics['test/err']:.2f}" if record.metrics else "diverged"
        angle = record.metrics.get("pose/angle_sd_out") if record.metrics else None
        spread = "—" if angle is None else f"{angle:.1f}°"
        label = "none (the paper)" if variant == "none" else f"`{variant}`"
        table.append([f"`{cell}`", label, *values, test, spread])
    lines += markdown_table(header, table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
