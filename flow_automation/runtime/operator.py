"""What operators (and the scheduler's give-up) do to a run from outside: cancel it, fail it,
retry its failed steps. Cancel and fail end on the same path as an advance (`conclude`)."""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime

from flow_automation.engine import (
	ACTIVE_RUN_STATUSES,
	FAN_OUT,
	FINISHED_RUN_STATUSES,
	SUB_FLOW,
	AdvanceResult,
	EngineError,
	Event,
	RunStatus,
	cancel_steps,
	dump_state,
	load_state,
	restored_timers,
	waiting_for,
)
from flow_automation.engine import (
	retry_steps as reopen_steps,
)
from flow_automation.runtime.advance import advance_locked, conclude
from flow_automation.runtime.batch import batch_children
from flow_automation.runtime.context import json_field
from flow_automation.runtime.store import add_timers, cancel_timers, load_definition, lock_run


def cancel_run(run_name: str, reason: str | None = None) -> None:
	"""Cancel a run with its open steps and timers, and its active sub-flows (a for_each
	step's children too, started or still queued)."""
	run = lock_run(run_name)
	if run.status in FINISHED_RUN_STATUSES:
		frappe.throw(_("Flow Run {0} is already {1}").format(run.name, _(run.status)), frappe.ValidationError)
	_cancel(run, reason or _("Cancelled by {0}").format(frappe.session.user))


def _cancel(run: Any, reason: str) -> None:
	stop(run, RunStatus.CANCELLED, reason)
	for name in frappe.get_all(
		"Flow Run",
		filters={"parent_run": run.name, "status": ("in", tuple(ACTIVE_RUN_STATUSES))},
		pluck="name",
	):
		child = lock_run(name)
		if child.status not in FINISHED_RUN_STATUSES:  # one may have ended since the list was read
			_cancel(child, _("Parent run {0} was cancelled").format(run.name))


def fail_run(run_name: str, error: str) -> None:
	"""Fail a run from outside the engine (e.g. its step keeps crashing the worker)."""
	run = lock_run(run_name)
	if run.status not in FINISHED_RUN_STATUSES:
		stop(run, RunStatus.FAILED, error)


def stop(run: Any, status: RunStatus, error: str) -> None:
	"""End a locked run now with `status`: every open step cancelled, then the usual ending."""
	now = now_datetime().replace(microsecond=0)
	state = cancel_steps(load_state(run.step_state), now)
	conclude(
		run,
		AdvanceResult(status=status, step_state=state, variables=json_field(run.variables), error=error),
		now,
	)


def retry_steps(run_name: str, step_ids: list[str]) -> AdvanceResult | None:
	"""Retry chosen failed steps (a new attempt group); a failed run continues where it stopped.

	A sub-flow the run was waiting for that finished while the run was stopped completes its
	step now.
	"""
	run = lock_run(run_name)
	if run.status == RunStatus.CANCELLED:
		frappe.throw(
			_("Flow Run {0} was cancelled; start a new run instead").format(run.name), frappe.ValidationError
		)
	definition = load_definition(run.template_version)
	try:
		state = reopen_steps(definition, load_state(run.step_state), list(step_ids))
	except EngineError as e:
		frappe.throw(str(e), frappe.ValidationError)
	cancel_timers(run.name)
	add_timers(run, restored_timers(state))
	run.db_set(
		{"status": RunStatus.RUNNING, "step_state": dump_state(state), "error": None, "completed_at": None}
	)
	return advance_locked(run, events=_finished_children(run.name, state))


def _finished_children(run_name: str, state: dict[str, Any]) -> list[Event]:
	events = []
	for step_id in state:
		batch = (waiting_for(state, step_id, FAN_OUT) or {}).get("batch")
		if batch:
			# a for_each batch: every child that ended while the run was stopped (counted once)
			events += [
				Event(step_id, "complete", {**child, "batch": batch})
				for child in batch_children(run_name, batch)
				if child["status"] in FINISHED_RUN_STATUSES
			]
			continue
		wait = waiting_for(state, step_id, SUB_FLOW)
		child = wait.get("run") if wait else None
		if not child:
			continue
		values = frappe.db.get_value("Flow Run", child, ["status", "variables", "error"], as_dict=True)
		if values and values.status in FINISHED_RUN_STATUSES:
			outcome = {
				"run": child,
				"status": values.status,
				"variables": json_field(values.variables),
				"error": values.error,
			}
			events.append(Event(step_id, "complete", outcome))
	return events
