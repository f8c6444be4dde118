"""The whole benchmark in one process: every measurement in turn, collected as the figures of one device (the
layout of a device's entry in ``results/bench.json``), with the environment they were measured in."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from bench_data import TABLE1, bundled_digits, time_generation
from bench_stacked import measure as measure_stacked
from hydra import compose, initialize_config_dir

from benchmarks.loops import (
    cell_data_and_model,
    combine_rounds,
    compose_cell,
    concurrent_runs,
    evaluation_rate,
    framework_path,
    paired_paths,
    tutorial_loop,
)
from benchmarks.plan import (
    BASELINE,
    CONF,
    CUDA_ONLY,
    OPTIONS,
    PAIRED_SECONDS,
    PAIRED_WINDOWS,
    ROUNDS,
    TUTORIAL_ROUNDS,
    WINDOW_STEPS,
    WINDOWS,
)
from benchmarks.projection import projection

STACKED_SEEDS, STACKED_STEPS, STACKED_ROUNDS = 3, 60, 3


def timing(args: argparse.Namespace, model: str, **changes: Any) -> argparse.Namespace:
    """``args`` with ``model``'s window (``--steps``, else :data:`WINDOW_STEPS`; the warm-up one window unless
    ``--warmup``), windows and rounds (``--windows``/``--rounds``, else :data:`WINDOWS`/:data:`ROUNDS`; paired
    windows: ``--windows``, else ``None``, as many as fit (:func:`~benchmarks.plan.paired_windows`)) and ``changes``
    (e.g. another batch)."""
    steps = args.steps or WINDOW_STEPS[model]
    settings = {"steps": steps, "warmup": args.warmup or steps, "windows": args.windows or WINDOWS[model],
                "paired_windows": args.windows, "rounds": args.rounds or ROUNDS[model]}  # fmt: skip
    return argparse.Namespace(**{**vars(args), **settings, **changes})


def side_by_side(cell: str, args: argparse.Namespace, device: torch.device, tutorial: bool) -> dict[str, Any]:
    """The framework and the bare loop window by window (:func:`~benchmarks.loops.paired_paths`), ``args.rounds``
    times, and the tutorial loop on its own after each of the first :data:`TUTORIAL_ROUNDS` rounds; each path's
    rounds combined."""
    rounds: dict[str, list[dict[str, Any]]] = {"framework": [], "bare": [], "tutorial": []}
    for number in range(args.rounds):
        framework, bare = paired_paths(cell, args, device)
        rounds["framework"].append(framework)
        rounds["bare"].append(bare)
        if tutorial and number < TUTORIAL_ROUNDS:
            data, net, cfg = cell_data_and_model(cell, args, args.work)
            rounds["tutorial"].append(tutorial_loop(net, data, cfg, args, device, args.work))
    return {path: combine_rounds(results, args.batch) for path, results in rounds.items() if results}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    figures: dict[str, Any] = {"framework": {}, "bare": {}, "tutorial": {}, "options": {}, "concurrency": []}
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    for dataset in [args.compare, *args.project]:
        for model in args.models:
            cell, timed = f"{model}_{dataset}", timing(args, model)
            if dataset != args.compare:
                figures["framework"][cell] = framework_path(cell, timed, args.work)
            else:
                for path, result in side_by_side(cell, timed, device, tutorial=True).items():
                    figures[path][cell] = result
            framework = figures["framework"][cell]
            data, net, cfg = cell_data_and_model(cell, timed, args.work)
            framework["eval_images_per_s"] = evaluation_rate(net, data, timed, device)
            measured = [path for path in ("framework", "bare", "tutorial") if cell in figures[path]]
            say(f"{cell}: " + ", ".join(f"{path} {figures[path][cell]['images_per_s']:.0f}" for path in measured))

    if args.also_batch:  # framework vs bare at a second batch size, same windows
        figures["second_batch"] = {"batch": args.also_batch, "framework": {}, "bare": {}}
        for model in args.models:
            cell = f"{model}_{args.compare}"
            timed = timing(args, model, batch=args.also_batch)
            for path, result in side_by_side(cell, timed, device, tutorial=False).items():
                figures["second_batch"][path][cell] = result
            pair = figures["second_batch"]
            say(f"{cell} batch {args.also_batch}: framework {pair['framework'][cell]['images_per_s']:.0f}, "
                f"bare {pair['bare'][cell]['images_per_s']:.0f}")  # fmt: skip

    cell = args.options_cell
    options_timing = timing(args, cell.rsplit("_", 1)[0])
    for label, overrides in OPTIONS.items():
        if label in CUDA_ONLY and device.type != "cuda":
            continue
        if "fast.compile=true" in overrides and args.skip_compile:
            continue
        on_top = OPTIONS[BASELINE] if label not in (BASELINE, "defaults (conf/train.yaml)") else []
        figures["options"][label] = framework_path(cell, options_timing, args.work, *on_top, *overrides)
        say(f"{cell} {label}: {figures['options'][label]['images_per_s']:.0f} images/s")

    if args.processes > 1:
        cores = os.cpu_count() or 1
        for processes in (1, args.processes):
            threads = max(1, cores // processes) if device.type == "cpu" else torch.get_num_threads()
            figures["concurrency"].append(together := concurrent_runs(cell, processes, threads, options_timing))
            say(f"{processes} x {cell} at once, {threads} threads each: {together['images_per_s']:.0f} images/s")

    figures["stacked"] = []  # several seeds as one model (scripts/bench_stacked.py's two paths)
    for cell in args.stacked_cells:
        for batch in filter(None, (args.batch, args.also_batch)):
            stacked = measure_stacked(cell, STACKED_SEEDS, batch, STACKED_STEPS, STACKED_ROUNDS)
            figures["stacked"].append({"cell": cell, "batch": batch, "seeds": STACKED_SEEDS, **stacked})
            say(f"{STACKED_SEEDS} seeds of {cell} at batch {batch}: stacked {stacked['stacked']:.0f}, one after "
                f"another {stacked['separate']:.0f} images/s")  # fmt: skip

    digits, labels = bundled_digits(args.generate_n)
    figures["generation"] = {}
    for name in TABLE1:
        seconds, _, _ = time_generation(name, digits, labels, args.device, repeats=1)
        figures["generation"][name] = {"n": args.generate_n, "s": seconds * 60_000 / args.generate_n}
        say(f"generate {name}: {seconds:.2f} s for {args.generate_n:,}")

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        paper = compose("train", overrides=["profile=paper"]).profile
    figures["projection"] = projection(figures, paper, args.batch)
    defaults = compose_cell(cell, options_timing, args.work)
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
            "second_batch": args.also_batch,
            "warmup": args.warmup or "one window",
            "windows": args.windows or WINDOWS,
            "paired_windows": args.windows or {"seconds": PAIRED_SECONDS, "range": list(PAIRED_WINDOWS)},
            "steps": args.steps or WINDOW_STEPS,
            "n_train_digits": args.n_train,
            "val_size": args.val_size,
            "tutorial_workers": args.workers,
            "rounds": args.rounds or ROUNDS,
            "tutorial_rounds": TUTORIAL_ROUNDS,
        },
        "wall_s": wall_s,
    }
