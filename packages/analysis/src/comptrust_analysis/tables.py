"""Plain-text and Markdown renderings of small tables (no extra dependency; numbers formatted for people)."""

from __future__ import annotations

import polars as pl

__all__ = ["to_markdown", "to_text"]


def _cells(df: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = list(df.columns)
    rows: list[list[str]] = []
    for row in df.iter_rows():
        cells: list[str] = []
        for v in row:
            if v is None:
                cells.append("n/a")
            elif isinstance(v, float):
                cells.append(f"{v:.1f}")
            else:
                cells.append(str(v))
        rows.append(cells)
    return header, rows


def to_markdown(df: pl.DataFrame) -> str:
    header, rows = _cells(df)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_text(df: pl.DataFrame) -> str:
    header, rows = _cells(df)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out) + "\n"
