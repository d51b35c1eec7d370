"""Advancing a run: lock it, let the engine run its waves, write the result once, and end on
the one path every change of a run's state ends on (`conclude`)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime

from flow_automation.engine import (
	FINISHED_RUN_STATUSES,
	AdvanceResult,
	EngineError,
	Event,
	RunStatus,
	advance,
	load_state,
	waits_for_child,
)
from flow_automation.runtime.context import acting_as, build_context, flow_depth, json_field
from flow_automation.runtime.host import FrappeHost
from flow_automation.runtime.lifecycle import FinishedRun, notify_finished
from flow_automation.runtime.start import kick, may_start
from flow_automation.runtime.store import RunNotFound, load_definition, lock_run, persist


def start_queued_run(run: str) -> None:
	"""The background job: advance a run that is still Queued (a no-op otherwise)."""
	if frappe.db.get_value("Flow Run", run, "status") != RunStatus.QUEUED:
		return
	advance_run(run)


def advance_run(
	run_name: str, *, now: dt.datetime | None = None, events: Iterable[Event] = ()
) -> AdvanceResult | None:
	"""Lock the run, apply `events`, run the engine's waves, persist once. None if finished."""
	return advance_locked(lock_run(run_name), now=now, events=events)


def advance_locked(
	run: Any, *, now: dt.datetime | None = None, events: Iterable[Event] = ()
) -> AdvanceResult | None:
	events = tuple(events)
	if run.status in FINISHED_RUN_STATUSES:
		if events:
			frappe.throw(
				_("Flow Run {0} is already {1}").format(run.name, _(run.status)), frappe.ValidationError
			)
		return None
	if run.status == RunStatus.QUEUED and not events and not may_start(run):
		return None  # paused, or the template is at its concurrency limit: stays Queued
	definition = load_definition(run.template_version)
	now = (now or now_datetime()).replace(microsecond=0)
	host = FrappeHost(run, definition)
	context = build_context(run)
	with acting_as(run.run_as), flow_depth(run.depth or 0):
		try:
			result = advance(
				definition,
				load_state(run.step_state),
				json_field(run.variables),
				context,
				now,
				host,
				events=events,
				seed=run.name,
				timer=time.perf_counter,
			)
		except EngineError as e:
			frappe.throw(str(e), frappe.ValidationError)
	conclude(run, result, now, host)
	return result


def complete_step(
	run_name: str, step_id: str, result: Any = None, *, event_type: str = "complete"
) -> AdvanceResult | None:
	"""Complete a waiting step (manual / on_webhook gate, a sub-flow, an ask reply) and advance."""
	return advance_run(run_name, events=[Event(step_id, event_type, result)])


def conclude(run: Any, result: AdvanceResult, now: dt.datetime, host: FrappeHost | None = None) -> None:
	"""Where every change of a run's state ends (an advance, a cancel, a failure from outside):
	one write, the sub-flows it started, and — once it has finished — its parent, the next
	queued run of its template, and the `flow_run_finished` hooks."""
	persist(run, result, now, host.tracebacks if host else None)
	for child in host.children if host else ():
		advance_run(child)
	if result.status not in FINISHED_RUN_STATUSES:
		return
	if run.parent_run and run.parent_step:
		resume_parent(
			run.parent_run, run.parent_step, run.name, result.status, result.variables, result.error
		)
	if frappe.get_cached_value("Flow Template", run.template, "max_concurrent_runs"):
		start_next_queued(run.template)
	notify_finished(FinishedRun.of(run, result.status, result.error))


def resume_parent(
	parent_run: str,
	parent_step: str,
	child: str,
	status: str,
	variables: Mapping[str, Any],
	error: str | None,
) -> None:
	"""A finished sub-flow completes the parent step waiting for it, if one still is.

	A parent that failed or was cancelled meanwhile (or that did not wait: `wait: false`)
	stays as it is; the child still finishes normally.
	"""
	try:
		parent = lock_run(parent_run)
	except RunNotFound:
		return
	if parent.status in FINISHED_RUN_STATUSES:
		return
	if not waits_for_child(load_state(parent.step_state), parent_step, child):
		return
	outcome = {"run": child, "status": status, "variables": dict(variables), "error": error}
	advance_locked(parent, events=[Event(parent_step, "complete", outcome)])


def start_next_queued(template: str) -> None:
	"""A slot freed up: kick the oldest run that waits in Queued for this template."""
	waiting = frappe.get_all(
		"Flow Run",
		filters={"template": template, "status": RunStatus.QUEUED},
		order_by="creation asc",
		limit=1,
		pluck="name",
	)
	if waiting:
		kick(waiting[0])
