"""The `split` step kind (A/B/n: weighted branches, stable per run). Registered into the
catalog on import."""

from __future__ import annotations
