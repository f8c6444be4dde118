"""Claim 6: the transformer puts the digits in a standard upright pose. Measured, not pictured.

Each R / RTS test sample keeps the transform that made it: ``D`` (canvas → digit, normalised coordinates). The
input transformer samples the canvas at ``A(u)`` for output point ``u``; fitting ``A`` as an affine map to its
sampling grid (least squares over the grid points, so every family, TPS included, gets one) gives the digit point
each output point shows: ``R = D ∘ A``. Before the transformer the digit's pose is ``D``'s; after it, ``R``'s.
An upright standard pose means a small spread of ``R``'s rotation and scale over the test set.

Reported per run (:func:`pose_metrics`, degrees and natural-log scale): ``pose/angle_sd_in`` / ``_out`` (circular
standard deviation of the rotation angle before / after), ``pose/log_scale_sd_in`` / ``_out`` and
``pose/shift_sd_in`` / ``_out`` (spread of where the digit's centre lies in the canvas / the transformer's output,
normalised coordinates: ``sqrt`` of the trace of its covariance), and the histograms of the rotation angle and
the log scale before / after (:data:`ANGLE_EDGES`, :data:`LOG_SCALE_EDGES`), which a run record keeps in ``pose``
for the claim-6 figure.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stn_repro.data.batches import TensorBatches
from stn_repro.transformers import SpatialTransformer, get_family
from stn_repro.transformers.grids import rotation_angle

POSE_DISTORTIONS = ("R", "RTS")
ANGLE_EDGES = [float(a) for a in range(-180, 181, 10)]  # degrees; the residual angle lies in (-180, 180]
LOG_SCALE_EDGES = [round(-0.8 + 0.05 * i, 2) for i in range(37)]  # RTS before: ln(1.5 / s), s in [0.7, 1.2]
_AFFINE = get_family("affine")


def fitted_affine(transformer: SpatialTransformer, theta: Tensor, out_size: tuple[int, int]) -> Tensor:
    """``(B, 3, 3)``: the affine map (output → input, normalised) closest, in least squares over the sampling grid's
    points, to the transform ``theta`` ``(B, P)`` of ``transformer``'s family."""
    grid = transformer.family.grid(theta.float(), out_size).flatten(1, 2)  # (B, HW, 2) input points
    base = _AFFINE.grid(_AFFINE.identity(1, device=theta.device), out_size).flatten(1, 2)  # (1, HW, 2)
    points = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1).expand(len(theta), -1, -1)  # (B, HW, 3)
    solution = torch.linalg.lstsq(points.double(), grid.double()).solution  # (B, 3, 2)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=theta.device).expand(len(theta), 1, 3)
    return torch.cat([solution.transpose(1, 2), bottom], dim=1)


def rotation_and_scale(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """``(angle in degrees, log scale)`` ``(B,)`` of the linear part of affine maps ``(B, 3, 3)`` (or ``(B, 2, 3)``):
    the rotation of its nearest similarity and the log of ``sqrt(|det|)``."""
    linear = matrix[:, :2, :2].double()
    return torch.rad2deg(rotation_angle(linear)), 0.5 * torch.log(torch.linalg.det(linear).abs().clamp_min(1e-12))


def digit_centre(matrix: Tensor) -> Tensor:
    """``(B, 2)``: the point ``u`` that affine maps ``(B, 3, 3)`` (frame → digit) take to the digit's centre (0, 0)."""
    linear, shift = matrix[:, :2, :2].double(), matrix[:, :2, 2].double()
    return torch.linalg.solve(linear, -shift)


def spread(points: Tensor) -> float:
    """``sqrt(trace(cov))`` of points ``(N, 2)``."""
    return float(points.var(dim=0).sum().sqrt())


def circular_sd_deg(angles_deg: Tensor) -> float:
    """Circular standard deviation ``sqrt(-2 ln R̄)`` of angles in degrees, in degrees."""
    radians = torch.deg2rad(angles_deg.double())
    length = torch.sqrt(torch.cos(radians).mean() ** 2 + torch.sin(radians).mean() ** 2).clamp(1e-12, 1.0)
    return math.degrees(math.sqrt(-2.0 * math.log(float(length))))


def histogram(values: Tensor, edges: list[float]) -> list[int]:
    """Counts of ``values`` ``(N,)`` in the bins between ``edges``; values outside them count in the end bins."""
    clipped = values.double().clamp(edges[0], edges[-1])
    counts = torch.histogram(clipped.cpu(), bins=torch.tensor(edges, dtype=torch.float64)).hist
    return [int(c) for c in counts]


@torch.no_grad()
def pose_metrics(
    model: torch.nn.Module, test: dict[str, Tensor], batch_size: int = 256
) -> tuple[dict[str, float], dict[str, dict[str, list[float] | list[int]]]] | None:
    """``(metrics, histograms)``: the pose spreads before and after ``model.transformer`` on the test arrays
    ``test`` (with their ``theta``), and ``{"angle_deg" | "log_scale": {"edges", "before", "after"}}``; ``None``
    for a model without an input transformer."""
    transformer = getattr(model, "transformer", None)
    if not isinstance(transformer, SpatialTransformer) or transformer.family.spatial_dims != 2:
        return None
    parameter = next(model.parameters())
    device, dtype, was_training = parameter.device, parameter.dtype, model.training
    model.eval()
    before, after = [], []
    for images, _, truth in TensorBatches(test, batch_size, return_truth=True, device=device):
        theta = transformer.predict_theta(images.to(dtype))  # the model's dtype (float64 under 64-true)
        out_size = transformer.out_size or tuple(images.shape[2:])
        distortion = _AFFINE.matrix(truth["theta"].to(device).float()).double()  # (B, 2, 3) canvas → digit
        distortion = torch.cat([distortion, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64, device=device)
                                .expand(len(images), 1, 3)], dim=1)  # fmt: skip
        residual = distortion @ fitted_affine(transformer, theta, out_size)
        before.append((*rotation_and_scale(distortion), digit_centre(distortion)))
        after.append((*rotation_and_scale(residual), digit_centre(residual)))
    model.train(was_training)
    angle_in, scale_in, centre_in = (torch.cat(parts) for parts in zip(*before, strict=True))
    angle_out, scale_out, centre_out = (torch.cat(parts) for parts in zip(*after, strict=True))
    histograms = {
        "angle_deg": {"edges": ANGLE_EDGES, "before": histogram(angle_in, ANGLE_EDGES),
                      "after": histogram(angle_out, ANGLE_EDGES)},
        "log_scale": {"edges": LOG_SCALE_EDGES, "before": histogram(scale_in, LOG_SCALE_EDGES),
                      "after": histogram(scale_out, LOG_SCALE_EDGES)},
    }  # fmt: skip
    metrics = {
        "pose/angle_sd_in": circular_sd_deg(angle_in),
        "pose/angle_sd_out": circular_sd_deg(angle_out),
        "pose/log_scale_sd_in": float(scale_in.std()),
        "pose/log_scale_sd_out": float(scale_out.std()),
        "pose/shift_sd_in": spread(centre_in),
        "pose/shift_sd_out": spread(centre_out),
    }
    return metrics, histograms
