"""The Frappe adapter around the engine: load, lock, advance, persist, log.

Everything that decides *what* happens lives in `flow_automation.engine`; this module only
moves data between the database and the engine and performs step side effects through
the handlers in `flow_automation.steps`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime, strip_html

from flow_automation.engine import planner
from flow_automation.engine.definition import Definition, Step
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.redact import redact
from flow_automation.engine.simulate import SimulationResult, simulate

FINISHED = tuple(planner.FINISHED_RUN_STATUSES)
ACTIVE = ("Queued", "Running", "Waiting")
LOG_FIELDS = (
	"name",
	"creation",
	"modified",
	"owner",
	"modified_by",
	"run",
	"template",
	"step_id",
	"kind",
	"attempt",
	"status",
	"branch",
	"started_at",
	"duration_ms",
	"retry_at",
	"input",
	"output",
	"error",
	"pii_redacted",
)
PENDING_FIELDS = (
	"name",
	"creation",
	"modified",
	"owner",
	"modified_by",
	"run",
	"step_id",
	"template",
	"purpose",
	"trigger_at",
	"status",
	"attempt",
)
MAX_LOG_JSON_CHARS = 32_000

_definitions: dict[tuple[str, str], Definition] = {}


class RunNotFound(frappe.DoesNotExistError):
	pass


class ActiveRunExists(frappe.ValidationError):
	"""The template allows one active run per document, and this document has one."""


def has_active_run(template: str, reference_doctype: str | None, reference_name: str) -> bool:
	return bool(
		frappe.db.exists(
			"Flow Run",
			{
				"template": template,
				"reference_doctype": reference_doctype,
				"reference_name": reference_name,
				"status": ("in", ACTIVE),
			},
		)
	)


# --- definitions -------------------------------------------------------------------------


def load_definition(version_name: str) -> Definition:
	"""The pinned definition of a Flow Template Version (immutable, so cached for good)."""
	key = (frappe.local.site, version_name)
	if key not in _definitions:
		raw = frappe.cache.hget(
			"flow_automation:definition",
			version_name,
			lambda: json.loads(
				frappe.db.get_value("Flow Template Version", version_name, "definition") or "{}"
			),
		)
		_definitions[key] = Definition.from_dict(raw)
	return _definitions[key]


# --- starting runs -----------------------------------------------------------------------


def start_run(
	template: str,
	*,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: Mapping[str, Any] | None = None,
	trigger: Mapping[str, Any] | None = None,
	contact: str | None = None,
	parent_run: str | None = None,
	parent_step: str | None = None,
	depth: int = 0,
	dedup_key: str | None = None,
	advance: str = "async",
) -> str:
	"""Create a Flow Run pinned to the template's current version and get it going.

	`advance`: "async" (a background job after commit), "now" (in this transaction) or
	"none" (the caller advances it). Returns the run name.
	"""
	info = frappe.db.get_value(
		"Flow Template",
		template,
		["name", "enabled", "version", "run_as", "one_active_run_per_document"],
		as_dict=True,
	)
	if not info:
		frappe.throw(
			_("Flow Template {0} does not exist").format(frappe.bold(template)), frappe.ValidationError
		)
	if not info.enabled:
		frappe.throw(_("Flow Template {0} is disabled").format(frappe.bold(template)), frappe.ValidationError)
	if reference_doctype and reference_name and not frappe.db.exists(reference_doctype, reference_name):
		frappe.throw(
			_("{0} {1} does not exist").format(_(reference_doctype), frappe.bold(reference_name)),
			frappe.ValidationError,
		)
	if (
		info.one_active_run_per_document
		and reference_name
		and has_active_run(info.name, reference_doctype, reference_name)
	):
		raise ActiveRunExists(
			_("{0} {1} already has an active run of {2}").format(
				_(reference_doctype), reference_name, info.name
			)
		)
	version_name = f"{info.name}-v{info.version}"
	definition = load_definition(version_name)
	run = frappe.get_doc(
		{
			"doctype": "Flow Run",
			"template": info.name,
			"template_version": version_name,
			"version": info.version,
			"status": "Queued",
			"reference_doctype": reference_doctype,
			"reference_name": reference_name,
			"contact": contact,
			"trigger_type": (trigger or {}).get("type") or "Manual",
			"trigger_event": (trigger or {}).get("event"),
			"trigger_data": json.dumps(trigger or {}, default=str),
			"variables": json.dumps({**dict(definition.variables), **dict(variables or {})}, default=str),
			"step_state": "{}",
			"parent_run": parent_run,
			"parent_step": parent_step,
			"depth": depth,
			"dedup_key": dedup_key,
			"run_as": info.run_as or "Administrator",
		}
	)
	if dedup_key and frappe.db.exists("Flow Run", {"dedup_key": dedup_key}):
		raise frappe.DuplicateEntryError("Flow Run", dedup_key)
	messages_before = len(frappe.local.message_log)
	try:
		run.insert(ignore_permissions=True)
	except frappe.UniqueValidationError:
		# a concurrent delivery of the same event won the unique dedup key
		del frappe.local.message_log[messages_before:]
		raise
	if advance == "now":
		advance_run(run.name)
	elif advance == "async":
		kick(run.name)
	return run.name


def kick(run: str) -> None:
	"""Start a Queued run in a background job after commit (unless paused or told not to)."""
	from flow_automation.flow_automation.doctype.flow_automation_settings.flow_automation_settings import (
		is_paused,
	)

	if is_paused() or frappe.local.flags.get("flow_automation_no_kick"):
		return  # stays Queued; the minute cron drains it later
	enqueue_start(run, after_commit=True)


def enqueue_start(run: str, *, after_commit: bool = False) -> None:
	frappe.enqueue(
		"flow_automation.runtime.start_queued_run",
		queue="default",
		job_id=f"flow_automation:start:{run}",
		deduplicate=not frappe.flags.in_test,
		enqueue_after_commit=after_commit,
		now=frappe.flags.in_test,
		run=run,
	)


def start_queued_run(run: str) -> None:
	"""The background job: advance a run that is still Queued (a no-op otherwise)."""
	if frappe.db.get_value("Flow Run", run, "status") != "Queued":
		return
	advance_run(run)


# --- advancing ---------------------------------------------------------------------------


class FrappeHost:
	"""The engine's Host on a real site: step handlers, each inside its own savepoint."""

	def __init__(self, run: Any, definition: Definition, *, dry_run: bool = False):
		self.run = run
		self.definition = definition
		self.dry_run = dry_run
		self.followups: list[Callable[[], Any]] = []
		self.tracebacks: dict[tuple[str, int], str] = {}
		self.recorded: list[dict[str, Any]] = []

	def execute(
		self, step: Step, payload: Mapping[str, Any], context: Mapping[str, Any], attempt: int
	) -> Outcome:
		from flow_automation.steps import StepCall, get_handler

		handler = get_handler(step.kind)
		if handler is None:
			return Outcome.failed(f"no handler is installed for step kind '{step.kind}'", retryable=False)
		# a manual retry starts a new attempt group: a new key, so the side effect happens again
		group = ((context.get("steps") or {}).get(step.id) or {}).get("attempt_group") or 1
		call = StepCall(
			run=self.run,
			step=step,
			payload=payload,
			context=context,
			attempt=attempt,
			idempotency_key=f"{self.run.name}:{step.id}:{group}",
			dry_run=self.dry_run,
			host=self,
		)
		savepoint = "flow_step_" + frappe.generate_hash(length=10)
		messages_before = len(frappe.local.message_log)
		frappe.db.savepoint(savepoint)
		try:
			result = handler(call)
		except Exception as e:
			frappe.db.rollback(save_point=savepoint)
			del frappe.local.message_log[messages_before:]
			retryable, message = _classify(e)
			if not isinstance(e, StepError | frappe.ValidationError):
				self.tracebacks[(step.id, attempt)] = frappe.get_traceback(with_context=False)
			return Outcome.failed(message, retryable=retryable)
		frappe.db.release_savepoint(savepoint)
		del frappe.local.message_log[messages_before:]
		if isinstance(result, Outcome):
			return result
		return Outcome.done(result)

	def reload_document(self) -> Mapping[str, Any] | None:
		return document_context(self.run.reference_doctype, self.run.reference_name)

	def perform(self, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]) -> None:
		from flow_automation.steps import perform_effect

		perform_effect(self, step, effect, context)

	def run_followups(self) -> None:
		while self.followups:
			self.followups.pop(0)()


