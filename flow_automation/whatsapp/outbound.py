"""Sending one WhatsApp message from a flow step, exactly once.

`send` is shared by the `send_whatsapp` step, the `ask` question and its re-asks. In order:
normalise the recipient, choose the account, return an earlier send with the same
idempotency key, refuse opted-out / undeliverable / unknown contacts, check the 24-hour
window (or switch to the fallback template), apply the dedup window, build the message
(Meta's limits), store a Queued WhatsApp Message row, wait for a turn (Redis pacing), send,
and store the wamid.

Exactly once: the row is keyed by the step's idempotency key (`{run}:{step}:{attempt
group}`), and the moment Meta accepts a message its wamid is also written to Redis under
that key, which survives a rolled-back transaction. A retried or re-advanced step finds
either and returns the earlier send without calling Meta. A POST that may have reached
Meta (a timeout after writing) is never retried automatically; nor is one whose worker
stopped mid-request (killed, timed out, its database connection lost before commit): just
before the POST, Redis is told the send began, and only Meta's refusal clears that. No Redis,
no POST (a retryable error).

One way to fail: `send` never raises. A message that cannot go comes back as
`Outcome.failed` (the Failed message row and the conversation flags written on the way
stay: the runtime rolls back a step's savepoint only when its handler raises). A contact
who opted out is not a failure: nothing is sent and the output says so (`was_sent` is
False, `reason` says why).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import mimetypes
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import frappe
from frappe.utils import add_to_date, get_datetime, now_datetime
from redis.exceptions import RedisError

from flow_automation.channels.whatsapp import (
	InvalidPhoneNumber,
	MessageValidationError,
	TransportError,
	UndeliverableError,
	WhatsAppError,
	WindowClosedError,
	check_media_size,
	normalize_number,
	same_number,
	to_frappe_status,
	window_problem,
)
from flow_automation.engine import (
	Outcome,
	StepError,
	content_fingerprint,
	dedup_minutes,
	fallback_payload,
	media_type_of,
	message_body,
	send_mode,
)
from flow_automation.whatsapp import accounts, conversations, early_statuses, pacing

MESSAGE = "WhatsApp Message"
SENT_MARKER_SECONDS = 14 * 24 * 3600


class Delivery:
	"""Where a send comes from: its idempotency key, run, step and document, and dry-run mode."""

	def __init__(
		self,
		key: str,
		*,
		run: str | None = None,
		step_id: str | None = None,
		reference_doctype: str | None = None,
		reference_name: str | None = None,
		now: dt.datetime | None = None,
		dry_run: bool = False,
		record: Callable[..., None] | None = None,
		to_opted_out: bool = False,
	):
		self.key = key
		self.run = run
		self.step_id = step_id
		self.reference_doctype = reference_doctype
		self.reference_name = reference_name
		self.now = now or now_datetime()
		self.dry_run = dry_run
		self.record = record
		# Only the confirmation of an opt-out itself may reach a contact who opted out.
		self.to_opted_out = to_opted_out

	@property
	def callback_data(self) -> str | None:
		# Echoed back in status webhooks: which run and step a delivery report belongs to.
		return f"run={self.run};step={self.step_id}" if self.run and self.step_id else None


def _marker_key(key: str) -> str:
	return f"flow_automation:whatsapp:sent:{key}"


def _began_key(key: str) -> bytes:
	return frappe.cache.make_key(f"flow_automation:whatsapp:sending:{key}")


def send_began(key: str) -> bool:
	"""Whether a send under this key was begun (its POST may have reached Meta) and not refused."""
	try:
		return bool(frappe.cache.get(_began_key(key)))
	except RedisError as e:
		raise StepError(f"cannot tell whether this message was sent already (Redis: {e}); will retry")


def _begin_send(key: str) -> None:
	"""Recorded outside the transaction, just before the POST: a worker that dies mid-request
	leaves it behind, so the step's next attempt does not send blindly."""
	try:
		frappe.cache.set(_began_key(key), 1, ex=SENT_MARKER_SECONDS)
	except RedisError as e:
		raise StepError(f"not sent: cannot record the send first (Redis: {e}); will retry")


def _refused(key: str) -> None:
	"""Meta answered that it did not take the message: a later attempt may send it."""
	with suppress(RedisError):
		frappe.cache.delete(_began_key(key))


def recipient(raw: Any, explicit_account: str | None) -> str:
	"""The E.164 number of a rendered `to` (national numbers read with the account's country)."""
	region = None
	info = accounts.account_info(explicit_account) if explicit_account else accounts.default_account()
	if info:
		region = info.get("default_country") or None
	try:
		return normalize_number(str(raw or ""), region)
	except InvalidPhoneNumber as e:
		raise StepError(f"to: {e}", retryable=False)


