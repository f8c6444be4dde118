"""The fast training path's model options (``fast:`` in ``conf/train.yaml``), applied in one place.

What makes training fast without an option: data resident on the training device and batches sliced by index
(:class:`~stn_repro.data.batches.TensorBatches`, no worker processes), per-epoch distortions generated on that
device, and training scalars accumulated on the device and logged every ``fast.log_every`` steps
(:class:`~stn_repro.systems.ClassificationSystem`). The options below, and mixed precision
(``trainer.precision=bf16-mixed``; the transformer's grid and sampler stay in float32), change the arithmetic only
up to rounding (``tests/test_fast_path.py``); each is measured by ``scripts/bench.py`` (``results/bench.md``) and on
by default only where it wins there.

- ``fast.channels_last``: 2D convolution weights (and so their outputs) in NHWC memory layout.
- ``fast.compile``: ``torch.compile`` of the model in place (its ``state_dict`` keys and checkpoints are unchanged);
  ``fast.compile_mode=reduce-overhead`` adds CUDA graphs (CUDA only: a graph per batch shape, replayed without
  per-kernel launch cost). On CPU it needs a C++ compiler; the first steps are slow while it compiles.
- ``fast.steps_per_call``: optimiser steps per Lightning training step (:func:`steps_per_call`). Lightning's own
  work per training step (hooks, loops, logging: about 1-2 ms on a CPU core) is then paid once per ``K`` steps, which
  is what lets a small model train at a bare loop's speed. The steps, their batches, schedule, clipping, logging,
  validation and checkpoints are those of ``K = 1``, bitwise (``tests/test_steps_per_call.py``). What differs: a
  callback's ``on_train_batch_start``/``_end`` run once per ``K`` steps (the per-step hooks, e.g.
  ``on_before_backward``, still run every step), and Lightning's own ``epoch`` count stays 0 (one Lightning epoch
  holds the run; the data still change epoch as before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from stn_repro.config import ConfigError
from stn_repro.scaling import world_size
from stn_repro.systems import ClassificationSystem

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CUDA_ONLY_COMPILE_MODES = ("reduce-overhead",)


def apply_fast_options(model: nn.Module, fast: Mapping[str, Any]) -> nn.Module:
    """``model`` with the ``fast`` options (``channels_last``, ``compile``, ``compile_mode``) applied in place."""
    if fast["channels_last"]:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):  # 2D convolutions only (a 3D one would need channels_last_3d)
                module.to(memory_format=torch.channels_last)
    if fast["compile"]:
        model.compile(mode=fast["compile_mode"])
    return model


def steps_per_call(cfg: DictConfig) -> int:
    """Optimiser steps per Lightning training step, ``K``, from ``fast.steps_per_call``.

    Every step at which something happens between steps (a validation with its checkpoint every
    ``profile.val_every``, a logged window and divergence check every ``fast.log_every``, the last step) must end a
    call, so ``K`` divides all three; ``auto`` takes their greatest common divisor (50 with the defaults) where the
    run can take several steps per call, else 1. Several steps per call need one process (DDP synchronises
    gradients once per forward of its wrapped module, i.e. once per call), a precision without a gradient scaler
    (not ``16-mixed``), a system that trains with
    :class:`~stn_repro.systems.ClassificationSystem`'s own ``training_step`` (the co-localisation system has its own)
    and training batches from an :class:`~stn_repro.data.batches.EpochBatches` (not CUB's worker DataLoader).

    Raises:
        ConfigError: an explicit ``K > 1`` that does not divide them, or a run that cannot take several steps.
    """
    iterations = cfg.profile.iterations
    intervals = {
        "profile.iterations": iterations,
        "profile.val_every": min(cfg.profile.val_every, iterations),
        "fast.log_every": min(cfg.fast.log_every, iterations),
    }
    common = math.gcd(*intervals.values())
    system, data = get_class(cfg.system._target_), get_class(cfg.data._target_)
    own_step = issubclass(system, ClassificationSystem) and system.training_step is ClassificationSystem.training_step
    blocker = (
        f"{world_size(cfg)} processes (DDP)" if world_size(cfg) > 1
        else "trainer.precision=16-mixed steps through its gradient scaler" if cfg.trainer.precision == "16-mixed"
        else f"{system.__name__} has its own training_step" if not own_step
        else f"{data.__name__}'s training batches are a DataLoader" if not getattr(data, "epoch_batches", False)
        else None
    )  # fmt: skip
    requested = cfg.fast.steps_per_call
    if requested == "auto":
        return common if blocker is None else 1
    if requested > 1 and blocker is not None:
        raise ConfigError(
            f"config error: fast.steps_per_call={requested} is not possible here: {blocker}; use fast.steps_per_call=1"
        )
    if common % requested:
        values = ", ".join(f"{key}={value}" for key, value in intervals.items())
        raise ConfigError(
            f"config error: fast.steps_per_call={requested} is invalid; expected a divisor of {values} (every "
            f"validation, logged window and the last step end a call): e.g. {common}, or auto"
        )
    return requested
