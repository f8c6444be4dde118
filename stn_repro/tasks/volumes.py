"""3D transformers on extruded MNIST (appendix A.3): volumes rendered per batch, a depth-flattened CNN and the
3D ST-CNN (``affine3d`` transformer → depth projection → 2D CNN), matched in parameter count.

The paper gives the setting only (a digit extruded inside a 60×60×60 volume, a 3D affine transformer, the output
flattened along depth for a 2D classifier) and no number. Everything else is a guess, recorded in every result:
the slab thickness and rotation ranges (:mod:`stn_repro.data.volumes`), the mean projection and the 30×30
classifier input (:mod:`stn_repro.models.volumes`), the localisation net, the parameter target and the schedules.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_choice,
    check_number,
    check_positive_int,
    check_transformer_family,
    get_value,
)
from stn_repro.data.sources import DIGITS, SOURCES
from stn_repro.models.volumes import VOLUME_MODEL_KINDS, depth_projection_scale
from stn_repro.tasks.base import Task


def projection_scale(cfg: DictConfig) -> float:
    """The depth projection's scale of ``cfg`` (:func:`~stn_repro.models.volumes.depth_projection_scale`)."""
    return depth_projection_scale(cfg.model.projection_scale, cfg.data.size, cfg.data.thickness)


def validate(cfg: DictConfig) -> None:
    check_choice(cfg, "model.kind", VOLUME_MODEL_KINDS)
    check_transformer_family(cfg, get_value(cfg, "model.kind") == "st", ["affine3d"])
    check_positive_int(cfg, "model.param_target")
    check_positive_int(cfg, "model.out_size")
    kernels = get_value(cfg, "model.kernel_sizes")
    check(
        len(kernels) > 0 and all(isinstance(k, int) and k > 0 and k % 2 for k in kernels),
        "model.kernel_sizes",
        kernels,
        "a list of odd positive kernel sizes, one per conv layer",
    )
    check_positive_int(cfg, "data.size")
    check_positive_int(cfg, "data.thickness")
    size, thickness, out_size = (get_value(cfg, k) for k in ("data.size", "data.thickness", "model.out_size"))
    check((28**2 * 2 + thickness**2) ** 0.5 <= size, "data.thickness", thickness, f"a slab that fits a {size}^3 volume")
    check(size % out_size == 0, "model.out_size", out_size, f"a divisor of data.size={size}")
    if get_value(cfg, "model.projection_scale") is not None:
        check_number(cfg, "model.projection_scale", 0.0, strict=True)
    for key in ("data.max_tilt", "data.max_roll"):
        check_number(cfg, key, 0.0)
        check(get_value(cfg, key) <= 180, key, get_value(cfg, key), "an angle in [0, 180] degrees")
    check_choice(cfg, "data.source", SOURCES)
    check_choice(cfg, "data.digits", DIGITS)
    check_positive_int(cfg, "data.num_classes", minimum=2)
    check_positive_int(cfg, "data.test_seed", minimum=0)
    if get_value(cfg, "data.limit") is not None:
        check_positive_int(cfg, "data.limit")
    if get_value(cfg, "model.kind") == "st":
        loc = get_value(cfg, "model.localisation")
        check(loc is not None, "model.localisation", loc, "conv_localisation settings for the 3D ST-CNN")
        for key in ("kernel_size", "downsample"):
            check_positive_int(cfg, f"model.localisation.{key}")
        for key in ("channels", "hidden"):
            values = get_value(cfg, f"model.localisation.{key}")
            check(all(isinstance(v, int) and v > 0 for v in values), f"model.localisation.{key}", values,
                  "a list of positive integers")  # fmt: skip


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
    if cfg.optim.momentum:
        notes.append(f"SGD momentum {cfg.optim.momentum} (the paper does not say)")
    if cfg.optim.theta_loss_weight:
        notes.append(f"θ supervised towards the true pose (weight {cfg.optim.theta_loss_weight}; paper: unsupervised)")
    return notes


TASK = Task(validate, deviations)
