"""The portable template format: a Flow Template as a JSON file and back.

The shape of `fixtures/*.json` and the shared examples: template name, trigger, options and
the engine's definition. `export_values` writes it, `template_values_from_export` reads it,
`seed_templates` loads a folder of them (the app's system templates, or a folder of your own).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import frappe
from frappe import _

from flow_automation.engine import DELAY_UNITS, QUIET_HOURS_DAYS, extract_definition


class InvalidFlowDefinition(frappe.ValidationError):
	pass


def parse_json(value: Any, label: str) -> Any:
	if isinstance(value, dict | list):
		return value
	try:
		return json.loads(value)
	except (TypeError, ValueError) as e:
		frappe.throw(_("{0} is not valid JSON: {1}").format(label, e), exc=InvalidFlowDefinition)


def row_to_step(row: Any) -> dict[str, Any]:
	"""One Flow Template Step row as a definition step."""
	payload: Any = {}
	if row.payload and row.payload.strip():
		try:
			payload = json.loads(row.payload)
		except ValueError as e:
			frappe.throw(
				_("Row #{0} ({1}) · Payload is not valid JSON: {2}").format(row.idx, row.step_id, e),
				title=_("Invalid payload"),
				exc=InvalidFlowDefinition,
			)
	step: dict[str, Any] = {
		"id": (row.step_id or "").strip(),
		"kind": (row.kind or "").strip(),
		"label": row.label or "",
		"parent_id": (row.parent_id or "").strip() or None,
		"branch": (row.branch or "").strip() or None,
		"depends_on": [d.strip() for d in (row.depends_on or "").split(",") if d.strip()],
		"payload": payload,
		"retry": {"max_attempts": row.max_attempts or 1, "backoff_seconds": _number(row.backoff_seconds)},
		"on_error": row.on_error or "fail",
	}
	if row.get("quiet_hours") and row.quiet_hours.strip():
		# empty: the flow's quiet hours; false / null: none; an object: the step's own
		try:
			step["quiet_hours"] = json.loads(row.quiet_hours)
		except ValueError as e:
			frappe.throw(
				_("Row #{0} ({1}) · Quiet Hours is not valid JSON: {2}").format(row.idx, row.step_id, e),
				title=_("Invalid quiet hours"),
				exc=InvalidFlowDefinition,
			)
	if row.trigger_type:
		trigger: dict[str, Any] = {"type": row.trigger_type}
		for unit in DELAY_UNITS:
			value = row.get(f"delay_{unit}")
			if value:
				trigger[unit] = _number(value)
		if row.trigger_at:
			trigger["at"] = row.trigger_at
		step["trigger"] = trigger
	return step


def _number(value: Any) -> int | float:
	"""A Float field's value as the definition holds it: 60, not 60.0 (a row read back from the
	database must compile to the same definition, and hash, as the row that was saved)."""
	value = value or 0
	return int(value) if float(value).is_integer() else float(value)


def step_to_row(step: dict[str, Any]) -> dict[str, Any]:
	"""One definition step as a Flow Template Step row (the inverse of row_to_step)."""
	trigger = step.get("trigger") or {}
	retry = step.get("retry") or {}
	return {
		"step_id": step["id"],
		"kind": step["kind"],
		"label": step.get("label") or "",
		"parent_id": step.get("parent_id") or "",
		"branch": "" if step.get("branch") is None else str(step["branch"]),
		"depends_on": ", ".join(step.get("depends_on") or []),
		"trigger_type": trigger.get("type") or "",
		"delay_days": trigger.get("days") or 0,
		"delay_hours": trigger.get("hours") or 0,
		"delay_minutes": trigger.get("minutes") or 0,
		"trigger_at": trigger.get("at") or "",
		"payload": json.dumps(step.get("payload") or {}, indent=1, ensure_ascii=False),
		"max_attempts": retry.get("max_attempts") or 1,
		"backoff_seconds": retry.get("backoff_seconds", 60),
		"on_error": step.get("on_error") or "fail",
		"quiet_hours": json.dumps(step["quiet_hours"]) if "quiet_hours" in step else "",
	}


# The Flow Template's Quiet Hours section: a day's Check field per engine day name.
QUIET_HOURS_DAY_FIELDS = dict(
	zip(
		QUIET_HOURS_DAYS,
		(
			f"quiet_hours_{day}"
			for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
		),
		strict=True,
	)
)
_QUIET_HOURS_ZONES = {"site": "Site", "contact": "Contact"}  # engine name: the field's option


def quiet_hours_from_fields(doc: Any) -> dict[str, Any] | None:
	"""A Flow Template's Quiet Hours fields as the definition's window; None when they are off."""
	if not doc.get("quiet_hours_enabled"):
		return None
	zone = (doc.get("quiet_hours_timezone") or "Site").strip()
	by_option = {option.lower(): name for name, option in _QUIET_HOURS_ZONES.items()}
	return {
		"start": _clock(doc.get("quiet_hours_start")),
		"end": _clock(doc.get("quiet_hours_end")),
		"days": [day for day, field in QUIET_HOURS_DAY_FIELDS.items() if doc.get(field)],
		"timezone": by_option.get(zone.lower(), zone),
	}


def quiet_hours_to_fields(window: Any) -> dict[str, Any]:
	"""The definition's window as Flow Template field values (the inverse of the above)."""
	if not isinstance(window, dict):
		return {"quiet_hours_enabled": 0}
	days = window.get("days")
	days = QUIET_HOURS_DAYS if days is None else days
	zone = window.get("timezone") or "site"
	return {
		"quiet_hours_enabled": 1,
		"quiet_hours_start": window.get("start"),
		"quiet_hours_end": window.get("end"),
		"quiet_hours_timezone": _QUIET_HOURS_ZONES.get(zone, zone),
		**{field: int(day in days) for day, field in QUIET_HOURS_DAY_FIELDS.items()},
	}


