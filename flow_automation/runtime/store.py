"""Persistence of runs: pinned definitions, the run row lock, the one write per advance, step
logs and timers (Flow Step Pending rows). Nothing here decides anything."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime

from flow_automation.engine import (
	ACTIVE_RUN_STATUSES,
	FINISHED_RUN_STATUSES,
	AdvanceResult,
	Attempt,
	Definition,
	Timer,
	dump_state,
	entry_of,
	load_state,
	redact,
)
from flow_automation.settings import redact_pii_enabled

# The columns every row has; bulk inserts fill them with `standard_values`.
STANDARD_FIELDS = ("name", "creation", "modified", "owner", "modified_by")
LOG_FIELDS = (
	*STANDARD_FIELDS,
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
	*STANDARD_FIELDS,
	"run",
	"step_id",
	"template",
	"purpose",
	"trigger_at",
	"status",
	"attempt",
)
TIMER_PURPOSES = ("delay", "date", "retry", "timeout")
MAX_LOG_JSON_CHARS = 32_000

_definitions: dict[tuple[str, str], Definition] = {}


def standard_values(at: dt.datetime) -> tuple[str, dt.datetime, dt.datetime, str, str]:
	"""A new row's name, creation, modified, owner and modified_by, for a bulk insert."""
	return (frappe.generate_hash(length=12), at, at, frappe.session.user, frappe.session.user)


class RunNotFound(frappe.DoesNotExistError):
	pass


# --- definitions -------------------------------------------------------------------------


def version_name(template: str, version: int) -> str:
	return f"{template}-v{version}"


def load_definition(version: str) -> Definition:
	"""The pinned definition of a Flow Template Version (immutable, so cached for good)."""
	key = (frappe.local.site, version)
	if key not in _definitions:
		raw = frappe.cache.hget(
			"flow_automation:definition",
			version,
			lambda: json.loads(frappe.db.get_value("Flow Template Version", version, "definition") or "{}"),
		)
		_definitions[key] = Definition.from_dict(raw)
	return _definitions[key]


# --- the run row ---------------------------------------------------------------------------


def lock_run(run_name: str) -> Any:
	"""Load a run with its row locked (SELECT ... FOR UPDATE) until the transaction ends."""
	try:
		return frappe.get_doc("Flow Run", run_name, for_update=True)
	except frappe.DoesNotExistError:
		raise RunNotFound(_("Flow Run {0} does not exist").format(run_name))


def lock_runs(names: list[str]) -> dict[str, Any]:
	"""Load several runs with their rows locked, in one query and in name order (two workers
	lock their groups in the same order, so they wait for each other instead of deadlocking).

	A loaded run is good until something writes it (`persist`); `fresh` tells whether it still is.
	"""
	frappe.local.flow_runs_written = set()
	if not names:
		return {}
	rows = frappe.db.sql(
		"select * from `tabFlow Run` where name in %(names)s order by name for update",
		{"names": tuple(names)},
		as_dict=True,
	)
	return {row.name: frappe.get_doc({"doctype": "Flow Run", **row}) for row in rows}


def fresh(run: Any) -> bool:
	"""Whether a run loaded by `lock_runs` was not written since (by its own advance or another's:
	a child that ended resumes its parent)."""
	return run.name not in getattr(frappe.local, "flow_runs_written", ())


def step_state(run_name: str) -> dict[str, Any]:
	"""A run's step state as stored now (no lock)."""
	return load_state(frappe.db.get_value("Flow Run", run_name, "step_state"))


def has_active_run(template: str, reference_doctype: str | None, reference_name: str) -> bool:
	return bool(
		frappe.db.exists(
			"Flow Run",
			{
				"template": template,
				"reference_doctype": reference_doctype,
				"reference_name": reference_name,
				"status": ("in", tuple(ACTIVE_RUN_STATUSES)),
			},
		)
	)


