"""The product's console lines: one place that writes them, from global rank 0 only.

Under ``trainer=ddp`` every process runs the training script, so a plain ``print`` shows each of a run's lines
once per process; :func:`say` writes on global rank 0 (Lightning's ``rank_zero_only.rank``, read from ``RANK``,
``LOCAL_RANK`` or ``SLURM_PROCID``) and keeps the other ranks quiet. Lines go out at once (flushed), errors and
warnings to standard error. :func:`show` writes a markdown text (a sweep's summary table): laid out by ``rich`` on a
terminal, as written otherwise (a log file or a pipe gets the markdown itself).
"""

from __future__ import annotations

import sys

from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console
from rich.markdown import Markdown


def say(message: str = "", *, error: bool = False) -> None:
    """Write ``message`` as one line (to standard error with ``error``), on global rank 0 only."""
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr if error else sys.stdout, flush=True)


def show(markdown: str) -> None:
    """Write the markdown text ``markdown`` to standard output, on global rank 0 only: rendered (tables aligned,
    headings styled) when standard output is a terminal, else as it is."""
    if rank_zero_only.rank != 0:
        return
    console = Console()
    if console.is_terminal:
        console.print(Markdown(markdown))
    else:
        print(markdown, flush=True)
