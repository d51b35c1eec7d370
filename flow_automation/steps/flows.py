"""The start_flow step: start a sub-flow, optionally waiting for it."""

from __future__ import annotations

from typing import Any

import frappe

from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.planner import SUB_FLOW
from flow_automation.steps import StepCall


def start_flow(call: StepCall) -> Any:
	from flow_automation import runtime
	from flow_automation.flow_automation.doctype.flow_automation_settings.flow_automation_settings import (
		get_settings,
	)

	payload = call.payload
	template = payload["template"]
	if not frappe.db.exists("Flow Template", template):
		raise StepError(f"template: flow template {template!r} does not exist", retryable=False)
	depth = (call.run.depth or 0) + 1
	max_depth = get_settings().get("max_recursion_depth") or 5
	if depth > max_depth:
		raise StepError(f"sub-flow depth {depth} is over the limit of {max_depth}", retryable=False)
	use_document = payload.get("document", "trigger_document") != "none"
	if call.dry_run:
		call.record("start sub-flow", template=template, variables=payload.get("variables") or {})
		if payload.get("wait"):
			return Outcome.waiting(SUB_FLOW, output={"run": None}, run=None, template=template)
		return {"run": None, "status": "Started", "dry_run": True}
	child = runtime.start_run(
		template,
		reference_doctype=call.run.reference_doctype if use_document else None,
		reference_name=call.run.reference_name if use_document else None,
		variables=payload.get("variables") or {},
		trigger={"type": "Sub-flow", "parent_run": call.run.name, "parent_step": call.step.id},
		contact=call.run.contact,
		parent_run=call.run.name,
		parent_step=call.step.id,
		depth=depth,
		advance="none",
	)
	# Advance the child after the parent's state is written, so a child that finishes at
	# once finds its parent already waiting.
	call.host.followups.append(lambda: runtime.advance_run(child))
	if payload.get("wait"):
		return Outcome.waiting(SUB_FLOW, output={"run": child}, run=child, template=template)
	return {"run": child, "status": "Started"}
