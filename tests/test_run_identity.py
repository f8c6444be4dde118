"""Run identity: sweep points never overwrite each other, canonical vs variant records, forced and corrupt re-runs,
kept models and their evaluation, one-line argument errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stn_repro import evaluate, reproduce
from stn_repro.cli import check_arguments
from stn_repro.config import ConfigError
from stn_repro.identity import compose_config, config_hash, git_revision, protocol_overrides, suite_profile_file
from stn_repro.results.records import load_records
from stn_repro.train import run
from tests.test_pipeline import _tiny

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("offline")


def _paths(tmp_path, data_root):
    return [
        "data.source=bundled",
        f"paths.data={data_root}",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.variants={tmp_path / 'variants'}",
        f"paths.models={tmp_path / 'models'}",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        f"paths.results={tmp_path / 'results'}",
    ]


def test_the_readme_sweep_keeps_both_points_and_writes_a_summary(tmp_path, data_root):
    command = [sys.executable, "-m", "stn_repro.train", "-m", "experiment=table1/st_cnn_aff_rts,table1/fcn_r",
               "system.optimizer.lr=0.003,0.01", "profile.iterations=4", "profile.val_every=4", "profile.batch_size=8",
               "data.val_size=16", *_paths(tmp_path, data_root)]  # fmt: skip
    # the default sweep folder, multirun/<time>: one folder although the swept experiments could differ in suite
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [r for r in load_records(tmp_path / "variants", "table1") if r.cell == "st_cnn_aff_rts"]
    # system.optimizer.lr=0.01 is the profile's own value: that point differs from its experiment by the schedule alone
    assert sorted("system.optimizer.lr=0.003" in r.overrides for r in records) == [False, True]
    assert all("profile.iterations=4" in r.overrides for r in records)
    assert len({r.config_hash for r in records}) == 2 and not any(r.canonical for r in records)
    assert not (tmp_path / "runs").exists()  # no canonical record: nothing for the committed tables
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [j.split("-", 2)[2] for j in jobs][0].startswith("seed0-") and "system.optimizer.lr=0.003" in jobs[0]
    summary = (sweep / "summary.md").read_text()
    assert (
        "`system.optimizer.lr=0.003, " in summary
        and "`system.optimizer.lr=0.01, " in summary
        and "best val/err" in summary
    )
    assert (sweep / "summary.csv").read_text().count("\n") == 5  # 2 experiments x 2 learning rates
    assert "Sweep summary" in done.stdout
    again = subprocess.run([*command, "hydra.sweep.dir=again"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0 and again.stdout.count("done already (finished), skipping") == 4
    rows = list(csv.DictReader((tmp_path / "again" / "summary.csv").open()))
    first = {(r["experiment"], r["point"]): r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert len(rows) == 4 and all(r == first[(r["experiment"], r["point"])] for r in rows)  # the runs done before

    model = next((tmp_path / "models" / "table1" / "st_cnn_aff_rts").iterdir())
    metrics, out = evaluate.evaluate(model)
    stored = json.loads(out.read_text())
    by_hash = {r.config_hash: r for r in records}
    assert metrics["test/err"] == by_hash[model.name.split("-")[1]].metrics["test/err"]  # the same weights, re-tested
    assert stored["data"]["name"] == "rts" and stored["metrics"] == metrics


def test_a_typo_in_the_experiment_exits_non_zero_with_close_matches():
    done = subprocess.run([sys.executable, "-m", "stn_repro.train", "experiment=table1/st_cnn_aff_rst"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: unknown experiment 'table1/st_cnn_aff_rst': did you mean table1/st_cnn_aff_rts or "
        "table1/st_cnn_aff_r or table1/st_fcn_aff_rts?"
    )


@pytest.mark.parametrize(
    "arguments,says",
    [
        (["experiment=table1/fcn_r", "system.optimizer.lrr=0.1"], "Could not override 'system.optimizer.lrr'"),
        (["-m", "experiment=table1/fcn_r", "system.optimizer.lr=0.1,0.2", "data=rtz"], "Could not find 'data/rtz'"),
        (["experiment=table1/fcn_r,table1/fcn_rtz"], "unknown experiment 'table1/fcn_rtz'"),
        (["system.optimizer.lr=["], "no viable alternative"),
        (["optim.lr=0.1"], r"optim\.lr is no longer a key: .*; use system\.optimizer\.lr$"),
        (["-m", "optim.grad_clip=1,5"], r"optim\.grad_clip is no longer a key: .*; use trainer\.gradient_clip_val$"),
        (["optim.name=adam"], r"use optimizer=<sgd\|sgd_momentum\|rmsprop\|adam>"),
    ],
)
def test_bad_arguments_are_one_line(arguments, says):
    with pytest.raises(ConfigError, match=says) as info:
        check_arguments(arguments)
    assert "\n" not in str(info.value)


def test_reproduce_reads_its_arguments_with_hydras_override_parser():
    suites, profile, rest = reproduce.parse_arguments(
        ["suite=table1,cluttered", "profile=quick", "system.optimizer.lr=0.1,0.2"]
    )
    assert (suites, profile, rest) == (["table1", "cluttered"], "quick", ["system.optimizer.lr=0.1,0.2"])
    for arguments, says in [
        (["suite=tabel1"], "unknown suite 'tabel1'; did you mean table1?"),
        (["profile=quick,paper"], "profile=quick,paper names several profiles"),
        (["suite"], "Error parsing override 'suite'"),
        (["+optim.theta_loss_weight=1"], r"optim\.theta_loss_weight is no longer a key: .*system\.theta_loss_weight"),
    ]:
        with pytest.raises(ConfigError, match=says) as info:
            reproduce.parse_arguments(arguments)
        assert "\n" not in str(info.value)


def test_canonical_means_the_suites_own_configuration():
    assert protocol_overrides(compose_config(["experiment=table1/fcn_r"])) == ([], True)
    assert protocol_overrides(compose_config(["experiment=addition/fcn", "profile=addition_quick"])) == ([], True)
    # device, speed and output options are not changes to the cell
    same = compose_config(["experiment=table1/fcn_r", "trainer.devices=2", "fast.compile=true", "logger=wandb"])
    assert protocol_overrides(same) == ([], True)
    ddp = compose_config(["experiment=table1/fcn_r", "trainer=ddp"])  # its file's sync_batchnorm: false
    assert protocol_overrides(ddp) == ([], True)
    synced = compose_config(["experiment=table1/fcn_r", "trainer=ddp", "trainer.sync_batchnorm=true"])
    assert protocol_overrides(synced) == (["trainer.sync_batchnorm=true"], False)
    assert protocol_overrides(compose_config(["experiment=table1/fcn_r", "system.optimizer.lr=0.1"])) == (
        ["system.optimizer.lr=0.1"],
        False,
    )
    smoke = compose_config(["experiment=table1/fcn_r", "suite=smoke"])
    assert protocol_overrides(smoke, started_from="table1/fcn_r") == (["suite=smoke"], False)


def test_a_change_is_listed_once_not_again_under_the_keys_that_mirror_it():
    """``system.iterations: ${profile.iterations}`` and ``model.family_options: ${transformer.options}`` follow the
    key they name: a run's overrides list that key alone, unless the mirror itself is set."""
    coloc = compose_config(["experiment=colocalisation/t", "profile.iterations=2"])
    assert protocol_overrides(coloc) == (["profile.iterations=2"], False)
    tps = compose_config(["experiment=table1/st_cnn_tps_r", "transformer.options.grid_size=3"])
    assert protocol_overrides(tps) == (["transformer.options.grid_size=3"], False)
    own = compose_config(["experiment=colocalisation/t", "system.iterations=5"])  # the mirror set by hand
    assert protocol_overrides(own) == (["system.iterations=5"], False)


