"""What the paper's experiment families know beyond what their classes check: the checks across keys (a
transformer family the model takes, a θ loss the data can feed, ...) and how a run departs from the paper's
protocol. The data module's class names its family (``task``); the data, model and system themselves are built
from their nodes by :mod:`stn_repro.components`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro import components
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


def get_task(cfg: DictConfig) -> Task | None:
    """The task of ``cfg``'s data module (``None`` for a data module of your own)."""
    return TASKS.get(getattr(components.data_class(cfg), "task", None))


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """The ways a run departs from the paper's protocol, in words (they go into every results row)."""
    task = get_task(cfg)
    notes = [
        *(task.deviations(cfg, meta, sizes) if task else [f"data: {cfg.data._target_} (your own, not the paper's)"]),
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
    data = components.data_module(cfg)
    data.log = log  # what resolving the data says (the source used, a failed download)
    source = data.source_metadata()
    task = get_task(cfg)
    if task is not None and task.preflight is not None:
        task.preflight(cfg)
    return source
