"""When a run fails: the circuit breaker, the `flow_run.failed` event, alerts.

Registered in hooks.py as a `flow_run_finished` callback; the runtime never imports it.
"""

from __future__ import annotations

import frappe
from frappe import _
from frappe.utils import get_url_to_form, strip_html, validate_email_address

from flow_automation.engine import RunStatus
from flow_automation.runtime import FinishedRun
from flow_automation.settings import setting
from flow_automation.steps.notify import system_notification
from flow_automation.transaction import isolated
from flow_automation.triggers import clear_trigger_cache, dispatch_event

FAILED_EVENT = "flow_run.failed"


def on_run_finished(run: FinishedRun) -> None:
	"""The `flow_run_finished` hook: count failures in a row, react to a failure."""
	if run.status == RunStatus.COMPLETED:
		# most runs complete, and most templates have no failures to reset: no SQL then
		if frappe.get_cached_value("Flow Template", run.template, "consecutive_failures"):
			frappe.db.set_value(
				"Flow Template", run.template, "consecutive_failures", 0, update_modified=False
			)
	elif run.status == RunStatus.FAILED:
		table = frappe.qb.DocType("Flow Template")
		frappe.qb.update(table).set(table.consecutive_failures, table.consecutive_failures + 1).where(
			table.name == run.template
		).run()
		frappe.clear_document_cache("Flow Template", run.template)
		on_run_failed(run)


def on_run_failed(run: FinishedRun) -> None:
	template = frappe.db.get_value(
		"Flow Template",
		run.template,
		["name", "owner", "consecutive_failures", "max_consecutive_failures"],
		as_dict=True,
	)
	if not template:
		return
	failures = template.consecutive_failures or 0
	tripped = bool(template.max_consecutive_failures) and failures >= template.max_consecutive_failures
	if tripped:
		frappe.db.set_value("Flow Template", template.name, "enabled", 0)
		clear_trigger_cache()
	if run.trigger_event != FAILED_EVENT:  # a failing failure handler must not feed itself
		dispatch_event(
			FAILED_EVENT,
			doc={"doctype": "Flow Run", "name": run.name},
			variables={
				"failed_run": run.name,
				"failed_template": template.name,
				"error": run.error,
				"reference_doctype": run.reference_doctype,
				"reference_name": run.reference_name,
			},
		)
	alert(run.name, template, run.error, tripped, failures)


def alert_recipients(template_owner: str | None) -> tuple[list[str], list[str]]:
	"""(users, email addresses) to alert: the template's owner and the configured recipients."""
	entries = [template_owner] if template_owner else []
	entries += (setting("failure_alert_recipients") or "").replace(",", "\n").splitlines()
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
	system_notification([u for u in users if u != "Guest"], subject, body, "Flow Run", run)
	recipients = emails + [
		frappe.db.get_value("User", u, "email") for u in users if u not in ("Administrator", "Guest")
	]
	recipients = [r for r in recipients if r]
	if not recipients:
		return
	with isolated() as block:
		frappe.sendmail(
			recipients=recipients,
			subject=subject,
			message=body,
			reference_doctype="Flow Run",
			reference_name=run,
			delayed=True,
		)
	if block.failed:
		# no outgoing email account: the system notification above still reaches the users
		frappe.log_error(title=f"Flow failure alert email for {run}", message=block.traceback)