def _classify(e: Exception) -> tuple[bool, str]:
	"""(retryable, message): bad input does not get better by waiting, outages might."""
	if isinstance(e, StepError):
		return e.retryable, str(e)
	message = strip_html(str(e)) or type(e).__name__
	if isinstance(e, frappe.ValidationError | frappe.PermissionError | frappe.DoesNotExistError):
		return False, f"{type(e).__name__}: {message}"
	return True, f"{type(e).__name__}: {message}"


def document_context(doctype: str | None, name: str | None) -> dict[str, Any]:
	"""The trigger document as plain data for templates and conditions (never the object)."""
	if not doctype or not name:
		return {}
	try:
		doc = frappe.get_doc(doctype, name)
	except frappe.DoesNotExistError:
		return {"doctype": doctype, "name": name, "_missing": True}
	return json.loads(frappe.as_json(doc.as_dict(convert_dates_to_str=True)))


def build_context(run: Any) -> dict[str, Any]:
	trigger = _json(run.trigger_data)
	contact = dict(trigger.get("contact") or {})
	if run.contact:
		contact.setdefault("number", run.contact)
	doc = document_context(run.reference_doctype, run.reference_name)
	if doc.get("_missing") and isinstance(trigger.get("doc"), dict):
		doc = trigger["doc"]  # a Delete trigger: the document is gone, its snapshot is not
	return {
		"doc": doc,
		"trigger": trigger,
		"contact": contact,
		"run": {"name": run.name, "template": run.template, "version": run.version},
	}


