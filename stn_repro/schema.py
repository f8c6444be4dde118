"""Typed schemas of the configuration groups every run shares (``profile``, ``trainer``, ``fast``, ``progress``,
``logger``) and of the keys every ``system`` and ``system.optimizer`` have: dataclasses whose types OmegaConf
enforces and whose ``__post_init__`` checks the choices and ranges. :func:`check_groups` merges each composed group
into its schema, so a wrong type, an unknown key or a value out of range ends in one
:class:`~stn_repro.config.ConfigError` line naming the key.

The schemas check a copy: the composed tree itself is left as written (its values are what a run's configuration
hash covers, :mod:`stn_repro.identity`). The data, model and system nodes are checked by the constructors they name
(:mod:`stn_repro.components`), and the checks across groups stay in :mod:`stn_repro.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stn_repro.config import ConfigError, check
from stn_repro.fast import COMPILE_MODES
from stn_repro.systems.classification import THETA_TARGETS

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn")  # see stn_repro.scaling
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def _at_least(key: str, value: float, minimum: float, strict: bool = False) -> None:
    check(value > minimum if strict else value >= minimum, key, value, f"a number {'>' if strict else '>='} {minimum}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    check(value in allowed, key, value, f"one of {', '.join(allowed)}")


@dataclass
class Optimizer:
    """``system.optimizer`` (``conf/optimizer/``): a partial of an optimiser class, and the keys every optimiser of
    the product has (the class's own, such as RMSprop's ``alpha``, are checked by building it:
    :func:`stn_repro.components.check_optimisation`)."""

    _target_: str
    _partial_: bool
    lr: float
    weight_decay: float = 0.0
    momentum: float | None = None  # SGD and RMSprop; Adam has none

    def __post_init__(self) -> None:
        check(self._partial_, "system.optimizer._partial_", self._partial_,
              "true: the system calls the optimiser with its parameter groups")  # fmt: skip
        _at_least("system.optimizer.lr", self.lr, 0.0, strict=True)
        _at_least("system.optimizer.weight_decay", self.weight_decay, 0.0)
        if self.momentum is not None:
            _at_least("system.optimizer.momentum", self.momentum, 0.0)


@dataclass
class SystemSettings:
    """The keys of ``system`` every system of the product takes (:class:`~stn_repro.systems.ClassificationSystem`):
    the localisation nets' rate and the optional θ loss."""

    loc_lr_mult: float = 1.0
    theta_loss_weight: float = 0.0
    theta_target: str = "full"
    theta_target_noise: float = 0.0

    def __post_init__(self) -> None:
        for key in ("loc_lr_mult", "theta_loss_weight", "theta_target_noise"):
            _at_least(f"system.{key}", getattr(self, key), 0.0)
        _choice("system.theta_target", self.theta_target, THETA_TARGETS)


@dataclass
class Profile:
    """``profile``: the schedule (iterations, batch, learning-rate steps), the seeds, the logging intervals."""

    name: str
    iterations: int
    batch_size: int
    lr_step_every: int
    lr_gamma: float
    val_every: int
    seeds: list[int]
    theta_log_every: int
    image_log_every: int
    param_target: int | None = None
    lr_milestones: list[int] | None = None
    budgets: dict[str, Any] | None = None  # per model kind, read by ${budget:<key>} (stn_repro/budgets.py)

    def __post_init__(self) -> None:
        for key in ("iterations", "batch_size", "lr_step_every", "val_every"):
            check(getattr(self, key) >= 1, f"profile.{key}", getattr(self, key), "an integer >= 1")
        for key in ("theta_log_every", "image_log_every"):  # the callbacks' intervals (0: never)
            check(getattr(self, key) >= 0, f"profile.{key}", getattr(self, key), "an integer >= 0 (0: never)")
        if self.param_target is not None:
            check(self.param_target >= 1, "profile.param_target", self.param_target, "an integer >= 1")
        _at_least("profile.lr_gamma", self.lr_gamma, 0.0, strict=True)
        milestones = self.lr_milestones
        check(milestones is None or all(m > 0 for m in milestones), "profile.lr_milestones", milestones,
              "null or a list of positive iteration counts")  # fmt: skip
        check(len(self.seeds) > 0 and all(s >= 0 for s in self.seeds), "profile.seeds", self.seeds,
              "a list of integers >= 0")  # fmt: skip