def _clock(value: Any) -> str | None:
	"""A Time field's value (a timedelta from the database, text from a form) as HH:MM."""
	if value in (None, ""):
		return None
	try:
		return frappe.utils.get_time(value).strftime("%H:%M")
	except Exception:
		return str(value)  # the engine's check names what is wrong with it


_TRIGGER_EXPORT_FIELDS = {
	"Document Event": {
		"doctype": "reference_doctype",
		"event": "document_event",
		"field": "value_changed_field",
		"date_field": "date_field",
		"days": "days_offset",
		"time": "time_of_day",
	},
	"Manual": {"doctype": "reference_doctype"},
	"Named Event": {"event_pattern": "event_pattern"},
	"Schedule": {"cron": "cron_expression", "doctype": "reference_doctype"},
	"Webhook": {},
	"WhatsApp Message": {
		"match": "whatsapp_match",
		"priority": "whatsapp_priority",
		"account": "whatsapp_account",
	},
}


def export_values(doc: Any) -> dict[str, Any]:
	"""A Flow Template as a portable file, shaped like shared/examples/flows/*.json."""
	return {
		"template_name": doc.template_name,
		"category": doc.category,
		"description": doc.description,
		"enabled": bool(doc.enabled),
		"trigger": trigger_to_export(doc),
		"options": {
			k: v
			for k, v in {
				"one_active_run_per_document": bool(doc.one_active_run_per_document),
				"max_concurrent_runs": doc.max_concurrent_runs or 0,
				"max_consecutive_failures": doc.max_consecutive_failures or 0,
				"run_as": doc.run_as,
			}.items()
			if v
		},
		"definition": json.loads(doc.definition) if doc.definition else doc.build_definition(),
	}


def trigger_to_export(doc: Any) -> dict[str, Any]:
	trigger: dict[str, Any] = {"type": doc.trigger_type}
	for key, fieldname in _TRIGGER_EXPORT_FIELDS.get(doc.trigger_type, {}).items():
		value = doc.get(fieldname)
		if value not in (None, "", 0):
			trigger[key] = str(value) if fieldname == "time_of_day" else value
	if doc.trigger_type == "Schedule" and doc.schedule_for_each:
		trigger["for_each"] = True
		trigger["filters"] = json.loads(doc.schedule_filters) if doc.schedule_filters else {}
	if doc.trigger_type == "WhatsApp Message":
		trigger["keywords"] = doc.keywords()
	if doc.trigger_condition:
		trigger["condition"] = json.loads(doc.trigger_condition)
	return trigger


