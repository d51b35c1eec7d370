"""send_whatsapp on a real site against the loopback Graph API: once, in the window, never opted out."""

from __future__ import annotations

import json

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation import runtime
from flow_automation.engine import Step
from flow_automation.steps import StepCall
from flow_automation.steps.whatsapp import send_whatsapp
from flow_automation.tests.utils import make_template, state
from flow_automation.tests.whatsapp_utils import (
	CONTACT,
	WhatsAppTestCase,
	conversation,
	make_account,
	open_window,
)
from flow_automation.whatsapp import conversations, pacing
from flow_automation.whatsapp.outbound import Delivery, send

TEMPLATE_SEND = {
	"to": "{{ variables.phone }}",
	"mode": "template",
	"template": "production_run_assigned_v3",
	"language": "{{ variables.language or 'en' }}",
	"parameters": ["{{ variables.run_name }}", "2026-03-01"],
	"buttons": [{"id": "accept"}, {"id": "decline"}],
}


def one_step(payload: dict, **step) -> str:
	return make_template([{"id": "send", "kind": "send_whatsapp", "payload": payload, **step}]).name


def start(template: str, **variables) -> str:
	return runtime.start_run(template, variables={"phone": CONTACT, **variables}, advance="now")


def output(run: str) -> dict:
	return state(run)["send"].get("output") or {}


def error(run: str) -> str:
	return state(run)["send"].get("error") or ""


