"""Workflows: deterministic orchestration only — no I/O, no wall clock."""
