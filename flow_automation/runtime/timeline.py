"""A run read step by step, for the Flow Run form and `bench flow-automation inspect`."""

from __future__ import annotations

from typing import Any

import frappe

from flow_automation.engine import StepStatus, entry_of, load_state
from flow_automation.runtime.store import load_definition

LOG_FIELDS = [
	"name",
	"step_id",
	"attempt",
	"status",
	"branch",
	"started_at",
	"duration_ms",
	"error",
	"retry_at",
]


def run_timeline(run: Any, *, with_payloads: bool = False) -> list[dict[str, Any]]:
	"""Steps of a run in flow order with their state and attempts, for the Flow Run form (and,
	`with_payloads`, each attempt's input and output as stored: JSON text, for the builder)."""
	if not run.template_version:
		return []
	definition = load_definition(run.template_version)
	state = load_state(run.step_state)
	logs = frappe.get_all(
		"Flow Step Log",
		filters={"run": run.name},
		fields=LOG_FIELDS + (["input", "output"] if with_payloads else []),
		order_by="creation asc",
		limit=2000,
	)
	by_step: dict[str, list] = {}
	for log in logs:
		by_step.setdefault(log.step_id, []).append(log)
	timeline = []
	for step in definition.ordered_steps:
		entry = entry_of(state, step.id)
		timeline.append(
			{
				"id": step.id,
				"label": step.title,
				"kind": step.kind,
				"parent_id": step.parent_id,
				"branch_of_parent": step.branch,
				"status": entry.get("status", StepStatus.PENDING),
				"branch": entry.get("branch"),
				"error": entry.get("error"),
				"due_at": entry.get("due_at") or (entry.get("wait") or {}).get("until"),
				"wait": entry.get("wait"),
				"reason": entry.get("reason"),
				"attempts": by_step.get(step.id, []),
			}
		)
	return timeline
