"""Server side of the visual flow builder (the Desk page `flow-builder`).

`/api/method/flow_automation.builder.<name>`: load a template for the canvas (with a run's
overlay), save it back through the Flow Template controller (the form's validation and
versioning, drafts, Frappe's timestamp check), the variable picker's fields, per-step
statistics, importing flow files and the starter templates. Every method checks the caller's
role first, then document permissions; bad input raises a ValidationError naming the argument.
"""

from __future__ import annotations

import json
from typing import Any

import frappe
from frappe import _
from frappe.model import no_value_fields, table_fields
from frappe.query_builder.functions import Count
from frappe.utils import add_days, cint, now_datetime

from flow_automation import runtime
from flow_automation.engine import (
	ACTIVE_RUN_STATUSES,
	GATE,
	RunStatus,
	StepStatus,
	extract_definition,
	validate_definition,
)
from flow_automation.portable import step_to_row, template_values_from_export
from flow_automation.roles import FLOW_MANAGER_ROLES, FLOW_USER_ROLES, has_any_role, requires_roles

# The Flow Template fields the builder shows and edits, besides its steps and variables.
EDITABLE_FIELDS = (
	"enabled",
	"category",
	"description",
	"reference_doctype",
	"trigger_type",
	"document_event",
	"value_changed_field",
	"date_field",
	"days_offset",
	"time_of_day",
	"event_pattern",
	"cron_expression",
	"schedule_for_each",
	"schedule_filters",
	"whatsapp_keywords",
	"whatsapp_match",
	"whatsapp_priority",
	"whatsapp_account",
	"trigger_condition",
	"run_as",
	"one_active_run_per_document",
	"max_concurrent_runs",
	"max_consecutive_failures",
	"quiet_hours_enabled",
	"quiet_hours_start",
	"quiet_hours_end",
	"quiet_hours_timezone",
	"quiet_hours_monday",
	"quiet_hours_tuesday",
	"quiet_hours_wednesday",
	"quiet_hours_thursday",
	"quiet_hours_friday",
	"quiet_hours_saturday",
	"quiet_hours_sunday",
)
TIME_FIELDS = ("time_of_day", "quiet_hours_start", "quiet_hours_end")
TEMPLATE_FIELDS = ("name", "template_name", "is_system", *EDITABLE_FIELDS, "version", "modified")
JSON_FIELDS = ("schedule_filters", "trigger_condition")
LIST_FIELDS = ("whatsapp_keywords",)  # stored one per line, edited as a list
EMPTY_DEFINITION = {"version": 1, "variables": {}, "steps": []}
MAX_ATTEMPTS_PER_STEP = 50
MAX_DOC_FIELDS = 400
MAX_STATS_DAYS = 90
# Fields every document has, for the variable picker.
STANDARD_FIELDS = (
	("name", "ID", "Data"),
	("owner", "Created By", "Link"),
	("creation", "Created On", "Datetime"),
	("modified", "Last Updated On", "Datetime"),
)


# --- loading ----------------------------------------------------------------------------


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def get_builder(template: str | None = None, run: str | None = None) -> dict[str, Any]:
	"""A template as the builder edits it: its fields, its definition as the steps table holds
	it now (a draft included), the canvas layout, what the caller may do, the definition's
	problems, and — with `run` — that run of the template drawn over the canvas."""
	if template:
		_require_template(template)
		doc = frappe.get_doc("Flow Template", template)
		values = template_values(doc)
		definition = doc.build_definition()
		layout = _parsed(doc.canvas_layout) or {}
		can_edit = has_any_role(FLOW_MANAGER_ROLES) and frappe.has_permission("Flow Template", "write", doc)
	else:
		frappe.has_permission("Flow Template", "read", throw=True)
		values = new_template_values()
		definition = json.loads(json.dumps(EMPTY_DEFINITION))
		layout = {}
		can_edit = has_any_role(FLOW_MANAGER_ROLES) and frappe.has_permission("Flow Template", "create")
	if run and not template:
		frappe.throw(_("run: give the template the run belongs to"), frappe.ValidationError)
	return {
		"template": values,
		"definition": definition,
		"layout": layout if isinstance(layout, dict) else {},
		"can_edit": bool(can_edit),
		"can_run": has_any_role(FLOW_USER_ROLES),
		"problems": [issue.as_dict() | {"text": str(issue)} for issue in validate_definition(definition)],
		"run": run_overlay(run, template) if run else None,
		# a template from another site may name a DocType this one lacks (an app not installed)
		"missing_doctype": _missing_doctype(values.get("reference_doctype")),
		"fields": template_fields(),
	}


