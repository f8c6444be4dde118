"""The paper's distorted-MNIST datasets, generated in batches with the project's own transform families.

Every protocol turns 28×28 digits ``uint8 (N, 28, 28)`` into canvases and keeps the ground truth of each sample:

* ``theta``: the sampling transform that made the canvas (canvas coordinates → digit coordinates, normalised as in
  :mod:`stn_repro.transformers.sampling`), in the family's flat parameters. Sampling the canvas with the family's
  ``inverse`` recovers the digit (R, RTS, P, TC).
* ``boxes``: the digit's box in the canvas, ``(x0, y0, x1, y1)`` in pixels with pixel ``i`` spanning ``[i, i+1)``,
  the tight box of the rendered digit's ink (pixels > 0) before any clutter is added; all zeros if no ink is left.
* protocol-specific truth: ``angles`` (degrees), ``scales``, ``corner_offsets`` (P, px), ``control_offsets`` (E, px),
  ``clutter_boxes`` (TC, px) and, for the multi-digit sets, ``digit_labels``.

Defaults are the paper's values (``../shared/paper/PAPER.md``; marks there say which are confirmed). Randomness
comes only from the ``torch.Generator`` passed in, drawn on the CPU, so the same seed gives the same parameters
on any device (and the same bytes on the same device).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from stn_repro.transformers import TransformFamily, get_family, normalized_to_pixel_matrix, sample
from stn_repro.transformers.grids import control_grid

DIGIT_SIZE = 28
GENERATION_CHUNK = 8192
"""Digits generated per batch by :func:`generate`. Partners (ADD) and clutter crops (TC, SEQ) come from the same
chunk, and the random stream is drawn chunk by chunk, so the chunk size is part of a dataset's protocol."""


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _integers(generator: torch.Generator, shape: tuple[int, ...], high: Tensor | int) -> Tensor:
    """Uniform integers in ``[0, high]`` (inclusive), ``high`` broadcast against ``shape``."""
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * (torch.as_tensor(high) + 1)).floor().long()


def _affine_theta(forward: Tensor, canvas: int) -> Tensor:
    """Affine sampling parameters ``(N, 6)`` (canvas normalised → digit normalised) of forward pixel maps
    ``(N, 3, 3)`` taking digit pixels to canvas pixels."""
    to_canvas_pixels = normalized_to_pixel_matrix((canvas, canvas))
    to_digit_normalised = torch.linalg.inv(normalized_to_pixel_matrix((DIGIT_SIZE, DIGIT_SIZE)))
    grid_matrix = to_digit_normalised @ torch.linalg.inv(forward) @ to_canvas_pixels
    return grid_matrix[:, :2].reshape(-1, 6)


def _similarity(angle_deg: Tensor, scale: Tensor, centre: Tensor) -> Tensor:
    """Forward pixel maps ``(N, 3, 3)``: rotate by ``angle`` and scale about the digit centre, move it to ``centre``."""
    a = torch.deg2rad(angle_deg)
    c = (DIGIT_SIZE - 1) / 2
    forward = torch.zeros(len(a), 3, 3, dtype=torch.float64)
    forward[:, 0, 0], forward[:, 0, 1] = scale * torch.cos(a), -scale * torch.sin(a)
    forward[:, 1, 0], forward[:, 1, 1] = scale * torch.sin(a), scale * torch.cos(a)
    forward[:, :2, 2] = centre - forward[:, :2, :2] @ torch.tensor([c, c], dtype=torch.float64)
    forward[:, 2, 2] = 1
    return forward


def ink_boxes(images: Tensor) -> Tensor:
    """Tight boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` of the pixels > 0 of ``images`` ``(N, H, W)``; zeros if empty."""
    mask = images > 0
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    h, w = images.shape[1:]
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def _render(digits: Tensor, family: TransformFamily, theta: Tensor, canvas: int, device: torch.device) -> Tensor:
    """Sample ``digits`` ``uint8 (N, 28, 28)`` through ``theta`` onto ``canvas``² canvases, ``uint8 (N, c, c)``."""
    images = digits.to(device=torch.device(device), dtype=torch.float32)[:, None]
    grid = family.grid(theta.to(device=images.device, dtype=torch.float32), (canvas, canvas))
    return sample(images, grid).round_().clamp_(0, 255).to(torch.uint8)[:, 0]


