"""One self-contained HTML report: inline CSS, plots as inline SVG, no script and no network, readable offline.

Sections: the across-seeds table, scores side by side, refusal rates, the paper comparison (when asked for), MMLU and
the Beyond-Perplexity tables (when the runs hold them), the
plots, and sample responses per perspective. Samples that may be offensive (every toxicity sample: its prompts are
chosen to elicit toxic text) and refused samples are folded behind a ``<details>`` element with a warning.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from comptrust_analysis.load import LoadedRun
from comptrust_analysis.paper import compare_wide
from comptrust_analysis.seeds import seed_wide

__all__ = ["render_html", "sample_responses"]

_MAX_CHARS = 600

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
.note { color: #555; font-size: .9rem; } .plot svg { max-width: 100%; height: auto; }
details { margin: .5rem 0; border: 1px solid #e0b000; background: #fffbe6; padding: .3rem .6rem; }
summary { cursor: pointer; font-weight: 600; } pre { white-space: pre-wrap; margin: 0; font-size: .85rem; }
"""


def _cell(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1f}"
    return html.escape(str(v))


def _table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_svg(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    return re.sub(r"<!DOCTYPE[^>]*>", "", text).strip()


def sample_responses(runs: list[LoadedRun], per_kind: int = 2) -> pl.DataFrame:
    """Up to ``per_kind`` answered and ``per_kind`` refused responses per (run, endpoint, perspective)."""
    if not runs:
        return pl.DataFrame()
    records = pl.concat([r.records.with_columns(run=pl.lit(r.path.name)) for r in runs])
    prompt = pl.coalesce(
        pl.col("request").struct.field("prompt"),
        pl.col("request").struct.field("messages").list.last().struct.field("content"),
    )
    return (
        records.filter((pl.col("status") == "ok") & pl.col("text").is_not_null())
        .select("run", "endpoint", "perspective", "item_id", "key", prompt.alias("prompt"), "text", "refusal")
        .with_columns(refused=pl.col("refusal").fill_null(False))
        .sort("key")
        .group_by("run", "endpoint", "perspective", "refused", maintain_order=True)
        .head(per_kind)
        .sort("run", "endpoint", "perspective", "refused", "item_id")
        .collect()
    )


def _clip(text: object) -> str:
    s = "" if text is None else str(text)
    return html.escape(s if len(s) <= _MAX_CHARS else s[:_MAX_CHARS] + " […]")


def _samples_html(samples: pl.DataFrame) -> str:
    if samples.is_empty():
        return "<p class='note'>No answered records.</p>"
    parts: list[str] = []
    for (perspective,), part in samples.group_by("perspective", maintain_order=True):
        parts.append(f"<h3>{html.escape(str(perspective))}</h3>")
        shown: list[str] = []
        folded: list[str] = []
        for r in part.iter_rows(named=True):
            row = (
                f"<tr><td>{html.escape(r['endpoint'])}</td><td>{html.escape(r['item_id'])}</td>"
                f"<td><pre>{_clip(r['prompt'])}</pre></td><td><pre>{_clip(r['text'])}</pre></td>"
                f"<td>{'refused' if r['refused'] else 'answered'}</td></tr>"
            )
            (folded if r["refused"] or perspective == "toxicity" else shown).append(row)
        head = "<tr><th>checkpoint</th><th>item</th><th>prompt</th><th>response</th><th>verdict</th></tr>"
        if shown:
            parts.append(f"<table>{head}{''.join(shown)}</table>")
        if folded:
            why = "may contain offensive or toxic text" if perspective == "toxicity" else "refused requests"
            parts.append(
                f"<details><summary>Warning: {len(folded)} sample(s) folded ({why}); click to show</summary>"
                f"<table>{head}{''.join(folded)}</table></details>"
            )
    return "\n".join(parts)


def render_html(
    *,
    scores: pl.DataFrame,
    seeds: pl.DataFrame,
    side_by_side: pl.DataFrame,
    samples: pl.DataFrame,
    plots: list[Path],
    seed_legend: str,
    paper: pl.DataFrame | None = None,
    paper_legend: str = "",
    tables: Mapping[str, pl.DataFrame] | None = None,
    variant_note: str = "",
) -> str:
    """The report as one HTML string; ``plots`` are SVG files, inlined; ``tables`` (title → table) follow the
    comparison sections (MMLU and the Beyond-Perplexity tables)."""
    refusal = scores.pivot(on="checkpoint", index="perspective", values="refusal_rate", aggregate_function="mean")
    sections = [
        "<h2>Across calibration seeds</h2>",
        f"<p class='note'>{html.escape(seed_legend)}.</p>",
        _table(seed_wide(seeds)),
        "<h2>Scores per checkpoint: score (refusal %)</h2>",
        _table(side_by_side),
        "<h2>Refusal rates (% of answered requests)</h2>",
        _table(refusal.sort("perspective")),
    ]
    if paper is not None:
        sections += ["<h2>Compared with the paper</h2>", f"<p class='note'>{html.escape(paper_legend)}.</p>"]
        sections.append(
            _table(compare_wide(paper)) if not paper.is_empty() else "<p>No configuration matches a paper row.</p>"
        )
    for title, table in (tables or {}).items():
        sections += [f"<h2>{html.escape(title)}</h2>", _table(table)]
    svgs = [p for p in plots if p.suffix == ".svg"]
    sections.append("<h2>Plots</h2>")
    if svgs:
        sections += [f"<figure class='plot'>{_inline_svg(p)}</figure>" for p in svgs]
    else:
        sections.append("<p class='note'>No plots (turned off, or not enough data).</p>")
    sections += ["<h2>Sample responses</h2>", _samples_html(samples)]
    variant = html.escape(str(scores["variant"][0])) if scores.height else "?"
    alt = html.escape(str(scores["alt_variant"][0])) if scores.height and "alt_variant" in scores.columns else "?"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>comptrust report</title><style>{_CSS}</style></head><body>"
        f"<h1>comptrust report</h1><p class='note'>Scorer variant <code>{variant}</code> (beside it in the score "
        f"tables: <code>{alt}</code>); scores 0-100, higher is more trustworthy.</p>"
        f"<p class='note' id='variants'>{html.escape(variant_note)}.</p>" + "\n".join(sections) + "</body></html>\n"
    )
