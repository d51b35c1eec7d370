"""Inbound WhatsApp: the webhook's work (verify, store, acknowledge) and the job after it.

The request path does as little as possible: check the signature over the raw bytes, insert
each message with `INSERT IGNORE` on its unique wamid (a redelivery changes nothing), move
each delivery status forward in one conditional UPDATE (unknown wamids match no row), and
enqueue `process_delivery` after commit. Everything else happens in that job, per message:

1. the contact's WhatsApp Conversation: last inbound time (the 24-hour window), name,
   pinned account;
2. opt-out / opt-in words (STOP / START by default, per account);
3. a reply to a waiting `ask` resumes that run;
4. otherwise a Flow Template with a matching WhatsApp keyword trigger starts;
5. media is downloaded into a File attached to the message (its own job).

Inbound rows carry `processing_status` (Pending → Processing → Done / Failed): a lost job
leaves Pending rows that the minute cron drains, and a failure is stored on the row and in
the Error Log, never dropped.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import mimetypes
from collections.abc import Iterable, Mapping
from typing import Any

import frappe
from frappe.utils import add_to_date, convert_utc_to_system_timezone, now_datetime

from flow_automation.channels.whatsapp import (
	FRAPPE_STATUS,
	STATUSES,
	InboundMessage,
	InvalidPhoneNumber,
	StatusUpdate,
	UndeliverableError,
	WebhookBatch,
	from_wa_id,
	parse_webhook,
	verify_signature,
	verify_subscription,
)
from flow_automation.whatsapp import accounts, conversations

MESSAGE = "WhatsApp Message"
INSERT_FIELDS = (
	"name",
	"creation",
	"modified",
	"owner",
	"modified_by",
	"direction",
	"status",
	"message_type",
	"account",
	"contact_number",
	"contact_name",
	"wamid",
	"context_wamid",
	"body",
	"reply_id",
	"reply_title",
	"media_id",
	"media_mime_type",
	"received_at",
	"processing_status",
	"payload",
)
# Meta's delivery order as the Frappe Select options, for the SQL that only moves forward.
_STATUS_ORDER = ", ".join(f"'{FRAPPE_STATUS[s]}'" for s in STATUSES)
_STATUS_TIME_FIELD = {
	"sent": "sent_at",
	"delivered": "delivered_at",
	"read": "read_at",
	"failed": "failed_at",
}
DRAIN_GRACE_SECONDS = 60
EARLY_STATUS_SECONDS = 3600
STUCK_PROCESSING_MINUTES = 15
DRAIN_BATCH = 500
MAX_MEDIA_BYTES = 100 * 1024 * 1024
DEFAULT_OPT_OUT = "STOP\nUNSUBSCRIBE"
DEFAULT_OPT_IN = "START"


# --- the request path ------------------------------------------------------------------------
def subscribe(params: Mapping[str, Any]) -> tuple[int, str]:
	"""GET handshake: (200, challenge) when the verify token matches an enabled account, else 403."""
	token = params.get("hub.verify_token")
	if params.get("hub.mode") != "subscribe" or not isinstance(token, str) or not token:
		return 403, "Forbidden"
	tokens = frappe.get_all("WhatsApp Account", filters={"enabled": 1}, pluck="verify_token")
	for verify_token in tokens:
		if verify_token and hmac.compare_digest(verify_token.encode(), token.encode()):
			challenge = verify_subscription(params, verify_token)
			if challenge is not None:
				return 200, challenge
	return 403, "Forbidden"


def signing_account(raw: bytes, signature: str | None, parsed: Any) -> dict[str, Any] | None:
	"""The enabled account whose app secret signed `raw`, or None.

	The account named by the delivery's metadata.phone_number_id is tried first (one
	decryption); the others only if that fails, so one app serving several numbers works.
	"""
	if not signature:
		return None
	candidates = accounts.active_accounts()
	named = set(_phone_number_ids(parsed))
	ordered = [a for a in candidates if a["phone_number_id"] in named] + [
		a for a in candidates if a["phone_number_id"] not in named
	]
	for account in ordered:
		secret = accounts.app_secret(account)
		if secret and verify_signature(raw, signature, secret):
			return account
	return None


def _phone_number_ids(parsed: Any) -> Iterable[str]:
	if not isinstance(parsed, dict):
		return
	for entry in parsed.get("entry") or ():
		for change in (entry.get("changes") or ()) if isinstance(entry, dict) else ():
			value = change.get("value") if isinstance(change, dict) else None
			metadata = value.get("metadata") if isinstance(value, dict) else None
			if isinstance(metadata, dict) and metadata.get("phone_number_id"):
				yield str(metadata["phone_number_id"])


def receive(raw: bytes, signature: str | None) -> tuple[int, str]:
	"""POST: verify, store idempotently, enqueue the work; (status, body) for the answer.

	403 and nothing stored for a bad or missing signature; 200 for everything signed, even
	a body that cannot be read (Meta retries anything else for days), which is logged.
	"""
	try:
		parsed: Any = json.loads(raw)
	except ValueError:
		parsed = None
	account = signing_account(raw, signature, parsed)
	if account is None:
		return 403, "Invalid signature"
	batch = parse_webhook(parsed if parsed is not None else raw)
	if batch.problems:
		_log_problems(batch, raw)
	wamids = store_messages(batch.messages, account)
	failed = store_statuses(batch.statuses)
	template_updates = [
		{
			"waba_id": u.waba_id,
			"event": u.event,
			"name": u.message_template_name,
			"language": u.message_template_language,
			"reason": u.reason,
		}
		for u in batch.template_updates
	]
	if wamids or failed or template_updates:
		frappe.enqueue(
			"flow_automation.whatsapp.inbound.process_delivery",
			queue="short",
			enqueue_after_commit=True,
			now=frappe.flags.in_test,
			wamids=wamids,
			failed=failed,
			template_updates=template_updates,
		)
	return 200, "OK"


def _log_problems(batch: WebhookBatch, raw: bytes) -> None:
	frappe.log_error(
		title="WhatsApp webhook: parts of a delivery were skipped",
		message="\n".join(batch.problems) + "\n\n" + raw[:20000].decode("utf-8", "replace"),
	)


def _moment(timestamp: int | None) -> dt.datetime:
	"""Meta's Unix time as a naive system-time datetime, never later than now."""
	now = now_datetime()
	if not timestamp:
		return now
	moment = convert_utc_to_system_timezone(dt.datetime.utcfromtimestamp(timestamp)).replace(tzinfo=None)
	return min(moment, now)


