"""Checks of a composed run configuration (``conf/train.yaml``): every bad value is reported by key, in one line,
before anything runs. The shared groups fit their schemas (:mod:`stn_repro.schema`: types, choices, ranges); the
data, model and system nodes name classes that exist (:mod:`stn_repro.components`); each experiment family adds
its checks across keys (:mod:`stn_repro.tasks`); what is left here is what spans groups (processes and batch,
precision and compile mode against the accelerator, the paper cell, the callbacks)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from stn_repro.callbacks import build_callbacks
from stn_repro.components import check_optimisation, check_targets, data_module
from stn_repro.config import ConfigError, check, check_positive_int, get_value
from stn_repro.fast import CUDA_ONLY_COMPILE_MODES, steps_per_call
from stn_repro.results.reference import paper_value
from stn_repro.schema import check_groups
from stn_repro.tasks import get_task


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid value of a composed ``conf/train.yaml`` configuration."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation to a missing key, a bad resolver, ...
        raise ConfigError(f"config error: {str(error).splitlines()[0]}") from None

    check_targets(cfg)
    task = get_task(cfg)
    if task is not None:
        task.validate(cfg)
    check_groups(cfg)
    check_optimisation(cfg)
    check_positive_int(cfg, "seed", minimum=0)
    data_module(cfg)  # its constructor checks what is left of its arguments (val_size, ...; nothing is read yet)
    check(isinstance(get_value(cfg, "rerun"), bool), "rerun", get_value(cfg, "rerun"), "true or false")
    check_trainer_processes(cfg)
    check_fast_path(cfg)
    build_callbacks(cfg.get("callbacks"), None)  # every side job builds (then thrown away)
    paper = get_value(cfg, "paper")
    if paper is not None:
        try:
            paper_value(paper.table, paper.row, paper.column)
        except KeyError as error:
            raise ConfigError(
                f"config error: paper={OmegaConf.to_container(paper)} names no reference cell ({error})"
            ) from None
    accelerator = get_value(cfg, "trainer.accelerator")  # last: every value above is wrong on any machine
    check(accelerator not in ("gpu", "cuda") or torch.cuda.is_available(), "trainer.accelerator", accelerator,
          "cpu here: no CUDA device is visible (torch.cuda.is_available() is False); use trainer=cpu")  # fmt: skip


def check_trainer_processes(cfg: DictConfig) -> None:
    """Devices, strategy and batch of a job on ``trainer.devices × trainer.num_nodes`` processes: several need
    DDP, and the profile's batch (the global batch) must split into equal shares."""
    processes = get_value(cfg, "trainer.devices") * get_value(cfg, "trainer.num_nodes")
    strategy = get_value(cfg, "trainer.strategy")
    check(processes == 1 or strategy != "auto", "trainer.strategy", strategy,
          f"ddp or ddp_spawn for {processes} processes (trainer.devices x trainer.num_nodes)")  # fmt: skip
    batch = get_value(cfg, "profile.batch_size")
    check(batch % processes == 0, "profile.batch_size", batch,
          f"a multiple of the {processes} processes (trainer.devices x trainer.num_nodes): each takes an equal "
          "share of the global batch")  # fmt: skip


def check_fast_path(cfg: DictConfig) -> None:
    """``trainer.precision`` and the ``fast`` options against the accelerator (:mod:`stn_repro.fast`)."""
    accelerator, precision = get_value(cfg, "trainer.accelerator"), get_value(cfg, "trainer.precision")
    check(precision != "16-mixed" or accelerator in ("gpu", "cuda"), "trainer.precision", precision,
          f"32-true or bf16-mixed on trainer.accelerator={accelerator} (16-mixed needs a GPU)")  # fmt: skip
    mode = get_value(cfg, "fast.compile_mode")
    check(mode not in CUDA_ONLY_COMPILE_MODES or accelerator in ("gpu", "cuda"), "fast.compile_mode", mode,
          f"default or max-autotune on trainer.accelerator={accelerator} ({mode}: CUDA graphs, GPU only)")  # fmt: skip
    steps_per_call(cfg)
