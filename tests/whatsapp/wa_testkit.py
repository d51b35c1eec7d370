"""Constants and helpers shared by the WhatsApp channel tests (imported by name, not a conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

# The app is not installed into the venv: make the repository root importable.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
	sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "whatsapp"
TOKEN = "EAAG-secret-test-token-0123456789"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
APP_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def raw_sample(name: str) -> bytes:
	"""Return a sample webhook body exactly as stored (the bytes a signature covers)."""
	return (DATA / name).read_bytes()
