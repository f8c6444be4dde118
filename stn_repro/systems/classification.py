"""Image classification with optional spatial transformers (Table 1, cluttered MNIST, CUB), and the base of the
other systems: the optimiser and schedule they are given (:mod:`stn_repro.systems.optimisation`) with a
localisation learning-rate multiplier, divergence checks, θ statistics and input/transformed image grids."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torchvision.utils import make_grid

from stn_repro.config import ConfigError
from stn_repro.data.batches import BatchGroup
from stn_repro.systems.grouped_steps import GroupedSteps
from stn_repro.systems.optimisation import (
    OptimizerFactory,
    SchedulerFactory,
    paper_sgd,
    scale_group_rate,
    step_schedule,
)
from stn_repro.transformers import SpatialTransformer, TransformFamily, split_localisation_parameters
from stn_repro.transformers.families import MatrixFamily
from stn_repro.transformers.grids import rotation_angle


def theta_statistics(theta: Tensor, family: TransformFamily) -> dict[str, Tensor]:
    """Batch means of θ ``(B, P)``: distance to the identity and, for 2D matrix families, the determinant, the
    scale (√|det|) and the translation ``tx``, ``ty`` (normalised coordinates)."""
    stats = {"dist_identity": (theta - family.identity(1, device=theta.device)).norm(dim=1).mean()}
    if isinstance(family, MatrixFamily) and family.spatial_dims == 2:
        matrix = family.matrix(theta)
        det = torch.linalg.det(matrix[:, :2, :2])
        stats.update(
            det=det.mean(), scale=det.abs().sqrt().mean(), tx=matrix[:, 0, -1].mean(), ty=matrix[:, 1, -1].mean()
        )
    return stats


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


THETA_TARGETS = ("full", "rotation")
#: What a diverged run's error line tells the user to change.
DIVERGENCE_HINT = "lower system.optimizer.lr or clip the gradients (e.g. trainer.gradient_clip_val=1.0)"


class ClassificationSystem(pl.LightningModule):
    """Cross-entropy training of a classifier; metrics ``train/loss``, ``val/err``, ``test/err`` (error in %).

    Subclasses change the task by overriding :meth:`loss` and :meth:`wrong` (e.g. sequences of digits).
    Training scalars are averaged on the device over the trainer's ``log_every_n_steps`` and logged (and checked for
    NaN/inf) once per interval, so the device is not synchronised every step.

    Args:
        model: any classifier ``(B, C, H, W) → (B, num_classes)``. Every :class:`SpatialTransformer` inside gets
            θ statistics; a transformer on the input (``model.transformer``) also gets input/transformed grids.
        optimizer: ``parameter groups → optimiser`` at the base rate (default: the paper's SGD, lr 0.01, no
            momentum, no weight decay; the configuration's ``system.optimizer``, ``conf/optimizer/``).
        scheduler: ``optimiser → schedule``, stepped every iteration (default: the paper's ×0.1 every 50k;
            :func:`~stn_repro.systems.optimisation.step_schedule`).
        loc_lr_mult: learning-rate multiplier of the localisation nets (paper: 1 on MNIST, 0.1 on SVHN).
        figures_dir: where a subclass writes its figures (``None``: nowhere).
        theta_loss_weight: weight of an auxiliary loss pulling the input transformer's θ towards the true inverse of
            the distortion (supervised transformer training; 0: off, the paper's unsupervised setting). Needs
            batches ``(images, labels, truth)`` with ``truth["theta"]``, the distortion's sampling parameters of the
            transformer's family (canvas → digit), so the target is ``family.inverse(truth["theta"])``.
        theta_target: what the θ loss knows of that target (weak supervision): ``"full"`` (every parameter, mean
            squared error) or ``"rotation"`` (only the rotation angle of the target's linear part, loss
            ``2 (1 - cos Δ)`` ≈ Δ² in radians, wrap-safe; families with a matrix).
        theta_target_noise: standard deviation of Gaussian noise added to the target at every step (θ's
            parameters for ``"full"``, the angle in radians for ``"rotation"``): a noisy annotation of each sample
            (with distortions re-drawn every epoch a sample is seen once).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        loc_lr_mult: float = 1.0,
        figures_dir: str | Path | None = None,
        theta_loss_weight: float = 0.0,
        theta_target: str = "full",
        theta_target_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer if optimizer is not None else paper_sgd
        self.scheduler_factory = scheduler if scheduler is not None else step_schedule
        self.loc_lr_mult = loc_lr_mult
        self.figures_dir = Path(figures_dir) if figures_dir is not None else None
        if theta_target not in THETA_TARGETS:
            raise ValueError(f"theta_target must be one of {', '.join(THETA_TARGETS)}, got {theta_target!r}")
        self.theta_loss_weight = theta_loss_weight
        self.theta_target = theta_target
        self.theta_target_noise = theta_target_noise
        self.val_error = torchmetrics.MeanMetric()
        self.test_error = torchmetrics.MeanMetric()
        self._window = SimpleNamespace(steps=[], first=0, last=0)  # the logged training scalars since the last logging
        self._test_wrong: list[Tensor] = []
        self.test_wrong: Tensor | None = None  # bool (N,), after a test: which test images the model got wrong
        self.steps_per_call, self.gradient_clip_val = 1, None  # take_steps_per_call
        self.grouped_steps: GroupedSteps | None = None  # with steps_per_call > 1, from the start of training

    def forward(self, images: Tensor):
        return self.model(images)

    # -- the task ------------------------------------------------------------------------------------------------

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Training loss of a batch: cross-entropy of logits ``(B, K)`` against labels ``(B,)``."""
        return F.cross_entropy(outputs, labels)

    def wrong(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Per-sample errors ``(B,)`` as floats (1: wrong, 0: right)."""
        return (outputs.argmax(1) != labels).float()

    def theta_loss(self, true_theta: Tensor) -> Tensor:
        """Mean squared distance between the input transformer's last θ ``(B, P)`` and the inverse of the true
        distortion ``true_theta`` ``(B, P)`` (the transform that puts the digit back in its canonical frame)."""
        transformer = getattr(self.model, "transformer", None)
        if not isinstance(transformer, SpatialTransformer) or transformer.theta is None:
            raise ValueError("theta_loss_weight > 0 needs a model with one input transformer (model.transformer)")
        theta, family = transformer.theta, transformer.family
        target = family.inverse(true_theta.to(theta))
        if self.theta_target == "rotation":
            delta = rotation_angle(family.matrix(theta)) - rotation_angle(family.matrix(target))
            if self.theta_target_noise:
                delta = delta - self.theta_target_noise * torch.randn_like(delta)
            return (2.0 * (1.0 - torch.cos(delta))).mean()
        if self.theta_target_noise:
            target = target + self.theta_target_noise * torch.randn_like(target)
        return F.mse_loss(theta, target)

    # -- steps ---------------------------------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, ...] | BatchGroup, batch_idx: int) -> Tensor | None:
        if self.automatic_optimization:
            return self._training_loss(batch)
        self.grouped_steps.run(batch, self._training_loss)  # fast.steps_per_call optimiser steps
        return None

    def on_train_start(self) -> None:
        if not self.automatic_optimization:
            self.grouped_steps = GroupedSteps(self, self.gradient_clip_val)

    def _training_loss(self, batch: tuple[Tensor, ...]) -> Tensor:
        """The loss of one training batch (with the θ loss, if any), added to the logged window."""
        loss = self.loss(self.model(batch[0]), batch[1])
        if not self.theta_loss_weight:
            self._log_window({"train/loss": loss.detach()})
            return loss
        theta_loss = self.theta_loss(batch[2]["theta"])
        loss = loss + self.theta_loss_weight * theta_loss
        self._log_window({"train/theta_loss": theta_loss.detach(), "train/loss": loss.detach()})
        return loss

    def take_steps_per_call(self, steps: int, gradient_clip_val: float | None = None) -> None:
        """Take ``steps`` optimiser steps per Lightning training step (``fast.steps_per_call``): the training
        batches then come as :class:`~stn_repro.data.batches.BatchGroup` items of ``steps`` batches
        (:meth:`~stn_repro.data.base.SplitDataModule.train_in_groups`), and :attr:`grouped_steps`
        (:class:`~stn_repro.systems.grouped_steps.GroupedSteps`) takes them as Lightning takes one step, clipping the
        gradients to total norm ``gradient_clip_val`` (the trainer must then have none). ``trainer.global_step``
        and the loggers' step still count optimiser steps; ``val_check_interval`` counts training steps."""
        if steps < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps}")
        self.steps_per_call = steps
        self.gradient_clip_val = gradient_clip_val
        self.automatic_optimization = steps == 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["steps_per_call"] = self.steps_per_call  # the loop's batch counters count calls

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("steps_per_call", 1)
        if saved != self.steps_per_call:
            raise ConfigError(
                f"config error: the checkpoint to resume from was written with fast.steps_per_call={saved}, this run "
                f"takes {self.steps_per_call}; resume with fast.steps_per_call={saved} (it follows fast.log_every "
                "under auto), or start again with rerun=true"
            )

    def _log_window(self, values: dict[str, Tensor]) -> None:
        """Keep this optimiser step's detached scalar ``values``; at the trainer's logging interval
        (``log_every_n_steps``, from ``fast.log_every``) and at the last step, log their means over the window and
        stop a run whose loss became NaN/inf (:class:`DivergedError`). Called once per optimiser step. One device
        synchronisation per interval, not one per step: a non-finite step makes the window's sum non-finite, so
        none is missed. Per step, only the values are kept (the sums are taken at the window's end, in step order)."""
        window = self._window
        if not window.steps:  # a window starts: the step at which it ends
            trainer, window.first = self.trainer, self.global_step + 1
            window.last = window.first + (-window.first) % trainer.log_every_n_steps
            if trainer.max_steps > 0:
                window.last = min(window.last, trainer.max_steps)
        window.steps.append(values)
        if window.first + len(window.steps) <= window.last:
            return
        steps, first = window.steps, window.first
        window.steps = []
        means = {name: self._window_sum(steps, name) / len(steps) for name in values}
        if not torch.isfinite(means["train/loss"]):
            raise DivergedError(
                f"training diverged between steps {first - 1} and {first + len(steps) - 2}: the mean loss of those "
                f"steps is {means['train/loss'].item()}; {DIVERGENCE_HINT}"
            )
        self.log("train/loss", means.pop("train/loss"), prog_bar=True)
        if means:
            self.log_dict(means)

    @staticmethod
    def _window_sum(steps: list[dict[str, Tensor]], name: str) -> Tensor:
        """The sum of value ``name`` over ``steps``, added in step order."""
        total = steps[0][name].clone()
        for values in steps[1:]:
            total.add_(values[name])
        return total

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.val_error.update(self.wrong(self.model(batch[0]), batch[1]))

    def on_validation_epoch_end(self) -> None:
        self.log("val/err", 100.0 * self.val_error.compute(), prog_bar=True)
        self.val_error.reset()

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        wrong = self.wrong(self.model(batch[0]), batch[1])
        self.test_error.update(wrong)
        self._test_wrong.append(wrong.detach().bool().cpu())

    def on_test_epoch_start(self) -> None:
        self._test_wrong = []

    def on_test_epoch_end(self) -> None:
        self.log("test/err", 100.0 * self.test_error.compute())
        self.test_error.reset()
        self.test_wrong = torch.cat(self._test_wrong) if self._test_wrong else None

    # -- optimisation --------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        localisation, other = split_localisation_parameters(self.model)
        groups = [{"params": other}] + ([{"params": localisation}] if localisation else [])
        return self.optimisation(groups, localisation_groups=[1] if localisation else [])

    def optimisation(self, groups: list[dict[str, Any]], localisation_groups: list[int]) -> dict[str, Any]:
        """Lightning's optimiser and per-step schedule over parameter ``groups``; the groups at the indices
        ``localisation_groups`` learn at ``loc_lr_mult`` times the base rate."""
        optimiser = self.optimizer_factory(groups)
        for index in localisation_groups:
            scale_group_rate(optimiser, index, self.loc_lr_mult)
        schedule = self.scheduler_factory(optimiser)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- transformer diagnostics ---------------------------------------------------------------------------------

    def theta_metrics(self) -> dict[str, Tensor]:
        """θ statistics of the last forward pass of every :class:`SpatialTransformer` (:func:`theta_statistics`),
        as 0-dim tensors named ``theta/<stat>``, or ``theta/<module>/<stat>`` when the model has several."""
        transformers = [(n, m) for n, m in self.model.named_modules() if isinstance(m, SpatialTransformer)]
        metrics = {}
        for name, transformer in transformers:
            if transformer.theta is not None:
                prefix = "theta/" if len(transformers) == 1 else f"theta/{name}/"
                stats = theta_statistics(transformer.theta.detach().float(), transformer.family)
                metrics.update({prefix + key: value for key, value in stats.items()})
        return metrics

    def transformed_grid(self, images: Tensor) -> Tensor | None:
        """Inputs next to the input transformer's outputs (the paper's Figure 3): ``(3, H', W')``, or ``None``."""
        transformer = getattr(self.model, "transformer", None)
        if not isinstance(transformer, SpatialTransformer):
            return None
        with torch.no_grad():
            warped = transformer(images)
        if warped.shape[-2:] != images.shape[-2:]:
            warped = F.interpolate(warped, size=images.shape[-2:], mode="bilinear", align_corners=False)
        rows = torch.stack([images, warped], dim=1).flatten(0, 1)
        return make_grid(rows.clamp(0, 1), nrow=2 * int(math.ceil(math.sqrt(len(images)))), padding=2, pad_value=0.5)