def _json(value: Any) -> dict[str, Any]:
	if isinstance(value, dict):
		return value
	return json.loads(value) if value else {}


@contextmanager
def flow_depth(depth: int):
	"""Mark that a flow's steps are running, so triggers they cause know their depth."""
	previous = frappe.local.flags.get("flow_automation_depth")
	frappe.local.flags.flow_automation_depth = depth
	try:
		yield
	finally:
		frappe.local.flags.flow_automation_depth = previous


def may_start(run: Any) -> bool:
	"""Whether a Queued run may start now: not paused, and under the template's concurrency limit."""
	from flow_automation.flow_automation.doctype.flow_automation_settings.flow_automation_settings import (
		is_paused,
	)

	if is_paused():
		return False
	limit = frappe.db.get_value("Flow Template", run.template, "max_concurrent_runs")
	if not limit:
		return True
	active = frappe.db.count("Flow Run", {"template": run.template, "status": ("in", ("Running", "Waiting"))})
	return active < limit


@contextmanager
def acting_as(user: str | None):
	"""Run step side effects with the permissions of the template's Run As user."""
	previous = frappe.session.user
	user = user or "Administrator"
	if user == previous:
		yield
		return
	frappe.set_user(user)
	try:
		yield
	finally:
		frappe.set_user(previous)


def lock_run(run_name: str) -> Any:
	"""Load a run with its row locked (SELECT ... FOR UPDATE) until the transaction ends."""
	try:
		return frappe.get_doc("Flow Run", run_name, for_update=True)
	except frappe.DoesNotExistError:
		raise RunNotFound(_("Flow Run {0} does not exist").format(run_name))


def advance_run(
	run_name: str,
	*,
	now: dt.datetime | None = None,
	events: Iterable[planner.Event] = (),
) -> planner.AdvanceResult | None:
	"""Lock the run, apply `events`, run the engine's waves, persist once. None if finished."""
	run = lock_run(run_name)
	events = tuple(events)
	if run.status in FINISHED:
		if events:
			frappe.throw(
				_("Flow Run {0} is already {1}").format(run.name, _(run.status)), frappe.ValidationError
			)
		return None
	if run.status == "Queued" and not events and not may_start(run):
		return None  # paused, or the template is at its concurrency limit: stays Queued
	definition = load_definition(run.template_version)
	now = (now or now_datetime()).replace(microsecond=0)
	host = FrappeHost(run, definition)
	context = build_context(run)
	with acting_as(run.run_as), flow_depth(run.depth or 0):
		try:
			result = planner.advance(
				definition,
				_json(run.step_state),
				_json(run.variables),
				context,
				now,
				host,
				events=events,
				seed=run.name,
				timer=time.perf_counter,
			)
		except planner.EngineError as e:
			frappe.throw(str(e), frappe.ValidationError)
	persist(run, result, now, host)
	host.run_followups()
	if result.status in FINISHED:
		on_run_finished(run, result)
	return result


