"""Side-job callbacks come from ``conf/callbacks/`` by ``_target_``: a user's own is added by YAML alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from test_pipeline import tiny_overrides

from stn_repro.callbacks import ThetaStatistics, TransformedImages, build_callbacks
from stn_repro.config import ConfigError
from stn_repro.identity import config_hash
from stn_repro.train import run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"

pytestmark = pytest.mark.usefixtures("offline")


class CountSteps(pl.Callback):
    """A user's callback: counts the optimiser steps it sees (kept on the class, to be read after the run)."""

    seen: list[int] = []

    def __init__(self, label: str) -> None:
        self.label = label

    def on_train_batch_end(self, trainer, *args) -> None:
        CountSteps.seen.append(trainer.global_step)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=table1/st_fcn_aff_r", *overrides])


def side_jobs(cfg, figures_dir):
    return build_callbacks(cfg.callbacks, figures_dir)


def test_the_default_side_jobs_are_built_with_the_run_figure_folder(tmp_path):
    jobs = side_jobs(_compose("profile.theta_log_every=7", "profile.image_log_every=0"), tmp_path)
    theta, images = jobs
    assert isinstance(theta, ThetaStatistics) and theta.every == 7
    assert isinstance(images, TransformedImages) and images.every == 0 and images.figures_dir == tmp_path


def test_a_side_job_switched_off_or_added_leaves_the_configuration_hash_alone(tmp_path):
    plain = _compose()
    off = _compose("callbacks.transformed_images=null")
    added = _compose(f"+callbacks.count._target_={__name__}.CountSteps", "+callbacks.count.label=x")
    assert [type(job).__name__ for job in side_jobs(off, tmp_path)] == ["ThetaStatistics"]
    assert [type(job).__name__ for job in side_jobs(added, tmp_path)][-1] == "CountSteps"
    assert config_hash(plain, "c") == config_hash(off, "c") == config_hash(added, "c")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+callbacks.bad._target_=no.such.Callback", "callbacks.bad does not build: "),
        (
            "+callbacks.bad._target_=collections.OrderedDict",
            "callbacks.bad is a OrderedDict, not a Lightning",
        ),
        ("callbacks.theta_statistics.every=-1", "callbacks.theta_statistics does not build: "),
    ],
)
def test_a_bad_side_job_stops_with_one_line_naming_it(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as caught:
        side_jobs(_compose(override), tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=message):  # before anything runs: a suite checks every cell first
        validate(_compose(override))


@pytest.mark.parametrize(
    ("steps_per_call", "seen"),
    [("1", [1, 2, 3]), ("auto", [3])],  # auto: the 3 steps in one training step (gcd of iterations, val_every, ...)
)
def test_a_users_callback_runs_in_a_real_run_from_yaml_alone(tmp_path, data_root, steps_per_call, seen):
    """Its per-batch hooks run once per Lightning training step, after ``fast.steps_per_call`` optimiser steps."""
    CountSteps.seen = []
    cfg = _compose(
        f"+callbacks.count._target_={__name__}.CountSteps",
        "+callbacks.count.label=mine",
        *tiny_overrides(tmp_path, data_root),
        "profile.iterations=3",
        "profile.val_every=3",
        f"fast.steps_per_call={steps_per_call}",
    )
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished" and CountSteps.seen == seen
    assert (tmp_path / "out" / "figures" / "transformed.png").stat().st_size > 0  # the default side jobs ran too
