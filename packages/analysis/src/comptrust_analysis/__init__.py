"""comptrust-analysis: load evaluate run directories with Polars and turn them into scores, tables and reports."""

from comptrust_analysis.load import LoadedRun, checkpoint_table, load_runs
from comptrust_analysis.report import AnalysisConfig, AnalysisResult, analyze, render_text
from comptrust_analysis.schema import RECORD_SCHEMA
from comptrust_analysis.scores import SCORE_COLUMNS, Variant, perspective_scores, side_by_side
from comptrust_analysis.tables import to_markdown, to_text

__all__ = [
    "RECORD_SCHEMA",
    "SCORE_COLUMNS",
    "AnalysisConfig",
    "AnalysisResult",
    "LoadedRun",
    "Variant",
    "analyze",
    "checkpoint_table",
    "load_runs",
    "perspective_scores",
    "render_text",
    "side_by_side",
    "to_markdown",
    "to_text",
]
