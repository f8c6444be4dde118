"""Batch iterables over tensors (no worker processes), optionally on the training device.

:class:`EpochBatches` numbers the epochs and saves the position of the next batch; :class:`TensorBatches` slices
``(images, labels)`` (or ``(images, labels, truth)``) batches from equal-length arrays, uint8 images scaled to
``[0, 1]``; :class:`CroppedBatches` cuts their images to ``crop × crop`` windows (:func:`crop_batch`).

Several processes (DDP): the profile's batch size is the *global* batch. Every process walks the same seeded order
and takes its own equal, contiguous share of each global batch (:func:`batch_share`), so that N processes, whose
per-process mean losses DDP averages, take the same steps as one process with the whole batch. The last
incomplete batch of an epoch is cut to a multiple of the number of processes (at most N − 1 samples of that epoch
are left out; the order changes every epoch). Validation and test batches are not split: every process evaluates
the whole set, and the error metrics' synchronised sums and counts give exactly the one-process value.

Resuming: the batch iterables (:class:`EpochBatches`) save their position (epoch and batch) in Lightning's
checkpoints, so that a run resumed mid-epoch sees exactly the batches an uninterrupted run sees.

Several optimiser steps per Lightning training step (``fast.steps_per_call``): :class:`BatchGroups` hands the same
batches out ``K`` at a time, across epochs, each group building its batches only as the system takes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

TRUTH_KEYS_EXCLUDED = ("images", "labels")
#: :class:`TensorBatches` keeps its uint8 images also as float32 in [0, 1] (a batch is then one gather, as in a bare
#: loop, not a gather and a conversion) when that copy takes at most this many bytes: every MNIST dataset's 60,000
#: training images (RTS: 0.4 GB); not SVHN's, whose batches are converted as they are cut.
FLOAT_COPY_BYTES = 2**30
_CROP_STREAM = 7  # distinguishes the random-crop generator from other per-epoch streams


def batch_share(size: int, rank: int, world_size: int) -> slice:
    """Process ``rank``'s part of a global batch of ``size`` samples split over ``world_size`` processes: equal
    contiguous parts of ``size // world_size`` samples (the last ``size % world_size`` samples go to none)."""
    part = size // world_size
    return slice(rank * part, (rank + 1) * part)


