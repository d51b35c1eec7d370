"""The lookup and run_script steps: read documents as the run's user; run a Server Script
through Frappe's safe_exec."""

from __future__ import annotations