def persist(run: Any, result: planner.AdvanceResult, now: dt.datetime, host: FrappeHost) -> None:
	"""One write of the run's state, one insert of its log rows, and its timers."""
	values: dict[str, Any] = {
		"status": result.status,
		"step_state": json.dumps(result.step_state, default=str),
		"variables": json.dumps(result.variables, default=str),
		"error": result.error,
		"next_due_at": result.next_due,
		"advance_count": (run.advance_count or 0) + 1,
	}
	if not run.started_at:
		values["started_at"] = now
	if result.status in FINISHED:
		values["completed_at"] = now
	run.db_set(values, notify=True)
	write_logs(run, result.attempts, host)
	clear_timers(run.name, result.cleared_timers)
	add_timers(run, result.timers)


def write_logs(run: Any, attempts: list[planner.Attempt], host: FrappeHost) -> None:
	if not attempts:
		return
	from flow_automation.flow_automation.doctype.flow_automation_settings.flow_automation_settings import (
		redact_pii_enabled,
	)

	should_redact = redact_pii_enabled()
	now = now_datetime()
	rows = []
	for position, attempt in enumerate(attempts):
		# one timestamp per row, a microsecond apart: the log reads in execution order
		created = now + dt.timedelta(microseconds=position)
		error = attempt.error
		trace = host.tracebacks.get((attempt.step_id, attempt.attempt))
		if trace and attempt.status == "Failed":
			error = f"{error}\n\n{trace}"
		payload, output = attempt.input, attempt.output
		redacted = False
		if should_redact:
			payload, changed_in = redact(payload)
			output, changed_out = redact(output)
			error, changed_err = redact(error)
			redacted = changed_in or changed_out or changed_err
		rows.append(
			(
				frappe.generate_hash(length=12),
				created,
				created,
				frappe.session.user,
				frappe.session.user,
				run.name,
				run.template,
				attempt.step_id,
				attempt.kind,
				attempt.attempt,
				attempt.status,
				attempt.branch,
				attempt.started_at,
				attempt.duration_ms,
				attempt.retry_at,
				_log_json(payload),
				_log_json(output),
				error,
				int(redacted),
			)
		)
	frappe.db.bulk_insert("Flow Step Log", LOG_FIELDS, rows)


def log_step_event(
	run_name: str, step_id: str, status: str, *, error: str | None = None, output: Any = None
) -> None:
	"""A Flow Step Log row for something that happened to a finished step afterwards
	(e.g. a WhatsApp delivery report): the run's history stays complete."""
	run = frappe.db.get_value("Flow Run", run_name, ["name", "template", "template_version"], as_dict=True)
	if not run:
		return
	definition = load_definition(run.template_version)
	kind = definition.step(step_id).kind if definition.has_step(step_id) else ""
	attempt = (_json(frappe.db.get_value("Flow Run", run_name, "step_state")).get(step_id) or {}).get(
		"attempt", 0
	)
	write_logs(
		run,
		[planner.Attempt(step_id, kind, attempt, status, now_datetime(), output=output, error=error)],
		FrappeHost(run, definition),
	)


def _log_json(value: Any) -> str | None:
	if value is None:
		return None
	text = json.dumps(value, indent=1, default=str, ensure_ascii=False)
	if len(text) > MAX_LOG_JSON_CHARS:
		return text[:MAX_LOG_JSON_CHARS] + f"\n… truncated ({len(text)} characters)"
	return text


def clear_timers(run_name: str, step_ids: list[str]) -> None:
	if not step_ids:
		return
	table = frappe.qb.DocType("Flow Step Pending")
	(
		frappe.qb.update(table)
		.set(table.status, "Cancelled")
		.set(table.modified, now_datetime())
		.where((table.run == run_name) & table.step_id.isin(step_ids) & (table.status == "Pending"))
	).run()