def earlier_send(key: str) -> dict[str, Any] | None:
	"""The output of a send already made under this idempotency key (row, else Redis marker)."""
	row = frappe.db.get_value(
		MESSAGE,
		{"idempotency_key": key},
		["name", "wamid", "account", "contact_number", "message_type", "template", "status"],
		as_dict=True,
	)
	if row and row.wamid:
		return {
			"wamid": row.wamid,
			"to": row.contact_number,
			"account": row.account,
			"message": row.name,
			"mode": row.message_type,
			"status": row.status.lower(),
			"already_sent": True,
		}
	# expires=True: read Redis itself, not a request-local copy taken before the send
	marker = frappe.cache.get_value(_marker_key(key), expires=True)
	if marker:
		return {**marker, "already_sent": True}
	return None


def known_contact(number: str) -> str | None:
	"""The Contact that has this number (any common spelling), or None."""
	digits = number.lstrip("+")
	tail = digits[-8:]
	candidates = frappe.db.sql(
		"""
		select parent, phone from `tabContact Phone`
		where parenttype = 'Contact' and regexp_replace(phone, '[^0-9]', '') like %s
		limit 20
		""",
		(f"%{tail}",),
		as_dict=True,
	)  # raw SQL: numbers are stored in every spelling; compare the digits' tail, then exactly
	for row in candidates:
		if same_number(row.phone, number):
			return row.parent
	return None


def _dedup_key(account: str, to: str, payload: Mapping[str, Any], delivery: Delivery) -> str:
	parts = [account, to, content_fingerprint(payload), delivery.reference_doctype, delivery.reference_name]
	return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()


def _duplicate(dedup_key: str, minutes: float, now: dt.datetime) -> frappe._dict | None:
	return frappe.db.get_value(
		MESSAGE,
		{
			"dedup_key": dedup_key,
			"creation": (">=", add_to_date(now, minutes=-minutes)),
			"status": ("!=", "Failed"),
			"direction": "Outbound",
		},
		["name", "wamid", "status", "run"],
		as_dict=True,
	)


def _template_problem(account: str, name: str, language: str) -> str | None:
	"""Why a template cannot be sent, judged by the synced WhatsApp Templates (None if unknown)."""
	if not frappe.db.exists("WhatsApp Template", {"account": account}):
		return None  # never synced: let Meta judge
	status = frappe.db.get_value(
		"WhatsApp Template", {"account": account, "template_name": name, "language": language}, "status"
	)
	if status is None:
		return f"template {name!r} in language {language!r} is not among {account}'s synced templates"
	if status.upper() != "APPROVED":
		return f"template {name!r} ({language}) is {status}, not APPROVED"
	return None


def site_file(file_ref: str, media_type: str, *, dry_run: bool = False) -> Any | None:
	"""The File a `file` names (its name, file_url or full URL) that the run's user may read and
	Meta would take for `media_type`; a StepError otherwise. None in a dry run when it does not
	exist (an earlier step of the dry run would have made it)."""
	path = urlsplit(file_ref).path if "://" in file_ref else file_ref
	filters = {"file_url": path} if path.startswith("/") else {"name": path}
	# several File rows may share one file_url (same content): any readable one will do
	names = frappe.get_all("File", filters={**filters, "is_folder": 0}, pluck="name")
	if not names:
		if dry_run:
			return None
		raise StepError(f"file: no File {file_ref!r} in this site", retryable=False)
	readable = (file for file in map(partial(frappe.get_doc, "File"), names) if file.has_permission("read"))
	file = next(readable, None)
	if file is None:
		raise StepError(f"file: {frappe.session.user} may not read File {file_ref!r}", retryable=False)
	for problem in check_media_size(media_type, int(file.file_size or 0)):
		raise StepError(f"file: {file.file_name}: {problem.message}", retryable=False)
	return file


def _mime_type(file: Any) -> str:
	return mimetypes.guess_type(file.file_name or "")[0] or "application/octet-stream"


def _upload_file(client: Any, file: Any) -> str:
	"""Upload a File of this site to Meta (multipart: its bytes, mime type and name); its media id."""
	content = file.get_content()
	if isinstance(content, str):
		content = content.encode()
	try:
		return client.upload_media(content, _mime_type(file), file.file_name or "file")
	except WhatsAppError as e:
		# an upload made twice only leaves an unused media object at Meta: safe to retry
		retryable = e.retryable or isinstance(e, TransportError)
		raise StepError(f"file: upload to WhatsApp failed: {e}", retryable=retryable)


OPTED_OUT = "opted_out"


