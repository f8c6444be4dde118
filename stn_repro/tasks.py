"""What differs between the paper's experiments: how a run builds its data, model and system, and how it departs
from the paper's protocol. ``cfg.data.kind`` picks the task: ``mnist`` (Table 1, cluttered MNIST), ``svhn``
(Table 2) or ``cub`` (Table 3). :mod:`stn_repro.train` does the rest the same way for every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stn_repro.models import build_matched_model
from stn_repro.models.cub import CUBNet, load_googlenet_state
from stn_repro.models.svhn import build_svhn_model
from stn_repro.systems import ClassificationSystem, PartAttentionSystem, SequenceSystem
from stn_repro.transformers import ALIGN_CORNERS

# The paper's schedules (iterations, batch size, lr step), to word the deviations of shorter profiles.
PAPER_SCHEDULES = {
    "mnist": "150,000 iterations at batch 256, lr x0.1 every 50,000",
    "svhn": "400,000 iterations at batch 128, lr x0.1 every 80,000",
    "cub": "lr x0.1 at 10,000, 20,000 and 25,000 iterations (batch size and length not given)",
}
_PAPER_PROFILE_VALUES = {
    "mnist": {"iterations": 150_000, "batch_size": 256, "lr_step_every": 50_000},
    "svhn": {"iterations": 400_000, "batch_size": 128, "lr_step_every": 80_000},
}


@dataclass(frozen=True)
class Task:
    """How one kind of experiment builds its parts from a composed configuration."""

    data: Callable[[DictConfig], pl.LightningDataModule]
    model: Callable[[DictConfig, pl.LightningDataModule], tuple[nn.Module, str]]  # (model, one-line description)
    system: Callable[[DictConfig, nn.Module, pl.LightningDataModule, Path], ClassificationSystem]
    deviations: Callable[[DictConfig, dict[str, Any], dict[str, int]], list[str]]


def _options(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _system_settings(cfg: DictConfig, figures_dir: Path) -> dict[str, Any]:
    p = cfg.profile
    return {
        "lr": cfg.optim.lr,
        "momentum": cfg.optim.momentum,
        "weight_decay": cfg.optim.weight_decay,
        "loc_lr_mult": cfg.optim.loc_lr_mult,
        "lr_step_every": p.lr_step_every,
        "lr_gamma": p.lr_gamma,
        "lr_milestones": list(p.lr_milestones) if p.get("lr_milestones") else None,
        "theta_log_every": p.theta_log_every,
        "image_log_every": p.image_log_every,
        "figures_dir": figures_dir,
    }


def _common_deviations(cfg: DictConfig, kind: str) -> list[str]:
    notes = []
    p = cfg.profile
    paper = _PAPER_PROFILE_VALUES.get(kind)
    if paper is None or any(p[key] != value for key, value in paper.items()):
        milestones = f"at {', '.join(f'{m:,}' for m in p.lr_milestones)}" if p.get("lr_milestones") else (
            f"every {p.lr_step_every:,}"
        )  # fmt: skip
        notes.append(
            f"schedule: {p.iterations:,} iterations at batch {p.batch_size}, lr x{p.lr_gamma} {milestones} "
            f"(paper: {PAPER_SCHEDULES[kind]})"
        )
    return notes


# --- distorted MNIST (Table 1, cluttered MNIST) ------------------------------------------------------------------


def _mnist_data(cfg: DictConfig) -> pl.LightningDataModule:
    from stn_repro.data.modules import DistortedMNISTDataModule

    d = cfg.data
    return DistortedMNISTDataModule(
        d.distortion,
        _options(d.params),
        root=d.root,
        source=d.source,
        digits=d.digits,
        seed=cfg.seed,
        test_seed=d.test_seed,
        val_size=d.val_size,
        batch_size=cfg.profile.batch_size,
        resample_every_epoch=d.resample_every_epoch,
        device_resident=d.device_resident,
    )


def _mnist_model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
    model, width = build_matched_model(
        cfg.model.param_target,
        kind=cfg.model.kind,
        in_shape=data.input_shape,
        num_classes=cfg.data.num_classes,
        family=cfg.transformer.family,
        family_options=_options(cfg.transformer.options),
        localisation=_options(cfg.model.localisation) or None,
        pool=cfg.data.pool,
        fcn_layers=cfg.model.fcn_layers,
        kernel_sizes=tuple(cfg.model.kernel_sizes),
    )
    return model, f"width {width}"


def _mnist_system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ClassificationSystem:
    return ClassificationSystem(model, **_system_settings(cfg, figures_dir))


def _mnist_deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {meta['source']} digits ({sizes['train']:,} train / {sizes['val']:,} val / "
            f"{sizes['test']:,} test), not the full 60,000/10,000 MNIST"
        )
    if sizes["val"]:
        notes.append(f"{sizes['val']:,} training samples held out for validation (the paper does not say)")
    notes += _common_deviations(cfg, "mnist")
    notes.append(f"models sized to ~{cfg.model.param_target:,} parameters (the paper matches counts; 400k is a guess)")
    if cfg.optim.momentum:
        notes.append(f"SGD momentum {cfg.optim.momentum} (paper: plain SGD)")
    if cfg.data.resample_every_epoch:
        notes.append("training distortions re-drawn every epoch")
    return notes


# --- SVHN (Table 2) ------------------------------------------------------------------------------------------------


def _svhn_data(cfg: DictConfig) -> pl.LightningDataModule:
    from stn_repro.data.svhn import SVHNDataModule

    d = cfg.data
    return SVHNDataModule(
        root=d.root,
        variant=d.variant,
        size=d.size,
        expand=d.expand,
        crop=d.crop,
        use_extra=d.use_extra,
        val_size=d.val_size,
        random_crop=d.random_crop,
        batch_size=cfg.profile.batch_size,
        seed=cfg.seed,
        limit=d.limit,
        workers=d.workers,
        device_resident=d.device_resident,
    )


def _svhn_model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
    m = cfg.model
    model = build_svhn_model(
        m.kind,
        data.input_shape,
        family=cfg.transformer.family or "affine",
        family_options=_options(cfg.transformer.options),
        multi_positions=tuple(m.multi_positions),
        loc_hidden=tuple(m.loc_hidden),
        loc_channels=tuple(m.loc_channels),
        dropout=m.dropout,
        batch_norm=m.batch_norm,
    )
    return model, f"SVHN {m.kind}"


def _svhn_system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ClassificationSystem:
    return SequenceSystem(model, **_system_settings(cfg, figures_dir))


def _svhn_deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} test SVHN numbers, not "
            "the full train+extra / test sets"
        )
    notes += _common_deviations(cfg, "svhn")
    if cfg.model.batch_norm:
        notes.append("batch norm after every conv layer (Goodfellow et al.: contrast normalisation, no batch norm)")
    notes.append("3 fully connected layers of 3,072 (Goodfellow's locally connected layer replaced by a dense one)")
    if cfg.data.variant == "128px":
        notes.append("128px set: box union expanded x2 then 110 px crops (the paper's 'looser crop' is not given)")
    if cfg.optim.momentum:
        notes.append(f"SGD momentum {cfg.optim.momentum} (the paper does not say)")
    return notes


# --- CUB-200-2011 (Table 3) ----------------------------------------------------------------------------------------


def _cub_data(cfg: DictConfig) -> pl.LightningDataModule:
    from stn_repro.data.cub import CUBDataModule

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


def _cub_model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
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


def _cub_system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ClassificationSystem:
    return PartAttentionSystem(model, mean=data.mean, std=data.std, **_system_settings(cfg, figures_dir))


def _cub_deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(f"data: {sizes['train']:,} train / {sizes['test']:,} test images, not the full 5,994 / 5,794")
    if sizes["val"]:
        notes.append(f"{sizes['val']:,} training images held out for validation (the paper trains on all)")
    notes += _common_deviations(cfg, "cub")
    notes.append("backbone: torchvision GoogLeNet with batch norm (paper: BN-Inception, not in torchvision)")
    if cub_weights(cfg) is None:
        notes.append("backbone from random weights (model.weights=none), not ImageNet-pretrained: a smoke run")
    if cfg.model.parts:
        notes.append(
            f"crops at a fixed scale {cfg.model.crop_scale} of the input side, {cfg.model.crop_size} px outputs; "
            "localisation head initialised to tile the image (layout is our guess)"
        )
    return notes


TASKS: dict[str, Task] = {
    "mnist": Task(_mnist_data, _mnist_model, _mnist_system, _mnist_deviations),
    "svhn": Task(_svhn_data, _svhn_model, _svhn_system, _svhn_deviations),
    "cub": Task(_cub_data, _cub_model, _cub_system, _cub_deviations),
}


def get_task(cfg: DictConfig) -> Task:
    """The task of ``cfg.data.kind``."""
    return TASKS[cfg.data.kind]


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """The ways a run departs from the paper's protocol, in words (they go into every results row)."""
    return [
        *get_task(cfg).deviations(cfg, meta, sizes),
        f"sampler align_corners={ALIGN_CORNERS} (2015 Torch samplers: True)",
    ]


def preflight(cfg: DictConfig) -> dict[str, Any]:
    """Check that a run of ``cfg`` can start (its data and, for CUB, its pretrained weights are in place) without
    training anything; returns the data's source metadata (``source``, ``digits``, ``full_dataset``, ...).

    Raises:
        DataError: the data is missing or unreadable (the message says where to put it).
        PretrainedWeightsError: the configured weights file is missing or invalid.
    """
    source = get_task(cfg).data(cfg).source_metadata()
    if cfg.data.kind == "cub" and cub_weights(cfg) is not None:
        load_googlenet_state(cub_weights(cfg))
    return source