def batch_count(size: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    """Global batches per epoch of ``size`` samples: the last incomplete batch is cut to a multiple of
    ``world_size`` (every process gets the same number of samples) and dropped when that leaves none or with
    ``drop_last``."""
    full, rest = divmod(size, batch_size)
    rest -= rest % world_size
    return full if drop_last or rest == 0 else full + 1


def trainer_share(trainer: pl.Trainer | None) -> tuple[int, int]:
    """``(global_rank, world_size)`` of this process under ``trainer``; ``(0, 1)`` without one."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class EpochBatches:
    """Base of the batch iterables: every ``iter()`` yields the next epoch (numbered from 0), and the position of the
    next batch is saved and restored by ``state_dict`` / ``load_state_dict``.

    Lightning (2.6) stores the training batches' state with the fit loop in every checkpoint
    (``FitLoop.on_save_checkpoint``) and, on resume, loads it before its first ``iter()`` (``FitLoop.setup_data``);
    it skips no batch itself, it only continues its batch counter: so the next iteration starts at the saved batch.

    Subclasses define ``__len__`` and :meth:`_epoch`.
    """

    def __init__(self) -> None:
        self.epoch = 0  # the epoch of the next iteration
        self._first = 0  # the batch it starts at (> 0 after loading a mid-epoch state)
        self._next: int | None = None  # the next batch of the current iteration

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[Tensor, ...]]:
        """Batches ``first, ..., len(self) - 1`` of epoch ``epoch``, the same as an iteration from batch 0 yields."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch, first = self.epoch, self._first
        self.epoch, self._first, self._next = epoch + 1, 0, first
        for i, batch in enumerate(self._epoch(epoch, first), first):
            self._next = i + 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batch": b}``: the next batch is batch ``b`` of epoch ``e``."""
        if self._next is not None and self._next < len(self):
            return {"epoch": self.epoch - 1, "batch": self._next}
        return {"epoch": self.epoch, "batch": self._first}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._first, self._next = state["epoch"], state["batch"], None


class BatchGroup:
    """The next ``size`` batches of a running stream, for one Lightning training step of ``size`` optimiser steps:
    :attr:`first` is built with the group (e.g. for a preview), :meth:`batches` builds the others as they are taken.
    Deliberately not iterable: Lightning's helpers (batch transfer, batch-size inference) walk iterables, and must
    leave the stream alone."""

    def __init__(self, stream: Iterator[tuple[Tensor, ...]], size: int) -> None:
        self.first = next(stream)
        self._stream = stream
        self.size = size

    def batches(self) -> Iterator[tuple[Tensor, ...]]:
        """The group's batches, in order (once)."""
        return itertools.chain([self.first], itertools.islice(self._stream, self.size - 1))


class BatchGroups(EpochBatches):
    """The batches of ``batches``, epoch after epoch as a loop over it sees them, handed out ``size`` at a time:
    one Lightning epoch of ``total // size`` :class:`BatchGroup` items (``total``: the run's optimiser steps, a
    multiple of ``size``).

    Lightning sees a finite iterable (so it prefetches nothing and a group's batches are taken before the next group
    is made) whose saved position counts groups; the position in ``batches`` follows from it, so a run resumed at a
    group boundary (every checkpoint is one) sees exactly the batches of an uninterrupted run.
    """

    def __init__(self, batches: EpochBatches, size: int, total: int) -> None:
        if size < 1 or total % size:
            raise ValueError(f"{total} steps do not split into groups of {size}")
        super().__init__()
        self.inner = batches
        self.size = size
        self.total = total

    def __len__(self) -> int:
        return self.total // self.size

    def _epoch(self, epoch: int, first: int) -> Iterator[BatchGroup]:
        if epoch:
            raise RuntimeError("BatchGroups holds the whole run in one epoch; it was iterated past the run's steps")
        start, per_epoch = first * self.size, len(self.inner)
        self.inner.load_state_dict({"epoch": start // per_epoch, "batch": start % per_epoch})
        stream = itertools.chain.from_iterable(map(iter, itertools.repeat(self.inner)))  # iter() only when reached
        for _ in range(first, len(self)):
            yield BatchGroup(stream, self.size)


class TensorBatches(EpochBatches):
    """Batches sliced from tensors, optionally on the training device (no worker processes).

    Args:
        arrays: equal-length arrays; ``arrays["images"]`` uint8 ``(N, H, W)`` or ``(N, C, H, W)``.
        batch_size: samples per global batch (all processes together).
        shuffle: reshuffle every epoch with a generator seeded from ``seed`` and the epoch.
        drop_last: drop the last incomplete batch.
        return_truth: also yield a dict of the other arrays.
        device: where batches are built; ``None`` keeps them on the CPU (Lightning then moves them).
        regenerate: called with the epoch number at the start of each epoch to replace ``arrays``.
        rank, world_size: this process takes share ``rank`` of ``world_size`` of every batch (see the module
            docstring; ``batch_size`` must be a multiple of ``world_size``).
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray | Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        return_truth: bool = False,
        device: torch.device | str | None = None,
        regenerate: Callable[[int], dict[str, Tensor]] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} cannot be shared by {world_size} processes (rank {rank}): it must be a "
                "multiple of the number of processes"
            )
        super().__init__()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.return_truth = return_truth
        self.device = torch.device(device) if device is not None else None
        self.regenerate = regenerate
        self.rank = rank
        self.world_size = world_size
        self._set_arrays(arrays)

    def _set_arrays(self, arrays: dict[str, np.ndarray | Tensor]) -> None:
        tensors = {k: torch.as_tensor(v) for k, v in arrays.items()}
        if self.device is not None:
            tensors = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
        self.tensors = tensors
        self.size = len(tensors["labels"])
        images = tensors["images"]
        small = images.numel() * 4 <= FLOAT_COPY_BYTES
        self.float_images = images.float().div_(255.0) if small else None  # the same values as per batch

    def __len__(self) -> int:
        return batch_count(self.size, self.batch_size, self.world_size, self.drop_last)

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[Tensor, ...]]:
        if self.regenerate is not None:
            self._set_arrays(self.regenerate(epoch))
        device = self.tensors["labels"].device
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.size, generator=generator).to(device)
        else:
            order = torch.arange(self.size, device=device)
        for i in range(first, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self._batch(index, batch_share(len(index), self.rank, self.world_size))

    def _batch(self, index: Tensor, share: slice) -> tuple[Tensor, ...]:
        """This process's part ``share`` of the global batch of samples ``index``."""
        if self.world_size > 1:
            index = index[share]
        if self.float_images is not None:
            images = self.float_images[index]
        else:
            images = self.tensors["images"][index].float().div_(255.0)  # float32 whatever the default dtype
        if images.dim() == 3:
            images = images[:, None]
        labels = self.tensors["labels"][index]
        if self.return_truth:
            truth = {k: v[index] for k, v in self.tensors.items() if k not in TRUTH_KEYS_EXCLUDED}
            return images, labels, truth
        return images, labels


def crop_batch(images: Tensor, crop: int, generator: torch.Generator | None = None) -> Tensor:
    """``(B, C, crop, crop)`` windows of ``images`` ``(B, C, H, W)``.

    With ``generator``: one window per sample at a uniformly random offset in ``0..H-crop`` × ``0..W-crop`` (drawn on
    the CPU, so the same for every device); without: the centre window (offset ``(H - crop) // 2``).
    """
    batch, _, height, width = images.shape
    if generator is None:
        top, left = (height - crop) // 2, (width - crop) // 2
        return images[:, :, top : top + crop, left : left + crop]
    tops, lefts = (offsets.to(images.device) for offsets in crop_offsets(batch, height, width, crop, generator))
    steps = torch.arange(crop, device=images.device)
    rows, cols = (tops[:, None] + steps)[:, :, None], (lefts[:, None] + steps)[:, None, :]
    samples = torch.arange(batch, device=images.device)[:, None, None]
    return images[samples, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # indexing puts C last


def crop_offsets(batch: int, height: int, width: int, crop: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random window offsets ``(tops, lefts)``, each int64 ``(batch,)`` on the CPU, uniform in ``0..height-crop`` and
    ``0..width-crop``, drawn from ``generator`` (tops first)."""
    tops = torch.randint(0, height - crop + 1, (batch,), generator=generator)
    lefts = torch.randint(0, width - crop + 1, (batch,), generator=generator)
    return tops, lefts


class CroppedBatches(TensorBatches):
    """:class:`TensorBatches` whose images are cut to ``crop × crop`` by :func:`crop_batch`.

    Args:
        crop: side of the windows.
        random_crop: random windows, drawn from a generator seeded by ``seed`` and the epoch (deterministic); else
            the centre window. With several processes, the windows of the whole global batch are drawn and each
            process keeps its share, so that every sample is cut as one process would cut it.
        (others): as :class:`TensorBatches`.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray | Tensor],
        batch_size: int,
        crop: int,
        random_crop: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            arrays, batch_size, shuffle=shuffle, seed=seed, device=device, rank=rank, world_size=world_size
        )
        self.crop = crop
        self.random_crop = random_crop
        self._generator: torch.Generator | None = None

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[Tensor, ...]]:
        self._generator = None
        if self.random_crop:
            state = np.random.SeedSequence([self.seed, epoch, _CROP_STREAM]).generate_state(1)[0]
            self._generator = torch.Generator().manual_seed(int(state))
            height, width = self.tensors["images"].shape[-2:]
            for _ in range(first):  # the windows of the (full) batches that a resumed epoch skips
                crop_offsets(self.batch_size, height, width, self.crop, self._generator)
        yield from super()._epoch(epoch, first)

    def _batch(self, index: Tensor, share: slice) -> tuple[Tensor, ...]:
        if self._generator is None:
            images, labels = super()._batch(index, share)
            return crop_batch(images, self.crop), labels
        images, labels = super()._batch(index, slice(None))
        return crop_batch(images, self.crop, self._generator)[share], labels[share]
