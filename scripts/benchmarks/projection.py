"""Projection of the wall time of the ``paper`` profile of Table 1 from the measured figures."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from benchmarks.plan import MODELS, SIZE_OF

VAL_IMAGES = 6_000  # a validation of the paper profile (every val_every steps)
TEST_IMAGES = 10_000  # the test


def projection(figures: dict[str, Any], paper: DictConfig, batch: int) -> dict[str, Any]:
    """Wall time of the ``paper`` profile of Table 1 on the measured device: every cell × seed trains
    ``iterations`` steps at the measured framework seconds per step (of its model at its input size; scaled per
    image when measured at another batch), validates every ``val_every`` steps on :data:`VAL_IMAGES` and tests on
    :data:`TEST_IMAGES` at the measured forward-only rate; plus generating each dataset (train once per seed,
    test once)."""
    seeds, iterations = len(paper.seeds), paper.iterations
    evaluated = iterations // paper.val_every * VAL_IMAGES + TEST_IMAGES
    cells, total = {}, 0.0
    for model in MODELS:
        for dataset, size in SIZE_OF.items():
            same_size = [f"{model}_{other}" for other, other_size in SIZE_OF.items() if other_size == size]
            measured = next((figures["framework"][c] for c in same_size if c in figures["framework"]), None)
            if measured is None:
                continue
            step_s = measured["s_per_step"] * paper.batch_size / batch
            eval_rate = measured.get("eval_images_per_s")
            run_s = iterations * step_s + (evaluated / eval_rate if eval_rate else 0.0)
            cells[f"{model}_{dataset}"] = {"s_per_step": step_s, "run_s": run_s}
            total += seeds * run_s
    generation = figures.get("generation", {})
    data_s = sum(generation[name]["s"] * (seeds + 1 / 6) for name in ("R", "RTS", "P", "E") if name in generation)
    return {
        "cells": cells,
        "n_cells": len(cells),
        "seeds": seeds,
        "iterations": iterations,
        "train_s": total,
        "data_s": data_s,
        "total_s": total + data_s,
        "complete": len(cells) == 4 * len(MODELS),
    }
