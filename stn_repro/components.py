"""The run's objects from its composed configuration: the data module, the model and the Lightning system, each
built by ``hydra.utils.instantiate`` from its node's ``_target_`` (``data``, ``model``, ``system``) with the
run-level values the node does not hold.

- **Data** (:func:`data_module`): ``data`` with the run's ``seed`` and the profile's ``batch_size`` (and
  ``return_truth=True`` when ``system.theta_loss_weight`` > 0: the true θ feeds that loss).
- **Model** (:func:`model`): ``model`` with what the data module tells it (``model_inputs()``: ``in_shape`` and
  ``num_classes`` for the classifiers). ``model.kind`` names the model (cell names, budgets) and is passed only to
  a class whose signature names a ``kind`` argument.
- **System** (:func:`system`): ``system`` with the model, the figures folder and what the data module adds
  (``system_inputs()``); its ``optimizer`` and ``scheduler`` nodes are partials (``conf/optimizer/``,
  ``conf/scheduler/``) the system calls with its parameter groups and its optimiser.

A node that does not build (an unknown class, a wrong argument, a value its constructor refuses) stops with one
:class:`~stn_repro.config.ConfigError` line naming the node's ``_target_``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stn_repro.cli import one_line
from stn_repro.config import ConfigError
from stn_repro.data.base import SplitDataModule
from stn_repro.data.errors import DataError
from stn_repro.models.cub import PretrainedWeightsError

#: The package's own classes and builders: a ``_target_`` outside it is a class of your own (README).
PACKAGE = "stn_repro."
#: Errors a constructor raises that already say what to do (missing data, missing weights): not config errors.
_READABLE = (ConfigError, DataError, PretrainedWeightsError)


def data_module(cfg: DictConfig) -> SplitDataModule:
    """The data module of ``cfg.data`` (not yet set up).

    Raises:
        ConfigError: the node does not build.
    """
    runtime: dict[str, Any] = {"seed": cfg.seed, "batch_size": cfg.profile.batch_size}
    if OmegaConf.select(cfg, "system.theta_loss_weight", default=0.0) > 0:
        runtime["return_truth"] = True
    data = build(cfg.data, "data", **runtime)
    if not isinstance(data, SplitDataModule):
        raise ConfigError(
            f"config error: data._target_={cfg.data._target_} is invalid; expected a data module (a subclass of "
            "stn_repro.data.base.SplitDataModule)"
        )
    return data


def model(cfg: DictConfig, data: SplitDataModule) -> nn.Module:
    """The model of ``cfg.model`` for ``data`` (set up: its shapes are known).

    Raises:
        ConfigError: the node does not build, or builds something that is not an ``nn.Module``.
    """
    node = OmegaConf.to_container(cfg.model, resolve=True)
    target = _locate(node, "model")
    if not _takes(target, "kind"):
        node.pop("kind", None)
    built = build(OmegaConf.create(node), "model", **data.model_inputs())
    if not isinstance(built, nn.Module):
        raise ConfigError(
            f"config error: model._target_={node['_target_']} is invalid; expected a torch.nn.Module class"
        )
    return built


def system(cfg: DictConfig, model: nn.Module, data: SplitDataModule, figures_dir: Path | None) -> pl.LightningModule:
    """The Lightning system of ``cfg.system`` training ``model`` on ``data``; figures go to ``figures_dir``."""
    return build(cfg.system, "system", model, figures_dir=figures_dir, **data.system_inputs())


def is_own(cfg: DictConfig, node: str) -> bool:
    """Whether ``cfg.<node>`` builds a class of your own (its ``_target_`` is outside the package)."""
    target = OmegaConf.select(cfg, f"{node}._target_")
    return target is not None and not str(target).startswith(PACKAGE)


def check_targets(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` unless the ``data``, ``model``, ``system`` (with its optimiser and scheduler) and
    ``trainer`` nodes and each logger node each name a class that exists (nothing is built)."""
    loggers = [f"logger.{key}" for key, node in (cfg.get("logger") or {}).items() if OmegaConf.is_dict(node)]
    for name in ("data", "model", "system", "system.optimizer", "system.scheduler", "trainer", *loggers):
        node = OmegaConf.select(cfg, name)
        if not OmegaConf.is_dict(node):
            raise ConfigError(f"config error: {name}={node!r} is invalid; expected a node with a _target_")
        _locate(OmegaConf.to_container(node, resolve=True), name)


def check_optimisation(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` unless ``system.optimizer`` builds an optimiser over one parameter and
    ``system.scheduler`` a schedule over that optimiser (a key its class does not take, a value it refuses)."""
    optimiser = _build_partial(cfg, "optimizer", [torch.zeros(1, requires_grad=True)])
    _build_partial(cfg, "scheduler", optimiser)


def _build_partial(cfg: DictConfig, name: str, argument: Any) -> Any:
    node = cfg.system[name]
    try:
        return instantiate(node)(argument)
    except Exception as error:
        unknown_key = isinstance(error, TypeError) and "unexpected keyword" in str(error)
        example = " (e.g. momentum after optimizer=adam)" if name == "optimizer" else ""
        advice = f"remove a key it does not take with ~system.{name}.<key>{example}" if unknown_key else (
            "change the value it refuses"
        )  # fmt: skip
        raise ConfigError(
            f"config error: system.{name} ({node._target_}) does not build: {one_line(error)}; {advice}"
        ) from None


def data_class(cfg: DictConfig) -> type:
    """The class ``cfg.data._target_`` names (its ``task`` picks the checks and deviation notes)."""
    return _locate(OmegaConf.to_container(cfg.data, resolve=True), "data")


def _takes(target: Any, argument: str) -> bool:
    """Whether ``target``'s signature names ``argument`` (``**kwargs`` does not count; a builtin: no)."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return argument in parameters


def _locate(node: dict[str, Any], name: str) -> Any:
    target = node.get("_target_")
    if not target:
        raise ConfigError(f"config error: {name}._target_ is missing; the node must name the class it builds")
    try:
        return get_object(target)
    except Exception as error:  # Hydra's locate: an import error or a missing attribute
        raise ConfigError(f"config error: {name}._target_={target} is not found: {one_line(error)}") from None


def build(node: DictConfig, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """The class ``node`` (found at ``name``, e.g. ``trainer``) names, called with its keys and the run's own
    ``args`` / ``kwargs``, which reach the constructor as they are (Hydra would copy a dataclass or a module into the
    configuration); a node that does not build ends in one :class:`ConfigError` line naming it."""
    _locate(OmegaConf.to_container(node, resolve=True), name)
    try:
        return instantiate(node, _partial_=True, _convert_="all")(*args, **kwargs)
    except Exception as error:  # what the constructor raised (a wrong argument, a value it refuses)
        cause = error.__cause__ if error.__cause__ is not None and not isinstance(error, _READABLE) else error
        if isinstance(cause, _READABLE):
            raise cause from None
        message = one_line(cause)
        raise ConfigError(f"config error: {name}._target_={node._target_} does not build: {message}") from None
