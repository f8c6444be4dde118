"""One training run from a composed Hydra configuration, ending in one run record.

    python -m stn_repro.train experiment=table1/st_cnn_aff_rts seed=1 [profile=paper trainer=gpu logger=wandb]

:func:`run` reads top to bottom: validate → build the data module → place the run (:class:`RunIdentity`: its hash,
canonical or variant, folders) → build the model and the system (:mod:`stn_repro.components`) → fit → test → record.
A run whose record already exists for the same configuration hash is skipped; a run killed part-way resumes from
its last checkpoint; a diverging run (NaN/inf loss) stops with one message and is recorded as ``diverged``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessRaisedException

from stn_repro import components
from stn_repro.callbacks import StepTimer, build_callbacks
from stn_repro.cli import exit_on_bad_arguments
from stn_repro.config import ConfigError, check_writable
from stn_repro.console import say
from stn_repro.data.base import SplitDataModule
from stn_repro.data.errors import DataError
from stn_repro.fast import apply_fast_options, steps_per_call
from stn_repro.identity import CONF_DIR, config_hash, git_revision, protocol_overrides
from stn_repro.loggers import make_loggers
from stn_repro.models import count_parameters
from stn_repro.models.cub import PretrainedWeightsError
from stn_repro.progress import indented, interactive, progress_callback, run_summary, suite_line
from stn_repro.results.pose import POSE_DISTORTIONS, pose_metrics
from stn_repro.results.records import (
    RecordError,
    RunRecord,
    archive_record,
    find_record,
    record_path,
    run_key,
    write_record,
)
from stn_repro.results.stats import pack_outcomes
from stn_repro.resume import ResumeState
from stn_repro.scaling import check_launch, describe_device, leave_process_group, resume_checkpoint, test_trainer
from stn_repro.sweeps import SweepSummary  # noqa: F401 (registers the job_suffix resolver of hydra.sweep.subdir)
from stn_repro.systems import DivergedError
from stn_repro.tasks import deviations
from stn_repro.utils import atomic_path
from stn_repro.validation import validate


def run(
    cfg: DictConfig,
    output_dir: Path,
    job_index: int | None = None,
    callbacks: Sequence[pl.Callback] = (),
    started_from: str | None = None,
    sweep: str | None = None,
) -> RunRecord | None:
    """Train and test one cell and seed; returns its record (the existing one when skipped), or ``None`` on the
    DDP ranks other than 0 (rank 0 tests and records; see :mod:`stn_repro.scaling`).

    A canonical run (:mod:`stn_repro.identity`) is recorded under ``paths.runs``, any other under ``paths.variants``;
    its final weights and resolved configuration go to ``paths.models`` (:func:`run_folder`).

    ``job_index`` (0-based, in a sweep of ``cfg.progress.total`` jobs) only labels the progress line; ``callbacks``
    are added to the trainer's (e.g. the benchmark's step timer in ``scripts/benchmarks/loops.py``); ``started_from``
    is the experiment the configuration was composed from (Hydra's choice), the reference of a run whose
    ``<suite>/<cell>`` is not one;
    ``sweep`` is the folder of the Hydra multirun the run is a job of (its W&B group, :mod:`stn_repro.loggers`).
    """
    validate(cfg)
    side_jobs = build_callbacks(cfg.get("callbacks"), output_dir / "figures")
    data = components.data_module(cfg)
    identity = RunIdentity.of(cfg, data, started_from)
    existing = _existing_record(identity.runs_root, cfg, identity.digest)
    identity.announce(cfg, data, job_index, existing)
    if existing is not None:  # the sweep's summary reads it as this job's result
        _point_to(output_dir, record_path(identity.runs_root, cfg.suite, cfg.cell, cfg.seed, identity.digest), identity)
        return existing
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data.prepare_data()
    data.setup()
    model = components.model(cfg, data)
    system = components.system(cfg, apply_fast_options(model, cfg.fast), data, output_dir / "figures")
    steps = steps_per_call(cfg)
    if steps > 1:
        system.take_steps_per_call(steps, cfg.trainer.gradient_clip_val)
        data.train_in_groups(steps, cfg.profile.iterations)
    trainer, resume_state = _trainer(cfg, identity, data, model, output_dir, sweep, [*side_jobs, *callbacks], steps)
    status = _fit(trainer, system, data, cfg, identity.checkpoints)
    fitted = dict(trainer.callback_metrics)  # testing resets them
    if not trainer.is_global_zero:
        return None
    tested = _test(trainer, system, data, model, cfg, fitted) if status == "finished" else Tested()
    _finish_wandb(cfg)
    return _record(cfg, identity, data, model, trainer, status, fitted, resume_state, tested, output_dir)


@dataclass
class RunIdentity:
    """What a run is, before it trains: the data's source, its configuration hash, how it differs from its cell's
    reference, whether it is canonical, where its record and model go."""

    source: dict[str, Any]
    digest: str
    overrides: list[str]
    canonical: bool
    runs_root: Path
    models: Path
    checkpoints: Path
    notes: list[str]  # what resolving the data said, printed under the run's first line
    revision: str  # the code's git revision (the W&B config and the record carry it)

    @classmethod
    def of(cls, cfg: DictConfig, data: SplitDataModule, started_from: str | None) -> RunIdentity:
        """Resolve ``data``'s source (quietly: its messages are kept in :attr:`notes`) and place the run.

        Raises:
            DataError: the data cannot be found or read.
            ConfigError: the record or model folder cannot be written.
        """
        notes: list[str] = []
        data.log = notes.append
        source = data.source_metadata()
        data.log = indented
        digest = config_hash(cfg, source["checksum"])
        overrides, canonical = protocol_overrides(cfg, started_from)
        runs_root = Path(cfg.paths.runs if canonical else cfg.paths.variants)
        models = run_folder(cfg.paths.models, cfg.suite, cfg.cell, cfg.seed, digest)
        checkpoints = run_folder(cfg.paths.checkpoints, cfg.suite, cfg.cell, cfg.seed, digest)
        check_writable(runs_root, models.parent)
        return cls(source, digest, overrides, canonical, runs_root, models, checkpoints, notes, git_revision())

    def announce(
        self, cfg: DictConfig, data: SplitDataModule, job_index: int | None, existing: RunRecord | None
    ) -> None:
        """The run's first line (``done already`` when ``existing`` is its record) and the data's notes."""
        progress = ""
        if cfg.progress.total and job_index is not None:
            progress = f"{suite_line(job_index, cfg.progress.total, cfg.progress.started)}: "
        what = f"{cfg.cell} on {cfg.data.get('distortion') or data.name}, seed {cfg.seed}"
        if existing is not None:
            say(f"{progress}{what}: done already ({existing.status}), skipping (rerun=true trains it again)")
        else:
            kind = "canonical" if self.canonical else f"variant: {', '.join(self.overrides) or 'no experiment'}"
            say(f"{progress}{what} ({kind}): {run_summary(cfg, self.source)}")
        for note in self.notes:
            indented(note)


@dataclass
class Tested:
    """What testing a finished run gives: its metrics, per-sample outcomes and, on pose distortions, the pose."""

    metrics: dict[str, float] | None = None
    outcomes: dict[str, Any] | None = None
    pose: dict[str, Any] | None = None


def _trainer(
    cfg: DictConfig,
    identity: RunIdentity,
    data: SplitDataModule,
    model: torch.nn.Module,
    output_dir: Path,
    sweep: str | None,
    callbacks: list[pl.Callback],
    steps_per_call: int = 1,
) -> tuple[pl.Trainer, ResumeState]:
    """The Lightning trainer of the run (checkpoints every ``profile.val_every`` steps; a forced re-run starts from
    step 0) and the callback that carries its wall time across resumed attempts. With ``steps_per_call`` > 1
    (:func:`~stn_repro.fast.steps_per_call`) the system clips the gradients itself and validation is counted in
    training steps of that many optimiser steps."""
    if cfg.rerun:
        shutil.rmtree(identity.checkpoints, ignore_errors=True)
    save_config(identity.checkpoints, cfg)
    resume_state = ResumeState()
    logger = make_loggers(
        cfg,
        output_dir,
        source=data.metadata["source"]["source"],
        overrides=identity.overrides,
        sweep=sweep,
        checkpoint_dir=identity.checkpoints,
        extra_config={
            "params": count_parameters(model),
            "config_hash": identity.digest,
            "git_revision": identity.revision,
        },
    )
    trainer = components.build(
        cfg.trainer,
        "trainer",  # the trainer node: where and how (conf/trainer/)
        max_steps=cfg.profile.iterations,  # optimiser steps, whatever steps_per_call
        val_check_interval=min(cfg.profile.val_every, cfg.profile.iterations) // steps_per_call,
        gradient_clip_val=cfg.trainer.gradient_clip_val if steps_per_call == 1 else None,
        check_val_every_n_epoch=None,
        default_root_dir=identity.checkpoints,  # where Lightning's SLURM requeue handler saves hpc_ckpt_<n>.ckpt
        logger=logger,
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=identity.checkpoints, save_last=True, save_top_k=0, every_n_train_steps=cfg.profile.val_every
            ),
            StepTimer(),
            resume_state,
            progress_callback(cfg),
            *callbacks,
        ],
        limit_val_batches=1.0 if data.metadata["sizes"]["val"] else 0,
        log_every_n_steps=min(cfg.fast.log_every, cfg.profile.iterations),
        enable_model_summary=False,
        enable_progress_bar=interactive(),
    )
    return trainer, resume_state


def _fit(
    trainer: pl.Trainer, system: pl.LightningModule, data: SplitDataModule, cfg: DictConfig, checkpoints: Path
) -> str:
    """Fit, from the last checkpoint in ``checkpoints`` if there is one; returns ``"finished"`` or ``"diverged"``
    (NaN/inf loss).

    Raises:
        KeyboardInterrupt: the run was interrupted (its checkpoint is kept: re-run to resume).
    """
    resume = resume_checkpoint(checkpoints)
    if resume is not None:
        say(f"  resuming from {resume}")
    try:
        trainer.fit(system, datamodule=data, ckpt_path=resume, weights_only=True)
    except DivergedError as error:
        say(f"  DIVERGED: {cfg.cell} seed {cfg.seed}: {error}", error=True)
        return "diverged"
    except ProcessRaisedException as error:  # ddp_spawn: a rank's exception arrives as its traceback text
        if DivergedError.__name__ not in str(error):
            raise
        say(f"  DIVERGED: {cfg.cell} seed {cfg.seed}: {str(error).strip().splitlines()[-1]}", error=True)
        return "diverged"
    if trainer.interrupted:
        raise KeyboardInterrupt(
            f"{cfg.cell} seed {cfg.seed} interrupted at step {trainer.global_step}; re-run to resume"
        )
    leave_process_group()
    return "finished"


def _test(
    trainer: pl.Trainer,
    system: pl.LightningModule,
    data: SplitDataModule,
    model: torch.nn.Module,
    cfg: DictConfig,
    fitted: dict[str, Any],
) -> Tested:
    """Test the fitted ``system`` on one device (:func:`~stn_repro.scaling.test_trainer`): its metrics (with the
    last validation error and step time of ``fitted``, the training's logged values), its per-sample outcomes and,
    on pose distortions, the pose of claim 6."""
    test = test_trainer(trainer, cfg).test(system, datamodule=data, verbose=False)[0]
    metrics = {name: float(value) for name, value in test.items()}
    if "test/err" in metrics:
        metrics["test/acc"] = 100.0 - metrics["test/err"]
    for name in ("val/err", "train/step_ms"):
        if name in fitted:
            metrics[name] = float(fitted[name])
    wrong = getattr(system, "test_wrong", None)
    tested = Tested(metrics, pack_outcomes(wrong.numpy()) if wrong is not None else None)
    test_arrays = getattr(data, "splits", {}).get("test", {})
    if cfg.data.get("distortion") in POSE_DISTORTIONS and "theta" in test_arrays:  # claim 6: upright pose
        measured = pose_metrics(model, test_arrays)
        if measured is not None:
            tested.metrics.update(measured[0])
            tested.pose = measured[1]
    return tested


def _point_to(output_dir: Path, record: Path, identity: RunIdentity) -> None:
    """``<output_dir>/run.json``: where the run's record and final model are (a sweep's summary reads it)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run.json").write_text(json.dumps({"record": str(record), "model": str(identity.models)}) + "\n")


def _record(
    cfg: DictConfig,
    identity: RunIdentity,
    data: SplitDataModule,
    model: torch.nn.Module,
    trainer: pl.Trainer,
    status: str,
    fitted: dict[str, Any],
    resume_state: ResumeState,
    tested: Tested,
    output_dir: Path,
) -> RunRecord:
    """Write the run's record (a record it replaces, with ``rerun=true``, is kept aside), its final model, and
    ``<output_dir>/run.json`` pointing at both; the checkpoints go."""
    wall = float(fitted.get("train/wall_s", resume_state.wall_time_s))  # every attempt's (ddp_spawn: rank 0's)
    sizes, source = data.metadata["sizes"], data.metadata["source"]
    record = RunRecord(
        suite=cfg.suite,
        cell=cfg.cell,
        table=cfg.paper.table if cfg.paper else "adhoc",
        row=cfg.paper.row if cfg.paper else cfg.cell,
        column=cfg.paper.column if cfg.paper else None,
        seed=cfg.seed,
        profile=cfg.profile.name,
        overrides=identity.overrides,
        canonical=identity.canonical,
        status=status,
        metrics=tested.metrics,
        data={**source, "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"]},
        params=count_parameters(model),
        iterations=int(fitted.get("train/steps", trainer.global_step)),
        batch_size=cfg.profile.batch_size,
        wall_time_s=round(wall, 2),
        device=describe_device(trainer, cfg),
        git_revision=identity.revision,
        config_hash=identity.digest,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        deviations=deviations(cfg, source, sizes),
        outcomes=tested.outcomes,
        pose=tested.pose,
    )
    if status == "finished":
        save_model(identity.models, model, cfg)
    path = record_path(identity.runs_root, record.suite, record.cell, record.seed, identity.digest)
    if path.exists():  # rerun=true: the record it replaces is kept aside
        say(f"  replaced record kept as {archive_record(path, 'replaced')}")
    write_record(identity.runs_root, record)
    _point_to(output_dir, path, identity)
    for checkpoint in identity.checkpoints.glob("*.ckpt"):  # the final weights are in `models`
        checkpoint.unlink()
    metrics = tested.metrics
    result = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.startswith("test/")) if metrics else "diverged"
    say(f"  {result} ({record.params:,} parameters, {type(model).__name__}, {wall:.0f} s) -> {path}")
    return record


