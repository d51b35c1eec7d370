# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import hashlib
import json
from typing import Any

import frappe
from frappe import _
from frappe.model.document import Document
from frappe.utils.html_utils import escape_html

from flow_automation.engine.definition import DELAY_UNITS
from flow_automation.engine.validation import ValidationIssue, validate_definition


class InvalidFlowDefinition(frappe.ValidationError):
	pass


# Which Flow Template Step field a JSON pointer of the definition points at.
_POINTER_FIELDS = (
	("/payload", "payload"),
	("/trigger/at", "trigger_at"),
	("/trigger/days", "delay_days"),
	("/trigger/hours", "delay_hours"),
	("/trigger/minutes", "delay_minutes"),
	("/trigger", "trigger_type"),
	("/retry/max_attempts", "max_attempts"),
	("/retry/backoff_seconds", "backoff_seconds"),
	("/retry", "max_attempts"),
	("/depends_on", "depends_on"),
	("/parent_id", "parent_id"),
	("/branch", "branch"),
	("/on_error", "on_error"),
	("/kind", "kind"),
	("/id", "step_id"),
	("/label", "label"),
)


class FlowTemplate(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		from flow_automation.flow_automation.doctype.flow_template_step.flow_template_step import (
			FlowTemplateStep,
		)

		canvas_layout: DF.JSON | None
		category: DF.Data | None
		consecutive_failures: DF.Int
		cron_expression: DF.Data | None
		date_field: DF.Literal[None]
		days_offset: DF.Int
		definition: DF.Code | None
		definition_hash: DF.Data | None
		description: DF.SmallText | None
		document_event: DF.Literal[
			"", "New", "Save", "Submit", "Cancel", "Delete", "Value Change", "Days Before", "Days After"
		]
		enabled: DF.Check
		event_pattern: DF.Data | None
		is_system: DF.Check
		last_scheduled_at: DF.Datetime | None
		max_concurrent_runs: DF.Int
		max_consecutive_failures: DF.Int
		one_active_run_per_document: DF.Check
		reference_doctype: DF.Link | None
		run_as: DF.Link | None
		schedule_filters: DF.Code | None
		schedule_for_each: DF.Check
		steps: DF.Table[FlowTemplateStep]
		template_name: DF.Data
		time_of_day: DF.Time | None
		trigger_condition: DF.Code | None
		trigger_type: DF.Literal[
			"Manual", "Document Event", "Named Event", "Schedule", "Webhook", "WhatsApp Message"
		]
		value_changed_field: DF.Literal[None]
		variables: DF.Code | None
		version: DF.Int
		webhook_secret: DF.Password | None
		webhook_url: DF.SmallText | None
		whatsapp_account: DF.Link | None
		whatsapp_keywords: DF.SmallText | None
		whatsapp_match: DF.Literal["exact_ignore_case", "exact", "contains", "regex"]
		whatsapp_priority: DF.Int
	# end: auto-generated types

	def validate(self) -> None:
		self.normalise_time_of_day()
		self.validate_trigger()
		self.compile_definition()

	def on_update(self) -> None:
		if self.flags.new_version:
			self.flags.new_version = False
			self.write_version()
		from flow_automation.triggers import clear_trigger_cache

		clear_trigger_cache()
		# again after commit: a request that rebuilt the index meanwhile saw the old rows
		frappe.db.after_commit.add(clear_trigger_cache)
		before = self.get_doc_before_save()
		if "Manual" in (self.trigger_type, before and before.trigger_type):
			# the "Run Flow" buttons come with the boot info, which Frappe caches per user
			frappe.db.after_commit.add(clear_boot_cache)
			clear_boot_cache()

	def on_trash(self) -> None:
		if self.is_system and not frappe.flags.in_uninstall:
			frappe.throw(
				_("System template {0} cannot be deleted. Disable it instead.").format(frappe.bold(self.name))
			)
		if frappe.db.exists("Flow Run", {"template": self.name}):
			frappe.throw(
				_("Template {0} has runs and cannot be deleted. Disable it instead.").format(
					frappe.bold(self.name)
				),
				frappe.LinkExistsError,
			)
		for version in frappe.get_all("Flow Template Version", filters={"template": self.name}, pluck="name"):
			frappe.delete_doc("Flow Template Version", version, ignore_permissions=True, force=True)

	def after_delete(self) -> None:
		from flow_automation.triggers import clear_trigger_cache

		clear_trigger_cache()
		frappe.db.after_commit.add(clear_trigger_cache)
		if self.trigger_type == "Manual":
			clear_boot_cache()

	def after_rename(self, old: str, new: str, merge: bool = False) -> None:
		from flow_automation.triggers import clear_trigger_cache

		clear_trigger_cache()

	def before_rename(self, old: str, new: str, merge: bool = False) -> None:
		if self.is_system:
			frappe.throw(
				_("System template {0} cannot be renamed. Duplicate it instead.").format(frappe.bold(old))
			)

	@property
	def webhook_url(self) -> str:
		if self.trigger_type != "Webhook" or self.is_new():
			return ""
		return frappe.utils.get_url(
			f"/api/method/flow_automation.api.webhook_trigger?template={frappe.utils.quote(self.name)}"
		)

	# --- validation ------------------------------------------------------------------------
	def normalise_time_of_day(self) -> None:
		# Whole minutes (the cron fires per minute). Desk also stamps new Time fields with the
		# current time, seconds and microseconds; the form's Time control drops the seconds on
		# load, and a stored value with seconds would open as modified.
		if self.time_of_day:
			self.time_of_day = frappe.utils.get_time(self.time_of_day).strftime("%H:%M:00")

	def validate_trigger(self) -> None:
		if self.trigger_condition:
			from flow_automation.engine.conditions import check_condition

			condition = _parse_json(self.trigger_condition, _("Condition"))
			problems = check_condition(condition)
			if problems:
				frappe.throw(
					"<br>".join(f"{_('Condition')} {p or '/'}: {frappe.bold(m)}" for p, m in problems),
					title=_("Invalid trigger condition"),
					exc=InvalidFlowDefinition,
				)
		if self.trigger_type == "Schedule" and self.cron_expression:
			from croniter import croniter

			if not croniter.is_valid(self.cron_expression.strip()):
				frappe.throw(_("Cron expression {0} is not valid").format(frappe.bold(self.cron_expression)))
		if self.trigger_type == "Schedule" and self.schedule_filters:
			filters = _parse_json(self.schedule_filters, _("Document Filters"))
			if not isinstance(filters, dict | list):
				frappe.throw(_("Document Filters must be a JSON object or list"))
		if self.trigger_type == "WhatsApp Message" and self.whatsapp_match == "regex":
			import re

			for keyword in self.keywords():
				try:
					re.compile(keyword)
				except re.error as e:
					frappe.throw(
						_("Keyword {0} is not a valid regular expression: {1}").format(
							frappe.bold(keyword), e
						)
					)
		if self.trigger_type == "Webhook" and not self.webhook_secret:
			self.webhook_secret = frappe.generate_hash(length=32)

	def keywords(self) -> list[str]:
		return [k.strip() for k in (self.whatsapp_keywords or "").splitlines() if k.strip()]

	def compile_definition(self) -> None:
		"""Compile the steps table to a definition, validate it, and bump the version if it changed."""
		definition = self.build_definition()
		issues = validate_definition(definition)
		if issues:
			self.throw_issues(issues)
		text = json.dumps(definition, indent=1, sort_keys=True, ensure_ascii=False)
		digest = hashlib.sha256(text.encode()).hexdigest()
		self.definition = text
		if digest != self.definition_hash:
			self.definition_hash = digest
			self.version = (self.version or 0) + 1
			self.flags.new_version = True

	def build_definition(self) -> dict[str, Any]:
		variables = _parse_json(self.variables, _("Variables")) if self.variables else {}
		if not isinstance(variables, dict):
			frappe.throw(_("Variables must be a JSON object"), exc=InvalidFlowDefinition)
		steps = []
		for row in self.steps:
			steps.append(row_to_step(row))
		return {"version": 1, "variables": variables, "steps": steps}

	def throw_issues(self, issues: list[ValidationIssue]) -> None:
		lines = []
		for issue in issues:
			if issue.index is None:
				lines.append(f"{frappe.bold(_('Flow'))} {issue.pointer or ''}: {escape_html(issue.message)}")
				continue
			row = self.steps[issue.index] if issue.index < len(self.steps) else None
			fieldname, rest = _field_for_pointer(issue.pointer)
			label = _(frappe.get_meta("Flow Template Step").get_label(fieldname)) if fieldname else ""
			where = _("Row #{0}").format(row.idx if row else issue.index + 1)
			if issue.step_id:
				where += f" ({escape_html(issue.step_id)})"
			lines.append(f"{frappe.bold(where)} · {label}{escape_html(rest)}: {escape_html(issue.message)}")
		frappe.throw(
			"<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>",
			title=_("The flow has {0} problem(s)").format(len(issues)),
			exc=InvalidFlowDefinition,
		)

	def write_version(self) -> None:
		frappe.get_doc(
			{
				"doctype": "Flow Template Version",
				"template": self.name,
				"version": self.version,
				"definition": self.definition,
				"definition_hash": self.definition_hash,
			}
		).insert(ignore_permissions=True)

	def latest_version_name(self) -> str:
		return f"{self.name}-v{self.version}"

	# --- import / export ------------------------------------------------------------------
	def as_export(self) -> dict[str, Any]:
		"""The template as a portable file, shaped like shared/examples/flows/*.json."""
		return {
			"template_name": self.template_name,
			"category": self.category,
			"description": self.description,
			"enabled": bool(self.enabled),
			"trigger": trigger_to_export(self),
			"options": {
				k: v
				for k, v in {
					"one_active_run_per_document": bool(self.one_active_run_per_document),
					"max_concurrent_runs": self.max_concurrent_runs or 0,
					"max_consecutive_failures": self.max_consecutive_failures or 0,
					"run_as": self.run_as,
				}.items()
				if v
			},
			"definition": json.loads(self.definition) if self.definition else self.build_definition(),
		}


def clear_boot_cache() -> None:
	frappe.cache.delete_value("bootinfo")


def _parse_json(value: Any, label: str) -> Any:
	if isinstance(value, dict | list):
		return value
	try:
		return json.loads(value)
	except (TypeError, ValueError) as e:
		frappe.throw(_("{0} is not valid JSON: {1}").format(label, e), exc=InvalidFlowDefinition)


def _field_for_pointer(pointer: str) -> tuple[str | None, str]:
	for prefix, fieldname in _POINTER_FIELDS:
		if pointer == prefix or pointer.startswith(prefix + "/"):
			return fieldname, pointer[len(prefix) :] if fieldname == "payload" else ""
	return None, pointer


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
		"retry": {"max_attempts": row.max_attempts or 1, "backoff_seconds": row.backoff_seconds or 0},
		"on_error": row.on_error or "fail",
	}
	if row.trigger_type:
		trigger: dict[str, Any] = {"type": row.trigger_type}
		for unit in DELAY_UNITS:
			value = row.get(f"delay_{unit}")
			if value:
				trigger[unit] = value
		if row.trigger_at:
			trigger["at"] = row.trigger_at
		step["trigger"] = trigger
	return step


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
	}


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
	from flow_automation.engine.definition import extract_definition

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


