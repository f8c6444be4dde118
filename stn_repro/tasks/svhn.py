"""SVHN multi-digit numbers (Table 2): the checks across keys and the protocol's deviations."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_choice,
    check_number,
    check_optional_positive_int,
    check_transformer_family,
    get_value,
)
from stn_repro.models.svhn import SVHN_MODEL_KINDS
from stn_repro.tasks.base import Task, check_no_theta_supervision, schedule_deviations
from stn_repro.transformers import FAMILIES

SVHN_VARIANTS = ("64px", "128px")


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_choice(cfg, "model.kind", SVHN_MODEL_KINDS)
    families_2d = sorted(name for name, family in FAMILIES.items() if family.spatial_dims == 2)
    check_transformer_family(cfg, get_value(cfg, "model.kind") != "cnn", families_2d)
    check_choice(cfg, "data.variant", SVHN_VARIANTS)
    for key in ("data.size", "data.crop", "data.limit", "data.workers"):
        check_optional_positive_int(cfg, key)
    if get_value(cfg, "data.expand") is not None:
        check_number(cfg, "data.expand", 0.0)
    check_number(cfg, "model.dropout", 0.0)
    check(get_value(cfg, "model.dropout") < 1, "model.dropout", get_value(cfg, "model.dropout"), "a rate in [0, 1)")
    positions = get_value(cfg, "model.multi_positions")
    check(
        len(positions) > 0 and all(isinstance(p, int) and 0 <= p < 8 for p in positions),
        "model.multi_positions",
        positions,
        "a list of conv layer indices in 0..7",
    )


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} test SVHN numbers, not "
            "the full train+extra / test sets"
        )
    notes += schedule_deviations(cfg, "svhn")
    if cfg.model.batch_norm:
        notes.append("batch norm after every conv layer (Goodfellow et al.: contrast normalisation, no batch norm)")
    notes.append("3 fully connected layers of 3,072 (Goodfellow's locally connected layer replaced by a dense one)")
    if cfg.data.variant == "128px":
        notes.append("128px set: box union expanded x2 then 110 px crops (the paper's 'looser crop' is not given)")
    if cfg.optim.momentum:
        notes.append(f"SGD momentum {cfg.optim.momentum} (the paper does not say)")
    return notes


TASK = Task(validate, deviations)
