"""Transform families: parameter count, identity, parameters → grid, point maps and inverses.

Parameters are always a flat ``(B, P)`` tensor (what a localisation net emits). Each family maps *output*
coordinates to *input* coordinates (see :mod:`stn_repro.transformers.sampling`).

=============  ====  ===========================================================================
family          P    parameters
=============  ====  ===========================================================================
affine          6    θ row-major: ``[[a, b, tx], [c, d, ty]]``
attention       3    ``(s, tx, ty)``: isotropic scale and translation, ``[[s, 0, tx], [0, s, ty]]``
translation     2    ``(tx, ty)`` at a fixed scale ``s``: ``[[s, 0, tx], [0, s, ty]]`` (the paper's CUB crops)
projective      8    first 8 entries of the homography row-major, bottom-right entry fixed to 1
tps            2K    input positions ``(x_k, y_k)`` of the K control points of a k×k grid (default 4×4)
affine3d       12    θ row-major ``(3, 4)`` acting on ``(x, y, z)`` of ``N×C×D×H×W`` volumes
=============  ====  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from stn_repro.transformers.grids import (
    affine_grid,
    apply_affine,
    apply_homography,
    control_grid,
    projective_grid,
    safe_denominator,
    tps_grid,
    tps_weights,
)


class TransformFamily:
    """A parametric family of spatial transforms (a plain object: no learnable state)."""

    name: ClassVar[str]
    spatial_dims: ClassVar[int] = 2
    has_inverse: ClassVar[bool] = True
    num_params: int

    def identity(self, batch_size: int = 1, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Identity parameters repeated ``batch_size`` times, ``(B, P)``."""
        return self._identity_vector().to(device=device, dtype=dtype).expand(batch_size, -1).clone()

    def _identity_vector(self) -> Tensor:
        """The identity parameters ``(P,)`` in float64."""
        raise NotImplementedError

    def check_params(self, params: Tensor) -> None:
        """Raise ``ValueError`` unless ``params`` is a floating ``(B, P)`` tensor."""
        if not isinstance(params, Tensor) or params.dim() != 2 or params.shape[1] != self.num_params:
            got = tuple(params.shape) if isinstance(params, Tensor) else type(params).__name__
            raise ValueError(f"{self.name} parameters must have shape (B, {self.num_params}), got {got}")
        if not params.is_floating_point():
            raise ValueError(f"{self.name} parameters must be floating point, got {params.dtype}")

    def check_out_size(self, out_size: Sequence[int]) -> tuple[int, ...]:
        """``out_size`` as a tuple; ``ValueError`` unless it has ``spatial_dims`` positive entries."""
        size = tuple(int(s) for s in out_size)
        if len(size) != self.spatial_dims or min(size) < 1:
            names = "(H, W)" if self.spatial_dims == 2 else "(D, H, W)"
            raise ValueError(f"{self.name} output size must be {names} of positive ints, got {tuple(out_size)}")
        return size

    def grid(self, params: Tensor, out_size: Sequence[int]) -> Tensor:
        """Sampling grid ``(B, H, W, 2)`` (or ``(B, D, H, W, 3)``) for an output of ``out_size``."""
        raise NotImplementedError

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map output-space points ``(B, N, d)`` to the input locations they read, ``(B, N, d)``."""
        raise NotImplementedError

    def inverse(self, params: Tensor) -> Tensor:
        """Parameters ``(B, P)`` of the inverse map (input → output), where the family has one."""
        raise NotImplementedError(f"the {self.name} family has no closed-form inverse")

    def inverse_points(self, params: Tensor, points: Tensor) -> Tensor:
        """Map input-space points ``(B, N, d)`` to output coordinates (e.g. where a digit box lands)."""
        return self.transform_points(self.inverse(params), points)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_params={self.num_params})"


class MatrixFamily(TransformFamily):
    """Families given by a homogeneous matrix ``(B, d + 1, d + 1)``."""

    def matrix(self, params: Tensor) -> Tensor:
        """Homogeneous matrices ``(B, d + 1, d + 1)`` of the parameters."""
        raise NotImplementedError

    def from_matrix(self, matrix: Tensor) -> Tensor:
        """Parameters ``(B, P)`` of homogeneous matrices of this family."""
        raise NotImplementedError

    def grid(self, params: Tensor, out_size: Sequence[int]) -> Tensor:
        self.check_params(params)
        return affine_grid(self.matrix(params)[:, : self.spatial_dims], self.check_out_size(out_size))

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        self.check_params(params)
        return apply_affine(self.matrix(params)[:, : self.spatial_dims], points)

    def inverse(self, params: Tensor) -> Tensor:
        self.check_params(params)
        return self.from_matrix(torch.linalg.inv(self.matrix(params)))


def _append_last_row(theta: Tensor) -> Tensor:
    d = theta.shape[1]
    last = torch.zeros(theta.shape[0], 1, d + 1, device=theta.device, dtype=theta.dtype)
    last[:, 0, d] = 1
    return torch.cat([theta, last], dim=1)


class AffineFamily(MatrixFamily):
    name = "affine"
    num_params = 6

    def _identity_vector(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)

    def matrix(self, params: Tensor) -> Tensor:
        return _append_last_row(params.reshape(-1, 2, 3))

    def from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :2].reshape(-1, 6)


class AttentionFamily(MatrixFamily):
    name = "attention"
    num_params = 3

    def _identity_vector(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)

    def matrix(self, params: Tensor) -> Tensor:
        s, tx, ty = params.unbind(1)
        zero, one = torch.zeros_like(s), torch.ones_like(s)
        rows = [torch.stack(r, dim=1) for r in ((s, zero, tx), (zero, s, ty), (zero, zero, one))]
        return torch.stack(rows, dim=1)

    def from_matrix(self, matrix: Tensor) -> Tensor:
        return torch.stack([matrix[:, 0, 0], matrix[:, 0, 2], matrix[:, 1, 2]], dim=1)


class TranslationFamily(MatrixFamily):
    """Attention at a fixed, non-learned scale: ``[[s, 0, tx], [0, s, ty]]`` (CUB: 224 px crops of 448 px images).

    Its zero parameters are the centred crop (the identity when ``scale`` is 1). The inverse of a scaled map is not
    in the family, so :meth:`inverse` is only defined for ``scale == 1``.
    """

    name = "translation"
    num_params = 2

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"translation scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.has_inverse = self.scale == 1.0

    def _identity_vector(self) -> Tensor:
        return torch.zeros(2, dtype=torch.float64)

    def matrix(self, params: Tensor) -> Tensor:
        tx, ty = params.unbind(1)
        zero, one, s = torch.zeros_like(tx), torch.ones_like(tx), torch.full_like(tx, self.scale)
        rows = [torch.stack(r, dim=1) for r in ((s, zero, tx), (zero, s, ty), (zero, zero, one))]
        return torch.stack(rows, dim=1)

    def from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :2, 2]

    def inverse(self, params: Tensor) -> Tensor:
        if not self.has_inverse:
            raise NotImplementedError(f"the inverse of a translation at scale {self.scale} is not a translation")
        return -params

    def __repr__(self) -> str:
        return f"TranslationFamily(scale={self.scale})"


class ProjectiveFamily(MatrixFamily):
    """Plane homographies; denominators are kept at least :data:`PROJECTIVE_EPS` from zero.

    Args:
        perspective_scale: the homography's perspective row ``(g, h)`` is ``perspective_scale`` times parameters 7
            and 8. Below 1 it slows those two entries relative to the other six under an optimiser that moves every
            weight at about the same rate (Adam); 1 (default) is the plain homography.
    """

    name = "projective"
    num_params = 8

    def __init__(self, perspective_scale: float = 1.0) -> None:
        if not perspective_scale > 0:
            raise ValueError(f"projective perspective_scale must be > 0, got {perspective_scale}")
        self.perspective_scale = float(perspective_scale)

    def _identity_vector(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)

    def matrix(self, params: Tensor) -> Tensor:
        affine_rows, perspective = params[:, :6], params[:, 6:] * self.perspective_scale
        return torch.cat([affine_rows, perspective, torch.ones_like(params[:, :1])], dim=1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: Tensor) -> Tensor:
        normalised = (matrix / safe_denominator(matrix[:, 2:, 2:])).reshape(-1, 9)
        return torch.cat([normalised[:, :6], normalised[:, 6:8] / self.perspective_scale], dim=1)

    def __repr__(self) -> str:
        return f"ProjectiveFamily(perspective_scale={self.perspective_scale})"

    def grid(self, params: Tensor, out_size: Sequence[int]) -> Tensor:
        self.check_params(params)
        return projective_grid(self.matrix(params), self.check_out_size(out_size))

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        self.check_params(params)
        return apply_homography(self.matrix(params), points)


class ThinPlateSplineFamily(TransformFamily):
    """Thin-plate splines through ``grid_size²`` control points on a regular grid over ``[-1, 1]²``.

    Args:
        grid_size: control points per side (paper: 16 points, i.e. 4).
        regularisation: ``λ`` on the kernel diagonal; 0 interpolates the control points exactly.
    """

    name = "tps"
    has_inverse = False

    def __init__(self, grid_size: int = 4, regularisation: float = 0.0) -> None:
        if grid_size < 2:
            raise ValueError(f"tps grid_size must be at least 2, got {grid_size}")
        if regularisation < 0:
            raise ValueError(f"tps regularisation must be >= 0, got {regularisation}")
        self.grid_size = int(grid_size)
        self.regularisation = float(regularisation)
        self.num_params = 2 * self.grid_size**2

    def _identity_vector(self) -> Tensor:
        return control_grid(self.grid_size, dtype=torch.float64).reshape(-1)

    def grid(self, params: Tensor, out_size: Sequence[int]) -> Tensor:
        self.check_params(params)
        size = self.check_out_size(out_size)
        return tps_grid(params.reshape(params.shape[0], -1, 2), size, self.grid_size, self.regularisation)

    def transform_points(self, params: Tensor, points: Tensor) -> Tensor:
        self.check_params(params)
        b, n, _ = points.shape
        weights = tps_weights(points.reshape(-1, 2), self.grid_size, self.regularisation)
        return weights.reshape(b, n, -1) @ params.reshape(b, -1, 2)

    def __repr__(self) -> str:
        return f"ThinPlateSplineFamily(grid_size={self.grid_size}, regularisation={self.regularisation})"


class Affine3dFamily(MatrixFamily):
    name = "affine3d"
    spatial_dims = 3
    num_params = 12

    def _identity_vector(self) -> Tensor:
        return torch.eye(3, 4, dtype=torch.float64).reshape(-1)

    def matrix(self, params: Tensor) -> Tensor:
        return _append_last_row(params.reshape(-1, 3, 4))

    def from_matrix(self, matrix: Tensor) -> Tensor:
        return matrix[:, :3].reshape(-1, 12)


FAMILIES: dict[str, type[TransformFamily]] = {
    cls.name: cls
    for cls in (
        AffineFamily,
        AttentionFamily,
        TranslationFamily,
        ProjectiveFamily,
        ThinPlateSplineFamily,
        Affine3dFamily,
    )
}


def get_family(family: str | TransformFamily, **options) -> TransformFamily:
    """The family called ``family`` (one of :data:`FAMILIES`), built with ``options`` (e.g. ``grid_size``)."""
    if isinstance(family, TransformFamily):
        if options:
            raise ValueError(f"options {sorted(options)} given for an already built family {family!r}")
        return family
    if family not in FAMILIES:
        raise ValueError(f"unknown transform family {family!r}; expected one of {sorted(FAMILIES)}")
    try:
        return FAMILIES[family](**options)
    except TypeError as error:
        raise ValueError(f"bad options {options} for transform family {family!r}: {error}") from None
