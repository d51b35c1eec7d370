"""Triggers: document events, named events, schedules and webhooks → Flow Runs.

Dispatch is an outbox. A matching trigger writes a Flow Run with status Queued inside the
caller's transaction, with a unique dedup key, and kicks a deduplicated background job
after commit; the minute cron drains Queued runs a lost job left behind. So a trigger is
never lost and never doubled, and the user's save never waits for a flow to run.

The no-match path of document events costs no SQL: a per-doctype index of enabled
templates lives in `frappe.cache` (and the request-local cache in front of it) and is
cleared whenever a template changes.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import frappe
from frappe import _
from frappe.utils import add_days, add_to_date, get_datetime, getdate, now_datetime
from redis.exceptions import RedisError

from flow_automation.engine import ConditionError, evaluate_condition
from flow_automation.process_copy import process_copy
from flow_automation.roles import FLOW_USER_ROLES, has_any_role
from flow_automation.runtime import (
	ActiveRunExists,
	BatchItem,
	depth_of_caller,
	enqueue_start,
	kick,
	start_batch,
	startable,
)
from flow_automation.settings import is_paused, max_recursion_depth
from flow_automation.transaction import commit, separately

INDEX_KEY = "flow_automation:trigger_index"
NAMED_EVENTS = "__named_events__"
SCHEDULES = "__schedules__"
MANUAL = "__manual__"
INDEX_SECONDS = 60
HINT_SECONDS = 10  # how old the webhook's copy of the keyword triggers may be
OUTBOX_GRACE_SECONDS = 30
OUTBOX_BATCH = 500

EVENT_FOR_METHOD = {
	"after_insert": "New",
	"on_update": "Save",
	"on_submit": "Submit",
	"on_cancel": "Cancel",
	"on_trash": "Delete",
	"on_change": "Value Change",
}
# Our own hot tables never trigger flows (a flow reacts to another flow's failure
# through the flow_run.failed named event instead).
INTERNAL_DOCTYPES = frozenset(
	{"Flow Run", "Flow Step Log", "Flow Step Pending", "Flow Template Version", "Flow Template Step"}
)


def clear_trigger_cache() -> None:
	frappe.cache.delete_value(INDEX_KEY)
	_keyword_specs_copy.clear()  # this process's; the others' expire within HINT_SECONDS


def _index(key: str, generator) -> list[dict[str, Any]]:
	"""A part of the trigger index (cached in one Redis hash until a template changes).

	A job whose transaction began before a template was saved can rebuild a part from its older
	snapshot after the save cleared the cache; so the hash also expires INDEX_SECONDS after it
	was first built, and such a stale part lasts a minute at most, never until the next save.
	The generator must return a list (never None: a None result is not cached).
	"""
	built = []

	def build() -> list[dict[str, Any]]:
		built.append(True)
		return generator()

	value = frappe.cache.hget(INDEX_KEY, key, build)
	if built:
		name = frappe.cache.make_key(INDEX_KEY)
		with suppress(RedisError):  # no Redis, no cache: nothing to expire
			if frappe.cache.ttl(name) < 0:  # not set yet on this hash (-1), or already gone (-2)
				frappe.cache.expire(name, INDEX_SECONDS)
	return value


def _is_quiet() -> bool:
	flags = frappe.local.flags
	return bool(
		flags.in_install
		or flags.in_migrate
		or flags.in_patch
		or flags.in_import
		or flags.in_install_app
		or flags.in_uninstall
	)


# --- document events -----------------------------------------------------------------------


def _document_specs(doctype: str) -> list[dict[str, Any]]:
	if doctype in INTERNAL_DOCTYPES:
		return []
	rows = frappe.get_all(
		"Flow Template",
		filters={
			"enabled": 1,
			"trigger_type": "Document Event",
			"reference_doctype": doctype,
			"document_event": ("not in", ("Days Before", "Days After")),
		},
		fields=[
			"name",
			"document_event",
			"value_changed_field",
			"trigger_condition",
		],
	)
	return [dict(row, trigger_condition=_condition(row.trigger_condition)) for row in rows]


def _condition(raw: Any) -> dict[str, Any] | None:
	if not raw:
		return None
	return raw if isinstance(raw, dict) else json.loads(raw)


def on_document_event(doc: Any, method: str) -> None:
	"""doc_events["*"]: start the flows whose trigger matches this document event."""
	if _is_quiet():
		return
	specs = _index(doc.doctype, lambda: _document_specs(doc.doctype))
	if not specs:
		return  # the common case: nothing to do, and no SQL spent finding that out
	event = EVENT_FOR_METHOD.get(method)
	if event == "Value Change" and (doc.flags.in_insert or doc.flags.in_delete):
		return
	snapshot: dict[str, Any] | None = None
	for spec in specs:
		if spec["document_event"] != event:
			continue
		if event == "Value Change" and not _value_changed(doc, spec["value_changed_field"]):
			continue
		if snapshot is None:
			snapshot = json.loads(frappe.as_json(doc.as_dict(convert_dates_to_str=True)))
		if not _condition_holds(spec, {"doc": snapshot}):
			continue
		trigger = {"type": "Document Event", "event": event, "doctype": doc.doctype, "name": doc.name}
		if event == "Delete":
			trigger["doc"] = snapshot  # the document is gone when the run starts
		queue_run(
			spec["name"],
			reference_doctype=doc.doctype,
			reference_name=doc.name,
			trigger=trigger,
			dedup_key=_dedup(spec["name"], doc.doctype, doc.name, event, str(doc.modified)),
		)


def _value_changed(doc: Any, fieldname: str | None) -> bool:
	if not fieldname:
		return False
	before = doc.get_doc_before_save()
	if before is None:
		return False
	old, new = before.get(fieldname), doc.get(fieldname)
	return ("" if old is None else str(old)) != ("" if new is None else str(new))


def _condition_holds(spec: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
	condition = spec.get("trigger_condition")
	if not condition:
		return True
	try:
		return evaluate_condition(condition, context)
	except ConditionError as e:
		frappe.log_error(title=f"Flow trigger condition of {spec['name']}", message=str(e))
		return False


def _dedup(*parts: Any) -> str:
	return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


# --- the outbox --------------------------------------------------------------------------------


def queue_run(
	template: str,
	*,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	trigger: Mapping[str, Any] | None = None,
	variables: Mapping[str, Any] | None = None,
	contact: str | None = None,
	dedup_key: str | None = None,
) -> str | None:
	"""Write a Queued run in the current transaction and kick it after commit.

	Returns the run name, or None when a guard rail said no (duplicate event, one active
	run per document, recursion depth).
	"""
	depth = _trigger_depth(template)
	if depth is None:
		return None
	item = BatchItem(reference_doctype, reference_name, variables, dedup_key)
	started = start_batch(
		template,
		[item],
		trigger=trigger or {},
		contact=contact,
		depth=depth,
		refused=_not_started(template),
		start=kick,
	)
	return started.runs[0]


def _trigger_depth(template: str) -> int | None:
	"""How deep a run this trigger starts is (a flow step may have caused it); None (logged)
	when that is over the recursion limit."""
	caller = depth_of_caller()
	depth = 0 if caller is None else caller + 1
	max_depth = max_recursion_depth()
	if depth > max_depth:
		frappe.log_error(
			title=f"Flow {template} not started: recursion depth",
			message=f"A flow step triggered {template} at depth {depth}; the limit is {max_depth}.",
		)
		return None
	return depth


def _not_started(template: str) -> Callable[[int, BatchItem, Exception], None]:
	"""What a trigger does with a run it may not write: nothing for a duplicate event or one
	active run per document; a log entry otherwise (never an error in the caller's save)."""

	def refused(position: int, item: BatchItem, error: Exception) -> None:
		if isinstance(error, frappe.DuplicateEntryError | frappe.UniqueValidationError | ActiveRunExists):
			return  # the same event delivered again, or this document's run is still going
		# e.g. the template was disabled or deleted a moment ago
		frappe.log_error(title=f"Flow {template} not started", message=str(error))

	return refused


def drain_outbox(now: dt.datetime | None = None, grace_seconds: int = OUTBOX_GRACE_SECONDS) -> int:
	"""Kick Queued runs older than the grace period (their after-commit job was lost, the
	kill switch held them, or a concurrency limit made them wait)."""
	if is_paused():
		return 0
	now = now or now_datetime()
	table = frappe.qb.DocType("Flow Run")
	queued = (
		frappe.qb.from_(table)
		.select(table.name)
		.where(
			(table.status == "Queued")
			& (table.creation <= add_to_date(now, seconds=-grace_seconds))
			& startable(table)  # not the for_each children their parent holds back
		)
		.orderby(table.creation)
		.limit(OUTBOX_BATCH)
		.run(pluck=True)
	)
	for run in queued:
		enqueue_start(run)
	return len(queued)


# --- named events ------------------------------------------------------------------------------


def _named_specs() -> list[dict[str, Any]]:
	rows = frappe.get_all(
		"Flow Template",
		filters={"enabled": 1, "trigger_type": "Named Event"},
		fields=["name", "event_pattern", "trigger_condition"],
	)
	return [
		dict(
			row,
			patterns=[
				p.strip() for p in (row.event_pattern or "").replace("\n", ",").split(",") if p.strip()
			],
			trigger_condition=_condition(row.trigger_condition),
		)
		for row in rows
	]


def dispatch_event(
	event: str,
	doc: Any = None,
	variables: Mapping[str, Any] | None = None,
	*,
	dedup_key: str | None = None,
	contact: str | None = None,
) -> list[str]:
	"""Start every enabled flow whose Named Event pattern matches `event`.

	`doc` is a Document (or a dict with doctype and name) the runs refer to; `variables`
	become run variables; `trigger.event` carries the real event name. Runs start after
	the caller's transaction commits. Returns the names of the runs queued.
	"""
	if not event or not isinstance(event, str):
		frappe.throw(_("event: give an event name such as production_run.assigned"), frappe.ValidationError)
	specs = _index(NAMED_EVENTS, _named_specs)
	matching = [s for s in specs if any(fnmatch.fnmatchcase(event, p) for p in s["patterns"])]
	if not matching:
		return []
	doctype, name, snapshot = _reference(doc)
	variables = dict(variables or {})
	context = {"doc": snapshot or {}, "variables": variables, "trigger": {"event": event}}
	runs = []
	for spec in matching:
		if not _condition_holds(spec, context):
			continue
		run = queue_run(
			spec["name"],
			reference_doctype=doctype,
			reference_name=name,
			trigger={"type": "Named Event", "event": event},
			variables=variables,
			contact=contact,
			dedup_key=_dedup(spec["name"], event, dedup_key) if dedup_key else None,
		)
		if run:
			runs.append(run)
	return runs


def _reference(doc: Any) -> tuple[str | None, str | None, dict[str, Any] | None]:
	if doc is None:
		return None, None, None
	if isinstance(doc, Mapping):
		doctype, name = doc.get("doctype"), doc.get("name")
		if doctype and name and frappe.db.exists(doctype, name):
			return (
				doctype,
				name,
				json.loads(frappe.as_json(frappe.get_doc(doctype, name).as_dict(convert_dates_to_str=True))),
			)
		return None, None, dict(doc)
	return doc.doctype, doc.name, json.loads(frappe.as_json(doc.as_dict(convert_dates_to_str=True)))


# --- schedules ---------------------------------------------------------------------------------


def _schedule_specs() -> list[dict[str, Any]]:
	rows = frappe.get_all(
		"Flow Template",
		filters={"enabled": 1, "trigger_type": ("in", ("Schedule", "Document Event"))},
		fields=[
			"name",
			"trigger_type",
			"document_event",
			"cron_expression",
			"schedule_for_each",
			"schedule_filters",
			"reference_doctype",
			"date_field",
			"days_offset",
			"time_of_day",
			"trigger_condition",
			"creation",
		],
	)
	specs = []
	for row in rows:
		if row.trigger_type == "Document Event" and row.document_event not in ("Days Before", "Days After"):
			continue
		row.trigger_condition = _condition(row.trigger_condition)
		row.schedule_filters = json.loads(row.schedule_filters) if row.schedule_filters else {}
		# midnight is a time too (a falsy timedelta(0)); only an empty field means 09:00
		row.time_of_day = "09:00:00" if row.time_of_day in (None, "") else str(row.time_of_day)
		row.creation = str(row.creation)
		specs.append(dict(row))
	return specs


def fire_schedules(now: dt.datetime | None = None) -> list[str]:
	"""Start the runs of every schedule due at `now` (site time zone); returns run names.

	A schedule that was due several times while the site was down fires once. The cron owns
	this transaction: each schedule's slot is claimed and committed before it fires, and each
	fires on its own, so a broken one (bad filters, a field that went away) is logged, is
	not retried every minute, and never stops the others.
	"""
	now = (now or now_datetime()).replace(microsecond=0)
	runs: list[str] = []
	for spec in _index(SCHEDULES, _schedule_specs):
		slot = _due_slot(spec, now)
		if slot is None or not _claim_slot(spec["name"], slot):
			continue
		commit()
		fire = _fire_cron if spec["trigger_type"] == "Schedule" else _fire_days
		separately(lambda: runs.extend(fire(spec, slot)), title=f"Flow schedule of {spec['name']} failed")
	return runs


def _due_slot(spec: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
	"""The latest scheduled time at or before `now` not fired yet, or None."""
	from croniter import croniter

	last = frappe.db.get_value("Flow Template", spec["name"], "last_scheduled_at")
	since = get_datetime(last) if last else get_datetime(spec["creation"])
	if spec["trigger_type"] == "Schedule":
		expression = (spec.get("cron_expression") or "").strip()
		if not expression or not croniter.is_valid(expression):
			return None
		latest = croniter(expression, now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
		return latest if latest > since else None
	hour, minute, second = (int(float(p)) for p in ([*spec["time_of_day"].split(":"), "0", "0"])[:3])
	today = now.replace(hour=hour, minute=minute, second=second)
	latest = today if today <= now else today - dt.timedelta(days=1)
	return latest if latest > since else None


def _claim_slot(template: str, slot: dt.datetime) -> bool:
	"""Compare-and-set last_scheduled_at, so one scheduler fires a slot however many run."""
	table = frappe.qb.DocType("Flow Template")
	(
		frappe.qb.update(table)
		.set(table.last_scheduled_at, slot)
		.where(
			(table.name == template) & (table.last_scheduled_at.isnull() | (table.last_scheduled_at < slot))
		)
	).run()
	# the affected-row count of that UPDATE: 1 for the scheduler that won the slot, 0 for the others
	return frappe.db._cursor.rowcount == 1


def _fire_cron(spec: Mapping[str, Any], slot: dt.datetime) -> list[str]:
	trigger = {"type": "Schedule", "event": spec.get("cron_expression"), "scheduled_for": str(slot)}
	if not spec.get("schedule_for_each"):
		if not _condition_holds(spec, {"trigger": trigger}):
			return []
		run = queue_run(spec["name"], trigger=trigger, dedup_key=_dedup(spec["name"], slot))
		return [run] if run else []
	names = frappe.get_all(
		spec["reference_doctype"], filters=spec.get("schedule_filters") or {}, pluck="name"
	)
	return _start_for_documents(spec, names, trigger, slot)


def _fire_days(spec: Mapping[str, Any], slot: dt.datetime) -> list[str]:
	"""Days Before / Days After: documents whose date field is N days after / before today."""
	days = int(spec.get("days_offset") or 0)
	target = add_days(getdate(slot), days if spec["document_event"] == "Days Before" else -days)
	field = spec["date_field"]
	meta = frappe.get_meta(spec["reference_doctype"])
	df = meta.get_field(field)
	if df is None:
		return []
	if df.fieldtype == "Datetime":
		filters = {field: ("between", (f"{target} 00:00:00", f"{target} 23:59:59"))}
	else:
		filters = {field: target}
	names = frappe.get_all(spec["reference_doctype"], filters=filters, pluck="name")
	trigger = {"type": "Document Event", "event": spec["document_event"], "date": str(target)}
	return _start_for_documents(spec, names, trigger, slot)


def _start_for_documents(
	spec: Mapping[str, Any], names: list[str], trigger: Mapping[str, Any], slot: dt.datetime
) -> list[str]:
	"""One run per matching document, through the same batch start as a for_each step's
	children; committed a chunk at a time, so a huge schedule never holds locks for long."""
	depth = _trigger_depth(spec["name"])
	if depth is None:
		return []
	doctype = spec["reference_doctype"]
	items = (
		BatchItem(doctype, name, dedup_key=_dedup(spec["name"], doctype, name, slot))
		for name in names
		if _document_condition_holds(spec, doctype, name, trigger)
	)
	started = start_batch(
		spec["name"],
		items,
		trigger=trigger,
		depth=depth,
		refused=_not_started(spec["name"]),
		after_chunk=commit,
		start=kick,
	)
	return [run for run in started.runs if run]


def _document_condition_holds(
	spec: Mapping[str, Any], doctype: str, name: str, trigger: Mapping[str, Any]
) -> bool:
	if not spec.get("trigger_condition"):
		return True
	snapshot = json.loads(frappe.as_json(frappe.get_doc(doctype, name).as_dict(convert_dates_to_str=True)))
	return _condition_holds(spec, {"doc": snapshot, "trigger": trigger})


# --- manual ---------------------------------------------------------------------------------------


def _manual_specs() -> list[dict[str, Any]]:
	return frappe.get_all(
		"Flow Template",
		filters={"enabled": 1, "trigger_type": "Manual", "reference_doctype": ("is", "set")},
		fields=["name", "reference_doctype", "category"],
	)


def manual_templates() -> dict[str, list[str]]:
	"""{doctype: [template, ...]} of enabled Manual templates, for the "Run Flow" buttons."""
	result: dict[str, list[str]] = {}
	for spec in _index(MANUAL, _manual_specs):
		result.setdefault(spec["reference_doctype"], []).append(spec["name"])
	return result


def boot_session(bootinfo: Any) -> None:
	if has_any_role(FLOW_USER_ROLES):
		bootinfo.flow_automation_manual = manual_templates()


# --- WhatsApp keywords -----------------------------------------------------------------------------

WHATSAPP_KEYWORDS = "__whatsapp_keywords__"


def _whatsapp_specs() -> list[dict[str, Any]]:
	rows = frappe.get_all(
		"Flow Template",
		filters={"enabled": 1, "trigger_type": "WhatsApp Message"},
		fields=[
			"name",
			"whatsapp_keywords",
			"whatsapp_match",
			"whatsapp_priority",
			"whatsapp_account",
			"trigger_condition",
		],
		order_by="whatsapp_priority desc, name asc",
	)
	return [
		{
			"name": row.name,
			"keywords": [k.strip() for k in (row.whatsapp_keywords or "").splitlines() if k.strip()],
			"match": row.whatsapp_match or "exact_ignore_case",
			"priority": row.whatsapp_priority or 0,
			"account": row.whatsapp_account,
			"trigger_condition": _condition(row.trigger_condition),
		}
		for row in rows
	]


def keyword_matches(text: str, keyword: str, match: str) -> bool:
	"""Whether inbound `text` matches one keyword of a WhatsApp Message trigger."""
	import re

	text = text.strip()
	if match == "exact":
		return text == keyword
	if match == "contains":
		return keyword.casefold() in text.casefold()
	if match == "regex":
		try:
			return re.search(keyword, text) is not None
		except re.error:
			return False
	return text.casefold() == keyword.casefold()


def whatsapp_templates_for(
	text: str, account: str | None = None, specs: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
	"""Enabled templates whose keywords match `text`, highest priority first (cached index, or
	the given `specs`)."""
	return [
		spec
		for spec in (_index(WHATSAPP_KEYWORDS, _whatsapp_specs) if specs is None else specs)
		if (not spec["account"] or spec["account"] == account)
		and any(keyword_matches(text, k, spec["match"]) for k in spec["keywords"])
	]


@process_copy(HINT_SECONDS)
def _keyword_specs_copy() -> list[dict[str, Any]]:
	return _index(WHATSAPP_KEYWORDS, _whatsapp_specs)


def starts_a_whatsapp_flow(text: str | None, account: str | None) -> bool:
	"""Whether `text` would start a keyword flow, as the webhook asks on every delivery: from
	this process's copy of the keyword triggers, at most HINT_SECONDS old, so no Redis round
	trip per request. A hint only: the routing itself reads the index afresh, so a copy out of
	date merely moves a message's routing between right after the response and the job."""
	text = (text or "").strip()
	return bool(text and whatsapp_templates_for(text, account, _keyword_specs_copy()))


def dispatch_whatsapp_message(
	text: str,
	*,
	account: str | None,
	contact: Mapping[str, Any],
	message: Mapping[str, Any],
	wamid: str,
) -> str | None:
	"""Start the highest-priority flow whose keyword trigger matches an inbound message.

	One message starts at most one flow; the wamid is the dedup key, so a redelivered or
	reprocessed message never starts it twice. Returns the run name, or None.
	"""
	trigger = {"type": "WhatsApp Message", "event": text, "message": dict(message), "contact": dict(contact)}
	for spec in whatsapp_templates_for(text, account):
		if not _condition_holds(spec, {"trigger": trigger, "contact": dict(contact)}):
			continue
		return queue_run(
			spec["name"],
			trigger=trigger,
			contact=contact.get("number"),
			dedup_key=_dedup(spec["name"], "whatsapp", wamid),
		)
	return None