class TestSendWhatsApp(WhatsAppTestCase):
	def test_template_send_goes_to_meta_once_and_is_stored(self):
		run = start(one_step(TEMPLATE_SEND), run_name="RUN-7", language="pt_BR")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		[body] = self.sent()
		self.assertEqual(body["to"], "16505551234")
		self.assertEqual(body["template"]["name"], "production_run_assigned_v3")
		self.assertEqual(body["template"]["language"], {"code": "pt_BR"})
		self.assertEqual(body["template"]["components"][0]["parameters"][0]["text"], "RUN-7")
		self.assertEqual(body["biz_opaque_callback_data"], f"run={run};step=send")
		result = output(run)
		row = frappe.get_doc("WhatsApp Message", result["message"])
		self.assertEqual((row.wamid, row.status, row.direction), (result["wamid"], "Sent", "Outbound"))
		self.assertEqual((row.run, row.step_id, row.idempotency_key), (run, "send", f"{run}:send:1"))
		self.assertEqual(row.account, self.account.name)
		self.assertEqual(self.graph.requests[0].authorization, "Bearer EAAG-test-access-token-0123456789")

	def test_the_contacts_language_is_used_when_the_step_gives_none(self):
		conversations.ensure(CONTACT, language="de")
		payload = {**TEMPLATE_SEND, "language": ""}
		start(one_step(payload), run_name="R")
		self.assertEqual(self.sent()[0]["template"]["language"], {"code": "de"})

	def test_retries_and_re_advances_never_send_twice(self):
		template = one_step(TEMPLATE_SEND)
		run = start(template, run_name="R1")
		doc = frappe.get_doc("Flow Run", run)
		call = StepCall(
			run=doc,
			step=Step(id="send", kind="send_whatsapp", payload=TEMPLATE_SEND),
			payload={**TEMPLATE_SEND, "to": CONTACT, "language": "en", "parameters": ["R1", "x"]},
			context={"now": now_datetime()},
			attempt=2,
			idempotency_key=f"{run}:send:1",
			dry_run=False,
			host=None,
		)
		again = send_whatsapp(call)
		self.assertTrue(again["already_sent"])
		self.assertEqual(again["wamid"], output(run)["wamid"])
		# the database row is gone (a rolled-back transaction): the Redis marker still knows
		frappe.db.delete("WhatsApp Message", {"idempotency_key": f"{run}:send:1"})
		self.assertEqual(send_whatsapp(call)["wamid"], output(run)["wamid"])
		self.assertEqual(len(self.sent()), 1)

	def test_a_throttled_send_retries_and_sends_once(self):
		self.graph.fail_next(3, status=400, code=130429, retry_after=0)  # the client's own three attempts
		template = one_step(TEMPLATE_SEND, retry={"max_attempts": 3, "backoff_seconds": 60})
		run = start(template, run_name="R")
		self.assertEqual(state(run)["send"]["status"], "scheduled")
		self.assertIn("130429", error(run))
		row = frappe.db.get_value("WhatsApp Message", {"run": run}, ["status", "error_code"], as_dict=True)
		self.assertEqual((row.status, row.error_code), ("Failed", 130429))
		runtime.advance_run(run, now=add_to_date(now_datetime(), minutes=5))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(frappe.db.count("WhatsApp Message", {"run": run}), 1)
		self.assertEqual(frappe.db.get_value("WhatsApp Message", {"run": run}, "status"), "Sent")
		self.assertEqual(len([r for r in self.graph.requests if r.path.endswith("/messages")]), 4)

	def test_free_form_outside_the_window_is_a_clear_step_error(self):
		run = start(one_step({"to": "{{ variables.phone }}", "mode": "text", "text": "Hello"}))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("never written", error(run))
		self.assertIn("24 hours", error(run))
		self.assertEqual(self.sent(), [])

	def test_free_form_inside_the_window_is_sent(self):
		open_window(at=add_to_date(now_datetime(), hours=-23))
		run = start(one_step({"to": "{{ variables.phone }}", "mode": "text", "text": "Hello"}))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(self.sent()[0]["text"]["body"], "Hello")
		self.assertTrue(conversation().last_outbound_at)

	def test_a_window_opened_on_another_number_does_not_count(self):
		other = make_account(self.graph, "WA Test Other", phone_number_id="222", is_default=0)
		open_window(account=other.name)
		run = start(
			one_step(
				{"to": "{{ variables.phone }}", "mode": "text", "text": "Hi", "account": self.account.name}
			)
		)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")

	def test_outside_the_window_the_fallback_template_is_sent(self):
		payload = {
			"to": "{{ variables.phone }}",
			"mode": "text",
			"text": "Your order shipped",
			"fallback_template": {"template": "order_update_v1", "language": "en", "parameters": ["shipped"]},
		}
		run = start(one_step(payload))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertTrue(output(run)["fallback"])
		self.assertEqual(self.sent()[0]["template"]["name"], "order_update_v1")

	def test_meta_window_error_falls_back_or_fails_clearly(self):
		open_window()
		self.graph.fail_next(1, status=400, code=131047)
		payload = {
			"to": "{{ variables.phone }}",
			"mode": "text",
			"text": "Hi",
			"fallback_template": {"template": "reopen_v1", "language": "en"},
		}
		run = start(one_step(payload))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual([m["type"] for m in self.sent()], ["text", "template"])
		self.graph.fail_next(1, status=400, code=131047)
		failed = start(one_step({"to": "{{ variables.phone }}", "mode": "text", "text": "Hi"}))
		self.assertEqual(frappe.db.get_value("Flow Run", failed, "status"), "Failed")
		self.assertIn("131047", error(failed))
		self.assertEqual(frappe.db.get_value("WhatsApp Message", {"run": failed}, "error_code"), 131047)

	def test_a_late_window_closed_report_sends_the_fallback_once_and_is_logged_on_the_run(self):
		from flow_automation.tests.whatsapp_utils import deliver, status_update

		open_window()
		payload = {
			"to": "{{ variables.phone }}",
			"mode": "text",
			"text": "Hi",
			"fallback_template": {"template": "reopen_v1", "language": "en"},
		}
		run = start(one_step(payload))
		wamid = output(run)["wamid"]
		self.assertEqual([m["type"] for m in self.sent()], ["text"])
		# Meta accepted the text, then reports the window was closed after all
		for _ in range(2):  # a redelivered report changes nothing
			self.assertEqual(deliver(status_update(wamid, "failed", code=131047)), (200, "OK"))
		self.assertEqual([m["type"] for m in self.sent()], ["text", "template"])
		self.assertEqual(self.sent()[1]["template"]["name"], "reopen_v1")
		logs = frappe.get_all(
			"Flow Step Log", filters={"run": run, "status": "Failed"}, fields=["step_id", "error"]
		)
		self.assertEqual(len(logs), 2)
		self.assertEqual({log.step_id for log in logs}, {"send"})
		self.assertIn("131047", logs[0].error)
		self.assertIn("sent the fallback template instead", logs[0].error)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")

	def test_a_late_failure_without_fallback_is_logged_on_the_run(self):
		from flow_automation.tests.whatsapp_utils import deliver, status_update

		open_window()
		run = start(one_step({"to": "{{ variables.phone }}", "mode": "text", "text": "Hi"}))
		deliver(status_update(output(run)["wamid"], "failed", code=131049))
		(log,) = frappe.get_all("Flow Step Log", filters={"run": run, "status": "Failed"}, fields=["error"])
		self.assertIn("131049", log.error)
		self.assertEqual(len(self.sent()), 1)

	def test_undeliverable_marks_the_contact_and_later_sends_fail_fast(self):
		self.graph.fail_next(1, status=400, code=131026)
		run = start(one_step(TEMPLATE_SEND), run_name="R")
		self.assertIn("131026", error(run))
		self.assertEqual(conversation().undeliverable, 1)
		second = start(one_step(TEMPLATE_SEND), run_name="R2")
		self.assertIn("undeliverable", error(second))
		self.assertEqual(len(self.sent()), 1)

	def test_opted_out_contacts_get_nothing_and_the_run_goes_on(self):
		conversations.ensure(CONTACT)
		conversations.set_opted_out(CONTACT, True)
		template = make_template(
			[
				{"id": "send", "kind": "send_whatsapp", "payload": TEMPLATE_SEND},
				{
					"id": "after",
					"kind": "set_variables",
					"depends_on": ["send"],
					"payload": {"variables": {"x": "1"}},
				},
			],
			options={"max_consecutive_failures": 1},
		).name
		run = start(template, run_name="R")
		# the contact's choice, not the flow's failure: nothing sent, no alert, no circuit breaker
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", error(run))
		self.assertEqual(
			output(run),
			{
				"sent": False,
				"reason": "opted_out",
				"to": CONTACT,
				"note": f"{CONTACT} opted out of WhatsApp messages",
			},
		)
		self.assertEqual(state(run)["after"]["status"], "done")
		self.assertEqual(self.sent(), [])
		self.assertEqual(
			frappe.db.get_value("Flow Template", template, ["enabled", "consecutive_failures"]), (1, 0)
		)
		self.assertFalse(frappe.db.exists("WhatsApp Message", {"run": run}))

	def test_unknown_recipients_can_be_refused(self):
		payload = {**TEMPLATE_SEND, "only_known_contacts": True}
		run = start(one_step(payload), run_name="R")
		self.assertIn("belongs to no Contact", error(run))
		contact = frappe.get_doc(
			{"doctype": "Contact", "first_name": "Sheena", "phone_nos": [{"phone": "+1 (650) 555-1234"}]}
		).insert()
		run = start(one_step(payload), run_name="R")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", error(run))
		self.assertTrue(contact.name)

	def test_dedup_window_sends_once_per_recipient_and_content(self):
		payload = {**TEMPLATE_SEND, "dedup_minutes": 60}
		template = one_step(payload)
		first = start(template, run_name="RUN-1")
		second = start(template, run_name="RUN-1")
		self.assertTrue(output(second)["deduplicated"])
		self.assertEqual(output(second)["wamid"], output(first)["wamid"])
		start(template, run_name="RUN-2")  # other parameters: another message
		self.assertEqual(len(self.sent()), 2)
		with self.freeze_time(add_to_date(now_datetime(), minutes=61)):
			start(template, run_name="RUN-1")
		self.assertEqual(len(self.sent()), 3)

	def test_national_numbers_use_the_accounts_country_and_bad_numbers_fail(self):
		self.account.db_set("default_country", "IN")
		from flow_automation.whatsapp import accounts

		accounts.clear_account_cache()
		start(one_step(TEMPLATE_SEND), phone="098765 43210", run_name="R")
		self.assertEqual(self.sent()[0]["to"], "919876543210")
		run = start(one_step(TEMPLATE_SEND), phone="not a number", run_name="R")
		self.assertIn("to:", error(run))

	def test_account_choice_explicit_then_pinned_then_default(self):
		other = make_account(self.graph, "WA Test Other", phone_number_id="222", is_default=0)
		start(one_step({**TEMPLATE_SEND, "account": other.name}), run_name="R")
		self.assertIn("/222/messages", self.graph.requests[-1].path)
		conversations.update(CONTACT, {"account": other.name})
		start(one_step(TEMPLATE_SEND), run_name="R2")
		self.assertIn("/222/messages", self.graph.requests[-1].path)
		run = start(one_step({**TEMPLATE_SEND, "account": "Nope"}), run_name="R3")
		self.assertIn("does not exist", error(run))

	def test_synced_templates_catch_unapproved_names_before_meta_does(self):
		frappe.get_doc(
			{
				"doctype": "WhatsApp Template",
				"account": self.account.name,
				"template_name": "production_run_assigned_v3",
				"language": "en",
				"status": "PAUSED",
			}
		).insert()
		run = start(one_step(TEMPLATE_SEND), run_name="R")
		self.assertIn("PAUSED", error(run))
		self.assertEqual(self.sent(), [])

	def test_media_from_a_site_file_is_uploaded_then_sent_by_id(self):
		open_window()
		file = frappe.get_doc(
			{"doctype": "File", "file_name": "catalog.pdf", "content": b"%PDF-1.4 test", "is_private": 1}
		).insert()
		run = start(
			one_step(
				{
					"to": "{{ variables.phone }}",
					"mode": "document",
					"file": file.file_url,
					"filename": "catalog.pdf",
				}
			)
		)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", error(run))
		upload = next(r for r in self.graph.requests if r.path.endswith("/media"))
		self.assertEqual(upload.form["file"][1], b"%PDF-1.4 test")
		self.assertTrue(self.sent()[0]["document"]["id"])

	def test_dry_run_records_the_message_and_sends_nothing(self):
		template = one_step(TEMPLATE_SEND)
		result = runtime.simulate_template(template, variables={"phone": CONTACT, "run_name": "R"})
		self.assertEqual(result.status, "Completed")
		[call] = result.calls
		self.assertEqual(call["action"], "whatsapp")
		self.assertEqual(call["message"]["template"]["name"], "production_run_assigned_v3")
		self.assertEqual(self.sent(), [])
		self.assertEqual(frappe.db.count("WhatsApp Message", {"idempotency_key": ("like", "dry-run-%")}), 0)


