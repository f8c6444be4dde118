"""A tiny CUB-200-2011 release in the official layout, for tests: ``from cub_fixture import write_cub``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Background and bird-box colours of the RGB images; the grayscale and CMYK images use dark / light grey.
BACKGROUND = (30, 60, 160)
BIRD = (220, 40, 40)
GRAY_BACKGROUND, GRAY_BIRD = 20, 235


@dataclass(frozen=True)
class CUBTruth:
    """What :func:`write_cub` wrote, one row per image in ``images.txt`` order.

    Attributes:
        folder: the ``CUB_200_2011`` folder.
        image_ids: int64 ``(N,)``, ``1..N``.
        paths: relative image paths (``<class folder>/<file>.jpg``).
        labels: int64 ``(N,)``, 0-based.
        is_train: bool ``(N,)``.
        boxes: float32 ``(N, 4)``, ``(x, y, w, h)`` pixels; integers, so the coloured rectangle covers exactly
            pixels ``x .. x + w - 1`` by ``y .. y + h - 1``.
        sizes: ``(width, height)`` of each image.
        modes: PIL mode each JPEG was saved in (``"RGB"``, ``"L"`` or ``"CMYK"``).
        class_names: the names in ``classes.txt``.
    """

    folder: Path
    image_ids: np.ndarray
    paths: list[str]
    labels: np.ndarray
    is_train: np.ndarray
    boxes: np.ndarray
    sizes: list[tuple[int, int]]
    modes: list[str]
    class_names: list[str]


def write_cub(
    root: str | Path,
    n_classes: int = 3,
    per_class: int = 4,
    sizes: Sequence[tuple[int, int]] = ((96, 64), (64, 80), (80, 60)),
    grayscale_ids: Sequence[int] = (2,),
    cmyk_ids: Sequence[int] = (7,),
) -> CUBTruth:
    """Write ``<root>/CUB_200_2011`` with ``n_classes × per_class`` JPEGs and the five text files.

    Image ``k`` (id ``k + 1``) has class ``k // per_class``, size ``sizes[k % len(sizes)]`` (width, height), and a
    uniform background with the bird box filled in a distinct colour (:data:`BIRD` on :data:`BACKGROUND`; light
    on dark grey for the ids in ``grayscale_ids`` (saved as mode ``L``) and ``cmyk_ids`` (saved as ``CMYK``)).
    Within each class, even positions are training images, odd ones test images.
    """
    folder = Path(root) / "CUB_200_2011"
    class_names = [f"{c + 1:03d}.Bird_{chr(ord('A') + c % 26)}{c}" for c in range(n_classes)]
    paths, labels, is_train, boxes, image_sizes, modes = [], [], [], [], [], []
    for k in range(n_classes * per_class):
        image_id, label, position = k + 1, k // per_class, k % per_class
        width, height = sizes[k % len(sizes)]
        box = (3 + (5 * k) % (width // 4), 2 + (3 * k) % (height // 4), width // 2, height // 2)
        mode = "L" if image_id in grayscale_ids else "CMYK" if image_id in cmyk_ids else "RGB"
        path = f"{class_names[label]}/Bird_{position:04d}_{image_id}.jpg"
        _write_jpeg(folder / "images" / path, (width, height), box, mode)
        paths.append(path)
        labels.append(label)
        is_train.append(position % 2 == 0)
        boxes.append(box)
        image_sizes.append((width, height))
        modes.append(mode)

    ids = range(1, len(paths) + 1)
    _write_lines(folder / "images.txt", (f"{i} {p}" for i, p in zip(ids, paths, strict=True)))
    _write_lines(folder / "image_class_labels.txt", (f"{i} {c + 1}" for i, c in zip(ids, labels, strict=True)))
    _write_lines(folder / "train_test_split.txt", (f"{i} {int(t)}" for i, t in zip(ids, is_train, strict=True)))
    _write_lines(
        folder / "bounding_boxes.txt",
        (f"{i} {x:.1f} {y:.1f} {w:.1f} {h:.1f}" for i, (x, y, w, h) in zip(ids, boxes, strict=True)),
    )
    _write_lines(folder / "classes.txt", (f"{c + 1} {name}" for c, name in enumerate(class_names)))
    return CUBTruth(
        folder=folder,
        image_ids=np.arange(1, len(paths) + 1, dtype=np.int64),
        paths=paths,
        labels=np.array(labels, dtype=np.int64),
        is_train=np.array(is_train),
        boxes=np.array(boxes, dtype=np.float32),
        sizes=image_sizes,
        modes=modes,
        class_names=class_names,
    )


def _write_jpeg(path: Path, size: tuple[int, int], box: tuple[int, int, int, int], mode: str) -> None:
    x, y, w, h = box
    if mode == "RGB":
        pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        pixels[y : y + h, x : x + w] = BIRD
        image = Image.fromarray(pixels)
    else:
        pixels = np.full((size[1], size[0]), GRAY_BACKGROUND, dtype=np.uint8)
        pixels[y : y + h, x : x + w] = GRAY_BIRD
        image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
