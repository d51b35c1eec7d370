"""Makes this folder importable (in pytest's prepend and importlib modes alike), so test
modules share helpers by name: `from shared_examples import ...`."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
	sys.path.insert(0, _HERE)
