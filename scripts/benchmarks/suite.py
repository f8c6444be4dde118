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
from hydra import compose, initialize_config_dir

from benchmarks.loops import (
    bare_loop,
    cell_data_and_model,
    combine_rounds,
    compose_cell,
    concurrent_runs,
    evaluation_rate,
    framework_path,
    tutorial_loop,
)
from benchmarks.plan import BASELINE, CONF, CUDA_ONLY, OPTIONS
from benchmarks.projection import projection


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
