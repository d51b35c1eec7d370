"""What happens when a run fails: the `flow_run.failed` event and alerts."""

from __future__ import annotations

import frappe


def on_run_failed(run_name: str) -> None:
	pass
