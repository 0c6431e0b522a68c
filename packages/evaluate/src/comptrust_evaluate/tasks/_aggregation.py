"""Where a record sits in its perspective's DecodingTrust score (read by ``comptrust_analysis.structure``)."""

from __future__ import annotations

from comptrust_core import Attribute

from comptrust_evaluate.tasks.base import attrs

__all__ = ["EXCLUDED", "aggregation"]

EXCLUDED = "none"
"""The ``dt_component`` of a record DecodingTrust runs but leaves out of the perspective score."""


def aggregation(
    component: str | None = None, group: str | None = None, dt_set: str | None = None
) -> tuple[Attribute, ...]:
    """Where a record sits in its perspective's score (see ``comptrust_analysis.structure``): DecodingTrust averages
    item scores within a *group* (a result file: default the sub-scenario), groups within a *set* (default: the group
    alone; adversarial demonstrations average a set's seed files), sets within a *component* (e.g. OOD's
    "knowledge, zero-shot"), and components into the perspective score; ``component=EXCLUDED`` leaves it out."""
    return attrs(dt_component=component, dt_group=group, dt_set=dt_set)
