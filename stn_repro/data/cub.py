"""CUB-200-2011 (Caltech-UCSD Birds): the LightningDataModule over the official release, and how it splits it.

Data flow: :func:`~stn_repro.data.cub_format.read_cub` (the official text files, cross-checked) →
:class:`~stn_repro.data.cub_images.CUBImages` per split (decoding and transforms in DataLoader workers) →
batches of ``(images, labels, boxes)``: ``images`` float32 ``(B, 3, S, S)`` (ImageNet-normalised), ``labels``
int64 ``(B,)``, ``boxes`` float32 ``(B, 4)`` normalised ``(x0, y0, x1, y1)`` (see :mod:`~stn_repro.data.cub_images`).

Splits: train / test as in ``train_test_split.txt`` (5,994 / 5,794); an optional validation set is a seeded,
class-stratified hold-out from the training images (the paper uses none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from stn_repro.data.base import SplitDataModule
from stn_repro.data.cub_format import CUBMetadata, read_cub
from stn_repro.data.cub_images import IMAGENET_MEAN, IMAGENET_STD, CUBImages, CUBTransform
from stn_repro.data.distortions import split_seed

SOURCE_NAME = "cub-200-2011"
DATASET_NAME = "cub200"


def stratified_holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..N-1`` into ``(kept, held_out)`` sorted arrays; ``n_holdout`` of them held out.

    Class-stratified: each class gives up about ``n_holdout / N`` of its members, chosen at random with
    ``seed`` (samples are ordered by their within-class rank fraction in a seeded permutation).
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    rank = np.empty(len(labels))
    for label in np.unique(shuffled):
        members = shuffled == label
        rank[members] = (np.arange(members.sum()) + 0.5) / members.sum()
    order = order[np.argsort(rank, kind="stable")]
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def interleave_classes(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``indices`` reordered class by class in turn (each class's first, then each class's second, …)."""
    selected = labels[indices]
    rank = np.empty(len(indices), dtype=np.int64)
    for label in np.unique(selected):
        members = selected == label
        rank[members] = np.arange(members.sum())
    return indices[np.lexsort((selected, rank))]


