"""Classification of volumes (appendix A.3): :class:`ClassificationSystem` with depth-projection figures."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image

from stn_repro.models.volumes import depth_projection
from stn_repro.systems.classification import ClassificationSystem

FIGURE_SAMPLES = 8


def _scaled(images: Tensor) -> Tensor:
    """Each image ``(B, C, H, W)`` divided by its own maximum (mean projections of thin slabs are faint)."""
    peak = images.flatten(1).amax(1).clamp(min=1e-8)
    return images / peak[:, None, None, None]


class VolumeSystem(ClassificationSystem):
    """Training of a volume classifier ``(B, 1, D, H, W) → (B, K)`` whose model has ``flattened(volumes)``, the 2D
    image its classifier sees (:mod:`stn_repro.models.volumes`).

    Figures: ``<figures_dir>/projection.png``, written after testing, shows the first :data:`FIGURE_SAMPLES` test
    volumes as pairs: the depth projection of the input volume (left) next to the classifier's input (right; for
    the 3D ST-CNN the projection of the transformer's output), each scaled to its own maximum and resized to the
    input's size; :class:`~stn_repro.callbacks.TransformedImages` draws the same grid of the first training inputs.
    Other arguments: see :class:`ClassificationSystem`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._test_samples: Tensor | None = None

    def transformed_grid(self, images: Tensor) -> Tensor:
        """Input projections next to classifier inputs, ``(3, H', W')``, for volumes ``(B, 1, D, H, W)``."""
        with torch.no_grad():
            inputs = depth_projection(images)
            seen = self.model.flattened(images)
        if seen.shape[-2:] != inputs.shape[-2:]:
            seen = F.interpolate(seen, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        rows = torch.stack([_scaled(inputs), _scaled(seen)], dim=1).flatten(0, 1)
        return make_grid(rows.clamp(0, 1), nrow=2 * int(math.ceil(math.sqrt(len(images)))), padding=2, pad_value=0.5)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        if self._test_samples is None:
            self._test_samples = batch[0][:FIGURE_SAMPLES].detach()
        super().test_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self._test_samples is not None and self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            save_image(self.transformed_grid(self._test_samples), self.figures_dir / "projection.png")
        self._test_samples = None