def run_folder(root: str | Path, suite: str, cell: str, seed: int, digest: str) -> Path:
    """``<root>/<suite>/<cell>/seed<seed>-<hash>``: where a run keeps its checkpoints (``paths.checkpoints``) or
    its final weights and configuration (``paths.models``)."""
    return Path(root) / suite / cell / run_key(seed, digest)


def save_model(folder: Path, model: torch.nn.Module, cfg: DictConfig) -> None:
    """Write the trained ``model``'s weights (``weights.pt``, a state dict: load with ``weights_only=True``) and the
    resolved configuration that builds it (``config.yaml``) into ``folder``, each atomically."""
    with atomic_path(folder / "weights.pt") as tmp:
        torch.save({name: value.contiguous() for name, value in model.state_dict().items()}, tmp)
    save_config(folder, cfg)


def save_config(folder: Path, cfg: DictConfig) -> None:
    """Write the resolved ``cfg`` to ``folder/config.yaml`` (atomically): what ``stn_repro.evaluate`` rebuilds a
    model (or a checkpoint's) from."""
    with atomic_path(folder / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")


def _existing_record(runs_root: Path, cfg: DictConfig, digest: str) -> RunRecord | None:
    """The finished record of this configuration, unless ``rerun=true``; a corrupt one is moved aside (and said)
    so that the cell runs again."""
    try:
        record = find_record(runs_root, cfg.suite, cfg.cell, cfg.seed, digest)
    except RecordError as error:
        kept = archive_record(record_path(runs_root, cfg.suite, cfg.cell, cfg.seed, digest), "corrupt")
        say(f"warning: {error}; moved to {kept}, training the cell again", error=True)
        return None
    return None if cfg.rerun else record


def _finish_wandb(cfg: DictConfig) -> None:
    if cfg.logger.get("wandb"):
        import wandb

        wandb.finish()


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners, a known deprecation notice, its epoch-logging hint, its DDP ``sync_dist``
    hint and its manual-optimisation checkpoint hint out of the run's output (training scalars are logged every
    ``fast.log_every`` steps across epochs: an epoch of 15 batches is fine)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    # fast.steps_per_call > 1 (manual optimisation): a checkpoint holds the state after the call's last step, as at 1
    warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
    # under DDP every process validates on the whole validation set (stn_repro.data.batches): nothing to reduce
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")  # absolute: launch() imports it
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    quiet_lightning()
    hydra_cfg = HydraConfig.get()
    job_index = hydra_cfg.job.num if hydra_cfg.mode.name == "MULTIRUN" else None
    try:
        check_launch(cfg, multirun=job_index is not None)
        run(
            cfg,
            Path(hydra_cfg.runtime.output_dir),
            job_index,
            started_from=hydra_cfg.runtime.choices.get("experiment"),
            sweep=hydra_cfg.sweep.dir if job_index is not None else None,
        )
    except (ConfigError, DataError, RecordError, PretrainedWeightsError) as error:
        say(f"error: {error}", error=True)
        sys.exit(2)


def launch(arguments: Sequence[str]) -> int:
    """Run this Hydra app in the calling process on the command line ``arguments`` (e.g. ``["--multirun",
    "experiment=table1/fcn_r,table1/cnn_r", "seed=0,1"]``, as after ``python -m stn_repro.train``); returns the
    exit status: 0, 1 when a job failed (Hydra has printed why) or 2 on a bad argument or configuration."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    torch.set_float32_matmul_precision("high")
    command_line = sys.argv
    sys.argv = [command_line[0], *arguments]  # hydra.main reads the command line
    GlobalHydra.instance().clear()  # a composition done before (e.g. a suite's plan) must not hold Hydra
    try:
        exit_on_bad_arguments(arguments)
        main()
    except SystemExit as exit:
        return 0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1  # sys.exit(): 0
    finally:
        sys.argv = command_line
        GlobalHydra.instance().clear()
    return 0


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
