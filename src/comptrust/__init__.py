"""comptrust: the study orchestrator (sweep)."""
