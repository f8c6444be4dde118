"""SVHN multi-digit numbers (Table 2): the checks across keys and the protocol's deviations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_transformer_family,
    get_value,
)
from stn_repro.models.svhn import SVHN_MODEL_KINDS
from stn_repro.schema import check_node
from stn_repro.tasks.base import Task, check_no_theta_supervision, momentum, schedule_deviations
from stn_repro.transformers import FAMILIES

SVHN_VARIANTS = ("64px", "128px")


@dataclass
class SVHNData:
    """``data`` of the SVHN cells (:class:`~stn_repro.data.svhn.SVHNDataModule`)."""

    _target_: str
    name: str
    variant: str
    size: int | None
    expand: float | None
    crop: int | None
    use_extra: bool
    val_size: int | float
    random_crop: bool
    limit: int | None
    workers: int | None
    root: str
    device_resident: bool

    def __post_init__(self) -> None:
        check(self.variant in SVHN_VARIANTS, "data.variant", self.variant, f"one of {', '.join(SVHN_VARIANTS)}")
        for key in ("size", "crop", "limit", "workers"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"data.{key}", value, "null or an integer >= 1")
        check(self.expand is None or self.expand >= 0, "data.expand", self.expand, "null or a number >= 0")


@dataclass
class SVHNModel:
    """``model`` of the SVHN cells (:func:`~stn_repro.models.svhn.build_svhn_model`)."""

    _target_: str
    kind: str
    family: str | None
    family_options: dict[str, Any]
    dropout: float
    batch_norm: bool
    loc_hidden: list[int]
    loc_channels: list[int]
    multi_positions: list[int]

    def __post_init__(self) -> None:
        check(self.kind in SVHN_MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(SVHN_MODEL_KINDS)}")
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "a rate in [0, 1)")
        positions = self.multi_positions
        check(len(positions) > 0 and all(0 <= p < 8 for p in positions), "model.multi_positions", positions,
              "a list of conv layer indices in 0..7")  # fmt: skip


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_node(cfg, "data", SVHNData)
    check_node(cfg, "model", SVHNModel)
    families_2d = sorted(name for name, family in FAMILIES.items() if family.spatial_dims == 2)
    check_transformer_family(cfg, get_value(cfg, "model.kind") != "cnn", families_2d)


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
    if momentum(cfg):
        notes.append(f"SGD momentum {momentum(cfg)} (the paper does not say)")
    return notes


TASK = Task(validate, deviations)