def _e164(wa_id: str) -> str:
	try:
		return from_wa_id(wa_id)
	except InvalidPhoneNumber:
		return "+" + wa_id.lstrip("+")


def _body(message: InboundMessage) -> str | None:
	if message.text is not None:
		return message.text
	if message.media is not None:
		return message.media.caption
	if message.reaction is not None:
		return message.reaction.emoji
	if message.location is not None:
		return ", ".join(
			str(message.location.get(k))
			for k in ("name", "address", "latitude", "longitude")
			if message.location.get(k)
		)
	return message.reply_title


def store_messages(messages: list[InboundMessage], signer: Mapping[str, Any]) -> list[str]:
	"""Insert inbound messages, ignoring wamids already stored; returns every wamid seen."""
	if not messages:
		return []
	now = now_datetime()
	user = frappe.session.user
	rows = []
	for message in messages:
		account = accounts.account_for_phone_number_id(message.phone_number_id) or signer
		rows.append(
			(
				frappe.generate_hash(length=12),
				now,
				now,
				user,
				user,
				"Inbound",
				"Received",
				message.type,
				account["name"],
				_e164(message.from_number),
				message.contact_name,
				message.wamid,
				message.context_wamid,
				_body(message),
				message.reply_id,
				message.reply_title,
				message.media.id if message.media else None,
				message.media.mime_type if message.media else None,
				_moment(message.timestamp),
				"Pending",
				json.dumps(message.raw, ensure_ascii=False),
			)
		)
	# INSERT IGNORE on the unique wamid: a redelivered message is a no-op, not an error
	frappe.db.bulk_insert(MESSAGE, INSERT_FIELDS, rows, ignore_duplicates=True)
	return [message.wamid for message in messages]


def store_statuses(statuses: list[StatusUpdate]) -> list[str]:
	"""Move each known message's status forward; returns the failures for the background job.

	A status for a wamid we do not know yet may belong to a send whose transaction has not
	committed (Meta can call back within milliseconds): it is kept in Redis for an hour and
	applied when that send commits (`apply_early_statuses`). Others are simply ignored.
	"""
	failed = []
	for status in statuses:
		time_field = _STATUS_TIME_FIELD.get(status.status)
		if status.frappe_status is None or time_field is None:
			continue  # deleted / warning / our own "queued": nothing Meta reports to record
		values: dict[str, Any] = {
			"wamid": status.wamid,
			"status": status.frappe_status,
			"at": _moment(status.timestamp),
			"code": None,
			"title": None,
			"details": None,
		}
		undeliverable = False
		if status.status == "failed":
			error = status.error
			values.update(
				code=status.error_code or 0,
				title=(status.error_title or "")[:140] or None,
				details=(str(error) if error else status.error_details or "")[:1000] or None,
			)
			undeliverable = isinstance(error, UndeliverableError)
		_apply_status(values, time_field)
		if not frappe.db.exists(MESSAGE, {"wamid": status.wamid, "direction": "Outbound"}):
			_stash_early(values, time_field, undeliverable)
			_apply_status(values, time_field)  # the send may have committed meanwhile
		if status.status == "failed":
			failed.append(
				{
					"wamid": status.wamid,
					"code": values["code"],
					"title": values["title"],
					"undeliverable": undeliverable,
				}
			)
	return failed


