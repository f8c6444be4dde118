"""CUB-200-2011 (Table 3): the checks across keys, the pretrained weights, and the protocol's deviations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_transformer_family,
    get_value,
)
from stn_repro.models.cub import CUB_MODEL_KINDS, load_googlenet_state, pretrained_weights
from stn_repro.schema import check_node
from stn_repro.tasks.base import Task, check_no_theta_supervision, schedule_deviations


@dataclass
class CUBData:
    """``data`` of the CUB cells (:class:`~stn_repro.data.cub.CUBDataModule`)."""

    _target_: str
    name: str
    image_size: int
    resize: int
    random_flip: bool
    val_size: int | float
    num_workers: int
    limit: int | None
    root: str

    def __post_init__(self) -> None:
        check(self.image_size >= 32, "data.image_size", self.image_size, "an integer >= 32")
        check(self.resize >= self.image_size, "data.resize", self.resize, f"an integer >= {self.image_size}")
        check(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        check(self.limit is None or self.limit >= 1, "data.limit", self.limit, "null or an integer >= 1")


@dataclass
class CUBModel:
    """``model`` of the CUB cells (:func:`~stn_repro.models.cub.cub_model`)."""

    _target_: str
    kind: str
    parts: int
    weights: str | None
    crop_size: int
    crop_scale: float
    dropout: float

    def __post_init__(self) -> None:
        check(self.kind in CUB_MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(CUB_MODEL_KINDS)}")
        check(self.parts == 0 if self.kind == "cnn" else self.parts >= 1, "model.parts", self.parts,
              "0 for model cnn, >= 1 transformers for model st")  # fmt: skip
        check(self.crop_size >= 32, "model.crop_size", self.crop_size, "an integer >= 32")
        check(0 < self.crop_scale <= 1, "model.crop_scale", self.crop_scale, "a scale in (0, 1]")
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "a rate in [0, 1)")


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_node(cfg, "data", CUBData)
    check_node(cfg, "model", CUBModel)
    check_transformer_family(cfg, get_value(cfg, "model.kind") == "st", ["translation"])


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(f"data: {sizes['train']:,} train / {sizes['test']:,} test images, not the full 5,994 / 5,794")
    if sizes["val"]:
        notes.append(f"{sizes['val']:,} training images held out for validation (the paper trains on all)")
    notes += schedule_deviations(cfg, "cub")
    notes.append("backbone: torchvision GoogLeNet with batch norm (paper: BN-Inception, not in torchvision)")
    if pretrained_weights(cfg.model.weights) is None:
        notes.append("backbone from random weights (model.weights=none), not ImageNet-pretrained: a smoke run")
    if cfg.model.parts:
        notes.append(
            f"crops at a fixed scale {cfg.model.crop_scale} of the input side, {cfg.model.crop_size} px outputs; "
            "localisation head initialised to tile the image (layout is our guess)"
        )
    return notes


def check_weights(cfg: DictConfig) -> None:
    """Raise :class:`~stn_repro.models.cub.PretrainedWeightsError` unless the configured weights load."""
    if pretrained_weights(cfg.model.weights) is not None:
        load_googlenet_state(pretrained_weights(cfg.model.weights))


TASK = Task(validate, deviations, preflight=check_weights)
