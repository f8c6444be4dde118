"""The run's Lightning loggers, named by ``_target_`` in ``conf/logger/``: CSV always
(``<output dir>/csv/version_<n>/metrics.csv``), W&B with ``logger=wandb``.

Each W&B run is labelled so that runs can be compared:

- **name**: ``<cell>-seed<k>`` and the run's overrides (where it differs from its cell's reference,
  :func:`stn_repro.identity.protocol_overrides`), e.g. ``st_cnn_aff_rts-seed0-system.optimizer.lr=0.003``
  (:func:`run_name`);
- **group**: the Hydra multirun the run is a job of, else its cell (:func:`run_group`); **job type**: the cell, so
  that W&B sorts a sweep's runs by cell; **tags**: suite, profile and data source;
- **config**: the resolved configuration and the caller's ``extra_config`` (parameter count, hash, git revision);
- **id**: kept in the run's checkpoint folder, so that a killed run resuming from its checkpoint continues the same
  W&B run; a run that trains from the start gets a new one (:func:`wandb_run_id`);
- **folder**: ``paths.wandb``; W&B writes each run to ``<paths.wandb>/wandb/offline-run-<time>-<id>/`` (``run-...``
  when online), where ``wandb sync <paths.wandb>/wandb`` finds them all.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from stn_repro import components
from stn_repro.scaling import resume_checkpoint

WANDB_ID_FILE = "wandb_id"
MAX_NAME = 128  # characters of a W&B run name


def make_loggers(
    cfg: DictConfig,
    output_dir: Path,
    *,
    source: str,
    overrides: Sequence[str],
    sweep: str | None,
    checkpoint_dir: Path,
    extra_config: Mapping[str, Any],
) -> list[Logger]:
    """The run's loggers, built from their ``_target_`` nodes (``conf/logger/``): the CSV logger in ``output_dir``
    and, with ``logger=wandb``, a W&B run in ``paths.wandb``.

    Args:
        source: the data source (a tag, e.g. ``bundled``).
        overrides: the run's ``key=value`` overrides, in its name.
        sweep: the folder of the Hydra multirun the run is a job of (``hydra.sweep.dir``), ``None`` outside one.
        checkpoint_dir: the run's checkpoint folder (the same for every attempt), where the W&B run id is kept.
        extra_config: added to the W&B run's config (top-level keys).

    ``logger.wandb.mode=auto`` is online when W&B credentials are configured, else offline; the key is never printed.
    """
    loggers: list[Logger] = [components.build(cfg.logger.csv, "logger.csv", save_dir=output_dir)]
    if cfg.logger.get("wandb"):
        import wandb

        node = cfg.logger.wandb
        mode = node.mode
        if mode == "auto":
            mode = "online" if wandb.api.api_key else "offline"
        save_dir = Path(cfg.paths.wandb)
        save_dir.mkdir(parents=True, exist_ok=True)
        loggers.append(
            components.build(
                node,
                "logger.wandb",
                mode=mode,
                name=run_name(cfg.cell, cfg.seed, overrides),
                group=run_group(cfg.suite, cfg.cell, sweep),
                job_type=cfg.cell,
                tags=[cfg.suite, cfg.profile.name, source],
                save_dir=str(save_dir),
                id=wandb_run_id(checkpoint_dir),
                resume="allow",
                config={**OmegaConf.to_container(cfg, resolve=True), **extra_config},
            )
        )
    return loggers


def run_name(cell: str, seed: int, overrides: Sequence[str]) -> str:
    """``<cell>-seed<seed>`` followed by the ``key=value`` ``overrides`` (spaces dropped), joined by ``-``. A name
    longer than :data:`MAX_NAME` is cut and ends in 8 hex digits of the full name's hash, so names stay distinct."""
    name = "-".join([f"{cell}-seed{seed}", *(override.replace(" ", "") for override in overrides)])
    if len(name) <= MAX_NAME:
        return name
    return f"{name[: MAX_NAME - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def run_group(suite: str, cell: str, sweep: str | None) -> str:
    """``<suite>/<name of the sweep folder>`` for a job of a Hydra multirun writing to ``sweep`` (e.g.
    ``table1/20260101-120000-000000``), else ``<suite>/<cell>``."""
    return f"{suite}/{Path(sweep).name}" if sweep else f"{suite}/{cell}"


def wandb_run_id(checkpoint_dir: Path) -> str:
    """The W&B run id of the run checkpointed in ``checkpoint_dir``: the one in its ``wandb_id`` file when the run
    resumes from a checkpoint there (:func:`~stn_repro.scaling.resume_checkpoint`), else (training from the start) a
    new one (16 hex digits), which global rank 0 writes there (the other ranks log nothing to W&B)."""
    path = checkpoint_dir / WANDB_ID_FILE
    if path.is_file() and resume_checkpoint(checkpoint_dir) is not None:
        return path.read_text().strip()
    run_id = secrets.token_hex(8)  # wandb 0.31 has no public id generator; any [0-9a-z] id unique in the project
    if rank_zero_only.rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id
