"""Where is the co-localisation triplet loss lowest? The mean loss of the T and TC sets with every image cropped by
one placement rule (the true digit frame, the frame moved, the training start, the whole canvas, a blank region,
random digit-sized crops), for each embedding descriptor. Training can only find the digit if the true frame has
the lowest loss; whether gradient descent gets there from the start is another question (README, co-localisation).

    python scripts/colocalisation_landscape.py [--out results/colocalisation_landscape.md]

The loss is the training loss of :mod:`stn_repro.systems.colocalisation` (positives: every other image of the
class cropped by the same rule; negative: a uniformly placed 28×28 crop; margin 1), on the cells' own sets and
embedding CNN (``conf/experiment/colocalisation/``), averaged over 5 draws of the random crops.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from stn_repro.models.colocalisation import CROP_SIZE, DESCRIPTORS, START_LOGIT
from stn_repro.systems.colocalisation import all_pairs_triplet_loss, frame_boxes, random_crops
from stn_repro.tasks import get_task
from stn_repro.train import git_revision
from stn_repro.transformers import AttentionFamily, sample

CONF = Path(__file__).resolve().parents[1] / "conf"
CELLS = ("t", "tc")
DRAWS = 5


def start_scale(scale: dict) -> float:
    """The transformers' initial half-side (``model.scale``, :data:`START_LOGIT`)."""
    sigmoid = 1 / (1 + math.exp(-START_LOGIT))
    return scale["floor"] + (scale["ceiling_start"] - scale["floor"]) * sigmoid


START = start_scale({"floor": 0.2, "ceiling_start": 0.8})  # conf/model/coloc.yaml's, checked in main()
PLACEMENTS = {  # name -> (s, tx, ty) (B, 3) from the true frame's centre (B, 2), s = 28/84
    "true frame": lambda centre, s: torch.cat([s, centre], 1),
    "frame moved 5 px": lambda centre, s: torch.cat([s, centre + torch.tensor([5 / 42, 0.0])], 1),
    "frame moved 10 px": lambda centre, s: torch.cat([s, centre + torch.tensor([10 / 42, 0.0])], 1),
    f"training start (centred, half-side {START:.2f})": lambda centre, s: torch.cat([0 * s + START, 0 * centre], 1),
    "whole canvas": lambda centre, s: torch.cat([0 * s + 1.0, 0 * centre], 1),
    "blank (outside the canvas)": lambda centre, s: torch.cat([s, 0 * centre + 3.0], 1),
    "random digit-sized crop": lambda centre, s: torch.cat([s, (torch.rand_like(centre) * 2 - 1) * (1 - s)], 1),
}


def cell_set(cell: str):
    """``(canvases (N, 1, 84, 84), labels (N,), frame centres (N, 2) normalised, embedding CNN)`` of one cell."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[f"experiment=colocalisation/{cell}"])
    task = get_task(cfg)
    data = task.data(cfg)
    data.prepare_data()
    data.setup("test")
    model, _ = task.model(cfg, data)
    canvases, labels, frames = [], [], []
    for batch, label, truth in data.test_dataloader():
        canvases.append(batch)
        labels.append(label)
        frames.append(frame_boxes(truth["theta"], batch.shape[-2:]))
    canvases, labels, frames = torch.cat(canvases), torch.cat(labels), torch.cat(frames)
    size = canvases.shape[-1]
    centre = torch.stack([frames[:, 0] + frames[:, 2], frames[:, 1] + frames[:, 3]], 1) / size - 1
    order = torch.argsort(labels, stable=True)
    if abs(start_scale(model.scale) - START) > 1e-9:
        raise SystemExit(f"model.scale {model.scale} starts elsewhere than the table's row; update START")
    return canvases[order], labels[order], centre[order], model.embedding


@torch.no_grad()
def mean_loss(canvases, labels, theta, embedding, generator) -> float:
    family = AttentionFamily()
    crops = sample(canvases, family.grid(theta, (CROP_SIZE, CROP_SIZE)))
    anchors = embedding.embed(crops)
    losses = [
        all_pairs_triplet_loss(anchors, embedding.embed(random_crops(canvases, CROP_SIZE, generator)), labels)
        for _ in range(DRAWS)
    ]
    return torch.stack(losses).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/colocalisation_landscape.md"))
    args = parser.parse_args()
    table: dict[tuple[str, str, str], float] = {}
    for cell in CELLS:
        canvases, labels, centre, embedding = cell_set(cell)
        scale = torch.full((len(labels), 1), CROP_SIZE / canvases.shape[-1])
        for descriptor in DESCRIPTORS:
            embedding.descriptor = descriptor
            for name, rule in PLACEMENTS.items():
                generator = torch.Generator().manual_seed(0)
                torch.manual_seed(0)  # the random placement
                table[cell, descriptor, name] = mean_loss(canvases, labels, rule(centre, scale), embedding, generator)
    columns = [(cell, d) for cell in CELLS for d in DESCRIPTORS]
    lines = [
        "# Co-localisation: the triplet loss at fixed crop placements",
        "",
        f"Generated by `python scripts/colocalisation_landscape.py` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"git {git_revision()}. Mean triplet loss (margin 1) over each cell's 1,000 images (100 per digit), every "
        "image cropped by the row's rule, its positives (every other image of its class) by the same rule, its "
        f"negative a uniformly placed 28x28 crop ({DRAWS} draws). The embedding is the cells' Table 1 CNN, trained "
        "on digits at random poses (`model.embedding`); "
        "`activations` is the paper's descriptor, `activations_unit` the same vector at unit length (the default), "
        "`probabilities` its softmax. The lowest value of each column is in bold.",
        "",
        "| placement | " + " | ".join(f"{cell.upper()}: {d}" for cell, d in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    best = {c: min(table[(*c, name)] for name in PLACEMENTS) for c in columns}
    for name in PLACEMENTS:
        cells = []
        for c in columns:
            value = table[(*c, name)]
            cells.append(f"**{value:.3g}**" if value == best[c] else f"{value:.3g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
