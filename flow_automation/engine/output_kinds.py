"""Step kinds that produce documents: `generate_pdf` (a Print Format as a private File).
Registered into the catalog on import."""

from __future__ import annotations
