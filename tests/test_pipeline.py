"""The Table 1 pipeline: configs, one run end to end, resume, divergence, suites and the reproduction driver."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stn_repro import components, reproduce
from stn_repro.config import ConfigError
from stn_repro.models import STClassifier, build_matched_model, build_model, count_parameters
from stn_repro.results.records import find_record, load_records
from stn_repro.systems import ClassificationSystem
from stn_repro.train import config_hash, run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
SUITES = {path.stem: OmegaConf.load(path).cells for path in sorted(CONF.glob("suites/*.yaml")) if path.stem != "smoke"}
MNIST_CELLS = SUITES["table1"] + SUITES["cluttered"] + SUITES["addition"]


pytestmark = pytest.mark.usefixtures("offline")


def _compose(cell, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", *overrides])


def tiny_overrides(tmp_path, data_root):
    """Two steps at batch 8 on the bundled sample, every output under ``tmp_path``."""
    return [
        "profile.iterations=2",
        "profile.val_every=2",
        "profile.batch_size=8",
        "data.val_size=16",
        "data.source=bundled",
        f"paths.data={data_root}",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.variants={tmp_path / 'runs'}",
        f"paths.models={tmp_path / 'models'}",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        f"paths.results={tmp_path / 'results'}",
        f"paths.wandb={tmp_path}",
    ]


def _tiny(cell, tmp_path, data_root, *overrides):
    return _compose(cell, *tiny_overrides(tmp_path, data_root), *overrides)


def test_suites_list_every_experiment_file_once():
    files = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for p in CONF.glob("experiment/*/*.yaml"))
    assert sorted(c for cells in SUITES.values() for c in cells) == files
    assert [len(SUITES[name]) for name in ("table1", "cluttered", "svhn", "cub")] == [32, 4, 6, 4]
    assert set(OmegaConf.load(CONF / "suites" / "smoke.yaml").cells) <= set(SUITES["table1"])


@pytest.mark.parametrize("cell", MNIST_CELLS)
def test_every_experiment_composes_validates_and_matches_the_parameter_target(cell):
    cfg = _compose(cell)
    validate(cfg)
    assert cfg.cell == cell.split("/")[1] and cfg.paper.table in (
        "table1_distorted_mnist",
        "translated_cluttered_mnist",
        "table4_mnist_addition",
    )
    channels, size = {"R": (1, 28), "RTS": (1, 42), "P": (1, 28), "E": (1, 28), "TC": (1, 60), "ADD": (2, 42)}[
        cfg.data.distortion
    ]
    shape = SimpleNamespace(
        model_inputs=lambda: {"in_shape": (channels, size, size), "num_classes": cfg.data.num_classes}
    )
    model = components.model(cfg, shape)  # the model node as a run builds it, for data of that shape
    assert abs(count_parameters(model) - cfg.model.param_target) / cfg.model.param_target < 0.05
    assert isinstance(model, STClassifier) == cfg.model.kind.startswith(("st_", "st2_"))
    if cfg.model.kind.startswith("st2_"):  # two transformers, each warping both channels, concatenated
        assert model(torch.rand(3, channels, size, size)).shape == (3, 19)
        assert len(model.transformer.transformers) == 2 and model.classifier.layers[1].in_features == 4 * 21 * 21


@pytest.mark.parametrize("cell", SUITES["addition"])
def test_addition_profile_states_its_optimiser_and_localisation_rate(cell):
    from stn_repro.tasks import mnist

    cfg = _compose(cell, "profile=addition_quick")
    validate(cfg)
    notes = mnist.deviations(cfg, {"full_dataset": True, "source": "idx"}, {"train": 9, "val": 0, "test": 9})
    assert "optimiser adam, lr 0.001 (paper: plain SGD)" in notes
    assert not any("momentum" in n for n in notes)  # Adam ignores system.optimizer.momentum: no note may claim it
    is_st = cfg.model.kind != "fcn" and cfg.model.kind != "cnn"
    assert ("localisation nets at 0.1x the base learning rate (paper: the base rate)" in notes) == is_st
    iterations = {"cnn": 1500, "st2_fcn": 20000}.get(cfg.model.kind, 16000)  # the suite's compute budgets
    assert cfg.model.param_target == 400_000 and cfg.profile.iterations == iterations


def test_a_scaled_perspective_row_is_a_stated_deviation():
    from stn_repro.tasks import deviations

    meta, sizes = {"full_dataset": True, "source": "idx"}, {"train": 9, "val": 0, "test": 9}
    note = "projective transformer: the perspective row (g, h) is 0.1 times its two parameters"
    cases = [("st2_fcn_proj", [], True), ("st_fcn_proj", [], True), ("st2_fcn_proj", ["1.0"], False)]
    cases += [("st2_fcn_aff", ["0.1"], False)]  # an affine transformer has no perspective row
    for cell, scale, stated in cases:
        cfg = _compose(f"addition/{cell}", *(f"++transformer.options.perspective_scale={s}" for s in scale))
        assert any(n.startswith(note) for n in deviations(cfg, meta, sizes)) == stated, (cell, scale)


@pytest.mark.parametrize("cell", MNIST_CELLS)
def test_every_experiment_trains_validates_and_tests_on_cpu(cell, tmp_path, data_root):
    """The full run path (data, model, system, trainer, record) for two training steps of every cell."""
    cfg = _tiny(cell, tmp_path, data_root)
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished" and record.iterations == 2
    assert 0.0 <= record.metrics["test/err"] <= 100.0
    assert record.data["source"] == "bundled" and record.data["full_dataset"] is False
    assert any("not the full" in d for d in record.deviations)
    assert record.config_hash == config_hash(cfg, record.data["checksum"])
    assert find_record(tmp_path / "runs", cfg.suite, cfg.cell, 0, record.config_hash) == record


def test_a_finished_run_is_skipped_and_a_changed_config_runs_again(tmp_path, data_root, capsys):
    cfg = _tiny("table1/fcn_r", tmp_path, data_root)
    first = run(cfg, tmp_path / "out")
    assert run(cfg, tmp_path / "out") == first
    assert "done already" in capsys.readouterr().out
    changed = _tiny("table1/fcn_r", tmp_path, data_root, "system.optimizer.lr=0.02")
    checksum = first.data["checksum"]
    assert config_hash(changed, checksum) != config_hash(cfg, checksum)
    assert config_hash(cfg, checksum) != config_hash(cfg, "another source")
    assert run(changed, tmp_path / "out").config_hash == config_hash(changed, checksum)


@pytest.mark.parametrize(
    ("steps_per_call", "killed_at", "resumed_calls"),
    [("1", 5, [4, 5]), ("auto", 4, [4])],  # auto: 2 optimiser steps per training step (gcd of 6, 2 and 6)
)
def test_a_killed_run_resumes_from_its_last_checkpoint(
    tmp_path, data_root, monkeypatch, capsys, steps_per_call, killed_at, resumed_calls
):
    cfg = _tiny(
        "table1/st_cnn_aff_r", tmp_path, data_root, "profile.iterations=6", "profile.val_every=2",
        f"fast.steps_per_call={steps_per_call}",
    )  # fmt: skip
    original = ClassificationSystem.training_step

    def killed(self, batch, batch_idx):
        if self.global_step == killed_at:
            raise RuntimeError("simulated kill")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationSystem, "training_step", killed)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(cfg, tmp_path / "out")
    assert load_records(tmp_path / "runs", "table1") == []
    checkpoints = list((tmp_path / "ckpt").rglob("last.ckpt"))
    assert len(checkpoints) == 1
    assert torch.load(checkpoints[0], weights_only=True)["global_step"] == 4

    monkeypatch.setattr(ClassificationSystem, "training_step", original)
    steps_run = []
    monkeypatch.setattr(
        ClassificationSystem, "on_train_batch_start", lambda self, batch, idx: steps_run.append(self.global_step)
    )
    record = run(cfg, tmp_path / "out")
    assert "resuming from" in capsys.readouterr().out
    assert steps_run == resumed_calls and record.iterations == 6
    assert not list((tmp_path / "ckpt").rglob("last.ckpt"))


def test_a_diverging_run_is_recorded_as_diverged_never_as_a_number(tmp_path, data_root, capsys):
    cfg = _tiny(
        "table1/fcn_r", tmp_path, data_root, "system.optimizer.lr=1e30", "profile.iterations=20", "profile.val_every=20"
    )
    record = run(cfg, tmp_path / "out")
    assert record.status == "diverged" and record.metrics is None
    assert "DIVERGED" in capsys.readouterr().err
    (stored,) = load_records(tmp_path / "runs", "table1")
    assert stored.status == "diverged" and stored.metrics is None


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.kind=resnet", "model.kind"),
        ("system.optimizer.lr=-0.1", "system.optimizer.lr"),
        ("profile.batch_size=0", "profile.batch_size"),
        ("data.source=internet", "data.source"),
        ("transformer=none", "transformer.family"),
        ("data.val_size=1.5", "data.val_size"),
        ("+data.colour=red", "data.colour: Key 'colour' not in 'DigitData'"),  # a typo is not ignored
        ("+model.depth=3", "model.depth: Key 'depth' not in 'MatchedClassifierModel'"),
        ("model.fcn_layers=two", "model.fcn_layers"),
    ],
)
def test_bad_config_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose("table1/st_cnn_aff_r", override))


def test_reproduce_rejects_bad_values_before_any_training(tmp_path, capsys):
    status = reproduce.main(
        [
            "suite=smoke",
            "profile=quick",
            "system.optimizer.lr=-1",
            f"paths.runs={tmp_path}/runs",
            f"paths.variants={tmp_path}/runs",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "system.optimizer.lr" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert reproduce.main(["suite=nope"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_reproduce_runs_a_suite_builds_its_table_and_skips_it_the_second_time(tmp_path, data_root, capfd):
    arguments = [
        "suite=smoke",
        "profile=quick",
        "profile.iterations=3",
        "profile.val_every=3",
        "profile.batch_size=16",
        "data.source=bundled",
        f"paths.data={data_root}",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.variants={tmp_path / 'runs'}",
        f"paths.models={tmp_path / 'models'}",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        f"paths.results={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    assert reproduce.main(arguments) == 0
    out = capfd.readouterr().out
    assert "stn-repro: suite smoke: profile quick (as requested)" in out.splitlines()
    assert "cell 1/2: fcn_r on R, seed 0" in out and "cell 2/2 (1/2 done, " in out  # then the suite's ETA
    assert "suite ETA" in out and "): st_cnn_aff_r on R, seed 0" in out
    records = load_records(tmp_path / "runs", "smoke")  # the smoke suite records as itself, never as table1
    assert [r.cell for r in records] == ["fcn_r", "st_cnn_aff_r"] and not any(r.canonical for r in records)
    assert records[0].overrides == [
        "profile.batch_size=16",
        "profile.iterations=3",
        "profile.val_every=3",
        "suite=smoke",
    ]
    assert not (tmp_path / "results").exists()  # variant runs never touch the results tables
    table = (tmp_path / "multirun" / "smoke" / "tables" / "table1.md").read_text()
    assert "| ST-CNN Aff | 0.7 / " in table and "NOT THE FULL MNIST" in table and "VARIANT RUNS" in table
    assert (tmp_path / "multirun" / "smoke" / "summary.md").is_file()

    assert reproduce.main(arguments) == 0
    out = capfd.readouterr().out
    assert out.count("done already") == 2 and " parameters, " not in out  # nothing trained


@pytest.mark.slow  # ~130 s on 2 CPU cores
def test_the_quick_profile_learns_st_cnn_beats_fcn_on_rts(tmp_path, data_root):
    """The real quick schedule (FCN 2,500 iterations at batch 256, ST-CNN 1,000 at 64) on the bundled sample: the
    transformer must pay off on RTS."""
    errors = {}
    for cell in ("table1/fcn_rts", "table1/st_cnn_aff_rts"):
        cfg = _compose(
            cell,
            "data.source=bundled",
            f"paths.data={data_root}",
            f"paths.runs={tmp_path / 'runs'}",
            f"paths.variants={tmp_path / 'runs'}",
            f"paths.models={tmp_path / 'models'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}",
        )
        errors[cell] = run(cfg, tmp_path / "out").metrics["test/err"]
    assert errors["table1/st_cnn_aff_rts"] < 20.0
    assert errors["table1/st_cnn_aff_rts"] < errors["table1/fcn_rts"] - 20.0


def test_wandb_runs_offline_without_credentials_and_gets_the_image_grid(tmp_path, data_root, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    cfg = _tiny("table1/st_cnn_aff_r", tmp_path, data_root, "logger=wandb", "profile.image_log_every=1")
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("*.wandb"))
    assert (tmp_path / "out" / "figures" / "transformed.png").stat().st_size > 0


def test_supervised_theta_pulls_the_transformer_towards_the_true_inverse(tmp_path, data_root):
    from stn_repro.data.distortions import get_distortion
    from stn_repro.transformers import get_family

    cfg = _tiny("table1/st_cnn_aff_rts", tmp_path, data_root, "system.theta_loss_weight=1.0")
    validate(cfg)
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished" and any("supervised" in d for d in record.deviations)
    assert {"pose/angle_sd_in", "pose/angle_sd_out", "pose/log_scale_sd_out"} <= set(record.metrics)  # claim 6
    assert record.outcomes["n"] == record.data["n_test"]
    logged = (tmp_path / "out" / "csv").rglob("metrics.csv")
    assert any("train/theta_loss" in path.read_text().splitlines()[0] for path in logged)
    # the loss is the distance to the inverse of the stored sampling θ: zero when the transformer predicts it
    family = get_family("affine")
    generated = get_distortion("RTS").generate(
        torch.randint(0, 255, (4, 28, 28), dtype=torch.uint8), torch.arange(4), torch.Generator().manual_seed(0)
    )
    model, _ = build_matched_model(20_000, kind="st_cnn", in_shape=(1, 42, 42), num_classes=10, family="affine")
    system = ClassificationSystem(model, theta_loss_weight=1.0)
    model.transformer.theta = family.inverse(generated["theta"])
    assert system.theta_loss(generated["theta"]).item() < 1e-10
    model.transformer.theta = family.identity(4)
    assert system.theta_loss(generated["theta"]).item() > 1e-3


def test_weak_theta_supervision_knows_only_the_rotation_or_a_noisy_target():
    from stn_repro.data.distortions import get_distortion
    from stn_repro.transformers import get_family

    family = get_family("affine")
    truth = get_distortion("RTS").generate(
        torch.randint(0, 255, (64, 28, 28), dtype=torch.uint8), torch.arange(64), torch.Generator().manual_seed(0)
    )["theta"]
    model, _ = build_matched_model(20_000, kind="st_cnn", in_shape=(1, 42, 42), num_classes=10, family="affine")
    rotation = ClassificationSystem(model, theta_loss_weight=1.0, theta_target="rotation")
    inverse = family.inverse(truth)
    rescaled = inverse.clone()
    rescaled[:, [0, 1, 3, 4]] *= 1.7  # same rotation, another scale, another shift
    rescaled[:, [2, 5]] += 0.3
    model.transformer.theta = rescaled
    assert rotation.theta_loss(truth).item() < 1e-10  # only the angle is supervised
    assert ClassificationSystem(model, theta_loss_weight=1.0).theta_loss(truth).item() > 0.05  # full: every parameter
    model.transformer.theta = family.identity(64)
    assert rotation.theta_loss(truth).item() > 0.05
    noisy = ClassificationSystem(model, theta_loss_weight=1.0, theta_target_noise=0.2)
    model.transformer.theta = inverse
    torch.manual_seed(0)
    # at the true inverse the noisy loss is the noise's variance: unbiased in expectation, only noisier
    assert noisy.theta_loss(truth).item() == pytest.approx(0.04, rel=0.15)
    with pytest.raises(ValueError, match="theta_target must be one of full, rotation"):
        ClassificationSystem(model, theta_target="scale")


def test_a_bad_theta_target_is_a_config_error():
    with pytest.raises(ConfigError, match=r"system\.theta_target='rotaton' .*expected one of full, rotation"):
        validate(_compose("table1/st_cnn_aff_r", "system.theta_loss_weight=1.0", "system.theta_target=rotaton"))
    with pytest.raises(ConfigError, match=r"system\.theta_target_noise"):
        validate(_compose("table1/st_cnn_aff_r", "system.theta_target_noise=-1"))


@pytest.mark.parametrize("cell", ["table1/st_cnn_tps_e", "table1/cnn_r", "addition/st2_fcn_aff"])
def test_supervised_theta_needs_one_transformer_of_the_distortions_family(cell):
    with pytest.raises(ConfigError, match=r"system\.theta_loss_weight"):
        validate(_compose(cell, "system.theta_loss_weight=1.0"))


@pytest.mark.parametrize("kind,in_shape", [("st_fcn", (1, 28, 28)), ("st_cnn", (1, 42, 42))])
def test_theta_fed_forward_reaches_the_classifiers_output(kind, in_shape):
    settings = dict(kind=kind, in_shape=in_shape, num_classes=10, family="affine", width=16, pool=2)
    plain, fed = build_model(**settings), build_model(**settings, theta_to_classifier=True)
    assert count_parameters(fed) - count_parameters(plain) == 6 * 10  # θ (6) into the 10-way output layer
    fed.eval()
    x = torch.rand(3, *in_shape)
    theta = fed.transformer.localisation(x)
    logits = fed(x)
    logits.sum().backward()
    output = fed.classifier.layers[-1] if kind == "st_fcn" else fed.classifier.output
    assert output.weight.grad[:, -6:].abs().sum() > 0  # the θ columns of the output layer learn
    with torch.no_grad():
        output.weight[:, -6:] += 1.0
        assert not torch.allclose(fed(x), logits)  # ... and move the logits
    assert theta.shape == (3, 6)


def test_theta_fed_forward_needs_one_input_transformer():
    with pytest.raises(ValueError, match="theta_to_classifier needs a model with one input transformer"):
        build_model("cnn", (1, 28, 28), 10, 16, theta_to_classifier=True)
    with pytest.raises(ConfigError, match=r"model\.theta_to_classifier"):
        validate(_compose("table1/cnn_r", "model.theta_to_classifier=true"))
