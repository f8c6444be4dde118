"""Co-localisation (appendix A.2): unsupervised training of per-class attention transformers with a triplet loss.

Training batches are ``(canvases (B, 1, H, W), labels (B,))`` holding the same number of images of every class
(:class:`~stn_repro.tasks.colocalisation.ClassBalancedBatches`); the label only routes an image to its class's
transformer (one set of 100 images per class), no box or position is used. For each image ``I_n``:

    loss_n = mean over m of max(0, ||e(T(I_n)) − e(T(I_m))||² − ||e(T(I_n)) − e(crop(I_n))||² + margin)

over every other image ``I_m`` of the same class in the batch (the paper sums over the pairs n ≠ m) and
``crop(I_n)`` a uniformly random 28×28 crop of ``I_n`` (integer position, inside the canvas). The optimised loss is
the sum over classes of each class's mean, so every transformer gets the gradient it would get trained alone on
batches of its own class. Every candidate transformer of a class (restarts trained side by side) gets its own loss
on the same negatives; a moving average of each candidate's loss chooses the one evaluated (no label or position
is used). Before every training step the transformers' scale ceiling is set for the fraction of ``iterations``
done (:meth:`~stn_repro.models.colocalisation.ColocalisationModel.set_training_progress`).

Test batches are ``(canvases, labels, truth)``: a transformer's crop is the box ``[tx ± s] × [ty ± s]``, and an image
counts as localised when that box has IoU > 0.5 with the digit's 28×28 placement frame (the paper's "true digit
box"; the frame is what the placement protocol defines; IoU with the tighter ink box is logged as well).
Metrics: ``test/localised`` (% of all images), ``test/localised_d<k>`` (% of class ``k``), ``test/localised_ink``.
The figure ``<figures_dir>/crops.png`` shows, per digit (row), a few canvases with the true frame (green) and the
predicted box (red), each followed by its 28×28 crop; ``<figures_dir>/optimisation.png`` (the paper's Figure 4)
shows the boxes of three training images (the first batch's first image of its first three classes) at the
training steps of :data:`OPTIMISATION_STEPS` and the last one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torch import Tensor
from torchvision.ops import box_iou as pairwise_box_iou
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from stn_repro.models.colocalisation import CROP_SIZE
from stn_repro.systems.classification import DIVERGENCE_HINT, ClassificationSystem, DivergedError
from stn_repro.transformers import normalized_to_pixel_matrix

IOU_THRESHOLD = 0.5
OPTIMISATION_STEPS = (0, 25, 50, 100, 200, 400, 800)  # the optimisation figure's columns (and the last step)
TRACKED_IMAGES = 3
CANDIDATE_LOSS_DECAY = 0.98  # the moving average of each candidate's loss that picks a class's transformer


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired boxes ``(B, 4)`` ``(x0, y0, x1, y1)`` → ``(B,)``; 0 where the union is 0."""
    return pairwise_box_iou(a, b).diagonal().nan_to_num(0.0)


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


