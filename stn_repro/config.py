"""Checks of a composed run configuration: every bad value is reported by key before anything runs."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro.data.distortions import DISTORTIONS
from stn_repro.data.sources import DIGITS, SOURCES
from stn_repro.models import MODEL_KINDS
from stn_repro.models.cub import CUB_MODEL_KINDS
from stn_repro.models.svhn import SVHN_MODEL_KINDS
from stn_repro.results.reference import paper_value
from stn_repro.transformers import FAMILIES

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
DATA_KINDS = ("mnist", "svhn", "cub")
SVHN_VARIANTS = ("64px", "128px")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is expected."""


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
        raise ConfigError(f"config key {key} is missing")
    return value


def _expect(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config error: {key}={value!r} is invalid; expected {expected}")


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = _get(cfg, key)
    _expect(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        key,
        value,
        f"an integer >= {minimum}",
    )


def _number(cfg: DictConfig, key: str, minimum: float, strict: bool = False) -> None:
    value = _get(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    _expect(ok, key, value, f"a number {'>' if strict else '>='} {minimum}")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...] | list[str]) -> None:
    value = _get(cfg, key)
    _expect(value in allowed, key, value, f"one of {', '.join(map(str, allowed))}")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid value of a composed ``conf/train.yaml`` configuration."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation to a missing key, a bad resolver, ...
        raise ConfigError(f"config error: {str(error).splitlines()[0]}") from None
    _choice(cfg, "data.kind", DATA_KINDS)
    {"mnist": _validate_mnist, "svhn": _validate_svhn, "cub": _validate_cub}[_get(cfg, "data.kind")](cfg)
    for key in ("iterations", "batch_size", "lr_step_every", "val_every"):
        _positive_int(cfg, f"profile.{key}")
    _number(cfg, "profile.lr_gamma", 0.0, strict=True)
    milestones = OmegaConf.select(cfg, "profile.lr_milestones")
    _expect(
        milestones is None or all(isinstance(m, int) and m > 0 for m in milestones),
        "profile.lr_milestones",
        milestones,
        "null or a list of positive iteration counts",
    )
    seeds = _get(cfg, "profile.seeds")
    _expect(len(seeds) > 0 and all(isinstance(s, int) for s in seeds), "profile.seeds", seeds, "a list of integers")
    _positive_int(cfg, "seed", minimum=0)
    _number(cfg, "optim.lr", 0.0, strict=True)
    _number(cfg, "optim.momentum", 0.0)
    _number(cfg, "optim.weight_decay", 0.0)
    _number(cfg, "optim.loc_lr_mult", 0.0)
    _number(cfg, "optim.grad_clip", 0.0)
    _choice(cfg, "trainer.accelerator", ACCELERATORS)
    _positive_int(cfg, "trainer.num_nodes")
    for flag in ("logger.csv", "logger.wandb"):
        _expect(isinstance(_get(cfg, flag), bool), flag, _get(cfg, flag), "true or false")
    paper = _get(cfg, "paper")
    if paper is not None:
        try:
            paper_value(paper.table, paper.row, paper.column)
        except KeyError as error:
            raise ConfigError(
                f"config error: paper={OmegaConf.to_container(paper)} names no reference cell ({error})"
            ) from None


def _val_size(cfg: DictConfig) -> None:
    val_size = _get(cfg, "data.val_size")
    _expect(
        isinstance(val_size, int | float) and not isinstance(val_size, bool) and 0 <= val_size
        and (isinstance(val_size, int) or val_size < 1),
        "data.val_size",
        val_size,
        "a sample count >= 0 or a fraction in [0, 1)",
    )  # fmt: skip


def _optional_positive_int(cfg: DictConfig, key: str) -> None:
    if _get(cfg, key) is not None:
        _positive_int(cfg, key)


def _transformer_family(cfg: DictConfig, has_transformer: bool, allowed: tuple[str, ...] | list[str]) -> None:
    family = _get(cfg, "transformer.family")
    if has_transformer:
        _choice(cfg, "transformer.family", allowed)
    else:
        _expect(family is None, "transformer.family", family, "null (transformer=none) for the models without one")


def _validate_mnist(cfg: DictConfig) -> None:
    _choice(cfg, "model.kind", MODEL_KINDS)
    _positive_int(cfg, "model.param_target")
    _positive_int(cfg, "model.fcn_layers")
    _transformer_family(cfg, str(_get(cfg, "model.kind")).startswith("st_"), sorted(FAMILIES))
    _choice(cfg, "data.distortion", sorted(DISTORTIONS))
    _choice(cfg, "data.source", SOURCES)
    _choice(cfg, "data.digits", DIGITS)
    _positive_int(cfg, "data.pool")
    _positive_int(cfg, "data.num_classes", minimum=2)
    _val_size(cfg)
    _positive_int(cfg, "profile.param_target")


def _validate_svhn(cfg: DictConfig) -> None:
    _choice(cfg, "model.kind", SVHN_MODEL_KINDS)
    families_2d = sorted(name for name, family in FAMILIES.items() if family.spatial_dims == 2)
    _transformer_family(cfg, _get(cfg, "model.kind") != "cnn", families_2d)
    _choice(cfg, "data.variant", SVHN_VARIANTS)
    for key in ("data.size", "data.crop", "data.limit", "data.workers"):
        _optional_positive_int(cfg, key)
    if _get(cfg, "data.expand") is not None:
        _number(cfg, "data.expand", 0.0)
    _val_size(cfg)
    _number(cfg, "model.dropout", 0.0)
    _expect(_get(cfg, "model.dropout") < 1, "model.dropout", _get(cfg, "model.dropout"), "a rate in [0, 1)")
    positions = _get(cfg, "model.multi_positions")
    _expect(
        len(positions) > 0 and all(isinstance(p, int) and 0 <= p < 8 for p in positions),
        "model.multi_positions",
        positions,
        "a list of conv layer indices in 0..7",
    )


def _validate_cub(cfg: DictConfig) -> None:
    _choice(cfg, "model.kind", CUB_MODEL_KINDS)
    kind, parts = _get(cfg, "model.kind"), _get(cfg, "model.parts")
    _expect(
        isinstance(parts, int) and (parts == 0 if kind == "cnn" else parts >= 1),
        "model.parts",
        parts,
        "0 for model cnn, >= 1 transformers for model st",
    )
    _transformer_family(cfg, kind == "st", ["translation"])
    _positive_int(cfg, "data.image_size", minimum=32)
    _positive_int(cfg, "data.resize", minimum=_get(cfg, "data.image_size"))
    _positive_int(cfg, "model.crop_size", minimum=32)
    _number(cfg, "model.crop_scale", 0.0, strict=True)
    _expect(_get(cfg, "model.crop_scale") <= 1, "model.crop_scale", _get(cfg, "model.crop_scale"), "a scale in (0, 1]")
    _optional_positive_int(cfg, "data.limit")
    _positive_int(cfg, "data.num_workers", minimum=0)
    _val_size(cfg)
