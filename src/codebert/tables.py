"""Plain-text tables and the `--json` last line: how every stage shows its figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into docs/results.md); numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_is_number(row[i]) for row in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric)]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *(line(row) for row in cells)])


def duration(seconds: float) -> str:
    """h:mm:ss, for wall times in reports and progress lines."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def json_line(figures: dict[str, Any]) -> str:
    """The one-line JSON object that `--json` prints last."""
    return json.dumps(figures, sort_keys=True, default=str)


def numeric_table(figures: dict[str, Any]) -> str:
    """A figure/value table of the numeric figures of a stage (booleans and text left out)."""
    rows = [[k, v] for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return format_table(["figure", "value"], rows)
