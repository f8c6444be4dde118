"""What a run prints while it trains.

- First line: the cell, its profile, device and data source (:func:`run_summary`); in a suite it starts with
  :func:`suite_line` (``cell i/n``, cells done, elapsed time and the suite's ETA). The data modules' messages
  follow it, indented (:func:`indented`).
- On a terminal: a bar over the run's optimiser steps with their rate and ETA (:class:`StepProgressBar`).
- Without one (nohup, tee, CI): a line every ``progress.every`` steps and one after each validation
  (:class:`ProgressLines`).

Both go to stdout, so whether stdout is a terminal chooses between them (:func:`interactive`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from stn_repro.console import say
from stn_repro.scaling import world_size

_DATASETS = {"mnist": "MNIST digits", "fashion_mnist": "Fashion-MNIST digits", "svhn": "SVHN images"}


def interactive() -> bool:
    """Whether stdout is a terminal (a progress bar) rather than a file or a pipe (progress lines)."""
    return sys.stdout.isatty()


def progress_callback(cfg: DictConfig) -> pl.Callback:
    """:class:`StepProgressBar` on a terminal, else :class:`ProgressLines` every ``cfg.progress.every`` steps."""
    if interactive():
        return StepProgressBar()
    return ProgressLines(cfg.progress.every, cfg.profile.batch_size)


def indented(message: str) -> None:
    """Print ``message`` under the run's first line (a module-level function: data modules keep it as their
    ``log``, and ``ddp_spawn`` pickles them)."""
    say(f"  {message}")


def duration(seconds: float) -> str:
    """``42 s``, ``12m05s`` or ``3h07m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def suite_line(index: int, total: int, started: float | None, now: float | None = None) -> str:
    """``cell i/n`` for job ``index`` (0-based) of ``total``, with the cells done, the time since ``started`` (the
    suite's start, Unix time) and the suite's ETA when it is known. The jobs before ``index`` are taken as done (the
    basic launcher runs them one after another) and the remaining ones to last as long on average."""
    line = f"cell {index + 1}/{total}"
    if started is None or index == 0:
        return line
    elapsed = (time.time() if now is None else now) - started
    eta = elapsed / index * (total - index)
    return f"{line} ({index}/{total} done, {duration(elapsed)} elapsed, suite ETA {duration(eta)})"


def device_summary(cfg: DictConfig) -> str:
    """What the run trains on, from its config (the first line comes before the trainer exists): ``cpu``,
    ``cuda:0 (NVIDIA H200)``, ``cuda:0 x8 (ddp, NVIDIA H200)``."""
    accelerator = cfg.trainer.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        device, notes = "cuda:0", [torch.cuda.get_device_name(0)]
    else:
        device, notes = accelerator, []
    processes = world_size(cfg)
    if processes > 1:
        device, notes = f"{device} x{processes}", [cfg.trainer.strategy, *notes]
    return f"{device} ({', '.join(notes)})" if notes else device


def data_summary(source: dict[str, Any]) -> str:
    """E.g. ``data bundled (5,000 MNIST digits, NOT the full dataset)``, from a data module's source metadata."""
    if "n_images" in source:  # SVHN: a count per split
        count = sum(source["n_images"].values())
    else:
        count = source["n_train"] + source["n_test"]
    sample = "" if source["full_dataset"] else ", NOT the full dataset"
    name = _DATASETS.get(source["digits"], f"{source['digits']} images")
    return f"data {source['source']} ({count:,} {name}{sample})"


def run_summary(cfg: DictConfig, source: dict[str, Any]) -> str:
    """``profile quick, cpu, data bundled (5,000 MNIST digits, NOT the full dataset)``."""
    return f"profile {cfg.profile.name}, {device_summary(cfg)}, {data_summary(source)}"


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar, counting the run's optimiser steps (``i/max_steps``, rate and ETA) instead of an epoch's
    batches (``Epoch 0/-2`` under ``max_steps``); a resumed run starts at its checkpoint's step."""

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc="steps",
            total=self.trainer.max_steps,
            initial=self.trainer.global_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, *_: Any) -> None:
        """One bar for the whole run: nothing restarts with an epoch."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar


class ProgressLines(pl.Callback):
    """A line after each training step that passes a multiple of ``every`` optimiser steps (step i/N, the last
    logged training loss, the last validation error, images/s, elapsed time and ETA) and one after each validation,
    from global rank 0. The metrics are read from ``trainer.callback_metrics`` at those steps only (one device
    synchronisation per line)."""

    def __init__(self, every: int, batch_size: int) -> None:
        self.every = every
        self.batch_size = batch_size  # the global batch: images per optimiser step
        self._start = (0.0, 0)
        self._lines = 0  # multiples of `every` passed so far

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._start = (time.perf_counter(), trainer.global_step)
        self._lines = trainer.global_step // self.every

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        step = trainer.global_step  # advances by fast.steps_per_call per training step
        if not trainer.is_global_zero or step // self.every == self._lines:
            return
        self._lines = step // self.every
        metrics = trainer.callback_metrics
        parts = [f"loss {float(metrics['train/loss']):.4f}"] if "train/loss" in metrics else []
        if "val/err" in metrics:
            parts.append(f"val err {float(metrics['val/err']):.2f}%")
        started, first = self._start
        elapsed, done = time.perf_counter() - started, step - first
        eta = elapsed / done * (trainer.max_steps - step)
        parts += [f"{self.batch_size * done / elapsed:,.0f} img/s", f"{duration(elapsed)} elapsed, ETA {duration(eta)}"]
        say(f"  {_steps(trainer)}: {', '.join(parts)}")

    def on_validation_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and "val/err" in trainer.callback_metrics:
            error = float(trainer.callback_metrics["val/err"])
            say(f"  validation at {_steps(trainer)}: val err {error:.2f}%")


def _steps(trainer: pl.Trainer) -> str:
    return f"step {trainer.global_step:,}/{trainer.max_steps:,}"