class TestPacing(WhatsAppTestCase):
	def test_per_number_rate_waits_for_the_next_second(self):
		clock = [1000.2]
		sleeps: list[float] = []

		def sleep(seconds):
			sleeps.append(round(seconds, 3))
			clock[0] += seconds

		number = f"pacing-{frappe.generate_hash(length=6)}"
		for _ in range(3):
			pacing.wait_for_turn(
				number, "+1", per_second=2, gap_seconds=0, clock=lambda: clock[0], sleep=sleep
			)
		self.assertEqual(sleeps, [0.8])

	def test_per_contact_gap_is_shared_through_redis(self):
		number = f"pacing-{frappe.generate_hash(length=6)}"
		self.assertEqual(pacing.wait_for_turn(number, "+1", per_second=80, gap_seconds=0.3), 0)
		waited = pacing.wait_for_turn(number, "+1", per_second=80, gap_seconds=0.3)
		self.assertGreater(waited, 0.1)
		self.assertEqual(pacing.wait_for_turn(number, "+2", per_second=80, gap_seconds=0.3), 0)
		pacing.wait_for_turn(number, "+3", per_second=80, gap_seconds=30)
		with self.assertRaises(pacing.Throttled):
			pacing.wait_for_turn(number, "+3", per_second=80, gap_seconds=30, max_wait=0.5)

	def test_sends_to_one_contact_are_spaced(self):
		self.account.db_set("recipient_gap_seconds", 0.4)
		from flow_automation.whatsapp import accounts

		accounts.clear_account_cache()
		started = now_datetime()
		for key in ("a", "b"):
			send(
				{"to": CONTACT, "mode": "template", "template": "hello_v1"},
				Delivery(f"pacing-{frappe.generate_hash(length=6)}-{key}"),
			)
		self.assertEqual(len(self.sent()), 2)
		self.assertGreaterEqual((now_datetime() - started).total_seconds(), 0.35)
		self.assertTrue(json.dumps(self.sent()))
