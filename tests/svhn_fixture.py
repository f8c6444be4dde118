"""A tiny SVHN format-1 tree ("full numbers") written in the official layout, for tests.

``<root>/svhn/<split>/`` holds ``1.png, 2.png, ...`` and ``digitStruct.mat``: a MATLAB v7.3 file (HDF5 behind a
512-byte MATLAB header) with ``/digitStruct/name`` and ``/digitStruct/bbox``, each ``(N, 1)`` object references.
A name reference points to a ``uint16`` (or ``uint8``) ``(L, 1)`` char array; a bbox reference points to a group
with ``label``, ``left``, ``top``, ``width``, ``height``, each ``(k, 1)``: the float value itself when ``k == 1``,
otherwise references to ``(1, 1)`` float datasets. Label 10 means digit 0, as in the real files.

Each PNG is a flat background with every digit box filled with its own colour, so the geometry of a crop can be
checked from its pixels. Import it as ``from svhn_fixture import write_svhn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

BOX_FIELDS = ("left", "top", "width", "height")
BACKGROUND = (40, 40, 40)
#: Fill colour of the i-th digit box of every image (distinct from the background and from each other).
COLOURS = ((230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230), (250,) * 3)
DIGIT_WIDTH, DIGIT_HEIGHT, GAP = 30, 60, 4

#: Raw label sequences (1..10, 10 = digit 0) per split: the single-digit (scalar) layout, 0 as 10, 2-5 digits,
#: and one sequence longer than 5 digits that must be excluded.
SEQUENCES = {
    "train": ([5], [10], [1, 9], [2, 10, 3], [4, 6, 8, 1, 2], [1, 2, 3, 4, 5, 6], [7, 7], [3]),
    "test": ([8], [2, 1], [6, 10, 4], [1, 2, 3, 4, 5, 6, 7], [9, 9, 10, 1]),
    "extra": ([1], [2, 3], [4, 5, 6], [10, 10]),
}
#: (left margin, top margin, right margin, bottom margin) cycled over the images: boxes away from the border,
#: touching the left/top border (the 30% expansion is clipped there), touching the right/bottom border.
MARGINS = ((20, 15, 25, 10), (0, 0, 30, 30), (12, 20, 0, 0))


@dataclass(frozen=True)
class FixtureImage:
    """Ground truth of one written image: ``boxes`` are ``(left, top, width, height)`` per digit, in pixels."""

    name: str
    raw_labels: tuple[int, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    image_size: tuple[int, int]  # (width, height)

    @property
    def digits(self) -> tuple[int, ...]:
        """Digits 0..9 (raw label 10 → 0)."""
        return tuple(label % 10 for label in self.raw_labels)


def layout(index: int, raw_labels: tuple[int, ...] | list[int], name: str) -> FixtureImage:
    """Digit boxes side by side, each one pixel lower than the previous, margins ``MARGINS[index % 3]``."""
    left, top, right, bottom = MARGINS[index % len(MARGINS)]
    k = len(raw_labels)
    boxes = tuple(
        (float(left + i * (DIGIT_WIDTH + GAP)), float(top + i), float(DIGIT_WIDTH), float(DIGIT_HEIGHT))
        for i in range(k)
    )
    width = left + k * DIGIT_WIDTH + (k - 1) * GAP + right
    height = top + (k - 1) + DIGIT_HEIGHT + bottom
    return FixtureImage(name, tuple(raw_labels), boxes, (width, height))


def draw(image: FixtureImage) -> Image.Image:
    """RGB image: :data:`BACKGROUND` with the i-th digit box filled with ``COLOURS[i]``."""
    pixels = np.empty((image.image_size[1], image.image_size[0], 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    for i, (left, top, width, height) in enumerate(image.boxes):
        pixels[int(top) : int(top + height), int(left) : int(left + width)] = COLOURS[i]
    return Image.fromarray(pixels)


def write_digit_struct(path: str | Path, images: list[FixtureImage], name_dtype: type = np.uint16) -> None:
    """Write ``digitStruct.mat`` for ``images`` in the official MATLAB v7.3 layout (see the module docstring)."""
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as file:
        refs = file.create_group("#refs#")
        names = file.create_dataset("digitStruct/name", (len(images), 1), dtype=h5py.ref_dtype)
        bboxes = file.create_dataset("digitStruct/bbox", (len(images), 1), dtype=h5py.ref_dtype)
        for i, image in enumerate(images):
            chars = np.array([ord(c) for c in image.name], dtype=name_dtype)[:, None]
            names[i, 0] = refs.create_dataset(f"name{i}", data=chars).ref
            group = refs.create_group(f"bbox{i}")
            columns = {"label": [float(label) for label in image.raw_labels]}
            columns.update({field: [box[j] for box in image.boxes] for j, field in enumerate(BOX_FIELDS)})
            for field, values in columns.items():
                if len(values) == 1:
                    group.create_dataset(field, data=np.array([[values[0]]]))
                else:
                    value_refs = [refs.create_dataset(f"{field}{i}_{j}", data=[[v]]).ref for j, v in enumerate(values)]
                    group.create_dataset(field, data=np.array(value_refs, dtype=h5py.ref_dtype)[:, None])
            bboxes[i, 0] = group.ref
    with path.open("r+b") as file:
        file.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test fixture HDF5 schema 1.00 .")


def write_svhn(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "test"),
    sequences: dict[str, tuple[list[int], ...]] | None = None,
    name_dtype: type = np.uint16,
) -> dict[str, list[FixtureImage]]:
    """Write ``<root>/svhn/<split>/`` for each split; return the written images by split, in file order.

    Args:
        root: data folder (the module's ``root``).
        splits: official splits to write.
        sequences: raw label sequences by split (default :data:`SEQUENCES`).
        name_dtype: ``np.uint16`` (as MATLAB writes) or ``np.uint8`` char arrays for the names.
    """
    sequences = sequences or SEQUENCES
    written = {}
    for split in splits:
        folder = Path(root) / "svhn" / split
        folder.mkdir(parents=True, exist_ok=True)
        images = [layout(i, labels, f"{i + 1}.png") for i, labels in enumerate(sequences[split])]
        for image in images:
            draw(image).save(folder / image.name)
        write_digit_struct(folder / "digitStruct.mat", images, name_dtype)
        written[split] = images
    return written
