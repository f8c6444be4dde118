"""Recurrent spatial transformers on 3-digit cluttered MNIST sequences (Sønderby et al. 2015, arXiv:1509.05329):
CNN, CNN+SPN and RNN-SPN, per-digit error.

Protocol (PAPER.md; details from the authors' Lasagne code, github.com/skaae/recurrent-spatial-transformer-code):
3 digits on a 100×100 canvas with 8 clutter patches of 9×9 (the ``SEQ`` distortion); RMSprop, lr 5e-4, batch 100,
gradient clipping to a total norm of 5 [code]; up to 300 epochs of 600 iterations with lr ÷1.5 every 12 epochs
from epoch 32 and early stopping (patience 50 epochs) [code]. The paper profile runs the 180,000 iterations
without early stopping; everything this implementation does differently is listed by :func:`deviations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stn_repro.config import (
    check,
    check_choice,
    check_transformer_family,
    get_value,
)
from stn_repro.models.recurrent import SEQ_MODEL_KINDS, classifier_output_size
from stn_repro.schema import check_node
from stn_repro.tasks.base import DigitData, Task, check_no_theta_supervision, momentum, optimiser_name
from stn_repro.transformers import FAMILIES

PAPER_ITERATIONS = 180_000  # 300 epochs x 600 iterations (60,000 sequences at batch 100) [code]
PAPER_BATCH_SIZE = 100
PAPER_LR = 5e-4
PAPER_GRAD_CLIP = 5.0  # total gradient norm [code]
PAPER_RMSPROP = {
    "alpha": 0.9,
    "eps": 1e-6,
}  # Lasagne's rmsprop defaults (rho, epsilon) [code]; conf/optimizer/rmsprop.yaml
PAPER_MILESTONES = [600 * epoch for epoch in range(32, 300, 12)]  # lr /1.5 from these iterations [code]
PAPER_LR_GAMMA = 1 / 1.5
PAPER_CHANNELS = {"cnn": [96, 96, 96], "cnn_spn": [96, 96, 96], "rnn_spn": [32, 32, 32]}  # classifier convs [code]
PAPER_SCHEDULE = (
    "up to 180,000 iterations (300 epochs of 600) at batch 100, lr /1.5 every 12 epochs from epoch 32, early "
    "stopping after 50 epochs without a better validation accuracy"
)


@dataclass
class SequenceModel:
    """``model`` of the digit-sequence cells (:func:`~stn_repro.models.recurrent.build_sequence_model`)."""

    _target_: str
    kind: str
    family: str | None
    family_options: dict[str, Any]
    size: int
    channels: list[int]
    hidden: int
    loc_channels: list[int] | None = None
    loc_hidden: int | None = None

    def __post_init__(self) -> None:
        check(self.kind in SEQ_MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(SEQ_MODEL_KINDS)}")
        check(self.size >= 1, "model.size", self.size, "an integer >= 1")
        check(self.hidden >= 1, "model.hidden", self.hidden, "an integer >= 1")
        _check_channels("model.channels", self.channels)
        layers = len(self.channels)
        check(classifier_output_size(self.size, layers) > 0, "model.size", self.size,
              f"large enough for {layers} conv layers")  # fmt: skip
        if self.kind != "cnn":
            _check_channels("model.loc_channels", self.loc_channels)
            check(self.loc_hidden is not None and self.loc_hidden >= 1, "model.loc_hidden", self.loc_hidden,
                  "an integer >= 1")  # fmt: skip


def _check_channels(key: str, value: list[int] | None) -> None:
    ok = value is not None and len(value) > 0 and all(c > 0 for c in value)
    check(ok, key, value, "a non-empty list of positive channel counts")


def validate(cfg: DictConfig) -> None:
    check_no_theta_supervision(cfg)
    check_node(cfg, "data", DigitData)
    check_choice(cfg, "data.distortion", ("SEQ",))
    check_node(cfg, "model", SequenceModel)
    families_2d = sorted(name for name, family in FAMILIES.items() if family.spatial_dims == 2)
    check_transformer_family(cfg, get_value(cfg, "model.kind") != "cnn", families_2d)


def deviations(cfg: DictConfig, meta: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    notes = []
    if not meta["full_dataset"]:
        notes.append(
            f"data: {meta['source']} digits ({sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} "
            "test sequences), not sequences of the full 60,000/10,000 MNIST"
        )
    if sizes["val"]:
        notes.append(
            f"{sizes['val']:,} training sequences held out for validation (authors: a separate 10,000-sequence set)"
        )
    notes.append(
        "canvas layout: each digit in its own third of the canvas at an independent random height (authors: 3 "
        "adjacent digits at one random horizontal offset, heights along a random slope)"
    )
    p = cfg.profile
    milestones = list(p.lr_milestones) if p.get("lr_milestones") else None
    paper = (PAPER_ITERATIONS, PAPER_BATCH_SIZE, PAPER_MILESTONES)
    if (p.iterations, p.batch_size, milestones) != paper or abs(p.lr_gamma - PAPER_LR_GAMMA) > 1e-3:
        steps = (
            f"at {len(milestones)} milestones from {milestones[0]:,}" if milestones else f"every {p.lr_step_every:,}"
        )
        notes.append(
            f"schedule: {p.iterations:,} iterations at batch {p.batch_size}, lr x{p.lr_gamma:.3g} {steps} "
            f"(authors: {PAPER_SCHEDULE})"
        )
    notes.append("the model after the last iteration is tested (authors: early stopping on validation accuracy)")
    name, lr, loc_lr_mult = optimiser_name(cfg), cfg.system.optimizer.lr, cfg.system.loc_lr_mult
    if name != "rmsprop" or lr != PAPER_LR or momentum(cfg):
        notes.append(f"optimiser {name}, lr {lr}, momentum {momentum(cfg)} (paper: RMSprop, lr 5e-4)")
    smoothing = {key: cfg.system.optimizer.get(key) for key in PAPER_RMSPROP}
    if name == "rmsprop" and smoothing != PAPER_RMSPROP:
        notes.append(f"RMSprop alpha {smoothing['alpha']}, eps {smoothing['eps']} (authors: Lasagne's 0.9, 1e-6)")
    if loc_lr_mult != 1.0 and cfg.model.kind != "cnn":
        notes.append(f"localisation nets at {loc_lr_mult:g}x the base learning rate (authors: not stated; ours)")
    clip = cfg.trainer.get("gradient_clip_val") or 0.0
    if clip != PAPER_GRAD_CLIP:
        notes.append(f"gradient clipping to a total norm of {clip or 'none'} (authors' code: 5)")
    if cfg.model.kind == "rnn_spn":
        notes.append("no element-wise gradient clipping to [-1, 1] (the authors' RNN-SPN code clips before the norm)")
    channels, paper_channels = list(cfg.model.channels), PAPER_CHANNELS[cfg.model.kind]
    if channels != paper_channels:
        notes.append(f"classifier conv channels {channels} (authors: {paper_channels})")
    if cfg.model.kind == "cnn":
        notes.append(
            f"CNN architecture a guess (no code published): the CNN+SPN's classifier on the canvas resized to "
            f"{cfg.model.size}x{cfg.model.size}"
        )
    notes.append(
        "loss: sum of the per-position cross-entropies (authors: their mean); PyTorch's default weight "
        "initialisation (authors: Glorot uniform)"
    )
    if cfg.data.resample_every_epoch:
        notes.append("training sequences re-drawn every epoch (new partner digits, positions and clutter)")
    return notes


TASK = Task(validate, deviations)
