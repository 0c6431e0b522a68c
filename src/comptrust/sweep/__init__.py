"""``sweep``: the study orchestrator. A plan file in; checkpoints, runs and the side-by-side report out."""

from comptrust.sweep.plan import (
    AnalyzePlan,
    Cell,
    EvaluatePlan,
    MethodPlan,
    ModelPlan,
    Plan,
    ServePlan,
    StudyPlan,
    load_plan,
    parse_plan,
)

__all__ = [
    "AnalyzePlan",
    "Cell",
    "EvaluatePlan",
    "MethodPlan",
    "ModelPlan",
    "Plan",
    "ServePlan",
    "StudyPlan",
    "load_plan",
    "parse_plan",
]
