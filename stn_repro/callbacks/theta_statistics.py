"""θ statistics of the transformers, logged every N optimiser steps."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class ThetaStatistics(pl.Callback):
    """Send the system's ``theta_metrics()`` (per transformer: the mean and spread of each θ parameter of the step's
    forward pass) to every logger at step ``global_step``, every ``every`` optimiser steps (0: never).

    From global rank 0 only, and independently of the trainer's ``log_every_n_steps``: one device synchronisation
    per logging step. Runs after the step's forward pass and before its backward pass, so the θ are those of the
    batch the step trains on.
    """

    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError(f"ThetaStatistics every must be >= 0, got {every}")
        self.every = every

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        if not self.every or trainer.global_step % self.every or not trainer.is_global_zero:
            return
        metrics = pl_module.theta_metrics()
        if metrics:
            values = dict(zip(metrics, torch.stack(list(metrics.values())).tolist(), strict=True))
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
