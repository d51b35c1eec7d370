"""Where the shared spec lives: `../shared` relative to the project root, wherever it is cloned.

Tests that read it are skipped, with a reason naming the path, when it is absent; a
parametrised test gets one skipped case instead of collecting nothing in silence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
EXAMPLE_FLOWS = SHARED / "examples" / "flows"
MISSING_REASON = (
	f"the shared examples are not here (looked in {EXAMPLE_FLOWS}, ../shared from the project root)"
)

needs_shared_examples = pytest.mark.skipif(not EXAMPLE_FLOWS.is_dir(), reason=MISSING_REASON)


def example_flow(name: str) -> Path:
	return EXAMPLE_FLOWS / name


def example_params(names: list[str]) -> list:
	"""Parameters for a test over shared example files: the names, or one skipped case."""
	if not EXAMPLE_FLOWS.is_dir():
		return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING_REASON), id="no-shared-examples")]
	return names
