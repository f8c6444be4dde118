"""Several optimiser steps per Lightning training step (``fast.steps_per_call``) change the speed, not the run: the
same weights bitwise, the same logged values at the same steps, the same validation and test errors as one step per
training step, across a learning-rate step, gradient clipping, momentum, an epoch boundary inside a training step,
re-drawn data, a noisy θ loss and a resume; a resume with another count and an impossible count stop with one line."""

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from test_fast_path import FinalWeights
from test_pipeline import tiny_overrides

from stn_repro.config import ConfigError
from stn_repro.data.batches import BatchGroups, TensorBatches
from stn_repro.fast import steps_per_call
from stn_repro.train import run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"

pytestmark = pytest.mark.usefixtures("offline")

#: 40 steps, validation every 20, logging every 10: ``auto`` takes 10 steps per training step.
SHORT = ["profile.iterations=40", "profile.val_every=20", "fast.log_every=10"]
SCENARIOS = {
    # the rate drops ×0.1 at step 15, inside a training step; clipping and momentum carry state between steps
    "schedule-clipping-momentum": [
        "experiment=table1/st_cnn_aff_r", "profile.batch_size=16", "profile.lr_step_every=15",
        "trainer.gradient_clip_val=0.5", "system.optimizer.momentum=0.9",
    ],
    # 31 batches an epoch (3,984 / 128): epoch 1 starts at step 31, inside the training step of steps 30-39, with
    # newly drawn distortions; the θ loss adds noise from the global generator at every step
    "epoch-boundary-redrawn-theta-noise": [
        "experiment=table1/st_cnn_aff_rts", "profile.batch_size=128", "data.resample_every_epoch=true",
        "system.theta_loss_weight=1.0", "system.theta_target_noise=0.05",
    ],
}  # fmt: skip


def _config(tmp_path, data_root, *overrides):
    """The tiny run's outputs and data (``tiny_overrides``), :data:`SHORT`, a ~20k-parameter model, ``overrides``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        tiny = [*tiny_overrides(tmp_path, data_root), *SHORT, "profile.param_target=20000"]
        return compose("train", overrides=[*tiny, *overrides])


class FailAt(pl.Callback):
    """Stops the fit with an error at the end of the training step that reaches optimiser step ``step``."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")


def _train(folder, data_root, *overrides, callbacks=()):
    """One real run: its record, final weights and logged rows (step and the logged values)."""
    weights = FinalWeights()
    record = run(_config(folder, data_root, *overrides), folder / "out", callbacks=[weights, *callbacks])
    (metrics,) = (folder / "out").rglob("metrics.csv")
    with metrics.open() as handle:  # Lightning's "epoch" column: one Lightning epoch holds a grouped run
        rows = [{k: v for k, v in row.items() if v != "" and k != "epoch"} for row in csv.DictReader(handle)]
    return record, weights.state, rows


def _same_run(one, other):
    (record, weights, rows), (expected, expected_weights, expected_rows) = one, other
    assert record.status == expected.status == "finished" and record.iterations == expected.iterations == 40
    assert {k: v for k, v in record.metrics.items() if k != "train/step_ms"} == {
        k: v for k, v in expected.metrics.items() if k != "train/step_ms"
    }
    assert record.outcomes == expected.outcomes
    assert weights.keys() == expected_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], expected_weights[name]), name
    assert rows == expected_rows  # every logged value, at the same step


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ten_steps_per_training_step_train_bitwise_like_one(tmp_path, data_root, scenario):
    assert steps_per_call(_config(tmp_path, data_root, *SCENARIOS[scenario])) == 10
    grouped = _train(tmp_path / "auto", data_root, *SCENARIOS[scenario])
    single = _train(tmp_path / "one", data_root, *SCENARIOS[scenario], "fast.steps_per_call=1")
    _same_run(grouped, single)
    logged = [row for row in grouped[2] if "train/loss" in row]
    assert [int(row["step"]) for row in logged] == [9, 19, 29, 39]  # the loggers' step counts optimiser steps
    assert any("val/err" in row for row in grouped[2])


