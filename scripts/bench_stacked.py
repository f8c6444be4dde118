"""Several seeds of one small model trained as one: stacked with ``torch.func`` against one after another.

    .venv/bin/python scripts/bench_stacked.py [--cells fcn_rts st_fcn_aff_rts] [--seeds 3] [--batch 16 64 256]
        [--steps 60] [--rounds 3] [--out results/bench_stacked.md]

For each Table 1 cell, ``--seeds`` models as the ``paper`` profile builds them (one per seed, each initialised as
its run would be) train for ``--steps`` SGD steps (lr 0.01, momentum 0.9) on their own batches of random images
of the cell's size:

1. **one after another**: each model's own loop (forward, cross-entropy, backward, ``torch.optim.SGD``), the
   models in turn, as separate runs of a seed each would train;
2. **stacked**: the models' parameters stacked on a leading seed dimension
   (``torch.func.stack_module_state``), the loss and gradients of all seeds in one call
   (``vmap(grad(loss))`` over ``functional_call``), and one SGD-with-momentum update of the stacked tensors.

Images/s count every seed's images. The two paths run in turn ``--rounds`` times (their windows pooled, the
median taken), so a drift of the machine's speed hits both. Then, untimed, both paths train from the same initial
weights on the same batches and the largest absolute difference of their parameters is reported after 5 steps and
after ``--steps``: the stacked products add up in another order, and training amplifies such rounding differences
(the bilinear sampler's gradient jumps at pixel boundaries), so the paths agree closely at first and drift apart.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from benchmarks.plan import ROOT, SIZE_OF
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from stn_repro import components
from stn_repro.identity import compose_config
from stn_repro.results.markdown import markdown_table

LR, MOMENTUM = 0.01, 0.9
EARLY = 5  # the parameter difference is also reported after this many steps


def seed_models(cell: str, seeds: int) -> list[nn.Module]:
    """The models of Table 1 ``cell`` (``paper`` profile) for seeds ``0 .. seeds - 1``, each seeded as its run."""
    cfg = compose_config([f"experiment=table1/{cell}", "profile=paper"])
    size = SIZE_OF[cell.rsplit("_", 1)[1]]
    models = []
    for seed in range(seeds):
        pl.seed_everything(seed, verbose=False)
        models.append(components.build(cfg.model, "model", in_shape=(1, size, size), num_classes=10))
    return models


class Separate:
    """The seeds' models trained one after another, each with its own SGD."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.models = models
        self.optimisers = [torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM) for m in models]

    def step(self, images: Tensor, labels: Tensor) -> None:
        """One step of every seed: ``images`` ``(S, B, C, H, W)``, ``labels`` ``(S, B)``."""
        for model, optimiser, x, y in zip(self.models, self.optimisers, images, labels, strict=True):
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


class Stacked:
    """The seeds' models as one: stacked parameters, per-seed gradients by ``vmap``, one momentum-SGD update."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.params, self.buffers = stack_module_state(models)
        self.velocity = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.first = True
        base = copy.deepcopy(models[0]).to("meta")

        def loss(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(base, (params, buffers), (x,)), y)

        self.gradients = vmap(grad(loss))

    @torch.no_grad()
    def step(self, images: Tensor, labels: Tensor) -> None:
        """One step of every seed: ``images`` ``(S, B, C, H, W)``, ``labels`` ``(S, B)``; torch's SGD update
        (``v = m v + g``, the first step ``v = g``; ``p -= lr v``) on the stacked tensors."""
        with torch.enable_grad():
            grads = self.gradients(self.params, self.buffers, images, labels)
        names = list(self.params)
        velocity, gradient = [self.velocity[n] for n in names], [grads[n] for n in names]
        if self.first:
            torch._foreach_copy_(velocity, gradient)
            self.first = False
        else:
            torch._foreach_mul_(velocity, MOMENTUM)
            torch._foreach_add_(velocity, gradient)
        torch._foreach_add_([self.params[n] for n in names], velocity, alpha=-LR)


def detach_stacked(models: list[nn.Module]) -> dict[str, Tensor]:
    params, _ = stack_module_state(models)
    return {name: p.detach() for name, p in params.items()}


def measure(cell: str, seeds: int, batch: int, steps: int, rounds: int) -> dict[str, float]:
    """Images/s of both paths (median over rounds) and the largest parameter difference after the first round."""
    size = SIZE_OF[cell.rsplit("_", 1)[1]]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(steps, seeds, batch, 1, size, size, generator=generator)
    labels = torch.randint(10, (steps, seeds, batch), generator=generator)
    rates: dict[str, list[float]] = {"separate": [], "stacked": []}
    for _ in range(rounds):
        models = seed_models(cell, seeds)
        paths = {"separate": Separate(models), "stacked": Stacked([copy.deepcopy(m) for m in models])}
        for name, path in paths.items():
            path.step(images[0], labels[0])  # warm-up (and vmap's first trace)
            start = time.perf_counter()
            for step in range(1, steps):
                path.step(images[step], labels[step])
            rates[name].append((steps - 1) * seeds * batch / (time.perf_counter() - start))
    models = seed_models(cell, seeds)
    separate, stacked = Separate(models), Stacked([copy.deepcopy(m) for m in models])
    differences = {}
    for step in range(steps):
        separate.step(images[step], labels[step])
        stacked.step(images[step], labels[step])
        if step + 1 in (EARLY, steps):
            expected = detach_stacked(models)
            differences[step + 1] = max((expected[n] - stacked.params[n]).abs().max().item() for n in expected)
    return {
        "separate": statistics.median(rates["separate"]),
        "stacked": statistics.median(rates["stacked"]),
        "early": differences.get(EARLY),
        "difference": differences[steps],
        "params": sum(p.numel() for p in seed_models(cell, 1)[0].parameters()),
    }


def render(rows: list[list[object]], args: argparse.Namespace) -> str:
    return "\n".join(
        [
            "# Several seeds trained as one (torch.func) against one after another",
            "",
            "Generated by `scripts/bench_stacked.py` (the method: its docstring). Both paths in the same process on "
            "the same device, in turn; images/s count every seed's images; the ratio is stacked / one after another.",
            "",
            f"- {datetime.now(UTC).isoformat(timespec='seconds')}; torch {torch.__version__}; "
            f"{torch.get_num_threads()} torch threads; {args.seeds} seeds; {args.steps} steps per round (the first "
            f"untimed), {args.rounds} rounds",
            "",
            *markdown_table(
                [
                    "cell",
                    "parameters",
                    "batch",
                    "one after another, images/s",
                    "stacked, images/s",
                    "stacked / one after another",
                    f"largest parameter difference after {EARLY} / {args.steps} steps",
                ],  # fmt: skip
                rows,
            ),
            "",
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["fcn_rts", "st_fcn_aff_rts"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_stacked.md")
    args = parser.parse_args(argv)
    rows = []
    for cell in args.cells:
        for batch in args.batch:
            m = measure(cell, args.seeds, batch, args.steps, args.rounds)
            ratio, drift = m["stacked"] / m["separate"], f"{m['early']:.1e} / {m['difference']:.1e}"
            rows.append([cell, f"{m['params']:,}", batch, f"{m['separate']:,.0f}", f"{m['stacked']:,.0f}",
                         f"{ratio:.2f}", drift])  # fmt: skip
            print(" | ".join(map(str, rows[-1])), flush=True)
    args.out.write_text(render(rows, args), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
