"""Work on raw datasets split into tasks for worker processes, and the progress lines it logs."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def run_tasks(function: Callable[[_T], _R], tasks: Sequence[_T], workers: int) -> Iterable[_R]:
    """``function`` over ``tasks``, results in order: in this process for one worker or one task, else in a pool."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(function, tasks)


class Progress:
    """Logs ``<what>: done/total (rate/s)`` each time another tenth of ``total`` is done."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None) -> None:
        self.what, self.total, self.log = what, total, log
        self.done, self.logged_tenths = 0, 0
        self.start = time.perf_counter()

    def advance(self, count: int) -> None:
        self.done += count
        tenths = self.done * 10 // max(self.total, 1)
        if self.log is not None and tenths > self.logged_tenths:
            self.logged_tenths = tenths
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            self.log(f"{self.what}: {self.done:,}/{self.total:,} ({rate:,.0f}/s)")
