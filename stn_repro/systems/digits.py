"""Multi-digit classification with one softmax per position (Sønderby et al.'s 3-digit cluttered MNIST sequences).

The model maps images to logits ``(B, L, K)``; the labels are ``(B, L)`` digits. The paper's metric is the
per-digit error: :meth:`DigitSequenceSystem.wrong` returns each sample's fraction of wrong digits, whose mean over
samples is exactly the per-digit error because every sample has ``L`` digits (``val/err``, ``test/err``). The test
pass also logs the sequence error (``test/seq_err``: a sample counts as wrong when any digit is) and keeps which
test digits were wrong (``test_wrong``, ``(N·L,)`` sample-major), the per-digit outcomes of the claims' paired tests.

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

from stn_repro.systems.classification import ClassificationSystem, theta_statistics
from stn_repro.transformers import SharedLocalisationTransformers

GRID_IMAGES = 8  # canvases in the glimpse grid


def digit_errors(logits: Tensor, labels: Tensor) -> Tensor:
    """Wrong digits ``(B, L)`` as floats (1: wrong) of logits ``(B, L, K)`` against labels ``(B, L)``."""
    return (logits.argmax(2) != labels).float()


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
        self._test_wrong.append(errors.flatten().bool().cpu())  # per digit, sample-major: the claims' paired tests

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log("test/seq_err", 100.0 * self.test_sequence_error.compute())
        self.test_sequence_error.reset()

    # -- recurrent transformer diagnostics -----------------------------------------------------------------------

    def _recurrent_transformers(self) -> list[tuple[str, SharedLocalisationTransformers]]:
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, SharedLocalisationTransformers)]

    def theta_metrics(self) -> dict[str, Tensor]:
        """The base class's θ statistics and, per step of each recurrent transformer, ``theta/step<i>/<stat>``."""
        metrics = super().theta_metrics()
        recurrent = self._recurrent_transformers()
        for name, module in recurrent:
            if module.theta is None:
                continue
            prefix = "theta/" if len(recurrent) == 1 else f"theta/{name}/"
            theta = module.theta.detach().float()
            for step in range(theta.shape[1]):
                stats = theta_statistics(theta[:, step], module.family)
                metrics.update({f"{prefix}step{step}/{key}": value for key, value in stats.items()})
        return metrics

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
