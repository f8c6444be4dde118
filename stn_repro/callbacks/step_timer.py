"""The median wall time of a training step."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch


class StepTimer(pl.Callback):
    """Median wall time of an optimiser step: each Lightning training step (its batch built, then one optimiser step,
    or ``fast.steps_per_call`` of them) from its start to its end, divided by its optimiser steps; the training steps
    that start within a warm-up of up to 10 optimiser steps (a tenth of the run for short runs) are left out.
    Validation, which runs between training steps, is not counted."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: tuple[float, int] | None = None  # (time, optimiser step) at the current training step's start
        self._warmup = 10

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._warmup = min(10, trainer.max_steps // 10)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        started, first = self._start
        if first >= self._warmup and trainer.global_step > first:
            self.times.append((time.perf_counter() - started) / (trainer.global_step - first))

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # published as metrics: ddp_spawn's ranks hand only trainer.callback_metrics (and weights) back to the job
        trainer.callback_metrics["train/steps"] = torch.tensor(trainer.global_step)
        if self.median_ms is not None:
            trainer.callback_metrics["train/step_ms"] = torch.tensor(self.median_ms, dtype=torch.float64)

    @property
    def median_ms(self) -> float | None:
        return round(1000 * statistics.median(self.times), 3) if self.times else None
