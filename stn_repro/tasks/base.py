"""What the experiments share: the :class:`Task` interface and the schedule deviations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro.config import check
from stn_repro.data.distortions import DISTORTIONS
from stn_repro.data.sources import DIGITS, SOURCES

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
    """What one family of experiments knows beyond what its classes check: the checks across keys, and how its
    runs depart from the paper's protocol. Its data module names it (``task``, :mod:`stn_repro.data.base`)."""

    validate: Callable[[DictConfig], None]  # raises stn_repro.config.ConfigError naming the key
    deviations: Callable[[DictConfig, dict[str, Any], dict[str, int]], list[str]]
    preflight: Callable[[DictConfig], None] | None = None  # checks beyond the data (e.g. pretrained weights)


def _positive_ints(key: str, values: list[int]) -> None:
    check(all(v >= 1 for v in values), f"model.localisation.{key}", values, "a list of integers >= 1")


@dataclass
class FcLocalisation:
    """``model.localisation`` of kind ``fc`` (:func:`~stn_repro.transformers.fc_localisation`)."""

    hidden: list[int]
    kind: str = "fc"
    downsample: int = 1
    weight_std: float = 0.0

    def __post_init__(self) -> None:
        _positive_ints("hidden", self.hidden)
        check(self.downsample >= 1, "model.localisation.downsample", self.downsample, "an integer >= 1")
        check(self.weight_std >= 0, "model.localisation.weight_std", self.weight_std, "a number >= 0")


@dataclass
class ConvLocalisation:
    """``model.localisation`` of kind ``conv`` (:func:`~stn_repro.transformers.conv_localisation`; the 3D and
    co-localisation nets name no kind: theirs are conv nets)."""

    channels: list[int]
    kernel_size: int
    downsample: int
    hidden: list[int]
    kind: str = "conv"
    weight_std: float = 0.0

    def __post_init__(self) -> None:
        for key in ("channels", "hidden"):
            _positive_ints(key, getattr(self, key))
        for key in ("kernel_size", "downsample"):
            check(getattr(self, key) >= 1, f"model.localisation.{key}", getattr(self, key), "an integer >= 1")
        check(self.weight_std >= 0, "model.localisation.weight_std", self.weight_std, "a number >= 0")


#: The localisation schemas by ``model.localisation.kind``.
LOCALISATIONS: dict[str, type] = {"fc": FcLocalisation, "conv": ConvLocalisation}


def options(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def schedule_deviations(cfg: DictConfig, kind: str) -> list[str]:
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


def optimiser_name(cfg: DictConfig) -> str:
    """The optimiser as the deviation notes name it: its class in lower case (``sgd``, ``rmsprop``, ``adam``)."""
    return str(cfg.system.optimizer._target_).rsplit(".", 1)[-1].lower()


def momentum(cfg: DictConfig) -> float:
    """The optimiser's momentum (0 for one without: Adam)."""
    return cfg.system.optimizer.get("momentum", 0.0)


def theta_loss_weight(cfg: DictConfig) -> float:
    """``system.theta_loss_weight`` (0 for a system without the θ loss)."""
    return OmegaConf.select(cfg, "system.theta_loss_weight", default=0.0)


def check_no_theta_supervision(cfg: DictConfig) -> None:
    """Tasks whose data holds no true transform cannot supervise θ (``system.theta_loss_weight`` must be 0)."""
    weight = theta_loss_weight(cfg)
    check(not weight, "system.theta_loss_weight", weight, f"0: the {cfg.data.name} data hold no true transform")


@dataclass
class DigitData:
    """``data`` of the distorted-MNIST cells (:class:`~stn_repro.data.distorted_mnist.DistortedMNISTDataModule` and
    its digit-sequence subclass)."""

    _target_: str
    name: str
    distortion: str
    root: str
    source: str
    digits: str
    val_size: int | float
    test_seed: int
    resample_every_epoch: bool
    device_resident: bool
    params: dict[str, Any] = field(default_factory=dict)  # the protocol's own constructor checks its names
    num_classes: int = 10

    def __post_init__(self) -> None:
        check(self.distortion in DISTORTIONS, "data.distortion", self.distortion,
              f"one of {', '.join(sorted(DISTORTIONS))}")  # fmt: skip
        check(self.source in SOURCES, "data.source", self.source, f"one of {', '.join(SOURCES)}")
        check(self.digits in DIGITS, "data.digits", self.digits, f"one of {', '.join(DIGITS)}")
        check(self.num_classes >= 2, "data.num_classes", self.num_classes, "an integer >= 2")
        check(self.test_seed >= 0, "data.test_seed", self.test_seed, "an integer >= 0")
