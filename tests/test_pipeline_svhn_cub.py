"""Tables 2 and 3 end to end on fixtures in the official formats: every experiment config trains, tests and writes
its record on CPU; missing data stops a suite before training with one message and a "not run" table."""

from pathlib import Path

import pytest
from cub_fixture import write_cub
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from svhn_fixture import write_svhn

from stn_repro import reproduce
from stn_repro.config import ConfigError
from stn_repro.results.records import load_records
from stn_repro.results.tables import build_tables
from stn_repro.train import quiet_lightning, run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
SVHN_CELLS = list(OmegaConf.load(CONF / "suites" / "svhn.yaml").cells)
CUB_CELLS = list(OmegaConf.load(CONF / "suites" / "cub.yaml").cells)


@pytest.fixture(autouse=True)
def quiet():
    quiet_lightning()


@pytest.fixture(scope="module")
def svhn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("svhn-data")
    write_svhn(root, splits=("train", "test", "extra"))
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub-data")
    write_cub(root)
    return root


def _compose(cell, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", *overrides])


def _paths(tmp_path, root):
    return [
        f"paths.data={root}",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.variants={tmp_path / 'runs'}",
        f"paths.models={tmp_path / 'models'}",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        f"paths.results={tmp_path / 'results'}",
    ]


def _tiny_svhn(cell, tmp_path, root, *overrides):
    return _compose(
        cell, "profile.iterations=2", "profile.val_every=2", "profile.batch_size=4", "data.val_size=4",
        "data.workers=1", *_paths(tmp_path, root), *overrides,
    )  # fmt: skip


def _tiny_cub(cell, tmp_path, root, *overrides):
    return _compose(
        cell, "profile.iterations=1", "profile.val_every=1", "profile.batch_size=2", "data.num_workers=0",
        "model.weights=none", *_paths(tmp_path, root), *overrides,
    )  # fmt: skip


@pytest.mark.parametrize("cell", SVHN_CELLS + CUB_CELLS)
def test_every_svhn_and_cub_experiment_composes_and_validates(cell):
    cfg = _compose(cell)
    validate(cfg)
    assert cfg.paper.table == ("table2_svhn" if cell.startswith("svhn/") else "table3_cub")
    assert cfg.profile.name == "quick"
    assert _compose(cell, f"profile={cell.split('/')[0]}_paper").profile.name == "paper"


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.variant=32px", "data.variant"),
        ("model.kind=st_many", "model.kind"),
        ("model.multi_positions=[9]", "model.multi_positions"),
        ("system.theta_loss_weight=1.0", "system.theta_loss_weight"),  # SVHN has no true transform
        ("transformer=tps", None),  # allowed: any 2D family
    ],
)
def test_bad_svhn_values_name_their_key(override, key):
    cfg = _compose("svhn/st_multi_64", override)
    if key is None:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(cfg)


@pytest.mark.parametrize(
    "cell, override, key",
    [
        ("cub/cnn_224", "model.parts=2", "model.parts"),
        ("cub/st2_448", "model.parts=0", "model.parts"),
        ("cub/st2_448", "transformer=affine", "transformer.family"),
        ("cub/st2_448", "model.crop_scale=1.5", "model.crop_scale"),
        ("cub/st2_448", "data.resize=300", "data.resize"),
    ],
)
def test_bad_cub_values_name_their_key(cell, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(cell, override))


@pytest.mark.parametrize("cell", SVHN_CELLS)
def test_every_svhn_experiment_trains_and_tests_on_cpu(cell, tmp_path, svhn_root):
    record = run(_tiny_svhn(cell, tmp_path, svhn_root), tmp_path / "out")
    assert record.status == "finished" and record.table == "table2_svhn"
    assert 0 <= record.metrics["test/err"] <= 100 and record.metrics["train/step_ms"] > 0
    assert record.data["source"].startswith("svhn") and record.data["full_dataset"] is False
    assert any("schedule" in d for d in record.deviations)


@pytest.mark.parametrize("cell", CUB_CELLS)
def test_every_cub_experiment_trains_and_tests_on_cpu(cell, tmp_path, cub_root):
    record = run(_tiny_cub(cell, tmp_path, cub_root), tmp_path / "out")
    assert record.status == "finished" and record.table == "table3_cub"
    assert record.metrics["test/acc"] == pytest.approx(100 - record.metrics["test/err"])
    assert any("random weights" in d for d in record.deviations)
    if "st" in cell:
        assert 0 <= record.metrics["test/crop_in_box"] <= 100
        assert (tmp_path / "out" / "figures" / "crops.png").stat().st_size > 0


def test_cub_table_compares_accuracy_and_lists_crop_in_box(tmp_path, cub_root):
    for cell in ("cub/cnn_224", "cub/st2_224"):
        run(_tiny_cub(cell, tmp_path, cub_root, "data.image_size=96", "data.resize=112", "model.crop_size=64"),
            tmp_path / "out")  # fmt: skip
    paths = build_tables(load_records(tmp_path / "runs", "cub"), tmp_path / "results")
    assert paths["markdown"].name == "table3.md"
    text = paths["markdown"].read_text()
    assert "accuracy %" in text and "| 2xST-CNN 224px | 83.1 / " in text and "| 4xST-CNN 448px | 84.1 / —" in text
    assert "test/crop_in_box" in text and "NOT THE FULL" in text


@pytest.mark.parametrize("suite, expected", [("svhn", "svhn/train/digitStruct.mat"), ("cub", "CUB_200_2011")])
def test_a_suite_without_its_data_stops_before_training_with_a_not_run_table(suite, expected, tmp_path, capfd):
    status = reproduce.main([f"suite={suite}", *_paths(tmp_path, tmp_path / "empty")])
    captured = capfd.readouterr()
    assert status == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()
    table = (tmp_path / "results" / ("table2.md" if suite == "svhn" else "table3.md")).read_text()
    assert "**not run**" in table and expected in table
    assert table.count("/ not run") == (6 if suite == "svhn" else 4)  # every cell, none blank or zero


def test_cub_without_pretrained_weights_stops_before_training(tmp_path, cub_root, capfd):
    status = reproduce.main(["suite=cub", *_paths(tmp_path, cub_root), f"paths.pretrained={tmp_path / 'none'}"])
    err = capfd.readouterr().err
    assert status == 2 and "googlenet-1378be20.pth" in err and "model.weights=none" in err
    assert not (tmp_path / "runs").exists()
