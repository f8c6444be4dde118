"""The run's side-job callbacks from the ``callbacks`` nodes of its configuration (``conf/callbacks/``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate

from stn_repro.cli import one_line
from stn_repro.config import ConfigError


def build_callbacks(nodes: Mapping[str, Any] | None, figures_dir: Path | None) -> list[pl.Callback]:
    """Instantiate each ``_target_`` node of ``nodes`` (a node set to null is left out); a node's ``figures_dir`` is
    set to ``figures_dir``.

    Raises:
        ConfigError: a node does not build a Lightning callback (the message names it).
    """
    built = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        try:
            callback = instantiate(node, **({"figures_dir": figures_dir} if "figures_dir" in node else {}))
        except Exception as error:  # Hydra wraps whatever the target raised (import, signature, value)
            raise ConfigError(f"config error: callbacks.{name} does not build: {one_line(error)}") from None
        if not isinstance(callback, pl.Callback):
            raise ConfigError(
                f"config error: callbacks.{name} is a {type(callback).__name__}, not a Lightning callback"
            )
        built.append(callback)
    return built
