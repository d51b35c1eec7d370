"""Inbound WhatsApp on a real site: storage, delivery statuses, opt-out, keyword triggers, media."""

from __future__ import annotations

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation import runtime
from flow_automation.tests.utils import make_template, state
from flow_automation.tests.whatsapp_utils import (
	APP_SECRET,
	CONTACT,
	SAMPLES,
	WABA_ID,
	WhatsAppTestCase,
	conversation,
	deliver,
	envelope,
	inbound_message,
	make_account,
	message_row,
	signed,
	status_update,
	wamid,
)
from flow_automation.triggers import clear_trigger_cache
from flow_automation.whatsapp import conversations, early_statuses, routing, webhook


def tiny_jpeg() -> bytes:
	from io import BytesIO

	from PIL import Image

	buffer = BytesIO()
	Image.new("RGB", (2, 2), "red").save(buffer, "JPEG")
	return buffer.getvalue()


TEMPLATE_SEND = {"to": "{{ variables.phone }}", "mode": "template", "template": "hello_v1", "language": "en"}


def send_run(template_name: str) -> tuple[str, str]:
	run = runtime.start_run(template_name, variables={"phone": CONTACT}, advance="now")
	return run, state(run)["send"]["output"]["wamid"]


class TestStorage(WhatsAppTestCase):
	def test_a_message_is_stored_once_however_often_it_is_delivered(self):
		body = inbound_message("hello there")
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.assertEqual(deliver(body), (200, "OK"))
		self.assertEqual(deliver(body), (200, "OK"))
		self.assertEqual(frappe.db.count("WhatsApp Message", {"wamid": message_id}), 1)
		row = message_row(message_id)
		self.assertEqual((row.direction, row.status, row.body), ("Inbound", "Received", "hello there"))
		self.assertEqual(
			(row.contact_number, row.contact_name, row.account), (CONTACT, "Sheena Nelson", self.account.name)
		)
		self.assertEqual(row.processing_status, "Done")
		self.assertTrue(conversation().last_inbound_at)
		self.assertEqual(conversation().account, self.account.name)

	def test_a_bad_signature_stores_nothing(self):
		body = inbound_message("forged")
		raw, _ = signed(body)
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.assertEqual(webhook.receive(raw, "sha256=" + "0" * 64)[0], 403)
		self.assertEqual(webhook.receive(raw, None)[0], 403)
		self.assertEqual(webhook.receive(raw, signed(body, "another-secret")[1])[0], 403)
		self.assertFalse(frappe.db.exists("WhatsApp Message", {"wamid": message_id}))

	def test_every_shared_sample_is_accepted(self):
		for path in sorted(SAMPLES.glob("*.json")):
			raw = path.read_bytes()
			with self.subTest(sample=path.name):
				self.assertEqual(webhook.receive(raw, signed(raw)[1]), (200, "OK"))
		self.assertTrue(frappe.db.exists("WhatsApp Message", {"wamid": "wamid.MALFORMED.BADTS"}))
		self.assertTrue(frappe.db.exists("Error Log", {"method": ("like", "WhatsApp webhook%")}))

	def test_a_signed_body_that_is_not_json_is_acknowledged_and_logged(self):
		self.assertEqual(webhook.receive(b"not json at all", signed(b"not json at all")[1]), (200, "OK"))

	def test_batches_route_each_message_to_the_number_it_was_sent_to(self):
		other = make_account(self.graph, "WA Test Other", phone_number_id="106540352299999", is_default=0)
		raw = (SAMPLES / "batch_two_entries.json").read_bytes()
		deliver(raw)
		self.assertEqual(message_row("wamid.BATCH.E0C0.M0").account, self.account.name)
		self.assertEqual(message_row("wamid.BATCH.E1C0.M1").account, other.name)
		self.assertEqual(message_row("wamid.BATCH.E1C0.M1").contact_number, "+5511987654321")
		self.assertEqual(message_row("wamid.BATCH.E1C0.M0").reply_id, "accept")

	def test_a_secret_of_any_enabled_account_verifies(self):
		make_account(
			self.graph, "WA Test Other", phone_number_id="333", is_default=0, app_secret="second-secret"
		)
		body = inbound_message("hi", phone_number_id="333")
		self.assertEqual(deliver(body, secret="second-secret"), (200, "OK"))


