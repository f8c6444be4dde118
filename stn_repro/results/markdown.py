"""The one Markdown table renderer of the package's result pages and scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_row", "markdown_table"]


def markdown_row(cells: Iterable[object]) -> str:
    """``| a | b |``: each cell as ``str``, a ``|`` inside a cell escaped as ``\\|``."""
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def markdown_table(header: Sequence[object], rows: Iterable[Iterable[object]], compact: bool = False) -> list[str]:
    """The lines of a table: header, rule (``| --- | --- |``, or ``|---|---|`` when ``compact``), one line per row.

    Raises:
        ValueError: a row has more or fewer cells than the header.
    """
    rule = "|" + "---|" * len(header) if compact else markdown_row(["---"] * len(header))
    lines = [markdown_row(header), rule]
    for row in rows:
        cells = list(row)
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells for {len(header)} columns: {cells}")
        lines.append(markdown_row(cells))
    return lines
