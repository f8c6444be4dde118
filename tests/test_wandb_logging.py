"""W&B runs that can be compared: visible image grids, θ statistics at their own interval, names carrying the
overrides, sweeps as groups, run facts in the config, and one W&B run across the attempts of a resumed run."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pytorch_lightning.utilities import rank_zero_only
from test_pipeline import _tiny, tiny_overrides

from stn_repro.loggers import MAX_NAME, run_group, run_name, wandb_run_id
from stn_repro.train import run

pytestmark = pytest.mark.usefixtures("offline")
ROOT = Path(__file__).resolve().parents[1]


def _offline_env(tmp_path):
    """W&B offline, with its settings, cache and credentials lookup in folders of its own."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    env.update({name: str(tmp_path / name.lower()) for name in ("NETRC", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR")})
    return env


def _config_value(blob: bytes, key: str, value) -> bool:
    """Whether the ``.wandb`` file's bytes hold config item ``key`` with JSON value ``value`` (wandb 0.31 has no
    reader for its run files; a config item is its key, a few framing bytes, then the value as JSON)."""
    return re.search(re.escape(key.encode()) + rb"[^\w\"{\[]{1,4}" + re.escape(json.dumps(value).encode()), blob)


def test_a_sweep_job_logs_visible_grids_under_its_override_name_in_the_sweep_group(tmp_path, data_root):
    """One job of a Hydra multirun (the CLI, offline W&B): the grids are not constant, the name carries the
    override, the group is the sweep, the config holds parameter count, hash and git revision."""
    command = [
        sys.executable, "-m", "stn_repro.train", "-m", "experiment=table1/st_cnn_aff_r", "system.optimizer.lr=0.003",
        "logger=wandb", "profile.image_log_every=1", *tiny_overrides(tmp_path, data_root),
        f"hydra.sweep.dir={tmp_path / 'lr-sweep'}",
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=_offline_env(tmp_path), check=True, capture_output=True)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    pngs = sorted((run_dir / "files" / "media" / "images").glob("transformed_*.png"))
    assert len(pngs) == 3  # steps 0 and 1, and the end of training
    pixels = np.asarray(Image.open(pngs[-1]))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() > 200, (pixels.min(), pixels.max())

    (record_file,) = (tmp_path / "runs").rglob("seed0-*.json")
    record = json.loads(record_file.read_text())
    (wandb_file,) = run_dir.glob("*.wandb")
    blob = wandb_file.read_bytes()
    assert re.search(rb"st_cnn_aff_r-seed0-[\w.=\-]*system\.optimizer\.lr=0\.003", blob)
    assert b"table1/lr-sweep" in blob
    for key in ("params", "config_hash", "git_revision"):
        assert _config_value(blob, key, record[key]), key


def test_theta_statistics_reach_the_loggers_at_their_own_interval(tmp_path, data_root):
    """θ every 5 steps in a 20-step run whose trainer logs every 20 (``fast.log_every`` 50, capped at the run)."""
    cfg = _tiny("table1/st_cnn_aff_r", tmp_path, data_root, "profile.iterations=20", "profile.val_every=20",
                "profile.theta_log_every=5")  # fmt: skip
    assert run(cfg, tmp_path / "out").status == "finished"
    (metrics,) = (tmp_path / "out" / "csv").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert [int(row["step"]) for row in rows if row["theta/tx"]] == [0, 5, 10, 15]
    assert [int(row["step"]) for row in rows if row["train/loss"]] == [19]


def test_run_names_carry_the_overrides_and_groups_the_sweep():
    assert run_name("st_cnn_aff_rts", 0, []) == "st_cnn_aff_rts-seed0"
    assert run_name("st_cnn_aff_rts", 1, ["system.optimizer.lr=0.003", "model.channels=[4, 4]"]) == (
        "st_cnn_aff_rts-seed1-system.optimizer.lr=0.003-model.channels=[4,4]"
    )
    long = [run_name("cnn_r", 0, [f"data.val_size={n}", *["system.optimizer.momentum=0.9"] * 20]) for n in (1, 2)]
    assert all(len(name) == MAX_NAME for name in long) and long[0] != long[1]
    assert run_group("table1", "cnn_r", "multirun/table1/20260101-120000-000001") == "table1/20260101-120000-000001"
    assert run_group("table1", "cnn_r", None) == "table1/cnn_r"


def test_a_resumed_run_continues_the_wandb_run_of_its_first_attempt(tmp_path, monkeypatch):
    """The id is kept in the run's checkpoint folder (the same for every attempt) and reused when the run resumes
    from a checkpoint there; a run that starts again from step 0 is a new W&B run. Only global rank 0 writes it."""
    checkpoints = tmp_path / "ckpt" / "table1" / "cnn_r" / "seed0-0123456789abcdef"
    first = wandb_run_id(checkpoints)
    assert re.fullmatch(r"[0-9a-f]{16}", first) and (checkpoints / "wandb_id").read_text().strip() == first
    (checkpoints / "last.ckpt").write_bytes(b"")  # the first attempt checkpointed, then was killed
    assert wandb_run_id(checkpoints) == first
    (checkpoints / "last.ckpt").unlink()  # killed before its first checkpoint: the next attempt starts over
    restarted = wandb_run_id(checkpoints)
    assert restarted != first and (checkpoints / "wandb_id").read_text().strip() == restarted
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    wandb_run_id(tmp_path / "rank1")
    assert not (tmp_path / "rank1" / "wandb_id").exists()
