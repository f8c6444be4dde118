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

from typing import Any

from omegaconf import DictConfig, OmegaConf

from stn_repro.config import check, check_choice, check_number, check_positive_int, get_value
from stn_repro.data.colocalisation import PAPER_CANVAS, PAPER_PER_CLASS
from stn_repro.data.sources import DIGITS, NUM_CLASSES, SOURCES
from stn_repro.models.colocalisation import DESCRIPTORS
from stn_repro.tasks.base import Task, check_no_theta_supervision, options


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
    check_number(cfg, "system.margin", 0.0)
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


TASK = Task(validate, deviations)
