"""The notify step: email through Email Queue, or a Desk system notification."""

from __future__ import annotations

from typing import Any

import frappe
from frappe.utils import validate_email_address

from flow_automation.engine import StepError
from flow_automation.steps.base import StepCall, handles


def _email_for(recipient: str) -> str:
	recipient = recipient.strip()
	if "@" not in recipient or frappe.db.exists("User", recipient):
		email = frappe.db.get_value("User", recipient, "email")
		if email:
			return email
	if validate_email_address(recipient):
		return recipient
	raise StepError(f"to: {recipient!r} is neither a user nor an email address", retryable=False)


def _users(recipients: list[str]) -> list[str]:
	users = []
	for recipient in recipients:
		user = recipient.strip()
		if not frappe.db.exists("User", user):
			user = frappe.db.get_value("User", {"email": user}, "name")
		if not user:
			raise StepError(
				f"to: {recipient!r} is not a user (system notifications go to users)", retryable=False
			)
		users.append(user)
	return users


def system_notification(users: list[str], subject: str, body: str, doctype: str, name: str) -> None:
	"""A Desk notification (the bell) for each user, linked to a document."""
	for user in users:
		frappe.get_doc(
			{
				"doctype": "Notification Log",
				"for_user": user,
				"type": "Alert",
				"subject": subject,
				"email_content": body,
				"document_type": doctype,
				"document_name": name,
				"from_user": frappe.session.user,
			}
		).insert(ignore_permissions=True)


@handles("notify")
def notify(call: StepCall) -> dict[str, Any]:
	payload = call.payload
	channel = payload.get("channel") or "email"
	recipients = [r for r in payload["to"] if r and r.strip()]  # never empty (the planner's preflight)
	subject = payload["subject"]
	body = payload.get("body") or ""
	run = call.run
	if channel == "system":
		users = _users(recipients)
		if call.dry_run:
			call.record("system notification", to=users, subject=subject)
			return {"channel": channel, "recipients": users, "dry_run": True}
		system_notification(
			users, subject, body, run.reference_doctype or "Flow Run", run.reference_name or run.name
		)
		return {"channel": channel, "recipients": users}

	emails = [_email_for(r) for r in recipients]
	cc = [_email_for(r) for r in payload.get("cc") or [] if r]
	if call.dry_run:
		call.record("email", to=emails, cc=cc, subject=subject, body=body)
		return {"channel": channel, "recipients": emails, "dry_run": True}
	frappe.sendmail(
		recipients=emails,
		cc=cc,
		subject=subject,
		message=body,
		reference_doctype=run.reference_doctype or "Flow Run",
		reference_name=run.reference_name or run.name,
		delayed=True,
	)
	return {"channel": channel, "recipients": emails}
