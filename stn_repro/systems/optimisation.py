"""The optimisers and the learning-rate schedule a system is given, as factories (``functools.partial``, as Hydra's
``_partial_: true`` builds them): the system calls ``optimizer(parameter_groups)`` and ``scheduler(optimiser)``.

- :func:`optimizer_factory`: ``sgd`` (the paper's), ``rmsprop`` (Sønderby et al.'s recurrent STN, Lasagne's
  smoothing 0.9 and ε 1e-6) or ``adam`` (torch's defaults; no momentum).
- :func:`step_schedule`: the paper's step schedule, as a per-iteration factor of the base rate.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

OPTIMIZERS = ("sgd", "rmsprop", "adam")
OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def optimizer_factory(
    name: str = "sgd", lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0
) -> OptimizerFactory:
    """``groups → optimiser`` for the optimiser ``name`` (one of :data:`OPTIMIZERS`) at base rate ``lr``.

    Raises:
        ValueError: ``name`` is not one of :data:`OPTIMIZERS`.
    """
    if name == "sgd":
        return partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return partial(torch.optim.RMSprop, lr=lr, alpha=0.9, eps=1e-6, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def step_schedule(
    optimizer: torch.optim.Optimizer,
    every: int = 50_000,
    gamma: float = 0.1,
    milestones: Sequence[int] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's rate times ``gamma`` to the number of steps passed: every ``every`` iterations (paper: 50k,
    ×0.1), or at each of ``milestones`` when given (CUB). Stepped once per optimiser step."""
    points = sorted(milestones) if milestones else None

    def factor(step: int) -> float:
        if points is not None:
            return gamma ** bisect.bisect_right(points, step)
        return gamma ** (step // every)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def scale_group_rate(optimizer: torch.optim.Optimizer, index: int, factor: float) -> None:
    """Multiply the rate of ``optimizer``'s parameter group ``index`` by ``factor`` (the localisation nets' rate,
    ``loc_lr_mult``); before a schedule is attached, so the schedule starts from the scaled rate."""
    group = optimizer.param_groups[index]
    group["lr"] = group["lr"] * factor
