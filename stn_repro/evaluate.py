"""Re-test a trained model: a finished run, or a checkpoint of one, on its test set or on other data.

    python -m stn_repro.evaluate RUN [data=<name>] [key=value ...]

``RUN`` is a run's model folder (``results/models/<suite>/<cell>/seed<k>-<hash>``: ``weights.pt`` and
``config.yaml``, kept by every finished run), its record (``results/{runs,variants}/.../seed<k>-<hash>.json``; the
folder is then looked up under ``paths.models``, default ``results/models``) or a Lightning checkpoint
(``outputs/checkpoints/.../last.ckpt``, beside the ``config.yaml`` its run wrote when it started).

The run's own configuration builds the model; ``data=<name>`` swaps in ``conf/data/<name>.yaml`` (e.g. a model
trained on R tested on P or E: same image size) and ``key=value`` sets any value (e.g. ``data.source=idx
paths.data=/my/mnist`` for MNIST's official test set from IDX files you supply). The metrics are printed and recorded
in ``<model folder>/evaluations/<data>-<source>-<checksum>.json``. Weights load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from stn_repro import components
from stn_repro.config import ConfigError
from stn_repro.console import say
from stn_repro.data.errors import DataError
from stn_repro.identity import CONF_DIR
from stn_repro.results.records import RecordError, read_record
from stn_repro.train import quiet_lightning
from stn_repro.utils import atomic_path
from stn_repro.validation import validate

USAGE = "usage: python -m stn_repro.evaluate RUN [data=<name>] [key=value ...]  (RUN: model folder, record or .ckpt)"


def locate(run: Path, models_root: Path) -> tuple[Path, Path, Path]:
    """``(weights file, config.yaml, model folder)`` of ``run`` (a model folder, a record or a checkpoint)."""
    if run.suffix == ".ckpt":
        return run, run.parent / "config.yaml", run.parent
    if run.suffix == ".json":
        record = read_record(run)
        run = models_root / record.suite / record.cell / run.stem
    return run / "weights.pt", run / "config.yaml", run


def configure(config_file: Path, overrides: Sequence[str]) -> DictConfig:
    """The run's resolved configuration with ``overrides`` applied (``data=<name>``: ``conf/data/<name>.yaml``)."""
    cfg = OmegaConf.load(config_file)
    if any(OmegaConf.select(cfg, f"{node}._target_") is None for node in ("data", "model", "system")):
        raise ConfigError(
            f"{config_file} predates configurations that name their classes (data, model and system _target_): "
            "train the run again with this version, or copy those nodes' _target_ lines from conf/ into it"
        )
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"argument {override!r} is not key=value; {USAGE}")
        if key == "data":
            data_file = CONF_DIR / "data" / f"{value}.yaml"
            if not data_file.is_file():
                known = ", ".join(sorted(p.stem for p in data_file.parent.glob("*.yaml")))
                raise ConfigError(f"unknown data {value!r}; expected one of {known}")
            data = OmegaConf.load(data_file)
            data.pop("defaults", None)  # its system choice: the run's own system tests the model
            cfg.data = data
        elif OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise ConfigError(f"config error: the run's configuration has no key {key!r}")
        else:
            OmegaConf.update(cfg, key, yaml.safe_load(value))
    validate(cfg)
    return cfg


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's state dict from ``weights.pt`` or from a Lightning checkpoint's ``model.`` entries."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".ckpt":
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    return state


class LoadedRun(NamedTuple):
    """A finished run rebuilt: its configuration, its data module (set up), its model with the trained weights."""

    cfg: DictConfig
    data: pl.LightningDataModule
    model: torch.nn.Module
    folder: Path  # the model folder (where evaluations are recorded)
    weights: Path  # the weights file or checkpoint read


def load_run(run: Path, overrides: Sequence[str] = ()) -> LoadedRun:
    """Rebuild ``run`` (see :func:`locate`) after ``overrides``: configuration, data and trained model.

    Raises:
        ConfigError: no such run, a bad override, or data the model cannot take (the message says which).
        DataError, RecordError: the data or the record cannot be read.
    """
    models_root = Path(dict(o.partition("=")[::2] for o in overrides).get("paths.models", "results/models"))
    weights_file, config_file, folder = locate(run, models_root)
    for needed in (weights_file, config_file):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing: is {run} a finished run's model folder, record or checkpoint?")
    cfg = configure(config_file, overrides)
    data = components.data_module(cfg)
    data.prepare_data()
    data.setup()
    model = components.model(cfg, data)
    try:
        model.load_state_dict(load_weights(weights_file))
    except RuntimeError as error:
        shape = getattr(data, "input_shape", "?")
        raise ConfigError(
            f"the model of {folder.name} does not fit data {cfg.data.name} (input {shape}): "
            f"{str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error}"
        ) from None
    return LoadedRun(cfg, data, model, folder, weights_file)


def evaluate(run: Path, overrides: Sequence[str] = ()) -> tuple[dict[str, float], Path]:
    """Test ``run`` (see :func:`locate`) after ``overrides``; returns its metrics and the evaluation record's path.

    Raises: as :func:`load_run`.
    """
    cfg, data, model, folder, weights_file = load_run(run, overrides)
    system = components.system(cfg, model, data, None)
    accelerator = cfg.trainer.accelerator if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=cfg.trainer.precision, logger=False,
        enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    metrics = {k: float(v) for k, v in trainer.test(system, datamodule=data, verbose=False)[0].items()}
    if "test/err" in metrics:
        metrics["test/acc"] = 100.0 - metrics["test/err"]
    source = data.metadata["source"]
    result = {
        "run": str(folder),
        "weights": str(weights_file),
        "overrides": list(overrides),
        "data": {"name": cfg.data.name, **source, "n_test": data.metadata["sizes"]["test"]},
        "metrics": metrics,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = folder / "evaluations" / f"{cfg.data.name}-{source['source']}-{str(source['checksum'])[:12]}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return metrics, out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        say(__doc__ if argv else USAGE)
        return 0 if argv else 2
    try:
        metrics, out = evaluate(Path(argv[0]), argv[1:])
    except (ConfigError, DataError, RecordError) as error:
        say(f"error: {error}", error=True)
        return 2
    say(", ".join(f"{name} {value:.2f}" for name, value in metrics.items()) + f" -> {out}")
    return 0


if __name__ == "__main__":
    quiet_lightning()
    sys.exit(main())
