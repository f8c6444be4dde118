"""The official CUB-200-2011 (Caltech-UCSD Birds) release on disk: its files, their reader and checksum.

:func:`check_cub_files` → :func:`read_cub` (the five text files, cross-checked) → :class:`CUBMetadata`, one row
per image. A CUB box ``x, y, w, h`` is in pixels of the original image, origin at its top-left corner, and covers
``[x, x + w] × [y, y + h]``. Splits: train / test as in ``train_test_split.txt`` (5,994 / 5,794).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_repro.data.errors import DataError, one_line

CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
CUB_ARCHIVE = "CUB_200_2011.tgz"
#: Folder created by extracting :data:`CUB_ARCHIVE`, under the configured data root.
CUB_FOLDER = "CUB_200_2011"
#: The five text files of the release, in the order they enter the checksum.
CUB_TEXT_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
CUB_IMAGE_FOLDER = "images"
#: Split sizes and class count of the complete dataset.
FULL_SIZES = (5_994, 5_794)
FULL_CLASSES = 200


@dataclass(frozen=True, eq=False)
class CUBMetadata:
    """The cross-checked content of the five text files, one row per image in ``images.txt`` order.

    Attributes:
        folder: the ``CUB_200_2011`` folder.
        image_ids: int64 ``(N,)``, the release's image ids.
        paths: str ``(N,)``, image paths relative to ``folder / "images"``.
        labels: int64 ``(N,)``, ``class_id - 1``.
        is_train: bool ``(N,)``, ``True`` for the training split.
        boxes: float32 ``(N, 4)``, bird boxes ``(x, y, w, h)`` in pixels of the original image (top-left origin).
        class_names: the names in ``classes.txt``, index = label.
        checksum: SHA-256 hex digest of the five text files (:func:`cub_checksum`).
    """

    folder: Path
    image_ids: np.ndarray = field(repr=False)
    paths: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    is_train: np.ndarray = field(repr=False)
    boxes: np.ndarray = field(repr=False)
    class_names: tuple[str, ...] = field(repr=False)
    checksum: str

    @property
    def image_folder(self) -> Path:
        return self.folder / CUB_IMAGE_FOLDER

    @property
    def n_train(self) -> int:
        return int(self.is_train.sum())

    @property
    def n_test(self) -> int:
        return int((~self.is_train).sum())

    @property
    def full_dataset(self) -> bool:
        """Whether this is the complete release: 5,994 train / 5,794 test images of 200 classes."""
        return (self.n_train, self.n_test) == FULL_SIZES and len(self.class_names) == FULL_CLASSES


def check_cub_files(root: str | Path) -> None:
    """Check that ``<root>/CUB_200_2011`` holds the five text files and the ``images`` folder.

    Raises:
        DataError: one message listing what is missing, under which folder, and how to get the data.
    """
    root = Path(root).expanduser()
    folder = root / CUB_FOLDER
    missing = [name for name in CUB_TEXT_FILES if not (folder / name).is_file()]
    if not (folder / CUB_IMAGE_FOLDER).is_dir():
        missing.append(f"{CUB_IMAGE_FOLDER}/")
    if not missing:
        return
    message = (
        f"CUB-200-2011 not found under the data root {root}: expected {', '.join(CUB_TEXT_FILES)} and "
        f"{CUB_IMAGE_FOLDER}/ in {folder}, missing {', '.join(missing)}. Download {CUB_ARCHIVE} from {CUB_URL} "
        f"and extract it into {root}/ (tar -xzf {CUB_ARCHIVE} -C {root}) so that {folder / 'images.txt'} exists"
    )
    if (root / CUB_ARCHIVE).is_file():
        message += f"; {root / CUB_ARCHIVE} is there but not extracted"
    if (root / "images.txt").is_file():
        message += f"; {root} itself holds images.txt: set the data root to its parent folder {root.parent}"
    raise DataError(message)


def cub_checksum(folder: str | Path) -> str:
    """SHA-256 hex digest of the five text files in ``folder`` (name, size and bytes of each, in order)."""
    digest = hashlib.sha256()
    for name in CUB_TEXT_FILES:
        data = (Path(folder) / name).read_bytes()
        digest.update(f"{name}:{len(data)};".encode())
        digest.update(data)
    return digest.hexdigest()


def read_cub(root: str | Path) -> CUBMetadata:
    """Read and cross-check the release under ``<root>/CUB_200_2011``.

    Checks: every line well formed (ids and class ids integers, boxes finite with positive size, split flag
    0 or 1), no duplicate ids, the same image ids in all four per-image files, class ids listed in
    ``classes.txt`` (which must number them ``1..K``), every listed image file present.

    Raises:
        DataError: missing files (see :func:`check_cub_files`), or one message naming the file, the line and
            the problem.
    """
    check_cub_files(root)
    folder = Path(root).expanduser() / CUB_FOLDER
    classes = _read_table(folder / "classes.txt", "<class_id> <name>", (int, str))
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise DataError(
            f"{folder / 'classes.txt'}: class ids must be 1..{len(class_ids)} without gaps, found "
            f"{_sample(sorted(set(class_ids) ^ set(range(1, len(class_ids) + 1))))} out of place; "
            f"re-extract {CUB_ARCHIVE}"
        )

    images_txt = folder / "images.txt"
    images = _read_table(images_txt, "<image_id> <relative path>", (int, str))
    if not images:
        raise DataError(f"{images_txt}: lists no images; re-extract {CUB_ARCHIVE}")
    tables = {
        "image_class_labels.txt": ("<image_id> <class_id>", (int, int)),
        "train_test_split.txt": ("<image_id> <1 train | 0 test>", (int, int)),
        "bounding_boxes.txt": ("<image_id> <x> <y> <width> <height>", (int, _finite, _finite, _finite, _finite)),
    }
    rows: dict[str, dict[int, tuple[int, tuple[Any, ...]]]] = {}
    for name, (layout, types) in tables.items():
        path = folder / name
        rows[name] = table = _read_table(path, layout, types)
        for image_id, (line, _) in table.items():
            if image_id not in images:
                raise DataError(f"{path}, line {line}: image id {image_id} is not listed in {images_txt}")
        absent = [image_id for image_id in images if image_id not in table]
        if absent:
            raise DataError(
                f"{path}: image id(s) {_sample(absent)} listed in {images_txt} (line {images[absent[0]][0]}) "
                f"have no line here; the files come from different releases: re-extract {CUB_ARCHIVE}"
            )

    for line, (class_id,) in rows["image_class_labels.txt"].values():
        if class_id not in classes:
            raise DataError(
                f"{folder / 'image_class_labels.txt'}, line {line}: class id {class_id} is not in classes.txt "
                f"(1..{len(classes)}); re-extract {CUB_ARCHIVE}"
            )
    for line, (flag,) in rows["train_test_split.txt"].values():
        if flag not in (0, 1):
            raise DataError(f"{folder / 'train_test_split.txt'}, line {line}: split flag {flag} is neither 1 nor 0")
    for line, (_, _, width, height) in rows["bounding_boxes.txt"].values():
        if width <= 0 or height <= 0:
            raise DataError(
                f"{folder / 'bounding_boxes.txt'}, line {line}: box width {width} / height {height} not > 0"
            )

    ids = list(images)
    paths = np.array([images[i][1][0] for i in ids], dtype=str)
    image_folder = folder / CUB_IMAGE_FOLDER
    missing = [n for n, path in enumerate(paths) if not (image_folder / path).is_file()]
    if missing:
        first = ids[missing[0]]
        raise DataError(
            f"{image_folder}: {len(missing)} of {len(ids)} images listed in {images_txt} are missing, e.g. "
            f"{image_folder / paths[missing[0]]} (image id {first}, line {images[first][0]}); "
            f"re-extract {CUB_ARCHIVE} into {folder.parent}"
        )

    def first_field(name: str) -> list[Any]:
        return [rows[name][i][1][0] for i in ids]

    return CUBMetadata(
        folder=folder,
        image_ids=np.array(ids, dtype=np.int64),
        paths=paths,
        labels=np.array(first_field("image_class_labels.txt"), dtype=np.int64) - 1,
        is_train=np.array(first_field("train_test_split.txt")) == 1,
        boxes=np.array([rows["bounding_boxes.txt"][i][1] for i in ids], dtype=np.float32).reshape(-1, 4),
        class_names=tuple(classes[c][1][0] for c in class_ids),
        checksum=cub_checksum(folder),
    )


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token} is not finite")
    return value


def _read_table(path: Path, layout: str, types: Sequence[Callable[[str], Any]]) -> dict[int, tuple[int, tuple]]:
    """``{id: (line number, other fields)}`` of a whitespace-separated file; the last field takes the rest of the line.

    Blank lines are skipped. A line with the wrong number of fields, a field that ``types`` rejects, or a
    repeated id raises a :class:`DataError` naming ``path``, the line and the expected ``layout``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)}); re-extract {CUB_ARCHIVE}") from exc
    table: dict[int, tuple[int, tuple]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split(maxsplit=len(types) - 1)
        try:
            if len(tokens) != len(types):
                raise ValueError(f"{len(tokens)} field(s) instead of {len(types)}")
            key, *values = (convert(token) for convert, token in zip(types, tokens, strict=True))
        except ValueError as exc:
            raise DataError(
                f"{path}, line {number}: expected '{layout}', got {line.strip()!r} ({exc}); re-extract {CUB_ARCHIVE}"
            ) from exc
        if key in table:
            raise DataError(f"{path}, line {number}: id {key} repeats line {table[key][0]}")
        table[key] = (number, tuple(values))
    return table


def _sample(values: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown if len(values) <= limit else f"{shown}, … ({len(values)} in total)"
