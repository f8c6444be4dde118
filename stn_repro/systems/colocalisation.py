"""Co-localisation (appendix A.2): unsupervised training of per-class attention transformers with a triplet loss.

Training batches are ``(canvases (B, 1, H, W), labels (B,))`` holding the same number of images of every class
(:class:`~stn_repro.tasks.colocalisation.ClassBalancedBatches`); the label only routes an image to its class's
transformer (one set of 100 images per class), no box or position is used. For each image ``I_n``:

    loss_n = max(0, ||e(T(I_n)) − e(T(I_m))||² − ||e(T(I_n)) − e(crop(I_n))||² + margin)

with ``I_m`` another image of the same class in the batch (each class's images, in random order, paired with the
next one) and ``crop(I_n)`` a uniformly random 28×28 crop of ``I_n`` (integer position, inside the canvas). The
optimised loss is the sum over classes of each class's mean, so every transformer gets the gradient it would get
trained alone on batches of its own class.

Test batches are ``(canvases, labels, truth)``: a transformer's crop is the box ``[tx ± s] × [ty ± s]``, and an image
counts as localised when that box has IoU > 0.5 with the digit's 28×28 placement frame (the paper's "true digit
box"; the frame is what the placement protocol defines; IoU with the tighter ink box is logged as well).
Metrics: ``test/localised`` (% of all images), ``test/localised_d<k>`` (% of class ``k``), ``test/localised_ink``.
The figure ``<figures_dir>/crops.png`` shows, per digit (row), a few canvases with the true frame (green) and the
predicted box (red), each followed by its 28×28 crop.
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from stn_repro.systems.classification import ClassificationSystem, DivergedError
from stn_repro.transformers import normalized_to_pixel_matrix

IOU_THRESHOLD = 0.5


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired boxes ``(B, 4)`` ``(x0, y0, x1, y1)`` → ``(B,)``; 0 where the union is 0."""
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    intersection = width * height
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def attention_boxes(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel boxes ``(B, 4)`` (pixel ``i`` spans ``[i, i+1)``) read by attention parameters ``(s, tx, ty)`` ``(B, 3)``
    on an input of ``size`` ``(H, W)``; a negative ``s`` (a flipped crop) reads the same box."""
    s, tx, ty = theta.abs()[:, 0], theta[:, 1], theta[:, 2]
    h, w = size
    x0, x1 = (tx - s + 1) * (w / 2), (tx + s + 1) * (w / 2)
    y0, y1 = (ty - s + 1) * (h / 2), (ty + s + 1) * (h / 2)
    return torch.stack([x0, y0, x1, y1], dim=1)


def frame_boxes(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel boxes ``(B, 4)`` of the placed digits' frames: where affine sampling parameters ``theta`` ``(B, 6)``
    (canvas normalised → digit normalised, as stored by the TC protocol) map the digit's square ``[-1, 1]²``;
    the bounding box of its four corners for a rotated or sheared placement."""
    matrix = torch.eye(3, dtype=torch.float64, device=theta.device).repeat(len(theta), 1, 1)
    matrix[:, :2] = theta.double().view(-1, 2, 3)
    corners = torch.tensor([[-1.0, 1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    canvas = torch.linalg.solve(matrix, corners.to(theta.device).expand(len(theta), 3, 4))  # (B, 3, 4) normalised
    pixels = normalized_to_pixel_matrix(size).to(matrix.device) @ canvas
    x, y = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5  # pixel centres are integers: edges at ±0.5
    box = torch.stack([x.amin(1), y.amin(1), x.amax(1), y.amax(1)], dim=1)
    return box.to(theta.dtype)


def triplet_hinge_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Per-sample ``max(0, ||a − p||² − ||a − n||² + margin)`` of embeddings ``(B, D)`` → ``(B,)``."""
    return (((anchor - positive) ** 2).sum(1) - ((anchor - negative) ** 2).sum(1) + margin).clamp(min=0)


def partner_index(labels: Tensor) -> Tensor:
    """For each sample, the index ``(B,)`` of another sample of the same label: within each label, the samples in
    batch order are paired with the next one (cyclically). Raises ``ValueError`` for a label seen only once."""
    partner = torch.empty_like(labels)
    for label in torch.unique(labels):
        index = (labels == label).nonzero().squeeze(1)
        if len(index) < 2:
            raise ValueError(f"label {int(label)} has a single sample in the batch; positives need two per class")
        partner[index] = index.roll(-1)
    return partner


def random_crops(canvases: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """One uniformly placed ``size``² crop (integer position, inside the canvas) per canvas ``(B, C, H, W)`` →
    ``(B, C, size, size)``; positions are drawn on the CPU from ``generator`` (default: the global generator)."""
    b, c, h, w = canvases.shape
    y = torch.randint(h - size + 1, (b,), generator=generator).to(canvases.device)
    x = torch.randint(w - size + 1, (b,), generator=generator).to(canvases.device)
    offsets = torch.arange(size, device=canvases.device)
    rows = (y[:, None] + offsets)[:, None, :, None].expand(b, c, size, w)
    cols = (x[:, None] + offsets)[:, None, None, :].expand(b, c, size, size)
    return canvases.gather(2, rows).gather(3, cols)


class ColocalisationSystem(ClassificationSystem):
    """Triplet-loss training of a :class:`~stn_repro.models.colocalisation.ColocalisationModel`, localisation
    metrics and the crops figure at test time (see the module docstring).

    Args:
        model: the per-class transformers and the frozen embedding CNN.
        margin: the triplet hinge's margin (paper: 1).
        figure_per_class: canvases per digit in ``crops.png``.
        Other arguments: see :class:`ClassificationSystem` (SGD on the transformers' localisation nets at
        ``lr × loc_lr_mult``, the step schedule, θ statistics of every transformer).
    """

    def __init__(self, model: Any, *args: Any, margin: float = 1.0, figure_per_class: int = 4, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        self.margin = margin
        self.figure_per_class = figure_per_class
        self.num_classes = len(model.transformers)
        self.localised = torchmetrics.MetricCollection(
            {f"localised_d{k}": torchmetrics.MeanMetric() for k in range(self.num_classes)}
        )
        self.localised_all = torchmetrics.MeanMetric()
        self.localised_ink = torchmetrics.MeanMetric()
        self._figure: dict[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]] = {}

    def triplet_loss(self, canvases: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, per-sample losses (B,))`` of a class-balanced batch; ``loss`` sums the classes' means."""
        crops = self.model(canvases, labels)
        anchors = self.model.embed(crops)
        with torch.no_grad():
            negatives = self.model.embed(random_crops(canvases, crops.shape[-1]))
        per_sample = triplet_hinge_loss(anchors, anchors[partner_index(labels)], negatives, self.margin)
        class_sizes = torch.bincount(labels, minlength=self.num_classes)[labels]
        return (per_sample / class_sizes).sum(), per_sample

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss, per_sample = self.triplet_loss(batch[0], batch[1])
        if not torch.isfinite(loss):
            raise DivergedError(
                f"training diverged at step {self.global_step}: the loss is {loss.item()}; "
                "lower optim.lr or set optim.grad_clip (e.g. optim.grad_clip=1.0)"
            )
        self.log("train/loss", per_sample.mean(), prog_bar=True)
        self.log("train/active", (per_sample > 0).float().mean())
        if self.theta_log_every and self.global_step % self.theta_log_every == 0:
            self._log_theta()
        return loss

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        canvases, labels, truth = batch
        crops = self.model(canvases, labels)
        size = (canvases.shape[-2], canvases.shape[-1])
        predicted = attention_boxes(self.model.theta.detach(), size)
        frames = frame_boxes(truth["theta"], size)
        hit = (box_iou(predicted, frames) > IOU_THRESHOLD).float()
        self.localised_all.update(hit)
        self.localised_ink.update((box_iou(predicted, truth["boxes"].float()) > IOU_THRESHOLD).float())
        for digit in torch.unique(labels).tolist():
            chosen = labels == digit
            self.localised[f"localised_d{digit}"].update(hit[chosen])
            shown = self._figure.setdefault(digit, [])
            for i in chosen.nonzero().squeeze(1)[: self.figure_per_class - len(shown)].tolist():
                shown.append((canvases[i].cpu(), predicted[i].cpu(), frames[i].cpu(), crops[i].detach().cpu()))

    def on_test_epoch_end(self) -> None:
        values = {f"test/{name}": 100.0 * value for name, value in self.localised.compute().items()}
        values["test/localised"] = 100.0 * self.localised_all.compute()
        values["test/localised_ink"] = 100.0 * self.localised_ink.compute()
        self.log_dict(values)
        for metric in (self.localised, self.localised_all, self.localised_ink):
            metric.reset()
        if self._figure and self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            save_image(crops_figure(self._figure, self.figure_per_class), self.figures_dir / "crops.png")
        self._figure = {}

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # the localisation nets only
        optimiser = torch.optim.SGD(
            trainable, lr=self.lr * self.loc_lr_mult, momentum=self.momentum, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, self.lr_factor)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def crops_figure(shown: dict[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]], per_row: int) -> Tensor:
    """Grid ``(3, H', W')``: one row per digit of ``per_row`` (canvas with the true frame in green and the predicted
    box in red, its crop enlarged to the canvas size) pairs; ``shown[digit]`` holds ``(canvas (1, H, W), predicted
    box (4,), frame (4,), crop (1, 28, 28))`` tuples."""
    tiles = []
    for digit in sorted(shown):
        for canvas, predicted, frame, crop in shown[digit]:
            h, w = canvas.shape[-2:]
            picture = (canvas.clamp(0, 1) * 255).to(torch.uint8).expand(3, h, w)
            limits = torch.tensor([w, h, w, h], dtype=torch.float32)
            boxes = torch.stack([frame.float(), predicted.float()]).clamp(min=0).minimum(limits)
            tiles.append(draw_bounding_boxes(picture, boxes, colors=["lime", "red"], width=1).float() / 255)
            big = torch.nn.functional.interpolate(crop[None].clamp(0, 1), size=(h, w), mode="nearest")[0]
            tiles.append(big.expand(3, h, w))
        tiles += [torch.ones_like(tiles[-1])] * (2 * (per_row - len(shown[digit])))
    return make_grid(torch.stack(tiles), nrow=2 * per_row, padding=2, pad_value=0.5)
