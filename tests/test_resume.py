"""Exact resume: a run interrupted after a checkpoint and resumed ends with the weights of an uninterrupted run.

Fast: every training batch iterable continues bitwise where its saved state says (mid-epoch and across epochs);
:class:`~stn_repro.resume.ResumeState` restores the global generators; a small Lightning model with dropout,
numpy and Python random draws, resumed mid-epoch, ends bitwise equal. Slow: ``python -m stn_repro.train`` SIGKILLed
right after a mid-epoch checkpoint (``tests/kill_after_checkpoint.py``) and re-run.
"""

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from stn_repro.data.batches import CroppedBatches, TensorBatches
from stn_repro.data.colocalisation import ClassBalancedBatches
from stn_repro.data.volumes import ExtrudedVolumes, VolumeBatches
from stn_repro.results.records import load_records
from stn_repro.resume import ResumeState

ROOT = Path(__file__).resolve().parents[1]


def _images(n, *shape, seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _regenerate(epoch):
    return {"images": _images(23, 4, 4, seed=100 + epoch), "labels": torch.arange(23) % 3}


LOADERS = {  # 5 batches per epoch each
    "tensor": lambda: TensorBatches({"images": _images(23, 4, 4), "labels": torch.arange(23)}, 5, shuffle=True),
    "tensor-regenerated": lambda: TensorBatches(_regenerate(0), 5, shuffle=True, seed=3, regenerate=_regenerate),
    "cropped": lambda: CroppedBatches(
        {"images": _images(23, 3, 8, 8), "labels": torch.arange(23)}, 5, crop=5, random_crop=True, shuffle=True
    ),
    "volumes": lambda: VolumeBatches(
        ExtrudedVolumes(size=40, thickness=4),
        _images(9, 28, 28),
        torch.arange(9),
        2,
        pose_seed=5,
        shuffle=True,
        resample=True,
    ),
    "class-balanced": lambda: ClassBalancedBatches(
        {"images": _images(40, 4, 4).numpy(), "labels": (np.arange(40) % 4)}, per_class=2, seed=1
    ),
}


def _take(batches, n):
    """The next ``n`` batches, one ``iter()`` per epoch as Lightning does; stops mid-epoch like ``max_steps``."""
    out = []
    while len(out) < n:
        for batch in batches:
            out.append(batch)
            if len(out) == n:
                break
    return out


def _tensors(batch):
    if isinstance(batch, dict):
        return [t for key in sorted(batch) for t in _tensors(batch[key])]
    if isinstance(batch, (tuple, list)):
        return [t for item in batch for t in _tensors(item)]
    return [batch]


def _through_checkpoint(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", LOADERS)
@pytest.mark.parametrize("cut", [0, 2, 5, 7, 10])
def test_batches_resume_where_their_state_says(name, cut):
    make = LOADERS[name]
    assert len(make()) == 5
    reference = _take(make(), 13)
    first = make()
    seen = _take(first, cut)
    state = _through_checkpoint(first.state_dict())
    assert state == {"epoch": cut // 5, "batch": cut % 5}
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    seen += _take(resumed, 13 - cut)
    assert len(seen) == len(reference)
    for got, expected in zip(seen, reference, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(_tensors(got), _tensors(expected), strict=True))


def _draws():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def test_resume_state_restores_the_generators_and_adds_the_earlier_wall_time():
    saved = ResumeState()
    saved.on_fit_start(None, None)
    state = _through_checkpoint(saved.state_dict())
    expected = _draws()
    restored = ResumeState()
    restored.load_state_dict(state)
    assert restored.earlier_s == state["wall_time_s"] > 0
    restored.on_fit_start(None, None)
    restored.on_train_start(None, None)
    got = _draws()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert restored.wall_time_s >= state["wall_time_s"]


class _NoisyClassifier(pl.LightningModule):
    """A linear classifier of 4×4 images behind dropout (torch's global generator), its loss scaled by numpy and
    Python draws: its weights depend on the batches and on all three global generators."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        scale = 1.0 + 0.1 * float(np.random.rand()) + 0.1 * random.random()
        return scale * nn.functional.cross_entropy(self.net(images), labels % 3)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        return LOADERS["tensor-regenerated"]()


def _fit(steps, folder, resume=None):
    pl.seed_everything(0, verbose=False)
    model = _NoisyClassifier()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=4),
            ResumeState(),
        ],
    )
    trainer.fit(model, ckpt_path=resume, weights_only=True)
    return model


def test_lightning_resumes_mid_epoch_exactly(tmp_path, recwarn):
    uninterrupted = _fit(17, tmp_path / "uninterrupted")
    _fit(12, tmp_path / "interrupted")  # stops at a checkpoint in epoch 2 (5 batches an epoch), at batch 2
    checkpoint = torch.load(tmp_path / "interrupted" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 2, "batch": 2}]
    resumed = _fit(17, tmp_path / "interrupted", resume=tmp_path / "interrupted" / "last.ckpt")
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


# -- a real SIGKILL of `python -m stn_repro.train` ---------------------------------------------------------------------


def _command(tmp_path, data_root, name, iterations, val_every, *overrides):
    """``python -m stn_repro.train`` for a short ST-CNN run on the bundled sample, batch 16 of 3,936 training samples
    (246 batches an epoch), a checkpoint every ``val_every`` steps; everything under ``tmp_path / name``."""
    folder = tmp_path / name
    return [
        "experiment=table1/st_cnn_aff_r",
        f"profile.iterations={iterations}",
        f"profile.val_every={val_every}",
        "profile.batch_size=16",
        "data.val_size=64",
        "data.source=bundled",
        f"paths.data={data_root}",
        f"paths.runs={folder / 'runs'}",
        f"paths.variants={folder / 'runs'}",
        f"paths.models={folder / 'models'}",
        f"paths.checkpoints={folder / 'ckpt'}",
        f"paths.results={folder / 'results'}",
        f"hydra.run.dir={folder / 'out'}",
        *overrides,
    ]


def _start(arguments, kill_after=None):
    """The run as a subprocess; with ``kill_after``, one that SIGKILLs itself after that step's checkpoint."""
    script = (
        [str(ROOT / "tests" / "kill_after_checkpoint.py"), str(kill_after)] if kill_after else ["-m", "stn_repro.train"]
    )
    command = [sys.executable, *script, *arguments]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, returncode=0):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == returncode, output
    return output


def _result(folder):
    (record,) = load_records(folder / "runs", "table1")
    (weights,) = (folder / "models").glob("**/weights.pt")
    return record, torch.load(weights, weights_only=True)


@pytest.mark.slow  # 1-2 min (fixed) and 3-5 min (resampled) each on 2 busy CPU cores: 3 runs, ~20 s start-up each
@pytest.mark.parametrize(
    ("overrides", "iterations", "val_every", "kill_after", "position"),
    [
        pytest.param(["fast.steps_per_call=1"], 60, 20, 40, {"epoch": 0, "batch": 40}, id="fixed"),
        pytest.param(
            ["data.resample_every_epoch=true", "fast.steps_per_call=1"],
            300,
            50,
            250,
            {"epoch": 1, "batch": 4},
            id="resampled",
        ),
        # auto: 20 and 50 optimiser steps per training step; the saved position counts groups of batches, and the
        # resampled run's group 4 (batches 200-249) crosses into epoch 1 at batch 246
        pytest.param([], 60, 20, 40, {"epoch": 0, "batch": 2}, id="fixed-grouped"),
        pytest.param(
            ["data.resample_every_epoch=true"], 300, 50, 250, {"epoch": 0, "batch": 5}, id="resampled-grouped"
        ),
    ],
)
def test_a_run_sigkilled_mid_epoch_and_rerun_ends_bitwise_equal(
    tmp_path, data_root, overrides, iterations, val_every, kill_after, position
):
    reference = _start(_command(tmp_path, data_root, "uninterrupted", iterations, val_every, *overrides))
    interrupted = _command(tmp_path, data_root, "interrupted", iterations, val_every, *overrides)
    _finish(_start(interrupted, kill_after=kill_after), returncode=-9)  # alongside the reference (2 cores)
    (checkpoint,) = (tmp_path / "interrupted" / "ckpt").glob("**/last.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == kill_after
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [position]
    partial_s = state["callbacks"]["ResumeState"]["wall_time_s"]
    assert "resuming from" in _finish(_start(interrupted))
    _finish(reference)
    (record, weights), (expected, expected_weights) = (
        _result(tmp_path / "interrupted"),
        _result(tmp_path / "uninterrupted"),
    )
    assert record.iterations == expected.iterations == iterations
    assert weights.keys() == expected_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], expected_weights[name]), name
    assert record.metrics["test/err"] == expected.metrics["test/err"]
    assert record.metrics["val/err"] == expected.metrics["val/err"]  # the last validation ran after the resume
    assert record.wall_time_s > partial_s > 0
    walls = {"killed at checkpoint": partial_s, "resumed": record.wall_time_s, "uninterrupted": expected.wall_time_s}
    print(json.dumps({"test/err": record.metrics["test/err"], "wall_time_s": walls}))
