"""SVHN multi-digit house numbers ("format 1", full numbers) for the Table 2 experiments.

Data flow: ``<root>/svhn/{train,test,extra}/`` (``1.png, 2.png, ...`` and ``digitStruct.mat``, as extracted from
the official ``*.tar.gz``) → :func:`read_digit_struct` → crop around the digits (:func:`crop_region`) and resize
(:func:`crop_and_resize`) → HDF5 cache (:func:`~stn_repro.data.cache.load_or_build`, one file per official split)
→ :class:`SVHNDataModule` batches of ``(images, labels)``: ``images`` float32 ``(B, 3, H, W)`` in ``[0, 1]``,
``labels`` int64 ``(B, 5)``, one digit 0..9 per position and :data:`BLANK` after the end of the number.

Conventions: a digit box is ``(left, top, width, height)`` in pixels as stored in ``digitStruct.mat``, read as
0-based pixel edges (the box covers ``[left, left + width) × [top, top + height)``); a crop region is
``(x0, y0, x1, y1)`` in the same coordinates. Label 10 in the files means digit 0.

Preprocessing (Goodfellow et al. 2014, as the paper follows): the union of the digit boxes is expanded about its
centre by ``expand`` (0.3: width and height × 1.3), clipped to the image, cropped and resized to ``size × size``
(bilinear, antialiased when shrinking; the aspect ratio is not kept). Numbers of more than :data:`MAX_DIGITS`
digits are excluded and counted. Training takes random ``crop × crop`` windows of these images, one per sample
and epoch; evaluation takes the centre window.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor

from stn_repro.data.cache import load_or_build
from stn_repro.data.distortions import split_seed
from stn_repro.data.errors import DataError, one_line
from stn_repro.data.modules import TensorBatches, trainer_share

__all__ = [
    "BLANK",
    "FULL_SIZES",
    "MAX_DIGITS",
    "SVHN_SETS",
    "SVHN_URL",
    "CroppedBatches",
    "SVHNDataModule",
    "SVHNEntry",
    "build_split",
    "check_svhn_files",
    "crop_and_resize",
    "crop_batch",
    "crop_region",
    "digit_struct_size",
    "encode_labels",
    "map_boxes",
    "process_image",
    "read_digit_struct",
]

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SOURCE = "svhn-format1"
DIGIT_STRUCT = "digitStruct.mat"
#: Number of images of each official split of format 1.
FULL_SIZES = {"train": 33_402, "test": 13_068, "extra": 202_353}
MAX_DIGITS = 5
#: Label of the positions after the end of a number ("no digit"); digits are 0..9.
BLANK = 10
#: The paper's two preprocessed sets: ``size`` of the stored square images, ``expand`` of the union box, ``crop``
#: side of the training / evaluation windows. The 128px set's looser crop (DRAM, Ba et al. 2015) is not specified
#: in the paper: ``expand=1.0`` (union box doubled in width and height) is our guess.
SVHN_SETS: dict[str, dict[str, Any]] = {
    "64px": {"size": 64, "expand": 0.3, "crop": 54},
    "128px": {"size": 128, "expand": 1.0, "crop": 110},
}
#: Increment when the preprocessing changes the cached arrays (it is part of the cache key).
PREPROCESSING_VERSION = 1

_FIELDS = ("label", "left", "top", "width", "height")
_READ_CHUNK = 2_000  # digitStruct entries per reading task
_IMAGE_CHUNK = 500  # images per preprocessing task
_SPLIT_KEYS = ("images", "labels", "boxes")  # arrays of the train / val / test splits
_CROP_STREAM = 7  # distinguishes the random-crop generator from other per-epoch streams
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class SVHNEntry:
    """One image of ``digitStruct.mat``: its PNG file name, digits ``0..9`` and their boxes.

    ``boxes[i]`` is ``(left, top, width, height)`` of ``digits[i]`` in pixels of the original image.
    """

    name: str
    digits: tuple[int, ...]
    boxes: tuple[tuple[float, float, float, float], ...]


# -- digitStruct.mat ---------------------------------------------------------------------------------------------


def digit_struct_size(path: str | Path) -> int:
    """Number of images listed in the ``digitStruct.mat`` at ``path`` (cheap: reads no entry).

    Raises:
        DataError: naming the file, when it is missing, not HDF5 (MATLAB v7.3) or not laid out as
            ``/digitStruct/name`` and ``/digitStruct/bbox``, two equally long arrays of object references.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            return len(_reference_arrays(path, file)[0])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise _struct_error(path, f"unreadable ({one_line(exc)})") from exc


