"""Fine-grained classification with parallel attention transformers (CUB-200-2011, Table 3).

Besides the classification error, the test pass measures where the transformers look: the percentage of crops
whose centre falls inside the ground-truth bird box (``test/crop_in_box``, and per transformer
``test/crop_in_box_<i>``), and draws the crops on test images (the paper's Figure 5) into
``<figures_dir>/crops.png``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchmetrics
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from stn_repro.systems.classification import ClassificationSystem

PART_COLOURS = ("red", "yellow", "cyan", "magenta", "orange", "lime")


def centres_in_boxes(centres: Tensor, boxes: Tensor) -> Tensor:
    """Whether each crop centre lies inside its image's box, ``(B, N)`` bool.

    Args:
        centres: ``(B, N, 2)`` crop centres ``(x, y)`` in normalised coordinates.
        boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in the same coordinates.
    """
    x, y = centres[..., 0], centres[..., 1]
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def crop_boxes(centres: Tensor, scale: float) -> Tensor:
    """Boxes ``(B, N, 4)`` ``(x0, y0, x1, y1)`` of square crops of side ``scale`` (normalised units of 2)
    centred at ``centres`` ``(B, N, 2)``."""
    return torch.cat([centres - scale, centres + scale], dim=-1)


def to_pixels(boxes: Tensor, size: int) -> Tensor:
    """Normalised boxes (``-1`` and ``1`` the image's outer edges) → pixel boxes of a ``size``-pixel image."""
    return (boxes + 1) * (size / 2)


class PartAttentionSystem(ClassificationSystem):
    """:class:`ClassificationSystem` for a model with ``model.transformers`` (a ``SharedLocalisationTransformers``,
    or ``None`` for the baseline); test batches are ``(images, labels, boxes)`` with boxes ``(B, 4)`` normalised.

    Args:
        mean, std: the images' normalisation, undone for the crops figure.
        figure_images: how many test images the crops figure shows.
        Other arguments: see :class:`ClassificationSystem`.
    """

    def __init__(
        self, *args, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3, figure_images: int = 8,
        **kwargs,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.mean, self.std = tuple(mean), tuple(std)
        self.figure_images = figure_images
        parts = getattr(self.model, "num_parts", 0)
        self.in_box = torchmetrics.MetricCollection(
            {f"crop_in_box_{i}": torchmetrics.MeanMetric() for i in range(parts)}
        ) if parts else None  # fmt: skip
        self._figure: list[Tensor] = []

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        self.test_error.update(self.wrong(self.model(images), labels))
        transformers = getattr(self.model, "transformers", None)
        if self.in_box is None or transformers is None or len(batch) < 3:
            return
        centres = transformers.theta.detach()
        inside = centres_in_boxes(centres, batch[2]).float()
        for i in range(inside.shape[1]):
            self.in_box[f"crop_in_box_{i}"].update(inside[:, i])
        if sum(len(x) for x in self._figure) < self.figure_images:
            self._figure.append(self._draw(images, centres, batch[2], transformers.family.scale))

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.in_box is None:
            return
        values = {name: 100.0 * value for name, value in self.in_box.compute().items()}
        self.log_dict({f"test/{name}": value for name, value in values.items()})
        self.log("test/crop_in_box", torch.stack(list(values.values())).mean())
        self.in_box.reset()
        if self._figure and self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            drawn = torch.cat(self._figure)[: self.figure_images]
            save_image(make_grid(drawn, nrow=4, padding=4, pad_value=1.0), self.figures_dir / "crops.png")
        self._figure = []

    def _draw(self, images: Tensor, centres: Tensor, boxes: Tensor, scale: float) -> Tensor:
        """Images ``(B, 3, S, S)`` in [0, 1] with the bird box (white) and each crop (its colour) drawn."""
        mean = torch.tensor(self.mean, device=images.device)[:, None, None]
        std = torch.tensor(self.std, device=images.device)[:, None, None]
        pictures = ((images * std + mean).clamp(0, 1) * 255).to(torch.uint8).cpu()
        size = images.shape[-1]
        crops = to_pixels(crop_boxes(centres, scale), size).cpu()
        truth = to_pixels(boxes, size).cpu()
        colours = ["white", *PART_COLOURS[: centres.shape[1]]]
        drawn = [
            draw_bounding_boxes(picture, torch.cat([truth[i : i + 1], crops[i]]), colors=colours, width=3)
            for i, picture in enumerate(pictures)
        ]
        return torch.stack(drawn).float() / 255