def _single_digit_result(images: Tensor, labels: Tensor, theta: Tensor, **truth: Tensor) -> dict[str, Tensor]:
    """The arrays of a one-digit protocol: images, labels, theta, ink boxes and the protocol's own draws."""
    return {
        "images": images.cpu(),
        "labels": labels,
        "theta": theta.float(),
        "boxes": ink_boxes(images).cpu(),
        **{key: value.float() for key, value in truth.items()},
    }


def _source_ink_corners(digits: Tensor) -> Tensor:
    """Corners ``(N, 4, 2)`` of each digit's ink box in pixel-centre coordinates (pixel edges at ±0.5)."""
    x0, y0, x1, y1 = ink_boxes(digits).double().unbind(1)
    x0, y0, x1, y1 = x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5
    return torch.stack([torch.stack(p, 1) for p in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], dim=1)


def paste_clutter(
    canvases: Tensor, digits: Tensor, count: int, size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Paste ``count`` random ``size``² crops of *other* digits at random places (pixel-wise max).

    Args:
        canvases: ``uint8 (N, H, W)``, modified in place.
        digits: the split's digits ``uint8 (M, 28, 28)``, the crops' source.

    Returns:
        the canvases and the patches' boxes ``(N, count, 4)`` in pixels.
    """
    n, h, w = canvases.shape
    if count == 0 or n == 0:
        return canvases, torch.zeros(n, count, 4)
    m = len(digits)
    own = torch.arange(n) % m
    other = (own[:, None] + 1 + _integers(generator, (n, count), max(m - 2, 0))) % m  # never the digit itself
    crop_y, crop_x = (_integers(generator, (n, count), DIGIT_SIZE - size) for _ in range(2))
    put_y = _integers(generator, (n, count), h - size)
    put_x = _integers(generator, (n, count), w - size)
    offsets = torch.arange(size)
    rows = (crop_y[..., None, None] + offsets[:, None]).expand(n, count, size, size)
    cols = (crop_x[..., None, None] + offsets[None, :]).expand(n, count, size, size)
    patches = digits[other[..., None, None].expand(n, count, size, size), rows, cols]
    target = (put_y[..., None, None] + offsets[:, None]) * w + (put_x[..., None, None] + offsets[None, :])
    flat = canvases.reshape(n, -1)
    patches = patches.to(canvases.device).reshape(n, -1)
    flat.scatter_reduce_(1, target.to(canvases.device).reshape(n, -1), patches, reduce="amax")
    boxes = torch.stack([put_x, put_y, put_x + size, put_y + size], dim=-1).float()
    return flat.reshape(n, h, w), boxes


# ---------------------------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distortion:
    """A generation protocol; subclasses are frozen dataclasses whose fields are the protocol's parameters."""

    name: ClassVar[str]
    family: ClassVar[str]

    @property
    def canvas_shape(self) -> tuple[int, ...]:
        """Shape of one generated image (without the batch); subclasses define ``canvas``."""
        return (self.canvas, self.canvas)

    def protocol(self) -> dict[str, Any]:
        """The protocol as plain data (for cache keys and run records)."""
        return {"distortion": self.name, **asdict(self)}

    def generate(
        self, digits: Tensor, labels: Tensor, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        """Distort ``digits`` ``uint8 (N, 28, 28)`` with labels ``(N,)``; returns CPU tensors, see module doc."""
        raise NotImplementedError


@dataclass(frozen=True)
class Rotated(Distortion):
    """R: rotation by U(-angle, +angle) degrees on a 28×28 canvas."""

    name: ClassVar[str] = "R"
    family: ClassVar[str] = "affine"
    angle: float = 90.0
    canvas: int = 28

    def generate(self, digits, labels, generator, device="cpu"):
        n = len(digits)
        angles = _uniform(generator, n, -self.angle, self.angle)
        centre = torch.full((n, 2), (self.canvas - 1) / 2, dtype=torch.float64)
        theta = _affine_theta(_similarity(angles, torch.ones(n, dtype=torch.float64), centre), self.canvas)
        images = _render(digits, get_family(self.family), theta, self.canvas, device)
        return _single_digit_result(images, labels, theta, angles=angles)


@dataclass(frozen=True)
class RotatedTranslatedScaled(Distortion):
    """RTS: rotation U(±angle)°, scale U(scale_min, scale_max), placed uniformly at random in the canvas so that the
    whole digit (its ink box) stays inside."""

    name: ClassVar[str] = "RTS"
    family: ClassVar[str] = "affine"
    angle: float = 45.0
    scale_min: float = 0.7
    scale_max: float = 1.2
    canvas: int = 42

    def generate(self, digits, labels, generator, device="cpu"):
        n = len(digits)
        angles = _uniform(generator, n, -self.angle, self.angle)
        scales = _uniform(generator, n, self.scale_min, self.scale_max)
        # Where the ink box's corners land relative to the digit centre, then a centre keeping them inside.
        spin = _similarity(angles, scales, torch.zeros(n, 2, dtype=torch.float64))
        corners = _source_ink_corners(digits) @ spin[:, :2, :2].transpose(1, 2) + spin[:, None, :2, 2]
        low = -0.5 - corners.amin(1)
        high = self.canvas - 0.5 - corners.amax(1)
        centre = torch.where(
            high >= low,
            low + (high - low) * torch.rand(n, 2, generator=generator, dtype=torch.float64),
            torch.full_like(low, (self.canvas - 1) / 2),
        )
        theta = _affine_theta(_similarity(angles, scales, centre), self.canvas)
        images = _render(digits, get_family(self.family), theta, self.canvas, device)
        return _single_digit_result(images, labels, theta, angles=angles, scales=scales)


def _homographies(source: Tensor, target: Tensor) -> Tensor:
    """Homographies ``(N, 3, 3)`` (bottom-right 1) taking 4 ``source`` points ``(N, 4, 2)`` to ``target``."""
    x, y = source.unbind(-1)
    u, v = target.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)
    h = torch.linalg.solve(system, torch.cat([u, v], dim=1))
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3)


