"""The notify step: email through Email Queue (with File attachments), a Desk system
notification, or an SMS through Frappe's SMS Settings (any gateway Frappe supports)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import frappe
import requests
from frappe.email.doctype.email_queue.email_queue import QueueBuilder
from frappe.utils import now_datetime, validate_email_address

from flow_automation.engine import StepError, notify_channel, sms_number
from flow_automation.steps.base import StepCall, handles
from flow_automation.transaction import quiet_messages

# How long a sent SMS is remembered under its step's idempotency key (retries skip it).
SMS_SENT_MARKER_SECONDS = 14 * 24 * 3600


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
	channel = notify_channel(payload)
	recipients = [r for r in payload["to"] if r and r.strip()]  # never empty (the planner's preflight)
	if channel == "sms":
		return send_sms(call, recipients, payload.get("body") or "")
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
	files = attachments(call)
	if call.dry_run:
		call.record("email", to=emails, cc=cc, subject=subject, body=body, attachments=files)
		return {"channel": channel, "recipients": emails, "attachments": files, "dry_run": True}
	reference = (run.reference_doctype or "Flow Run", run.reference_name or run.name)
	# Frappe leaves out whoever unsubscribed (from everything, or from this document's emails)
	# without a word: the step says who they were, and sends nothing if that was everyone
	unsubscribed = set(
		QueueBuilder(
			recipients=emails, cc=cc, reference_doctype=reference[0], reference_name=reference[1]
		).get_unsubscribed_user_emails()
	)
	kept = [e for e in emails if e not in unsubscribed]
	result = {"channel": channel, "recipients": kept, "attachments": files}
	if unsubscribed:
		result["unsubscribed"] = sorted(unsubscribed)
	if not kept:
		return {**result, "sent": False}
	frappe.sendmail(
		recipients=kept,
		cc=[e for e in cc if e not in unsubscribed],
		subject=subject,
		message=body,
		reference_doctype=reference[0],
		reference_name=reference[1],
		# by File name: Email Queue reads the content when it sends (email_queue.include_attachments)
		attachments=[{"fid": f["name"]} for f in files],
		delayed=True,
	)
	return result


# --- attachments ---------------------------------------------------------------------------


class _NotReadable(Exception):
	"""The File exists, but the run's user may not read it."""


def _readable_file(ref: str) -> Any | None:
	"""The File a reference names (its name, file_url or full URL) that the run's user may read;
	None when there is none. Raises when it exists but may not be read."""
	path = urlsplit(ref).path if "://" in ref else ref
	if path.startswith("/"):
		# several File rows may share one file_url (same content): any readable one will do
		names = frappe.get_all("File", filters={"file_url": path, "is_folder": 0}, pluck="name")
	else:
		names = [path] if frappe.db.exists("File", {"name": path, "is_folder": 0}) else []
	for name in names:
		file = frappe.get_doc("File", name)
		if file.has_permission("read"):
			return file
	if names:
		raise _NotReadable(ref)
	return None


def attachments(call: StepCall) -> list[dict[str, Any]]:
	"""The payload's attachments as Files: [{name, file_name, file_url}], or a StepError naming
	the entry. In a dry run an entry rendered from a template may name a File that an earlier
	step would have made (dry runs write none): it is recorded unresolved."""
	raw = call.step.payload.get("attachments") or [] if isinstance(call.step.payload, Mapping) else []
	files = []
	for i, ref in enumerate(call.payload.get("attachments") or []):
		ref = (ref or "").strip()
		literal = i < len(raw) and raw[i] == ref
		try:
			file = _readable_file(ref) if ref else None
		except _NotReadable:
			raise StepError(
				f"attachments/{i}: {frappe.session.user} may not read File {ref!r}", retryable=False
			)
		if file is not None:
			files.append({"name": file.name, "file_name": file.file_name, "file_url": file.file_url})
		elif call.dry_run and not literal:
			files.append({"name": None, "file_name": None, "file_url": ref, "unresolved": True})
		elif not ref:
			raise StepError(f"attachments/{i}: rendered to an empty value", retryable=False)
		else:
			raise StepError(f"attachments/{i}: there is no File {ref!r}", retryable=False)
	return files


