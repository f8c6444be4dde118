"""The co-localisation sets (appendix A.2): ``data.per_class`` training digits of every class, chosen with the fixed
``data.set_seed`` (the same images for every run seed), each placed at a random integer position in a
``data.canvas``² canvas (T: ``data.patches=0``) or with random crops of other digits of the set as clutter (TC), by
the ``TC(canvas, patches, patch_size)`` protocol of :mod:`stn_repro.data.distortions`. Co-localisation is
unsupervised on the set, so the same images are used for training and evaluation: the test loader is the training
set with its ground truth (no validation set); training batches hold the same number of images of every class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stn_repro.data.batches import EpochBatches
from stn_repro.data.cache import load_or_build
from stn_repro.data.distorted_mnist import DistortedMNISTDataModule
from stn_repro.data.distortions import GENERATION_CHUNK, generate, split_seed
from stn_repro.data.sources import NUM_CLASSES

PAPER_CANVAS = 84
PAPER_PER_CLASS = 100


def choose_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of every class in ``labels`` ``(N,)`` (0..9), chosen with ``seed``.

    Raises:
        ValueError: a class has fewer than ``per_class`` samples.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        if len(members) < per_class:
            raise ValueError(f"digit {digit} has {len(members)} training samples; data.per_class={per_class}")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


class ClassBalancedBatches(EpochBatches):
    """Training batches of ``per_class`` images of every class: ``(images (B, 1, H, W) float in [0, 1], labels
    (B,))`` grouped by class, each class's images in a fresh random order every epoch (seeded by ``seed`` and the
    epoch); an epoch ends when the smallest class runs out (the incomplete rest is dropped).

    Args:
        arrays: ``images`` ``uint8 (N, H, W)`` and ``labels`` ``(N,)``.
        per_class: images of each class per batch (>= 2: every image needs a positive of its class).
        device: where batches are built (``None``: CPU).
    """

    def __init__(
        self, arrays: dict[str, np.ndarray], per_class: int, seed: int = 0, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.images = torch.as_tensor(arrays["images"], device=device)
        self.labels = torch.as_tensor(arrays["labels"], device=device)
        self.members = [(self.labels == k).nonzero().squeeze(1).cpu() for k in torch.unique(self.labels).tolist()]
        self.per_class = per_class
        self.seed = seed

    def __len__(self) -> int:
        return min(len(m) for m in self.members) // self.per_class

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        orders = [m[torch.randperm(len(m), generator=generator)] for m in self.members]
        k = self.per_class
        for i in range(first, len(self)):
            index = torch.cat([order[i * k : (i + 1) * k] for order in orders]).to(self.images.device)
            yield self.images[index].float().div_(255.0)[:, None], self.labels[index]


class ColocalisationDataModule(DistortedMNISTDataModule):
    """The co-localisation set: ``per_class`` digits of every class, distorted once by ``TC(canvas, patches,
    patch_size)`` and cached; train = test = the set (test batches carry the truth: ``theta``, ``boxes``), no
    validation set. Training batches: :class:`ClassBalancedBatches` of ``batch_size // 10`` images per class.

    Args:
        canvas, patches, patch_size: the ``TC`` protocol's parameters.
        per_class: images per class in the set.
        set_seed: chooses the digits and their placement (keep it fixed across run seeds).
        seed: the run's seed (training batch order).
        Other arguments: see :class:`~stn_repro.data.distorted_mnist.DistortedMNISTDataModule`.
    """

    task = "colocalisation"

    def __init__(
        self,
        canvas: int = PAPER_CANVAS,
        patches: int = 0,
        patch_size: int = 6,
        per_class: int = PAPER_PER_CLASS,
        set_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        params = {"canvas": canvas, "patches": patches, "patch_size": patch_size}
        super().__init__("TC", params, test_seed=set_seed, val_size=0, return_truth=True, **kwargs)
        self.per_class = per_class
        if self.batch_size % NUM_CLASSES or self.batch_size < 2 * NUM_CLASSES:
            raise ValueError(f"batch_size must be a multiple of {NUM_CLASSES} and >= {2 * NUM_CLASSES}")

    def _split(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return super()._split("set")  # one set for training and testing

    def _load_split(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        digit_set = self._digits()
        index = choose_per_class(digit_set.train_labels, self.per_class, split_seed(self.test_seed, "choose", "coloc"))
        seed = split_seed(self.test_seed, "coloc-set", self.distortion.name)
        protocol = {
            **self.distortion.protocol(),
            "split": "coloc-set",
            "per_class": self.per_class,
            "seed": seed,
            "chunk_size": GENERATION_CHUNK,
        }
        images, labels = digit_set.train_images[index], digit_set.train_labels[index]
        return load_or_build(
            self.root,
            f"{self.digits}-coloc-p{self.distortion.patches}",
            protocol,
            digit_set.checksum,
            lambda: generate(self.distortion, images, labels, seed),
            metadata={"source": digit_set.metadata(), "count": len(labels)},
            log=self.log,
        )

    def model_inputs(self) -> dict[str, Any]:
        """The input shape, the class count and what the frozen embedding CNN is trained from (once, then cached):
        the resolved ``digits`` (:class:`~stn_repro.data.sources.DigitSet`), ``cache_root`` and ``log``."""
        return {**super().model_inputs(), "digits": self._digits(), "cache_root": self.root, "log": self.log}

    def train_dataloader(self) -> ClassBalancedBatches:
        if not self.splits:
            raise RuntimeError("call setup() before asking for a dataloader")
        return ClassBalancedBatches(self.splits["train"], self.batch_size // NUM_CLASSES, self.seed, self._device())
