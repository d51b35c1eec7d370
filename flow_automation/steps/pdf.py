"""The generate_pdf step: a Print Format through Frappe's PDF path, kept as a private File."""

from __future__ import annotations