# --- SMS -------------------------------------------------------------------------------------


def _sms_gateway() -> str:
	"""The gateway's host (for messages: its URL may carry credentials); raises when SMS
	Settings cannot send (Frappe's send_sms would only show "Please Update SMS Settings")."""
	settings = frappe.db.get_singles_dict("SMS Settings")
	for field, label in (
		("sms_gateway_url", "SMS Gateway URL"),
		("message_parameter", "Message Parameter"),
		("receiver_parameter", "Receiver Parameter"),
	):
		if not (settings.get(field) or "").strip():
			raise StepError(
				f"channel: SMS Settings has no {label}: set up the SMS gateway in SMS Settings",
				retryable=False,
			)
	return urlsplit(settings.sms_gateway_url.strip()).netloc or settings.sms_gateway_url.strip()


def send_sms(call: StepCall, recipients: list[str], text: str) -> dict[str, Any]:
	"""Send the text to each number through Frappe's `send_sms`, once per number: a retry of the
	step skips the numbers already sent (remembered in Redis under the idempotency key)."""
	numbers: list[str] = []
	for i, recipient in enumerate(recipients):
		number = sms_number(recipient)
		if number is None:
			raise StepError(f"to/{i}: {recipient!r} is not a phone number", retryable=False)
		if number not in numbers:
			numbers.append(number)
	if not text.strip():
		raise StepError("body: the SMS text is empty", retryable=False)
	gateway = _sms_gateway()
	if call.dry_run:
		call.record("sms", to=numbers, body=text, gateway=gateway)
		return {"channel": "sms", "recipients": numbers, "gateway": gateway, "dry_run": True}
	# plain Frappe has no SMS Log doctype (ERPNext adds it); send_sms writes one after a success
	has_log = bool(frappe.db.exists("DocType", "SMS Log"))
	sent: list[str] = []
	already: list[str] = []
	for number in numbers:
		marker = f"flow_automation:sms:sent:{call.idempotency_key}:{number}"
		if frappe.cache.get_value(marker, expires=True):
			already.append(number)
			continue
		_send_one(number, text, gateway, has_log, numbers.index(number), sent + already)
		frappe.cache.set_value(marker, 1, expires_in_sec=SMS_SENT_MARKER_SECONDS)
		sent.append(number)
	return {
		"channel": "sms",
		"recipients": numbers,
		"sent": sent,
		"already_sent": already,
		"gateway": gateway,
	}


def _send_one(number: str, text: str, gateway: str, has_log: bool, index: int, done: list[str]) -> None:
	from frappe.core.doctype.sms_settings.sms_settings import send_sms as frappe_send_sms

	sent_so_far = f" (already sent to {', '.join(done)}; a retry skips them)" if done else ""
	started = now_datetime()
	try:
		with quiet_messages():
			frappe_send_sms([number], text, success_msg=False)
	except requests.HTTPError as e:
		# not str(e): it holds the gateway URL, whose query string may carry the gateway's key
		response = e.response
		status = (
			f"HTTP {response.status_code} {response.reason or ''}".strip()
			if response is not None
			else "an HTTP error"
		)
		raise StepError(
			f"to/{index}: the SMS gateway {gateway} answered {status} for {number}{sent_so_far}",
			retryable=True,
		)
	except requests.RequestException as e:
		raise StepError(
			f"channel: the SMS gateway {gateway} could not be reached ({type(e).__name__}){sent_so_far}",
			retryable=True,
		)
	except (ImportError, frappe.DoesNotExistError):
		if has_log:
			raise
		# the gateway accepted it: send_sms then logs the success in SMS Log, a doctype plain
		# Frappe lacks (ERPNext adds it), and fails importing it
		return
	if has_log and frappe.db.exists("SMS Log", {"sent_to": number, "creation": (">=", started)}):
		return
	# send_sms reports a gateway answer that is neither 2xx nor an HTTP error by not logging it
	raise StepError(
		f"to/{index}: the SMS gateway {gateway} did not accept the SMS to {number} (no 2xx answer){sent_so_far}",
		retryable=True,
	)