def template_values_from_export(data: dict[str, Any]) -> dict[str, Any]:
	"""Flow Template field values from an export file (steps included)."""
	definition, meta = extract_definition(data)
	trigger = dict(meta.get("trigger") or {"type": "Manual"})
	options = meta.get("options") or {}
	trigger_type = trigger.pop("type", "Manual")
	values: dict[str, Any] = {
		"template_name": meta.get("template_name"),
		"category": meta.get("category"),
		"description": meta.get("description"),
		"enabled": int(meta.get("enabled", True)),
		"trigger_type": trigger_type,
		"variables": json.dumps(definition.get("variables") or {}, indent=1),
		"one_active_run_per_document": int(bool(options.get("one_active_run_per_document"))),
		"max_concurrent_runs": options.get("max_concurrent_runs") or 0,
		"max_consecutive_failures": options.get("max_consecutive_failures") or 0,
		"run_as": options.get("run_as"),
		"steps": [step_to_row(step) for step in definition.get("steps") or []],
		**quiet_hours_to_fields(definition.get("quiet_hours")),
	}
	for key, fieldname in _TRIGGER_EXPORT_FIELDS.get(trigger_type, {}).items():
		if key in trigger:
			values[fieldname] = trigger[key]
	if trigger_type == "Schedule" and trigger.get("for_each"):
		values["schedule_for_each"] = 1
		values["schedule_filters"] = json.dumps(trigger.get("filters") or {})
	if trigger_type == "WhatsApp Message":
		values["whatsapp_keywords"] = "\n".join(trigger.get("keywords") or [])
	if trigger.get("condition"):
		values["trigger_condition"] = json.dumps(trigger["condition"], indent=1)
	return values


def fixtures_path() -> str:
	"""The app's `fixtures/` folder of system flow templates (at the repository root)."""
	return os.path.realpath(os.path.join(frappe.get_app_path("flow_automation"), "..", "fixtures"))


def seed_templates(path: str | None = None) -> list[tuple[str, str]]:
	"""Load every flow in `fixtures/` as a system template; idempotent. Returns (name, action) pairs.

	An unchanged template is left alone (no new version); a changed one is updated. A file
	that says `"requires_apps": ["erpnext"]` is skipped, with the reason logged, on a site
	without those apps; any other template whose trigger doctype is not installed is loaded
	disabled.
	"""
	results = []
	installed = set(frappe.get_installed_apps())
	for file in sorted(glob.glob(os.path.join(path or fixtures_path(), "*.json"))):
		with open(file, encoding="utf-8") as fh:
			data = json.load(fh)
		missing_apps = [app for app in data.get("requires_apps") or [] if app not in installed]
		if missing_apps:
			reason = f"skipped: needs {', '.join(missing_apps)}, not installed on this site"
			frappe.logger("flow_automation").info(f"seed-templates: {data.get('template_name')}: {reason}")
			results.append((data.get("template_name") or os.path.basename(file), reason))
			continue
		values = template_values_from_export(data)
		values["is_system"] = 1 if data.get("is_system", True) else 0
		doctype = values.get("reference_doctype")
		missing_doctype = bool(doctype) and not frappe.db.exists("DocType", doctype)
		name = values["template_name"]
		if frappe.db.exists("Flow Template", name):
			doc = frappe.get_doc("Flow Template", name)
			before = (doc.definition_hash, doc.trigger_type, doc.reference_doctype)
			values.pop("enabled", None)  # keep the admin's choice
			doc.update({k: v for k, v in values.items() if k != "steps"})
			doc.set("steps", values["steps"])
		else:
			doc = frappe.get_doc({"doctype": "Flow Template", **values})
			before = None
		if missing_doctype:
			doc.enabled = 0
			doc.flags.ignore_links = True
		doc.flags.ignore_permissions = True
		doc.save()
		if before is None:
			action = "created" + (f" (disabled: {doctype} is not installed)" if missing_doctype else "")
		elif before == (doc.definition_hash, doc.trigger_type, doc.reference_doctype):
			action = "unchanged"
		else:
			action = f"updated to version {doc.version}"
		results.append((doc.name, action))
	return results