def was_sent(output: Mapping[str, Any]) -> bool:
	"""Whether a `send` output is a message on its way (False: nothing was sent, see `reason`)."""
	return output.get("sent", True) is not False


def send(payload: Mapping[str, Any], delivery: Delivery) -> dict[str, Any] | Outcome:
	"""Send a rendered `send_whatsapp` payload once: its output, or a failed Outcome (never raises)."""
	try:
		return _send(payload, delivery)
	except StepError as e:
		return Outcome.failed(str(e), retryable=e.retryable)


def _send(payload: Mapping[str, Any], delivery: Delivery) -> dict[str, Any] | Outcome:
	explicit = payload.get("account") or None
	to = recipient(payload.get("to"), explicit)
	previous = earlier_send(delivery.key)
	if previous:
		return previous
	if not delivery.dry_run and send_began(delivery.key):
		return Outcome.failed(
			f"an earlier attempt to send this message to {to} stopped while talking to WhatsApp (worker "
			"killed, timed out or its database connection lost); it may have been delivered, so it is "
			"not sent again: check WhatsApp before retrying the step",
			retryable=False,
		)
	conversation = conversations.get(to)
	account = accounts.choose_account(explicit, conversation.account if conversation else None)
	if conversation and conversation.opted_out and not delivery.to_opted_out:
		# the contact's choice, not the flow's failure: nothing is sent, the run goes on
		return {"sent": False, "reason": OPTED_OUT, "to": to, "note": f"{to} opted out of WhatsApp messages"}
	if conversation and conversation.undeliverable:
		raise StepError(
			f"{to} is marked undeliverable (WhatsApp error 131026) until the contact writes again; "
			"nothing was sent",
			retryable=False,
		)
	if payload.get("only_known_contacts") and not known_contact(to):
		raise StepError(
			f"{to} belongs to no Contact and the step sends only to known contacts", retryable=False
		)

	fallback = False
	mode = send_mode(payload)
	if mode != "template" and not conversations.is_window_open(conversation, account["name"], delivery.now):
		replacement = fallback_payload(payload)
		if replacement is None:
			last = (
				get_datetime(conversation.last_inbound_at)
				if conversation and conversation.last_inbound_at
				else None
			)
			raise StepError(
				window_problem(mode, last, delivery.now) or "the 24-hour window is closed",
				retryable=False,
				code=131047,
			)
		payload, fallback, mode = replacement, True, "template"

	minutes = dedup_minutes(payload)
	dedup_key = _dedup_key(account["name"], to, payload, delivery) if minutes else None
	if dedup_key:
		duplicate = _duplicate(dedup_key, minutes, delivery.now)
		if duplicate:
			return {
				"wamid": duplicate.wamid,
				"to": to,
				"account": account["name"],
				"message": duplicate.name,
				"mode": mode,
				"status": (duplicate.status or "").lower(),
				"deduplicated": True,
				"duplicate_of_run": duplicate.run,
			}

	language = None
	if mode == "template":
		language = payload.get("language") or (conversation.language if conversation else None) or "en"
		problem = _template_problem(account["name"], payload.get("template") or "", language)
		if problem:
			raise StepError(problem, retryable=False)

	file = None
	media_type = media_type_of(payload)
	if payload.get("file") and media_type:
		file = site_file(str(payload["file"]), media_type, dry_run=delivery.dry_run)
		if file is not None and media_type == "document" and not payload.get("filename"):
			payload = {**payload, "filename": file.file_name}  # what the contact sees the document as

	if delivery.dry_run:
		# the media id stands for the upload a real send makes first
		uploads = bool(payload.get("file") and media_type)
		body = _build(payload, to, language, "dry-run-media-id" if uploads else None, delivery)
		if delivery.record:
			upload = None
			if uploads:
				upload = (
					{"file": file.name, "file_name": file.file_name, "mime_type": _mime_type(file)}
					if file
					else {"file": payload["file"], "unresolved": True}
				)
			delivery.record(
				"whatsapp", to=to, account=account["name"], message=body, fallback=fallback, upload=upload
			)
		return {"to": to, "account": account["name"], "mode": mode, "dry_run": True, "fallback": fallback}

	with accounts.client_for(account) as client:
		media_id = _upload_file(client, file) if file is not None else None
		body = _build(payload, to, language, media_id, delivery)
		row = _queued_row(body, payload, to, account["name"], mode, language, dedup_key, delivery)
		pacing.wait_for_turn(
			account["phone_number_id"],
			to,
			per_second=int(account.get("messages_per_second") or 80),
			gap_seconds=float(account.get("recipient_gap_seconds") or 0),
		)
		_begin_send(delivery.key)
		try:
			result = client.send(body)
		except WindowClosedError as e:
			replacement = None if fallback else fallback_payload(payload)
			if replacement is None:
				return _failed(row, e, to, delivery.key)
			# Meta knows better than our window (e.g. the contact wrote to another number)
			payload, fallback, mode = replacement, True, "template"
			language = payload.get("language") or (conversation.language if conversation else None) or "en"
			body = _build(payload, to, language, None, delivery)
			_update_row(
				row,
				{
					"message_type": "template",
					"template": payload.get("template"),
					"template_language": language,
					"payload": _json(body),
				},
			)
			try:
				result = client.send(body)
			except WhatsAppError as again:
				return _failed(row, again, to, delivery.key)
		except WhatsAppError as e:
			return _failed(row, e, to, delivery.key)

	output = {
		"wamid": result.wamid,
		"to": to,
		"account": account["name"],
		"message": row,
		"mode": mode,
		"status": "sent",
		"deduplicated": False,
		"fallback": fallback,
	}
	if mode == "template":
		output.update(template=payload.get("template"), language=language)
	frappe.cache.set_value(
		_marker_key(delivery.key),
		{k: output[k] for k in ("wamid", "to", "account", "message", "mode", "status")},
		expires_in_sec=SENT_MARKER_SECONDS,
	)
	_update_row(row, {"wamid": result.wamid, "status": to_frappe_status("sent"), "sent_at": now_datetime()})
	# a delivery report can beat this transaction's commit: pick it up once we commit
	frappe.db.after_commit.add(partial(early_statuses.after_send, result.wamid))
	if conversation is None:
		conversations.ensure(to, account=account["name"])
	conversations.update(to, {"last_outbound_at": now_datetime()})
	return output


