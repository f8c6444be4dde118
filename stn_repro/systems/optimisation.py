"""The optimiser and learning-rate schedule a system is given, as factories: the system calls
``optimizer(parameter_groups)`` and ``scheduler(optimiser)``. The configuration builds them as Hydra partials
(``_partial_: true``): ``system.optimizer`` from ``conf/optimizer/`` (torch's SGD, RMSprop or Adam) and
``system.scheduler`` from ``conf/scheduler/step.yaml`` (:func:`step_schedule`, the paper's step schedule).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

#: The paper's optimiser: SGD at lr 0.01, no momentum, no weight decay (``conf/optimizer/sgd.yaml``).
paper_sgd: OptimizerFactory = partial(torch.optim.SGD, lr=0.01, momentum=0.0, weight_decay=0.0)


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