def all_pairs_triplet_loss(anchors: Tensor, negatives: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Per-sample triplet hinge ``(B,)`` of embeddings ``(B, D)``: for each sample ``n``, the mean over the other
    samples ``m`` of its label of ``max(0, ||a_n − a_m||² − ||a_n − neg_n||² + margin)``.

    Raises ``ValueError`` for a label seen only once (it has no positive)."""
    per_sample = anchors.new_zeros(len(anchors))
    for label in torch.unique(labels):
        index = (labels == label).nonzero().squeeze(1)
        if len(index) < 2:
            raise ValueError(f"label {int(label)} has a single sample in the batch; positives need two per class")
        a = anchors[index]
        positive = ((a[:, None] - a[None]) ** 2).sum(-1)  # (n, n)
        negative = ((a - negatives[index]) ** 2).sum(1)  # (n,)
        hinge = (positive - negative[:, None] + margin).clamp(min=0)
        others = ~torch.eye(len(index), dtype=torch.bool, device=a.device)
        per_sample = per_sample.index_copy(0, index, (hinge * others).sum(1) / (len(index) - 1))
    return per_sample


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
        iterations: the length of training, for the transformers' scale-ceiling schedule.
        margin: the triplet hinge's margin (paper: 1).
        figure_per_class: canvases per digit in ``crops.png``.
        Other arguments: see :class:`ClassificationSystem` (its optimiser on the transformers' localisation nets at
        ``lr × loc_lr_mult``, the step schedule, θ statistics of every transformer).
    """

    def __init__(
        self,
        model: Any,
        *args: Any,
        iterations: int,
        margin: float = 1.0,
        figure_per_class: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, *args, **kwargs)
        self.iterations = iterations
        self.margin = margin
        self.figure_per_class = figure_per_class
        self.num_classes = model.candidate_loss.shape[0]
        self.localised = torchmetrics.MetricCollection(
            {f"localised_d{k}": torchmetrics.MeanMetric() for k in range(self.num_classes)}
        )
        self.localised_all = torchmetrics.MeanMetric()
        self.localised_ink = torchmetrics.MeanMetric()
        self._figure: dict[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]] = {}
        self._tracked: tuple[Tensor, Tensor] | None = None  # (canvases (3, 1, H, W), labels (3,))
        self._trajectory: dict[int, Tensor] = {}  # step -> pixel boxes (3, 4) of the tracked images

    def triplet_loss(self, canvases: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, per-sample losses (candidates, B))`` of a class-balanced batch, every class's candidates on the
        same negatives; ``loss`` sums each candidate's class means."""
        with torch.no_grad():
            negatives = self.model.embed(random_crops(canvases, CROP_SIZE))
        per_sample = torch.stack([
            all_pairs_triplet_loss(self.model.embed(self.model(canvases, labels, j)), negatives, labels, self.margin)
            for j in range(self.model.candidates)
        ])  # fmt: skip
        class_sizes = torch.bincount(labels, minlength=self.num_classes)[labels]
        return (per_sample / class_sizes).sum(), per_sample

    @torch.no_grad()
    def _update_candidate_loss(self, per_sample: Tensor, labels: Tensor) -> None:
        """Fold this step's class means ``(num_classes, candidates)`` into the model's :attr:`candidate_loss` (an
        exponential moving average with decay :data:`CANDIDATE_LOSS_DECAY`; classes absent from the batch keep
        theirs)."""
        counts = torch.bincount(labels, minlength=self.num_classes).to(per_sample.dtype)
        sums = per_sample.new_zeros(self.num_classes, per_sample.shape[0]).index_add_(0, labels, per_sample.T)
        present = counts > 0
        ema = self.model.candidate_loss
        ema[present] = CANDIDATE_LOSS_DECAY * ema[present] + (1 - CANDIDATE_LOSS_DECAY) * (
            sums[present] / counts[present, None]
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.model.set_training_progress(self.global_step / self.iterations)
        if self._tracked is None:
            canvases, labels = batch[0], batch[1]
            first = [int((labels == k).nonzero()[0]) for k in torch.unique(labels)[:TRACKED_IMAGES].tolist()]
            self._tracked = (canvases[first].detach().clone(), labels[first].clone())
        if self.global_step in OPTIMISATION_STEPS:
            self._track()

    @torch.no_grad()
    def _track(self) -> None:
        canvases, labels = self._tracked
        self.model(canvases, labels)
        self._trajectory[self.global_step] = attention_boxes(self.model.theta, canvases.shape[-2:]).cpu()

    def on_train_end(self) -> None:
        if self._tracked is None or self.figures_dir is None:
            return
        self._track()
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        optimisation_figure(self._tracked[0].cpu(), self._trajectory, self.figures_dir / "optimisation.png")

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss, per_sample = self.triplet_loss(batch[0], batch[1])
        if not torch.isfinite(loss):
            raise DivergedError(
                f"training diverged at step {self.global_step}: the loss is {loss.item()}; {DIVERGENCE_HINT}"
            )
        self._update_candidate_loss(per_sample.detach(), batch[1])
        self.log("train/loss", per_sample.mean(), prog_bar=True)
        self.log("train/active", (per_sample > 0).float().mean())
        self.log("train/chosen_loss", self.model.candidate_loss.min(1).values.mean())
        self.log("train/scale_ceiling", self.model.transformers[0].ceiling)
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
        return self.optimisation([{"params": trainable}], localisation_groups=[0])


def optimisation_figure(canvases: Tensor, trajectory: dict[int, Tensor], path: Path) -> None:
    """Write ``path`` (PNG): one row per canvas ``(N, 1, H, W)``, one column per step of ``trajectory`` (step →
    pixel boxes ``(N, 4)``), each tile the canvas with that step's box in red (the paper's Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    steps = sorted(trajectory)
    fig, axes = plt.subplots(len(canvases), len(steps), figsize=(1.4 * len(steps), 1.5 * len(canvases)), squeeze=False)
    for row, canvas in enumerate(canvases):
        for column, step in enumerate(steps):
            ax = axes[row][column]
            ax.imshow(canvas[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            x0, y0, x1, y1 = trajectory[step][row].tolist()
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {step}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
