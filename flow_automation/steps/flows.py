"""The start_flow step: start a sub-flow, optionally waiting for it."""

from __future__ import annotations

from typing import Any

import frappe

from flow_automation.engine import SUB_FLOW, Outcome, StepError
from flow_automation.steps.base import StepCall, check_child_depth, handles


@handles("start_flow")
def start_flow(call: StepCall) -> Any:
	payload = call.payload
	template = payload["template"]
	if not frappe.db.exists("Flow Template", template):
		raise StepError(f"template: flow template {template!r} does not exist", retryable=False)
	check_child_depth(call)
	if call.dry_run:
		call.record("start sub-flow", template=template, variables=payload.get("variables") or {})
		if payload.get("wait"):
			return Outcome.waiting(SUB_FLOW, output={"run": None}, run=None, template=template)
		return {"run": None, "status": "Started", "dry_run": True}
	child = call.host.start_child(
		call.step,
		template,
		variables=payload.get("variables") or {},
		with_document=payload.get("document", "trigger_document") != "none",
	)
	if payload.get("wait"):
		return Outcome.waiting(SUB_FLOW, output={"run": child}, run=child, template=template)
	return {"run": child, "status": "Started"}