def cancel_timers(run_name: str) -> None:
	"""Every Pending row of a run: Cancelled (the run stopped, or its timers are rebuilt)."""
	table = frappe.qb.DocType("Flow Step Pending")
	frappe.qb.update(table).set(table.status, "Cancelled").set(table.modified, now_datetime()).where(
		(table.run == run_name) & (table.status == "Pending")
	).run()


def add_timers(run: Any, timers: list[planner.Timer]) -> None:
	if not timers:
		return
	now = now_datetime()
	rows = [
		(
			frappe.generate_hash(length=12),
			now,
			now,
			frappe.session.user,
			frappe.session.user,
			run.name,
			timer.step_id,
			run.template,
			timer.purpose if timer.purpose in ("delay", "date", "retry", "timeout") else "delay",
			timer.at,
			"Pending",
			0,
		)
		for timer in timers
	]
	frappe.db.bulk_insert("Flow Step Pending", PENDING_FIELDS, rows)


def on_run_finished(run: Any, result: planner.AdvanceResult) -> None:
	"""A finished child resumes its waiting parent; failures, alerts and queued runs follow."""
	from flow_automation import failures

	if run.parent_run and run.parent_step:
		resume_parent(
			run.parent_run, run.parent_step, run.name, result.status, result.variables, result.error
		)
	failures.on_run_finished(run.name, run.template, result.status)


def resume_parent(
	parent_run: str,
	parent_step: str,
	child: str,
	status: str,
	variables: Mapping[str, Any],
	error: str | None,
) -> None:
	parent_state = _json(frappe.db.get_value("Flow Run", parent_run, "step_state"))
	wait = (parent_state.get(parent_step) or {}).get("wait") or {}
	if wait.get("type") != planner.SUB_FLOW or wait.get("run") != child:
		return  # the parent did not wait for this child (wait: false), or stopped waiting
	complete_step(
		parent_run,
		parent_step,
		{"run": child, "status": status, "variables": dict(variables), "error": error},
	)


# --- operator actions ---------------------------------------------------------------------


def complete_step(
	run_name: str, step_id: str, result: Any = None, *, event_type: str = "complete"
) -> planner.AdvanceResult | None:
	"""Complete a waiting step (manual / on_webhook gate, a sub-flow, an ask reply) and advance."""
	return advance_run(run_name, events=[planner.Event(step_id, event_type, result)])


def cancel_run(run_name: str, reason: str | None = None) -> None:
	"""Cancel a run and its open steps, timers and active child runs."""
	run = lock_run(run_name)
	if run.status in FINISHED:
		frappe.throw(_("Flow Run {0} is already {1}").format(run.name, _(run.status)), frappe.ValidationError)
	now = now_datetime().replace(microsecond=0)
	state = planner.cancel(_json(run.step_state), now)
	run.db_set(
		{
			"status": "Cancelled",
			"step_state": json.dumps(state, default=str),
			"error": reason or _("Cancelled by {0}").format(frappe.session.user),
			"completed_at": now,
			"next_due_at": None,
		},
		notify=True,
	)
	cancel_timers(run.name)
	from flow_automation import failures

	failures.on_run_finished(run.name, run.template, "Cancelled")
	for child in frappe.get_all(
		"Flow Run", filters={"parent_run": run.name, "status": ("in", ACTIVE)}, pluck="name"
	):
		cancel_run(child, _("Parent run {0} was cancelled").format(run.name))
	if run.parent_run and run.parent_step:
		resume_parent(run.parent_run, run.parent_step, run.name, "Cancelled", _json(run.variables), reason)


def fail_run(run_name: str, error: str) -> None:
	"""Fail a run from outside the engine (e.g. its step keeps crashing the worker)."""
	run = lock_run(run_name)
	if run.status in FINISHED:
		return
	now = now_datetime().replace(microsecond=0)
	state = planner.cancel(_json(run.step_state), now)
	run.db_set(
		{
			"status": "Failed",
			"step_state": json.dumps(state, default=str),
			"error": error,
			"completed_at": now,
		},
		notify=True,
	)
	cancel_timers(run.name)
	on_run_finished(
		run,
		planner.AdvanceResult(status="Failed", step_state=state, variables=_json(run.variables), error=error),
	)


