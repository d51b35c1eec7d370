"""WhatsApp test helpers: an account pointed at a loopback Graph API, signed webhook bodies.

Every Meta call in the integration tests goes to `FakeGraphAPI`, a real HTTP server on
127.0.0.1; webhook bodies are signed with the account's app secret over their raw bytes,
exactly as Meta signs them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import frappe
from frappe.utils import get_system_timezone, now_datetime

from flow_automation.channels.whatsapp import FakeGraphAPI, sign
from flow_automation.tests.utils import FlowTestCase, ensure_email_account
from flow_automation.triggers import clear_trigger_cache
from flow_automation.whatsapp import accounts, webhook

TOKEN = "EAAG-test-access-token-0123456789"
APP_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
VERIFY_TOKEN = "flow-automation-verify-token"
PHONE_NUMBER_ID = "106540352242922"  # the shared samples' number
WABA_ID = "102290129340398"
CONTACT = "+16505551234"
SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "data" / "whatsapp"

_counter = iter(range(1, 10**9))


def make_account(graph: FakeGraphAPI, name: str = "WA Test Main", **fields: Any):
	"""A default WhatsApp Account whose Graph API is the loopback fake (no pacing unless asked)."""
	if frappe.db.exists("WhatsApp Account", name):
		frappe.delete_doc("WhatsApp Account", name, force=True, ignore_permissions=True)
	doc = frappe.get_doc(
		{
			"doctype": "WhatsApp Account",
			"account_name": name,
			"phone_number_id": PHONE_NUMBER_ID,
			"display_phone_number": "15550783881",
			"waba_id": WABA_ID,
			"access_token": TOKEN,
			"app_secret": APP_SECRET,
			"verify_token": VERIFY_TOKEN,
			"base_url": graph.base_url,
			"is_default": 1,
			"recipient_gap_seconds": 0,
			**fields,
		}
	).insert(ignore_permissions=True)
	accounts.clear_account_cache()
	return doc


def unix(at: dt.datetime | None = None) -> int:
	"""Meta's Unix timestamp for a naive system-time datetime (default: now, frozen or not)."""
	at = at or now_datetime()
	return int(at.replace(tzinfo=ZoneInfo(get_system_timezone())).timestamp())


def wamid(prefix: str = "IN") -> str:
	return f"wamid.TEST.{prefix}.{frappe.generate_hash(length=10)}.{next(_counter)}"


def envelope(value: dict[str, Any], phone_number_id: str = PHONE_NUMBER_ID) -> dict[str, Any]:
	return {
		"object": "whatsapp_business_account",
		"entry": [
			{
				"id": WABA_ID,
				"changes": [
					{
						"field": "messages",
						"value": {
							"messaging_product": "whatsapp",
							"metadata": {
								"display_phone_number": "15550783881",
								"phone_number_id": phone_number_id,
							},
							**value,
						},
					}
				],
			}
		],
	}


def inbound_message(
	text: str | None = None,
	*,
	number: str = CONTACT,
	name: str = "Sheena Nelson",
	message_id: str | None = None,
	at: dt.datetime | None = None,
	button: tuple[str, str] | None = None,
	row: tuple[str, str] | None = None,
	image: str | None = None,
	phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
	"""A webhook body with one inbound message: text, a button or list reply, or an image."""
	wa_id = number.lstrip("+")
	message: dict[str, Any] = {"from": wa_id, "id": message_id or wamid(), "timestamp": str(unix(at))}
	if button:
		message.update(
			type="interactive",
			interactive={
				"type": "button_reply",
				"button_reply": dict(zip(("id", "title"), button, strict=True)),
			},
		)
	elif row:
		message.update(
			type="interactive",
			interactive={"type": "list_reply", "list_reply": dict(zip(("id", "title"), row, strict=True))},
		)
	elif image:
		message.update(type="image", image={"id": image, "mime_type": "image/jpeg", "caption": text or ""})
	else:
		message.update(type="text", text={"body": text or ""})
	return envelope(
		{"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}, phone_number_id
	)


def status_update(
	message_id: str,
	status: str,
	*,
	code: int | None = None,
	at: dt.datetime | None = None,
	recipient: str = CONTACT,
) -> dict[str, Any]:
	item: dict[str, Any] = {
		"id": message_id,
		"status": status,
		"timestamp": str(unix(at)),
		"recipient_id": recipient.lstrip("+"),
	}
	if code is not None:
		item["errors"] = [{"code": code, "title": f"Error {code}", "message": f"Error {code}"}]
	return envelope({"statuses": [item]})


def signed(body: dict[str, Any] | bytes, secret: str = APP_SECRET) -> tuple[bytes, str]:
	raw = body if isinstance(body, bytes) else json.dumps(body).encode()
	return raw, sign(raw, secret)


def deliver(body: dict[str, Any] | bytes, secret: str = APP_SECRET) -> tuple[int, str]:
	"""Post a signed delivery through the webhook's own code (its job runs inline in tests)."""
	raw, signature = signed(body, secret)
	return webhook.receive(raw, signature)


def message_row(message_id: str) -> Any:
	return frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, "*", as_dict=True)


def conversation(number: str = CONTACT) -> Any:
	return frappe.db.get_value("WhatsApp Conversation", number, "*", as_dict=True)


def open_window(number: str = CONTACT, account: str = "WA Test Main", at: dt.datetime | None = None) -> None:
	"""The contact wrote to us (the 24-hour window is open), without sending a webhook."""
	from flow_automation.whatsapp import conversations

	conversations.record_inbound(
		number, at=at or now_datetime(), account=account, contact_name="Sheena", wa_id=number.lstrip("+")
	)


class WhatsAppTestCase(FlowTestCase):
	"""A loopback Graph API for the class and a fresh default account for every test."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		ensure_email_account()
		cls.graph = FakeGraphAPI(access_token=TOKEN).start()

	@classmethod
	def tearDownClass(cls):
		cls.graph.stop()
		super().tearDownClass()

	def setUp(self):
		super().setUp()
		self.graph.reset()
		clear_trigger_cache()
		self.account = make_account(self.graph)

	def tearDown(self):
		frappe.db.rollback()
		frappe.set_user("Administrator")
		accounts.clear_account_cache()
		clear_trigger_cache()
		super().tearDown()

	def sent(self) -> list[dict[str, Any]]:
		return self.graph.sent_messages
