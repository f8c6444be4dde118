"""The recurrent-STN suite (Sønderby et al. 2015): per-digit and sequence errors, the loss, the RNN-SPN's per-step
transformers, identity starts, configs, the RMSprop choice, and every cell end to end with its table."""

import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from stn_repro.config import ConfigError
from stn_repro.models.recurrent import RecurrentSPN, SequenceCNN, build_sequence_model
from stn_repro.results.records import load_records
from stn_repro.results.stats import unpack_outcomes
from stn_repro.results.tables import build_tables
from stn_repro.systems import ClassificationSystem
from stn_repro.systems.digits import DigitSequenceSystem
from stn_repro.tasks import sequences
from stn_repro.train import run
from stn_repro.transformers import get_family, sample
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
CELLS = list(OmegaConf.load(CONF / "suites" / "rnn_spn.yaml").cells)
CANVAS = (1, 100, 100)


pytestmark = pytest.mark.usefixtures("offline")


def _compose(cell, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", *overrides])


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        return self.logits


def _one_hot_logits(predictions):
    return F.one_hot(torch.tensor(predictions), 10).float() * 5.0


def test_per_digit_and_sequence_errors_on_a_hand_made_batch():
    labels = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]])
    predictions = [[1, 0, 0], [4, 5, 6], [7, 8, 0], [0, 1, 2]]  # 2 + 0 + 1 + 0 = 3 wrong digits of 12
    logits = _one_hot_logits(predictions)
    system = DigitSequenceSystem(FixedLogits(logits))
    assert system.wrong(logits, labels).tolist() == pytest.approx([2 / 3, 0, 1 / 3, 0])
    for half in (slice(0, 1), slice(1, 4)):  # batches of different sizes: the means stay exact per digit
        system.model.logits = logits[half]
        system.test_step((torch.zeros(1), labels[half]), 0)
    assert 100 * system.test_error.compute().item() == pytest.approx(100 * 3 / 12)
    assert 100 * system.test_sequence_error.compute().item() == pytest.approx(100 * 2 / 4)
    system.on_test_epoch_end = lambda: None  # (logging needs a trainer) the outcomes: per digit, sample-major
    system.test_wrong = torch.cat(system._test_wrong)
    assert system.test_wrong.tolist() == [False, True, True] + [False] * 3 + [False, False, True] + [False] * 3


def test_loss_sums_the_positions_cross_entropies_and_averages_over_the_batch():
    logits = torch.zeros(2, 3, 10)
    logits[0, 0, 4] = 3.0  # one confident, right position; the rest uniform
    labels = torch.tensor([[4, 1, 2], [3, 3, 3]])
    right = -math.log(math.exp(3.0) / (math.exp(3.0) + 9))
    expected = (right + 5 * math.log(10)) / 2
    assert DigitSequenceSystem(nn.Identity()).loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def _rnn_spn():
    return build_sequence_model("rnn_spn", CANVAS, size=33, channels=(8, 8, 8), hidden=16, loc_hidden=32)


def test_every_transformer_starts_at_the_identity_and_the_cnn_sees_what_the_cnn_spn_sees_then():
    torch.manual_seed(0)
    images = torch.rand(2, *CANVAS)
    identity = get_family("affine").identity(1)
    cnn_spn = build_sequence_model("cnn_spn", CANVAS, channels=(8, 8, 8), hidden=16)
    cnn = build_sequence_model("cnn", CANVAS, channels=(8, 8, 8), hidden=16)
    assert isinstance(cnn, SequenceCNN) and cnn.transformer is None
    warped = cnn_spn.transformer(images)
    assert torch.allclose(cnn_spn.transformer.theta, identity.expand(2, -1))
    resized = F.interpolate(images, size=(50, 50), mode="bilinear", align_corners=False)
    assert torch.allclose(warped, resized, atol=1e-5)
    rnn = _rnn_spn()
    assert rnn(images).shape == (2, 3, 10)
    assert torch.allclose(rnn.transformers.theta, identity.expand(2, 3, -1))


def test_the_rnn_spn_emits_one_theta_per_step_and_classifies_the_glimpses_they_place():
    torch.manual_seed(0)
    model = _rnn_spn()
    assert isinstance(model, RecurrentSPN)
    nn.init.normal_(model.transformers.localisation.head.weight, std=0.05)
    images = torch.rand(2, *CANVAS)
    logits = model(images)
    theta = model.transformers.theta.detach()
    assert theta.shape == (2, 3, 6)
    for a, b in ((0, 1), (0, 2), (1, 2)):  # the GRU's state moves from step to step
        assert (theta[:, a] - theta[:, b]).abs().max() > 1e-4
    glimpses = model.glimpses(images)
    family = get_family("affine")
    for step in range(3):
        expected = sample(images, family.grid(theta[:, step], (33, 33)))
        assert torch.allclose(glimpses[:, step], expected, atol=1e-5)
    with torch.no_grad():
        model.transformers.localisation.head.bias[2] += 0.5  # shift every glimpse along x
    assert not torch.allclose(model(images), logits)


