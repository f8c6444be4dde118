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


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """:class:`~torch.optim.lr_scheduler.LambdaLR` with one ``factor(step)`` for every parameter group (each group's
    rate is its base rate times it), whose :meth:`step` does only that arithmetic: the same rates as LambdaLR's
    (``base_lr * factor(step)``), for a fraction of its Python per step (it runs once per optimiser step, and a
    small model's step is ~1 ms on a CPU core). Torch's own step runs for what it checks or handles: the first
    step (its order checks), an explicit ``epoch``, and rates held as tensors. Its state is LambdaLR's. Built with one
    function (``StepSchedule(optimizer, factor)``), which ``lr_lambdas`` holds once per group."""

    def step(self, epoch: int | None = None) -> None:
        groups = self.optimizer.param_groups
        if epoch is not None or self._step_count == 1 or any(isinstance(g["lr"], torch.Tensor) for g in groups):
            super().step(epoch)
            return
        self._step_count += 1
        self.last_epoch += 1
        factor = self.lr_lambdas[0](self.last_epoch)
        for group, base_lr in zip(groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        self._last_lr = [group["lr"] for group in groups]


def step_schedule(
    optimizer: torch.optim.Optimizer,
    every: int = 50_000,
    gamma: float = 0.1,
    milestones: Sequence[int] | None = None,
) -> StepSchedule:
    """Every group's rate times ``gamma`` to the number of steps passed: every ``every`` iterations (paper: 50k,
    ×0.1), or at each of ``milestones`` when given (CUB). Stepped once per optimiser step."""
    points = sorted(milestones) if milestones else None

    def factor(step: int) -> float:
        if points is not None:
            return gamma ** bisect.bisect_right(points, step)
        return gamma ** (step // every)

    return StepSchedule(optimizer, factor)


def scale_group_rate(optimizer: torch.optim.Optimizer, index: int, factor: float) -> None:
    """Multiply the rate of ``optimizer``'s parameter group ``index`` by ``factor`` (the localisation nets' rate,
    ``loc_lr_mult``); before a schedule is attached, so the schedule starts from the scaled rate."""
    group = optimizer.param_groups[index]
    group["lr"] = group["lr"] * factor
