"""The checks that configuration values are built from: each bad value is reported by key in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro.transformers.families import get_family
from stn_repro.utils import probe_writable


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is expected."""


def get_value(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
        raise ConfigError(f"config key {key} is missing")
    return value


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config error: {key}={value!r} is invalid; expected {expected}")


def check_positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = get_value(cfg, key)
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        key,
        value,
        f"an integer >= {minimum}",
    )


def check_number(cfg: DictConfig, key: str, minimum: float, strict: bool = False) -> None:
    value = get_value(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    check(ok, key, value, f"a number {'>' if strict else '>='} {minimum}")


def check_choice(cfg: DictConfig, key: str, allowed: tuple[str, ...] | list[str]) -> None:
    value = get_value(cfg, key)
    check(value in allowed, key, value, f"one of {', '.join(map(str, allowed))}")


def check_optional_positive_int(cfg: DictConfig, key: str) -> None:
    if get_value(cfg, key) is not None:
        check_positive_int(cfg, key)


def check_transformer_family(cfg: DictConfig, has_transformer: bool, allowed: tuple[str, ...] | list[str]) -> None:
    family = get_value(cfg, "transformer.family")
    if has_transformer:
        check_choice(cfg, "transformer.family", allowed)
        options = OmegaConf.to_container(get_value(cfg, "transformer.options"), resolve=True)
        try:
            get_family(family, **options)
        except ValueError as error:
            raise ConfigError(f"config error: transformer.options={options} is invalid: {error}") from None
    else:
        check(family is None, "transformer.family", family, "null (transformer=none) for the models without one")


def check_writable(*folders: Path) -> None:
    """Raise :class:`ConfigError` unless a file can be created in each of ``folders`` (made if missing): checked
    before training, so that no finished run is lost to a folder it cannot be recorded in."""
    for folder in folders:
        try:
            probe_writable(folder)
        except OSError as error:
            raise ConfigError(
                f"cannot write to {folder} ({error.strerror or error}); make it writable or point paths.* elsewhere"
            ) from None