@dataclass(frozen=True)
class Projective(Distortion):
    """P: scale U(scale_min, scale_max) about the centre, then each of the 4 corners of the scaled digit moved by
    N(0, corner_sigma px), warped by the homography through the moved corners."""

    name: ClassVar[str] = "P"
    family: ClassVar[str] = "projective"
    scale_min: float = 0.75
    scale_max: float = 1.0
    corner_sigma: float = 5.0
    canvas: int = 28

    def generate(self, digits, labels, generator, device="cpu"):
        n = len(digits)
        scales = _uniform(generator, n, self.scale_min, self.scale_max)
        offsets = self.corner_sigma * torch.randn(n, 4, 2, generator=generator, dtype=torch.float64)
        frame = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        # In normalised units the scaled digit's frame is ±s (canvas and digit share the unit square); px → 2/canvas.
        moved = scales[:, None, None] * frame * DIGIT_SIZE / self.canvas + offsets * 2 / self.canvas
        matrix = _homographies(moved, frame.expand(n, 4, 2))
        theta = matrix.reshape(n, 9)[:, :8]
        images = _render(digits, get_family(self.family), theta, self.canvas, device)
        return _single_digit_result(images, labels, theta, scales=scales, corner_offsets=offsets)


@dataclass(frozen=True)
class Elastic(Distortion):
    """E: scale U(scale_min, scale_max), then the control points of a grid_size×grid_size thin-plate spline moved by
    N(0, control_sigma px) (paper: 16 points; the 4×4 layout is a guess)."""

    name: ClassVar[str] = "E"
    family: ClassVar[str] = "tps"
    scale_min: float = 0.75
    scale_max: float = 1.0
    grid_size: int = 4
    control_sigma: float = 1.5
    canvas: int = 28

    def generate(self, digits, labels, generator, device="cpu"):
        n = len(digits)
        k = self.grid_size**2
        scales = _uniform(generator, n, self.scale_min, self.scale_max)
        offsets = self.control_sigma * torch.randn(n, k, 2, generator=generator, dtype=torch.float64)
        centres = control_grid(self.grid_size, dtype=torch.float64)
        # Output control point c reads the digit at c·canvas/(28·s), moved by the offset (px → 2/28).
        source = centres * self.canvas / (DIGIT_SIZE * scales[:, None, None]) + offsets * 2 / DIGIT_SIZE
        theta = source.reshape(n, 2 * k)
        family = get_family("tps", grid_size=self.grid_size)
        rendered = _render(digits, family, theta, self.canvas, device)
        return _single_digit_result(rendered, labels, theta, scales=scales, control_offsets=offsets)


