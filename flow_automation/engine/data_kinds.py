"""Step kinds that read and compute: `lookup` (read documents) and `run_script` (a Server
Script through the host's safe_exec). Registered into the catalog on import."""

from __future__ import annotations
