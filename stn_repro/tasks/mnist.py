"""Distorted MNIST (Table 1, cluttered MNIST): the distorted-MNIST data module and the paper's matched models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stn_repro.cli import one_line
from stn_repro.config import (
    ConfigError,
    check,
    check_choice,
    check_number,
    check_positive_int,
    check_transformer_family,
    check_val_size,
    get_value,
)
from stn_repro.data.distorted_mnist import DistortedMNISTDataModule
from stn_repro.data.distortions import DISTORTIONS
from stn_repro.data.sources import DIGITS, SOURCES
from stn_repro.models import MODEL_KINDS, build_matched_model, has_transformer
from stn_repro.systems import ClassificationSystem
from stn_repro.systems.classification import THETA_TARGETS
from stn_repro.tasks.base import Task, options, schedule_deviations, system_settings
from stn_repro.transformers import FAMILIES

# Distortions whose stored θ (one transform of an invertible family) can supervise a transformer.
THETA_SUPERVISED_DISTORTIONS = ("R", "RTS", "P", "TC")


def own_model(cfg: DictConfig) -> bool:
    """Whether ``model`` names a class by ``_target_`` (a model of your own, see the README) rather than one of the
    paper's kinds."""
    return OmegaConf.select(cfg, "model._target_") is not None


def validate(cfg: DictConfig) -> None:
    if own_model(cfg):
        kind = get_value(cfg, "model.kind")
        paper_kinds = ", ".join(MODEL_KINDS)
        expected = f"a name for your model (cell names, budgets), not one of the paper's ({paper_kinds})"
        check(isinstance(kind, str) and kind not in MODEL_KINDS, "model.kind", kind, expected)
        target = get_value(cfg, "model._target_")
        try:
            get_object(target)
        except Exception as error:  # Hydra's locate: an import error or a missing attribute
            raise ConfigError(f"config error: model._target_={target} is not found: {one_line(error)}") from None
    else:
        check_choice(cfg, "model.kind", MODEL_KINDS)
        check_positive_int(cfg, "model.param_target")
        check_positive_int(cfg, "model.fcn_layers")
        check_transformer_family(cfg, has_transformer(str(get_value(cfg, "model.kind"))), sorted(FAMILIES))
        fed = get_value(cfg, "model.theta_to_classifier")
        allowed = (False, True) if get_value(cfg, "model.kind") in ("st_fcn", "st_cnn") else (False,)
        check(fed in allowed, "model.theta_to_classifier", fed, "true or false; true only for st_fcn / st_cnn")
    check_choice(cfg, "data.distortion", sorted(DISTORTIONS))
    check_choice(cfg, "data.source", SOURCES)
    check_choice(cfg, "data.digits", DIGITS)
    check_positive_int(cfg, "data.pool")
    check_positive_int(cfg, "data.num_classes", minimum=2)
    check_val_size(cfg)
    check_positive_int(cfg, "profile.param_target")
    check_choice(cfg, "optim.theta_target", THETA_TARGETS)
    check_number(cfg, "optim.theta_target_noise", 0.0)
    weight = get_value(cfg, "optim.theta_loss_weight")
    if weight:
        family, distortion = get_value(cfg, "transformer.family"), get_value(cfg, "data.distortion")
        supervisable = {name: DISTORTIONS[name].family for name in THETA_SUPERVISED_DISTORTIONS}
        check(
            get_value(cfg, "model.kind") in ("st_fcn", "st_cnn") and supervisable.get(distortion) == family,
            "optim.theta_loss_weight",
            weight,
            "0 unless one transformer of the distortion's own family is trained on R, RTS, P or TC "
            f"(here model.kind={get_value(cfg, 'model.kind')}, transformer.family={family}, "
            f"data.distortion={distortion})",
        )


def data(cfg: DictConfig) -> pl.LightningDataModule:
    d = cfg.data
    return DistortedMNISTDataModule(
        d.distortion,
        options(d.params),
        root=d.root,
        source=d.source,
        digits=d.digits,
        seed=cfg.seed,
        test_seed=d.test_seed,
        val_size=d.val_size,
        batch_size=cfg.profile.batch_size,
        resample_every_epoch=d.resample_every_epoch,
        device_resident=d.device_resident,
        return_truth=cfg.optim.theta_loss_weight > 0,  # the true θ feeds the supervised-θ loss
    )


def model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
    if own_model(cfg):
        return own_model_instance(cfg, data), f"{cfg.model._target_}"
    model, width = build_matched_model(
        cfg.model.param_target,
        kind=cfg.model.kind,
        in_shape=data.input_shape,
        num_classes=cfg.data.num_classes,
        family=cfg.transformer.family,
        family_options=options(cfg.transformer.options),
        localisation=options(cfg.model.localisation) or None,
        pool=cfg.data.pool,
        fcn_layers=cfg.model.fcn_layers,
        kernel_sizes=tuple(cfg.model.kernel_sizes),
        theta_to_classifier=cfg.model.theta_to_classifier,
    )
    return model, f"width {width}"


def own_model_instance(cfg: DictConfig, data: Any) -> nn.Module:
    """``model._target_`` built with the node's other keys (less ``kind``, the model's name) and the data's
    ``in_shape`` ``(C, H, W)`` and ``num_classes``: the constructor takes those two and its own options.

    Raises:
        ConfigError: the class cannot be found or built, or is not an ``nn.Module`` (the message names it).
    """
    node = {key: value for key, value in options(cfg.model).items() if key != "kind"}
    try:
        built = instantiate(node, in_shape=tuple(data.input_shape), num_classes=cfg.data.num_classes)
    except Exception as error:  # Hydra wraps whatever the class raised (import, signature, value)
        raise ConfigError(
            f"config error: model._target_={node['_target_']} does not build: {one_line(error)}"
        ) from None
    check(isinstance(built, nn.Module), "model._target_", node["_target_"], "a torch.nn.Module class")
    return built


def system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ClassificationSystem:
    return ClassificationSystem(model, **system_settings(cfg, figures_dir))


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
    if own_model(cfg):
        notes.append(f"model: {cfg.model._target_} (your own, not one of the paper's)")
    else:
        notes.append(
            f"models sized to ~{cfg.model.param_target:,} parameters (the paper matches counts; 400k is a guess)"
        )
    o = cfg.optim
    if o.name != "sgd":
        notes.append(f"optimiser {o.name}, lr {o.lr:g} (paper: plain SGD)")
    elif o.momentum:
        notes.append(f"SGD momentum {o.momentum} (paper: plain SGD)")
    if o.loc_lr_mult != 1.0 and (own_model(cfg) or has_transformer(cfg.model.kind)):
        notes.append(f"localisation nets at {o.loc_lr_mult:g}x the base learning rate (paper: the base rate)")
    if cfg.optim.theta_loss_weight:
        known = "its rotation angle" if cfg.optim.theta_target == "rotation" else "every parameter"
        noise = f", target noise σ = {cfg.optim.theta_target_noise:g}" if cfg.optim.theta_target_noise else ""
        notes.append(
            f"transformer supervised: θ pulled towards the true inverse distortion ({known}{noise}), weight "
            f"{cfg.optim.theta_loss_weight} (the paper trains it without supervision)"
        )
    if cfg.model.get("theta_to_classifier"):
        notes.append("θ fed forward to the classifier's output layer (paper §3.4 mentions it; Table 1 does not use it)")
    if cfg.data.resample_every_epoch:
        notes.append("training distortions re-drawn every epoch from the same digits (the paper does not say)")
    return notes


TASK = Task(validate, data, model, system, deviations)