def _place(digits: Tensor, corners: Tensor, canvas: int, device) -> tuple[Tensor, Tensor]:
    """Copy each 28×28 digit to the canvas with its top-left pixel at ``corners`` ``(N, 2)`` ``(x, y)``; returns
    the canvases ``uint8 (N, canvas, canvas)`` and the affine parameters ``(N, 6)``."""
    n = len(digits)
    centre = corners.double() + (DIGIT_SIZE - 1) / 2
    forward = _similarity(torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64), centre)
    theta = _affine_theta(forward, canvas)
    return _render(digits, get_family("affine"), theta, canvas, device), theta


@dataclass(frozen=True)
class TranslatedCluttered(Distortion):
    """TC: the 28×28 digit at a random integer position in the canvas, plus ``patches`` random ``patch_size``² crops
    of other digits of the same chunk (see :data:`GENERATION_CHUNK`) at random places (pixel-wise max).
    ``patches=0`` gives plain translation (T)."""

    name: ClassVar[str] = "TC"
    family: ClassVar[str] = "affine"
    canvas: int = 60
    patches: int = 6
    patch_size: int = 6

    def generate(self, digits, labels, generator, device="cpu"):
        corners = _integers(generator, (len(digits), 2), self.canvas - DIGIT_SIZE)  # frame inside the canvas
        images, theta = _place(digits, corners, self.canvas, device)
        boxes = ink_boxes(images)
        images, clutter = paste_clutter(images, digits.to(images.device), self.patches, self.patch_size, generator)
        return {
            "images": images.cpu(),
            "labels": labels,
            "theta": theta.float(),
            "boxes": boxes.cpu(),
            "clutter_boxes": clutter,
        }


@dataclass(frozen=True)
class Addition(Distortion):
    """MNIST addition (appendix A.1): two digits, each RTS-distorted independently in its own channel; the label is
    their sum (19 classes). The partner of digit ``i`` is a random other digit of the same chunk."""

    name: ClassVar[str] = "ADD"
    family: ClassVar[str] = "affine"
    angle: float = 45.0
    scale_min: float = 0.7
    scale_max: float = 1.2
    canvas: int = 42

    @property
    def canvas_shape(self) -> tuple[int, ...]:
        return (2, self.canvas, self.canvas)

    def generate(self, digits, labels, generator, device="cpu"):
        n = len(digits)
        partner = (torch.arange(n) + 1 + _integers(generator, (n,), max(n - 2, 0))) % n
        rts = RotatedTranslatedScaled(self.angle, self.scale_min, self.scale_max, self.canvas)
        first = rts.generate(digits, labels, generator, device)
        second = rts.generate(digits[partner], labels[partner], generator, device)
        return {
            "images": torch.stack([first["images"], second["images"]], dim=1),
            "labels": labels + labels[partner],
            "digit_labels": torch.stack([labels, labels[partner]], dim=1),
            "theta": torch.stack([first["theta"], second["theta"]], dim=1),
            "boxes": torch.stack([first["boxes"], second["boxes"]], dim=1),
        }