def persist(
	run: Any,
	result: AdvanceResult,
	now: dt.datetime,
	tracebacks: Mapping[tuple[str, int], str] | None = None,
) -> None:
	"""One write of the run's state, one insert of its log rows, and its timers.

	A finished run (completed, failed or cancelled) keeps no timer and no due time.
	"""
	finished = result.status in FINISHED_RUN_STATUSES
	values: dict[str, Any] = {
		"status": result.status,
		"step_state": dump_state(result.step_state),
		"variables": json.dumps(result.variables, default=str),
		"error": result.error,
		"next_due_at": None if finished else result.next_due,
		"advance_count": (run.advance_count or 0) + 1,
	}
	if not run.started_at:
		values["started_at"] = now
	if finished:
		values["completed_at"] = now
	# What Document.db_set does, less its reload of the row (load_doc_before_save) for hooks a
	# Flow Run does not have: one UPDATE, then the list views are told.
	values["modified"] = now_datetime()
	values["modified_by"] = frappe.session.user
	frappe.db.set_value("Flow Run", run.name, values, update_modified=False)
	run.update(values)
	run.notify_update()
	written = getattr(frappe.local, "flow_runs_written", None)
	if written is not None:
		written.add(run.name)
	write_logs(run, result.attempts, tracebacks or {})
	if finished:
		cancel_timers(run.name)
	else:
		clear_timers(run.name, result.cleared_timers)
		add_timers(run, result.timers)


# --- step logs -----------------------------------------------------------------------------


def write_logs(run: Any, attempts: list[Attempt], tracebacks: Mapping[tuple[str, int], str]) -> None:
	"""One Flow Step Log row per attempt, in one insert (PII redacted when the setting says so)."""
	if not attempts:
		return
	should_redact = redact_pii_enabled()
	now = now_datetime()
	rows = []
	for position, attempt in enumerate(attempts):
		# one timestamp per row, a microsecond apart: the log reads in execution order
		created = now + dt.timedelta(microseconds=position)
		error = attempt.error
		trace = tracebacks.get((attempt.step_id, attempt.attempt))
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
				*standard_values(created),
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
	run = frappe.db.get_value(
		"Flow Run", run_name, ["name", "template", "template_version", "step_state"], as_dict=True
	)
	if not run:
		return
	definition = load_definition(run.template_version)
	kind = definition.step(step_id).kind if definition.has_step(step_id) else ""
	attempt = entry_of(load_state(run.step_state), step_id).get("attempt", 0)
	write_logs(run, [Attempt(step_id, kind, attempt, status, now_datetime(), output=output, error=error)], {})


def _log_json(value: Any) -> str | None:
	if value is None:
		return None
	text = json.dumps(value, indent=1, default=str, ensure_ascii=False)
	if len(text) > MAX_LOG_JSON_CHARS:
		return text[:MAX_LOG_JSON_CHARS] + f"\n… truncated ({len(text)} characters)"
	return text


# --- timers ----------------------------------------------------------------------------------


def _set_status(where: Any, status: str) -> None:
	table = frappe.qb.DocType("Flow Step Pending")
	frappe.qb.update(table).set(table.status, status).set(table.modified, now_datetime()).where(
		where(table)
	).run()


def clear_timers(run_name: str, step_ids: list[str]) -> None:
	"""The Pending rows of these steps: Cancelled (the steps moved on)."""
	if step_ids:
		_set_status(
			lambda t: (t.run == run_name) & t.step_id.isin(step_ids) & (t.status == "Pending"), "Cancelled"
		)


def cancel_timers(run_name: str) -> None:
	"""Every Pending row of a run: Cancelled (the run finished, or its timers are rebuilt)."""
	_set_status(lambda t: (t.run == run_name) & (t.status == "Pending"), "Cancelled")


def add_timers(run: Any, timers: list[Timer]) -> None:
	if not timers:
		return
	now = now_datetime()
	rows = [
		(
			*standard_values(now),
			run.name,
			timer.step_id,
			run.template,
			timer.purpose if timer.purpose in TIMER_PURPOSES else "delay",
			timer.at,
			"Pending",
			0,
		)
		for timer in timers
	]
	frappe.db.bulk_insert("Flow Step Pending", PENDING_FIELDS, rows)
