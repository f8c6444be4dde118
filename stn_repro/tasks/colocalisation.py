"""Co-localisation (appendix A.2): attention transformers that find the digit in sets of one class, without labels.

Data: for every digit class, ``data.per_class`` (paper: 100) training digits chosen with the fixed
``data.set_seed`` (the same images for every run seed), each placed at a random integer position in an 84×84 canvas
(T: ``data.patches=0``) or with 16 random 6×6 crops of other digits of the set as clutter (TC), by the
``TC(canvas, patches, patch_size)`` protocol of :mod:`stn_repro.data.distortions`. Co-localisation is unsupervised
on the set, so the same images are used for training and evaluation: the test loader is the training set with its
ground truth (no validation set).

Model: one attention transformer (scale + translation, 28×28 output) per class, trained jointly, each on its own
class's images only (:class:`~stn_repro.models.colocalisation.ColocalisationModel`); localisation net: the
paper's ST-CNN shape on the canvas max-pooled ×``model.localisation.downsample`` (our choice; the paper's is
conv 8@9×9 stride 4 → max-pool 2 → FC 8 → FC 8 → FC 3). The scale is learned below a ceiling that shrinks during
training (``model.scale``: 0.8 → 0.45 of the canvas' half-side over the first 80%) and every crop stays inside the
canvas (our choice: without it the crops zoom out or drift onto blank canvas, see
``results/colocalisation_landscape.md``).
Embeddings: the Table 1 CNN trained here on the training digits at random poses (``model.embedding``), cached
under ``<data root>/cache/``; its descriptor is chosen by ``model.embedding.descriptor``. Loss, metrics and figure:
:mod:`stn_repro.systems.colocalisation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from stn_repro.config import check, check_choice, check_number, check_positive_int, get_value
from stn_repro.data.batches import EpochBatches
from stn_repro.data.cache import load_or_build
from stn_repro.data.distorted_mnist import DistortedMNISTDataModule
from stn_repro.data.distortions import GENERATION_CHUNK, generate, split_seed
from stn_repro.data.sources import DIGITS, NUM_CLASSES, SOURCES
from stn_repro.models.colocalisation import DESCRIPTORS, ColocalisationModel, load_or_train_embedding_cnn
from stn_repro.systems.colocalisation import ColocalisationSystem
from stn_repro.tasks.base import Task, check_no_theta_supervision, options, system_settings

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

    def train_dataloader(self) -> ClassBalancedBatches:
        if not self.splits:
            raise RuntimeError("call setup() before asking for a dataloader")
        return ClassBalancedBatches(self.splits["train"], self.batch_size // NUM_CLASSES, self.seed, self._device())


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_choice(cfg, "model.kind", ("coloc",))
    check_choice(cfg, "transformer.family", ("attention",))
    check_choice(cfg, "data.source", SOURCES)
    check_choice(cfg, "data.digits", DIGITS)
    check_positive_int(cfg, "data.canvas", minimum=28)
    check_positive_int(cfg, "data.patches", minimum=0)
    check_positive_int(cfg, "data.patch_size")
    check(get_value(cfg, "data.patch_size") <= 28, "data.patch_size", get_value(cfg, "data.patch_size"), "<= 28")
    check_positive_int(cfg, "data.per_class", minimum=2)
    check_positive_int(cfg, "data.set_seed", minimum=0)
    batch = get_value(cfg, "profile.batch_size")
    check(
        isinstance(batch, int) and batch % NUM_CLASSES == 0 and batch >= 2 * NUM_CLASSES,
        "profile.batch_size",
        batch,
        f"a multiple of {NUM_CLASSES} that is >= {2 * NUM_CLASSES} (class-balanced batches, 2+ images per class)",
    )
    previous, bound = 0.0, "0 < floor < ceiling_end <= ceiling_start <= 1"
    for key in ("floor", "ceiling_end", "ceiling_start"):
        value = get_value(cfg, f"model.scale.{key}")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        check(number and (previous < value <= 1 if key != "ceiling_start" else previous <= value <= 1),
              f"model.scale.{key}", value, bound)  # fmt: skip
        previous = value
    until = get_value(cfg, "model.scale.ceiling_until")
    check(isinstance(until, int | float) and 0 < until <= 1, "model.scale.ceiling_until", until, "in (0, 1]")
    check_number(cfg, "model.init_weight_std", 0.0)
    check_positive_int(cfg, "model.candidates")
    check_number(cfg, "model.margin", 0.0)
    for key in ("iterations", "batch_size", "width", "seed"):
        check_positive_int(cfg, f"model.embedding.{key}", minimum=0 if key == "seed" else 1)
    check_number(cfg, "model.embedding.lr", 0.0, strict=True)
    check_number(cfg, "model.embedding.momentum", 0.0)
    check_number(cfg, "model.embedding.rotation", 0.0)
    check_number(cfg, "model.embedding.translation", 0.0)
    sizes = get_value(cfg, "model.embedding.scale")
    check(
        OmegaConf.is_list(sizes)
        and len(sizes) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in sizes)
        and 0 < sizes[0] <= sizes[1],
        "model.embedding.scale",
        sizes,
        "[smallest, largest] digit size, 0 < smallest <= largest",
    )
    background = get_value(cfg, "model.embedding.background")
    number = isinstance(background, int | float) and not isinstance(background, bool)
    check(number and 0 <= background < 1, "model.embedding.background", background, "a fraction in [0, 1)")
    check_positive_int(cfg, "model.embedding.background_patches", minimum=0)
    check_choice(cfg, "model.embedding.descriptor", DESCRIPTORS)


def data(cfg: DictConfig) -> pl.LightningDataModule:
    d = cfg.data
    return ColocalisationDataModule(
        canvas=d.canvas,
        patches=d.patches,
        patch_size=d.patch_size,
        per_class=d.per_class,
        set_seed=d.set_seed,
        root=d.root,
        source=d.source,
        digits=d.digits,
        seed=cfg.seed,
        batch_size=cfg.profile.batch_size,
        device_resident=d.device_resident,
    )


def model(cfg: DictConfig, data: Any) -> tuple[nn.Module, str]:
    m = cfg.model
    digit_set = data._digits()
    embedding = load_or_train_embedding_cnn(
        data.root, digit_set.checksum, digit_set.train_images, digit_set.train_labels, options(m.embedding), data.log
    )
    model = ColocalisationModel(
        data.input_shape,
        embedding,
        num_classes=NUM_CLASSES,
        candidates=m.candidates,
        scale=options(m.scale),
        init_weight_std=m.init_weight_std,
        localisation=options(m.localisation),
    )
    return model, f"{NUM_CLASSES} x {m.candidates} attention transformers + frozen embedding CNN"


def system(cfg: DictConfig, model: nn.Module, data: Any, figures_dir: Path) -> ColocalisationSystem:
    return ColocalisationSystem(
        model, **system_settings(cfg, figures_dir), iterations=cfg.profile.iterations, margin=cfg.model.margin
    )


CANDIDATES_NOTE = (
    "{} independently initialised transformers per class trained side by side; each class keeps the one with the "
    "lowest moving-average training loss (no labels used; paper: one)"
)
DESCRIPTOR_NOTES = {
    "activations": "e(.) = its two hidden layers' activations and logits concatenated (the paper's)",
    "activations_unit": "e(.) = its two hidden layers' activations and logits concatenated, scaled to unit length "
    "(paper: unscaled)",
    "probabilities": "e(.) = its softmax class probabilities (paper: the activations of its three layers)",
}


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    d, m, p = cfg.data, cfg.model, cfg.profile
    notes = []
    if not meta["full_dataset"]:
        notes.append(f"data: sets drawn from {meta['source']} training digits, not the full 60,000-digit MNIST")
    if d.canvas != PAPER_CANVAS or d.per_class != PAPER_PER_CLASS:
        notes.append(f"set: {d.per_class} images per class on {d.canvas}px canvases (paper: 100 on 84px)")
    e, sc = m.embedding, m.scale
    optimiser = f"{cfg.optim.name} lr {cfg.optim.lr * cfg.optim.loc_lr_mult:g}" + (
        f" momentum {cfg.optim.momentum:g}" if cfg.optim.name != "adam" else ""
    )
    decay = f", x{p.lr_gamma} every {p.lr_step_every:,}" if p.lr_step_every < p.iterations else ""
    notes += [
        f"schedule (not given by the paper): {p.iterations:,} iterations of {p.batch_size // NUM_CLASSES} images per "
        f"class, {optimiser}{decay}" + (" (paper: SGD)" if cfg.optim.name != "sgd" else ""),
        f"embedding: the Table 1 CNN (width {e.width}) trained {e.iterations} iterations on the training digits "
        f"(the sets' digits included) at random poses: rotation ±{e.rotation:g} deg, size {e.scale[0]:g}-"
        f"{e.scale[1]:g}, shift ±{e.translation:g} (the paper's CNN was trained on Sect. 4.1's distorted digits, "
        "which distortion is not given); "
        + (
            f"{e.background:.0%} of each batch digit-free crops (half blank, half {e.background_patches} clutter "
            "patches) trained towards no class (ours: else a blank crop reads '1' and digit 1 is never localised); "
            if e.background
            else ""
        )
        + DESCRIPTOR_NOTES[e.descriptor],
        f"localisation net (paper: conv 8@9x9 stride 4-pool-FC 8-FC 8): {options(m.localisation)}",
        f"attention scale learned in [{sc.floor:g}, ceiling], the ceiling lowered from {sc.ceiling_start:g} to "
        f"{sc.ceiling_end:g} over the first {sc.ceiling_until:.0%} of training, crops kept inside the canvas; start: "
        "centred, near the ceiling (paper: unbounded attention, start not given)",
        "10 per-class transformers trained jointly in class-balanced batches (same gradients as 10 separate runs); "
        "positives = every other image of the class in the batch, negative = a uniformly placed 28x28 crop",
        *([CANDIDATES_NOTE.format(m.candidates)] if m.candidates > 1 else []),
        "true box = the digit's 28x28 placement frame (IoU with the ink box: test/localised_ink)",
        "co-localisation is unsupervised on the set: the same images are trained on and evaluated",
    ]
    return notes


TASK = Task(validate, data, model, system, deviations)