@dataclass(frozen=True)
class ClutteredSequence(Distortion):
    """3-digit cluttered sequences (Sønderby et al. 2015): ``length`` digits left to right on a ``canvas``² canvas,
    each in its own horizontal slot with a random integer offset inside the slot and a random height, plus
    ``patches`` clutter crops of ``patch_size``². The slot layout is our guess; the paper gives only the sizes."""

    name: ClassVar[str] = "SEQ"
    family: ClassVar[str] = "affine"
    length: int = 3
    canvas: int = 100
    patches: int = 8
    patch_size: int = 9

    def generate(self, digits, labels, generator, device="cpu"):
        n, m = len(digits), len(digits)
        slot = self.canvas // self.length
        if slot < DIGIT_SIZE:
            raise ValueError(f"a {self.canvas}px canvas has no room for {self.length} digits of {DIGIT_SIZE}px")
        members = torch.cat([torch.arange(n)[:, None], _integers(generator, (n, self.length - 1), m - 1)], dim=1)
        x = torch.arange(self.length) * slot + _integers(generator, (n, self.length), slot - DIGIT_SIZE)
        y = _integers(generator, (n, self.length), self.canvas - DIGIT_SIZE)
        k = n * self.length
        layers, theta = _place(
            digits[members.reshape(-1)], torch.stack([x, y], dim=-1).reshape(k, 2), self.canvas, device
        )
        layers = layers.reshape(n, self.length, self.canvas, self.canvas)
        boxes = ink_boxes(layers.reshape(k, self.canvas, self.canvas)).reshape(n, self.length, 4)
        images, clutter = paste_clutter(
            layers.amax(1), digits.to(layers.device), self.patches, self.patch_size, generator
        )
        return {
            "images": images.cpu(),
            "labels": labels[members],
            "theta": theta.float().reshape(n, self.length, 6),
            "boxes": boxes.cpu(),
            "clutter_boxes": clutter,
        }


DISTORTIONS: dict[str, type[Distortion]] = {
    cls.name: cls
    for cls in (Rotated, RotatedTranslatedScaled, Projective, Elastic, TranslatedCluttered, Addition, ClutteredSequence)
}


def get_distortion(name: str, **params: Any) -> Distortion:
    """The protocol ``name`` (one of :data:`DISTORTIONS`) with ``params`` overriding the paper's defaults."""
    if name not in DISTORTIONS:
        raise ValueError(f"unknown distortion {name!r}; expected one of {sorted(DISTORTIONS)}")
    cls = DISTORTIONS[name]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for distortion {name}; expected some of {sorted(allowed)}")
    return cls(**params)


def generate(
    distortion: Distortion,
    digits: np.ndarray,
    labels: np.ndarray,
    seed: int,
    device: torch.device | str = "cpu",
    chunk_size: int = GENERATION_CHUNK,
) -> dict[str, np.ndarray]:
    """Generate a whole split in chunks; same ``seed`` and ``chunk_size`` → same parameters, and the same bytes on
    the same device.

    Args:
        digits: ``uint8 (N, 28, 28)``; labels: ``int64 (N,)``.
        seed: seeds the split's own stream (derive different seeds for train and test).

    Returns:
        numpy arrays keyed as in the module doc, ``images`` ``uint8 (N, *canvas_shape)``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    digits_t = torch.from_numpy(np.ascontiguousarray(digits))
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    pieces: list[dict[str, Tensor]] = []
    for start in range(0, len(digits_t), chunk_size):
        stop = min(start + chunk_size, len(digits_t))
        pieces.append(distortion.generate(digits_t[start:stop], labels_t[start:stop], generator, device))
    if not pieces:
        raise ValueError("cannot generate a dataset from zero digits")
    return {key: torch.cat([p[key] for p in pieces]).numpy() for key in pieces[0]}


def split_seed(seed: int, split: str, distortion: str) -> int:
    """A seed for one split's stream, distinct per ``split`` and ``distortion`` (``seed`` is the data seed)."""
    entropy = [int(seed), *(ord(c) for c in f"{split}/{distortion}")]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


__all__ = [
    "DISTORTIONS",
    "Addition",
    "ClutteredSequence",
    "Distortion",
    "Elastic",
    "Projective",
    "Rotated",
    "RotatedTranslatedScaled",
    "TranslatedCluttered",
    "generate",
    "get_distortion",
    "ink_boxes",
    "split_seed",
]
