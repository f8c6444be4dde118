"""CUB-200-2011 images as network inputs: decoding, resize / crop / flip with the bird box, the per-split dataset.

:class:`CUBImages` (JPEG decoding and :class:`CUBTransform` per sample, in DataLoader workers) → samples
``(image, label, box)``:

- ``image``: float32 ``(3, S, S)``, RGB, ImageNet-normalised (``(x / 255 - mean) / std``), so a zero pixel is the
  mean colour, which is what a transformer's ``zeros`` padding writes outside the image;
- ``label``: int64 ``()``, ``class_id - 1`` in ``0..199``;
- ``box``: float32 ``(4,)``, the bird box after resize / crop / flip as ``(x0, y0, x1, y1)`` in the network
  input's normalised coordinates: -1 and +1 are the outer edges of the image (``align_corners=False``: pixel
  ``i``'s centre is at ``(2 i + 1) / S - 1``), clipped to ``[-1, 1]``. See :func:`box_to_normalised`.

Pixel coordinates are continuous with the origin at the image's top-left corner: pixel ``(row i, column j)``
covers ``[j, j + 1) × [i, i + 1)``; a CUB box ``x, y, w, h`` covers ``[x, x + w] × [y, y + h]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from stn_repro.data.cub_format import CUB_ARCHIVE
from stn_repro.data.errors import DataError, one_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What a broken or unreadable image file may raise from PIL (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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
