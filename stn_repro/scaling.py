"""One training job on several processes (Lightning DDP), on one machine or under SLURM.

- ``trainer=ddp``: Lightning's subprocess launcher re-runs the command line once per extra device (single runs), or
  SLURM starts one task per device (``hydra/launcher=slurm``: tasks per node = devices) and Lightning reads the
  ranks from SLURM's environment. Not inside a Hydra multirun started on one machine: the re-run command line is
  the whole sweep (:func:`check_launch` says so and names the alternatives).
- ``trainer=ddp_spawn``: Lightning starts the ranks from inside the job (``torch.multiprocessing``), so it works in
  any multirun launcher; the ranks hand back the trained weights and ``trainer.callback_metrics``.
- Batches: the profile's batch size is the global batch; each rank takes its share (:mod:`stn_repro.data.batches`).
- Test: the process that records (global rank 0, or ddp_spawn's launching process) tests the trained model alone on
  its device, after the ranks leave their process group: exactly what a one-device run of the same weights gives.
- Pre-emption: SLURM sends ``USR1`` before the time limit (``hydra/launcher=slurm``); Lightning's SLURM environment
  saves ``hpc_ckpt_<n>.ckpt`` into ``default_root_dir`` (the run's checkpoint folder) and requeues the job; the
  requeued job resumes from the newest checkpoint of that folder (:func:`resume_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig
from pytorch_lightning.strategies import SingleDeviceStrategy

from stn_repro.config import ConfigError


def world_size(cfg: DictConfig) -> int:
    """Processes of one training job: ``trainer.devices × trainer.num_nodes``."""
    return cfg.trainer.devices * cfg.trainer.num_nodes


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Raise :class:`ConfigError` for ``trainer=ddp`` inside a Hydra multirun whose ranks SLURM does not start:
    Lightning would start ranks 1..N-1 by re-running the command line, i.e. the whole sweep, in every rank."""
    if multirun and cfg.trainer.strategy == "ddp" and world_size(cfg) > 1 and not SLURMEnvironment.detect():
        raise ConfigError(
            "config error: trainer.strategy='ddp' inside a Hydra multirun would start every extra rank by re-running "
            "the whole sweep; use trainer=ddp_spawn for sweeps on one machine, hydra/launcher=slurm (SLURM starts "
            "the ranks) on a cluster, or trainer=ddp for a single run"
        )


def resume_checkpoint(folder: Path) -> Path | None:
    """The newest of ``folder/last.ckpt`` (written every ``profile.val_every`` steps) and Lightning's
    ``folder/hpc_ckpt_<n>.ckpt`` (written when SLURM signals the end of the job's time); ``None`` without either."""
    candidates = [path for path in (folder / "last.ckpt", *folder.glob("hpc_ckpt_*.ckpt")) if path.is_file()]
    return max(candidates, key=lambda path: path.stat().st_mtime_ns, default=None)


def leave_process_group() -> None:
    """After training, every rank leaves the process group (after a barrier), so that nothing later in the job
    synchronises across processes: metrics computed afterwards are this process's own."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def test_trainer(trainer: pl.Trainer, cfg: DictConfig) -> pl.Trainer:
    """The trainer that tests a model trained by ``trainer``: ``trainer`` itself with one process; else a trainer
    on ``trainer``'s root device alone, with the same loggers (no distributed sampler padding the test set, no
    cross-process reduction)."""
    if trainer.world_size == 1:
        return trainer
    return pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        strategy=SingleDeviceStrategy(trainer.strategy.root_device),
        precision=cfg.trainer.precision,
        logger=trainer.loggers,
        enable_model_summary=False,
        enable_progress_bar=trainer.progress_bar_callback is not None,
    )


def describe_device(trainer: pl.Trainer, cfg: DictConfig) -> str:
    """E.g. ``"cpu"``, or ``"cuda:0 x8 (ddp)"`` for a job on 8 processes."""
    device = str(trainer.strategy.root_device)
    return device if trainer.world_size == 1 else f"{device} x{trainer.world_size} ({cfg.trainer.strategy})"