def test_the_localisation_parameter_group_holds_the_recurrent_net_and_the_optimiser_can_be_rmsprop_or_adam():
    model = _rnn_spn()
    system = ClassificationSystem(model, partial(torch.optim.RMSprop, lr=0.1), loc_lr_mult=0.5)
    optimiser = system.configure_optimizers()["optimizer"]
    assert isinstance(optimiser, torch.optim.RMSprop)
    other, localisation = optimiser.param_groups
    assert localisation["lr"] == pytest.approx(0.05) and other["lr"] == pytest.approx(0.1)
    gru = set(map(id, model.transformers.localisation.gru.parameters()))
    assert gru <= set(map(id, localisation["params"])) and not gru & set(map(id, other["params"]))
    assert isinstance(ClassificationSystem(model).configure_optimizers()["optimizer"], torch.optim.SGD)
    adam = ClassificationSystem(model, partial(torch.optim.Adam, lr=0.1), loc_lr_mult=0.5)
    adam = adam.configure_optimizers()["optimizer"]
    assert isinstance(adam, torch.optim.Adam) and [g["lr"] for g in adam.param_groups] == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_composes_and_validates_with_both_profiles(cell):
    cfg = _compose(cell)
    validate(cfg)
    assert cfg.paper.table == "recurrent_stn_mnist_sequences" and cfg.profile.name == "quick"
    assert (
        cfg.data._target_.endswith("DigitSequenceDataModule") and cfg.system.optimizer._target_ == "torch.optim.RMSprop"
    )
    paper = _compose(cell, "profile=rnn_paper")
    validate(paper)
    assert paper.profile.name == "paper" and list(paper.profile.lr_milestones) == sequences.PAPER_MILESTONES
    assert (paper.system.optimizer.lr, paper.profile.batch_size, paper.trainer.gradient_clip_val) == (5e-4, 100, 5.0)
    notes = sequences.deviations(paper, {"full_dataset": True, "source": "idx"}, {"train": 9, "val": 0, "test": 9})
    assert not any(n.startswith(("schedule", "optimiser", "gradient clipping")) for n in notes)
    quick = sequences.deviations(cfg, {"full_dataset": True, "source": "idx"}, {"train": 9, "val": 0, "test": 9})
    assert any(n.startswith("schedule") for n in quick) and not any(n.startswith("RMSprop") for n in quick)
    smoother = _compose(cell, "system.optimizer.alpha=0.99")
    notes = sequences.deviations(smoother, {"full_dataset": True, "source": "idx"}, {"train": 9, "val": 0, "test": 9})
    assert "RMSprop alpha 0.99, eps 1e-06 (authors: Lasagne's 0.9, 1e-6)" in notes


@pytest.mark.parametrize(
    "cell, override, key",
    [
        ("rnn_spn/rnn_spn", "model.kind=lstm", "model.kind"),
        ("rnn_spn/rnn_spn", "model.size=8", "model.size"),
        ("rnn_spn/cnn_spn", "model.loc_channels=[]", "model.loc_channels"),
        ("rnn_spn/cnn", "transformer=affine", "transformer.family"),
        ("rnn_spn/rnn_spn", "data.distortion=TC", "data.distortion"),
        ("rnn_spn/rnn_spn", "system.optimizer.lr=0", "system.optimizer.lr"),
    ],
)
def test_bad_values_name_their_key(cell, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(cell, override))


def test_every_cell_trains_and_tests_on_cpu_and_the_table_is_rnn_spn_md(tmp_path, data_root):
    for cell in CELLS:
        tiny = ["model.channels=[4,4,4]", "model.hidden=8"]
        if cell != "rnn_spn/cnn":
            tiny += ["model.loc_channels=[4,4,4]", "model.loc_hidden=8"]
        cfg = _compose(
            cell, "profile.iterations=2", "profile.val_every=2", "profile.batch_size=250", "profile.theta_log_every=1",
            "data.val_size=8", "data.source=bundled", f"paths.data={data_root}", f"paths.runs={tmp_path / 'runs'}",
            f"paths.variants={tmp_path / 'runs'}", f"paths.models={tmp_path / 'models'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", *tiny,
        )  # fmt: skip
        out = tmp_path / "out" / cfg.cell
        record = run(cfg, out)
        assert record.status == "finished" and record.table == "recurrent_stn_mnist_sequences"
        assert 0 <= record.metrics["test/err"] <= record.metrics["test/seq_err"] <= 100
        wrong = unpack_outcomes(record.outcomes)  # one outcome per test digit: the claims' paired tests
        assert len(wrong) == 3 * record.data["n_test"]
        assert 100 * wrong.mean() == pytest.approx(record.metrics["test/err"])
        assert any("schedule" in d for d in record.deviations) and record.data["full_dataset"] is False
        header = next(out.glob("csv/*/metrics.csv")).read_text().splitlines()[0]
        if cfg.cell == "rnn_spn":
            assert "theta/step2/tx" in header
            assert (out / "figures" / "transformed.png").stat().st_size > 0
        if cfg.cell == "cnn_spn":
            assert "theta/tx" in header
    paths = build_tables(load_records(tmp_path / "runs", "rnn_spn"), tmp_path / "results")
    assert paths["markdown"].name == "rnn_spn.md"
    text = paths["markdown"].read_text()
    for row, paper in (("CNN", 2.9), ("CNN + SPN", 2.0), ("RNN-SPN", 1.5)):
        assert f"| {row} | {paper:g} / " in text
    assert "test/seq_err" in text
