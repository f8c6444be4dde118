"""Scaling out: batch shares under DDP, a 2-process DDP run (gloo, CPU) against one process, launch checks, run
directories, the SLURM launcher config and requeue, and multiruns through the submitit and joblib launchers."""

import os
import signal
import stat
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_pipeline import CONF, _tiny, tiny_overrides

from stn_repro import components, reproduce
from stn_repro.config import ConfigError
from stn_repro.data.batches import CroppedBatches, TensorBatches, batch_count
from stn_repro.data.volumes import ExtrudedVolumes, VolumeBatches
from stn_repro.results.records import load_records
from stn_repro.scaling import check_launch, resume_checkpoint
from stn_repro.systems import ClassificationSystem
from stn_repro.train import run
from stn_repro.validation import validate

pytestmark = pytest.mark.usefixtures("offline")


def _arrays(n: int = 23, side: int = 6) -> dict[str, np.ndarray]:
    images = np.arange(n * side * side, dtype=np.int64).reshape(n, side, side) % 251
    return {"images": images.astype(np.uint8), "labels": np.arange(n)}


# -- batch shares --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_takes_an_equal_share_of_each_global_batch(world_size):
    """Shares concatenated in rank order = the one-process batch (the last cut to a multiple of the ranks)."""
    arrays, batch = _arrays(), 6
    single = list(TensorBatches(arrays, batch, shuffle=True, seed=4))
    ranks = [list(TensorBatches(arrays, batch, shuffle=True, seed=4, rank=r, world_size=world_size)) for r in
             range(world_size)]  # fmt: skip
    assert [len(r) for r in ranks] == [len(single)] * world_size == [batch_count(23, batch, world_size)] * world_size
    for step, one in enumerate(single):
        shares = [r[step] for r in ranks]
        assert len({len(labels) for _, labels in shares}) == 1  # equal shares: DDP's mean of means is the mean
        kept = len(one[1]) - len(one[1]) % world_size  # 23 = 3 x 6 + 5: the last batch keeps 4 (2 ranks) or 3
        assert torch.equal(torch.cat([labels for _, labels in shares]), one[1][:kept])
        assert torch.equal(torch.cat([images for images, _ in shares]), one[0][:kept])
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        TensorBatches(arrays, 5, rank=0, world_size=2)


def test_random_crops_of_a_share_are_the_crops_one_process_draws():
    arrays = {"images": np.random.default_rng(0).integers(0, 255, (20, 3, 9, 9), dtype=np.uint8),
              "labels": np.arange(20)}  # fmt: skip
    single = list(CroppedBatches(arrays, 10, crop=5, random_crop=True, shuffle=True, seed=2))
    shares = [list(CroppedBatches(arrays, 10, 5, True, shuffle=True, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    for step, (images, labels) in enumerate(single):
        assert torch.equal(torch.cat([shares[0][step][0], shares[1][step][0]]), images)
        assert torch.equal(torch.cat([shares[0][step][1], shares[1][step][1]]), labels)


def test_volume_batches_share_the_same_way():
    digits = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (9, 28, 28), dtype=np.uint8))
    protocol, labels = ExtrudedVolumes(size=40, thickness=4), torch.arange(9)
    single = list(VolumeBatches(protocol, digits, labels, 4, pose_seed=5, shuffle=True, resample=True))
    shares = [list(VolumeBatches(protocol, digits, labels, 4, pose_seed=5, shuffle=True, resample=True, rank=r,
                                 world_size=2)) for r in (0, 1)]  # fmt: skip
    assert len(single) == 3 and len(shares[0]) == len(shares[1]) == 2  # 9 = 2 x 4 + 1: the last is dropped
    for step in range(2):
        torch.testing.assert_close(torch.cat([shares[0][step][0], shares[1][step][0]]), single[step][0])
        assert torch.equal(torch.cat([shares[0][step][1], shares[1][step][1]]), single[step][1])


# -- configuration -------------------------------------------------------------------------------------------------


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=table1/st_cnn_aff_r", *overrides], return_hydra_config=hydra)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["trainer.devices=0"], "trainer.devices"),
        (["trainer.strategy=fsdp"], "trainer.strategy"),
        (["trainer=cpu", "trainer.devices=2"], "trainer.strategy"),
        (["trainer=ddp", "trainer.devices=3"], "profile.batch_size"),  # 64 does not split over 3 processes
        (["trainer=ddp", "trainer.sync_batchnorm=yes"], "trainer.sync_batchnorm"),
    ],
)
def test_bad_trainer_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(*overrides))


