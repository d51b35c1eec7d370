"""The for_each step: a sub-flow per item, through the same mechanism as a schedule's
"for each matching document"."""

from __future__ import annotations
