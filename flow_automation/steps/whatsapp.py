"""WhatsApp steps: `send_whatsapp`, `ask`, and the effects an `ask` requests while it waits.

The kinds themselves (payloads, branches, what a reply means) are in the engine
(`engine/whatsapp_kinds.py`); sending is `whatsapp/outbound.py`. Handlers only connect them
to the run: idempotency key, trigger document, dry runs, the conversation pointer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import frappe
from frappe.utils import get_datetime, now_datetime

from flow_automation.engine import Outcome, ask_wait, question_payload
from flow_automation.steps.base import StepCall, handles
from flow_automation.transaction import isolated
from flow_automation.whatsapp import conversations
from flow_automation.whatsapp.outbound import Delivery, send, was_sent


def _delivery(call: StepCall, key: str | None = None) -> Delivery:
	now = call.context.get("now")
	return Delivery(
		key or call.idempotency_key,
		run=call.run.name,
		step_id=call.step.id,
		reference_doctype=call.run.reference_doctype,
		reference_name=call.run.reference_name,
		now=get_datetime(now) if now else now_datetime(),
		dry_run=call.dry_run,
		record=call.record,
	)


@handles("send_whatsapp")
def send_whatsapp(call: StepCall) -> dict[str, Any] | Outcome:
	"""Send the step's message once (retries and re-advances return the first send)."""
	return send(call.payload, _delivery(call))


@handles("ask")
def ask(call: StepCall) -> Outcome:
	"""Send the question, then wait for the contact's reply (pointer on their conversation).

	A contact who opted out is not asked: the step is done without an answer, and none of
	its answer branches runs.
	"""
	delivery = _delivery(call)
	sent = send(question_payload(call.payload), delivery)
	if isinstance(sent, Outcome):
		return sent
	if not was_sent(sent):
		return Outcome.done({"answer": None, **sent})
	outcome = ask_wait(
		call.payload,
		delivery.now,
		to=sent["to"],
		account=sent.get("account"),
		key=call.idempotency_key,
		wamid=sent.get("wamid"),
		output={"message": sent.get("message"), "dry_run": sent.get("dry_run", False)},
	)
	if not call.dry_run:
		conversations.set_waiting(
			sent["to"], run=call.run.name, step=call.step.id, since=delivery.now, until=outcome.until
		)
	return outcome


@handles("ask:reprompt")
def reprompt(call: StepCall) -> None:
	"""Effect `ask:reprompt`: ask again after an invalid answer (interactive questions re-sent)."""
	effect = call.payload
	question = dict(effect.get("question") or {})
	payload = {**question, "text": effect.get("text") or question.get("text")}
	if not payload.get("to"):
		payload["to"] = effect.get("to")
	if effect.get("account"):
		payload["account"] = effect["account"]
	key = effect.get("key") or f"{call.idempotency_key}:retry"
	_effect(call, lambda: send(payload, _delivery(call, key=key)))


@handles("ask:release")
def release(call: StepCall) -> None:
	"""Effect `ask:release`: the ask stopped waiting; free the contact's conversation."""
	if call.dry_run or not call.payload.get("to"):
		return
	_effect(call, lambda: conversations.release_waiting(call.payload["to"], call.run.name, call.step.id))


def _effect(call: StepCall, work: Callable[[], Any]) -> None:
	# Effects run while a reply is being applied: a failure here must not lose the reply, so
	# it is rolled back on its own and logged instead of raised.
	title = f"WhatsApp: {call.payload.get('type')} for {call.run.name}/{call.step.id} failed"
	with isolated() as block:
		result = work()
	if block.failed:
		frappe.log_error(title=title, message=block.traceback)
	elif isinstance(result, Outcome) and result.status == "failed":
		frappe.log_error(title=title, message=result.error)
