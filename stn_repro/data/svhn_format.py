"""The official SVHN "format 1" release on disk: its folders, the ``digitStruct.mat`` reader and checksums.

Layout: ``<root>/svhn/{train,test,extra}/`` (``1.png, 2.png, ...`` and ``digitStruct.mat``, as extracted from the
official ``*.tar.gz``). A digit box is ``(left, top, width, height)`` in pixels as stored in ``digitStruct.mat``,
read as 0-based pixel edges (the box covers ``[left, left + width) × [top, top + height)``). Label 10 in the files
means digit 0.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stn_repro.data.errors import DataError, one_line
from stn_repro.data.workers import Progress, run_tasks

__all__ = [
    "DIGIT_STRUCT",
    "FULL_SIZES",
    "SVHN_URL",
    "SVHNEntry",
    "check_svhn_files",
    "digit_struct_size",
    "read_digit_struct",
    "split_checksum",
]

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
DIGIT_STRUCT = "digitStruct.mat"
#: Number of images of each official split of format 1.
FULL_SIZES = {"train": 33_402, "test": 13_068, "extra": 202_353}

_FIELDS = ("label", "left", "top", "width", "height")
_READ_CHUNK = 2_000  # digitStruct entries per reading task


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
    progress = Progress(f"svhn {path.parent.name}: reading {path.name}", count, log)
    entries: list[SVHNEntry] = []
    for part in run_tasks(_read_range, tasks, workers):
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


# -- the release's files -----------------------------------------------------------------------------------------


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


def split_checksum(folder: Path) -> str:
    """SHA-256 of ``digitStruct.mat`` and the number of PNGs in ``folder``."""
    digest = hashlib.sha256()
    with (folder / DIGIT_STRUCT).open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    pngs = sum(1 for entry in os.scandir(folder) if entry.name.endswith(".png"))
    digest.update(f";{pngs} png".encode())
    return digest.hexdigest()