def read_digit_struct(
    path: str | Path, limit: int | None = None, workers: int = 1, log: Callable[[str], None] | None = None
) -> list[SVHNEntry]:
    """The entries of the ``digitStruct.mat`` at ``path``, in file order (only the first ``limit`` if given).

    A name reference points to a ``(L, 1)`` ``uint16`` or ``uint8`` char array. A bbox reference points to a group
    of ``label``, ``left``, ``top``, ``width``, ``height``, each ``(k, 1)``: the value itself when ``k == 1``, else
    references to ``(1, 1)`` values. Every object is a separate HDF5 read (~12 µs each, ~2,000 entries/s on one
    core), so ranges of entries are read by ``workers`` processes.

    Raises:
        DataError: naming the file (and the entry), when it is missing, not HDF5, laid out differently, or holds
            a label outside ``1..10``, a non-finite box or fields of unequal lengths.
    """
    path = Path(path)
    count = digit_struct_size(path)
    count = count if limit is None else min(limit, count)
    tasks = [(path, start, min(start + _READ_CHUNK, count)) for start in range(0, count, _READ_CHUNK)]
    progress = _Progress(f"svhn {path.parent.name}: reading {path.name}", count, log)
    entries: list[SVHNEntry] = []
    for part in _run_tasks(_read_range, tasks, workers):
        entries.extend(part)
        progress.advance(len(part))
    return entries


def _reference_arrays(path: Path, file: h5py.File) -> tuple[np.ndarray, np.ndarray]:
    """``/digitStruct/name`` and ``/digitStruct/bbox`` as flat arrays of references."""
    arrays = []
    for key in ("digitStruct/name", "digitStruct/bbox"):
        dataset = file.get(key)
        if not isinstance(dataset, h5py.Dataset) or h5py.check_ref_dtype(dataset.dtype) is None:
            raise _struct_error(path, f"/{key} is missing or is not an array of object references")
        arrays.append(dataset[()].reshape(-1))
    if len(arrays[0]) != len(arrays[1]):
        raise _struct_error(path, f"{len(arrays[0])} names but {len(arrays[1])} bbox entries")
    return arrays[0], arrays[1]


def _read_range(task: tuple[Path, int, int]) -> list[SVHNEntry]:
    """Entries ``start..stop-1`` of one file (a worker task)."""
    path, start, stop = task
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise _struct_error(path, f"unreadable ({one_line(exc)})") from exc
    with file:
        names, bboxes = _reference_arrays(path, file)
        entries = []
        for index in range(start, stop):
            try:
                entries.append(_read_entry(file.id, names[index], bboxes[index]))
            except (OSError, KeyError, ValueError, TypeError) as exc:
                raise _struct_error(path, f"entry {index + 1}: {one_line(exc)}") from exc
        return entries


def _read_entry(file_id: h5py.h5f.FileID, name_ref: h5py.Reference, bbox_ref: h5py.Reference) -> SVHNEntry:
    name_id = h5py.h5r.dereference(name_ref, file_id)
    box_id = h5py.h5r.dereference(bbox_ref, file_id)
    if not isinstance(name_id, h5py.h5d.DatasetID) or not isinstance(box_id, h5py.h5g.GroupID):
        raise ValueError("the name must reference a char array and the bbox a group")
    chars = np.empty(name_id.shape, dtype=np.uint16)
    name_id.read(h5py.h5s.ALL, h5py.h5s.ALL, chars)
    name = "".join(map(chr, chars.reshape(-1)))
    labels, *columns = (_read_field(file_id, box_id, field) for field in _FIELDS)
    if len({len(labels), *map(len, columns)}) != 1 or not labels:
        raise ValueError(f"{name}: fields {', '.join(_FIELDS)} must have the same length >= 1")
    if not all(label in range(1, 11) for label in labels):
        raise ValueError(f"{name}: labels {labels} outside 1..10")
    if not np.isfinite(columns).all():
        raise ValueError(f"{name}: non-finite box values")
    return SVHNEntry(name, tuple(int(label) % 10 for label in labels), tuple(zip(*columns, strict=True)))


