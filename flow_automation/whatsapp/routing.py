"""Inbound WhatsApp, the job after the webhook: route each stored message.

Per message, in order:

1. the contact's WhatsApp Conversation: last inbound time (the 24-hour window), name,
   pinned account;
2. opt-out / opt-in words (STOP / START by default, per account); a contact who opted out
   starts nothing and resumes nothing until they opt back in;
3. a reply to a waiting `ask` resumes that run;
4. otherwise a Flow Template with a matching WhatsApp keyword trigger starts;
5. once routed, media is downloaded into a File attached to the message (its own job).

Inbound rows carry `processing_status` (Pending → Processing → Done / Failed) and an
`outcome` saying what the message did: a lost job leaves Pending rows that the minute cron
drains, and a failure is stored on the row and in the Error Log, never dropped.

A message a flow will answer (a keyword that starts one, or a reply to a waiting question)
is not left to a background job: `answer_now` routes it right after the webhook's 200, in the
web worker that stored it (Frappe's `after_response`), and starts the run it queued there
too, so the bot's reply does not wait for two jobs to fork and start. Everything else is
routed by `process_pending`, one job for a burst of deliveries: each delivery rings a
doorbell after commit (`transaction.enqueue(doorbell=…)`) rather than queueing a job of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation.engine import REPLY, Outcome, waiting_for
from flow_automation.roles import as_system
from flow_automation.runtime import complete_step, kicks_held, start_queued_run, step_state
from flow_automation.transaction import commit, doorbell_answered, enqueue, isolated, separately
from flow_automation.triggers import dispatch_whatsapp_message
from flow_automation.whatsapp import conversations
from flow_automation.whatsapp.delivery_status import MESSAGE, apply_reports
from flow_automation.whatsapp.media import enqueue_media_download
from flow_automation.whatsapp.outbound import Delivery, send

DRAIN_GRACE_SECONDS = 60
STUCK_PROCESSING_MINUTES = 15
DRAIN_BATCH = 500
INBOUND_DOORBELL = "whatsapp_inbound"
PROCESS_PENDING = "flow_automation.whatsapp.routing.process_pending"
DEFAULT_OPT_OUT = "STOP\nUNSUBSCRIBE"
DEFAULT_OPT_IN = "START"
WORDS = ("text", "button", "interactive")  # message types whose text can be a word or a keyword


def process_delivery(
	wamids: list[str] | None = None,
	failed: list[dict[str, Any]] | None = None,
	template_updates: list[dict[str, Any]] | None = None,
) -> None:
	"""Background job after a webhook delivery: failures and template updates (and, for jobs
	queued before `process_pending` existed, the delivery's inbound messages)."""
	as_system()
	if failed or template_updates:
		apply_reports(failed or (), template_updates or ())
		commit()
	if wamids:
		for name in _pending(wamids):
			process_message(name)


def ring_for_pending() -> None:
	"""After commit, make sure a `process_pending` job is on its way (one for a burst)."""
	enqueue(PROCESS_PENDING, queue="short", after_commit=True, doorbell=INBOUND_DOORBELL)


def process_pending() -> int:
	"""The job inbound deliveries ring for: route every inbound message still Pending, in the
	order they arrived. A full batch rings again for the rest; returns how many it took."""
	doorbell_answered(INBOUND_DOORBELL)  # before reading: what commits from now on rings anew
	as_system()
	table = frappe.qb.DocType(MESSAGE)
	names = (
		frappe.qb.from_(table)
		.select(table.name)
		.where((table.direction == "Inbound") & (table.processing_status == "Pending"))
		.orderby(table.creation)
		.limit(DRAIN_BATCH)
		.run(pluck=True)
	)
	for name in names:
		process_message(name)
	if len(names) == DRAIN_BATCH:
		ring_for_pending()
	return len(names)


def answer_now(wamids: list[str]) -> None:
	"""Route these stored messages and start the runs they queued, at once, each in its own
	transaction (Frappe's `after_response`: the webhook has answered Meta already).

	Never raises: what is left undone (an error, the process killed) stays Pending, and the
	minute cron's `drain` routes it later.
	"""
	try:
		as_system()
		for name in _pending(wamids):
			with kicks_held() as started:  # no job for the run it starts: it starts here
				process_message(name)
			for run in started:
				separately(lambda: start_queued_run(run), title=f"WhatsApp: starting {run} failed")
	except Exception:
		frappe.db.rollback()
		frappe.log_error(title="WhatsApp: answering inbound messages after the webhook failed")
		commit()


def _pending(wamids: list[str]) -> list[str]:
	return frappe.get_all(
		MESSAGE,
		filters={"wamid": ("in", list(wamids)), "direction": "Inbound", "processing_status": "Pending"},
		order_by="received_at asc, creation asc",
		pluck="name",
	)


def drain(now: dt.datetime | None = None) -> int:
	"""Minute cron: process inbound rows a lost job left Pending (or a killed one left Processing)."""
	as_system()
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


def _claim(name: str) -> bool:
	table = frappe.qb.DocType(MESSAGE)
	(
		frappe.qb.update(table)
		.set(table.processing_status, "Processing")
		.set(table.modified, now_datetime())
		.where((table.name == name) & (table.processing_status == "Pending"))
	).run()
	claimed = frappe.db._cursor.rowcount == 1
	commit()
	return claimed


def process_message(name: str) -> dict[str, Any] | None:
	"""Route one stored inbound message; its outcome is written on the row and returned
	(None if another job had it, it was done already, or routing failed)."""
	if not _claim(name):
		return None  # another job has it, or it is done
	message = frappe.get_doc(MESSAGE, name)
	with isolated() as block:
		values = route(message)
	if block.failed:
		error = block.error
		frappe.db.set_value(
			MESSAGE,
			name,
			{"processing_status": "Failed", "processing_error": f"{type(error).__name__}: {error}"[:1000]},
		)
		frappe.log_error(
			title=f"WhatsApp: inbound message {name} could not be processed", message=block.traceback
		)
		commit()
		return None
	frappe.db.set_value(MESSAGE, name, {"processing_status": "Done", "processing_error": None, **values})
	if message.media_id:
		enqueue_media_download(message)  # its own job, once this message's routing has committed
	commit()
	return values


def reply_of(message: Any) -> dict[str, Any]:
	"""An inbound message as the reply data an `ask` judges."""
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

	Returns the fields to store on the message row: the run it resumed or started, and its
	outcome in words.
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
	text = (message.body or "").strip() if message.message_type in WORDS else ""
	words = opt_words(message.account)
	if text and text.upper() in words["out"]:
		conversations.set_opted_out(number, True, now)
		_confirm(message, words["out_reply"], "opt-out")
		return {"outcome": f"opted out ({text.upper()})"}
	if text and text.upper() in words["in"]:
		conversations.set_opted_out(number, False)
		_confirm(message, words["in_reply"], "opt-in")
		return {"outcome": f"opted back in ({text.upper()})"}
	if conversation.opted_out:
		# nothing a contact who said STOP writes may start or resume a flow (or be answered)
		return {"outcome": f"ignored: the contact opted out; {', '.join(words['in'])} opts back in"}

	waiting = conversations.waiting_step(conversation, now)
	if waiting:
		run, step = waiting
		if _resume(run, step, reply_of(message)):
			return {"run": run, "step_id": step, "outcome": f"answered step {step} of {run}"}
		conversations.release_waiting(number, run, step)

	if text:
		run = dispatch_whatsapp_message(
			text,
			account=message.account,
			contact=_contact(message, conversation),
			message=reply_of(message),
			wamid=message.wamid,
		)
		if run:
			return {"run": run, "outcome": f"started {run}"}
	return {"outcome": "no waiting question and no keyword matched"}


def _resume(run: str, step: str, reply: dict[str, Any]) -> bool:
	"""Give a reply to the `ask` waiting for it; False if that step no longer waits."""
	if not waiting_for(step_state(run), step, REPLY):
		return False
	with isolated(catch=frappe.ValidationError) as block:
		complete_step(run, step, reply, event_type="reply")
	return not block.failed  # failed: the run finished or was cancelled meanwhile


def _contact(message: Any, conversation: Mapping[str, Any]) -> dict[str, Any]:
	return {
		"number": message.contact_number,
		"name": message.contact_name or conversation.get("contact_name"),
		"wa_id": message.contact_number.lstrip("+"),
		"account": message.account,
		"language": conversation.get("language"),
		"contact": conversation.get("contact"),
	}


def opt_words(account: str | None) -> dict[str, Any]:
	"""The account's opt-out and opt-in words (upper case) and its confirmations."""
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
	result = send(
		{"to": message.contact_number, "account": message.account, "mode": "text", "text": text},
		Delivery(f"{message.wamid}:{what}", to_opted_out=what == "opt-out"),
	)
	if isinstance(result, Outcome):
		frappe.log_error(
			title=f"WhatsApp {what} confirmation to {message.contact_number} failed", message=result.error
		)