def template_fields() -> list[dict[str, Any]]:
	"""How the builder's flow panel draws the editable template fields: as the Flow Template
	form does, from its meta (order, section, label, type, options, description, depends_on),
	so the doctype stays the one place that says what a field is and when it shows."""
	fields = []
	section = None
	for df in frappe.get_meta("Flow Template").fields:
		if df.fieldtype == "Section Break":
			section = _(df.label) if df.label else None
		if df.fieldname not in EDITABLE_FIELDS:
			continue
		fields.append(
			{
				"fieldname": df.fieldname,
				"fieldtype": df.fieldtype,
				"label": _(df.label),
				"options": df.options,
				"description": _(df.description) if df.description else "",
				"depends_on": df.depends_on,
				"section": section,
				"value_kind": "json"
				if df.fieldname in JSON_FIELDS
				else "lines"
				if df.fieldname in LIST_FIELDS
				else None,
			}
		)
	return fields


def _missing_doctype(doctype: str | None) -> str | None:
	return doctype if doctype and not frappe.db.exists("DocType", doctype) else None


def template_values(doc: Any) -> dict[str, Any]:
	values = {field: doc.get(field) for field in TEMPLATE_FIELDS}
	for field in JSON_FIELDS:
		values[field] = _parsed(values[field])
	values["whatsapp_keywords"] = doc.keywords()
	for field in TIME_FIELDS:  # midnight is timedelta(0): falsy, still a time
		values[field] = None if doc.get(field) in (None, "") else str(doc.get(field))
	# exactly as stored: save_builder hands it back for Frappe's timestamp check
	values["modified"] = str(doc.modified)
	return values


def new_template_values() -> dict[str, Any]:
	values: dict[str, Any] = {field: None for field in TEMPLATE_FIELDS}
	values.update(enabled=0, is_system=0, trigger_type="Manual", version=0, whatsapp_keywords=[])
	return values


def run_overlay(run: str, template: str) -> dict[str, Any]:
	"""A run of `template` for the canvas: its state, each step's attempts, what may be done."""
	if not isinstance(run, str) or not frappe.db.exists("Flow Run", run):
		frappe.throw(_("run: Flow Run {0} does not exist").format(frappe.bold(run)), frappe.ValidationError)
	doc = frappe.get_doc("Flow Run", run)
	if doc.template != template:
		frappe.throw(
			_("run: Flow Run {0} is a run of {1}, not of {2}").format(
				frappe.bold(run), frappe.bold(doc.template), frappe.bold(template)
			),
			frappe.ValidationError,
		)
	frappe.has_permission("Flow Run", "read", doc, throw=True)
	pinned = frappe.db.get_value("Flow Template Version", doc.template_version, "definition")
	steps = {}
	for entry in runtime.run_timeline(doc, with_payloads=True):
		attempts = entry["attempts"]
		steps[entry["id"]] = {
			"status": entry["status"],
			"branch": entry["branch"],
			"error": entry["error"],
			"due_at": entry["due_at"],
			"reason": entry["reason"],
			"wait": entry["wait"],
			"attempts": [_attempt(log) for log in attempts[-MAX_ATTEMPTS_PER_STEP:]],
			"attempts_total": len(attempts),
		}
	active = doc.status in ACTIVE_RUN_STATUSES
	operator = has_any_role(FLOW_USER_ROLES)
	return {
		"name": doc.name,
		"status": doc.status,
		"error": doc.error,
		"version": doc.version,
		"template_version": doc.template_version,
		"reference_doctype": doc.reference_doctype,
		"reference_name": doc.reference_name,
		"started_at": _text(doc.started_at),
		"completed_at": _text(doc.completed_at),
		"next_due_at": _text(doc.next_due_at),
		"definition": _parsed(pinned) or {},
		"steps": steps,
		"can_retry": operator
		and doc.status != RunStatus.CANCELLED
		and any(s["status"] == StepStatus.FAILED for s in steps.values()),
		"can_cancel": operator and active,
		"waiting_steps": [
			step_id
			for step_id, s in steps.items()
			if active and s["status"] == StepStatus.WAITING and (s["wait"] or {}).get("type") == GATE
		]
		if operator
		else [],
	}


def _attempt(log: Any) -> dict[str, Any]:
	return {
		"attempt": log.attempt,
		"status": log.status,
		"started_at": _text(log.started_at),
		"duration_ms": log.duration_ms,
		"input": _parsed(log.input),
		"output": _parsed(log.output),
		"error": log.error,
		"retry_at": _text(log.retry_at),
		"branch": log.branch,
	}


