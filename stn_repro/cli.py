"""Command-line checks shared by ``stn_repro.train``, ``stn_repro.reproduce`` and ``stn_repro.evaluate``: a bad
argument ends the process with one line naming it and exit status 2, before anything is built or trained."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from stn_repro.config import ConfigError
from stn_repro.console import say
from stn_repro.identity import CONF_DIR, compose_config

EXPERIMENTS_DIR = CONF_DIR / "experiment"
# Hydra's own flags: those followed by a value, and those after which conf/train.yaml is not what composes.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
_OTHER_CONFIG = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"}
#: Keys of configuration layout 2 (older README commands, scripts and notes use them) and where
#: each went: the ``optim`` node became the system's optimiser partial, its localisation rate and θ-loss keys, and
#: the trainer's gradient clipping.
MOVED_KEYS = {
    "optim.name": "optimizer=<sgd|sgd_momentum|rmsprop|adam> (conf/optimizer/)",
    "optim.lr": "system.optimizer.lr",
    "optim.momentum": "system.optimizer.momentum",
    "optim.weight_decay": "system.optimizer.weight_decay",
    "optim.loc_lr_mult": "system.loc_lr_mult",
    "optim.grad_clip": "trainer.gradient_clip_val",
    "optim.theta_loss_weight": "system.theta_loss_weight",
    "optim.theta_target": "system.theta_target",
    "optim.theta_target_noise": "system.theta_target_noise",
}


def known_experiments() -> list[str]:
    """Every ``<suite>/<cell>`` of ``conf/experiment``."""
    return sorted(str(p.relative_to(EXPERIMENTS_DIR).with_suffix("")) for p in EXPERIMENTS_DIR.glob("*/*.yaml"))


def check_experiment_arguments(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming close matches for an ``experiment=`` override (or a value of an
    ``experiment=a,b`` sweep) that is no file in ``conf/experiment``."""
    known = known_experiments()
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if key != "experiment" or not sep or "(" in value:  # glob(...) / range(...) sweeps: Hydra expands them
            continue
        for name in value.split(","):
            if name and name != "null" and name not in known:
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(close)}?" if close else "see conf/experiment/<suite>/<cell>.yaml"
                raise ConfigError(f"unknown experiment {name!r}: {hint}")


def check_moved_keys(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` saying where a key of :data:`MOVED_KEYS` went when an override names it."""
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key in MOVED_KEYS or key == "optim":
            where = MOVED_KEYS.get(
                key, "system.optimizer, system.loc_lr_mult, system.theta_* and trainer.gradient_clip_val"
            )
            raise ConfigError(f"{key} is no longer a key: the optim node moved into the system; use {where}")


def check_composes(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` (one line) unless ``conf/train.yaml`` composes with ``overrides``; of a sweep
    (``key=a,b``) the first value is tried, of ``hydra.*`` overrides only ``hydra.searchpath`` (your own config
    folders: what composes depends on it)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    first = []
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        if key.startswith("hydra") and key != "hydra.searchpath":
            continue
        if override.is_sweep_override():
            first.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            first.append(override.input_line)
    try:
        compose_config(first)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_line(error)) from None


def check_arguments(arguments: Sequence[str]) -> None:
    """The checks above on the ``key=value`` arguments of a Hydra command line (its ``-m`` / ``--flag`` arguments
    left to Hydra); raises :class:`ConfigError`."""
    if any(argument in _OTHER_CONFIG for argument in arguments):
        return
    overrides, skip = [], False
    for argument in arguments:
        if skip or argument.startswith("-"):
            skip = not skip and argument in _FLAGS_WITH_VALUE
            continue
        overrides.append(argument)
    try:
        check_experiment_arguments(overrides)
        check_moved_keys(overrides)
        check_composes(overrides)
    except HydraException as error:  # an override Hydra cannot parse
        raise ConfigError(one_line(error)) from None


def exit_on_bad_arguments(arguments: Sequence[str]) -> None:
    """:func:`check_arguments`, ending the process with one line and exit status 2 on an error."""
    try:
        check_arguments(arguments)
    except ConfigError as error:
        say(f"error: {error}", error=True)
        sys.exit(2)


def one_line(error: BaseException) -> str:
    """Hydra's or OmegaConf's message on one line, without its ``full_key`` / ``object_type`` details."""
    lines = [line.strip() for line in str(error).splitlines()]
    kept = []
    for line in lines:
        if line.startswith("Config search path"):  # Hydra's search path follows an unknown option: not for users
            break
        if line and not line.startswith(("full_key:", "object_type", "reference_type")):
            kept.append(line)
    return " ".join(kept) or type(error).__name__
