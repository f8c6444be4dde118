"""Inputs next to what the input transformer makes of them (the paper's Figure 3), during and after training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision.utils import save_image

from stn_repro.data.batches import BatchGroup

PREVIEW = 16  # training inputs shown


class TransformedImages(pl.Callback):
    """The system's ``transformed_grid(images)`` (``(3, H', W')``, or ``None`` for a model without an input
    transformer) of the first :data:`PREVIEW` training inputs the run sees: to every W&B logger every ``every``
    optimiser steps (0: never) and at the end of training, and as ``figures_dir/transformed.png`` at the end of
    training (``figures_dir`` ``None``: no file).

    The grid is drawn after the step's forward pass and before its backward pass, with the weights the step starts
    from.
    """

    def __init__(self, every: int, figures_dir: str | Path | None = None) -> None:
        if every < 0:
            raise ValueError(f"TransformedImages every must be >= 0, got {every}")
        self.every = every
        self.figures_dir = Path(figures_dir) if figures_dir is not None else None
        self._preview: Tensor | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any) -> None:
        if self._preview is None:
            if isinstance(batch, BatchGroup):  # fast.steps_per_call > 1: its first batch, as training_step sees it
                batch = pl_module.grouped_steps.hand_over(batch.first)
            self._preview = batch[0][:PREVIEW].detach()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        grid = self._log(trainer, pl_module)
        if grid is not None and self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.figures_dir / "transformed.png")

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor | None:
        grid = pl_module.transformed_grid(self._preview) if self._preview is not None else None
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, pl.loggers.WandbLogger)]
        if grid is not None and wandb_loggers:
            image = _to_uint8(grid)
            for logger in wandb_loggers:
                logger.log_image("transformed", [image], step=trainer.global_step)
        return grid


def _to_uint8(grid: Tensor) -> np.ndarray:
    """An image grid ``(C, H, W)`` of floats in [0, 1] as ``(H, W, C)`` uint8 (wandb casts float arrays to uint8
    without scaling: a [0, 1] grid would be black)."""
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