# --- saving -----------------------------------------------------------------------------


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_MANAGER_ROLES)
def save_builder(doc: dict | str, template: str | None = None) -> dict[str, Any]:
	"""Save the builder's template, definition and layout through the Flow Template controller
	(the form's validation and versioning; a disabled template with problems is a draft).

	An existing template is saved only if nobody else saved it since the caller loaded it
	(`template.modified`, as `get_builder` returned it): else TimestampMismatchError. Without
	`template`, a new (non-system) template is inserted. Returns `get_builder` of the result.
	"""
	data = _json_object(doc, "doc")
	fields = _json_object(data.get("template") or {}, "doc.template")
	definition = _json_object(data.get("definition") or {}, "doc.definition")
	layout = _json_object(data.get("layout") or {}, "doc.layout")
	steps = definition.get("steps") or []
	if not isinstance(steps, list):
		frappe.throw(_("doc.definition.steps: must be a list"), frappe.ValidationError)
	rows = [_step_row(step, i) for i, step in enumerate(steps)]

	if template:
		if not isinstance(template, str) or not frappe.db.exists("Flow Template", template):
			frappe.throw(
				_("template: Flow Template {0} does not exist").format(frappe.bold(template)),
				frappe.ValidationError,
			)
		frappe.has_permission("Flow Template", "write", template, throw=True)
		name = fields.get("template_name")
		if name and name != template:
			frappe.throw(
				_("doc.template.template_name: rename {0} from its form, not while saving it").format(
					frappe.bold(template)
				),
				frappe.ValidationError,
			)
		if not fields.get("modified"):
			frappe.throw(
				_("doc.template.modified: give the modified timestamp the template was loaded with"),
				frappe.ValidationError,
			)
		target = frappe.get_doc("Flow Template", template)
		# Frappe's own check_if_latest compares this with the stored one on save
		target.modified = fields["modified"]
	else:
		frappe.has_permission("Flow Template", "create", throw=True)
		name = (
			(fields.get("template_name") or "").strip()
			if isinstance(fields.get("template_name"), str)
			else ""
		)
		if not name:
			frappe.throw(_("doc.template.template_name: give the new flow a name"), frappe.ValidationError)
		_require_free_name(name, "doc.template.template_name")
		target = frappe.new_doc("Flow Template")
		target.template_name = name
		target.is_system = 0
		target.enabled = 0
	apply_fields(target, fields)
	target.variables = json.dumps(definition.get("variables") or {}, indent=1, ensure_ascii=False)
	target.set("steps", rows)
	target.canvas_layout = json.dumps(layout, ensure_ascii=False)
	if template:
		target.save()
	else:
		target.insert()
	return get_builder(target.name)


def apply_fields(target: Any, fields: dict[str, Any]) -> None:
	"""The builder's trigger and option fields onto a Flow Template (only those given)."""
	for field in EDITABLE_FIELDS:
		if field not in fields:
			continue
		value = fields[field]
		if field in JSON_FIELDS:
			value = None if value in (None, "", {}, []) else json.dumps(value, indent=1, ensure_ascii=False)
		elif field == "whatsapp_keywords" and isinstance(value, list):
			value = "\n".join(str(k) for k in value)
		target.set(field, value)


def _step_row(step: Any, index: int) -> dict[str, Any]:
	where = f"doc.definition.steps[{index}]"
	if not isinstance(step, dict):
		frappe.throw(_("{0}: must be an object").format(where), frappe.ValidationError)
	for key in ("id", "kind"):
		if not isinstance(step.get(key), str) or not step[key].strip():
			frappe.throw(_("{0}.{1}: required").format(where, key), frappe.ValidationError)
	for key, kind in (("payload", dict), ("trigger", dict), ("retry", dict), ("depends_on", list)):
		if step.get(key) is not None and not isinstance(step[key], kind):
			frappe.throw(
				_("{0}.{1}: must be {2}").format(where, key, _("an object") if kind is dict else _("a list")),
				frappe.ValidationError,
			)
	if not all(isinstance(d, str) for d in step.get("depends_on") or []):
		frappe.throw(_("{0}.depends_on: must be a list of step ids").format(where), frappe.ValidationError)
	return step_to_row(step)


