"""Volume classifiers of appendix A.3 as plain ``nn.Module``s: a depth projection feeds a 2D CNN.

Both models take volumes ``(B, 1, S, S, S)`` and return logits ``(B, num_classes)``; their 2D classifier is the
project's :class:`~stn_repro.models.classifiers.CNN` on an ``out_size × out_size`` image:

* ``cnn``, "CNN (depth-flattened input)": the depth projection (mean over D) of the raw volume, average-pooled by
  ``S / out_size``.
* ``st``, "3D ST-CNN": an ``affine3d`` spatial transformer whose output is an ``out_size³`` volume over the whole
  input cube, then the same projection. Its localisation net max-pools the volume first (``downsample``) to stay
  cheap. At initialisation the transformer is the identity, so with ``out_size = S / 2`` its output is exactly the
  ``2×2×2`` average pool of the input (trilinear reads halfway between voxel centres) and the classifier gets
  the same image as the ``cnn`` model.

The projection is the *mean* over depth times ``projection_scale`` (a sum up to a constant factor). A thin slab's
mean is faint (at most ``thickness / S``, 1/6 for 10 voxels in 60), so the configs scale it by ``S / thickness``:
a face-on digit then projects to its own ``[0, 1]`` intensities, which a short SGD schedule needs. The
classifier's channels are ``(w, 2w)``, ``w`` solved to match a parameter target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from stn_repro.models.build import match_width
from stn_repro.models.classifiers import CNN
from stn_repro.transformers import SpatialTransformer, conv_localisation, get_family

VOLUME_MODEL_KINDS = ("cnn", "st")


def depth_projection(volumes: Tensor, scale: float = 1.0) -> Tensor:
    """Mean over depth times ``scale``: ``(B, C, D, H, W)`` → ``(B, C, H, W)``."""
    if volumes.dim() != 5:
        raise ValueError(f"depth_projection expects (B, C, D, H, W) volumes, got shape {tuple(volumes.shape)}")
    projection = volumes.mean(dim=2)
    return projection * scale if scale != 1.0 else projection


class ProjectionClassifier(nn.Module):
    """CNN (depth-flattened input): project the raw volume along depth, average-pool by ``pool``, classify.

    Shapes: ``(B, C, D, H, W)`` → ``(B, num_classes)``.
    """

    def __init__(self, classifier: nn.Module, pool: int = 1, projection_scale: float = 1.0) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.classifier = classifier
        self.projection_scale = projection_scale

    def flattened(self, volumes: Tensor) -> Tensor:
        """The classifier's input image ``(B, C, H / pool, W / pool)``."""
        return self.pool(depth_projection(volumes, self.projection_scale))

    def forward(self, volumes: Tensor) -> Tensor:
        return self.classifier(self.flattened(volumes))


class VolumeSTClassifier(nn.Module):
    """3D ST-CNN: a 3D spatial transformer, the depth projection of its output volume, a 2D classifier.

    Shapes: ``(B, C, D, H, W)`` → ``(B, num_classes)``; :attr:`transformer.theta` holds the last θ ``(B, 12)``.
    """

    def __init__(self, transformer: SpatialTransformer, classifier: nn.Module, projection_scale: float = 1.0) -> None:
        super().__init__()
        if transformer.family.spatial_dims != 3:
            raise ValueError(f"a volume transformer needs a 3D family, got {transformer.family.name}")
        self.transformer = transformer
        self.classifier = classifier
        self.projection_scale = projection_scale

    def flattened(self, volumes: Tensor) -> Tensor:
        """The classifier's input: the projection ``(B, C, H', W')`` of the transformer's output ``(B, C, *out)``."""
        return depth_projection(self.transformer(volumes), self.projection_scale)

    def forward(self, volumes: Tensor) -> Tensor:
        return self.classifier(self.flattened(volumes))


def build_volume_model(
    kind: str,
    width: int,
    in_shape: Sequence[int],
    num_classes: int = 10,
    out_size: int = 30,
    kernel_sizes: Sequence[int] = (5, 5),
    localisation: dict[str, Any] | None = None,
    projection_scale: float = 1.0,
) -> nn.Module:
    """One of :data:`VOLUME_MODEL_KINDS`.

    Args:
        width: the classifier's first conv width ``w`` (channels ``(w, 2w, ...)`` doubling per layer).
        in_shape: ``(C, S, S, S)`` of the input volumes.
        out_size: side of the classifier's input image (and of the transformer's output cube); divides ``S``.
        kernel_sizes: the classifier's conv kernels, one per layer.
        localisation: :func:`~stn_repro.transformers.conv_localisation` settings (``channels``, ``kernel_size``,
            ``downsample``, ``hidden``) of the ``st`` model.
        projection_scale: factor on the mean over depth (see the module docstring).
    """
    if kind not in VOLUME_MODEL_KINDS:
        raise ValueError(f"unknown volume model kind {kind!r}; expected one of {VOLUME_MODEL_KINDS}")
    channels, size = in_shape[0], in_shape[-1]
    if len(in_shape) != 4 or len(set(in_shape[1:])) != 1:
        raise ValueError(f"volume models expect a cubic (C, S, S, S) input, got {tuple(in_shape)}")
    if out_size < 1 or size % out_size:
        raise ValueError(f"out_size must divide the volume side {size}, got {out_size}")
    widths = [width * 2**i for i in range(len(kernel_sizes))]
    classifier = CNN((channels, out_size, out_size), num_classes, widths, tuple(kernel_sizes))
    if kind == "cnn":
        return ProjectionClassifier(classifier, size // out_size, projection_scale)
    family = get_family("affine3d")
    loc = conv_localisation(tuple(in_shape), family, **(localisation or {}))
    return VolumeSTClassifier(SpatialTransformer(loc, family, out_size=out_size), classifier, projection_scale)


def build_matched_volume_model(param_target: int, max_width: int = 1024, **settings: Any) -> tuple[nn.Module, int]:
    """The model of :func:`build_volume_model` whose classifier width brings its parameter count closest to
    ``param_target``; returns ``(model, width)`` (see :func:`stn_repro.models.build.match_width`)."""
    return match_width(lambda width: build_volume_model(width=width, **settings), param_target, max_width)


def matched_volume_model(
    in_shape: Sequence[int],
    num_classes: int,
    kind: str,
    param_target: int,
    slab_thickness: int,
    projection_scale: float | None = None,
    **settings: Any,
) -> nn.Module:
    """The ``model`` node of the 3D experiment: :func:`build_matched_volume_model` for volumes of ``in_shape``
    ``(C, S, S, S)`` holding a digit slab ``slab_thickness`` voxels deep; ``projection_scale`` ``None``:
    ``S / slab_thickness`` (the slab's mean over depth brought back to the digit's ink level).

    Shapes: ``(B, *in_shape)`` → ``(B, num_classes)``.
    """
    scale = depth_projection_scale(projection_scale, in_shape[-1], slab_thickness)
    if kind != "st":
        settings.pop("localisation", None)
    model, _ = build_matched_volume_model(
        param_target, kind=kind, in_shape=in_shape, num_classes=num_classes, projection_scale=scale, **settings
    )
    return model


def depth_projection_scale(projection_scale: float | None, size: int, slab_thickness: int) -> float:
    """``projection_scale``, or ``size / slab_thickness`` when it is ``None``: the mean over the ``size`` voxels of
    depth brought back to the ink level of a slab ``slab_thickness`` voxels deep."""
    return float(projection_scale) if projection_scale is not None else size / slab_thickness
