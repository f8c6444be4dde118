"""Coordinates and sampling: the one place where the pixel convention is decided.

Convention (used by every grid, every sampler call and the data generator):

* Coordinates are normalised to ``[-1, 1]`` per axis, ``x`` along width, ``y`` along height (``z`` along depth
  for volumes), as in :func:`torch.nn.functional.grid_sample`.
* ``ALIGN_CORNERS = False``: ``-1`` and ``+1`` are the outer *edges* of the border pixels, so pixel ``i`` of an
  axis of ``n`` pixels has its centre at ``(2 i + 1) / n - 1``. The square ``[-1, 1]^2`` is the whole image
  whatever its resolution, so one θ means the same region for any input or output size (ST outputs smaller
  than the input, attention crops, boxes). This is PyTorch's default since 1.3; the 2015 Torch samplers used
  ``align_corners=True`` semantics (a difference of a factor ``(n - 1) / n`` in scale that a learnt θ absorbs).
* A sampling grid maps each *output* pixel to the *input* location it reads (the paper's direction).

Float32 note: a normalised coordinate carries about ``n * 6e-8`` px of rounding, so the identity warp is exact
for power-of-two sizes and within ``~2e-7 * n`` of the input otherwise (``3e-6`` at 28 px); in float64 it is exact
to ``1e-12``. Base grids are computed in float64 and rounded once to keep that bound.

Mixed precision: grids and the sampler always run in float32 or wider (:func:`warp`, :func:`sample`), with autocast
switched off locally: a bfloat16 grid is off by up to ``n / 256`` px, and grid_sample's half-precision backward
accumulates its gradients in half precision (slow, and inexact). Their inputs are cast up and the output back to
the input's dtype, so a transformer inside a ``bf16-mixed`` model computes exactly what it computes in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGN_CORNERS = False
SAMPLING_MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


def pixel_centres(size: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised coordinates of the ``size`` pixel centres of one axis, shape ``(size,)``."""
    index = torch.arange(size, dtype=torch.float64, device=device)
    if ALIGN_CORNERS:
        centres = 2 * index / max(size - 1, 1) - 1
    else:
        centres = (2 * index + 1) / size - 1
    return centres.to(dtype)


def normalized_to_pixel_matrix(size: Sequence[int], *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Homogeneous matrix taking normalised ``(x, y[, z])`` to pixel coordinates (pixel centres are integers).

    Args:
        size: spatial size ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(d + 1, d + 1)`` matrix, ``d = len(size)``; its inverse maps pixels back to normalised coordinates.
    """
    extents = list(reversed(list(size)))  # x first
    d = len(extents)
    matrix = torch.eye(d + 1, dtype=dtype)
    for axis, n in enumerate(extents):
        if ALIGN_CORNERS:
            matrix[axis, axis] = (n - 1) / 2
            matrix[axis, d] = (n - 1) / 2
        else:
            matrix[axis, axis] = n / 2
            matrix[axis, d] = (n - 1) / 2
    return matrix


def _base_grid(size: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    axes = [pixel_centres(n, device=device, dtype=torch.float64) for n in size]
    mesh = torch.meshgrid(*axes, indexing="ij")  # z, y, x order of the size
    coords = [m for m in reversed(mesh)]  # x, y[, z]
    coords.append(torch.ones_like(mesh[0]))
    return torch.stack(coords, dim=-1).to(dtype)


def tensor_cache(maxsize: int) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """``functools.lru_cache`` for functions returning constant tensors, which it always builds outside inference
    mode: a tensor first built under ``torch.inference_mode()`` (a validation or test step) could not be used by
    autograd in the training steps after it."""

    def decorate(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(function)
        def cached(*args, **kwargs) -> Tensor:
            with torch.inference_mode(False):
                return function(*args, **kwargs)

        return cached

    return decorate


_cached_base_grid = tensor_cache(maxsize=64)(_base_grid)


def base_grid(
    size: Sequence[int], *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Homogeneous normalised coordinates of every output pixel centre.

    Args:
        size: output size ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(H, W, 3)`` holding ``(x, y, 1)``, or ``(D, H, W, 4)`` holding ``(x, y, z, 1)``. Cached per
        size/device/dtype; treat as read-only.
    """
    key = (tuple(int(s) for s in size), torch.device(device or "cpu"), dtype)
    if torch.compiler.is_compiling():
        return _base_grid(*key)  # traced into the compiled graph (torch.compile does not trace through lru_cache)
    return _cached_base_grid(*key)


def check_sampling_options(mode: str, padding_mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` and ``padding_mode`` are supported."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def sampling_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype grids and the sampler compute in for data of ``dtype``: float32, or float64 for float64 data."""
    return torch.promote_types(dtype, torch.float32)


def warp(
    input: Tensor,
    theta: Tensor,
    make_grid: Callable[[Tensor], Tensor],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    """Sample ``input`` through the grid ``make_grid(theta)``, both in :func:`sampling_dtype` with autocast off.

    Args:
        input: ``(B, C, *spatial)``, any float dtype (e.g. bfloat16 feature maps under autocast).
        theta: ``(B, P)`` transform parameters; cast to the sampling dtype before ``make_grid`` sees them.
        make_grid: ``theta → (B, *out_spatial, d)`` normalised grid (a family's ``grid`` at a fixed size).
        mode, padding_mode: see :func:`sample`.

    Returns:
        ``(B, C, *out_spatial)`` in ``input``'s dtype.
    """
    with torch.autocast(input.device.type, enabled=False):
        grid = make_grid(theta.to(sampling_dtype(input.dtype)))
        return sample(input, grid, mode, padding_mode)


def sample(input: Tensor, grid: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Read ``input`` at the normalised locations of ``grid``, in :func:`sampling_dtype` with autocast off.

    Args:
        input: ``(B, C, H_in, W_in)`` or ``(B, C, D_in, H_in, W_in)``.
        grid: ``(B, H, W, 2)`` or ``(B, D, H, W, 3)`` from a transform family.
        mode: ``"bilinear"`` (trilinear on volumes) or ``"nearest"``.
        padding_mode: value outside the input: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in ``input``'s dtype.
    """
    check_sampling_options(mode, padding_mode)
    if input.dim() != grid.dim() or grid.shape[-1] != input.dim() - 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(
            f"input (B, C, *spatial) and grid (B, *out_spatial, {input.dim() - 2}) do not match: "
            f"got input {tuple(input.shape)} and grid {tuple(grid.shape)}"
        )
    dtype = sampling_dtype(input.dtype)
    with torch.autocast(input.device.type, enabled=False):
        output = F.grid_sample(
            input.to(dtype), grid.to(dtype), mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS
        )
    return output.to(input.dtype)
