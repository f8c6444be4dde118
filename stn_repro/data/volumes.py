"""Extruded MNIST in ``60×60×60`` volumes (appendix A.3), rendered batch by batch on the training device.

A sample is a 28×28 digit extruded along depth into a *slab* of ``thickness`` voxels (a ``(thickness, 28, 28)``
volume whose every depth slice is the digit), posed inside a ``size³`` volume. Coordinates are ``(x, y, z)`` along
``(W, H, D)``; voxel centres are integers. The pose is the forward map ``F`` from slab voxels to volume voxels::

    v = R (s - c_slab) + c_volume + t,   R = Rz(roll) · Ry(tilt_y) · Rx(tilt_x)

with ``c_slab = (13.5, 13.5, (thickness - 1) / 2)`` and ``c_volume = (size - 1) / 2`` the centres, ``tilt_x, tilt_y
~ U(-max_tilt, max_tilt)`` (out of the digit's plane), ``roll ~ U(-max_roll, max_roll)`` (in its plane), in
degrees, and ``t ~ U(-m_k, m_k)`` per axis with ``m_k = size / 2 - Σ_j |R_kj| h_j`` (``h = (14, 14, thickness / 2)``
the slab's half extents), so the slab's whole box stays inside the volume. The volume is rendered with the
project's ``affine3d`` family: ``theta = N_slab⁻¹ F⁻¹ N_volume`` (``N``: normalised → voxel coordinates, see
:mod:`stn_repro.transformers.sampling`) maps volume coordinates to slab coordinates, and the volume is
``sample(slab, grid(theta))`` (trilinear, zeros outside the slab). Values are in ``[0, 1]`` (ink 255 → 1).

Guesses (the paper gives none of them): ``thickness`` 10, ``max_tilt`` 60°, ``max_roll`` 45°, the digit at its
original scale (28 voxels), the uniform translation.

Volumes are never cached (216,000 voxels each): every batch is rendered from the digits. The poses of a split are
drawn for one epoch at once, in sample-index order, from a generator seeded by ``(seed, split, epoch)``, so a
sample's pose depends only on those: the test set uses ``test_seed`` and epoch 0 in every run (every run sees
the same test volumes), the validation set epoch 0, the training set a new epoch's poses every epoch with
``resample_every_epoch`` (else epoch 0's, a fixed set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stn_repro.data.base import DigitSetDataModule
from stn_repro.data.batches import EpochBatches, batch_count, batch_share
from stn_repro.data.distortions import split_seed
from stn_repro.data.sources import IMAGE_SIZE
from stn_repro.transformers import Affine3dFamily, normalized_to_pixel_matrix, sample

NAME = "mnist3d"
TRUTH_KEYS = ("theta", "angles", "translation")


def rotation_matrices(angles_deg: Tensor) -> Tensor:
    """``Rz(roll) · Ry(tilt_y) · Rx(tilt_x)`` ``(N, 3, 3)``, float64, of angles ``(N, 3)`` = ``(tilt_x, tilt_y, roll)``
    in degrees."""
    a = torch.deg2rad(angles_deg.double())
    cos, sin = a.cos(), a.sin()
    one, zero = torch.ones_like(a[:, 0]), torch.zeros_like(a[:, 0])

    def stack(rows: tuple[tuple[Tensor, ...], ...]) -> Tensor:
        return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)

    rx = stack(((one, zero, zero), (zero, cos[:, 0], -sin[:, 0]), (zero, sin[:, 0], cos[:, 0])))
    ry = stack(((cos[:, 1], zero, sin[:, 1]), (zero, one, zero), (-sin[:, 1], zero, cos[:, 1])))
    rz = stack(((cos[:, 2], -sin[:, 2], zero), (sin[:, 2], cos[:, 2], zero), (zero, zero, one)))
    return rz @ ry @ rx


@dataclass(frozen=True)
class ExtrudedVolumes:
    """The volume protocol: digit slabs of ``thickness`` voxels under random poses in ``size³`` volumes.

    Args:
        size: side of the cubic volume in voxels (paper: 60).
        thickness: depth of the extruded slab in voxels (guess: 10).
        max_tilt: out-of-plane rotations about x and y are drawn from ``U(-max_tilt, max_tilt)`` degrees.
        max_roll: the in-plane rotation about z from ``U(-max_roll, max_roll)`` degrees.
    """

    size: int = 60
    thickness: int = 10
    max_tilt: float = 60.0
    max_roll: float = 45.0

    def __post_init__(self) -> None:
        h, w = IMAGE_SIZE
        if self.thickness < 1 or math.sqrt(h * h + w * w + self.thickness**2) > self.size:
            raise ValueError(
                f"a {self.thickness}-voxel slab of 28x28 digits does not fit every pose in a {self.size}^3 volume"
            )
        if not (0 <= self.max_tilt <= 180 and 0 <= self.max_roll <= 180):
            raise ValueError(f"rotation ranges must be in [0, 180] degrees, got {self.max_tilt}, {self.max_roll}")

    @property
    def slab_shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of the extruded digit."""
        return (self.thickness, *IMAGE_SIZE)

    @property
    def volume_shape(self) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of one volume."""
        return (1, self.size, self.size, self.size)

    def protocol(self) -> dict[str, Any]:
        return {"name": NAME, **asdict(self)}

    def half_extents(self) -> Tensor:
        """Half sizes ``(x, y, z)`` of the slab's box in voxels, float64 ``(3,)``."""
        d, h, w = self.slab_shape
        return torch.tensor([w / 2, h / 2, d / 2], dtype=torch.float64)

    def draw_poses(self, generator: torch.Generator, n: int) -> dict[str, Tensor]:
        """Random poses of ``n`` samples: ``angles`` ``(n, 3)`` (tilt_x, tilt_y, roll; degrees) and ``translation``
        ``(n, 3)`` (voxels, about the volume centre), float64, drawn on the CPU in this order."""
        limits = torch.tensor([self.max_tilt, self.max_tilt, self.max_roll], dtype=torch.float64)
        angles = (2 * torch.rand(n, 3, generator=generator, dtype=torch.float64) - 1) * limits
        extents = rotation_matrices(angles).abs() @ self.half_extents()
        margins = (self.size / 2 - extents).clamp(min=0)
        translation = (2 * torch.rand(n, 3, generator=generator, dtype=torch.float64) - 1) * margins
        return {"angles": angles, "translation": translation}

    def forward_matrices(self, angles: Tensor, translation: Tensor) -> Tensor:
        """Homogeneous forward maps ``(n, 4, 4)`` (slab voxel → volume voxel) of poses, float64."""
        d, h, w = self.slab_shape
        slab_centre = torch.tensor([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2], dtype=torch.float64)
        rotation = rotation_matrices(angles)
        forward = torch.eye(4, dtype=torch.float64).repeat(len(angles), 1, 1)
        forward[:, :3, :3] = rotation
        forward[:, :3, 3] = (self.size - 1) / 2 + translation.double() - rotation @ slab_centre
        return forward

    def theta(self, forward: Tensor) -> Tensor:
        """``affine3d`` sampling parameters ``(n, 12)`` (volume normalised → slab normalised), float64."""
        to_volume_voxels = normalized_to_pixel_matrix((self.size,) * 3)
        to_slab_normalised = torch.linalg.inv(normalized_to_pixel_matrix(self.slab_shape))
        return Affine3dFamily().from_matrix(to_slab_normalised @ torch.linalg.inv(forward) @ to_volume_voxels)

    def slabs(self, digits: Tensor) -> Tensor:
        """Extruded digits ``(n, 1, thickness, 28, 28)`` float32 in ``[0, 1]`` from ``uint8 (n, 28, 28)``."""
        return (digits.float() / 255.0)[:, None, None].expand(-1, 1, self.thickness, -1, -1)

    def render(self, digits: Tensor, theta: Tensor) -> Tensor:
        """Volumes ``(n, 1, size, size, size)`` float32 in ``[0, 1]``, on ``digits``' device."""
        grid = Affine3dFamily().grid(theta.to(device=digits.device, dtype=torch.float32), (self.size,) * 3)
        return sample(self.slabs(digits), grid).clamp_(0.0, 1.0)

    def generate(self, digits: Tensor, poses: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(volumes (n, 1, S, S, S), truth)`` of digits ``uint8 (n, 28, 28)`` (on the rendering device) under
        ``poses`` (from :meth:`draw_poses`); ``truth`` holds ``theta`` ``(n, 12)``, ``angles`` and ``translation``
        ``(n, 3)``, float32 on the digits' device."""
        theta = self.theta(self.forward_matrices(poses["angles"], poses["translation"]))
        truth = {"theta": theta, "angles": poses["angles"], "translation": poses["translation"]}
        truth = {key: value.to(device=digits.device, dtype=torch.float32) for key, value in truth.items()}
        return self.render(digits, theta), truth


class VolumeBatches(EpochBatches):
    """Batches ``(volumes, labels)`` (or ``(volumes, labels, truth)``) rendered from digits, one epoch per iteration.

    Args:
        protocol: how volumes are made.
        digits: ``uint8 (N, 28, 28)``; labels: ``int64 (N,)`` (moved to ``device``).
        batch_size: samples per batch (the last batch may be smaller).
        pose_seed: the split's seed; epoch ``e``'s poses come from ``split_seed(pose_seed, f"epoch-{e}", ...)``.
        shuffle: visit the samples in a new seeded order every epoch.
        resample: draw new poses every epoch (otherwise epoch 0's poses every time).
        return_truth: also yield the truth dict of :meth:`ExtrudedVolumes.generate`.
        device: where digits live and volumes are rendered (``None``: the CPU).
        rank, world_size: this process renders share ``rank`` of ``world_size`` of every batch (see
            :func:`~stn_repro.data.batches.batch_share`; ``batch_size`` is the global batch).
    """

    def __init__(
        self,
        protocol: ExtrudedVolumes,
        digits: Tensor,
        labels: Tensor,
        batch_size: int,
        pose_seed: int,
        shuffle: bool = False,
        resample: bool = False,
        return_truth: bool = False,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size must be >= 1 and a multiple of the {world_size} processes, got {batch_size}")
        super().__init__()
        device = torch.device(device or "cpu")
        self.protocol = protocol
        self.digits = digits.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.pose_seed = pose_seed
        self.shuffle = shuffle
        self.resample = resample
        self.return_truth = return_truth
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return batch_count(len(self.labels), self.batch_size, self.world_size)

    def poses(self, epoch: int) -> dict[str, Tensor]:
        """The poses of every sample ``(N, 3)`` in epoch ``epoch``."""
        seed = split_seed(self.pose_seed, f"epoch-{epoch if self.resample else 0}", NAME)
        return self.protocol.draw_poses(torch.Generator().manual_seed(seed), len(self.labels))

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[Tensor, ...]]:
        poses = self.poses(epoch)
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(split_seed(self.pose_seed, f"order-{epoch}", NAME))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for i in range(first, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            index = index[batch_share(len(index), self.rank, self.world_size)]
            device_index = index.to(self.digits.device)
            volumes, truth = self.protocol.generate(self.digits[device_index], {k: v[index] for k, v in poses.items()})
            labels = self.labels[device_index]
            yield (volumes, labels, truth) if self.return_truth else (volumes, labels)


class VolumeMNISTDataModule(DigitSetDataModule):
    """Extruded MNIST volumes: train / val / test digits, volumes rendered per batch (see the module docstring).

    Args:
        size, thickness, max_tilt, max_roll: the volume protocol (:class:`ExtrudedVolumes`; defaults: its guesses).
        num_classes: label count (10 digits).
        root, source, digits, download_timeout, log: where the digits come from (see
            :func:`~stn_repro.data.sources.resolve_digits`; the source is announced through ``log``).
        seed: data seed of the training poses, the training order and the validation split.
        test_seed: seed of the test poses; keep it fixed so every run is tested on the same volumes.
        val_size: training digits held out for validation (a count, or a fraction < 1).
        batch_size: training batch size (evaluation uses the same).
        resample_every_epoch: new training poses every epoch (default) or one fixed set.
        device_resident: keep the digits on the trainer's device and render there.
        return_truth: yield ``(volumes, labels, truth)``.
        limit: use only the first ``limit`` train and test digits (smoke runs and tests; ``None``: all).
        name: the dataset's name (``data.name``).
    """

    task = "mnist3d"

    def __init__(
        self,
        size: int = 60,
        thickness: int = 10,
        max_tilt: float = 60.0,
        max_roll: float = 45.0,
        num_classes: int = 10,
        root: str | Path = "data",
        source: str = "auto",
        digits: str = "mnist",
        seed: int = 0,
        test_seed: int = 0,
        val_size: int | float = 0.1,
        batch_size: int = 32,
        resample_every_epoch: bool = True,
        device_resident: bool = True,
        return_truth: bool = False,
        download_timeout: float = 5.0,
        log: Callable[[str], None] = print,
        limit: int | None = None,
        name: str | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be >= 1 or None, got {limit}")
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2, got {num_classes}")
        super().__init__(
            root=root,
            source=source,
            digits=digits,
            seed=seed,
            test_seed=test_seed,
            val_size=val_size,
            batch_size=batch_size,
            resample_every_epoch=resample_every_epoch,
            device_resident=device_resident,
            return_truth=return_truth,
            download_timeout=download_timeout,
            log=log,
            name=name,
        )
        self.protocol = ExtrudedVolumes(size=size, thickness=thickness, max_tilt=max_tilt, max_roll=max_roll)
        self.num_classes = num_classes
        self.limit = limit
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def prepare_data(self) -> None:
        """Resolve the digits (nothing is generated ahead of training)."""
        self._digits()

    def _setup(self) -> None:
        digit_set = self._digits()
        images, labels = digit_set.train_images[: self.limit], digit_set.train_labels[: self.limit]
        train_index, val_index = self._holdout(len(labels), NAME)
        self.splits = {
            "train": (images[train_index], labels[train_index]),
            "val": (images[val_index], labels[val_index]),
            "test": (digit_set.test_images[: self.limit], digit_set.test_labels[: self.limit]),
        }
        self.metadata = {
            "protocol": self.protocol.protocol(),
            "source": digit_set.metadata(),
            "sizes": {split: len(labels) for split, (_, labels) in self.splits.items()},
            "resample_every_epoch": self.resample_every_epoch,
        }

    def _build_loader(self, split: str, train: bool) -> VolumeBatches:
        images, labels = self.splits[split]
        rank, world_size = self._share(train)
        return VolumeBatches(
            self.protocol,
            torch.from_numpy(images),
            torch.from_numpy(labels),
            self.batch_size,
            pose_seed=split_seed(self.test_seed if split == "test" else self.seed, split, NAME),
            shuffle=train,
            resample=train and self.resample_every_epoch,
            return_truth=self.return_truth,
            device=self._device(),
            rank=rank,
            world_size=world_size,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, D, H, W)`` of one input volume."""
        return self.protocol.volume_shape

    def model_inputs(self) -> dict[str, Any]:
        """The input shape, the class count and ``slab_thickness``, the digit's depth in voxels (the depth
        projection's default scale is ``D / slab_thickness``)."""
        return {**super().model_inputs(), "slab_thickness": self.protocol.thickness}
