"""What differs between the paper's experiments: how a run checks its configuration, builds its data, model and
system, and departs from the paper's protocol. ``cfg.data.kind`` picks the task (one module each);
:mod:`stn_repro.train` does the rest the same way for every task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro.tasks import colocalisation, cub, mnist, sequences, svhn, volumes
from stn_repro.tasks.base import Task
from stn_repro.transformers import ALIGN_CORNERS

TASKS: dict[str, Task] = {
    "mnist": mnist.TASK,
    "svhn": svhn.TASK,
    "cub": cub.TASK,
    "colocalisation": colocalisation.TASK,
    "mnist_sequence": sequences.TASK,
    "mnist3d": volumes.TASK,
}


def get_task(cfg: DictConfig) -> Task:
    """The task of ``cfg.data.kind``."""
    return TASKS[cfg.data.kind]


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """The ways a run departs from the paper's protocol, in words (they go into every results row)."""
    notes = [
        *get_task(cfg).deviations(cfg, meta, sizes),
        f"sampler align_corners={ALIGN_CORNERS} (2015 Torch samplers: True)",
    ]
    scale = OmegaConf.select(cfg, "transformer.options.perspective_scale", default=1.0)
    if OmegaConf.select(cfg, "transformer.family") == "projective" and scale != 1.0:
        notes.append(
            f"projective transformer: the perspective row (g, h) is {scale:g} times its two parameters, slowing them "
            "under Adam (the paper: the plain homography)"
        )
    return notes


def preflight(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Check that a run of ``cfg`` can start (its data and, for CUB, its pretrained weights are in place) without
    training anything; returns the data's source metadata (``source``, ``digits``, ``full_dataset``, ...).

    Raises:
        DataError: the data is missing or unreadable (the message says where to put it).
        PretrainedWeightsError: the configured weights file is missing or invalid.
    """
    task = get_task(cfg)
    data = task.data(cfg)
    data.log = log  # what resolving the data says (the source used, a failed download)
    source = data.source_metadata()
    if task.preflight is not None:
        task.preflight(cfg)
    return source
