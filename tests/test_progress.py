"""What a run prints while it trains: lines without a terminal, the step bar, the suite's ETA, notices said once."""

import re

import pytest
import pytorch_lightning as pl
import torch
from test_pipeline import _tiny
from torch.utils.data import DataLoader, TensorDataset

from stn_repro.config import ConfigError
from stn_repro.data.sources import resolve_digits
from stn_repro.progress import StepProgressBar, duration, suite_line
from stn_repro.train import run
from stn_repro.validation import validate

pytestmark = pytest.mark.usefixtures("offline")


def test_without_a_terminal_a_line_every_n_steps_and_after_each_validation(tmp_path, data_root, capsys):
    overrides = ["profile.iterations=20", "profile.val_every=10", "progress.every=5", "fast.log_every=5"]
    run(_tiny("table1/fcn_r", tmp_path, data_root, *overrides), tmp_path / "out")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fcn_r on R, seed 0") and lines[0].endswith(
        ": profile quick, cpu, data bundled (5,000 MNIST digits, NOT the full dataset)"
    )
    assert [line for line in lines if "BUNDLED SAMPLE" in line][0].startswith("  digits: WARNING")
    progress = [line for line in lines if re.match(r"  (step|validation at step) \d+/20", line)]
    assert [re.search(r"step (\d+)/", line)[1] for line in progress] == ["5", "10", "10", "15", "20", "20"]
    steps = [line for line in progress if line.startswith("  step")]
    pattern = r"  step \d+/20: loss \d+\.\d{4}(, val err \d+\.\d\d%)?, [\d,]+ img/s, \d+ s elapsed, ETA \d+ s"
    assert all(re.fullmatch(pattern, line) for line in steps)
    assert "val err" not in steps[1] and "val err" in steps[2] and steps[3].endswith("ETA 0 s")
    assert re.fullmatch(r"  validation at step 10/20: val err \d+\.\d\d%", progress[2])


class _Ones(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_the_bar_counts_optimiser_steps_to_max_steps_across_epochs(tmp_path, capsys):
    bar = StepProgressBar()
    trainer = pl.Trainer(max_steps=7, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(_Ones(), DataLoader(TensorDataset(torch.ones(3, 1)), batch_size=1))  # 3 steps an epoch
    assert trainer.current_epoch > 1
    assert (bar.train_progress_bar.total, bar.train_progress_bar.n) == (7, 7)
    output = capsys.readouterr().out
    assert "7/7" in output and "Epoch" not in output


def test_suite_line_counts_the_cells_done_and_extrapolates_their_mean_time():
    assert suite_line(0, 5, started=1000.0, now=1500.0) == "cell 1/5"
    assert suite_line(2, 5, started=None) == "cell 3/5"
    assert suite_line(2, 5, started=1000.0, now=1120.0) == "cell 3/5 (2/5 done, 2m00s elapsed, suite ETA 3m00s)"
    assert suite_line(4, 5, started=0.0, now=4 * 3600.0) == "cell 5/5 (4/5 done, 4h00m elapsed, suite ETA 1h00m)"
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 3660)] == ["0 s", "1m00s", "1m01s", "59m59s", "1h01m"]


def test_the_download_failure_and_bundled_warning_are_said_once_per_process(tmp_path):
    said = []
    for _ in range(2):
        assert resolve_digits(tmp_path, log=said.append).source == "bundled"
    assert [("torchvision" in line, "BUNDLED SAMPLE" in line) for line in said] == [(True, False), (False, True)]


def test_progress_every_must_be_a_positive_step_count(tmp_path, data_root):
    with pytest.raises(ConfigError, match="progress.every=0"):
        validate(_tiny("table1/fcn_r", tmp_path, data_root, "progress.every=0"))
