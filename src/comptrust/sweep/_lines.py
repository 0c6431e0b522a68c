"""Where a key of a TOML document sits: its line number, for errors that point at the plan file's line.

``tomllib`` gives values without positions, so this scans the text for table headers (``[a.b]``, ``[[a]]``) and
``key = value`` lines, and maps each key's path (``("methods", 2, "bits")``, array-of-tables counted from 0, as
pydantic reports locations) to its 1-based line. Values spread over several lines belong to the line of their key.
"""

from __future__ import annotations

import re

__all__ = ["key_lines", "line_of"]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
Path = tuple[str | int, ...]


def _split_key(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", dotted)]


def key_lines(text: str) -> dict[Path, int]:
    """Every table and key path of ``text`` with the line it starts on."""
    lines: dict[Path, int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    table: Path = ()
    depth = 0  # open brackets of a multi-line array value: its lines are not keys
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
        if depth == 0 and (header := _HEADER.match(line)):
            parts = _split_key(header.group(2))
            if header.group(1) == "[[":
                prefix = tuple(parts)
                index = counts.get(prefix, 0)
                counts[prefix] = index + 1
                table = (*prefix, index)
            else:
                table = tuple(parts)
            lines.setdefault(table, number)
            continue
        if depth == 0 and (key := _KEY.match(line)):
            lines.setdefault((*table, *_split_key(key.group(1))), number)
        depth = max(0, depth + line.count("[") - line.count("]"))
    return lines


def line_of(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of ``loc``, or of its nearest enclosing key or table that the text names."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
