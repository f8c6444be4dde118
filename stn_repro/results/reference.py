"""The paper's published numbers, from the package's copy of ``reference.yaml``.

Each table is a mapping with ``metric``, ``rows`` (label → value, or label → list of values) and, for tables
with several columns, ``columns``. Values are floats, ``null`` where the paper has no number, or a string where
the paper gives a range (co-localisation).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

__all__ = ["load_reference", "paper_value", "table_columns", "table_rows"]

REFERENCE_FILE = "reference.yaml"


def load_reference() -> dict[str, Any]:
    """All published tables by key (e.g. ``"table1_distorted_mnist"``); a fresh copy on every call."""
    return copy.deepcopy(_parsed())


def table_rows(table: str) -> list[str]:
    """Row labels of ``table`` in the paper's order.

    Raises:
        KeyError: unknown table (the message lists the known ones).
    """
    return list(_table(table)["rows"])


def table_columns(table: str) -> list[str | None]:
    """Column labels of ``table`` in the paper's order; ``[None]`` for a single-column table.

    Raises:
        KeyError: unknown table.
    """
    return list(_table(table).get("columns") or [None])


def paper_value(table: str, row: str, column: str | None = None) -> float | None:
    """The published number of ``table`` at ``row`` / ``column`` (``column=None`` for single-column tables).

    Returns ``None`` where the paper gives no single number (``null``, or a range such as ``"75-93 ..."``).

    Raises:
        KeyError: unknown table, row or column, or a column given for a single-column table (and vice versa).
    """
    spec = _table(table)
    rows = spec["rows"]
    if row not in rows:
        raise KeyError(f"table {table!r} has no row {row!r}; rows: {', '.join(map(repr, rows))}")
    columns = spec.get("columns")
    value = rows[row]
    if columns is None:
        if column is not None:
            raise KeyError(f"table {table!r} has a single column; pass column=None, not {column!r}")
    else:
        if column not in columns:
            raise KeyError(f"table {table!r} has no column {column!r}; columns: {', '.join(map(repr, columns))}")
        value = value[columns.index(column)]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@functools.cache
def _parsed() -> dict[str, Any]:
    text = resources.files("stn_repro.results").joinpath(REFERENCE_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _table(table: str) -> dict[str, Any]:
    reference = _parsed()
    if table not in reference:
        raise KeyError(f"unknown reference table {table!r}; known: {', '.join(reference)}")
    return reference[table]
