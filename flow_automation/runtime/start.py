"""Starting runs: a Queued Flow Run pinned to the template's current version, and the
background job that gets it going after commit (a kick: if it is lost, the minute cron drains
the Queued run)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import frappe
from frappe import _
from frappe.utils import get_datetime, now_datetime
from frappe.utils.background_jobs import get_job
from redis.exceptions import RedisError
from rq import Queue

from flow_automation.engine import ACTIVE_RUN_STATUSES, AdvanceResult, RunStatus, load_state
from flow_automation.runtime.context import json_field
from flow_automation.runtime.lifecycle import FinishedRun, notify_finished
from flow_automation.runtime.store import has_active_run, load_definition, persist, version_name
from flow_automation.settings import is_paused
from flow_automation.transaction import enqueue, quiet_messages

TEMPLATE_FIELDS = ["name", "enabled", "version", "run_as", "one_active_run_per_document", "reference_doctype"]
# The trigger type of a for_each step's children: held (Queued) until their parent releases them.
FOR_EACH = "For Each"


class ActiveRunExists(frappe.ValidationError):
	"""The template allows one active run per document, and this document has one."""


def template_info(template: str, *, must_be_enabled: bool = True) -> frappe._dict:
	"""What starting a run needs to know of its template; ValidationError if it cannot start."""
	info = frappe.db.get_value("Flow Template", template, TEMPLATE_FIELDS, as_dict=True)
	if not info:
		frappe.throw(
			_("Flow Template {0} does not exist").format(frappe.bold(template)), frappe.ValidationError
		)
	if must_be_enabled and not info.enabled:
		frappe.throw(_("Flow Template {0} is disabled").format(frappe.bold(template)), frappe.ValidationError)
	return info


def check_document(
	info: Mapping[str, Any], reference_doctype: str | None, reference_name: str | None
) -> None:
	"""The document a run refers to: of the template's DocType, and existing."""
	if bool(reference_doctype) != bool(reference_name):
		frappe.throw(_("A document needs both its DocType and its name"), frappe.ValidationError)
	if not reference_doctype:
		return
	expected = info.get("reference_doctype")
	if expected and reference_doctype != expected:
		frappe.throw(
			_("Flow Template {0} works on {1} documents, not on {2} ({3} is a {2})").format(
				frappe.bold(info["name"]), _(expected), _(reference_doctype), reference_name
			),
			frappe.ValidationError,
		)
	if not frappe.db.exists(reference_doctype, reference_name):
		frappe.throw(
			_("{0} {1} does not exist").format(_(reference_doctype), frappe.bold(reference_name)),
			frappe.DoesNotExistError,
		)


def create_run(
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
	next_due_at: Any = None,
) -> str:
	"""Create a Queued Flow Run pinned to the template's current version; returns its name.

	The caller gets it going (`kick`, or advancing it); else the minute cron drains it.
	(`next_due_at` marks a for_each child released to start: see `batch`.)
	"""
	info = template_info(template)
	check_document(info, reference_doctype, reference_name)
	if info.one_active_run_per_document and reference_name:
		if has_active_run(info.name, reference_doctype, reference_name):
			raise ActiveRunExists(
				_("{0} {1} already has an active run of {2}").format(
					_(reference_doctype), reference_name, info.name
				)
			)
	version = version_name(info.name, info.version)
	definition = load_definition(version)
	if dedup_key and frappe.db.exists("Flow Run", {"dedup_key": dedup_key}):
		raise frappe.DuplicateEntryError("Flow Run", dedup_key)
	run = frappe.get_doc(
		{
			"doctype": "Flow Run",
			"template": info.name,
			"template_version": version,
			"version": info.version,
			"status": RunStatus.QUEUED,
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
			"next_due_at": next_due_at,
			"run_as": info.run_as or "Administrator",
		}
	)
	# a concurrent delivery of the same event may win the unique dedup key: the caller decides
	with quiet_messages():
		run.insert(ignore_permissions=True)
	return run.name


HELD_KICKS = "flow_automation_held_kicks"


def kick(run: str) -> None:
	"""Start a Queued run in a background job after commit (unless paused), or, inside
	`kicks_held()`, leave it to the caller to start in this process."""
	if is_paused():
		return  # stays Queued; the minute cron drains it later
	held = frappe.local.flags.get(HELD_KICKS)
	if held is not None:
		held.append(run)
		return
	enqueue_start(run, after_commit=True)