class TestStatuses(WhatsAppTestCase):
	def setUp(self):
		super().setUp()
		self.template = make_template(
			[{"id": "send", "kind": "send_whatsapp", "payload": TEMPLATE_SEND}]
		).name

	def status(self, message_id: str) -> str:
		return frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, "status")

	def test_status_only_moves_forward_whatever_the_order(self):
		_, message_id = send_run(self.template)
		for status in ("read", "delivered", "sent", "delivered"):
			deliver(status_update(message_id, status))
		self.assertEqual(self.status(message_id), "Read")
		row = message_row(message_id)
		self.assertTrue(row.read_at and row.delivered_at)

	def test_failed_is_terminal_and_keeps_metas_error(self):
		_, message_id = send_run(self.template)
		deliver(status_update(message_id, "delivered"))
		deliver(status_update(message_id, "failed", code=131047))
		deliver(status_update(message_id, "read"))
		row = message_row(message_id)
		self.assertEqual((row.status, row.error_code), ("Failed", 131047))
		self.assertIn("131047", row.error_details)
		self.assertFalse(row.read_at)

	def test_undeliverable_status_marks_the_contact(self):
		_, message_id = send_run(self.template)
		deliver(status_update(message_id, "failed", code=131026))
		self.assertEqual(conversation().undeliverable, 1)
		deliver(inbound_message("I'm back"))  # writing again makes the number deliverable
		self.assertEqual(conversation().undeliverable, 0)

	def test_statuses_outside_metas_order_change_nothing(self):
		_, message_id = send_run(self.template)
		for status in ("queued", "deleted", "warning"):
			self.assertEqual(deliver(status_update(message_id, status)), (200, "OK"))
		self.assertEqual(self.status(message_id), "Sent")

	def test_unknown_wamids_are_ignored(self):
		self.assertEqual(deliver(status_update("wamid.NOT.OURS", "delivered")), (200, "OK"))
		self.assertFalse(frappe.db.exists("WhatsApp Message", {"wamid": "wamid.NOT.OURS"}))

	def test_a_status_that_beats_the_sends_commit_is_applied_when_it_commits(self):
		_, message_id = send_run(self.template)
		early = message_id + ".early"
		# Meta reports a failure for a message whose send has not committed yet
		self.assertEqual(deliver(status_update(early, "failed", code=131026)), (200, "OK"))
		row = frappe.copy_doc(frappe.get_doc("WhatsApp Message", message_row(message_id).name))
		row.update({"wamid": early, "idempotency_key": early, "status": "Sent", "error_code": 0})
		row.insert(ignore_permissions=True)  # ...and now it has
		early_statuses.after_send(early)
		self.assertEqual(self.status(early), "Failed")
		self.assertEqual(message_row(early).error_code, 131026)
		self.assertEqual(conversation().undeliverable, 1)
		self.assertEqual(early_statuses.take(early), [])  # applied, and gone from Redis

	def test_a_template_status_update_changes_only_its_own_business_accounts_templates(self):
		other = make_account(
			self.graph, "WA Test Other", waba_id="999000999", phone_number_id="777000777", is_default=0
		)
		for account in (self.account.name, other.name):
			template_row(account, "order_confirmation", "en_US", "PENDING")
		sample = frappe.parse_json((SAMPLES / "template_status_update.json").read_text())
		value = sample["entry"][0]["changes"][0]["value"]
		self.assertEqual(sample["entry"][0]["id"], WABA_ID)  # the sample is about our main account's WABA
		self.assertEqual((value["message_template_name"], value["event"]), ("order_confirmation", "APPROVED"))
		deliver((SAMPLES / "template_status_update.json").read_bytes())
		self.assertEqual(template_status(self.account.name, "order_confirmation", "en_US"), "APPROVED")
		self.assertEqual(template_status(other.name, "order_confirmation", "en_US"), "PENDING")  # untouched

	def test_a_template_status_update_for_an_unknown_business_account_changes_nothing_and_is_logged(self):
		template_row(self.account.name, "order_confirmation", "en_US", "PENDING")
		sample = frappe.parse_json((SAMPLES / "template_status_update.json").read_text())
		sample["entry"][0]["id"] = "123123123"
		deliver(sample)
		self.assertEqual(template_status(self.account.name, "order_confirmation", "en_US"), "PENDING")
		self.assertTrue(
			frappe.db.exists(
				"Error Log", {"method": ("like", "%unknown WhatsApp Business Account 123123123%")}
			)
		)

	def test_one_failure_report_that_cannot_be_handled_never_stops_the_rest_of_the_delivery(self):
		template = make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {
						"to": "{{ variables.phone }}",
						"mode": "text",
						"text": "Hi",
						"fallback_template": {"template": "reopen_v1", "language": "en"},
					},
				}
			]
		).name
		conversations.record_inbound(
			CONTACT, at=now_datetime(), account=self.account.name, contact_name=None, wa_id=None
		)
		first, first_wamid = send_run(template)
		second, second_wamid = send_run(template)
		template_row(self.account.name, "order_confirmation", "en_US", "PENDING")
		conversations.set_opted_out(CONTACT, True)  # the fallback of the first report cannot go to them
		# one webhook POST: two late failures, a template status update and a message from someone else
		body = status_update(first_wamid, "failed", code=131047)
		value = body["entry"][0]["changes"][0]["value"]
		value["statuses"] += status_update(second_wamid, "failed", code=131049)["entry"][0]["changes"][0][
			"value"
		]["statuses"]
		value["messages"] = inbound_message("hello", number="+16505550000")["entry"][0]["changes"][0][
			"value"
		]["messages"]
		value["contacts"] = [{"profile": {"name": "Lee"}, "wa_id": "16505550000"}]
		body["entry"].append(
			frappe.parse_json((SAMPLES / "template_status_update.json").read_text())["entry"][0]
		)
		self.assertEqual(deliver(body), (200, "OK"))
		[first_log] = frappe.get_all(
			"Flow Step Log", filters={"run": first, "status": "Failed"}, pluck="error"
		)
		self.assertIn("131047", first_log)
		self.assertIn("the fallback template was not sent: opted_out", first_log)
		[second_log] = frappe.get_all(
			"Flow Step Log", filters={"run": second, "status": "Failed"}, pluck="error"
		)
		self.assertIn("131049", second_log)
		self.assertEqual(template_status(self.account.name, "order_confirmation", "en_US"), "APPROVED")
		inbound = frappe.get_value(
			"WhatsApp Message",
			{"direction": "Inbound", "contact_number": "+16505550000"},
			["processing_status", "outcome"],
			as_dict=True,
		)
		self.assertEqual(inbound.processing_status, "Done")
		self.assertEqual([m["type"] for m in self.sent()], ["text", "text"])  # no fallback went out


