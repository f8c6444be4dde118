"""CUB-200-2011 (Table 3): the checks across keys, the pretrained weights, and the protocol's deviations."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_choice,
    check_number,
    check_optional_positive_int,
    check_positive_int,
    check_transformer_family,
    get_value,
)
from stn_repro.models.cub import CUB_MODEL_KINDS, load_googlenet_state, pretrained_weights
from stn_repro.tasks.base import Task, check_no_theta_supervision, schedule_deviations


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_choice(cfg, "model.kind", CUB_MODEL_KINDS)
    kind, parts = get_value(cfg, "model.kind"), get_value(cfg, "model.parts")
    check(
        isinstance(parts, int) and (parts == 0 if kind == "cnn" else parts >= 1),
        "model.parts",
        parts,
        "0 for model cnn, >= 1 transformers for model st",
    )
    check_transformer_family(cfg, kind == "st", ["translation"])
    check_positive_int(cfg, "data.image_size", minimum=32)
    check_positive_int(cfg, "data.resize", minimum=get_value(cfg, "data.image_size"))
    check_positive_int(cfg, "model.crop_size", minimum=32)
    check_number(cfg, "model.crop_scale", 0.0, strict=True)
    check(
        get_value(cfg, "model.crop_scale") <= 1,
        "model.crop_scale",
        get_value(cfg, "model.crop_scale"),
        "a scale in (0, 1]",
    )
    check_optional_positive_int(cfg, "data.limit")
    check_positive_int(cfg, "data.num_workers", minimum=0)


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
