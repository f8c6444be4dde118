"""The LightningDataModule of the distorted-MNIST experiments.

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

Batches: :class:`~stn_repro.data.batches.TensorBatches` (several processes and resuming: see
:mod:`stn_repro.data.batches`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stn_repro.data.base import DigitSetDataModule
from stn_repro.data.batches import TensorBatches
from stn_repro.data.cache import load_or_build
from stn_repro.data.distortions import GENERATION_CHUNK, Distortion, generate, get_distortion, split_seed


class DistortedMNISTDataModule(DigitSetDataModule):
    """One distorted-MNIST dataset (R, RTS, P, E, TC, ADD, SEQ) with cached train/val/test splits.

    Args:
        distortion: protocol name (see :data:`~stn_repro.data.distortions.DISTORTIONS`).
        params: overrides of the protocol's parameters (the paper's values by default).
        num_classes: labels per sample (10; ADD: the 19 sums).
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
        name: the dataset's name (``data.name``).
    """

    task = "mnist"

    def __init__(
        self,
        distortion: str = "R",
        params: dict[str, Any] | None = None,
        num_classes: int = 10,
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
        name: str | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2, got {num_classes}")
        protocol = get_distortion(distortion, **(params or {}))
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
        self.distortion: Distortion = protocol
        self.num_classes = num_classes
        self.splits: dict[str, dict[str, np.ndarray]] = {}
        self._train_index = np.arange(0)
        self._loaded: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}

    # -- data preparation ----------------------------------------------------------------------------------------

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

    def _setup(self) -> None:
        train, train_meta = self._split("train")
        test, _ = self._split("test")
        train_index, val_index = self._holdout(len(train["labels"]), self.distortion.name)
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

    def _regenerate(self, epoch: int) -> dict[str, Tensor]:
        digit_set = self._digits()
        index = self._train_index
        seed = split_seed(self.seed, f"train-epoch-{epoch}", self.distortion.name)
        device = self._device() or torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        digits = torch.from_numpy(digit_set.train_images[index])
        labels = torch.from_numpy(digit_set.train_labels[index])
        return self.distortion.generate(digits, labels, generator, device)

    def _build_loader(self, split: str, train: bool) -> TensorBatches:
        rank, world_size = self._share(train)
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input image."""
        shape = self.distortion.canvas_shape
        return shape if len(shape) == 3 else (1, *shape)


class DigitSequenceDataModule(DistortedMNISTDataModule):
    """Cluttered digit sequences (``SEQ``, Sønderby et al.'s recurrent follow-up): the distorted-MNIST module whose
    samples are ``length`` digits read left to right; labels ``(B, length)``.

    Args:
        params: overrides of the ``SEQ`` protocol (``canvas``, ``length``, clutter).
        Other arguments: see :class:`DistortedMNISTDataModule`.
    """

    task = "mnist_sequence"

    def __init__(self, distortion: str = "SEQ", **kwargs: Any) -> None:
        if distortion != "SEQ":
            raise ValueError(f"data.distortion={distortion!r} is not a digit sequence; expected SEQ")
        super().__init__(distortion, **kwargs)

    def model_inputs(self) -> dict[str, Any]:
        """The input shape and ``positions``, the digits per sample (one classifier head each)."""
        return {"in_shape": self.input_shape, "positions": self.distortion.length}