def template_row(account: str, name: str, language: str, status: str) -> None:
	frappe.get_doc(
		{
			"doctype": "WhatsApp Template",
			"account": account,
			"template_name": name,
			"language": language,
			"status": status,
		}
	).insert()


def template_status(account: str, name: str, language: str) -> str | None:
	return frappe.db.get_value(
		"WhatsApp Template", {"account": account, "template_name": name, "language": language}, "status"
	)


class TestOptOut(WhatsAppTestCase):
	def test_stop_opts_out_and_start_opts_back_in(self):
		self.account.db_set(
			{"opt_out_reply": "You will not hear from us again.", "opt_in_reply": "Welcome back!"}
		)
		deliver(inbound_message("  stop "))
		self.assertEqual(conversation().opted_out, 1)
		self.assertEqual(self.sent()[-1]["text"]["body"], "You will not hear from us again.")
		template = make_template([{"id": "send", "kind": "send_whatsapp", "payload": TEMPLATE_SEND}]).name
		run = runtime.start_run(template, variables={"phone": CONTACT}, advance="now")
		self.assertEqual(state(run)["send"]["output"]["reason"], "opted_out")
		sent_before = len(self.sent())
		deliver(inbound_message("START"))
		self.assertEqual(conversation().opted_out, 0)
		self.assertEqual(len(self.sent()), sent_before + 1)
		self.assertEqual(self.sent()[-1]["text"]["body"], "Welcome back!")

	def test_opt_out_words_are_configurable(self):
		self.account.db_set("opt_out_keywords", "PARAR\nBASTA")
		deliver(inbound_message("stop"))
		self.assertEqual(conversation().opted_out, 0)
		deliver(inbound_message("Basta"))
		self.assertEqual(conversation().opted_out, 1)


