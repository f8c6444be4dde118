"""Distorted MNIST (Table 1, cluttered MNIST, addition): the checks across keys and the protocol's deviations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.components import is_own
from stn_repro.config import (
    check,
    check_positive_int,
    check_transformer_family,
    get_value,
)
from stn_repro.data.distortions import DISTORTIONS
from stn_repro.models import MODEL_KINDS, has_transformer
from stn_repro.schema import check_node
from stn_repro.tasks.base import (
    LOCALISATIONS,
    DigitData,
    Task,
    momentum,
    optimiser_name,
    schedule_deviations,
    theta_loss_weight,
)
from stn_repro.transformers import FAMILIES

# Distortions whose stored θ (one transform of an invertible family) can supervise a transformer.
THETA_SUPERVISED_DISTORTIONS = ("R", "RTS", "P", "TC")


@dataclass
class MatchedClassifierModel:
    """``model`` of the paper's distorted-MNIST classifiers (:func:`~stn_repro.models.build.matched_classifier`)."""

    _target_: str
    kind: str
    pool: Any  # "auto" or an integer >= 1
    family: str | None
    family_options: dict[str, Any]
    param_target: int
    fcn_layers: int
    kernel_sizes: list[int]
    theta_to_classifier: bool
    localisation: Any  # null or a node of LOCALISATIONS[kind] (OmegaConf types no union of nodes; checked below)

    def __post_init__(self) -> None:
        check(self.kind in MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(MODEL_KINDS)}")
        pool = self.pool
        valid_pool = pool == "auto" or (isinstance(pool, int) and not isinstance(pool, bool) and pool >= 1)
        check(valid_pool, "model.pool", pool, "auto or an integer >= 1")
        check(self.param_target >= 1, "model.param_target", self.param_target, "an integer >= 1")
        check(self.fcn_layers >= 1, "model.fcn_layers", self.fcn_layers, "an integer >= 1")
        check(len(self.kernel_sizes) > 0 and all(k > 0 for k in self.kernel_sizes), "model.kernel_sizes",
              self.kernel_sizes, "a list of positive kernel sizes")  # fmt: skip
        fed_allowed = self.kind in ("st_fcn", "st_cnn") or not self.theta_to_classifier
        check(fed_allowed, "model.theta_to_classifier", self.theta_to_classifier,
              "true or false; true only for st_fcn / st_cnn")  # fmt: skip


def check_localisation(cfg: DictConfig) -> None:
    """``model.localisation``: null (the paper's net for the model kind) or a node of its kind's schema."""
    if get_value(cfg, "model.localisation") is None:
        return
    kind = get_value(cfg, "model.localisation.kind")
    check(kind in LOCALISATIONS, "model.localisation.kind", kind, f"one of {', '.join(LOCALISATIONS)}")
    check_node(cfg, "model.localisation", LOCALISATIONS[kind])


def validate(cfg: DictConfig) -> None:
    check_node(cfg, "data", DigitData)
    if is_own(cfg, "model"):
        kind = get_value(cfg, "model.kind")
        paper_kinds = ", ".join(MODEL_KINDS)
        expected = f"a name for your model (cell names, budgets), not one of the paper's ({paper_kinds})"
        check(isinstance(kind, str) and kind not in MODEL_KINDS, "model.kind", kind, expected)
    else:
        check_node(cfg, "model", MatchedClassifierModel)
        check_localisation(cfg)
        check_transformer_family(cfg, has_transformer(str(get_value(cfg, "model.kind"))), sorted(FAMILIES))
    check_positive_int(cfg, "profile.param_target")
    weight = theta_loss_weight(cfg)
    if weight:
        family, distortion = get_value(cfg, "transformer.family"), get_value(cfg, "data.distortion")
        supervisable = {name: DISTORTIONS[name].family for name in THETA_SUPERVISED_DISTORTIONS}
        check(
            get_value(cfg, "model.kind") in ("st_fcn", "st_cnn") and supervisable.get(distortion) == family,
            "system.theta_loss_weight",
            weight,
            "0 unless one transformer of the distortion's own family is trained on R, RTS, P or TC "
            f"(here model.kind={get_value(cfg, 'model.kind')}, transformer.family={family}, "
            f"data.distortion={distortion})",
        )


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {meta['source']} digits ({sizes['train']:,} train / {sizes['val']:,} val / "
            f"{sizes['test']:,} test), not the full 60,000/10,000 MNIST"
        )
    if sizes["val"]:
        notes.append(f"{sizes['val']:,} training samples held out for validation (the paper does not say)")
    notes += schedule_deviations(cfg, "mnist")
    if is_own(cfg, "model"):
        notes.append(f"model: {cfg.model._target_} (your own, not one of the paper's)")
    else:
        notes.append(
            f"models sized to ~{cfg.model.param_target:,} parameters (the paper matches counts; 400k is a guess)"
        )
    s, name = cfg.system, optimiser_name(cfg)
    if name != "sgd":
        notes.append(f"optimiser {name}, lr {s.optimizer.lr:g} (paper: plain SGD)")
    elif momentum(cfg):
        notes.append(f"SGD momentum {momentum(cfg)} (paper: plain SGD)")
    if s.loc_lr_mult != 1.0 and (is_own(cfg, "model") or has_transformer(cfg.model.kind)):
        notes.append(f"localisation nets at {s.loc_lr_mult:g}x the base learning rate (paper: the base rate)")
    if s.theta_loss_weight:
        known = "its rotation angle" if s.theta_target == "rotation" else "every parameter"
        noise = f", target noise σ = {s.theta_target_noise:g}" if s.theta_target_noise else ""
        notes.append(
            f"transformer supervised: θ pulled towards the true inverse distortion ({known}{noise}), weight "
            f"{s.theta_loss_weight} (the paper trains it without supervision)"
        )
    if cfg.model.get("theta_to_classifier"):
        notes.append("θ fed forward to the classifier's output layer (paper §3.4 mentions it; Table 1 does not use it)")
    if cfg.data.resample_every_epoch:
        notes.append("training distortions re-drawn every epoch from the same digits (the paper does not say)")
    return notes


TASK = Task(validate, deviations)