@contextmanager
def kicks_held() -> Iterator[list[str]]:
	"""Runs queued inside the block get no job: their names are collected, for the caller to
	start here once the block has committed (a run it rolled back is no longer Queued, and
	starting it does nothing). One the caller never starts stays Queued for the cron's drain."""
	outer = frappe.local.flags.get(HELD_KICKS)
	held: list[str] = []
	frappe.local.flags[HELD_KICKS] = held
	try:
		yield held
	finally:
		frappe.local.flags[HELD_KICKS] = outer


START_JOB = "flow_automation:start"


def enqueue_start(run: str, *, after_commit: bool = False) -> None:
	enqueue(
		"flow_automation.runtime.advance.start_job",
		job_id=f"{START_JOB}:{run}",
		deduplicate=True,
		after_commit=after_commit,
		run=run,
	)


def take_start_job(run: str) -> bool:
	"""Take a run's start job out of its queue, if no worker has taken it yet (the LREM that
	removes it says who won); True if this process now owns starting the run."""
	try:
		job = get_job(f"{START_JOB}:{run}")
		if job is None:
			return False
		taken = job.connection.lrem(Queue(job.origin, connection=job.connection).key, 1, job.id)
		if taken:
			job.delete(remove_from_queue=False)
		return bool(taken)
	except RedisError:
		return False


def may_start(run: Any) -> bool:
	"""Whether a Queued (and locked) run may start now: not paused, not a for_each child its
	parent has not released yet, and under the template's concurrency limit. A second active run
	of its document (`superseded_by`) never starts: it is cancelled here, saying why."""
	if is_paused():
		return False
	if run.trigger_type == FOR_EACH and not run.next_due_at:
		return False
	other = superseded_by(run)
	if other:
		cancel_duplicate(run, other)
		return False
	limit = frappe.get_cached_value("Flow Template", run.template, "max_concurrent_runs")
	if not limit:
		return True
	active = frappe.db.count(
		"Flow Run", {"template": run.template, "status": ("in", (RunStatus.RUNNING, RunStatus.WAITING))}
	)
	return active < limit


def superseded_by(run: Any) -> str | None:
	"""The run of the same template and document that was active when `run` was written, when
	the template allows one active run per document; else None.

	`create_run` checks before writing, but through its transaction's snapshot, which is older
	than a run another transaction committed meanwhile when the caller read anything before it
	locked the document (a save flood does). Reading fresher there would take locks in the
	user's save: it could wait for a worker, or deadlock with a save of the next document. So
	the job that starts the run looks again, and the later of the two never starts.
	"""
	if not run.reference_name or not frappe.get_cached_value(
		"Flow Template", run.template, "one_active_run_per_document"
	):
		return None
	table = frappe.qb.DocType("Flow Run")
	earlier = (
		frappe.qb.from_(table)
		.select(table.name, table.status, table.modified)
		.where(
			(table.reference_doctype == run.reference_doctype)
			& (table.reference_name == run.reference_name)
			& (table.template == run.template)
			& (table.name != run.name)
			& (table.creation < run.creation)
		)
		.run(as_dict=True)
	)
	created = get_datetime(run.creation)
	for other in earlier:
		# still active, or it ended (its last write) after this run was written
		if other.status in ACTIVE_RUN_STATUSES or get_datetime(other.modified) > created:
			return other.name
	return None


def cancel_duplicate(run: Any, other: str) -> None:
	"""End a Queued run that must not start (see `superseded_by`): Cancelled, with the reason, and
	the `flow_run_finished` hooks told, as every ending of a run does."""
	error = _(
		"Not started: {0} of this template was active for {1} {2} (one active run per document)"
	).format(other, _(run.reference_doctype), run.reference_name)
	result = AdvanceResult(
		status=RunStatus.CANCELLED,
		step_state=load_state(run.step_state),
		variables=json_field(run.variables),
		error=error,
	)
	persist(run, result, now_datetime().replace(microsecond=0))
	notify_finished(FinishedRun.of(run, RunStatus.CANCELLED, error))
