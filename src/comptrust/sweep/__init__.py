"""``sweep``: the study orchestrator. A plan file in; checkpoints, runs and the side-by-side report out."""

from comptrust.sweep.plan import Cell, MethodPlan, ModelPlan, Plan, load_plan

__all__ = ["Cell", "MethodPlan", "ModelPlan", "Plan", "load_plan"]