@frappe.whitelist()
def duplicate_template(template: str, new_name: str) -> str:
	"""Copy any template (system ones included) under a new name; the copy is not a system template."""
	frappe.has_permission("Flow Template", "read", template, throw=True)
	frappe.has_permission("Flow Template", "create", throw=True)
	new_name = (new_name or "").strip()
	if not new_name:
		frappe.throw(_("Give the copy a name"))
	if frappe.db.exists("Flow Template", new_name):
		frappe.throw(
			_("A template named {0} already exists").format(frappe.bold(new_name)), frappe.DuplicateEntryError
		)
	source = frappe.get_doc("Flow Template", template)
	copy = frappe.copy_doc(source)
	copy.template_name = new_name
	copy.is_system = 0
	copy.version = 0
	copy.definition_hash = None
	copy.consecutive_failures = 0
	copy.insert()
	return copy.name


def fixtures_path() -> str:
	"""The app's `fixtures/` folder of system flow templates (at the repository root)."""
	import os

	return os.path.realpath(os.path.join(frappe.get_app_path("flow_automation"), "..", "fixtures"))


def seed_templates(path: str | None = None) -> list[tuple[str, str]]:
	"""Load every flow in `fixtures/` as a system template; idempotent. Returns (name, action) pairs.

	An unchanged template is left alone (no new version); a changed one is updated. A
	template whose trigger doctype is not installed is loaded disabled.
	"""
	import glob
	import os

	results = []
	for file in sorted(glob.glob(os.path.join(path or fixtures_path(), "*.json"))):
		with open(file, encoding="utf-8") as fh:
			data = json.load(fh)
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
