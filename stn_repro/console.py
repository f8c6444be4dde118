"""The product's console lines: one place that writes them, from global rank 0 only.

Under ``trainer=ddp`` every process runs the training script, so a plain ``print`` shows each of a run's lines
once per process; :func:`say` writes on global rank 0 (Lightning's ``rank_zero_only.rank``, read from ``RANK``,
``LOCAL_RANK`` or ``SLURM_PROCID``) and keeps the other ranks quiet. Lines go out at once (flushed), errors and
warnings to standard error.
"""

from __future__ import annotations

import sys

from pytorch_lightning.utilities import rank_zero_only


def say(message: str = "", *, error: bool = False) -> None:
    """Write ``message`` as one line (to standard error with ``error``), on global rank 0 only."""
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr if error else sys.stdout, flush=True)
