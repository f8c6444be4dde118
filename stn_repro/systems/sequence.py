"""Multi-digit sequence recognition (SVHN, Table 2): a length head and one digit head per position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stn_repro.systems.classification import ClassificationSystem

BLANK = 10  # the "no digit" class of positions after the sequence's end (stn_repro.data.svhn_preprocess.BLANK)


def sequence_lengths(labels: Tensor) -> Tensor:
    """Lengths ``(B,)`` of label sequences ``(B, L)`` whose positions after the end hold :data:`BLANK`."""
    return (labels != BLANK).sum(1)


def predict_sequences(length_logits: Tensor, digit_logits: Tensor) -> Tensor:
    """Predicted labels ``(B, L)``: the most likely length, then the most likely digit at each position before it
    (Goodfellow et al.'s decoding); positions from the predicted length on are :data:`BLANK`.

    Args:
        length_logits: ``(B, L)`` over lengths ``1..L``.
        digit_logits: ``(B, L, 11)`` over digits 0-9 and blank.
    """
    lengths = length_logits.argmax(1) + 1
    digits = digit_logits[..., :BLANK].argmax(2)
    positions = torch.arange(digits.shape[1], device=digits.device)
    return torch.where(positions[None] < lengths[:, None], digits, torch.full_like(digits, BLANK))


class SequenceSystem(ClassificationSystem):
    """Training of a ``(length_logits, digit_logits)`` model on labels ``(B, L)`` (digits, then :data:`BLANK`).

    Loss: cross-entropy of the length head plus that of every digit head, blanks included (the "no digit" class).
    Error: sequence error in %, a number counting as right only when every digit and the length are right.
    Other arguments: see :class:`ClassificationSystem`.
    """

    def loss(self, outputs: tuple[Tensor, Tensor], labels: Tensor) -> Tensor:
        length_logits, digit_logits = outputs
        length_loss = F.cross_entropy(length_logits, sequence_lengths(labels) - 1)
        digit_loss = F.cross_entropy(digit_logits.flatten(0, 1), labels.flatten(), reduction="sum") / len(labels)
        return length_loss + digit_loss

    def wrong(self, outputs: tuple[Tensor, Tensor], labels: Tensor) -> Tensor:
        return (predict_sequences(*outputs) != labels).any(1).float()
