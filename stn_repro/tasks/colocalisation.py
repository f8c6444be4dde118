"""Co-localisation (appendix A.2): the checks across keys and the protocol's deviations.

Data (:mod:`stn_repro.data.colocalisation`): per digit class ``data.per_class`` (paper: 100) training digits on an
84×84 canvas, with (TC) or without (T) clutter; trained on and evaluated on the same set.
Model (:class:`~stn_repro.models.colocalisation.ColocalisationModel`): one attention transformer (scale +
translation, 28×28 output) per class, trained jointly, each on its own class's images only; localisation net: the
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

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.config import check, check_choice, check_number, get_value
from stn_repro.data.colocalisation import PAPER_CANVAS, PAPER_PER_CLASS
from stn_repro.data.distortions import DIGIT_SIZE
from stn_repro.data.sources import DIGITS, NUM_CLASSES, SOURCES
from stn_repro.models.colocalisation import DESCRIPTORS
from stn_repro.schema import check_node
from stn_repro.tasks.base import ConvLocalisation, Task, check_no_theta_supervision, momentum, optimiser_name, options


@dataclass
class ColocalisationData:
    """``data`` of the co-localisation cells (:class:`~stn_repro.data.colocalisation.ColocalisationDataModule`)."""

    _target_: str
    name: str
    canvas: int
    patches: int
    patch_size: int
    per_class: int
    set_seed: int
    root: str
    source: str
    digits: str
    device_resident: bool

    def __post_init__(self) -> None:
        check(self.canvas >= DIGIT_SIZE, "data.canvas", self.canvas, f"an integer >= {DIGIT_SIZE}")
        check(self.patches >= 0, "data.patches", self.patches, "an integer >= 0")
        check(1 <= self.patch_size <= DIGIT_SIZE, "data.patch_size", self.patch_size, f"an integer in 1..{DIGIT_SIZE}")
        check(self.per_class >= 2, "data.per_class", self.per_class, "an integer >= 2")
        check(self.set_seed >= 0, "data.set_seed", self.set_seed, "an integer >= 0")
        check(self.source in SOURCES, "data.source", self.source, f"one of {', '.join(SOURCES)}")
        check(self.digits in DIGITS, "data.digits", self.digits, f"one of {', '.join(DIGITS)}")


@dataclass
class AttentionScale:
    """``model.scale``: the attention half-side, learned in ``[floor, ceiling]``, the ceiling lowered from
    ``ceiling_start`` to ``ceiling_end`` over the fraction ``ceiling_until`` of training."""

    floor: float
    ceiling_start: float
    ceiling_end: float
    ceiling_until: float

    def __post_init__(self) -> None:
        bound = "0 < floor < ceiling_end <= ceiling_start <= 1"
        check(0 < self.floor < 1, "model.scale.floor", self.floor, bound)
        check(self.floor < self.ceiling_end <= 1, "model.scale.ceiling_end", self.ceiling_end, bound)
        check(self.ceiling_end <= self.ceiling_start <= 1, "model.scale.ceiling_start", self.ceiling_start, bound)
        check(0 < self.ceiling_until <= 1, "model.scale.ceiling_until", self.ceiling_until, "in (0, 1]")


@dataclass
class EmbeddingSettings:
    """``model.embedding``: the frozen embedding CNN and how it is trained (once, then cached)."""

    width: int
    descriptor: str
    iterations: int
    batch_size: int
    lr: float
    momentum: float
    seed: int
    rotation: float
    scale: list[float]
    translation: float
    background: float
    background_patches: int

    def __post_init__(self) -> None:
        for key in ("width", "iterations", "batch_size"):
            check(getattr(self, key) >= 1, f"model.embedding.{key}", getattr(self, key), "an integer >= 1")
        check(self.seed >= 0, "model.embedding.seed", self.seed, "an integer >= 0")
        check(self.descriptor in DESCRIPTORS, "model.embedding.descriptor", self.descriptor,
              f"one of {', '.join(DESCRIPTORS)}")  # fmt: skip
        check(self.lr > 0, "model.embedding.lr", self.lr, "a number > 0")
        for key in ("momentum", "rotation", "translation"):
            check(getattr(self, key) >= 0, f"model.embedding.{key}", getattr(self, key), "a number >= 0")
        check(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], "model.embedding.scale", self.scale,
              "[smallest, largest] digit size, 0 < smallest <= largest")  # fmt: skip
        check(0 <= self.background < 1, "model.embedding.background", self.background, "a fraction in [0, 1)")
        check(self.background_patches >= 0, "model.embedding.background_patches", self.background_patches,
              "an integer >= 0")  # fmt: skip


@dataclass
class ColocalisationModelNode:
    """``model`` of the co-localisation cells (:func:`~stn_repro.models.colocalisation.colocalisation_model`)."""

    _target_: str
    kind: str
    localisation: ConvLocalisation
    scale: AttentionScale
    candidates: int
    init_weight_std: float
    embedding: EmbeddingSettings

    def __post_init__(self) -> None:
        check(self.kind == "coloc", "model.kind", self.kind, "coloc")
        check(self.candidates >= 1, "model.candidates", self.candidates, "an integer >= 1")
        check(self.init_weight_std >= 0, "model.init_weight_std", self.init_weight_std, "a number >= 0")


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_node(cfg, "data", ColocalisationData)
    check_node(cfg, "model", ColocalisationModelNode)
    check_choice(cfg, "transformer.family", ("attention",))
    batch = get_value(cfg, "profile.batch_size")
    check(
        isinstance(batch, int) and batch % NUM_CLASSES == 0 and batch >= 2 * NUM_CLASSES,
        "profile.batch_size",
        batch,
        f"a multiple of {NUM_CLASSES} that is >= {2 * NUM_CLASSES} (class-balanced batches, 2+ images per class)",
    )
    check_number(cfg, "system.margin", 0.0)


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
    name = optimiser_name(cfg)
    optimiser = f"{name} lr {cfg.system.optimizer.lr * cfg.system.loc_lr_mult:g}" + (
        f" momentum {momentum(cfg):g}" if name != "adam" else ""
    )
    decay = f", x{p.lr_gamma} every {p.lr_step_every:,}" if p.lr_step_every < p.iterations else ""
    notes += [
        f"schedule (not given by the paper): {p.iterations:,} iterations of {p.batch_size // NUM_CLASSES} images per "
        f"class, {optimiser}{decay}" + (" (paper: SGD)" if name != "sgd" else ""),
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


TASK = Task(validate, deviations)