def _read_field(file_id: h5py.h5f.FileID, group_id: h5py.h5g.GroupID, field: str) -> list[float]:
    """One bbox field: the value stored directly (one digit) or behind references (several digits)."""
    dataset = h5py.h5d.open(group_id, field.encode())
    if dataset.get_type().get_class() != h5py.h5t.REFERENCE:
        return [_read_scalar(dataset)]
    refs = np.empty(dataset.shape, dtype=h5py.ref_dtype)
    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, refs)
    return [_read_scalar(h5py.h5r.dereference(ref, file_id)) for ref in refs.reshape(-1)]


def _read_scalar(dataset: h5py.h5d.DatasetID) -> float:
    value = np.empty((1, 1), dtype=np.float64)
    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
    return float(value[0, 0])


def _struct_error(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path}: not a valid SVHN digitStruct.mat: {problem}; re-extract {path.parent.name}.tar.gz from "
        f"{SVHN_URL} into {path.parent.parent}"
    )


# -- preprocessing -----------------------------------------------------------------------------------------------


def crop_region(boxes: np.ndarray, image_size: tuple[int, int], expand: float) -> np.ndarray:
    """``(x0, y0, x1, y1)`` float64: union of ``boxes`` ``(k, 4)``, expanded about its centre, clipped to the image.

    Args:
        boxes: ``(left, top, width, height)`` per digit.
        image_size: ``(width, height)`` of the image.
        expand: relative growth of the union's width and height (0.3: × 1.3).

    The result may be empty (``x1 <= x0`` or ``y1 <= y0``) when the boxes lie outside the image.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    corners = np.concatenate([boxes[:, :2].min(0), (boxes[:, :2] + boxes[:, 2:]).max(0)])
    centre, half = (corners[:2] + corners[2:]) / 2, (corners[2:] - corners[:2]) * (1 + expand) / 2
    return np.concatenate([np.maximum(centre - half, 0), np.minimum(centre + half, image_size)])


def crop_and_resize(image: Image.Image, region: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (3, size, size)``: the RGB ``region`` ``(x0, y0, x1, y1)`` of ``image`` (sub-pixel exact), resized.

    Resampling treats the image as continuous: output pixels at the region's edge blend in the source pixels just
    outside it that the bilinear filter's support reaches.
    """
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=tuple(map(float, region)))
    return np.asarray(resized).transpose(2, 0, 1)


def map_boxes(boxes: np.ndarray, region: np.ndarray, size: int) -> np.ndarray:
    """``float32 (k, 4)``: ``boxes`` ``(left, top, width, height)`` in the pixels of ``region`` resized to ``size``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = size / (region[2:] - region[:2])
    return np.concatenate([(boxes[:, :2] - region[:2]) * scale, boxes[:, 2:] * scale], axis=1).astype(np.float32)


def process_image(
    path: str | Path, boxes: np.ndarray, size: int, expand: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(image uint8 (3, size, size), boxes float32 (k, 4))`` of the PNG at ``path``; ``None`` for an empty crop.

    Raises:
        DataError: naming the PNG, when it is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            region = crop_region(boxes, image.size, expand)
            if (region[2:] <= region[:2]).any():
                return None
            return crop_and_resize(image, region, size), map_boxes(boxes, region, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: cannot read or decode this PNG ({one_line(exc)}); re-extract {path.parent.name}.tar.gz "
            f"from {SVHN_URL} into {path.parent.parent}"
        ) from exc


def encode_labels(digits: Sequence[Sequence[int]]) -> np.ndarray:
    """``int64 (N, MAX_DIGITS)``: each number's digits from the left, then :data:`BLANK`."""
    labels = np.full((len(digits), MAX_DIGITS), BLANK, dtype=np.int64)
    for row, number in zip(labels, digits, strict=True):
        if len(number) > MAX_DIGITS:
            raise ValueError(f"{len(number)} digits: at most {MAX_DIGITS} fit")
        row[: len(number)] = number
    return labels


