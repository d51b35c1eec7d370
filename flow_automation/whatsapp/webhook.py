"""Inbound WhatsApp, the request path: verify, store, acknowledge.

The webhook does as little as possible: check the signature over the raw bytes, insert each
message with `INSERT IGNORE` on its unique wamid (a redelivery changes nothing), move each
delivery status forward in one conditional UPDATE (unknown wamids match no row), and ring
for `routing.process_pending` after commit (one job for a burst of deliveries), which does
the rest (see `routing`). A message a flow will answer is routed right after the response
instead, in this process (`routing.answer_now`), so the reply is not two background jobs away.
Each web worker keeps the request's database connection for its next delivery
(`kept_connection`, from `api.webhook`).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

import frappe
from frappe.utils import convert_utc_to_timezone, get_system_timezone
from redis.exceptions import RedisError

from flow_automation.channels.whatsapp import (
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
from flow_automation.process_copy import process_copy
from flow_automation.transaction import enqueue
from flow_automation.triggers import starts_a_whatsapp_flow
from flow_automation.whatsapp import accounts, early_statuses, routing
from flow_automation.whatsapp.conversations import DOCTYPE as CONVERSATION
from flow_automation.whatsapp.delivery_status import MESSAGE, STATUS_TIME_FIELD, apply_reports, apply_status

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

PROCESS = "flow_automation.whatsapp.routing.process_delivery"
INSERT_SQL = "insert ignore into `tab{}` ({}) values ".format(
	MESSAGE, ", ".join(f"`{field}`" for field in INSERT_FIELDS)
)
INSERT_ROW = "(" + ", ".join(["%s"] * len(INSERT_FIELDS)) + ")"
# the rows it stored, each with its contact's waiting question (MariaDB's INSERT … RETURNING)
RETURNING_WAITING = (
	f" returning `wamid`, (select c.`waiting_run` from `tab{CONVERSATION}` c"
	f" where c.`name` = `tab{MESSAGE}`.`contact_number`)"
)


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


def signing_account(
	raw: bytes, signature: str | None, parsed: Any, candidates: list[dict[str, Any]]
) -> dict[str, Any] | None:
	"""The enabled account (of `candidates`) whose app secret signed `raw`, or None.

	The account named by the delivery's metadata.phone_number_id is tried first (one
	decryption); the others only if that fails, so one app serving several numbers works.
	"""
	if not signature:
		return None
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
	known = accounts.webhook_accounts()
	account = signing_account(raw, signature, parsed, known)
	if account is None and signature:
		known = accounts.webhook_accounts(fresh=True)  # an account or its secret changed just now?
		account = signing_account(raw, signature, parsed, known)
	if account is None:
		return 403, "Invalid signature"
	batch = parse_webhook(parsed if parsed is not None else raw)
	if batch.problems:
		_log_problems(batch, raw)
	waiting = store_messages(batch.messages, account, known)
	soon = answer_after_response(batch.messages, account, waiting, known)
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
	if failed or template_updates:
		# Reports live only in this delivery, not in a stored row the cron could drain: queued
		# now (they read nothing this request writes), or, if Redis cannot take them, applied
		# here rather than lost.
		try:
			enqueue(PROCESS, queue="short", failed=failed, template_updates=template_updates)
		except RedisError:
			apply_reports(failed, template_updates)
	if any(m.wamid not in soon for m in batch.messages):
		# stored Pending: if no job can be queued after commit, the minute cron drains them
		routing.ring_for_pending()
	return 200, "OK"


def answer_after_response(
	messages: list[InboundMessage],
	signer: Mapping[str, Any],
	waiting: Mapping[str, bool],
	known: list[dict[str, Any]],
) -> set[str]:
	"""The wamids of the messages a flow will answer, handed to `routing.answer_now` to run
	right after the response (Frappe's `request.after_response`), once this request has
	committed them: newly stored messages (`waiting`, from `store_messages`) whose contact has
	a question waiting or whose text starts a keyword flow. Outside a web request (a job, a
	test calling `receive`) there is no such moment: nothing is taken, and the processing job
	does it all."""
	request = getattr(frappe.local, "request", None)
	after_response = getattr(request, "after_response", None)
	if after_response is None:
		return set()
	soon = [
		message.wamid
		for message in messages
		if message.wamid in waiting
		and (
			waiting[message.wamid]
			or starts_a_whatsapp_flow(
				_body(message) if message.type in routing.WORDS else None, _account_of(message, signer, known)
			)
		)
	]
	if soon:
		after_response.add(lambda: routing.answer_now(soon))
	return set(soon)


def _account_of(
	message: InboundMessage, signer: Mapping[str, Any], known: list[dict[str, Any]] | None = None
) -> str:
	"""The account a message was sent to: the one owning its phone number id (among `known`,
	the accounts the delivery was verified against), else the signer."""
	return (accounts.account_for_phone_number_id(message.phone_number_id, known) or signer)["name"]


def _log_problems(batch: WebhookBatch, raw: bytes) -> None:
	frappe.log_error(
		title="WhatsApp webhook: parts of a delivery were skipped",
		message="\n".join(batch.problems) + "\n\n" + raw[:20000].decode("utf-8", "replace"),
	)


@process_copy(60)
def _time_zone() -> str:
	# The system time zone, as this process last read it (a minute at most): `now_datetime()`
	# reads System Settings from Redis on every request.
	return get_system_timezone()


def _now() -> dt.datetime:
	"""`frappe.utils.now_datetime()`, from this process's copy of the system time zone."""
	return convert_utc_to_timezone(dt.datetime.now(dt.timezone.utc), _time_zone()).replace(tzinfo=None)


def _moment(timestamp: int | None, now: dt.datetime | None = None) -> dt.datetime:
	"""Meta's Unix time as a naive system-time datetime, never later than `now`."""
	now = now or _now()
	if not timestamp:
		return now
	moment = convert_utc_to_timezone(
		dt.datetime.fromtimestamp(timestamp, dt.timezone.utc), _time_zone()
	).replace(tzinfo=None)
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


def store_messages(
	messages: list[InboundMessage], signer: Mapping[str, Any], known: list[dict[str, Any]] | None = None
) -> dict[str, bool]:
	"""Insert inbound messages, ignoring wamids already stored.

	Returns, for each message this call stored (a redelivery is not in it), whether its contact
	has a question waiting, read by the same statement (`RETURNING`), as the webhook decides
	with it whether to answer at once (`answer_after_response`).
	"""
	if not messages:
		return {}
	now = _now()
	user = frappe.session.user
	rows = []
	for message in messages:
		account = _account_of(message, signer, known)
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
				account,
				_e164(message.from_number),
				message.contact_name,
				message.wamid,
				message.context_wamid,
				_body(message),
				message.reply_id,
				message.reply_title,
				message.media.id if message.media else None,
				message.media.mime_type if message.media else None,
				_moment(message.timestamp, now),
				"Pending",
				json.dumps(message.raw, ensure_ascii=False),
			)
		)
	# INSERT IGNORE on the unique wamid: a redelivered message is a no-op, not an error. One
	# parameterised statement, as bulk_insert would write it, without building it anew with
	# the query builder on every request.
	stored = frappe.db.sql(
		INSERT_SQL + ",".join([INSERT_ROW] * len(rows)) + RETURNING_WAITING,
		[value for row in rows for value in row],
	)
	return {wamid: bool(waiting_run) for wamid, waiting_run in stored}


def store_statuses(statuses: list[StatusUpdate]) -> list[str]:
	"""Move each known message's status forward; returns the failures for the background job.

	A status for a wamid we do not know yet may belong to a send whose transaction has not
	committed (Meta can call back within milliseconds): it is kept in Redis for an hour and
	applied when that send commits (`apply_early_statuses`). Others are simply ignored.
	"""
	failed = []
	for status in statuses:
		time_field = STATUS_TIME_FIELD.get(status.status)
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
		apply_status(values, time_field)
		if not frappe.db.exists(MESSAGE, {"wamid": status.wamid, "direction": "Outbound"}):
			early_statuses.keep(
				status.wamid,
				{
					"values": {**values, "at": str(values["at"])},
					"time_field": time_field,
					"undeliverable": undeliverable,
				},
			)
			apply_status(values, time_field)  # the send may have committed meanwhile
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
