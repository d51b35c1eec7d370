"""What Meta reports about messages already sent: delivery statuses, failures after
acceptance, and template status changes.

Statuses move a message row forward (`apply_status`, also used by the webhook itself). A
failure Meta reports after accepting a flow's message goes to that run's step log, and a
free-form message refused because the 24-hour window closed (131047) gets its fallback
template. Every report is handled on its own: one that cannot be handled is logged and
never stops the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import frappe

from flow_automation.channels.whatsapp import FRAPPE_STATUS, STATUSES
from flow_automation.engine import Outcome
from flow_automation.runtime import log_step_event
from flow_automation.transaction import commit, isolated
from flow_automation.whatsapp import conversations, early_statuses
from flow_automation.whatsapp.outbound import Delivery, send, was_sent

MESSAGE = "WhatsApp Message"
# Meta's delivery order as the Frappe Select options, for the SQL that only moves forward.
_STATUS_ORDER = ", ".join(f"'{FRAPPE_STATUS[s]}'" for s in STATUSES)
STATUS_TIME_FIELD = {
	"sent": "sent_at",
	"delivered": "delivered_at",
	"read": "read_at",
	"failed": "failed_at",
}


def apply_status(values: Mapping[str, Any], time_field: str) -> None:
	"""Move a sent message's status forward (never back; failed stays failed)."""
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


def apply_reports(failed: Iterable[Mapping[str, Any]], template_updates: Iterable[Mapping[str, Any]]) -> None:
	"""The failures and template updates of one webhook delivery, each on its own."""
	for failure in failed:
		_on_its_own(handle_failure, failure, f"the failure report for {failure.get('wamid')}")
	for update in template_updates:
		_on_its_own(update_template_status, update, f"the template status update for {update.get('name')}")


def _on_its_own(handle: Any, report: Mapping[str, Any], what: str) -> None:
	with isolated() as block:
		handle(report)
	if block.failed:
		frappe.log_error(title=f"WhatsApp: {what} could not be handled", message=block.traceback)


def apply_early_statuses(wamid: str) -> int:
	"""The job after a send commits: apply the statuses that arrived before it did."""
	kept = early_statuses.take(wamid)
	failures = []
	for item in kept:
		values = item["values"]
		apply_status(values, item["time_field"])
		if values["status"] == "Failed":
			failures.append(
				{
					"wamid": wamid,
					"code": values.get("code"),
					"title": values.get("title"),
					"undeliverable": item.get("undeliverable"),
				}
			)
	apply_reports(failures, ())
	commit()
	return len(kept)


def handle_failure(failure: Mapping[str, Any]) -> None:
	"""A failed delivery report: flag an undeliverable number, tell the run that sent it."""
	if failure.get("undeliverable"):
		number = frappe.db.get_value(MESSAGE, {"wamid": failure["wamid"]}, "contact_number")
		if number:
			conversations.mark_undeliverable(number)
	after_delivery_failure(failure["wamid"], failure.get("code"), failure.get("title"))


def after_delivery_failure(wamid: str, code: int | None, title: str | None) -> None:
	"""Meta reported a flow's message failed after accepting it (a status callback).

	The step already finished, so the failure goes to the run's step log; a free-form
	message refused because the 24-hour window closed (131047) gets its fallback template,
	sent once (keyed by the original send's key).
	"""
	row = frappe.db.get_value(
		MESSAGE,
		{"wamid": wamid, "direction": "Outbound"},
		["run", "step_id", "idempotency_key", "fallback_template", "reference_doctype", "reference_name"],
		as_dict=True,
	)
	if not row or not row.run:
		return
	note = f"WhatsApp could not deliver message {wamid}: error {code} {title or ''}".strip()
	fallback = json.loads(row.fallback_template) if row.fallback_template and code == 131047 else None
	output: Any = None
	if fallback:
		sent = send(
			fallback,
			Delivery(
				f"{row.idempotency_key}:fallback",
				run=row.run,
				step_id=row.step_id,
				reference_doctype=row.reference_doctype,
				reference_name=row.reference_name,
			),
		)
		if isinstance(sent, Outcome):
			output = {"error": sent.error}
			note += f"; the fallback failed too: {sent.error}"
		elif not was_sent(sent):
			output = sent
			note += f"; the fallback template was not sent: {sent['reason']}"
		else:
			output = sent
			note += "; sent the fallback template instead"
	log_step_event(row.run, row.step_id, "Failed", error=note, output=output)


def update_template_status(update: Mapping[str, Any]) -> int:
	"""Meta changed a template's status: update that template of the WhatsApp Business Account
	the update came from (every account of that WABA), never another account's namesake.
	Returns the rows changed."""
	accounts = frappe.get_all(
		"WhatsApp Account", filters={"waba_id": str(update.get("waba_id") or "")}, pluck="name"
	)
	if not update.get("waba_id") or not accounts:
		frappe.log_error(
			title=f"WhatsApp: template status update for an unknown WhatsApp Business Account {update.get('waba_id')}",
			message=json.dumps(dict(update), indent=1, default=str),
		)
		return 0
	table = frappe.qb.DocType("WhatsApp Template")
	(
		frappe.qb.update(table)
		.set(table.status, update.get("event"))
		.where(
			(table.template_name == update.get("name"))
			& (table.language == update.get("language"))
			& table.account.isin(accounts)
		)
	).run()
	return frappe.db._cursor.rowcount
