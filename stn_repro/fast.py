"""The fast training path's model options (``fast:`` in ``conf/train.yaml``), applied in one place.

What makes training fast without an option: data resident on the training device and batches sliced by index
(:class:`~stn_repro.data.batches.TensorBatches`, no worker processes), per-epoch distortions generated on that
device, and training scalars accumulated on the device and logged every ``fast.log_every`` steps
(:class:`~stn_repro.systems.ClassificationSystem`). The options below, and mixed precision
(``trainer.precision=bf16-mixed``; the transformer's grid and sampler stay in float32), change the arithmetic only
up to rounding (``tests/test_fast_path.py``); each is measured by ``scripts/bench.py`` (``results/bench.md``) and on
by default only where it wins there.

- ``fast.channels_last``: 2D convolution weights (and so their outputs) in NHWC memory layout.
- ``fast.compile``: ``torch.compile`` of the model in place (its ``state_dict`` keys and checkpoints are unchanged);
  ``fast.compile_mode=reduce-overhead`` adds CUDA graphs (CUDA only: a graph per batch shape, replayed without
  per-kernel launch cost). On CPU it needs a C++ compiler; the first steps are slow while it compiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CUDA_ONLY_COMPILE_MODES = ("reduce-overhead",)


def apply_fast_options(model: nn.Module, fast: Mapping[str, Any]) -> nn.Module:
    """``model`` with the ``fast`` options (``channels_last``, ``compile``, ``compile_mode``) applied in place."""
    if fast["channels_last"]:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):  # 2D convolutions only (a 3D one would need channels_last_3d)
                module.to(memory_format=torch.channels_last)
    if fast["compile"]:
        model.compile(mode=fast["compile_mode"])
    return model