def test_ddp_inside_a_multirun_is_refused_unless_slurm_starts_the_ranks(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    cfg = _compose("trainer=ddp", "trainer.devices=4")
    check_launch(cfg, multirun=False)  # a single run: Lightning re-runs this command line for ranks 1-3
    check_launch(_compose("trainer=ddp_spawn", "trainer.devices=4"), multirun=True)
    with pytest.raises(ConfigError, match="trainer=ddp_spawn"):
        check_launch(cfg, multirun=True)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    check_launch(cfg, multirun=True)  # SLURM started the 4 ranks


def test_run_directories_of_jobs_started_together_differ(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    first, second = _compose(hydra=True).hydra, _compose(hydra=True).hydra
    assert first.run.dir != second.run.dir and first.sweep.dir != second.sweep.dir  # microseconds apart
    subdir = OmegaConf.to_container(first.sweep)["subdir"]
    # the jobs of one sweep: their job number, then their swept values
    assert subdir == "${hydra.job.num}-${cell}-seed${seed}${job_suffix:${hydra.job.override_dirname}}"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert _compose(hydra=True).hydra.run.dir == "outputs/table1/st_cnn_aff_r/seed0/4242"  # all ranks, requeues


def test_the_slurm_launcher_asks_one_task_per_device_and_the_requeue_signal(tmp_path, monkeypatch):
    """Our launcher config → Hydra's submitit launcher → the sbatch script submitit would submit."""
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")  # submitit's SLURM executor wants srun on the PATH
    (fake_bin / "srun").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra/launcher=slurm",
                   "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}", hydra=True)  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    executors = []

    def capture(executor, fn, *arguments):
        executors.append(executor)
        return [SimpleNamespace(results=lambda: ["not run"]) for _ in arguments[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == ["not run", "not run"]
    script = executors[0]._executor._make_submission_file_text("python -m stn_repro.train", "uid")
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--signal=USR1@120",
                 "--time=240"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script
    assert "USR2" not in script  # Lightning (USR1) requeues, not submitit


# -- pre-emption ---------------------------------------------------------------------------------------------------


def test_the_slurm_requeue_signal_saves_a_checkpoint_and_the_requeued_job_resumes_from_it(
    tmp_path, data_root, monkeypatch, capsys
):
    """Lightning's SLURM environment on USR1: hpc checkpoint in the run's folder + ``scontrol requeue <job>``."""
    requeues = tmp_path / "requeues.txt"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeues}\n')
    (fake_bin / "scontrol").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    cfg = _tiny(
        "table1/st_cnn_aff_r", tmp_path, data_root, "profile.iterations=6", "profile.val_every=6",
        "fast.steps_per_call=1",  # one optimiser step per training step: the signal and the kill land between steps
    )  # fmt: skip
    original = ClassificationSystem.training_step

    def signalled_at_step_3_killed_at_4(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)  # what SLURM sends signal_delay_s before the time limit
        if self.global_step == 4:
            raise RuntimeError("simulated end of the time slot")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationSystem, "training_step", signalled_at_step_3_killed_at_4)
    with pytest.raises(RuntimeError, match="end of the time slot"):
        run(cfg, tmp_path / "out")
    assert requeues.read_text().split() == ["requeue", "4242"]
    (folder,) = (tmp_path / "ckpt").glob("table1/st_cnn_aff_r/seed0-*")
    assert resume_checkpoint(folder) == folder / "hpc_ckpt_1.ckpt"  # no last.ckpt before step 6
    assert torch.load(folder / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 3

    monkeypatch.setattr(ClassificationSystem, "training_step", original)
    steps_run = []
    monkeypatch.setattr(
        ClassificationSystem, "on_train_batch_start", lambda self, batch, idx: steps_run.append(self.global_step)
    )
    record = run(cfg, tmp_path / "out")
    assert f"resuming from {folder / 'hpc_ckpt_1.ckpt'}" in capsys.readouterr().out
    assert steps_run == [3, 4, 5] and record.iterations == 6 and not list(folder.glob("*.ckpt"))


def test_resume_takes_the_newest_checkpoint(tmp_path):
    assert resume_checkpoint(tmp_path) is None
    for age, name in enumerate(["hpc_ckpt_1.ckpt", "last.ckpt", "hpc_ckpt_2.ckpt"]):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(10**18 + age, 10**18 + age))
    assert resume_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_2.ckpt"
    os.utime(tmp_path / "last.ckpt", ns=(2 * 10**18, 2 * 10**18))
    assert resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"


# -- DDP against one process ---------------------------------------------------------------------------------------


def _one_device_evaluation(cfg, state_dict, figures):
    """val/err and test/err of ``state_dict`` evaluated by one process on the CPU."""
    data = components.data_module(cfg)
    data.prepare_data()
    data.setup()
    model = components.model(cfg, data)
    system = components.system(cfg, model, data, figures)
    system.load_state_dict(state_dict)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    val = trainer.validate(system, datamodule=data, verbose=False)[0]["val/err"]
    return val, trainer.test(system, datamodule=data, verbose=False)[0]["test/err"]


def test_two_ddp_processes_train_like_one_with_the_same_global_batch_and_test_exactly(tmp_path, data_root, monkeypatch):
    """2 ranks (gloo, CPU, ddp_spawn) x 8 samples = 1 process x 16: the same parameters after 10 steps of the paper's
    plain SGD to 1e-7 (float32 rounding of float64 weights); the run's val/test errors equal one process's evaluation
    of the same weights exactly; one W&B run (offline) holds rank 0's training curve and the test error.

    Both runs train in float64 (``trainer.precision=64-true``): in float32 the two sides sum gradients in different
    orders (2 ranks x 1 thread against 1 process x 2 threads, and DDP's all-reduce), and 10 steps at lr 0.1 amplify
    that rounding by a factor that depends on the CPU's kernels (max |dparam| 6e-8 on an AMD EPYC, 4.8e-5 on an
    Intel Xeon). In float64 the same comparison measures 3e-17 (2e-8 after rounding the kept weights to float32): the
    bound tests the sharding, not the CPU.

    (With momentum 0.9 and lr 0.05, 30 steps amplify float rounding differences, even between 1 and 2 threads of
    one process, to 4e-2: a tolerance there would test the dynamics, not the sharding.)"""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # W&B offline, in folders of its own
    for name in ("NETRC", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    common = ("profile.iterations=10", "profile.val_every=10", "profile.batch_size=16", "system.optimizer.lr=0.1",
              "system.optimizer.momentum=0", "data.val_size=200", "trainer.precision=64-true")  # fmt: skip
    single_cfg = _tiny("table1/st_cnn_aff_r", tmp_path / "one", data_root, *common)
    ddp_cfg = _tiny("table1/st_cnn_aff_r", tmp_path / "ddp", data_root, *common, "trainer=ddp_spawn",
                    "trainer.accelerator=cpu", "trainer.devices=2", "logger=wandb")  # fmt: skip
    single, ddp = run(single_cfg, tmp_path / "one" / "out"), run(ddp_cfg, tmp_path / "ddp" / "out")
    assert (single.iterations, ddp.iterations, ddp.device) == (10, 10, "cpu x2 (ddp_spawn)")

    weights = {}
    for name in ("one", "ddp"):  # the final weights every finished run keeps
        (path,) = (tmp_path / name / "models").rglob("weights.pt")
        weights[name] = {f"model.{k}": v.float() for k, v in torch.load(path, weights_only=True).items()}
    pl.seed_everything(0, verbose=False)  # the initial weights, as run() builds them
    data = components.data_module(single_cfg)
    data.prepare_data()
    data.setup()
    initial = components.model(single_cfg, data).state_dict()
    moved = max((weights["one"][f"model.{k}"] - v).abs().max().item() for k, v in initial.items())
    differ = max((weights["one"][k] - weights["ddp"][k]).abs().max().item() for k in weights["one"])
    # float64 training agrees to ~3e-17; the kept weights of the ddp_spawn job come back into the launching process's
    # float32 module, so both sides are compared as float32: at most one rounding step (~3e-8 here) apart
    assert moved > 1e-2 and differ < 1e-7, (moved, differ)

    val_err, test_err = _one_device_evaluation(ddp_cfg, weights["ddp"], tmp_path / "figures")
    assert ddp.metrics["val/err"] == val_err  # every rank validated the whole set, the metric synced sums
    assert ddp.metrics["test/err"] == test_err  # rank 0 tested alone on its device
    (wandb_run,) = (tmp_path / "ddp" / "wandb").glob("offline-run-*/*.wandb")
    logged = wandb_run.read_bytes()
    assert all(key in logged for key in (b"train/loss", b"val/err", b"test/err", b"table1/st_cnn_aff_r"))
    print(f"DDP equivalence: max |Δθ| {differ:.2e} (after moving {moved:.2e}); test/err DDP {ddp.metrics['test/err']}"
          f" = one device {test_err}; one-process run {single.metrics['test/err']}")  # fmt: skip


# -- multiruns through the launchers -------------------------------------------------------------------------------


def _reproduce(tmp_path, data_root, *extra):
    arguments = ["suite=smoke", "profile=quick", *tiny_overrides(tmp_path, data_root)]
    arguments += [f"hydra.sweep.dir={tmp_path / 'multirun'}", *extra]
    assert reproduce.main(arguments) == 0
    return load_records(tmp_path / "runs", "smoke")


_VARYING = {"wall_time_s", "created"}


def _comparable(record):
    fields = {k: v for k, v in record.__dict__.items() if k not in _VARYING}
    fields["metrics"] = {k: v for k, v in record.metrics.items() if k != "train/step_ms"}
    return fields


@pytest.mark.slow  # 1-2 min on 2 busy cores: 5 interpreters start (2 x reproduce + multirun, 2 submitit jobs)
def test_the_submitit_launcher_runs_a_multirun_to_the_basic_launchers_records(tmp_path, data_root):
    basic = _reproduce(tmp_path / "basic", data_root)
    submitit = _reproduce(tmp_path / "submitit", data_root, "hydra/launcher=submitit_local")
    assert [r.cell for r in submitit] == ["fcn_r", "st_cnn_aff_r"]
    assert [_comparable(r) for r in submitit] == [_comparable(r) for r in basic]
    assert len(list((tmp_path / "submitit" / "multirun" / "smoke" / ".submitit").rglob("*_result.pkl"))) == 2


def test_the_joblib_launcher_runs_two_jobs_in_two_workers_and_the_table_is_built(tmp_path, data_root, capfd):
    records = _reproduce(tmp_path, data_root, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2")
    assert "Joblib.Parallel(n_jobs=2," in capfd.readouterr().out
    assert [r.cell for r in records] == ["fcn_r", "st_cnn_aff_r"] and all(r.status == "finished" for r in records)
    table = (tmp_path / "multirun" / "smoke" / "tables" / "table1.md").read_text()  # variants: not in results/
    assert "| FCN | 2.1 / " in table and "| ST-CNN Aff | 0.7 / " in table
    assert OmegaConf.load(tmp_path / "multirun" / "smoke" / "multirun.yaml").hydra.launcher.n_jobs == 2
