"""One training run from a composed Hydra configuration, ending in one run record.

    python -m stn_repro.train experiment=table1/st_cnn_aff_rts seed=1 [profile=paper trainer=gpu logger=wandb]

A run whose record already exists for the same configuration hash is skipped; a run killed part-way resumes from
its last checkpoint; a diverging run (NaN/inf loss) stops with one message and is recorded as ``diverged``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessRaisedException

from stn_repro.config import ConfigError, validate
from stn_repro.data.errors import DataError
from stn_repro.fast import apply_fast_options
from stn_repro.models import count_parameters
from stn_repro.models.cub import PretrainedWeightsError
from stn_repro.results.records import RecordError, RunRecord, find_record, write_record
from stn_repro.scaling import check_launch, describe_device, leave_process_group, resume_checkpoint, test_trainer
from stn_repro.systems import DivergedError
from stn_repro.tasks import deviations, get_task

# Keys that do not change a run's result (where things go, how often it logs) stay out of its hash.
_HASH_EXCLUDED = {
    "paths",
    "logger",
    "progress",
    "hydra",
    "data.root",
    "data.device_resident",
    "profile.seeds",
    "profile.theta_log_every",
    "profile.image_log_every",
    "fast",  # speed options: the same result up to float rounding (tests/test_fast_path.py)
}


def config_hash(cfg: DictConfig, source_checksum: str) -> str:
    """Short hash of everything that determines the run's result: ``cfg`` and the checksum of the source digits."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in _HASH_EXCLUDED:
        parent, _, leaf = key.rpartition(".")
        node = tree.get(parent, {}) if parent else tree
        node.pop(leaf, None)
    tree["source_checksum"] = source_checksum
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_revision() -> str:
    """Short commit of the working tree, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def _loggers(cfg: DictConfig, output_dir: Path, source: str) -> list[pl.loggers.Logger]:
    loggers: list[pl.loggers.Logger] = [pl.loggers.CSVLogger(output_dir, name="csv")]
    if cfg.logger.wandb:
        import wandb

        mode = cfg.logger.mode
        if mode == "auto":
            mode = "online" if wandb.api.api_key else "offline"  # the key itself is never printed
        loggers.append(
            pl.loggers.WandbLogger(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=f"{cfg.suite}/{cfg.cell}",
                name=f"{cfg.cell}-seed{cfg.seed}",
                tags=[cfg.suite, cfg.profile.name, source],
                mode=mode,
                save_dir=str(output_dir),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def run(
    cfg: DictConfig, output_dir: Path, job_index: int | None = None, callbacks: Sequence[pl.Callback] = ()
) -> RunRecord | None:
    """Train and test one cell and seed; returns its record (the existing one when skipped), or ``None`` on the
    DDP ranks other than 0 (rank 0 tests and records; see :mod:`stn_repro.scaling`).

    ``job_index`` (0-based, in a sweep of ``cfg.progress.total`` jobs) only labels the progress line; ``callbacks``
    are added to the trainer's (e.g. ``scripts/bench.py``'s step timer).
    """
    validate(cfg)
    task = get_task(cfg)
    data = task.data(cfg)
    digest = config_hash(cfg, data.source_metadata()["checksum"])
    runs_root = Path(cfg.paths.runs)
    progress = f"cell {job_index + 1}/{cfg.progress.total}: " if cfg.progress and job_index is not None else ""
    what = f"{cfg.cell} on {cfg.data.get('distortion') or cfg.data.name}, seed {cfg.seed}"
    existing = find_record(runs_root, cfg.suite, cfg.cell, cfg.seed, digest)
    if existing is not None:
        print(f"{progress}{what}: done already ({existing.status}), skipping", flush=True)
        return existing
    print(f"{progress}{what} (profile {cfg.profile.name})", flush=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    data.prepare_data()
    data.setup()
    model, description = task.model(cfg, data)
    system = task.system(cfg, apply_fast_options(model, cfg.fast), data, output_dir / "figures")
    timer = StepTimer()
    checkpoints = Path(cfg.paths.checkpoints) / cfg.suite / cfg.cell / f"seed{cfg.seed}-{digest}"
    trainer = pl.Trainer(
        max_steps=cfg.profile.iterations,
        val_check_interval=min(cfg.profile.val_every, cfg.profile.iterations),
        check_val_every_n_epoch=None,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        precision=cfg.trainer.precision,
        num_nodes=cfg.trainer.num_nodes,
        sync_batchnorm=cfg.trainer.get("sync_batchnorm", False),  # a key of the DDP trainer files only
        default_root_dir=checkpoints,  # where Lightning's SLURM requeue handler saves hpc_ckpt_<n>.ckpt
        gradient_clip_val=cfg.optim.grad_clip or None,
        logger=_loggers(cfg, output_dir, data.metadata["source"]["source"]),
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=checkpoints, save_last=True, save_top_k=0, every_n_train_steps=cfg.profile.val_every
            ),
            timer,
            *callbacks,
        ],
        limit_val_batches=1.0 if data.metadata["sizes"]["val"] else 0,
        log_every_n_steps=min(cfg.fast.log_every, cfg.profile.iterations),
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
    )
    resume = resume_checkpoint(checkpoints)
    if resume is not None:
        print(f"  resuming from {resume}", flush=True)
    start = time.perf_counter()
    status, metrics = "finished", None
    try:
        trainer.fit(system, datamodule=data, ckpt_path=resume, weights_only=True)
    except DivergedError as error:
        status = "diverged"
        print(f"  DIVERGED: {cfg.cell} seed {cfg.seed}: {error}", file=sys.stderr, flush=True)
    except ProcessRaisedException as error:  # ddp_spawn: a rank's exception arrives as its traceback text
        if DivergedError.__name__ not in str(error):
            raise
        status = "diverged"
        print(f"  DIVERGED: {cfg.cell} seed {cfg.seed}: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
    wall = time.perf_counter() - start
    fitted = dict(trainer.callback_metrics)  # testing resets them
    if status == "finished" and trainer.interrupted:
        raise KeyboardInterrupt(
            f"{cfg.cell} seed {cfg.seed} interrupted at step {trainer.global_step}; re-run to resume"
        )
    if status == "finished":
        leave_process_group()
    if not trainer.is_global_zero:
        return None
    if status == "finished":
        test = test_trainer(trainer, cfg).test(system, datamodule=data, verbose=False)[0]
        metrics = {name: float(value) for name, value in test.items()}
        if "test/err" in metrics:
            metrics["test/acc"] = 100.0 - metrics["test/err"]
        for name in ("val/err", "train/step_ms"):
            if name in fitted:
                metrics[name] = float(fitted[name])
    _finish_wandb(cfg)
    sizes = data.metadata["sizes"]
    source = data.metadata["source"]
    record = RunRecord(
        suite=cfg.suite,
        cell=cfg.cell,
        table=cfg.paper.table if cfg.paper else "adhoc",
        row=cfg.paper.row if cfg.paper else cfg.cell,
        column=cfg.paper.column if cfg.paper else None,
        seed=cfg.seed,
        profile=cfg.profile.name,
        status=status,
        metrics=metrics,
        data={**source, "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"]},
        params=count_parameters(model),
        iterations=int(fitted.get("train/steps", trainer.global_step)),
        batch_size=cfg.profile.batch_size,
        wall_time_s=round(wall, 2),
        device=describe_device(trainer, cfg),
        git_revision=git_revision(),
        config_hash=digest,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        deviations=deviations(cfg, source, sizes),
    )
    path = write_record(runs_root, record)
    shutil.rmtree(checkpoints, ignore_errors=True)
    result = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.startswith("test/")) if metrics else "diverged"
    print(f"  {result} ({record.params:,} parameters, {description}, {wall:.0f} s) -> {path}", flush=True)
    return record


class StepTimer(pl.Callback):
    """Median wall time of a training iteration (batch start to next batch start) after a warm-up of up to 10
    iterations (a tenth of the run for short runs)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None
        self._warmup = 10

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._warmup = min(10, trainer.max_steps // 10)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None and trainer.global_step > self._warmup:
            self.times.append(now - self._last)
        self._last = now

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # published as metrics: ddp_spawn's ranks hand only trainer.callback_metrics (and weights) back to the job
        trainer.callback_metrics["train/steps"] = torch.tensor(trainer.global_step)
        if self.median_ms is not None:
            trainer.callback_metrics["train/step_ms"] = torch.tensor(self.median_ms, dtype=torch.float64)

    @property
    def median_ms(self) -> float | None:
        return round(1000 * statistics.median(self.times), 3) if self.times else None


def _finish_wandb(cfg: DictConfig) -> None:
    if cfg.logger.wandb:
        import wandb

        wandb.finish()


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners and a known deprecation notice out of the run's output."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    quiet_lightning()
    hydra_cfg = HydraConfig.get()
    job_index = hydra_cfg.job.num if hydra_cfg.mode.name == "MULTIRUN" else None
    try:
        check_launch(cfg, multirun=job_index is not None)
        run(cfg, Path(hydra_cfg.runtime.output_dir), job_index)
    except (ConfigError, DataError, RecordError, PretrainedWeightsError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    torch.set_float32_matmul_precision("high")
    main()