class CUBDataModule(SplitDataModule):
    """CUB-200-2011 fine-grained classification with bird boxes, from the official release on disk.

    Args:
        root: data folder holding ``CUB_200_2011/`` (extracted ``CUB_200_2011.tgz``).
        image_size: side ``S`` of the network input (224, or 448 for the paper's high-resolution model).
        resize: images are resized so their short side is ``resize``, then cropped to ``image_size``: a random
            crop in training, the central crop at evaluation (the paper: 224 crops of 256-side images).
        random_flip: random horizontal flips in training.
        val_size: validation images held out from the training split (int) or fraction of it (float < 1),
            class-stratified with ``seed``; 0 (the paper) gives no validation set.
        batch_size: batch size of every loader (training drops its last incomplete batch).
        num_workers: DataLoader worker processes decoding JPEGs (persistent when > 0).
        seed: seeds the validation hold-out and the training loader's generator (shuffling, and through the
            worker seeds the random crops and flips; with ``num_workers=0`` these use the global torch seed).
        limit: keep only the first ``limit`` images of each split, in class-interleaved order (one per class in
            turn, so a small limit spans many classes); for smoke runs, never comparable with the paper.
        mean, std: per-channel normalisation (ImageNet's, for pretrained backbones).
        log: receives one-line progress messages.
        name: the dataset's name (``data.name``).
    """

    unit = "image"
    task = "cub"

    epoch_batches = False  # a worker DataLoader decoding JPEGs: one optimiser step per training step

    def __init__(
        self,
        root: str | Path = "data",
        image_size: int = 224,
        resize: int = 256,
        random_flip: bool = True,
        val_size: int | float = 0,
        batch_size: int = 16,
        num_workers: int = 2,
        seed: int = 0,
        limit: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        log: Callable[[str], None] = print,
        name: str | None = None,
    ) -> None:
        if image_size < 1 or resize < image_size:
            raise ValueError(f"need 1 <= data.image_size <= data.resize, got {image_size} and {resize}")
        super().__init__(root, seed, val_size, batch_size, log, name=name)
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be None or >= 1, got {limit}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"data.mean and data.std need 3 values each, std > 0; got {mean} and {std}")
        self.image_size = image_size
        self.resize = resize
        self.random_flip = random_flip
        self.num_workers = num_workers
        self.limit = limit
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.cub: CUBMetadata | None = None
        self.datasets: dict[str, CUBImages] = {}
        self.indices: dict[str, np.ndarray] = {}

    # -- data preparation ----------------------------------------------------------------------------------------

    def _cub(self) -> CUBMetadata:
        if self.cub is None:
            self.cub = read_cub(self.root)
            sample = "" if self.cub.full_dataset else ", NOT the full dataset"
            limited = f"; limited to {self.limit} images per split" if self.limit is not None else ""
            self.log(
                f"data: CUB-200-2011 from {self.cub.folder} ({self.cub.n_train:,} train / {self.cub.n_test:,} test, "
                f"{len(self.cub.class_names)} classes{sample}; sha256 {self.cub.checksum[:12]}){limited}"
            )
        return self.cub

    def source_metadata(self) -> dict[str, Any]:
        """Where the images come from (reading the text files if needed): source, counts, checksum, full_dataset.

        Raises:
            DataError: the release is missing or inconsistent (see :func:`read_cub`).
        """
        cub = self._cub()
        return {
            "source": SOURCE_NAME,
            "digits": DATASET_NAME,
            "n_train": cub.n_train,
            "n_test": cub.n_test,
            "n_classes": len(cub.class_names),
            "checksum": cub.checksum,
            "location": str(cub.folder),
            "full_dataset": cub.full_dataset and self.limit is None,
            "limit": self.limit,
        }

    def prepare_data(self) -> None:
        """Check the release (files present and consistent); nothing is downloaded or cached."""
        self._cub()

    def _setup(self) -> None:
        cub = self._cub()
        train = np.flatnonzero(cub.is_train)
        n_val = self._validation_count(len(train))
        kept, held_out = stratified_holdout(cub.labels[train], n_val, split_seed(self.seed, "val", DATASET_NAME))
        self.indices = {"train": train[kept], "val": train[held_out], "test": np.flatnonzero(~cub.is_train)}
        if self.limit is not None:
            self.indices = {
                k: np.sort(interleave_classes(v, cub.labels)[: self.limit]) for k, v in self.indices.items()
            }
        for split, index in self.indices.items():
            transform = CUBTransform(
                self.image_size, self.resize, split == "train", self.random_flip, self.mean, self.std
            )
            self.datasets[split] = CUBImages(
                cub.image_folder, cub.paths[index], cub.labels[index], cub.boxes[index], transform
            )
        self.metadata = {
            "source": self.source_metadata(),
            "sizes": {k: len(v) for k, v in self.indices.items()},
            "preprocessing": {
                "image_size": self.image_size,
                "resize": self.resize,
                "random_flip": self.random_flip,
                "mean": list(self.mean),
                "std": list(self.std),
            },
        }

    # -- loaders -------------------------------------------------------------------------------------------------

    def _build_loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def val_dataloader(self) -> DataLoader | list:
        """The validation loader, or an empty list (no validation) when ``val_size`` is 0."""
        if self.datasets and not len(self.datasets["val"]):
            return []
        return super().val_dataloader()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes listed in ``classes.txt`` (200 for the release)."""
        return len(self._cub().class_names)

    def model_inputs(self) -> dict[str, Any]:
        """The class count (the backbone takes any input size)."""
        return {"num_classes": self.num_classes}

    def system_inputs(self) -> dict[str, Any]:
        """The normalisation, undone to draw the attended parts."""
        return {"mean": self.mean, "std": self.std}