def retry_steps(run_name: str, step_ids: list[str]) -> planner.AdvanceResult | None:
	"""Retry chosen failed steps (a new attempt group); a failed run continues where it stopped."""
	run = lock_run(run_name)
	if run.status == "Cancelled":
		frappe.throw(
			_("Flow Run {0} was cancelled; start a new run instead").format(run.name), frappe.ValidationError
		)
	definition = load_definition(run.template_version)
	try:
		state = planner.retry_steps(definition, _json(run.step_state), list(step_ids))
	except planner.EngineError as e:
		frappe.throw(str(e), frappe.ValidationError)
	cancel_timers(run.name)
	add_timers(run, planner.restored_timers(state))
	run.db_set(
		{
			"status": "Running",
			"step_state": json.dumps(state, default=str),
			"error": None,
			"completed_at": None,
		}
	)
	return advance_run(run.name)


# --- dry runs -----------------------------------------------------------------------------


def simulate_template(
	template: str,
	*,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: Mapping[str, Any] | None = None,
	answers: Mapping[str, Any] | None = None,
	trigger: Mapping[str, Any] | None = None,
	contact: Mapping[str, Any] | None = None,
) -> SimulationResult:
	"""Execute a template for real inside a savepoint with outbound calls recorded, then roll back."""
	info = frappe.db.get_value("Flow Template", template, ["name", "version", "run_as"], as_dict=True)
	if not info:
		frappe.throw(
			_("Flow Template {0} does not exist").format(frappe.bold(template)), frappe.ValidationError
		)
	definition = load_definition(f"{info.name}-v{info.version}")
	run = frappe._dict(
		name=f"dry-run-{frappe.generate_hash(length=6)}",
		template=info.name,
		version=info.version,
		reference_doctype=reference_doctype,
		reference_name=reference_name,
		step_state="{}",
		depth=0,
		run_as=info.run_as,
	)
	host = FrappeHost(run, definition, dry_run=True)
	savepoint = "flow_dry_run_" + frappe.generate_hash(length=10)
	after_commit = len(frappe.db.after_commit._functions)
	messages_before = len(frappe.local.message_log)
	frappe.db.savepoint(savepoint)
	try:
		with acting_as(info.run_as):
			result = simulate(
				definition,
				host=host,
				doc=document_context(reference_doctype, reference_name),
				variables=variables,
				answers=answers,
				trigger=trigger or {"type": "Dry Run"},
				contact=contact,
				start=now_datetime(),
				seed=run.name,
			)
	finally:
		frappe.db.rollback(save_point=savepoint)
		# Savepoint rollbacks keep after-commit callbacks; drop those the dry run queued.
		while len(frappe.db.after_commit._functions) > after_commit:
			frappe.db.after_commit._functions.pop()
		del frappe.local.message_log[messages_before:]
	result.calls = host.recorded
	return result


# --- reading ------------------------------------------------------------------------------


def run_timeline(run: Any) -> list[dict[str, Any]]:
	"""Steps of a run in flow order with their state and attempts, for the Flow Run form."""
	if not run.template_version:
		return []
	definition = load_definition(run.template_version)
	state = _json(run.step_state)
	logs = frappe.get_all(
		"Flow Step Log",
		filters={"run": run.name},
		fields=[
			"name",
			"step_id",
			"attempt",
			"status",
			"branch",
			"started_at",
			"duration_ms",
			"error",
			"retry_at",
		],
		order_by="creation asc",
		limit=2000,
	)
	by_step: dict[str, list] = {}
	for log in logs:
		by_step.setdefault(log.step_id, []).append(log)
	timeline = []
	for step in definition.ordered_steps:
		entry = state.get(step.id) or {}
		timeline.append(
			{
				"id": step.id,
				"label": step.title,
				"kind": step.kind,
				"parent_id": step.parent_id,
				"branch_of_parent": step.branch,
				"status": entry.get("status", planner.PENDING),
				"branch": entry.get("branch"),
				"error": entry.get("error"),
				"due_at": entry.get("due_at") or (entry.get("wait") or {}).get("until"),
				"wait": entry.get("wait"),
				"reason": entry.get("reason"),
				"attempts": by_step.get(step.id, []),
			}
		)
	return timeline
