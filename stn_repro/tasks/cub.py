"""CUB-200-2011 (Table 3): the official layout, an Inception baseline and N×ST-CNN part models, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch import nn

from stn_repro.config import (
    check,
    check_choice,
    check_number,
    check_optional_positive_int,
    check_positive_int,
    check_transformer_family,
    check_val_size,
    get_value,
)
from stn_repro.data.cub import CUBDataModule
from stn_repro.models.cub import CUB_MODEL_KINDS, CUBNet, load_googlenet_state
from stn_repro.systems import ClassificationSystem, PartAttentionSystem
from stn_repro.tasks.base import Task, check_no_theta_supervision, schedule_deviations, system_settings


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
    check_val_size(cfg)


def data(cfg: DictConfig) -> pl.LightningDataModule:
    d = cfg.data
    return CUBDataModule(
        root=d.root,
        image_size=d.image_size,
        resize=d.resize,
        random_flip=d.random_flip,
        val_size=d.val_size,
        batch_size=cfg.profile.batch_size,
        num_workers=d.num_workers,
        seed=cfg.seed,
        limit=d.limit,
    )


def cub_weights(cfg: DictConfig) -> str | None:
    """The configured pretrained-weights path, or ``None`` for ``model.weights=none`` / null."""
    weights = cfg.model.weights
    return None if weights is None or str(weights).lower() == "none" else str(weights)


def model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
    m = cfg.model
    model = CUBNet(
        num_classes=data.num_classes,
        num_parts=m.parts,
        weights=cub_weights(cfg),
        crop_size=m.crop_size,
        crop_scale=m.crop_scale,
        dropout=m.dropout,
    )
    return model, f"{m.parts} parts" if m.parts else "Inception baseline"


def system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ClassificationSystem:
    return PartAttentionSystem(model, mean=data.mean, std=data.std, **system_settings(cfg, figures_dir))


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(f"data: {sizes['train']:,} train / {sizes['test']:,} test images, not the full 5,994 / 5,794")
    if sizes["val"]:
        notes.append(f"{sizes['val']:,} training images held out for validation (the paper trains on all)")
    notes += schedule_deviations(cfg, "cub")
    notes.append("backbone: torchvision GoogLeNet with batch norm (paper: BN-Inception, not in torchvision)")
    if cub_weights(cfg) is None:
        notes.append("backbone from random weights (model.weights=none), not ImageNet-pretrained: a smoke run")
    if cfg.model.parts:
        notes.append(
            f"crops at a fixed scale {cfg.model.crop_scale} of the input side, {cfg.model.crop_size} px outputs; "
            "localisation head initialised to tile the image (layout is our guess)"
        )
    return notes


def check_weights(cfg: DictConfig) -> None:
    """Raise :class:`~stn_repro.models.cub.PretrainedWeightsError` unless the configured weights load."""
    if cub_weights(cfg) is not None:
        load_googlenet_state(cub_weights(cfg))


TASK = Task(validate, data, model, system, deviations, preflight=check_weights)