def _apply_status(values: Mapping[str, Any], time_field: str) -> None:
	# Raw SQL: one statement keeps the maximum under Meta's order however callbacks
	# interleave (FIELD gives each status its rank), and failed stays failed; an unknown
	# wamid matches no row. Only constants of this module are formatted into it.
	error_sql = ", error_code = %(code)s, error_title = %(title)s, error_details = %(details)s"
	frappe.db.sql(
		f"""
		update `tabWhatsApp Message`
		set status = if(field(status, {_STATUS_ORDER}) < field(%(status)s, {_STATUS_ORDER}), %(status)s, status),
			{time_field} = coalesce({time_field}, %(at)s){error_sql if values["status"] == "Failed" else ""}
		where wamid = %(wamid)s and direction = 'Outbound'
			and (%(status)s = 'Failed' or status != 'Failed')
		""",
		values,
	)


def _early_key(wamid: str) -> str:
	return f"flow_automation:whatsapp:early_status:{wamid}"


def _stash_early(values: Mapping[str, Any], time_field: str, undeliverable: bool) -> None:
	key = _early_key(values["wamid"])
	stash = frappe.cache.get_value(key, expires=True) or []
	stash.append(
		{
			"values": {**values, "at": str(values["at"])},
			"time_field": time_field,
			"undeliverable": undeliverable,
		}
	)
	frappe.cache.set_value(key, stash[-10:], expires_in_sec=EARLY_STATUS_SECONDS)


def after_send(wamid: str) -> None:
	"""Called when a send's transaction commits: apply statuses that arrived before it did."""
	if frappe.cache.get_value(_early_key(wamid), expires=True):
		frappe.enqueue(
			"flow_automation.whatsapp.inbound.apply_early_statuses",
			queue="short",
			now=frappe.flags.in_test,
			wamid=wamid,
		)


def apply_early_statuses(wamid: str) -> int:
	"""Apply the statuses kept for `wamid` while its send was still uncommitted."""
	key = _early_key(wamid)
	stash = frappe.cache.get_value(key, expires=True) or []
	for item in stash:
		_apply_status(item["values"], item["time_field"])
		if item["values"]["status"] == "Failed":
			values = item["values"]
			handle_failure(
				{
					"wamid": wamid,
					"code": values.get("code"),
					"title": values.get("title"),
					"undeliverable": item.get("undeliverable"),
				}
			)
	frappe.cache.delete_value(key)
	_commit()
	return len(stash)


# --- the job ---------------------------------------------------------------------------------------
def process_delivery(
	wamids: list[str] | None = None,
	failed: list[dict[str, Any]] | None = None,
	template_updates: list[dict[str, Any]] | None = None,
) -> None:
	"""Background job after a webhook delivery: inbound messages, failures, template updates."""
	_as_system()
	for failure in failed or ():
		handle_failure(failure)
	for update in template_updates or ():
		_update_template_status(update)
	if failed or template_updates:
		_commit()
	if wamids:
		names = frappe.get_all(
			MESSAGE,
			filters={"wamid": ("in", list(wamids)), "direction": "Inbound", "processing_status": "Pending"},
			order_by="received_at asc, creation asc",
			pluck="name",
		)
		for name in names:
			process_message(name)


def drain(now: dt.datetime | None = None) -> int:
	"""Minute cron: process inbound rows a lost job left Pending (or a killed one left Processing)."""
	_as_system()
	now = now or now_datetime()
	table = frappe.qb.DocType(MESSAGE)
	names = (
		frappe.qb.from_(table)
		.select(table.name)
		.where(
			(table.direction == "Inbound")
			& (
				(
					(table.processing_status == "Pending")
					& (table.creation <= add_to_date(now, seconds=-DRAIN_GRACE_SECONDS))
				)
				| (
					(table.processing_status == "Processing")
					& (table.modified <= add_to_date(now, minutes=-STUCK_PROCESSING_MINUTES))
				)
			)
		)
		.orderby(table.creation)
		.limit(DRAIN_BATCH)
		.run(pluck=True)
	)
	for name in names:
		frappe.db.set_value(MESSAGE, name, "processing_status", "Pending", update_modified=False)
		process_message(name)
	return len(names)