def build_split(
    folder: str | Path,
    size: int,
    expand: float,
    limit: int | None = None,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Preprocess one official split folder (``digitStruct.mat`` and its PNGs) with ``workers`` processes.

    Returns:
        ``images`` uint8 ``(N, 3, size, size)``, ``labels`` int64 ``(N, 5)`` (:func:`encode_labels`), ``boxes``
        float32 ``(N, 5, 4)`` (:func:`map_boxes`, NaN after the last digit), ``index`` int64 ``(N,)`` (0-based
        entry of ``digitStruct.mat``, i.e. PNG ``index + 1``), and the excluded entries (int64): ``excluded/too_long``
        (more than :data:`MAX_DIGITS` digits) and ``excluded/empty_crop`` (boxes outside the image or of zero size).
    """
    folder = Path(folder)
    entries = read_digit_struct(folder / DIGIT_STRUCT, limit, workers, log)
    kept = [i for i, entry in enumerate(entries) if len(entry.digits) <= MAX_DIGITS]
    too_long = [i for i, entry in enumerate(entries) if len(entry.digits) > MAX_DIGITS]
    images = np.empty((len(kept), 3, size, size), dtype=np.uint8)
    boxes = np.full((len(kept), MAX_DIGITS, 4), np.nan, dtype=np.float32)
    index, empty = [], []
    chunks = [kept[start : start + _IMAGE_CHUNK] for start in range(0, len(kept), _IMAGE_CHUNK)]
    tasks = [(folder, [entries[i] for i in chunk], size, expand) for chunk in chunks]
    progress = _Progress(f"svhn {folder.name}: preprocessing", len(kept), log)
    position = 0
    for chunk, results in zip(chunks, _run_tasks(_process_chunk, tasks, workers), strict=True):
        for entry_index, result in zip(chunk, results, strict=True):
            if result is None:
                empty.append(entry_index)
                continue
            images[position], boxes[position, : len(result[1])] = result
            index.append(entry_index)
            position += 1
        progress.advance(len(chunk))
    log(
        f"svhn {folder.name}: {len(entries):,} images, kept {position:,}; excluded {len(too_long):,} with more than "
        f"{MAX_DIGITS} digits and {len(empty):,} with an empty crop (boxes outside the image or of zero size)"
    )
    return {
        "images": images[:position],
        "labels": encode_labels([entries[i].digits for i in index]),
        "boxes": boxes[:position],
        "index": np.array(index, dtype=np.int64),
        "excluded/too_long": np.array(too_long, dtype=np.int64),
        "excluded/empty_crop": np.array(empty, dtype=np.int64),
    }


def _process_chunk(task: tuple[Path, list[SVHNEntry], int, float]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    folder, entries, size, expand = task
    return [process_image(folder / entry.name, np.array(entry.boxes), size, expand) for entry in entries]


# -- batches -----------------------------------------------------------------------------------------------------


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


# -- data module -------------------------------------------------------------------------------------------------


def check_svhn_files(root: str | Path, use_extra: bool = True) -> None:
    """Raise one :class:`DataError` listing every missing ``<root>/svhn/<split>/{digitStruct.mat, 1.png}``.

    The message says where to download the archives, where to extract them, and (when only ``extra`` is missing)
    that ``data.use_extra=false`` trains without it.
    """
    folder = Path(root).expanduser() / "svhn"
    splits = ("train", "extra", "test") if use_extra else ("train", "test")
    missing = [folder / split / file for split in splits for file in (DIGIT_STRUCT, "1.png")]
    missing = [path for path in missing if not path.is_file()]
    if not missing:
        return
    archives = sorted({f"{path.parent.name}.tar.gz" for path in missing})
    message = (
        f"SVHN format-1 data missing: {', '.join(map(str, missing))} not found. Download {', '.join(archives)} "
        f"from {SVHN_URL} and extract them into {folder}/ (giving {folder}/<split>/1.png, 2.png, ... and "
        f"{DIGIT_STRUCT}), or point data.root to the folder that holds svhn/"
    )
    if archives == ["extra.tar.gz"]:
        message += "; or train without the extra images with data.use_extra=false (the paper uses them)"
    raise DataError(message)


class SVHNDataModule(pl.LightningDataModule):
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
    """

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
    ) -> None:
        super().__init__()
        if variant not in SVHN_SETS:
            raise ValueError(f"data.variant={variant!r} is unknown; choose one of: {', '.join(SVHN_SETS)}")
        preset = SVHN_SETS[variant]
        self.size = int(preset["size"] if size is None else size)
        self.expand = float(preset["expand"] if expand is None else expand)
        crop = preset["crop"] if crop is None else crop
        crop = self.size if crop is None else int(crop)
        if self.size < 1 or self.expand < 0 or not 1 <= crop <= self.size:
            raise ValueError(
                f"SVHN needs size >= 1, expand >= 0 and 1 <= crop <= size; got {self.size}, {self.expand}, {crop}"
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not (0 <= val_size < 1 or (isinstance(val_size, int) and val_size >= 0)):
            raise ValueError(f"data.val_size must be an image count >= 0 or a fraction in [0, 1), got {val_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be >= 1 or None, got {limit}")
        self.root = Path(root).expanduser()
        self.variant = variant
        self.crop: int | None = None if crop == self.size else crop
        self.use_extra = use_extra
        self.val_size = val_size
        self.random_crop = random_crop
        self.batch_size = batch_size
        self.seed = seed
        self.limit = limit
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.device_resident = device_resident
        self.log = log
        self.pool_splits = ("train", "extra") if use_extra else ("train",)
        self.splits: dict[str, dict[str, np.ndarray]] = {}
        self.metadata: dict[str, Any] = {}
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
            checksums = {split: _split_checksum(folder / split) for split in splits}
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

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        parts = [self._split(split)[0] for split in self.pool_splits]
        test = self._split("test")[0]
        n = sum(len(part["labels"]) for part in parts)
        n_val = int(round(self.val_size * n)) if isinstance(self.val_size, float) else int(self.val_size)
        if n_val >= n:
            raise ValueError(f"data.val_size={self.val_size} leaves no training images out of {n}")
        order = np.random.default_rng(split_seed(self.seed, "val", "svhn")).permutation(n)
        self.splits = {
            "train": _take(parts, np.sort(order[: n - n_val])),
            "val": _take(parts, np.sort(order[n - n_val :])),
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

    def _device(self) -> torch.device | None:
        if not self.device_resident or self.trainer is None:
            return None
        return self.trainer.strategy.root_device

    def _loader(self, split: str, train: bool) -> TensorBatches:
        if not self.splits:
            raise RuntimeError("call setup() before asking for a dataloader")
        arrays, device = self.splits[split], self._device()
        rank, world_size = trainer_share(self.trainer) if train else (0, 1)
        common = {"shuffle": train, "seed": self.seed, "device": device, "rank": rank, "world_size": world_size}
        if self.crop is None:
            return TensorBatches(arrays, self.batch_size, **common)
        return CroppedBatches(arrays, self.batch_size, self.crop, train and self.random_crop, **common)

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", train=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input image: ``(3, crop, crop)``, or ``(3, size, size)`` without cropping."""
        side = self.crop or self.size
        return (3, side, side)


def _split_checksum(folder: Path) -> str:
    """SHA-256 of ``digitStruct.mat`` and the number of PNGs in ``folder``."""
    digest = hashlib.sha256()
    with (folder / DIGIT_STRUCT).open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    pngs = sum(1 for entry in os.scandir(folder) if entry.name.endswith(".png"))
    digest.update(f";{pngs} png".encode())
    return digest.hexdigest()


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


def _run_tasks(function: Callable[[_T], _R], tasks: Sequence[_T], workers: int) -> Iterable[_R]:
    """``function`` over ``tasks``, results in order: in this process for one worker or one task, else in a pool."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(function, tasks)


class _Progress:
    """Logs ``<what>: done/total (rate/s)`` each time another tenth of ``total`` is done."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None) -> None:
        self.what, self.total, self.log = what, total, log
        self.done, self.logged_tenths = 0, 0
        self.start = time.perf_counter()

    def advance(self, count: int) -> None:
        self.done += count
        tenths = self.done * 10 // max(self.total, 1)
        if self.log is not None and tenths > self.logged_tenths:
            self.logged_tenths = tenths
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            self.log(f"{self.what}: {self.done:,}/{self.total:,} ({rate:,.0f}/s)")
