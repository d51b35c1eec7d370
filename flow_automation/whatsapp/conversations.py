"""WhatsApp Conversations: one row per contact number (named by its E.164 number).

The row answers the questions every send and every inbound message asks, with one primary
key lookup: is the 24-hour window open (and for which account), did the contact opt out,
is the number undeliverable, and which flow step waits for this contact's reply.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import frappe
from frappe.utils import get_datetime, now_datetime

from flow_automation.channels.whatsapp import window_open

DOCTYPE = "WhatsApp Conversation"
FIELDS = (
	"name",
	"contact_name",
	"wa_id",
	"contact",
	"account",
	"language",
	"last_inbound_at",
	"last_inbound_account",
	"opted_out",
	"undeliverable",
	"waiting_run",
	"waiting_step",
	"waiting_until",
)


def get(number: str, *, for_update: bool = False) -> frappe._dict | None:
	"""The conversation of an E.164 number, or None if the contact never wrote or was written to."""
	return frappe.db.get_value(DOCTYPE, number, list(FIELDS), as_dict=True, for_update=for_update)


def ensure(number: str, **values: Any) -> None:
	"""Create the conversation of a number if it does not exist yet (a concurrent insert is fine)."""
	if frappe.db.exists(DOCTYPE, number):
		return
	frappe.get_doc({"doctype": DOCTYPE, "contact_number": number, **values}).insert(
		ignore_permissions=True, ignore_if_duplicate=True
	)


def update(number: str, values: dict[str, Any]) -> None:
	frappe.db.set_value(DOCTYPE, number, values, update_modified=True)


def record_inbound(
	number: str, *, at: dt.datetime, account: str | None, contact_name: str | None, wa_id: str | None
) -> frappe._dict:
	"""A message from the contact: opens the window, pins the account, clears undeliverable."""
	ensure(number, contact_name=contact_name, wa_id=wa_id, account=account)
	conversation = get(number, for_update=True)
	values: dict[str, Any] = {
		"last_inbound_account": account,
		"undeliverable": 0,
		"undeliverable_since": None,
	}
	if not conversation.last_inbound_at or get_datetime(conversation.last_inbound_at) < at:
		values["last_inbound_at"] = at
	if contact_name and contact_name != conversation.contact_name:
		values["contact_name"] = contact_name
	if wa_id and wa_id != conversation.wa_id:
		values["wa_id"] = wa_id
	if account and not conversation.account:
		values["account"] = account
	update(number, values)
	conversation.update(values)
	return conversation


def is_window_open(conversation: frappe._dict | None, account: str, now: dt.datetime) -> bool:
	"""Whether a free-form message from `account` may reach this contact now (24-hour window).

	The window belongs to the number the contact wrote to: a message to account A does not
	open a window for account B.
	"""
	if not conversation or not conversation.last_inbound_at:
		return False
	if conversation.last_inbound_account and conversation.last_inbound_account != account:
		return False
	return window_open(get_datetime(conversation.last_inbound_at), now)


def set_opted_out(number: str, opted_out: bool, at: dt.datetime | None = None) -> None:
	update(
		number, {"opted_out": int(opted_out), "opted_out_at": (at or now_datetime()) if opted_out else None}
	)


def mark_undeliverable(number: str, at: dt.datetime | None = None) -> None:
	"""Meta refused delivery for good (131026): later sends fail fast until the contact writes."""
	ensure(number)
	update(number, {"undeliverable": 1, "undeliverable_since": at or now_datetime()})


def set_waiting(number: str, *, run: str, step: str, since: dt.datetime, until: dt.datetime | None) -> None:
	"""Point the contact's next reply at a waiting `ask`: the newest question wins.

	An older `ask` of another run loses the pointer, keeps its own timeout timer and times
	out on its own (its release finds the pointer changed and leaves it).
	"""
	ensure(number)
	update(number, {"waiting_run": run, "waiting_step": step, "waiting_since": since, "waiting_until": until})


def release_waiting(number: str, run: str, step: str) -> bool:
	"""Clear the pointer if it still points at this run's step; True if it did."""
	table = frappe.qb.DocType(DOCTYPE)
	_clear_waiting((table.name == number) & (table.waiting_run == run) & (table.waiting_step == step))
	return frappe.db._cursor.rowcount == 1


def _clear_waiting(where: Any) -> None:
	table = frappe.qb.DocType(DOCTYPE)
	(
		frappe.qb.update(table)
		.set(table.waiting_run, None)
		.set(table.waiting_step, None)
		.set(table.waiting_since, None)
		.set(table.waiting_until, None)
		.where(where)
	).run()


def waiting_step(conversation: frappe._dict | None, now: dt.datetime) -> tuple[str, str] | None:
	"""(run, step) waiting for this contact's reply, unless the wait has expired."""
	if not conversation or not conversation.waiting_run or not conversation.waiting_step:
		return None
	if conversation.waiting_until and get_datetime(conversation.waiting_until) <= now:
		return None
	return conversation.waiting_run, conversation.waiting_step


def on_run_finished(run: Any) -> None:
	"""The `flow_run_finished` hook: a run that ended while a question waited (failed or
	cancelled) waits for no one's reply any more. (A completed run has no waiting step: its
	questions were answered or timed out, and released their contacts then.)"""
	if run.status != "Completed":
		_clear_waiting(frappe.qb.DocType(DOCTYPE).waiting_run == run.name)
