"""Exceptions of the data layer.

Every data problem is reported as one :class:`DataError` whose message names the file or thing at fault
and says what the user should do about it.
"""

from __future__ import annotations

from stn_repro.utils import shorten


class DataError(RuntimeError):
    """A data file or data source is missing, unreadable, corrupt or inconsistent."""


class CacheError(DataError):
    """A cached dataset file is missing, corrupt, truncated or was built for a different request."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``"Type: message"`` of ``exc`` on a single line, shortened to ``limit`` characters (for log lines)."""
    return shorten(f"{type(exc).__name__}: {' '.join(str(exc).split())}", limit)
