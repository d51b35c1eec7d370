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
from flow_automation.runtime.batch import startable
from flow_automation.runtime.context import acting_as, build_context, flow_depth, json_field
from flow_automation.runtime.host import FrappeHost
from flow_automation.runtime.lifecycle import FinishedRun, notify_finished
from flow_automation.runtime.start import FOR_EACH, kick, may_start, take_start_job
from flow_automation.runtime.store import RunNotFound, fresh, load_definition, lock_run, persist
from flow_automation.transaction import commit, separately

KICK_QUEUE = "flow_automation_kick_queue"


TAKE_OVER = 50


def start_queued_run(run: str) -> None:
	"""Advance a run that is still Queued (a no-op otherwise)."""
	if frappe.db.get_value("Flow Run", run, "status") != RunStatus.QUEUED:
		return
	advance_run(run)


def start_job(run: str) -> None:
	"""The background job a kick enqueues: start its run, then up to TAKE_OVER other Queued
	runs whose own start jobs still wait in the queue (oldest first), each taken out of the
	queue first and started here in a transaction of its own.

	A worker forks and imports the app once per job (about 0.6 s), more than most runs take
	to start: in a storm of saves, one job works through the runs queued behind it. A run
	whose job a worker has taken already is left to it; one with no job waiting (started in
	its caller, or held) is not touched.
	"""
	start_queued_run(run)
	table = frappe.qb.DocType("Flow Run")
	waiting = (
		frappe.qb.from_(table)
		.select(table.name)
		.where((table.status == RunStatus.QUEUED) & (table.name != run) & startable(table))
		.orderby(table.creation)
		.limit(TAKE_OVER)
		.run(pluck=True)
	)
	taken = [other for other in waiting if take_start_job(other)]
	if not taken:
		return
	commit()  # this job's own run, before the others' transactions
	for other in taken:
		separately(lambda: start_queued_run(other), title=f"Flow Run {other}: starting failed")


def advance_run(
	run_name: str,
	*,
	now: dt.datetime | None = None,
	events: Iterable[Event] = (),
	loaded: Any = None,
) -> AdvanceResult | None:
	"""Lock the run, apply `events`, run the engine's waves, persist once. None if finished.

	`loaded`: the run as `lock_runs` already locked and loaded it, used while still fresh."""
	run = loaded if loaded is not None and fresh(loaded) else lock_run(run_name)
	return advance_locked(run, now=now, events=events)


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
	if host and host.kicks:
		kick_children(host.kicks)
	if result.status not in FINISHED_RUN_STATUSES:
		return
	if run.parent_run and run.parent_step:
		trigger = json_field(run.trigger_data) if run.trigger_type == FOR_EACH else {}
		resume_parent(
			run.parent_run,
			run.parent_step,
			run.name,
			result.status,
			result.variables,
			result.error,
			batch=trigger.get("batch"),
			index=trigger.get("index"),
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
	*,
	batch: str | None = None,
	index: int | None = None,
) -> None:
	"""A finished sub-flow completes the parent step waiting for it, if one still is; a child
	of a for_each batch (`batch`, `index`) is counted by the step waiting on its batch, which
	lets the next child start.

	A parent that failed or was cancelled meanwhile (or that did not wait: `wait: false`)
	stays as it is; the child still finishes normally. The parent's row lock makes children
	that end at the same time in different workers take their turns, so none is lost.
	"""
	try:
		parent = lock_run(parent_run)
	except RunNotFound:
		return
	if parent.status in FINISHED_RUN_STATUSES:
		return
	if not waits_for_child(load_state(parent.step_state), parent_step, child, batch):
		return
	outcome = {"run": child, "status": status, "variables": dict(variables), "error": error}
	if batch is not None:
		outcome.update(batch=batch, index=index)
	advance_locked(parent, events=[Event(parent_step, "complete", outcome)])


def kick_children(names: list[str]) -> None:
	"""Kick the for_each children an advance let start: a job each, after commit.

	Where a job runs at once instead (tests: jobs run inline), a child that ends at once lets
	the next one start from inside its own kick. Such kicks are queued here and made by the
	outermost call, so a long batch is walked in a loop, not a recursion as deep as the batch.
	"""
	queue = frappe.local.flags.get(KICK_QUEUE)
	if queue is not None:
		queue.extend(names)
		return
	queue = frappe.local.flags[KICK_QUEUE] = list(names)
	try:
		while queue:
			kick(queue.pop(0))
	finally:
		frappe.local.flags[KICK_QUEUE] = None


def start_next_queued(template: str) -> None:
	"""A slot freed up: kick the oldest run that waits in Queued for this template (one its
	parent has not released yet excepted)."""
	table = frappe.qb.DocType("Flow Run")
	waiting = (
		frappe.qb.from_(table)
		.select(table.name)
		.where((table.template == template) & (table.status == RunStatus.QUEUED) & startable(table))
		.orderby(table.creation)
		.limit(1)
		.run(pluck=True)
	)
	if waiting:
		kick(waiting[0])