def test_a_grouped_run_resumes_bitwise_and_refuses_another_steps_per_call(tmp_path, data_root):
    overrides = SCENARIOS["epoch-boundary-redrawn-theta-noise"]
    uninterrupted = _train(tmp_path / "uninterrupted", data_root, *overrides)
    folder = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="simulated kill"):  # after step 30; the checkpoint is step 20's
        _train(folder, data_root, *overrides, callbacks=[FailAt(30)])
    (checkpoint,) = (folder / "ckpt").rglob("last.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 20 and state["steps_per_call"] == 10
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batch": 2}]  # 2 groups
    with pytest.raises(ConfigError, match=r"written with fast\.steps_per_call=10, this run takes 1") as refused:
        _train(folder, data_root, *overrides, "fast.steps_per_call=1")
    assert "\n" not in str(refused.value)
    for old in (folder / "out").rglob("metrics.csv"):
        old.unlink()  # the attempts' CSV logs; the resumed run writes its own
    resumed = _train(folder, data_root, *overrides)
    assert resumed[0].iterations == 40
    for name, value in resumed[1].items():
        assert torch.equal(value, uninterrupted[1][name]), name
    assert resumed[0].metrics["test/err"] == uninterrupted[0].metrics["test/err"]
    assert resumed[0].metrics["val/err"] == uninterrupted[0].metrics["val/err"]


def test_batch_groups_run_through_epochs_and_resume_at_a_group(tmp_path):
    def batches():
        return TensorBatches(
            {"images": torch.zeros(10, 2, 2, dtype=torch.uint8), "labels": torch.arange(10)}, 3, shuffle=True, seed=4
        )  # fmt: skip  (4 batches an epoch, the last of 1 sample)

    flat = []
    loop = batches()
    for _ in range(4):
        flat += [batch[1].tolist() for batch in loop]
    groups = BatchGroups(batches(), 3, 15)
    seen = [[batch[1].tolist() for batch in group.batches()] for group in groups]
    assert len(groups) == len(seen) == 5 and [b for group in seen for b in group] == flat[:15]
    cut = BatchGroups(batches(), 3, 15)
    taken = iter(cut)
    for _ in range(2):
        list(next(taken).batches())
    state = cut.state_dict()
    assert state == {"epoch": 0, "batch": 2}
    resumed = BatchGroups(batches(), 3, 15)
    resumed.load_state_dict(state)
    assert [[batch[1].tolist() for batch in group.batches()] for group in resumed] == seen[2:]
    with pytest.raises(ValueError, match="groups of 4"):
        BatchGroups(batches(), 4, 15)


def _composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment=table1/st_cnn_aff_rts"], 100),  # quick profile: gcd(1,000, 500, 100)
        (["experiment=table1/st_cnn_aff_rts", "profile=paper"], 100),  # gcd(150,000, 5,000, 100)
        (["experiment=table1/st_cnn_aff_rts", "fast.log_every=1"], 1),
        (["experiment=table1/st_cnn_aff_rts", "fast.steps_per_call=20"], 20),
        (["experiment=table1/st_cnn_aff_rts", "trainer=ddp_spawn", "trainer.devices=2"], 1),  # DDP: one per call
        (["experiment=table1/st_cnn_aff_rts", "trainer.precision=16-mixed"], 1),  # its gradient scaler
        (["experiment=colocalisation/t"], 1),  # its own training_step
        (["experiment=cub/st2_224"], 1),  # a DataLoader of JPEGs
    ],
)
def test_auto_takes_what_every_event_allows_where_the_run_can(overrides, expected):
    assert steps_per_call(_composed(*overrides)) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("fast.steps_per_call=3", r"fast\.steps_per_call=3 is invalid; expected a divisor of profile\.iterations=1000"),
        ("fast.steps_per_call=two", r"fast\.steps_per_call='two' is invalid; expected auto or an integer >= 1"),
        ("fast.steps_per_call=0", r"fast\.steps_per_call=0 is invalid; expected auto or an integer >= 1"),
    ],
)
def test_an_impossible_steps_per_call_stops_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate(_composed("experiment=table1/st_cnn_aff_rts", override))
    assert "\n" not in str(caught.value)


def test_several_steps_per_call_where_the_run_cannot_says_why():
    with pytest.raises(ConfigError, match="has its own training_step; use fast.steps_per_call=1"):
        validate(_composed("experiment=colocalisation/t", "fast.steps_per_call=2"))
