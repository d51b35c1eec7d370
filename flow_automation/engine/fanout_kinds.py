"""The `for_each` step kind: a sub-flow per item, bounded, optionally waiting for all.
Registered into the catalog on import."""

from __future__ import annotations
