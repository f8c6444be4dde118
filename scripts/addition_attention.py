"""Which digit does each transformer of the MNIST-addition models attend to (appendix A.1)?

    python scripts/addition_attention.py [--runs results/runs] [--out results/addition_attention.md]

For every canonical ST-FCN and 2xST-FCN record of the ``addition`` suite (its trained model from ``paths.models``,
default ``results/models``), on the suite's 1,000 test pairs: the input point that each transformer's output centre
reads, against the ink centroid of the digit of channel 0 and of channel 1. The paper says the single ST-FCN attends to
one region holding both digits, and that in the 2xST-FCN each transformer ends up transforming the digit of one
channel while seeing both. Per transformer: the correlation of its centre with each digit's centroid over the test
pairs (mean of x and y), the median distance to each digit and to their midpoint in pixels, and its frame's area as
a fraction of the canvas. Figures: ``results/figures/addition_attention_<cell>.png`` (inputs with each transformer's
frame drawn, channel 0 red, channel 1 green; then each transformer's output).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from stn_repro.config import ConfigError  # noqa: E402
from stn_repro.data.errors import DataError  # noqa: E402
from stn_repro.evaluate import load_run  # noqa: E402
from stn_repro.results.markdown import markdown_table  # noqa: E402
from stn_repro.results.records import RecordError, load_records, record_path  # noqa: E402
from stn_repro.train import git_revision  # noqa: E402
from stn_repro.transformers.grids import pixel_centre_points  # noqa: E402

SUITE = "addition"
FOLLOWS = 0.5  # a transformer follows a digit when its centre correlates with the digit's centroid above this
EXAMPLES = 6
CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def centroids(images: Tensor) -> Tensor:
    """Ink centroid of each channel, ``(B, C, H, W)`` → ``(B, C, 2)`` normalised ``(x, y)``."""
    points = pixel_centre_points(images.shape[-2:], dtype=images.dtype)[0]  # (H*W, 2)
    ink = images.flatten(2)
    return ink @ points / ink.sum(-1, keepdim=True).clamp_min(1e-8)


def frame_area(corners: Tensor) -> Tensor:
    """Area of the quadrilateral ``(B, 4, 2)`` (shoelace) as a fraction of the ``[-1, 1]²`` canvas."""
    x, y = corners[..., 0], corners[..., 1]
    return 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs() / 4.0


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two ``(N, 2)`` point sets, the mean of the x and y coefficients."""
    a, b = a - a.mean(0), b - b.mean(0)
    r = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-12)
    return r.mean().item()


@torch.no_grad()
def attention(model, data) -> dict[str, Tensor]:
    """Test inputs ``(N, 2, H, W)``, digit centroids ``(N, 2, 2)``, and per transformer k its centre ``(N, 2)``,
    frame corners ``(N, 4, 2)`` and output ``(N, 2, H', W')``."""
    transformers = getattr(model.transformer, "transformers", [model.transformer])
    images = torch.cat([batch[0] for batch in data.test_dataloader()])
    found: dict[str, Tensor] = {"images": images, "centroids": centroids(images)}
    for k, transformer in enumerate(transformers):
        output = transformer(images)
        theta = transformer.theta
        family = transformer.family
        found[f"centre{k}"] = family.transform_points(theta, torch.zeros(len(images), 1, 2))[:, 0]
        found[f"corners{k}"] = family.transform_points(theta, CORNERS.expand(len(images), 4, 2))
        found[f"output{k}"] = output
    return found


def summarise(found: dict[str, Tensor], size: int) -> list[dict[str, float]]:
    """One row per transformer: correlations, median distances (px) and frame area."""
    digits = found["centroids"]
    midpoint = digits.mean(1)
    px = size / 2  # normalised units → pixels (ALIGN_CORNERS = False: ±1 are the canvas edges)
    rows = []
    k = 0
    while f"centre{k}" in found:
        centre = found[f"centre{k}"]
        rows.append(
            {
                "r0": correlation(centre, digits[:, 0]),
                "r1": correlation(centre, digits[:, 1]),
                "d0": ((centre - digits[:, 0]).norm(dim=1) * px).median().item(),
                "d1": ((centre - digits[:, 1]).norm(dim=1) * px).median().item(),
                "dmid": ((centre - midpoint).norm(dim=1) * px).median().item(),
                "area": frame_area(found[f"corners{k}"]).mean().item(),
            }
        )
        k += 1
    return rows


