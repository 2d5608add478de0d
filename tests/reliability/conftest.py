"""Reliability suite: Hypothesis without an on-disk example database (CI runs stay reproducible and clean)."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("reliability", database=None, derandomize=False)
settings.load_profile("reliability")
