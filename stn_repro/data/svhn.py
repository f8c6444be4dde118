"""SVHN multi-digit house numbers ("format 1", full numbers) for the Table 2 experiments: the data module.

Data flow: the official release (:mod:`~stn_repro.data.svhn_format`: ``<root>/svhn/{train,test,extra}/``,
``digitStruct.mat``) → preprocessing (:func:`~stn_repro.data.svhn_preprocess.build_split`: crops around the
numbers resized to ``size × size``) → HDF5 cache (:func:`~stn_repro.data.cache.load_or_build`, one file per
official split) → :class:`SVHNDataModule` batches of ``(images, labels)``: ``images`` float32 ``(B, 3, H, W)`` in
``[0, 1]``, ``labels`` int64 ``(B, 5)``, one digit 0..9 per position and
:data:`~stn_repro.data.svhn_preprocess.BLANK` after the end of the number.

Training takes random ``crop × crop`` windows of the stored images, one per sample and epoch; evaluation takes the
centre window (:class:`~stn_repro.data.batches.CroppedBatches`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stn_repro.data.base import SplitDataModule
from stn_repro.data.batches import CroppedBatches, TensorBatches
from stn_repro.data.cache import load_or_build
from stn_repro.data.svhn_format import DIGIT_STRUCT, FULL_SIZES, check_svhn_files, digit_struct_size, split_checksum
from stn_repro.data.svhn_preprocess import MAX_DIGITS, PREPROCESSING_VERSION, build_split

__all__ = ["SVHN_SETS", "SVHNDataModule"]

SOURCE = "svhn-format1"
#: The paper's two preprocessed sets: ``size`` of the stored square images, ``expand`` of the union box, ``crop``
#: side of the training / evaluation windows. The 128px set's looser crop (DRAM, Ba et al. 2015) is not specified
#: in the paper: ``expand=1.0`` (union box doubled in width and height) is our guess.
SVHN_SETS: dict[str, dict[str, Any]] = {
    "64px": {"size": 64, "expand": 0.3, "crop": 54},
    "128px": {"size": 128, "expand": 1.0, "crop": 110},
}

_SPLIT_KEYS = ("images", "labels", "boxes")  # arrays of the train / val / test splits


class SVHNDataModule(SplitDataModule):
    """SVHN multi-digit numbers, preprocessed once per official split and cached; train / val / test splits.

    Args:
        root: data folder holding ``svhn/{train,test,extra}/`` (and ``cache/``).
        variant: preprocessed set, a key of :data:`SVHN_SETS` (``"64px"`` or ``"128px"``).
        size, expand, crop: override the variant's values when not ``None``; ``crop`` equal to ``size`` means no
            cropping.
        use_extra: add the ``extra`` images to the training pool (as the paper does).
        val_size: validation images held out of the training pool by a seeded permutation: a count (int) or a
            fraction (float < 1).
        random_crop: random ``crop`` windows in training (evaluation always uses the centre window).
        batch_size: training batch size (evaluation uses the same).
        seed: data seed of the validation split, the shuffling and the random crops.
        limit: use only the first ``limit`` images of each official split (smoke runs; never the full dataset).
        workers: preprocessing processes; default ``min(8, cpu count)``.
        device_resident: keep the split tensors on the trainer's device and slice batches there.
        log: receives one-line progress messages (data found, cache hits, preprocessing progress).
        name: the dataset's name (``data.name``).
    """

    unit = "image"
    task = "svhn"

    def __init__(
        self,
        root: str | Path = "data",
        variant: str = "64px",
        size: int | None = None,
        expand: float | None = None,
        crop: int | None = None,
        use_extra: bool = True,
        val_size: int | float = 5000,
        random_crop: bool = True,
        batch_size: int = 128,
        seed: int = 0,
        limit: int | None = None,
        workers: int | None = None,
        device_resident: bool = False,
        log: Callable[[str], None] = print,
        name: str | None = None,
    ) -> None:
        if variant not in SVHN_SETS:
            raise ValueError(f"data.variant={variant!r} is unknown; choose one of: {', '.join(SVHN_SETS)}")
        preset = SVHN_SETS[variant]
        size = int(preset["size"] if size is None else size)
        expand = float(preset["expand"] if expand is None else expand)
        crop = preset["crop"] if crop is None else crop
        crop = size if crop is None else int(crop)
        if size < 1 or expand < 0 or not 1 <= crop <= size:
            raise ValueError(f"SVHN needs size >= 1, expand >= 0 and 1 <= crop <= size; got {size}, {expand}, {crop}")
        super().__init__(Path(root).expanduser(), seed, val_size, batch_size, log, device_resident, name)
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be >= 1 or None, got {limit}")
        self.size = size
        self.expand = expand
        self.variant = variant
        self.crop: int | None = None if crop == self.size else crop
        self.use_extra = use_extra
        self.random_crop = random_crop
        self.limit = limit
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.pool_splits = ("train", "extra") if use_extra else ("train",)
        self.splits: dict[str, dict[str, np.ndarray]] = {}
        self._source: dict[str, Any] = {}
        self._loaded: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}

    # -- data preparation ----------------------------------------------------------------------------------------

    def source_metadata(self) -> dict[str, Any]:
        """Where the images come from: ``source``, ``digits``, ``location``, per-split counts, ``checksum``, ...

        Hashes the ``digitStruct.mat`` files and counts the PNGs (well under a second for the full dataset);
        computed once per module.

        Raises:
            DataError: files are missing (see :func:`check_svhn_files`) or a ``digitStruct.mat`` is invalid.
        """
        if not self._source:
            check_svhn_files(self.root, self.use_extra)
            folder = self.root / "svhn"
            splits = (*self.pool_splits, "test")
            counts = {split: digit_struct_size(folder / split / DIGIT_STRUCT) for split in splits}
            checksums = {split: split_checksum(folder / split) for split in splits}
            total = hashlib.sha256("".join(f"{s}:{checksums[s]};" for s in splits).encode()).hexdigest()
            full = self.limit is None and self.use_extra and counts == FULL_SIZES
            self._source = {
                "source": SOURCE,
                "digits": "svhn",
                "location": str(folder),
                "splits": list(splits),
                "n_images": counts,
                "limit": self.limit,
                "checksum": total,
                "split_checksums": checksums,
                "full_dataset": full,
            }
            limited = f", first {self.limit:,} of each split only" if self.limit else ""
            self.log(
                f"svhn: format-1 images in {folder} ({' / '.join(f'{s} {n:,}' for s, n in counts.items())}{limited}"
                f"{'' if full else ', NOT the full dataset'}; sha256 {total[:12]})"
            )
        return self._source

    def _split(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The preprocessed official split from the cache (built on a miss); loaded once per module."""
        if split not in self._loaded:
            source = self.source_metadata()
            protocol = {
                "dataset": SOURCE,
                "split": split,
                "size": self.size,
                "expand": self.expand,
                "max_digits": MAX_DIGITS,
                "resample": "bilinear",
                "limit": self.limit,
                "version": PREPROCESSING_VERSION,
            }
            folder = self.root / "svhn" / split
            self._loaded[split] = load_or_build(
                self.root,
                f"svhn-{self.size}px-{split}",
                protocol,
                source["split_checksums"][split],
                lambda: build_split(folder, self.size, self.expand, self.limit, self.workers, self.log),
                metadata={"folder": str(folder), "n_images": source["n_images"][split]},
                log=self.log,
            )
        return self._loaded[split]

    def prepare_data(self) -> None:
        """Check the files and build the caches of the official splits used (once, on one process)."""
        for split in (*self.pool_splits, "test"):
            self._split(split)

    def _setup(self) -> None:
        parts = [self._split(split)[0] for split in self.pool_splits]
        test = self._split("test")[0]
        train_index, val_index = self._holdout(sum(len(part["labels"]) for part in parts), "svhn")
        self.splits = {
            "train": _take(parts, train_index),
            "val": _take(parts, val_index),
            "test": {key: test[key] for key in _SPLIT_KEYS},
        }
        used = (*self.pool_splits, "test")
        excluded = {split: len(self._split(split)[0]["excluded/too_long"]) for split in used}
        empty = {split: len(self._split(split)[0]["excluded/empty_crop"]) for split in used}
        self.metadata = {
            "source": self.source_metadata(),
            "variant": self.variant,
            "preprocessing": {
                "size": self.size,
                "expand": self.expand,
                "crop": self.crop,
                "random_crop": self.random_crop,
            },
            "sizes": {key: len(split["labels"]) for key, split in self.splits.items()},
            "excluded": excluded,
            "empty_crop": empty,
        }
        self._loaded.clear()  # the pool's arrays now live in the splits; free the per-split copies
        sizes = self.metadata["sizes"]
        self.log(
            f"svhn: {self.size}px set (expand {self.expand}, crop {self.crop or 'none'}): {sizes['train']:,} train / "
            f"{sizes['val']:,} val / {sizes['test']:,} test images; excluded with more than {MAX_DIGITS} digits: "
            f"{', '.join(f'{s} {n:,}' for s, n in excluded.items())}"
        )

    # -- loaders -------------------------------------------------------------------------------------------------

    def _build_loader(self, split: str, train: bool) -> TensorBatches:
        arrays, device = self.splits[split], self._device()
        rank, world_size = self._share(train)
        common = {"shuffle": train, "seed": self.seed, "device": device, "rank": rank, "world_size": world_size}
        if self.crop is None:
            return TensorBatches(arrays, self.batch_size, **common)
        return CroppedBatches(arrays, self.batch_size, self.crop, train and self.random_crop, **common)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input image: ``(3, crop, crop)``, or ``(3, size, size)`` without cropping."""
        side = self.crop or self.size
        return (3, side, side)

    def model_inputs(self) -> dict[str, Any]:
        """The input shape (the number heads are fixed: up to 5 digits and a length)."""
        return {"in_shape": self.input_shape}


def _take(parts: list[dict[str, np.ndarray]], index: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``index`` (sorted) of the concatenation of ``parts``, without building the concatenation."""
    starts = np.cumsum([0, *(len(part["labels"]) for part in parts)])
    taken = {}
    for key in _SPLIT_KEYS:
        taken[key] = np.empty((len(index), *parts[0][key].shape[1:]), dtype=parts[0][key].dtype)
        done = 0
        for part, low, high in zip(parts, starts[:-1], starts[1:], strict=True):
            rows = index[(index >= low) & (index < high)] - low
            np.take(part[key], rows, axis=0, out=taken[key][done : done + len(rows)])
            done += len(rows)
    return taken
