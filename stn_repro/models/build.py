"""Build the paper's classifiers from plain settings, and size them to a common parameter count."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from stn_repro.data.distortions import DIGIT_SIZE
from stn_repro.models.classifiers import CNN, FCN, STClassifier, count_parameters
from stn_repro.transformers import (
    ParallelTransformers,
    SpatialTransformer,
    conv_localisation,
    fc_localisation,
    get_family,
)

MODEL_KINDS = ("fcn", "cnn", "st_fcn", "st_cnn", "st2_fcn")
LOCALISATION_KINDS = ("fc", "conv")


def has_transformer(kind: str) -> bool:
    """Whether models of ``kind`` (:data:`MODEL_KINDS`) put spatial transformers before the classifier."""
    return kind.startswith(("st_", "st2_"))


def build_model(
    kind: str,
    in_shape: Sequence[int],
    num_classes: int,
    width: int,
    family: str | None = None,
    family_options: Mapping[str, Any] | None = None,
    localisation: Mapping[str, Any] | None = None,
    pool: int = 1,
    fcn_layers: int = 2,
    kernel_sizes: Sequence[int] = (9, 7),
    theta_to_classifier: bool = False,
) -> nn.Module:
    """One classifier of the paper.

    Args:
        kind: ``"fcn"``, ``"cnn"``, ``"st_fcn"``, ``"st_cnn"`` or ``"st2_fcn"`` (MNIST addition: two transformers,
            each seeing and warping every input channel, their outputs concatenated along channels → FCN).
        in_shape: ``(C, H, W)`` of the input images.
        num_classes: number of outputs.
        width: hidden units per FC layer (FCN) or channels per conv layer (CNN) of the classifier.
        family: transform family of the ST models (``"affine"``, ``"projective"``, ``"tps"``, ...).
        family_options: options of the family (e.g. ``{"grid_size": 4}`` for TPS).
        localisation: ``{"kind": "fc"|"conv", ...builder options}``; defaults to the paper's net for the kind
            (ST-FCN: FC 32-32-32; ST-CNN: ×2 downsampling, conv 20@5 → pool → conv 20@5 → FC 20).
        pool: average-pool factor after the transformer (ST models only).
        fcn_layers: hidden layers of the FCN classifier.
        kernel_sizes: conv kernel sizes of the CNN classifier.
        theta_to_classifier: ST models with one transformer: its θ also feeds the classifier's output layer.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
    if width < 1:
        raise ValueError(f"model width must be >= 1, got {width}")
    is_st = has_transformer(kind)
    copies = 2 if kind.startswith("st2_") else 1
    classifier_shape = (in_shape[0] * copies, *in_shape[1:])
    if is_st and pool > 1:
        classifier_shape = (classifier_shape[0], in_shape[1] // pool, in_shape[2] // pool)
    if theta_to_classifier and (not is_st or copies != 1):
        raise ValueError(f"theta_to_classifier needs a model with one input transformer, not {kind!r}")
    if is_st and family is None:
        raise ValueError(f"model kind {kind!r} needs a transform family")
    transform = get_family(family, **dict(family_options or {})) if is_st else None
    extra = transform.num_params if theta_to_classifier else 0
    if kind.endswith("fcn"):
        classifier: nn.Module = FCN(classifier_shape, num_classes, [width] * fcn_layers, extra)
    else:
        classifier = CNN(classifier_shape, num_classes, [width] * len(kernel_sizes), kernel_sizes, extra)
    if not is_st:
        return classifier
    settings = dict(localisation or _default_localisation(kind))
    loc_kind = settings.pop("kind")
    if loc_kind not in LOCALISATION_KINDS:
        raise ValueError(f"unknown localisation kind {loc_kind!r}; expected one of {LOCALISATION_KINDS}")
    builder = fc_localisation if loc_kind == "fc" else conv_localisation
    transformers = [
        SpatialTransformer(builder(tuple(in_shape), transform, **settings), transform) for _ in range(copies)
    ]
    transformer = transformers[0] if copies == 1 else ParallelTransformers(transformers, concat=True)
    return STClassifier(transformer, classifier, pool, theta_to_classifier)


def _default_localisation(kind: str) -> dict[str, Any]:
    if kind.endswith("fcn"):
        return {"kind": "fc", "hidden": (32, 32, 32)}
    return {"kind": "conv", "channels": (20, 20), "kernel_size": 5, "downsample": 2, "hidden": (20,)}


def match_width(build: Callable[[int], nn.Module], param_target: int, max_width: int) -> tuple[nn.Module, int]:
    """The model ``build(width)`` whose parameter count is closest to ``param_target``; returns ``(model, width)``.

    The parameter count grows with the width, so a bisection over ``1..max_width`` finds it; the counts are taken
    on the meta device (shapes only: no memory, no initialisation cost).

    Raises:
        ValueError: the target is below the smallest or above the largest model.
    """
    if param_target < 1:
        raise ValueError(f"param_target must be >= 1, got {param_target}")

    def params(width: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(width))

    low, high = 1, max_width
    if params(low) > param_target:
        raise ValueError(f"param_target {param_target} is below the smallest model ({params(low)} at width 1)")
    if params(high) < param_target:
        raise ValueError(f"param_target {param_target} is above the largest model ({params(high)} at width {high})")
    while high - low > 1:
        middle = (low + high) // 2
        if params(middle) < param_target:
            low = middle
        else:
            high = middle
    width = min((low, high), key=lambda w: abs(params(w) - param_target))
    return build(width), width


def build_matched_model(param_target: int, max_width: int = 4096, **settings: Any) -> tuple[nn.Module, int]:
    """The model of :func:`build_model` whose classifier width brings its parameter count closest to
    ``param_target``; returns ``(model, width)`` (see :func:`match_width`)."""
    return match_width(lambda width: build_model(width=width, **settings), param_target, max_width)


def paper_pool(in_shape: Sequence[int]) -> int:
    """The paper's average pool after the transformer for inputs of ``in_shape`` ``(C, H, W)``: 2 on canvases
    larger than a digit (RTS and ADD: 42 px, TC: 60 px; "42→21, 60→30"), else 1 (R, P, E: 28 px)."""
    return 2 if in_shape[-1] > DIGIT_SIZE else 1


def matched_classifier(
    in_shape: Sequence[int],
    num_classes: int,
    kind: str,
    param_target: int,
    pool: int | str = "auto",
    **settings: Any,
) -> nn.Module:
    """The ``model`` node of the distorted-MNIST experiments: the :func:`build_model` of ``kind`` whose width
    brings it closest to ``param_target`` parameters. ``pool``: an average-pool factor, or ``"auto"`` for
    :func:`paper_pool`; ``settings``: the other options of :func:`build_model`.

    Shapes: ``(B, *in_shape)`` → ``(B, num_classes)``.
    """
    if pool == "auto":
        pool = paper_pool(in_shape)
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
        raise ValueError(f"model.pool={pool!r} is invalid; expected auto or an integer >= 1")
    model, _ = build_matched_model(
        param_target, kind=kind, in_shape=tuple(in_shape), num_classes=num_classes, pool=pool, **settings
    )
    return model