def test_rerun_keeps_the_old_record_and_a_corrupt_record_is_set_aside_and_retrained(tmp_path, data_root, capsys):
    cfg = _tiny("table1/fcn_r", tmp_path, data_root)
    first = run(cfg, tmp_path / "out")
    assert run(cfg, tmp_path / "out") == first and "rerun=true trains it again" in capsys.readouterr().out
    cfg.rerun = True
    again = run(cfg, tmp_path / "out")
    assert again.created >= first.created
    (replaced,) = (tmp_path / "runs" / "table1" / "fcn_r" / "replaced").glob("*.json")
    assert json.loads(replaced.read_text())["created"] == first.created
    cfg.rerun = False
    (current,) = (tmp_path / "runs" / "table1" / "fcn_r").glob("seed0-*.json")
    current.write_text("{half")
    retrained = run(cfg, tmp_path / "out")
    assert retrained.status == "finished" and "moved to" in capsys.readouterr().err
    assert len(list((tmp_path / "runs" / "table1" / "fcn_r" / "replaced").glob("*.corrupt-*.json"))) == 1


def test_an_unwritable_runs_folder_stops_before_training(tmp_path, data_root):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    cfg = _tiny("table1/fcn_r", tmp_path, data_root, f"paths.variants={blocked / 'runs'}")
    with pytest.raises(ConfigError, match="cannot write to .*blocked/runs"):
        run(cfg, tmp_path / "out")
    assert not (tmp_path / "ckpt").exists()