# --- the variable picker ----------------------------------------------------------------


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def doc_fields(doctype: str) -> list[dict[str, Any]]:
	"""The paths a template may use for a document of `doctype`: its fields (`doc.x`), the
	first row of each child table (`doc.table[0].x`) and the fields of each document a Link
	field points at (`linked.link_field.x`), one level deep; at most 400 entries."""
	if not isinstance(doctype, str) or not doctype or not frappe.db.exists("DocType", doctype):
		frappe.throw(_("doctype: {0} is not a DocType").format(frappe.bold(doctype)), frappe.ValidationError)
	meta = frappe.get_meta(doctype)
	group = _(meta.name)
	entries = [
		{
			"path": f"doc.{df.fieldname}",
			"label": _(df.label or df.fieldname),
			"fieldtype": df.fieldtype,
			"group": group,
		}
		for df in _data_fields(meta)
	]
	entries += [
		{"path": f"doc.{field}", "label": _(label), "fieldtype": fieldtype, "group": group}
		for field, label, fieldtype in STANDARD_FIELDS
	]
	for df in meta.fields:
		if df.fieldtype in table_fields and df.options and frappe.db.exists("DocType", df.options):
			rows = _("{0} (first row)").format(_(df.label or df.fieldname))
			entries += [
				{
					"path": f"doc.{df.fieldname}[0].{child.fieldname}",
					"label": _(child.label or child.fieldname),
					"fieldtype": child.fieldtype,
					"group": rows,
				}
				for child in _data_fields(frappe.get_meta(df.options))
			]
	for df in meta.fields:
		if df.fieldtype == "Link" and df.options and frappe.db.exists("DocType", df.options):
			linked = frappe.get_meta(df.options)
			if linked.istable:
				continue
			label = f"{_(df.label or df.fieldname)} → {_(linked.name)}"
			entries += [
				{
					"path": f"linked.{df.fieldname}.{field.fieldname}",
					"label": _(field.label or field.fieldname),
					"fieldtype": field.fieldtype,
					"group": label,
				}
				for field in _data_fields(linked)
			]
		if len(entries) >= MAX_DOC_FIELDS:
			break
	return entries[:MAX_DOC_FIELDS]


def _data_fields(meta: Any) -> list[Any]:
	return [df for df in meta.fields if df.fieldtype not in no_value_fields and df.fieldtype != "Password"]


# --- statistics -------------------------------------------------------------------------


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def step_stats(template: str, days: int = 30) -> dict[str, Any]:
	"""Per step, over the runs of `template` started in the last `days` (1..90): how many runs
	reached it, completed it, failed at it, and stopped there (not completed, their last log
	row is at this step); for a split step, also how many runs took each of its branches."""
	_require_template(template)
	days = cint(days)
	if not 1 <= days <= MAX_STATS_DAYS:
		frappe.throw(
			_("days: give a number of days from 1 to {0}").format(MAX_STATS_DAYS), frappe.ValidationError
		)
	since = add_days(now_datetime(), -days)
	runs = frappe.db.count("Flow Run", {"template": template, "creation": (">=", since)})
	definition_steps = frappe.get_doc("Flow Template", template).build_definition()["steps"]
	steps = {
		step["id"]: {"reached": 0, "completed": 0, "failed": 0, "stopped": 0} for step in definition_steps
	}
	# Raw SQL for the window functions (the last row per run and step, and per run); every
	# value is a parameter. Both tables are read through their (template, creation) index.
	rows = frappe.db.sql(
		"""
		select step_id,
			count(distinct run) as reached,
			count(distinct case when status = 'Success' then run end) as completed,
			count(distinct case when last_of_step = 1 and status = 'Failed' then run end) as failed,
			count(distinct case when last_of_run = 1 and run_status != 'Completed' then run end) as stopped
		from (
			select log.run, log.step_id, log.status, flow_run.status as run_status,
				row_number() over (partition by log.run, log.step_id order by log.creation desc, log.name desc)
					as last_of_step,
				row_number() over (partition by log.run order by log.creation desc, log.name desc) as last_of_run
			from `tabFlow Step Log` log
			join `tabFlow Run` flow_run on flow_run.name = log.run
			where log.template = %(template)s and log.creation >= %(since)s
				and flow_run.template = %(template)s and flow_run.creation >= %(since)s
		) logs
		group by step_id
		""",
		{"template": template, "since": since},
		as_dict=True,
	)
	for row in rows:
		steps[row.step_id] = {
			"reached": cint(row.reached),
			"completed": cint(row.completed),
			"failed": cint(row.failed),
			"stopped": cint(row.stopped),
		}
	splits = {step["id"]: step for step in definition_steps if step.get("kind") == "split"}
	for step_id, branches in split_branch_counts(template, since, splits).items():
		steps.setdefault(step_id, {"reached": 0, "completed": 0, "failed": 0, "stopped": 0})["branches"] = (
			branches
		)
	return {"since": str(since), "days": days, "runs": cint(runs), "steps": steps}