@dataclass
class Trainer:
    """``trainer``: where and how Lightning trains (see :mod:`stn_repro.scaling`); ``_target_`` is the trainer
    class, called with these keys and the run's own (loggers, callbacks, schedule)."""

    _target_: str
    accelerator: str
    devices: int
    strategy: str
    precision: str
    num_nodes: int
    sync_batchnorm: bool = False
    gradient_clip_val: float | None = None  # the gradients' total norm clipped to this (None: off)

    def __post_init__(self) -> None:
        _choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        check(self.devices >= 1, "trainer.devices", self.devices, "an integer >= 1")
        _choice("trainer.strategy", self.strategy, STRATEGIES)
        _choice("trainer.precision", self.precision, PRECISIONS)
        check(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "an integer >= 1")
        if self.gradient_clip_val is not None:
            _at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0.0, strict=True)


@dataclass
class Fast:
    """``fast``: the speed options (:mod:`stn_repro.fast`)."""

    log_every: int = 100
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    steps_per_call: Any = "auto"  # "auto" or an integer >= 1 (OmegaConf has no union of str and int)

    def __post_init__(self) -> None:
        check(self.log_every >= 1, "fast.log_every", self.log_every, "an integer >= 1")
        number = isinstance(self.steps_per_call, int) and not isinstance(self.steps_per_call, bool)
        check(self.steps_per_call == "auto" or (number and self.steps_per_call >= 1), "fast.steps_per_call",
              self.steps_per_call, "auto or an integer >= 1")  # fmt: skip
        _choice("fast.compile_mode", self.compile_mode, COMPILE_MODES)


@dataclass
class Progress:
    """``progress``: what a run prints while it trains (:mod:`stn_repro.progress`)."""

    every: int = 100
    total: int | None = None
    started: float | None = None

    def __post_init__(self) -> None:
        check(self.every >= 1, "progress.every", self.every, "an integer >= 1")


@dataclass
class CSVLoggerNode:
    """``logger.csv``: the CSV logger every run writes."""

    _target_: str
    name: str = "csv"


@dataclass
class WandbLoggerNode:
    """``logger.wandb`` (``logger=wandb``): the W&B logger; ``mode: auto`` is online with credentials, else offline."""

    _target_: str
    project: str = "stn-repro"
    entity: str | None = None
    mode: str = "auto"

    def __post_init__(self) -> None:
        _choice("logger.wandb.mode", self.mode, WANDB_MODES)


@dataclass
class Logger:
    """``logger``: the run's Lightning loggers by ``_target_`` (:mod:`stn_repro.loggers`): CSV always, W&B with
    ``logger=wandb``."""

    csv: CSVLoggerNode
    wandb: WandbLoggerNode | None = None


SCHEMAS: dict[str, type] = {
    "profile": Profile,
    "trainer": Trainer,
    "fast": Fast,
    "progress": Progress,
    "logger": Logger,
}


#: Schemas of some keys of a node that holds others too (a system's own keys are its constructor's to check).
PARTIAL_SCHEMAS: dict[str, type] = {"system": SystemSettings, "system.optimizer": Optimizer}


def check_groups(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first node of :data:`SCHEMAS` whose composed values do not fit it, or of
    :data:`PARTIAL_SCHEMAS` whose keys of the schema do not."""
    for group, schema in SCHEMAS.items():
        check_node(cfg, group, schema)
    for key, schema in PARTIAL_SCHEMAS.items():
        check_node(cfg, key, schema, only_its_keys=True)


def check_node(cfg: DictConfig, key: str, schema: type, only_its_keys: bool = False) -> None:
    """Raise :class:`ConfigError` (one line naming the key) unless the node ``cfg.<key>`` fits the dataclass
    ``schema``: its types, its keys (none unknown, none missing), and the checks of its ``__post_init__``. With
    ``only_its_keys``, the node's other keys are left out of the check."""
    node = OmegaConf.select(cfg, key)
    check(OmegaConf.is_dict(node), key, node, f"a {key} node (conf/{key.replace('.', '/')}/)")
    values = OmegaConf.to_container(node, resolve=True)  # interpolations resolve in the whole tree
    if only_its_keys:
        values = {name: values[name] for name in (f.name for f in fields(schema)) if name in values}
    for flag in (f.name for f in fields(schema) if f.type in ("bool", bool) and f.name in values):
        value = values[flag]  # OmegaConf would read 1, "yes" or "on" as true: a flag is written true/false
        check(isinstance(value, bool), f"{key}.{flag}", value, "true or false")
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as error:
        where = ".".join(part for part in (key, getattr(error, "full_key", None)) if part)
        raise ConfigError(f"config error: {where}: {str(error).splitlines()[0]}") from None
