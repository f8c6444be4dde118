"""3D transformers on extruded MNIST (appendix A.3): volumes rendered per batch, a depth-flattened CNN and the
3D ST-CNN (``affine3d`` transformer → depth projection → 2D CNN), matched in parameter count.

The paper gives the setting only (a digit extruded inside a 60×60×60 volume, a 3D affine transformer, the output
flattened along depth for a 2D classifier) and no number. Everything else is a guess, recorded in every result:
the slab thickness and rotation ranges (:mod:`stn_repro.data.volumes`), the mean projection and the 30×30
classifier input (:mod:`stn_repro.models.volumes`), the localisation net, the parameter target and the schedules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_transformer_family,
    get_value,
)
from stn_repro.data.distortions import DIGIT_SIZE
from stn_repro.data.sources import DIGITS, SOURCES
from stn_repro.models.volumes import VOLUME_MODEL_KINDS, depth_projection_scale
from stn_repro.schema import check_node
from stn_repro.tasks.base import ConvLocalisation, Task, momentum, theta_loss_weight


def projection_scale(cfg: DictConfig) -> float:
    """The depth projection's scale of ``cfg`` (:func:`~stn_repro.models.volumes.depth_projection_scale`)."""
    return depth_projection_scale(cfg.model.projection_scale, cfg.data.size, cfg.data.thickness)


@dataclass
class VolumeData:
    """``data`` of the 3D cells (:class:`~stn_repro.data.volumes.VolumeMNISTDataModule`; its protocol checks
    that the slab fits the volume and the rotation ranges)."""

    _target_: str
    name: str
    size: int
    thickness: int
    max_tilt: float
    max_roll: float
    num_classes: int
    root: str
    source: str
    digits: str
    val_size: int | float
    limit: int | None
    test_seed: int
    resample_every_epoch: bool
    device_resident: bool

    def __post_init__(self) -> None:
        check(self.size >= 1 and self.thickness >= 1, "data.thickness", self.thickness,
              f"a slab of >= 1 voxel in a data.size={self.size} volume")  # fmt: skip
        fits = (DIGIT_SIZE**2 * 2 + self.thickness**2) ** 0.5 <= self.size
        check(fits, "data.thickness", self.thickness, f"a slab that fits a {self.size}^3 volume")
        for key in ("max_tilt", "max_roll"):
            value = getattr(self, key)
            check(0 <= value <= 180, f"data.{key}", value, "an angle in [0, 180] degrees")
        check(self.num_classes >= 2, "data.num_classes", self.num_classes, "an integer >= 2")
        check(self.source in SOURCES, "data.source", self.source, f"one of {', '.join(SOURCES)}")
        check(self.digits in DIGITS, "data.digits", self.digits, f"one of {', '.join(DIGITS)}")
        check(self.test_seed >= 0, "data.test_seed", self.test_seed, "an integer >= 0")
        check(self.limit is None or self.limit >= 1, "data.limit", self.limit, "null or an integer >= 1")


@dataclass
class VolumeModel:
    """``model`` of the 3D cells (:func:`~stn_repro.models.volumes.matched_volume_model`)."""

    _target_: str
    kind: str
    param_target: int
    out_size: int
    projection_scale: float | None
    kernel_sizes: list[int]
    localisation: ConvLocalisation | None = None

    def __post_init__(self) -> None:
        check(self.kind in VOLUME_MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(VOLUME_MODEL_KINDS)}")
        check(self.param_target >= 1, "model.param_target", self.param_target, "an integer >= 1")
        check(self.out_size >= 1, "model.out_size", self.out_size, "an integer >= 1")
        kernels = self.kernel_sizes
        check(len(kernels) > 0 and all(k > 0 and k % 2 for k in kernels), "model.kernel_sizes", kernels,
              "a list of odd positive kernel sizes, one per conv layer")  # fmt: skip
        scale = self.projection_scale
        check(scale is None or scale > 0, "model.projection_scale", scale, "null or a number > 0")
        check(self.kind != "st" or self.localisation is not None, "model.localisation", self.localisation,
              "conv_localisation settings for the 3D ST-CNN")  # fmt: skip


def validate(cfg: DictConfig) -> None:
    check_node(cfg, "data", VolumeData)
    check_node(cfg, "model", VolumeModel)
    check_transformer_family(cfg, get_value(cfg, "model.kind") == "st", ["affine3d"])
    size, out_size = get_value(cfg, "data.size"), get_value(cfg, "model.out_size")
    check(size % out_size == 0, "model.out_size", out_size, f"a divisor of data.size={size}")


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    d, m, p = cfg.data, cfg.model, cfg.profile
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {meta['source']} digits ({sizes['train']:,} train / {sizes['val']:,} val / "
            f"{sizes['test']:,} test), not the full 60,000/10,000 MNIST"
        )
    if d.limit is not None:
        notes.append(f"data.limit={d.limit:,}: only the first {d.limit:,} train and test digits")
    notes += [
        f"volume protocol guessed (the paper gives only the 60^3 volume): slab {d.thickness} voxels thick, tilts "
        f"U(±{d.max_tilt:g}°) about x and y, roll U(±{d.max_roll:g}°), digit at scale 1, uniform translation "
        "keeping the slab inside",
        f"schedule: {p.iterations:,} iterations at batch {p.batch_size}, lr x{p.lr_gamma} every "
        f"{p.lr_step_every:,} (the paper gives no schedule for the 3D experiment)",
        f"models sized to ~{m.param_target:,} parameters; classifier: CNN conv {'/'.join(map(str, m.kernel_sizes))} "
        f"on a {m.out_size}x{m.out_size} projection, mean over depth x{projection_scale(cfg):g} (guesses)",
    ]
    if m.kind == "st":
        loc = m.localisation
        notes.append(
            f"3D localisation net guessed: max-pool {loc.downsample}, conv3d {list(loc.channels)} of "
            f"{loc.kernel_size}^3, FC {list(loc.hidden)}; transformer output {m.out_size}^3"
        )
    if d.resample_every_epoch:
        notes.append("training poses re-drawn every epoch")
    if momentum(cfg):
        notes.append(f"SGD momentum {momentum(cfg)} (the paper does not say)")
    if theta_loss_weight(cfg):
        notes.append(f"θ supervised towards the true pose (weight {theta_loss_weight(cfg)}; paper: unsupervised)")
    return notes


TASK = Task(validate, deviations)
