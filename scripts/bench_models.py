"""Time per training step of the SVHN and CUB models, side by side in one process on one device.

    python scripts/bench_models.py [--device cpu|cuda] [--svhn-batch 32] [--cub-batch 4] [--out results/bench_models.md]

Each model trains on random inputs of its real size (forward, loss, backward, SGD step) for a few warm-up steps and
then several timed windows; the table gives the median time per step and the ratio to the same table's baseline
(the paper: ST-CNN Multi costs 6% more than the CNN on SVHN). Random weights: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from stn_repro.models import count_parameters
from stn_repro.models.cub import CUBNet
from stn_repro.models.svhn import build_svhn_model
from stn_repro.systems.sequence import SequenceSystem


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA kernels run asynchronously; CPU work is done on return)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_windows(
    step: Callable[[], object], device: torch.device, warmup: int, windows: int, steps: int
) -> list[float]:
    """Seconds per call of ``step`` in each of ``windows`` windows of ``steps`` calls, after ``warmup`` calls; the
    device is synchronised at window boundaries only."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(windows):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        times.append((time.perf_counter() - start) / steps)
    return times


def time_steps(model: torch.nn.Module, batch: Callable[[], tuple], loss: Callable, device: torch.device,
               warmup: int, windows: int, steps: int) -> float:  # fmt: skip
    """Median seconds per training step over ``windows`` windows of ``steps`` steps, after ``warmup`` steps."""
    model.to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    inputs, target = batch()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss(model(inputs), target).backward()
        optimiser.step()

    return statistics.median(time_windows(step, device, warmup, windows, steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--svhn-batch", type=int, default=32)
    parser.add_argument("--cub-batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-cub", action="store_true", help="only the SVHN models")
    parser.add_argument("--out", type=Path, default=Path("results/bench_models.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    sequence = SequenceSystem(torch.nn.Identity())
    rows = []

    def svhn_batch(side: int) -> Callable[[], tuple]:
        lengths = torch.randint(1, 6, (args.svhn_batch,))
        labels = torch.where(torch.arange(5)[None] < lengths[:, None], torch.randint(0, 10, (args.svhn_batch, 5)), 10)
        return lambda: (torch.rand(args.svhn_batch, 3, side, side, device=device), labels.to(device))

    for variant, side in (("64px", 54), ("128px", 110)):
        baseline = None
        for kind in ("cnn", "st_single", "st_multi"):
            model = build_svhn_model(kind, (3, side, side))
            seconds = time_steps(model, svhn_batch(side), sequence.loss, device, args.warmup, args.windows, args.steps)
            baseline = baseline or seconds
            rows.append(
                ("SVHN", f"{kind} {variant}", args.svhn_batch, count_parameters(model), seconds, seconds / baseline)
            )
            print(f"SVHN {kind} {variant}: {1000 * seconds:.0f} ms/step", flush=True)
    if not args.skip_cub:
        cub = (("cnn 224px", 0, 224), ("2xST 224px", 2, 224), ("2xST 448px", 2, 448), ("4xST 448px", 4, 448))
        baseline = None
        for name, parts, side in cub:
            model = CUBNet(num_classes=200, num_parts=parts)

            def cub_batch(side: int = side) -> tuple:
                images = torch.rand(args.cub_batch, 3, side, side, device=device)
                return images, torch.randint(0, 200, (args.cub_batch,), device=device)

            seconds = time_steps(model, cub_batch, F.cross_entropy, device, args.warmup, args.windows, args.steps)
            baseline = baseline or seconds
            rows.append(("CUB", name, args.cub_batch, count_parameters(model), seconds, seconds / baseline))
            print(f"CUB {name}: {1000 * seconds:.0f} ms/step", flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        "# Time per training step of the SVHN and CUB models",
        "",
        f"Measured by `scripts/bench_models.py` on {name}, {datetime.now(UTC).isoformat(timespec='seconds')}; "
        f"torch {torch.__version__}, Python {platform.python_version()}; fp32, random inputs of each model's size, "
        f"median of {args.windows} windows of {args.steps} steps after {args.warmup} warm-up steps. Ratio: to the "
        "first model of the same dataset (CNN at the same input size for SVHN), measured in this same run.",
        "",
        "| dataset | model | batch | parameters | ms / step | images / s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, model_name, batch, params, seconds, ratio in rows:
        lines.append(
            f"| {dataset} | {model_name} | {batch} | {params:,} | {1000 * seconds:.0f} | {batch / seconds:.1f} | "
            f"{ratio:.2f} |"
        )
    multi = {r[1]: r[5] for r in rows if r[0] == "SVHN"}
    lines += [
        "",
        f"ST-CNN Multi vs CNN (64px): {100 * (multi['st_multi 64px'] - 1):+.0f}% time per step "
        "(paper: +6% on its GPU).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