class TestKeywordTriggers(WhatsAppTestCase):
	def keyword_template(self, keywords, match="exact_ignore_case", priority=0, **fields):
		return make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "ToDo",
						"fields": {
							"description": "from {{ contact.name }} {{ contact.number }}: {{ trigger.event }}"
						},
					},
				}
			],
			trigger={"type": "WhatsApp Message", "keywords": keywords, "match": match},
			whatsapp_priority=priority,
			**fields,
		)

	def runs_of(self, template) -> list[str]:
		return frappe.get_all("Flow Run", filters={"template": template.name}, pluck="name")

	def test_an_opted_out_contacts_message_starts_nothing_and_says_why(self):
		template = self.keyword_template(["menu"], max_consecutive_failures=1)
		conversations.ensure(CONTACT)
		conversations.set_opted_out(CONTACT, True)
		for _ in range(3):  # a few texts cannot switch the bot off for everyone
			body = inbound_message("menu")
			deliver(body)
			row = message_row(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
			self.assertEqual(row.processing_status, "Done")
			self.assertEqual(row.outcome, "ignored: the contact opted out; START opts back in")
		self.assertEqual(self.runs_of(template), [])
		self.assertEqual(
			frappe.db.get_value("Flow Template", template.name, ["enabled", "consecutive_failures"]), (1, 0)
		)
		self.assertEqual(self.sent(), [])
		deliver(inbound_message("START"))
		deliver(inbound_message("menu"))
		self.assertEqual(len(self.runs_of(template)), 1)

	def test_an_exact_keyword_starts_the_flow_with_the_contact(self):
		template = self.keyword_template(["menu", "hi"])
		body = inbound_message("MENU")
		deliver(body)
		[run] = self.runs_of(template)
		doc = frappe.get_doc("Flow Run", run)
		self.assertEqual(
			(doc.status, doc.contact, doc.trigger_type), ("Completed", CONTACT, "WhatsApp Message")
		)
		todo = state(run)["note"]["output"]["name"]
		self.assertEqual(
			frappe.db.get_value("ToDo", todo, "description"), "from Sheena Nelson +16505551234: MENU"
		)
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.assertEqual(message_row(message_id).run, run)
		# a redelivery, even one processed again, never starts it twice
		frappe.db.set_value("WhatsApp Message", {"wamid": message_id}, "processing_status", "Pending")
		deliver(body)
		self.assertEqual(len(self.runs_of(template)), 1)

	def test_match_modes(self):
		contains = self.keyword_template(["price"], match="contains")
		regex = self.keyword_template([r"^order\s+SO-\d+$"], match="regex")
		exact = self.keyword_template(["Help"], match="exact")
		deliver(inbound_message("what is the PRICE?"))
		deliver(inbound_message("order SO-123"))
		deliver(inbound_message("help"))  # exact is case-sensitive
		self.assertEqual(
			(len(self.runs_of(contains)), len(self.runs_of(regex)), len(self.runs_of(exact))), (1, 1, 0)
		)

	def test_the_highest_priority_wins_and_only_one_flow_starts(self):
		low = self.keyword_template(["hello"], priority=1)
		high = self.keyword_template(["hello"], priority=5)
		deliver(inbound_message("hello"))
		self.assertEqual((len(self.runs_of(low)), len(self.runs_of(high))), (0, 1))

	def test_a_template_can_listen_to_one_number_only(self):
		other = make_account(self.graph, "WA Test Other", phone_number_id="444", is_default=0)
		template = self.keyword_template(["hello"], whatsapp_account=other.name)
		deliver(inbound_message("hello"))
		self.assertEqual(self.runs_of(template), [])
		deliver(inbound_message("hello", phone_number_id="444"))
		self.assertEqual(len(self.runs_of(template)), 1)

	def test_messages_that_match_nothing_are_just_stored(self):
		body = inbound_message("random chat")
		deliver(body)
		row = message_row(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
		self.assertEqual((row.processing_status, row.run), ("Done", None))


class TestProcessing(WhatsAppTestCase):
	def test_the_cron_drains_messages_a_lost_job_left_behind(self):
		body = inbound_message("stranded")
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		raw, _ = signed(body)
		from flow_automation.channels.whatsapp import parse_webhook

		webhook.store_messages(parse_webhook(raw).messages, self.account.as_dict())  # stored, never processed
		self.assertEqual(message_row(message_id).processing_status, "Pending")
		self.assertEqual(routing.drain(now=now_datetime()), 0)  # still within its grace period
		self.assertEqual(routing.drain(now=add_to_date(now_datetime(), minutes=2)), 1)
		self.assertEqual(message_row(message_id).processing_status, "Done")

	def test_a_failure_is_stored_on_the_row_and_logged(self):
		body = inbound_message("menu")
		template = make_template(
			[{"id": "bad", "kind": "wait", "payload": {}}],
			trigger={"type": "WhatsApp Message", "keywords": ["menu"]},
		)
		# a trigger condition broken behind the form's back: reading the keyword index fails
		frappe.db.set_value("Flow Template", template.name, "trigger_condition", "{not json")
		clear_trigger_cache()
		deliver(body)
		row = message_row(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
		self.assertEqual(row.processing_status, "Failed")
		self.assertIn("JSONDecodeError", row.processing_error)
		self.assertTrue(frappe.db.exists("Error Log", {"method": ("like", f"%{row.name}%")}))

	def test_inbound_media_is_downloaded_into_a_file_on_the_message(self):
		jpeg = tiny_jpeg()
		media_id = self.graph.add_media(jpeg, "image/jpeg")
		body = inbound_message("Finished batch", image=media_id)
		deliver(body)
		row = message_row(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
		self.assertTrue(row.media_file, row.processing_error)
		file = frappe.get_doc("File", {"file_url": row.media_file})
		self.assertEqual((file.attached_to_doctype, file.attached_to_name), ("WhatsApp Message", row.name))
		self.assertEqual(file.get_content(), jpeg)
		self.assertEqual(row.body, "Finished batch")

	def test_a_failed_download_is_recorded_not_raised(self):
		body = inbound_message(image="404404404")
		deliver(body)
		row = message_row(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
		self.assertEqual(row.processing_status, "Done")
		self.assertIn("media download", row.processing_error)

	def test_conversation_pointer_expiry(self):
		conversations.ensure(CONTACT)
		conversations.set_waiting(
			CONTACT, run="R", step="s", since=now_datetime(), until=add_to_date(now_datetime(), minutes=-1)
		)
		self.assertIsNone(conversations.waiting_step(conversations.get(CONTACT), now_datetime()))
		self.assertFalse(conversations.release_waiting(CONTACT, "R", "other"))
		self.assertTrue(conversations.release_waiting(CONTACT, "R", "s"))
		self.assertIsNone(conversation().waiting_run)
		self.assertTrue(APP_SECRET and envelope and wamid)