def verdict(rows: list[dict[str, float]]) -> str:
    """What the rows show, in the paper's terms."""
    follows = [
        next((c for c in (0, 1) if row[f"r{c}"] > FOLLOWS and row[f"r{c}"] > row[f"r{1 - c}"] + 0.3), None)
        for row in rows
    ]
    if len(rows) == 1:
        row = rows[0]
        if follows[0] is not None:
            return f"one transformer that follows the digit of channel {follows[0]} (the paper: a region holding both)"
        if row["dmid"] < min(row["d0"], row["d1"]):
            return (
                f"one transformer centred between the two digits ({row['dmid']:.1f} px from their midpoint, "
                f"{row['d0']:.1f} / {row['d1']:.1f} px from each): a region holding both, as the paper says"
            )
        return "one transformer that follows neither digit nor their midpoint (the paper: a region holding both)"
    if None not in follows and sorted(follows) == [0, 1]:
        pairs = ", ".join(f"transformer {k + 1} → channel {c}" for k, c in enumerate(follows))
        return f"each transformer follows the digit of one channel ({pairs}), as the paper says"
    named = ", ".join(
        f"transformer {k + 1} → {'neither' if c is None else f'channel {c}'}" for k, c in enumerate(follows)
    )
    return f"the transformers do not split the channels ({named}); the paper: one channel each"


def rgb(pair: Tensor) -> Tensor:
    """``(2, H, W)`` → ``(H, W, 3)``: channel 0 red, channel 1 green."""
    return torch.stack([pair[0], pair[1], torch.zeros_like(pair[0])], -1).clamp(0, 1)


def draw(found: dict[str, Tensor], cell: str, out: Path) -> None:
    count = sum(1 for key in found if key.startswith("centre"))
    fig, axes = plt.subplots(EXAMPLES, 1 + count, figsize=(2 * (1 + count), 2 * EXAMPLES), squeeze=False)
    size = found["images"].shape[-1]
    colours = ("yellow", "cyan")
    for row in range(EXAMPLES):
        axes[row, 0].imshow(rgb(found["images"][row]))
        margin = size / 4  # frames may reach outside the canvas (read as zeros): show a grey border around it
        axes[row, 0].set_facecolor("0.6")
        axes[row, 0].set_xlim(-0.5 - margin, size - 0.5 + margin)
        axes[row, 0].set_ylim(size - 0.5 + margin, -0.5 - margin)
        for k in range(count):
            corners = (found[f"corners{k}"][row] + 1) * size / 2 - 0.5  # normalised → pixel index
            closed = torch.cat([corners, corners[:1]])
            axes[row, 0].plot(closed[:, 0], closed[:, 1], color=colours[k % 2], linewidth=1.2)
            axes[row, 1 + k].imshow(rgb(found[f"output{k}"][row]))
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_title("input (frames)", fontsize=9)
    for k in range(count):
        axes[0, 1 + k].set_title(f"transformer {k + 1} ({colours[k % 2]})", fontsize=9)
    fig.suptitle(f"MNIST addition, {cell}\nchannel 0 red, channel 1 green", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    try:
        report()
    except (ConfigError, DataError, RecordError) as error:
        raise SystemExit(f"error: {error}") from None


def report() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/addition_attention.md"))
    args = parser.parse_args()
    records = [r for r in load_records(args.runs, SUITE) if r.cell.startswith("st") and r.status == "finished"]
    if not records:
        raise SystemExit(f"no finished ST-FCN records of the {SUITE} suite under {args.runs}: make reproduce-addition")
    lines = [
        "# MNIST addition: which digit each transformer attends to",
        "",
        f"Generated by `scripts/addition_attention.py` at git {git_revision()} on "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, from the canonical records of `{args.runs}/{SUITE}` "
        "and their trained models, on the 1,000 test pairs.",
        "",
        "Per transformer: `r(ch c)` is the correlation over the test pairs between the input point its output centre "
        "reads and the ink centroid of the digit of channel c (mean of the x and y coefficients); `d` are median "
        "distances in pixels (42×42 canvas) to each digit and to the two digits' midpoint; `area` is the frame's "
        "area as a fraction of the canvas. A transformer *follows* a channel when its r there is above "
        f"{FOLLOWS} and at least 0.3 above the other channel's.",
        "",
    ]
    header = ["cell", "test error %", "transformer", "r(ch 0)", "r(ch 1)", "d ch 0", "d ch 1", "d midpoint", "area"]
    table, verdicts = [], []
    for record in records:
        path = record_path(args.runs, record.suite, record.cell, record.seed, record.config_hash)
        loaded = load_run(path)
        loaded.model.eval()
        found = attention(loaded.model, loaded.data)
        rows = summarise(found, found["images"].shape[-1])
        for k, row in enumerate(rows):
            numbers = [f"{row['r0']:.2f}", f"{row['r1']:.2f}", f"{row['d0']:.1f}", f"{row['d1']:.1f}"]
            numbers += [f"{row['dmid']:.1f}", f"{row['area']:.2f}"]
            table.append([f"`{record.cell}`", f"{record.metrics['test/err']:.1f}", k + 1, *numbers])
        verdicts.append(f"- `{record.cell}`: {verdict(rows)}.")
        figure = args.out.parent / "figures" / f"addition_attention_{record.cell}.png"
        draw(found, record.cell, figure)
        link = figure.relative_to(args.out.parent).as_posix()
        verdicts.append(f"  Figure: [`{link}`]({link}).")
    lines += [*markdown_table(header, table), "", "## What it shows", "", *verdicts, ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from stn_repro.train import quiet_lightning

    quiet_lightning()
    main()
