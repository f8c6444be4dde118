"""Parameters → sampling grids and point maps (pure functions).

Every grid maps the normalised coordinates of each *output* pixel centre to the *input* location it reads
(see :mod:`stn_repro.transformers.sampling` for the convention). Points are ``(x, y)`` or ``(x, y, z)`` rows in
the same normalised coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stn_repro.transformers.sampling import base_grid, tensor_cache

PROJECTIVE_EPS = 1e-6
"""Smallest magnitude allowed for a projective denominator; keeps grids finite (no NaN or inf)."""


def _homogeneous(points: Tensor) -> Tensor:
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


def affine_grid(theta: Tensor, out_size: Sequence[int]) -> Tensor:
    """Sampling grid of an affine map.

    Args:
        theta: ``(B, 2, 3)`` for images or ``(B, 3, 4)`` for volumes; maps output to input coordinates.
        out_size: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``.
    """
    base = base_grid(out_size, device=theta.device, dtype=theta.dtype)
    flat = base.reshape(1, -1, base.shape[-1])
    grid = flat @ theta.transpose(1, 2)
    return grid.reshape(theta.shape[0], *base.shape[:-1], theta.shape[1])


def apply_affine(theta: Tensor, points: Tensor) -> Tensor:
    """Map points ``(B, N, d)`` with ``theta`` ``(B, d, d + 1)``; returns ``(B, N, d)``."""
    return _homogeneous(points) @ theta.transpose(1, 2)


def rotation_angle(matrix: Tensor) -> Tensor:
    """``(B,)`` radians: the rotation of the similarity nearest to the linear part of maps ``(B, 2|3, 3)``."""
    return torch.atan2(matrix[:, 1, 0] - matrix[:, 0, 1], matrix[:, 0, 0] + matrix[:, 1, 1])


def safe_denominator(w: Tensor, eps: float = PROJECTIVE_EPS) -> Tensor:
    """``w`` with magnitudes below ``eps`` replaced by ``±eps`` (sign kept, zero counted positive)."""
    return torch.where(w.abs() < eps, torch.where(w < 0, -eps, eps), w)


def apply_homography(matrix: Tensor, points: Tensor, eps: float = PROJECTIVE_EPS) -> Tensor:
    """Map points ``(B, N, 2)`` with homographies ``(B, 3, 3)``; the denominator is kept away from zero."""
    return _projected(_homogeneous(points), matrix, eps)


def _projected(homogeneous: Tensor, matrix: Tensor, eps: float) -> Tensor:
    """``(B, N, 2)``: homogeneous points ``(B or 1, N, 3)`` mapped by ``matrix`` ``(B, 3, 3)`` and divided by their
    guarded third coordinate (numerator and denominator as separate contiguous products: cheaper to differentiate
    than slices of one)."""
    numerator = homogeneous @ matrix[:, :2].transpose(1, 2)
    denominator = homogeneous @ matrix[:, 2:].transpose(1, 2)
    return numerator * safe_denominator(denominator, eps).reciprocal()


def projective_grid(matrix: Tensor, out_size: Sequence[int], eps: float = PROJECTIVE_EPS) -> Tensor:
    """Sampling grid of homographies ``(B, 3, 3)`` for output ``(H, W)``; returns ``(B, H, W, 2)``, always finite."""
    h, w = out_size
    base = base_grid(out_size, device=matrix.device, dtype=matrix.dtype).reshape(1, -1, 3)  # (1, HW, 3), cached
    return _projected(base, matrix, eps).reshape(-1, h, w, 2)


def pixel_centre_points(size: Sequence[int], *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised ``(x, y)`` of every pixel centre of an ``(H, W)`` image in row-major order, ``(1, H*W, 2)``."""
    base = base_grid(size, device=device, dtype=dtype)
    return base[..., :2].reshape(1, -1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Thin-plate splines
# ----------------------------------------------------------------------------------------------------------------


@tensor_cache(maxsize=32)
def control_grid(grid_size: int, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Control points on a ``grid_size`` × ``grid_size`` grid spanning ``[-1, 1]^2``, row-major, ``(K, 2)``.

    Cached; treat as read-only."""
    axis = torch.linspace(-1.0, 1.0, grid_size, dtype=torch.float64, device="cpu")  # cached: never on a default device
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1).to(device=device, dtype=dtype)


def tps_kernel(points: Tensor, centres: Tensor) -> Tensor:
    """Radial basis ``U(r) = r² log r`` between ``points`` ``(N, 2)`` and ``centres`` ``(K, 2)``; ``(N, K)``.

    The same kernel as SciPy's ``RBFInterpolator(kernel="thin_plate_spline")``; ``U(0) = 0``.
    """
    r2 = (points[:, None, :] - centres[None, :, :]).pow(2).sum(-1)
    return torch.where(r2 > 0, 0.5 * r2 * torch.log(r2.clamp_min(1e-300)), torch.zeros_like(r2))


@tensor_cache(maxsize=32)
def _tps_solution(grid_size: int, regularisation: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``L⁻¹[:, :K]`` of the TPS system for the control grid, solved once in float64; ``(K + 3, K)``."""
    centres = control_grid(grid_size, device="cpu", dtype=torch.float64)
    k = centres.shape[0]
    system = torch.zeros(k + 3, k + 3, dtype=torch.float64, device="cpu")
    system[:k, :k] = tps_kernel(centres, centres) + regularisation * torch.eye(k, dtype=torch.float64, device="cpu")
    system[:k, k:] = _homogeneous_first(centres)
    system[k:, :k] = _homogeneous_first(centres).T
    rhs = torch.zeros(k + 3, k, dtype=torch.float64, device="cpu")
    rhs[:k] = torch.eye(k, dtype=torch.float64, device="cpu")
    return torch.linalg.solve(system, rhs).to(device=device, dtype=dtype)


def _homogeneous_first(points: Tensor) -> Tensor:
    return torch.cat([torch.ones_like(points[:, :1]), points], dim=-1)


def tps_weights(points: Tensor, grid_size: int, regularisation: float = 0.0) -> Tensor:
    """Interpolation weights ``(N, K)``: ``f(points) = weights @ source_points`` for any control positions.

    Args:
        points: ``(N, 2)`` normalised locations at which the spline is evaluated (any dtype/device).
        grid_size: control points per side (``K = grid_size²``).
        regularisation: ``λ`` added to the kernel diagonal (0: exact interpolation; > 0: smoother maps that
            no longer pass exactly through the control points).
    """
    solution = _tps_solution(grid_size, float(regularisation), points.device, torch.float64)
    centres = control_grid(grid_size, device=points.device, dtype=torch.float64)
    p = points.to(torch.float64)
    basis = torch.cat([tps_kernel(p, centres), _homogeneous_first(p)], dim=-1)
    return (basis @ solution).to(points.dtype)


@tensor_cache(maxsize=64)
def _tps_grid_weights(
    out_size: tuple[int, int], grid_size: int, regularisation: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    pixels = pixel_centre_points(out_size, device=device, dtype=torch.float64)[0]
    return tps_weights(pixels, grid_size, regularisation).to(dtype)


def tps_grid(source_points: Tensor, out_size: Sequence[int], grid_size: int, regularisation: float = 0.0) -> Tensor:
    """Sampling grid of the thin-plate spline taking the control grid to ``source_points``.

    Args:
        source_points: ``(B, K, 2)`` input locations of the ``K = grid_size²`` control points (the identity is
            :func:`control_grid`).
        out_size: ``(H, W)``.

    Returns:
        ``(B, H, W, 2)``. The interpolation weights are solved once per size/grid/λ/device/dtype and cached.
    """
    h, w = out_size
    device, dtype = source_points.device, source_points.dtype
    weights = _tps_grid_weights((int(h), int(w)), grid_size, float(regularisation), device, dtype)
    # Interpolate displacements from the identity (f(p) = p + Σ w·Δ): exact for the identity, smaller rounding.
    displacement = source_points - control_grid(grid_size, device=device, dtype=dtype)
    base = pixel_centre_points(out_size, device=device, dtype=dtype)
    return (base + weights @ displacement).reshape(source_points.shape[0], h, w, 2)
