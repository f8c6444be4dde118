"""Multi-digit classification with one softmax per position (Sønderby et al.'s 3-digit cluttered MNIST sequences).

The model maps images to logits ``(B, L, K)``; the labels are ``(B, L)`` digits. The paper's metric is the
per-digit error: :meth:`DigitSequenceSystem.wrong` returns each sample's fraction of wrong digits, whose mean over
samples is exactly the per-digit error because every sample has ``L`` digits (``val/err``, ``test/err``). The test
pass also logs the sequence error (``test/seq_err``: a sample counts as wrong when any digit is).

Diagnostics of the RNN-SPN's recurrent transformer (a ``SharedLocalisationTransformers`` emitting one θ per step):
θ statistics per step (``theta/step<i>/...``; the base class's statistics cover the plain ``SpatialTransformer``s,
e.g. the CNN+SPN's) and an image grid of each canvas followed by its ``L`` glimpses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor
from torchvision.utils import make_grid

from stn_repro.systems.classification import ClassificationSystem
from stn_repro.transformers import SharedLocalisationTransformers, TransformFamily
from stn_repro.transformers.families import MatrixFamily

GRID_IMAGES = 8  # canvases in the glimpse grid


def digit_errors(logits: Tensor, labels: Tensor) -> Tensor:
    """Wrong digits ``(B, L)`` as floats (1: wrong) of logits ``(B, L, K)`` against labels ``(B, L)``."""
    return (logits.argmax(2) != labels).float()


def theta_statistics(theta: Tensor, family: TransformFamily) -> dict[str, Tensor]:
    """Batch means of θ ``(B, P)``: distance to the identity and, for 2D matrix families, the determinant, the
    scale (√|det|) and the translation ``tx``, ``ty`` (normalised coordinates)."""
    stats = {"dist_identity": (theta - family.identity(1, device=theta.device)).norm(dim=1).mean()}
    if isinstance(family, MatrixFamily) and family.spatial_dims == 2:
        matrix = family.matrix(theta)
        det = torch.linalg.det(matrix[:, :2, :2])
        stats.update(
            det=det.mean(), scale=det.abs().sqrt().mean(), tx=matrix[:, 0, -1].mean(), ty=matrix[:, 1, -1].mean()
        )
    return stats


class DigitSequenceSystem(ClassificationSystem):
    """Training of a model with logits ``(B, L, K)`` on labels ``(B, L)``.

    Loss: the sum over positions of the cross-entropies, averaged over the batch (Sønderby et al.'s code averages
    over positions too, a constant factor 1/L). Error: per-digit error in %; the test pass adds ``test/seq_err``.
    Arguments: see :class:`ClassificationSystem`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.test_sequence_error = torchmetrics.MeanMetric()

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="sum") / len(labels)

    def wrong(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Fraction of wrong digits of each sample ``(B,)``; its mean over samples is the per-digit error."""
        return digit_errors(outputs, labels).mean(1)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        errors = digit_errors(self.model(batch[0]), batch[1])
        self.test_error.update(errors.mean(1))
        self.test_sequence_error.update(errors.amax(1))

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log("test/seq_err", 100.0 * self.test_sequence_error.compute())
        self.test_sequence_error.reset()

    # -- recurrent transformer diagnostics -----------------------------------------------------------------------

    def _recurrent_transformers(self) -> list[tuple[str, SharedLocalisationTransformers]]:
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, SharedLocalisationTransformers)]

    def _log_theta(self) -> None:
        super()._log_theta()
        recurrent = self._recurrent_transformers()
        for name, module in recurrent:
            if module.theta is None:
                continue
            prefix = "theta/" if len(recurrent) == 1 else f"theta/{name}/"
            theta = module.theta.detach().float()
            for step in range(theta.shape[1]):
                stats = theta_statistics(theta[:, step], module.family)
                self.log_dict({f"{prefix}step{step}/{key}": value for key, value in stats.items()})

    def transformed_grid(self, images: Tensor) -> Tensor | None:
        """Each canvas followed by its glimpses (one row per canvas, up to 8 canvases) for a model with a recurrent
        transformer (``model.transformers``); otherwise the base class's input/transformed grid."""
        transformers = getattr(self.model, "transformers", None)
        if not isinstance(transformers, SharedLocalisationTransformers):
            return super().transformed_grid(images)
        images = images[:GRID_IMAGES]
        with torch.no_grad():
            glimpses = [
                F.interpolate(g, size=images.shape[-2:], mode="bilinear", align_corners=False)
                for g in transformers(images)
            ]
        rows = torch.stack([images, *glimpses], dim=1)
        return make_grid(rows.flatten(0, 1).clamp(0, 1), nrow=rows.shape[1], padding=2, pad_value=0.5)
