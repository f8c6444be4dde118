"""The median wall time of a training step."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch


class StepTimer(pl.Callback):
    """Median wall time of a training iteration (batch start to next batch start) after a warm-up of up to 10
    iterations (a tenth of the run for short runs)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None
        self._warmup = 10

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._warmup = min(10, trainer.max_steps // 10)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None and trainer.global_step > self._warmup:
            self.times.append(now - self._last)
        self._last = now

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # published as metrics: ddp_spawn's ranks hand only trainer.callback_metrics (and weights) back to the job
        trainer.callback_metrics["train/steps"] = torch.tensor(trainer.global_step)
        if self.median_ms is not None:
            trainer.callback_metrics["train/step_ms"] = torch.tensor(self.median_ms, dtype=torch.float64)

    @property
    def median_ms(self) -> float | None:
        return round(1000 * statistics.median(self.times), 3) if self.times else None