def _as_system() -> None:
	# Jobs enqueued by the webhook run as Guest; routing is the system's work, not the guest's.
	if frappe.session.user == "Guest":
		frappe.set_user("Administrator")


def _commit() -> None:
	if not frappe.flags.in_test:
		frappe.db.commit()


def _claim(name: str) -> bool:
	table = frappe.qb.DocType(MESSAGE)
	(
		frappe.qb.update(table)
		.set(table.processing_status, "Processing")
		.set(table.modified, now_datetime())
		.where((table.name == name) & (table.processing_status == "Pending"))
	).run()
	claimed = frappe.db._cursor.rowcount == 1
	_commit()
	return claimed


def process_message(name: str) -> None:
	"""Route one stored inbound message; its outcome is written on the row."""
	if not _claim(name):
		return  # another job has it, or it is done
	savepoint = "wa_inbound_" + frappe.generate_hash(length=8)
	frappe.db.savepoint(savepoint)
	try:
		values = route(frappe.get_doc(MESSAGE, name))
	except Exception as e:
		frappe.db.rollback(save_point=savepoint)
		frappe.db.set_value(
			MESSAGE,
			name,
			{"processing_status": "Failed", "processing_error": f"{type(e).__name__}: {e}"[:1000]},
		)
		frappe.log_error(title=f"WhatsApp: inbound message {name} could not be processed")
	else:
		frappe.db.set_value(MESSAGE, name, {"processing_status": "Done", **values})
	_commit()


def _reply(message: Any) -> dict[str, Any]:
	return {
		"wamid": message.wamid,
		"type": message.message_type,
		"text": message.body if message.message_type in ("text", "system") else None,
		"reply_id": message.reply_id,
		"reply_title": message.reply_title,
		"caption": message.body if message.media_id else None,
		"media_id": message.media_id,
		"context_wamid": message.context_wamid,
		"from": message.contact_number,
		"received_at": str(message.received_at),
	}


def route(message: Any) -> dict[str, Any]:
	"""Conversation, opt-out words, a waiting ask, keyword triggers, media: in that order.

	Returns the fields to store on the message row (the run it resumed or started).
	"""
	number = message.contact_number
	now = now_datetime()
	conversation = conversations.record_inbound(
		number,
		at=message.received_at or now,
		account=message.account,
		contact_name=message.contact_name,
		wa_id=number.lstrip("+"),
	)
	if message.media_id:
		_enqueue_media_download(message)
	text = (message.body or "").strip() if message.message_type in ("text", "button", "interactive") else ""
	words = _opt_words(message.account)
	if text and text.upper() in words["out"]:
		conversations.set_opted_out(number, True, now)
		_confirm(message, words["out_reply"], "opt-out")
		return {"processing_error": None}
	if text and text.upper() in words["in"]:
		conversations.set_opted_out(number, False)
		_confirm(message, words["in_reply"], "opt-in")
		return {"processing_error": None}

	waiting = conversations.waiting_step(conversation, now)
	if waiting:
		run, step = waiting
		if _resume(run, step, _reply(message)):
			return {"run": run, "step_id": step}
		conversations.release_waiting(number, run, step)

	if message.message_type in ("text", "button", "interactive") and text:
		from flow_automation.triggers import dispatch_whatsapp_message

		run = dispatch_whatsapp_message(
			text,
			account=message.account,
			contact=_contact(message, conversation),
			message=_reply(message),
			wamid=message.wamid,
		)
		if run:
			return {"run": run}
	return {}


def _resume(run: str, step: str, reply: dict[str, Any]) -> bool:
	"""Give a reply to the `ask` waiting for it; False if that step no longer waits."""
	from flow_automation import runtime

	state = json.loads(frappe.db.get_value("Flow Run", run, "step_state") or "{}")
	entry = state.get(step) or {}
	if entry.get("status") != "waiting" or (entry.get("wait") or {}).get("type") != "reply":
		return False
	savepoint = "wa_resume_" + frappe.generate_hash(length=8)
	frappe.db.savepoint(savepoint)
	try:
		runtime.complete_step(run, step, reply, event_type="reply")
	except frappe.ValidationError:
		frappe.db.rollback(save_point=savepoint)
		return False  # finished or cancelled meanwhile
	frappe.db.release_savepoint(savepoint)
	return True


