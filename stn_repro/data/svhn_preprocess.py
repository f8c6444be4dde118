"""SVHN preprocessing: one official split folder → square crops around the numbers, their labels and boxes.

Preprocessing (Goodfellow et al. 2014, as the paper follows): the union of the digit boxes is expanded about its
centre by ``expand`` (0.3: width and height × 1.3), clipped to the image, cropped and resized to ``size × size``
(bilinear, antialiased when shrinking; the aspect ratio is not kept). Numbers of more than :data:`MAX_DIGITS`
digits are excluded and counted. Labels are one digit 0..9 per position and :data:`BLANK` after the end of the
number.

Conventions: boxes are ``(left, top, width, height)`` in pixels, as :mod:`~stn_repro.data.svhn_format` reads
them; a crop region is ``(x0, y0, x1, y1)`` in the same coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from stn_repro.data.errors import DataError, one_line
from stn_repro.data.svhn_format import DIGIT_STRUCT, SVHN_URL, SVHNEntry, read_digit_struct
from stn_repro.data.workers import Progress, run_tasks

__all__ = [
    "BLANK",
    "MAX_DIGITS",
    "PREPROCESSING_VERSION",
    "build_split",
    "crop_and_resize",
    "crop_region",
    "encode_labels",
    "map_boxes",
    "process_image",
]

MAX_DIGITS = 5
#: Label of the positions after the end of a number ("no digit"); digits are 0..9.
BLANK = 10
#: Increment when the preprocessing changes the cached arrays (it is part of the cache key).
PREPROCESSING_VERSION = 1

_IMAGE_CHUNK = 500  # images per preprocessing task


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
    progress = Progress(f"svhn {folder.name}: preprocessing", len(kept), log)
    position = 0
    for chunk, results in zip(chunks, run_tasks(_process_chunk, tasks, workers), strict=True):
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