def split_branch_counts(template: str, since: Any, splits: dict[str, dict]) -> dict[str, dict[str, int]]:
	"""{split step: {branch: runs that took it}}: every branch of the step as it is now (0 when
	none took it), then any branch an earlier version had. One grouped query over the step log
	(its (template, creation) index), the same runs as the other figures."""
	if not splits:
		return {}
	counts: dict[str, dict[str, int]] = {
		step_id: {
			entry["name"]: 0
			for entry in (step.get("payload") or {}).get("branches") or []
			if isinstance(entry, dict) and isinstance(entry.get("name"), str)
		}
		for step_id, step in splits.items()
	}
	log = frappe.qb.DocType("Flow Step Log")
	run = frappe.qb.DocType("Flow Run")
	rows = (
		frappe.qb.from_(log)
		.join(run)
		.on(run.name == log.run)
		.select(log.step_id, log.branch, Count(log.run).distinct().as_("runs"))
		.where(
			(log.template == template)
			& (log.creation >= since)
			& (run.template == template)
			& (run.creation >= since)
			& log.step_id.isin(list(splits))
			& (log.status == "Success")
			& log.branch.isnotnull()
		)
		.groupby(log.step_id, log.branch)
		.run(as_dict=True)
	)
	for row in rows:
		counts[row.step_id][row.branch] = cint(row.runs)
	return counts


# --- new flows: import, starters --------------------------------------------------------


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_MANAGER_ROLES)
def import_template(data: dict | str, template_name: str | None = None) -> str:
	"""Create a (non-system) template from a flow file (the export format), named
	`template_name` or as the file says; disabled when its definition has problems (a draft)
	or its DocType is not installed. Returns the template's name."""
	frappe.has_permission("Flow Template", "create", throw=True)
	raw = _json_object(data, "data")
	try:
		definition, _meta = extract_definition(raw)
		values = template_values_from_export(raw)
	except (ValueError, TypeError, AttributeError, KeyError) as e:
		frappe.throw(_("data: not a flow file ({0})").format(e), frappe.ValidationError)
	name = (template_name or values.get("template_name") or "").strip()
	if not name:
		frappe.throw(_("template_name: the file names no template; give one"), frappe.ValidationError)
	_require_free_name(name, "template_name")
	values.update(template_name=name, is_system=0)
	doc = frappe.get_doc({"doctype": "Flow Template", **values})
	if validate_definition(definition):
		doc.enabled = 0
	doctype = values.get("reference_doctype")
	if doctype and not frappe.db.exists("DocType", doctype):
		doc.enabled = 0
		doc.flags.ignore_links = True
	doc.insert()
	return doc.name


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def starter_templates() -> list[dict[str, Any]]:
	"""The system templates, to start a new flow from (the client then duplicates one)."""
	return frappe.get_list(
		"Flow Template",
		filters={"is_system": 1},
		fields=["name", "category", "description", "trigger_type", "reference_doctype"],
		order_by="category asc, name asc",
	)


# --- helpers ----------------------------------------------------------------------------


def _require_template(template: Any) -> None:
	if not template or not isinstance(template, str):
		frappe.throw(_("template: give the name of a Flow Template"), frappe.ValidationError)
	if not frappe.db.exists("Flow Template", template):
		frappe.throw(
			_("template: Flow Template {0} does not exist").format(frappe.bold(template)),
			frappe.ValidationError,
		)
	frappe.has_permission("Flow Template", "read", template, throw=True)


def _require_free_name(name: str, argument: str) -> None:
	if frappe.db.exists("Flow Template", name):
		frappe.throw(
			_("{0}: a Flow Template named {1} already exists").format(argument, frappe.bold(name)),
			frappe.ValidationError,
		)


def _json_object(value: Any, name: str) -> dict[str, Any]:
	if isinstance(value, str):
		try:
			value = json.loads(value) if value.strip() else {}
		except ValueError as e:
			frappe.throw(_("{0}: not valid JSON ({1})").format(name, e), frappe.ValidationError)
	if not isinstance(value, dict):
		frappe.throw(_("{0}: must be a JSON object").format(name), frappe.ValidationError)
	return value


def _parsed(value: Any) -> Any:
	"""Stored JSON text as data (None when empty; the text itself if it is not JSON)."""
	if value is None or isinstance(value, dict | list):
		return value
	if not str(value).strip():
		return None
	try:
		return json.loads(value)
	except ValueError:
		return value


def _text(value: Any) -> str | None:
	return None if value is None else str(value)