def _contact(message: Any, conversation: Mapping[str, Any]) -> dict[str, Any]:
	return {
		"number": message.contact_number,
		"name": message.contact_name or conversation.get("contact_name"),
		"wa_id": message.contact_number.lstrip("+"),
		"account": message.account,
		"language": conversation.get("language"),
		"contact": conversation.get("contact"),
	}


def _opt_words(account: str | None) -> dict[str, Any]:
	values = (
		frappe.db.get_value(
			"WhatsApp Account",
			account,
			["opt_out_keywords", "opt_in_keywords", "opt_out_reply", "opt_in_reply"],
			as_dict=True,
		)
		if account
		else None
	) or {}

	def words(text: str | None, default: str) -> tuple[str, ...]:
		return tuple(w.strip().upper() for w in (text or default).splitlines() if w.strip())

	return {
		"out": words(values.get("opt_out_keywords"), DEFAULT_OPT_OUT),
		"in": words(values.get("opt_in_keywords"), DEFAULT_OPT_IN),
		"out_reply": values.get("opt_out_reply"),
		"in_reply": values.get("opt_in_reply"),
	}


def _confirm(message: Any, text: str | None, what: str) -> None:
	"""Send the account's opt-out / opt-in confirmation, if it has one (the window is open)."""
	if not text:
		return
	from flow_automation.engine.outcome import StepError
	from flow_automation.whatsapp.outbound import Delivery, send

	try:
		result = send(
			{"to": message.contact_number, "account": message.account, "mode": "text", "text": text},
			Delivery(f"{message.wamid}:{what}", to_opted_out=what == "opt-out"),
		)
	except StepError as e:
		result = e
	if not isinstance(result, dict):
		frappe.log_error(
			title=f"WhatsApp {what} confirmation to {message.contact_number} failed", message=str(result)
		)


def handle_failure(failure: Mapping[str, Any]) -> None:
	"""A failed delivery report: flag an undeliverable number, tell the run that sent it."""
	from flow_automation.whatsapp.outbound import after_delivery_failure

	if failure.get("undeliverable"):
		_mark_undeliverable(failure["wamid"])
	after_delivery_failure(failure["wamid"], failure.get("code"), failure.get("title"))


def _mark_undeliverable(wamid: str) -> None:
	number = frappe.db.get_value(MESSAGE, {"wamid": wamid}, "contact_number")
	if number:
		conversations.mark_undeliverable(number)


def _update_template_status(update: Mapping[str, Any]) -> None:
	table = frappe.qb.DocType("WhatsApp Template")
	query = (
		frappe.qb.update(table)
		.set(table.status, update.get("event"))
		.where((table.template_name == update.get("name")) & (table.language == update.get("language")))
	)
	query.run()


# --- media ---------------------------------------------------------------------------------------
def _enqueue_media_download(message: Any) -> None:
	if not accounts.account_info(message.account) or not accounts.account_info(message.account).get(
		"download_media"
	):
		return
	frappe.enqueue(
		"flow_automation.whatsapp.inbound.download_media",
		queue="long",
		enqueue_after_commit=True,
		now=frappe.flags.in_test,
		message=message.name,
	)


def download_media(message: str) -> str | None:
	"""Download an inbound message's media into a private File attached to it; its file_url."""
	_as_system()
	row = frappe.db.get_value(
		MESSAGE,
		message,
		["name", "account", "media_id", "media_mime_type", "media_file", "wamid"],
		as_dict=True,
	)
	if not row or not row.media_id or row.media_file:
		return row.media_file if row else None
	try:
		with accounts.client_for(row.account) as client:
			info = client.get_media(row.media_id)
			content = client.download_media(info.url, max_bytes=MAX_MEDIA_BYTES)
		mime = info.mime_type or row.media_mime_type or "application/octet-stream"
		extension = mimetypes.guess_extension(mime.split(";")[0].strip()) or ""
		file = frappe.get_doc(
			{
				"doctype": "File",
				"file_name": f"whatsapp-{row.media_id}{extension}",
				"attached_to_doctype": MESSAGE,
				"attached_to_name": row.name,
				"attached_to_field": "media_file",
				"is_private": 1,
				"content": content,
			}
		).insert(ignore_permissions=True)
	except Exception as e:
		frappe.db.set_value(
			MESSAGE, row.name, "processing_error", f"media download: {type(e).__name__}: {e}"[:1000]
		)
		frappe.log_error(title=f"WhatsApp: media of {row.name} could not be downloaded")
		_commit()
		return None
	frappe.db.set_value(MESSAGE, row.name, "media_file", file.file_url)
	_commit()
	return file.file_url
