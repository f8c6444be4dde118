"""The timed training loops over one Table 1 cell, each a figure of images/s (median of timed windows) and peak
memory: the framework's real run timed by a callback, a bare PyTorch loop, the PyTorch STN tutorial's loop, several
framework runs at once in separate processes, and the forward-only evaluation rate."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from bench_models import synchronize, time_windows
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.idx import write_mnist_folder
from benchmarks.plan import CONF, DEFAULT_LOG_EVERY, SCRIPT, paired_windows
from stn_repro import components
from stn_repro.fast import apply_fast_options, steps_per_call
from stn_repro.train import run

RESULT_PREFIX = "BENCH-RESULT "  # the line of a ``--worker`` run that carries its figures (JSON)


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
    if "ratios" in rounds[0]:  # paired windows (paired_paths): every round's pairs
        combined["ratios"] = [ratio for result in rounds for ratio in result["ratios"]]
    peaks = [result["peak_mb"] for result in rounds if result.get("peak_mb") is not None]
    combined["peak_mb"] = max(peaks, default=None)
    if "worker_peak_mb" in rounds[0]:
        combined["worker_peak_mb"] = max(result["worker_peak_mb"] for result in rounds)
    return combined


class WindowTimer(pl.Callback):
    """Times ``windows`` windows of ``steps`` optimiser steps after ``warmup`` steps inside ``trainer.fit``: window
    boundaries at the start of a training step (each of ``fast.steps_per_call`` optimiser steps, which divides
    ``warmup`` and ``steps``), the device synchronised there only; ``batch`` images per optimiser step.

    ``between``, if given, runs at each boundary but the last, outside the timed windows (the framework's window
    ``k`` starts after it returns): e.g. a bare-loop window, so that the two paths alternate window by window."""

    def __init__(
        self, warmup: int, windows: int, steps: int, batch: int, between: Callable[[int], None] | None = None
    ) -> None:
        self.boundaries = [warmup + k * steps for k in range(windows + 1)]
        self.batch = batch
        self.between = between
        self.starts: list[tuple[float, int]] = []
        self.ends: list[tuple[float, int]] = []
        self.started: float | None = None
        self.peak_mb: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.started is None:
            self.started = time.perf_counter()
        if step not in self.boundaries:
            return
        synchronize(pl_module.device)
        index = self.boundaries.index(step)
        if index > 0:
            self.ends.append((time.perf_counter(), step))
        if index == len(self.boundaries) - 1:
            self.peak_mb = peak_memory_mb(pl_module.device)
            return
        if self.between is not None:
            self.between(index)
            synchronize(pl_module.device)
        if index == 0:
            reset_peak_memory(pl_module.device)
        self.starts.append((time.perf_counter(), step))

    def result(self) -> dict[str, Any]:
        if len(self.ends) != len(self.boundaries) - 1:
            raise RuntimeError(f"the run stopped before the last timed window ({len(self.ends)} windows)")
        windows = [(t1 - t0, s1 - s0) for (t0, s0), (t1, s1) in zip(self.starts, self.ends, strict=True)]
        rates = [steps * self.batch / seconds for seconds, steps in windows]
        return {
            "images_per_s": statistics.median(rates),
            "s_per_step": statistics.median(seconds / steps for seconds, steps in windows),
            "windows_images_per_s": rates,
            "warmup_s": self.starts[0][0] - self.started,
            "peak_mb": self.peak_mb,
        }


# -- the three loops -----------------------------------------------------------------------------------------------


def compose_cell(cell: str, args: argparse.Namespace, work: Path, *overrides: str) -> DictConfig:
    """The run configuration of Table 1 ``cell`` (e.g. ``st_cnn_aff_rts``) on the paper profile, timed steps only:
    logging every gcd(``args.steps``, the default interval) steps, so that ``fast.steps_per_call=auto`` ends a
    training step at every window boundary (``args.warmup`` is a multiple of a window), unless ``overrides`` set
    the logging interval."""
    iterations = args.warmup + (args.windows + 1) * args.steps  # the last window ends where the last call starts
    every = math.gcd(args.steps, DEFAULT_LOG_EVERY)
    logging = [] if any(o.startswith("fast.log_every=") for o in overrides) else [f"fast.log_every={every}"]
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
                *logging,
                *overrides,
            ],
        )


def framework_path(
    cell: str, args: argparse.Namespace, work: Path, *overrides: str, between: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Path 1: ``stn_repro.train.run`` with a :class:`WindowTimer` (its output lines go to a buffer; ``between``:
    its hook between windows); the figures carry the optimiser steps it took per Lightning training step."""
    timer = WindowTimer(args.warmup, args.windows, args.steps, args.batch, between)
    folder = Path(tempfile.mkdtemp(prefix=f"{cell}-", dir=work))
    cfg = compose_cell(cell, args, folder, *overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        record = run(cfg, folder / "out", callbacks=[timer])
    if record.status != "finished":
        raise RuntimeError(f"{cell} {' '.join(overrides)}: the run {record.status}")
    return {**timer.result(), "params": record.params, "steps_per_call": steps_per_call(cfg)}


def cell_data_and_model(cell: str, args: argparse.Namespace, work: Path) -> tuple[Any, torch.nn.Module, DictConfig]:
    """The data module (set up, from the cache path 1 built) and a fresh model seeded as ``run`` seeds it."""
    cfg = compose_cell(cell, args, work)
    with contextlib.redirect_stdout(io.StringIO()):
        data = components.data_module(cfg)
        data.prepare_data()
        data.setup()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = components.model(cfg, data)
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


def bare_stepper(model: torch.nn.Module, data: Any, cfg: DictConfig, args, device: torch.device) -> Callable[[], None]:
    """One step of path 2 per call: SGD on pre-loaded float tensors on ``device``, batches by index from a seeded
    permutation; the model with the same ``fast`` options as the framework's defaults (e.g. channels-last), so that
    1 vs 2 is the framework's overhead alone."""
    train = data.splits["train"]
    images, labels = float_images(train["images"]).to(device), torch.from_numpy(train["labels"]).to(device)
    apply_fast_options(model, cfg.fast).to(device).train()
    optimiser = instantiate(cfg.system.optimizer)(model.parameters())  # the run's own optimiser (a partial)
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

    return step


def paired_paths(cell: str, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Paths 1 and 2 window by window in one process: at each of the framework run's window boundaries, a window
    of the bare loop (its own model, weights as the run's, and optimiser) runs, then the framework's window. A drift
    of the machine's speed then hits both paths of a pair alike: ``ratios`` holds each pair's framework / bare.
    Windows: ``args.paired_windows``, or as many as fit (:func:`~benchmarks.plan.paired_windows`, from the bare
    loop's warm-up steps, the median of their second half)."""
    data, net, cfg = cell_data_and_model(cell, args, args.work)
    step = bare_stepper(net, data, cfg, args, device)
    warmup = []
    for _ in range(args.warmup):
        start = time.perf_counter()
        step()
        synchronize(device)
        warmup.append(time.perf_counter() - start)
    windows = args.paired_windows or paired_windows(statistics.median(warmup[len(warmup) // 2 :]) * args.steps)
    args = argparse.Namespace(**{**vars(args), "windows": windows})
    times: list[float] = []

    def bare_window(index: int) -> None:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        times.append((time.perf_counter() - start) / args.steps)

    framework = framework_path(cell, args, args.work, between=bare_window)
    bare = summary(times, args.batch, peak_mb=None)
    framework["ratios"] = [f / b for f, b in zip(framework["windows_images_per_s"], [args.batch / t for t in times],
                                                   strict=True)]  # fmt: skip
    return framework, bare


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
    optimiser = instantiate(cfg.system.optimizer)(model.parameters())  # the run's own optimiser (a partial)
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
    command = [sys.executable, str(SCRIPT), "--worker", cell, "--threads", str(threads)]
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
    """One of :func:`concurrent_runs`' processes (``scripts/bench.py --worker CELL``): its figures on one line."""
    torch.set_num_threads(args.threads)
    result = framework_path(args.worker, args, args.work)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0
