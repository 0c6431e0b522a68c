"""comptrust-analysis: load evaluate run directories with Polars and turn them into scores, tables and reports."""

from comptrust_analysis.beyond import (
    BbqAnswer,
    BiasScores,
    bbq_table,
    beyond_tables,
    bias_scores,
    dialect_gap_table,
    mmlu_table,
    perplexity_table,
    render_beyond,
)
from comptrust_analysis.load import LoadedRun, checkpoint_table, load_runs
from comptrust_analysis.paper import PAPER_SOURCE, compare_paper, compare_wide, paper_table
from comptrust_analysis.plots import write_plots
from comptrust_analysis.report import AnalysisConfig, AnalysisResult, analyze, render_text
from comptrust_analysis.schema import RECORD_SCHEMA
from comptrust_analysis.scores import (
    SCORE_COLUMNS,
    TOXICITY_COLUMNS,
    Variant,
    check_variants,
    perspective_scores,
    side_by_side,
    toxicity_table,
)
from comptrust_analysis.seeds import seed_summary, seed_wide, with_aggregates
from comptrust_analysis.tables import to_markdown, to_text

__all__ = [
    "PAPER_SOURCE",
    "RECORD_SCHEMA",
    "SCORE_COLUMNS",
    "TOXICITY_COLUMNS",
    "AnalysisConfig",
    "AnalysisResult",
    "BbqAnswer",
    "BiasScores",
    "LoadedRun",
    "Variant",
    "analyze",
    "bbq_table",
    "beyond_tables",
    "bias_scores",
    "check_variants",
    "checkpoint_table",
    "compare_paper",
    "compare_wide",
    "dialect_gap_table",
    "load_runs",
    "mmlu_table",
    "paper_table",
    "perplexity_table",
    "perspective_scores",
    "render_beyond",
    "render_text",
    "seed_summary",
    "seed_wide",
    "side_by_side",
    "to_markdown",
    "to_text",
    "toxicity_table",
    "with_aggregates",
    "write_plots",
]
