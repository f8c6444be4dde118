"""CUB-200-2011 (Caltech-UCSD Birds): reading the official release and a LightningDataModule over it.

Data flow: :func:`check_cub_files` → :func:`read_cub` (the five text files, cross-checked) → :class:`CUBImages`
(JPEG decoding and :class:`CUBTransform` per sample, in DataLoader workers) → batches of
``(images, labels, boxes)``:

- ``images``: float32 ``(B, 3, S, S)``, RGB, ImageNet-normalised (``(x / 255 - mean) / std``), so a zero pixel
  is the mean colour, which is what a transformer's ``zeros`` padding writes outside the image;
- ``labels``: int64 ``(B,)``, ``class_id - 1`` in ``0..199``;
- ``boxes``: float32 ``(B, 4)``, the bird box after resize / crop / flip as ``(x0, y0, x1, y1)`` in the network
  input's normalised coordinates: -1 and +1 are the outer edges of the image (``align_corners=False``: pixel
  ``i``'s centre is at ``(2 i + 1) / S - 1``), clipped to ``[-1, 1]``. See :func:`box_to_normalised`.

Pixel coordinates are continuous with the origin at the image's top-left corner: pixel ``(row i, column j)``
covers ``[j, j + 1) × [i, i + 1)``; a CUB box ``x, y, w, h`` covers ``[x, x + w] × [y, y + h]``.

Splits: train / test as in ``train_test_split.txt`` (5,994 / 5,794); an optional validation set is a seeded,
class-stratified hold-out from the training images (the paper uses none).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from stn_repro.data.distortions import split_seed
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SOURCE_NAME = "cub-200-2011"
DATASET_NAME = "cub200"

# What a broken or unreadable image file may raise from PIL (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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


def box_to_normalised(boxes: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Pixel boxes ``(..., 4)`` as ``(x0, y0, x1, y1)`` → the same boxes in normalised coordinates, clipped.

    ``size`` is the image side ``S`` or ``(height, width)``. Pixel edges map linearly onto ``[-1, 1]``:
    ``u ↦ 2 u / S - 1``, so the image's outer edges are -1 and +1 and pixel ``i``'s centre ``i + 0.5`` lands at
    ``(2 i + 1) / S - 1``, the ``align_corners=False`` convention of ``affine_grid`` / ``grid_sample``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    scale = boxes.new_tensor([width, height, width, height])
    return (2 * boxes / scale - 1).clamp(-1.0, 1.0)


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file into an RGB PIL image (grayscale, CMYK, palette images are converted).

    Raises:
        DataError: naming the file, if it cannot be opened or decoded (missing, truncated, not an image).
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{path}: cannot decode image ({one_line(exc)}); replace it with an intact copy from {CUB_ARCHIVE}"
        ) from exc


class CUBTransform:
    """Resize the short side to ``resize``, crop ``image_size`` (random if ``train``, else central), optionally
    flip horizontally (``train`` and ``random_flip``), scale to ``[0, 1]`` and normalise with ``mean`` / ``std``.

    Called with an RGB PIL image and its box ``(x, y, w, h)`` in pixels; returns the image float32
    ``(3, S, S)`` and the box float32 ``(4,)`` as normalised ``(x0, y0, x1, y1)`` (:func:`box_to_normalised`).
    The box follows the image through every step (torchvision ``tv_tensors.BoundingBoxes``). Random draws use
    torch's global generator, which the DataLoader seeds in each worker from its own generator.
    """

    def __init__(
        self,
        image_size: int,
        resize: int,
        train: bool,
        random_flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if resize < image_size:
            raise ValueError(f"resize={resize} must be >= image_size={image_size} (the crop must fit)")
        self.image_size = image_size
        steps: list[v2.Transform] = [
            v2.ConvertBoundingBoxFormat("XYXY"),
            v2.Resize(resize, antialias=True),
            v2.RandomCrop(image_size) if train else v2.CenterCrop(image_size),
        ]
        if train and random_flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        self.transform = v2.Compose(steps)

    def __call__(self, image: Image.Image, box_xywh: Sequence[float]) -> tuple[Tensor, Tensor]:
        boxes = tv_tensors.BoundingBoxes(
            [list(box_xywh)], format="XYWH", canvas_size=(image.height, image.width), dtype=torch.float32
        )
        image, boxes = self.transform(image, boxes)
        return image.as_subclass(Tensor), box_to_normalised(boxes.as_subclass(Tensor)[0], self.image_size)


class CUBImages(Dataset):
    """One split: item ``i`` → ``(image float32 (3, S, S), label int64 (), box float32 (4,))`` (see module doc).

    Args:
        image_folder: the ``CUB_200_2011/images`` folder.
        paths: str ``(N,)`` relative to ``image_folder``.
        labels: int64 ``(N,)``.
        boxes: float32 ``(N, 4)`` as ``(x, y, w, h)`` pixels of the original image.
        transform: a :class:`CUBTransform`.
    """

    def __init__(
        self, image_folder: Path, paths: np.ndarray, labels: np.ndarray, boxes: np.ndarray, transform: CUBTransform
    ) -> None:
        self.image_folder = image_folder
        self.paths = np.asarray(paths, dtype=str)  # a numpy array, not a list: no copy-on-read in forked workers
        self.labels = np.asarray(labels, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        image, box = self.transform(load_rgb(self.image_folder / self.paths[index]), self.boxes[index].tolist())
        return image, torch.tensor(self.labels[index]), box


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


class CUBDataModule(pl.LightningDataModule):
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
    """

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
    ) -> None:
        super().__init__()
        if image_size < 1 or resize < image_size:
            raise ValueError(f"need 1 <= data.image_size <= data.resize, got {image_size} and {resize}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if not (0 <= val_size < 1 or (isinstance(val_size, int) and val_size >= 0)):
            raise ValueError(f"data.val_size must be an image count >= 0 or a fraction in [0, 1), got {val_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be None or >= 1, got {limit}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"data.mean and data.std need 3 values each, std > 0; got {mean} and {std}")
        self.root = Path(root)
        self.image_size = image_size
        self.resize = resize
        self.random_flip = random_flip
        self.val_size = val_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.limit = limit
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.log = log
        self.cub: CUBMetadata | None = None
        self.datasets: dict[str, CUBImages] = {}
        self.indices: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = {}

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

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cub = self._cub()
        train = np.flatnonzero(cub.is_train)
        n_val = int(round(self.val_size * len(train))) if isinstance(self.val_size, float) else int(self.val_size)
        if n_val >= len(train):
            raise ValueError(f"data.val_size={self.val_size} leaves no training images out of {len(train)}")
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

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self.datasets:
            raise RuntimeError("call setup() before asking for a dataloader")
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

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """The validation loader, or an empty list (no validation) when ``val_size`` is 0."""
        if self.datasets and not len(self.datasets["val"]):
            return []
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes listed in ``classes.txt`` (200 for the release)."""
        return len(self._cub().class_names)
