"""What a resumed run needs beyond Lightning's checkpoint: the global random number generators and the wall time.

Lightning's checkpoint holds the weights, the optimiser, the loops and the training batches' position
(:class:`~stn_repro.data.batches.EpochBatches`); :class:`ResumeState` adds the global generators' states (torch CPU
and CUDA, numpy, Python ``random``: dropout, the co-localisation negatives) and the training wall time so far, so
that a run killed part-way and resumed ends with the weights of an uninterrupted run and records the wall time of
all its attempts.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def rng_states() -> dict[str, Any]:
    """The global generators' states, in types that ``torch.load(weights_only=True)`` reads back (no numpy arrays)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, key.tolist(), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_states` (CUDA's when saved and CUDA is available)."""
    torch.set_rng_state(states["torch"])
    name, key, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(pl.Callback):
    """Saves the generators' states and the wall time in every checkpoint; on resume, sets the generators back at
    the start of training (after Lightning's restore) and counts the earlier attempts' time in :attr:`wall_time_s`.

    The time an attempt spent after its last checkpoint is not counted (the resumed attempt does that work again).
    With several processes the checkpoint holds rank 0's generators, which every rank loads.
    """

    def __init__(self) -> None:
        self.earlier_s = 0.0  # the earlier attempts' time, up to the checkpoint this attempt resumed from
        self._start: float | None = None
        self._rng: dict[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    @property
    def wall_time_s(self) -> float:
        """Training wall time of the run so far: the earlier attempts' and this one's (since ``fit`` started)."""
        return self.earlier_s + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s, "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_s = state_dict["wall_time_s"]
        self._rng = state_dict["rng"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rng is not None:
            set_rng_states(self._rng)
            self._rng = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # published as a metric: ddp_spawn's ranks hand only trainer.callback_metrics (and weights) back to the job
        trainer.callback_metrics["train/wall_s"] = torch.tensor(self.wall_time_s, dtype=torch.float64)