def test_reproduce_checks_that_its_tables_can_be_written_before_training(tmp_path, data_root, capsys):
    from stn_repro import reproduce

    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    arguments = ["suite=cluttered", "profile=quick", *_paths(tmp_path, data_root), f"paths.results={blocked}"]
    assert reproduce.main(arguments) == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and "blocked/figures" in err and "Traceback" not in err
    assert not (tmp_path / "ckpt").exists()  # nothing trained
    assert reproduce.main(["--help"]) == 0 and "python -m stn_repro.reproduce" in capsys.readouterr().out


def test_sweep_points_and_their_intervals():
    from stn_repro.sweeps import job_suffix, mean_interval, swept_overrides

    lr = "system.optimizer.lr=0.1"
    job = ["experiment=a/b", "seed=1", "profile=quick", "profile.iterations=20", "paths.runs=/x", lr,
           "progress.total=3", "suite=smoke"]  # fmt: skip
    assert swept_overrides(job) == ["profile.iterations=20", lr]
    assert job_suffix(f"{lr},paths.runs=/tmp/x,seed=0") == f"-{lr}" and job_suffix("seed=0") == ""
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 / 3**0.5)  # t(0.975, 2 df) x sd 1 / sqrt(3)
    assert mean_interval([5.0]) == (5.0, None)


@pytest.mark.parametrize(
    "override,says",
    [
        ("system.optimizer.lrr=0.1", "Could not override 'system.optimizer.lrr'"),
        ("model=resnet", "Could not find 'model/resnet'"),
        ("trainer=gpu", "no CUDA device is visible"),
    ],
)
def test_reproduce_config_errors_are_one_line(override, says, tmp_path, data_root, capsys, monkeypatch):
    from stn_repro import reproduce

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert reproduce.main(["suite=smoke", *_paths(tmp_path, data_root), override]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and "Traceback" not in err


def test_options_at_their_neutral_default_leave_the_hash_as_before():
    from stn_repro.identity import NEUTRAL_DEFAULTS, config_hash, result_tree

    cfg = compose_config(["experiment=table1/st_cnn_aff_r"])
    tree = result_tree(cfg)
    for key in NEUTRAL_DEFAULTS:
        head, _, leaf = key.rpartition(".")
        assert leaf not in tree[head]  # at the neutral value: not hashed
    changed = compose_config(["experiment=table1/st_cnn_aff_r", "model.theta_to_classifier=true"])
    assert config_hash(changed, "x") != config_hash(cfg, "x")
    assert protocol_overrides(changed) == (["model.theta_to_classifier=true"], False)


COMMITTED_RECORDS = {"table1": 32, "cluttered": 4, "addition": 8, "colocalisation": 2, "mnist3d": 2, "rnn_spn": 3}


@pytest.mark.parametrize("suite", COMMITTED_RECORDS)
def test_the_committed_canonical_records_are_current(suite):
    """Every committed canonical record is what reproduce would plan today (at its suite's profile): a config
    change that alters their hashes (e.g. a new option) would silently orphan them."""
    records = load_records(REPO / "results" / "runs", suite)
    assert len(records) == COMMITTED_RECORDS[suite]
    for record in records:
        profile = suite_profile_file(suite, record.profile)
        cfg = compose_config([f"experiment={suite}/{record.cell}", f"seed={record.seed}", f"profile={profile}"])
        assert config_hash(cfg, record.data["checksum"]) == record.config_hash, record.cell


def test_the_revision_is_dirty_only_when_the_code_differs_from_the_commit(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    for name in ("stn_repro/train.py", "conf/train.yaml", "results/table1.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    head = git_revision(tmp_path)
    assert len(head) >= 7 and "+" not in head
    (tmp_path / "results" / "table1.md").write_text("a suite's own table, rewritten as it goes\n")
    (tmp_path / "results" / "new.json").write_text("{}")  # a new record
    assert git_revision(tmp_path) == head
    (tmp_path / "conf" / "train.yaml").write_text("v2\n")
    assert git_revision(tmp_path) == f"{head}+dirty"
    assert git_revision(tmp_path / "nowhere") == "unknown"
