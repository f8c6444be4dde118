"""Image classification with optional spatial transformers (Table 1, cluttered MNIST)."""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torchvision.utils import make_grid, save_image

from stn_repro.models import STClassifier
from stn_repro.transformers import split_localisation_parameters
from stn_repro.transformers.families import MatrixFamily


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


class ClassificationSystem(pl.LightningModule):
    """Cross-entropy training of a classifier; metrics ``train/loss``, ``val/err``, ``test/err`` (error in %).

    Args:
        model: any classifier ``(B, C, H, W) → (B, num_classes)``; an :class:`STClassifier` also gets θ statistics
            and input/transformed image grids.
        num_classes: number of classes.
        lr: base learning rate (SGD, the paper's optimiser).
        momentum, weight_decay: SGD settings (paper: 0 and 0).
        loc_lr_mult: learning-rate multiplier of the localisation nets (paper: 1 on MNIST, 0.1 on SVHN).
        lr_step_every: multiply the learning rate by ``lr_gamma`` every this many iterations (paper: 50k).
        lr_gamma: the step factor (paper: 0.1).
        theta_log_every: log θ statistics every this many training steps (0: never).
        image_log_every: send an input/transformed image grid to W&B every this many steps (0: never).
        figures_dir: where the input/transformed grid PNG is written at the end of training (``None``: nowhere).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        loc_lr_mult: float = 1.0,
        lr_step_every: int = 50_000,
        lr_gamma: float = 0.1,
        theta_log_every: int = 100,
        image_log_every: int = 1000,
        figures_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.loc_lr_mult = loc_lr_mult
        self.lr_step_every = lr_step_every
        self.lr_gamma = lr_gamma
        self.theta_log_every = theta_log_every
        self.image_log_every = image_log_every
        self.figures_dir = Path(figures_dir) if figures_dir is not None else None
        self.val_accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self._preview: Tensor | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    # -- steps ---------------------------------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        images, labels = batch[0], batch[1]
        loss = F.cross_entropy(self.model(images), labels)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"training diverged at step {self.global_step}: the loss is {loss.item()}; "
                "lower optim.lr or set optim.grad_clip (e.g. optim.grad_clip=1.0)"
            )
        self.log("train/loss", loss, prog_bar=True)
        if self.theta_log_every and self.global_step % self.theta_log_every == 0:
            self._log_theta()
        if self._preview is None:
            self._preview = images[:16].detach()
        if self.image_log_every and self.global_step % self.image_log_every == 0:
            self._log_grid_to_wandb()
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.val_accuracy.update(self.model(batch[0]), batch[1])

    def on_validation_epoch_end(self) -> None:
        self.log("val/err", 100.0 * (1.0 - self.val_accuracy.compute()), prog_bar=True)
        self.val_accuracy.reset()

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.test_accuracy.update(self.model(batch[0]), batch[1])

    def on_test_epoch_end(self) -> None:
        self.log("test/err", 100.0 * (1.0 - self.test_accuracy.compute()))
        self.test_accuracy.reset()

    # -- optimisation --------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        localisation, other = split_localisation_parameters(self.model)
        groups = [{"params": other, "lr": self.lr}]
        if localisation:
            groups.append({"params": localisation, "lr": self.lr * self.loc_lr_mult})
        optimiser = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        step_every, gamma = self.lr_step_every, self.lr_gamma
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: gamma ** (step // step_every))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- transformer diagnostics ---------------------------------------------------------------------------------

    def _log_theta(self) -> None:
        if not isinstance(self.model, STClassifier) or self.model.transformer.theta is None:
            return
        transformer = self.model.transformer
        theta = transformer.theta.detach().float()
        family = transformer.family
        stats = {"theta/dist_identity": (theta - family.identity(1, device=theta.device)).norm(dim=1).mean()}
        if isinstance(family, MatrixFamily):
            matrix = family.matrix(theta)
            linear = matrix[:, :2, :2]
            stats["theta/det"] = torch.linalg.det(linear).mean()
            stats["theta/scale"] = torch.linalg.det(linear).abs().sqrt().mean()
            stats["theta/tx"] = matrix[:, 0, -1].mean()
            stats["theta/ty"] = matrix[:, 1, -1].mean()
        self.log_dict(stats)

    def transformed_grid(self, images: Tensor) -> Tensor | None:
        """Inputs next to the transformer's outputs (the paper's Figure 3): ``(3, H', W')`` image, or ``None``."""
        if not isinstance(self.model, STClassifier):
            return None
        with torch.no_grad():
            warped = self.model.transformer(images)
        rows = torch.stack([images, warped], dim=1).flatten(0, 1)[:, :1]
        return make_grid(rows.clamp(0, 1), nrow=2 * int(math.ceil(math.sqrt(len(images)))), padding=2, pad_value=0.5)

    def _log_grid_to_wandb(self) -> Tensor | None:
        wandb_loggers = [lg for lg in self.loggers if isinstance(lg, pl.loggers.WandbLogger)]
        grid = self.transformed_grid(self._preview) if self._preview is not None else None
        if grid is not None:
            for logger in wandb_loggers:
                logger.log_image("transformed", [grid], step=self.global_step)
        return grid

    def on_train_end(self) -> None:
        grid = self._log_grid_to_wandb()
        if grid is not None and self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.figures_dir / "transformed.png")
