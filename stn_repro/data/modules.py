"""LightningDataModules for the distorted-MNIST experiments.

Data flow: :func:`~stn_repro.data.sources.resolve_digits` → :mod:`~stn_repro.data.distortions` → HDF5 cache
(:func:`~stn_repro.data.cache.load_or_build`) → batches of ``(images, labels)`` (``images`` float32
``(B, C, H, W)`` in ``[0, 1]``, labels int64) or, with ``return_truth``, ``(images, labels, truth)`` where
``truth`` holds the sample's stored ground truth (``theta``, ``boxes``, ...).

Normalisation: pixels are only scaled to ``[0, 1]`` *after* distortion, never mean-subtracted, so the canvas
background is exactly 0, the value the transformer's ``zeros`` padding writes outside the image. A background
that differs from the padding is a known cause of transformer collapse.

Splits: the test set is generated once from the test digits with a fixed seed (``test_seed``, the same for
every run); the validation set is the last ``val_size`` samples of a seeded permutation of the generated
training set; the remaining training samples are distorted once (cached) or, with ``resample_every_epoch``,
re-distorted every epoch on the training device from the same digits.

Several processes (DDP): the profile's batch size is the *global* batch. Every process walks the same seeded order
and takes its own equal, contiguous share of each global batch (:func:`batch_share`), so that N processes, whose
per-process mean losses DDP averages, take the same steps as one process with the whole batch. The last
incomplete batch of an epoch is cut to a multiple of the number of processes (at most N − 1 samples of that epoch
are left out; the order changes every epoch). Validation and test batches are not split: every process evaluates
the whole set, and the error metrics' synchronised sums and counts give exactly the one-process value.

Resuming: the batch iterables (:class:`EpochBatches`) save their position (epoch and batch) in Lightning's
checkpoints, so that a run resumed mid-epoch sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from stn_repro.data.cache import load_or_build
from stn_repro.data.distortions import GENERATION_CHUNK, Distortion, generate, get_distortion, split_seed
from stn_repro.data.sources import DigitSet, resolve_digits

TRUTH_KEYS_EXCLUDED = ("images", "labels")


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
        index = index[share]
        images = self.tensors["images"][index].float().div_(255.0)
        if images.dim() == 3:
            images = images[:, None]
        labels = self.tensors["labels"][index]
        if self.return_truth:
            truth = {k: v[index] for k, v in self.tensors.items() if k not in TRUTH_KEYS_EXCLUDED}
            return images, labels, truth
        return images, labels


class DistortedMNISTDataModule(pl.LightningDataModule):
    """One distorted-MNIST dataset (R, RTS, P, E, TC, ADD, SEQ) with cached train/val/test splits.

    Args:
        distortion: protocol name (see :data:`~stn_repro.data.distortions.DISTORTIONS`).
        distortion_params: overrides of the protocol's parameters (the paper's values by default).
        root: data folder (IDX files, downloads and ``cache/``).
        source: ``"auto"``, ``"idx"``, ``"torchvision"`` or ``"bundled"``.
        digits: ``"mnist"`` or ``"fashion_mnist"``.
        seed: data seed of the training distortions and the validation split.
        test_seed: seed of the test set; keep it fixed so every run is tested on the same images.
        val_size: validation samples carved from the training set (int) or fraction of it (float < 1).
        batch_size: training batch size, all processes together (evaluation batches have the same size).
        resample_every_epoch: re-distort the training digits every epoch (default: distort once and cache,
            as a fixed dataset; the paper does not say which it did).
        device_resident: keep the split tensors on the trainer's device and slice batches there.
        return_truth: yield the ground truth dict as a third element of each batch.
        log: receives one-line progress messages (source used, cache hits).
    """

    def __init__(
        self,
        distortion: str = "R",
        distortion_params: dict[str, Any] | None = None,
        root: str | Path = "data",
        source: str = "auto",
        digits: str = "mnist",
        seed: int = 0,
        test_seed: int = 0,
        val_size: int | float = 0.1,
        batch_size: int = 256,
        resample_every_epoch: bool = False,
        device_resident: bool = True,
        return_truth: bool = False,
        download_timeout: float = 5.0,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.distortion: Distortion = get_distortion(distortion, **(distortion_params or {}))
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not (0 <= val_size < 1 or (isinstance(val_size, int) and val_size >= 0)):
            raise ValueError(f"data.val_size must be a sample count >= 0 or a fraction in [0, 1), got {val_size}")
        self.root = Path(root)
        self.source = source
        self.digits = digits
        self.seed = seed
        self.test_seed = test_seed
        self.val_size = val_size
        self.batch_size = batch_size
        self.resample_every_epoch = resample_every_epoch
        self.device_resident = device_resident
        self.return_truth = return_truth
        self.download_timeout = download_timeout
        self.log = log
        self.digit_set: DigitSet | None = None
        self.splits: dict[str, dict[str, np.ndarray]] = {}
        self.metadata: dict[str, Any] = {}
        self._train_index = np.arange(0)
        self._loaded: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}

    # -- data preparation ----------------------------------------------------------------------------------------

    def source_metadata(self) -> dict[str, Any]:
        """Where the digits come from (resolving them if needed): source, counts, checksum, full_dataset, ..."""
        return self._digits().metadata()

    def _digits(self) -> DigitSet:
        if self.digit_set is None:
            self.digit_set = resolve_digits(self.root, self.source, self.digits, self.download_timeout, self.log)
        return self.digit_set

    def _split(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The generated split from the cache (built on a miss); loaded once per module."""
        if split not in self._loaded:
            self._loaded[split] = self._load_split(split)
        return self._loaded[split]

    def _load_split(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        digit_set = self._digits()
        seed = split_seed(self.test_seed if split == "test" else self.seed, split, self.distortion.name)
        images = digit_set.test_images if split == "test" else digit_set.train_images
        labels = digit_set.test_labels if split == "test" else digit_set.train_labels
        protocol = {**self.distortion.protocol(), "split": split, "seed": seed, "chunk_size": GENERATION_CHUNK}
        name = f"{self.digits}-{self.distortion.name}-{split}"
        return load_or_build(
            self.root,
            name,
            protocol,
            digit_set.checksum,
            lambda: generate(self.distortion, images, labels, seed),
            metadata={"source": digit_set.metadata(), "count": len(labels)},
            log=self.log,
        )

    def prepare_data(self) -> None:
        """Resolve the digits and build the train and test caches (once, on one process)."""
        for split in ("train", "test"):
            self._split(split)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, train_meta = self._split("train")
        test, _ = self._split("test")
        n = len(train["labels"])
        n_val = int(round(self.val_size * n)) if isinstance(self.val_size, float) else int(self.val_size)
        if n_val >= n:
            raise ValueError(f"data.val_size={self.val_size} leaves no training samples out of {n}")
        order = np.random.default_rng(split_seed(self.seed, "val", self.distortion.name)).permutation(n)
        train_index, val_index = np.sort(order[: n - n_val]), np.sort(order[n - n_val :])
        self.splits = {
            "train": {k: v[train_index] for k, v in train.items()},
            "val": {k: v[val_index] for k, v in train.items()},
            "test": test,
        }
        self.metadata = {
            "distortion": self.distortion.protocol(),
            "source": train_meta["source"],
            "sizes": {k: len(v["labels"]) for k, v in self.splits.items()},
            "resample_every_epoch": self.resample_every_epoch,
        }
        self._train_index = train_index

    # -- loaders -------------------------------------------------------------------------------------------------

    def _device(self) -> torch.device | None:
        if not self.device_resident or self.trainer is None:
            return None
        return self.trainer.strategy.root_device

    def _regenerate(self, epoch: int) -> dict[str, Tensor]:
        digit_set = self._digits()
        index = self._train_index
        seed = split_seed(self.seed, f"train-epoch-{epoch}", self.distortion.name)
        device = self._device() or torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        digits = torch.from_numpy(digit_set.train_images[index])
        labels = torch.from_numpy(digit_set.train_labels[index])
        return self.distortion.generate(digits, labels, generator, device)

    def _loader(self, split: str, train: bool) -> TensorBatches:
        if not self.splits:
            raise RuntimeError("call setup() before asking for a dataloader")
        rank, world_size = trainer_share(self.trainer) if train else (0, 1)
        return TensorBatches(
            self.splits[split],
            self.batch_size,
            shuffle=train,
            seed=self.seed,
            return_truth=self.return_truth,
            device=self._device(),
            regenerate=self._regenerate if train and self.resample_every_epoch else None,
            rank=rank,
            world_size=world_size,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", train=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input image."""
        shape = self.distortion.canvas_shape
        return shape if len(shape) == 3 else (1, *shape)