def _build(
	payload: Mapping[str, Any], to: str, language: str | None, media_id: str | None, delivery: Delivery
) -> dict[str, Any]:
	try:
		return message_body(
			payload, to, language=language, media_id=media_id, callback_data=delivery.callback_data
		)
	except MessageValidationError as e:
		raise StepError(f"{e.field.lstrip('/') or 'payload'}: {e.message}", retryable=False)


def _json(value: Any) -> str:
	return json.dumps(value, ensure_ascii=False, default=str)


def _queued_row(
	body: Mapping[str, Any],
	payload: Mapping[str, Any],
	to: str,
	account: str,
	mode: str,
	language: str | None,
	dedup_key: str | None,
	delivery: Delivery,
) -> str:
	"""The Queued row for this send (reused when a failed attempt is retried)."""
	values = {
		"direction": "Outbound",
		"status": "Queued",
		"message_type": mode,
		"account": account,
		"contact_number": to,
		"body": payload.get("text") or payload.get("caption"),
		"template": payload.get("template") if mode == "template" else None,
		"template_language": language,
		"dedup_key": dedup_key,
		"run": delivery.run,
		"step_id": delivery.step_id,
		"reference_doctype": delivery.reference_doctype,
		"reference_name": delivery.reference_name,
		"payload": _json(body),
		# a free-form message Meta may still refuse later (131047): what to send instead
		"fallback_template": _json(fallback_payload(payload))
		if mode != "template" and fallback_payload(payload)
		else None,
		"error_code": 0,
		"error_title": None,
		"error_details": None,
		"failed_at": None,
	}
	existing = frappe.db.get_value(MESSAGE, {"idempotency_key": delivery.key}, "name")
	if existing:
		_update_row(existing, values)
		return existing
	doc = frappe.get_doc({"doctype": MESSAGE, "idempotency_key": delivery.key, **values})
	doc.insert(ignore_permissions=True)
	return doc.name


def _update_row(name: str, values: dict[str, Any]) -> None:
	frappe.db.set_value(MESSAGE, name, values, update_modified=True)


def _failed(row: str, error: WhatsAppError, to: str, key: str) -> Outcome:
	"""Store Meta's error on the row and turn it into a failed step outcome."""
	_update_row(
		row,
		{
			"status": "Failed",
			"failed_at": now_datetime(),
			"error_code": error.code or 0,
			"error_title": (error.title or type(error).__name__)[:140],
			"error_details": str(error)[:1000],
		},
	)
	if isinstance(error, UndeliverableError):
		conversations.mark_undeliverable(to)
	retryable = error.retryable
	message = str(error)
	if isinstance(error, TransportError) and error.maybe_sent:
		retryable = False  # it may have reached Meta: a blind retry could deliver it twice
		message += " — the message may have been sent; check WhatsApp before retrying the step"
	else:
		_refused(key)
	return Outcome.failed(f"WhatsApp refused the message: {message}", retryable=retryable)
