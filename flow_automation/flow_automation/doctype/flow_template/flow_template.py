# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import hashlib
import json
from typing import Any

import frappe
from frappe import _
from frappe.model.document import Document
from frappe.utils.html_utils import escape_html

from flow_automation.engine import (
	ValidationIssue,
	check_condition,
	check_quiet_hours,
	script_fingerprints,
	validate_definition,
)
from flow_automation.portable import (
	QUIET_HOURS_DAY_FIELDS,
	InvalidFlowDefinition,
	export_values,
	quiet_hours_from_fields,
	row_to_step,
)
from flow_automation.portable import (
	parse_json as _parse_json,
)
from flow_automation.roles import FLOW_MANAGER_ROLES, SYSTEM_MANAGER, has_any_role, requires_roles
from flow_automation.triggers import clear_trigger_cache

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
	("/quiet_hours", "quiet_hours"),
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
		quiet_hours_enabled: DF.Check
		quiet_hours_end: DF.Time | None
		quiet_hours_friday: DF.Check
		quiet_hours_monday: DF.Check
		quiet_hours_saturday: DF.Check
		quiet_hours_start: DF.Time | None
		quiet_hours_sunday: DF.Check
		quiet_hours_thursday: DF.Check
		quiet_hours_timezone: DF.Autocomplete | None
		quiet_hours_tuesday: DF.Check
		quiet_hours_wednesday: DF.Check
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
		self.validate_quiet_hours()
		self.validate_script_steps()
		self.compile_definition()

	def on_update(self) -> None:
		if self.flags.draft_problems:
			frappe.msgprint(
				_("Saved as a draft with {0} problem(s); fix them to enable it").format(
					self.flags.draft_problems
				),
				title=_("Draft saved"),
				indicator="orange",
			)
		if self.flags.new_version:
			self.flags.new_version = False
			self.write_version()
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
		clear_trigger_cache()
		frappe.db.after_commit.add(clear_trigger_cache)
		if self.trigger_type == "Manual":
			clear_boot_cache()

	def after_rename(self, old: str, new: str, merge: bool = False) -> None:
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

	def validate_quiet_hours(self) -> None:
		"""The Quiet Hours section as the engine reads it, each problem under its field's label."""
		if not self.quiet_hours_enabled:
			# Frappe gives every Time field of a new document the current time, whatever its
			# default: keep the section's own defaults until it is turned on
			for fieldname in ("quiet_hours_start", "quiet_hours_end"):
				self.set(fieldname, self.meta.get_field(fieldname).default)
			return
		for fieldname in ("quiet_hours_start", "quiet_hours_end"):
			if self.get(fieldname):  # whole minutes, as time_of_day
				self.set(fieldname, frappe.utils.get_time(self.get(fieldname)).strftime("%H:%M:00"))
		problems = check_quiet_hours(quiet_hours_from_fields(self))
		if not problems:
			return
		meta = self.meta
		labels = {
			"/start": meta.get_label("quiet_hours_start"),
			"/end": meta.get_label("quiet_hours_end"),
			"/timezone": meta.get_label("quiet_hours_timezone"),
		}
		lines = []
		for pointer, message in problems:
			if pointer.startswith("/days"):
				days = ", ".join(_(meta.get_label(f)) for f in QUIET_HOURS_DAY_FIELDS.values())
				label = _("Days ({0})").format(days) if pointer == "/days" else _("Days")
			else:
				label = _(labels.get(pointer, _("Quiet Hours")))
			lines.append(f"{frappe.bold(label)}: {escape_html(message)}")
		frappe.throw("<br>".join(lines), title=_("Invalid quiet hours"), exc=InvalidFlowDefinition)

	def validate_script_steps(self) -> None:
		"""Only a System Manager may add or change a run_script step (it runs server code):
		compared with the stored steps, so keeping the ones a template has is anyone's save."""
		if has_any_role((SYSTEM_MANAGER,)):
			return
		before = self.get_doc_before_save()
		kept = script_fingerprints(_steps_as_saved(before.steps if before else []))
		for row in self.steps:
			step = _steps_as_saved([row])
			wanted = script_fingerprints(step)
			if not wanted:
				continue
			if wanted - kept:
				frappe.throw(
					_(
						"Row #{0} ({1}): only a System Manager may add or change a {2} step (it runs server code)"
					).format(row.idx, escape_html(row.step_id or ""), frappe.bold("run_script")),
					frappe.PermissionError,
					title=_("Not permitted"),
				)
			kept -= wanted

	def keywords(self) -> list[str]:
		return [k.strip() for k in (self.whatsapp_keywords or "").splitlines() if k.strip()]

	def compile_definition(self) -> None:
		"""Compile the steps table to a definition, validate it, and bump the version if it changed.

		A disabled template may be saved with problems, as a draft: its steps table and
		variables are kept, while the compiled definition and the version stay those of its last
		valid save. An enabled template with problems is refused, so a draft is never enabled.
		"""
		definition = self.build_definition()
		issues = validate_definition(definition)
		if issues and self.enabled:
			self.throw_issues(issues)
		self.flags.draft_problems = len(issues)
		if issues:
			return
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
		window = quiet_hours_from_fields(self)
		return {
			"version": 1,
			"variables": variables,
			**({"quiet_hours": window} if window else {}),
			"steps": steps,
		}

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
		return export_values(self)


def _steps_as_saved(rows: Any) -> list[dict[str, Any]]:
	"""Step rows as {kind, payload}, a payload that is not JSON kept as its text."""
	steps = []
	for row in rows:
		try:
			payload = json.loads(row.payload) if (row.payload or "").strip() else {}
		except ValueError:
			payload = row.payload
		steps.append({"kind": (row.kind or "").strip(), "payload": payload})
	return steps


def clear_boot_cache() -> None:
	frappe.cache.delete_value("bootinfo")


def _field_for_pointer(pointer: str) -> tuple[str | None, str]:
	for prefix, fieldname in _POINTER_FIELDS:
		if pointer == prefix or pointer.startswith(prefix + "/"):
			return fieldname, pointer[len(prefix) :] if fieldname == "payload" else ""
	return None, pointer


@frappe.whitelist()
@requires_roles(FLOW_MANAGER_ROLES)
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
