"""Digits written as the four MNIST IDX files: what ``data.source=idx`` and ``torchvision.datasets.MNIST`` read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format): magic ``0x0000 08 <ndim>``, big-endian int32 sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_folder(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Write images ``(N, H, W)`` and labels as the four MNIST IDX files in ``root/MNIST/raw``; returns ``root``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root
