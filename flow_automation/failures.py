"""What happens when a run ends: the circuit breaker, `flow_run.failed`, alerts, queued runs."""

from __future__ import annotations

import frappe
from frappe import _
from frappe.utils import get_url_to_form, strip_html, validate_email_address

FAILED_EVENT = "flow_run.failed"


def on_run_finished(run: str, template: str, status: str) -> None:
	info = frappe.db.get_value(
		"Flow Template",
		template,
		["name", "owner", "max_concurrent_runs", "consecutive_failures", "max_consecutive_failures"],
		as_dict=True,
	)
	if not info:
		return
	if status == "Failed":
		on_run_failed(run, info)
	elif status == "Completed" and info.consecutive_failures:
		frappe.db.set_value("Flow Template", template, "consecutive_failures", 0, update_modified=False)
	if info.max_concurrent_runs:
		start_next_queued(template)


def start_next_queued(template: str) -> None:
	"""A slot freed up: kick the oldest run that waits in Queued for this template."""
	from flow_automation.runtime import kick

	waiting = frappe.get_all(
		"Flow Run",
		filters={"template": template, "status": "Queued"},
		order_by="creation asc",
		limit=1,
		pluck="name",
	)
	if waiting:
		kick(waiting[0])


def on_run_failed(run: str, template: frappe._dict) -> None:
	values = frappe.db.get_value(
		"Flow Run", run, ["error", "trigger_event", "reference_doctype", "reference_name"], as_dict=True
	)
	failures = (template.consecutive_failures or 0) + 1
	frappe.db.set_value(
		"Flow Template", template.name, "consecutive_failures", failures, update_modified=False
	)
	tripped = bool(template.max_consecutive_failures) and failures >= template.max_consecutive_failures
	if tripped:
		from flow_automation.triggers import clear_trigger_cache

		frappe.db.set_value("Flow Template", template.name, "enabled", 0)
		clear_trigger_cache()
	if values.trigger_event != FAILED_EVENT:  # a failing failure handler must not feed itself
		from flow_automation.triggers import dispatch_event

		dispatch_event(
			FAILED_EVENT,
			doc={"doctype": "Flow Run", "name": run},
			variables={
				"failed_run": run,
				"failed_template": template.name,
				"error": values.error,
				"reference_doctype": values.reference_doctype,
				"reference_name": values.reference_name,
			},
		)
	alert(run, template, values.error, tripped, failures)


def alert_recipients(template_owner: str | None) -> tuple[list[str], list[str]]:
	"""(users, email addresses) to alert: the template's owner and the configured recipients."""
	from flow_automation.flow_automation.doctype.flow_automation_settings.flow_automation_settings import (
		get_settings,
	)

	entries = [template_owner] if template_owner else []
	entries += (get_settings().get("failure_alert_recipients") or "").replace(",", "\n").splitlines()
	users, emails = [], []
	for entry in (e.strip() for e in entries):
		if not entry or entry in users or entry in emails:
			continue
		if frappe.db.exists("User", entry):
			users.append(entry)
		elif validate_email_address(entry):
			emails.append(entry)
	return users, emails


def alert(run: str, template: frappe._dict, error: str | None, tripped: bool, failures: int) -> None:
	users, emails = alert_recipients(template.owner)
	link = get_url_to_form("Flow Run", run)
	subject = _("Flow {0} failed").format(template.name)
	if tripped:
		subject = _("Flow {0} was disabled after {1} failed runs in a row").format(template.name, failures)
	body = "<p>{}</p><p><a href='{}'>{}</a></p><pre>{}</pre>".format(
		frappe.bold(subject),
		link,
		_("Open the run"),
		frappe.utils.escape_html(strip_html(error or ""))[:2000],
	)
	from flow_automation.steps.notify import system_notification

	system_notification([u for u in users if u != "Guest"], subject, body, "Flow Run", run)
	recipients = emails + [
		frappe.db.get_value("User", u, "email") for u in users if u not in ("Administrator", "Guest")
	]
	recipients = [r for r in recipients if r]
	if not recipients:
		return
	try:
		with _savepoint():
			frappe.sendmail(
				recipients=recipients,
				subject=subject,
				message=body,
				reference_doctype="Flow Run",
				reference_name=run,
				delayed=True,
			)
	except Exception:
		# no outgoing email account: the system notification above still reaches the users
		frappe.log_error(title=f"Flow failure alert email for {run}")


class _savepoint:
	def __enter__(self):
		self.name = "flow_alert_" + frappe.generate_hash(length=8)
		frappe.db.savepoint(self.name)

	def __exit__(self, exc_type, exc, tb):
		if exc_type:
			frappe.db.rollback(save_point=self.name)
		else:
			frappe.db.release_savepoint(self.name)
		return False
