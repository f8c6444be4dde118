"""Several optimiser steps inside one Lightning training step (``fast.steps_per_call``).

Lightning's machinery around a training step (its loops, every callback's hooks, the logger connector, progress
tracking) costs about 1 ms of Python on a CPU core: as much as a whole step of a small Table 1 model. A
:class:`GroupedSteps` takes the ``K`` batches of a :class:`~stn_repro.data.batches.BatchGroup` inside one training
step and does for each what Lightning does for one step of automatic optimisation, in the same order and with the
same calls: the batch handed over (precision conversion, transfer hooks, device), ``on_before_zero_grad``, the
gradients zeroed, the loss, ``on_before_backward``, ``backward``, ``on_after_backward``,
``on_before_optimizer_step``, the precision plugin's gradient clipping, the optimiser step, the per-step schedules,
and the optimiser-step count behind ``trainer.global_step``. It only calls a hook on the callbacks (and the module)
that override it, and skips a hand-over that would change nothing (float32 data already on the device), which
leaves about a tenth of Lightning's per-step cost. The results are bitwise those of ``K = 1``
(``tests/test_steps_per_call.py``). Per training step, not per optimiser step, remain: ``on_train_batch_start`` and
``on_train_batch_end``, the logger flush and the validation check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from torch import Tensor

from stn_repro.data.batches import BatchGroup

#: The hooks Lightning calls around one optimiser step of automatic optimisation, in its order.
STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
#: The hooks of a batch's hand-over to ``training_step`` (on the module or the data module).
BATCH_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def _overrides(obj: Any, base: type, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(base, name)


class GroupedSteps:
    """The optimiser steps of a training step of ``system`` (under its trainer, in a fit): :meth:`run`.

    Args:
        system: a LightningModule with manual optimisation, one optimiser and per-step schedules.
        clip: clip the gradients to this total norm (Lightning's ``gradient_clip_val``, which the trainer must not
            have itself under manual optimisation); ``None``: no clipping.

    Raises:
        ValueError: the precision uses a gradient scaler (``16-mixed``), which needs Lightning's own step.
    """

    def __init__(self, system: pl.LightningModule, clip: float | None) -> None:
        trainer = system.trainer
        plugin = trainer.precision_plugin
        if getattr(plugin, "scaler", None) is not None:
            raise ValueError("several optimiser steps per training step need a precision without a gradient scaler")
        self.system, self.trainer, self.clip = system, trainer, clip
        self.optimiser = trainer.optimizers[0]
        self.schedules = [config.scheduler for config in trainer.lr_scheduler_configs if config.interval == "step"]
        self.progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        callbacks = trainer.callbacks
        self.hooks: dict[str, list[Callable[..., Any]]] = {
            name: [partial(getattr(c, name), trainer, system) for c in callbacks if _overrides(c, pl.Callback, name)]
            + ([getattr(system, name)] if _overrides(system, pl.LightningModule, name) else [])
            for name in STEP_HOOKS
        }  # fmt: skip
        datamodule = trainer.datamodule
        self.plain_hand_over = type(plugin).convert_input is Precision.convert_input and not any(
            _overrides(system, pl.LightningModule, name)
            or (datamodule is not None and _overrides(datamodule, pl.LightningDataModule, name))
            for name in BATCH_HOOKS
        )
        backward = system.backward if _overrides(system, pl.LightningModule, "backward") else Tensor.backward
        if isinstance(plugin, MixedPrecision):  # Lightning runs backward outside the autocast
            backward = partial(_without_autocast, system.device.type, backward)
        self.backward: Callable[[Tensor], Any] = backward

    def hand_over(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``batch`` as Lightning hands a batch to ``training_step`` (converted by the precision plugin, through
        the transfer hooks, on the device); as it is when that changes nothing."""
        if self._hands_over_as_is(batch):
            return batch
        batch = self.trainer.precision_plugin.convert_input(batch)
        return self.trainer.strategy.batch_to_device(self.system._on_before_batch_transfer(batch, dataloader_idx=0))

    def _hands_over_as_is(self, batch: tuple[Tensor, ...]) -> bool:
        return self.plain_hand_over and batch[0].device == self.system.device

    def run(self, group: BatchGroup, loss_of: Callable[[tuple[Tensor, ...]], Tensor]) -> None:
        """One optimiser step on each batch of ``group``, the loss of a batch given by ``loss_of``. The batches of a
        group come from one source, so the first tells whether they are handed over as they are."""
        before_zero_grad, before_backward, after_backward, before_step = (self.hooks[name] for name in STEP_HOOKS)
        optimiser, schedules, progress, backward = self.optimiser, self.schedules, self.progress, self.backward
        hand_over = None if self._hands_over_as_is(group.first) else self.hand_over
        steps_loop = self.trainer.fit_loop.epoch_loop
        for taken, batch in enumerate(group.batches(), 1):
            if hand_over is not None:
                batch = hand_over(batch)
            for hook in before_zero_grad:
                hook(optimiser)
            optimiser.zero_grad()
            loss = loss_of(batch)
            for hook in before_backward:
                hook(loss)
            backward(loss)
            for hook in after_backward:
                hook()
            for hook in before_step:
                hook(optimiser)
            if self.clip:
                self.system.clip_gradients(optimiser, self.clip, "norm")  # the precision plugin's, as Lightning's
            progress.increment_ready()
            optimiser.step()
            progress.increment_completed()  # trainer.global_step counts optimiser steps
            for schedule in schedules:
                schedule.step()
            if taken < group.size:  # Lightning counts the training step itself once it ends
                steps_loop._batches_that_stepped += 1  # so the loggers' step axis counts optimiser steps


def _without_autocast(device_type: str, backward: Callable[[Tensor], Any], loss: Tensor) -> None:
    with torch.autocast(device_type, enabled=False):
        backward(loss)
