"""Write a PNG grid of generated samples per distorted-MNIST dataset, to check by eye against the paper's Figure 3.

Usage: python scripts/preview_data.py [--root data] [--source auto] [--out results/figures] [--count 16]
Each image shows the canvas with the stored digit box in red (clutter boxes in blue) and the label.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stn_repro.data.distortions import DISTORTIONS, generate, get_distortion, split_seed  # noqa: E402
from stn_repro.data.sources import resolve_digits  # noqa: E402


def _boxes(boxes: np.ndarray) -> np.ndarray:
    return boxes.reshape(-1, 4)


def preview(name: str, images: np.ndarray, labels: np.ndarray, truth: dict[str, np.ndarray], path: Path, note: str):
    count = len(images)
    cols = 8
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(count):
        ax = axes.ravel()[i]
        image = images[i]
        width = image.shape[-1]
        if image.ndim == 3:  # several channels side by side
            image = np.concatenate(list(image), axis=1)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        for c, box in enumerate(_boxes(truth["boxes"][i])):
            shift = c * width if images[i].ndim == 3 else 0
            ax.add_patch(
                plt.Rectangle(
                    (box[0] + shift - 0.5, box[1] - 0.5),
                    box[2] - box[0],
                    box[3] - box[1],
                    fill=False,
                    color="red",
                    lw=0.8,
                )
            )
        for box in _boxes(truth.get("clutter_boxes", np.zeros((count, 0, 4)))[i]):
            ax.add_patch(
                plt.Rectangle(
                    (box[0] - 0.5, box[1] - 0.5),
                    box[2] - box[0],
                    box[3] - box[1],
                    fill=False,
                    color="deepskyblue",
                    lw=0.5,
                )
            )
        ax.set_title(str(labels[i]), fontsize=8)
    fig.suptitle(f"{name}: {note}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--out", default="results/figures")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    digit_set = resolve_digits(args.root, args.source)
    images, labels = digit_set.test_images[: args.count * 8], digit_set.test_labels[: args.count * 8]
    for name in DISTORTIONS:
        distortion = get_distortion(name)
        out = generate(distortion, images, labels, split_seed(0, "test", name))
        truth = {k: v[: args.count] for k, v in out.items()}
        path = Path(args.out) / f"data_{name}.png"
        preview(
            name,
            out["images"][: args.count],
            out["labels"][: args.count],
            truth,
            path,
            f"{digit_set.source} digits, {distortion.protocol()}",
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
