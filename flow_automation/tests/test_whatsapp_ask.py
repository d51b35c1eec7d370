"""`ask` on a real site, and the shared WhatsApp example flows end to end (loopback Graph API).

The example flows are read from the shared examples (`../shared/examples/flows` from the
project root) when present (the spec), else from the identical copies in tests/flows/.
"""

from __future__ import annotations

import json
from pathlib import Path

import frappe
from frappe.utils import add_to_date, get_datetime

from flow_automation import runtime
from flow_automation.portable import template_values_from_export
from flow_automation.scheduler import run_due
from flow_automation.tests.utils import failing_step, make_template, state, step_status
from flow_automation.tests.whatsapp_utils import (
	CONTACT,
	WhatsAppTestCase,
	conversation,
	deliver,
	inbound_message,
	open_window,
	status_update,
)
from flow_automation.triggers import dispatch_event

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "examples" / "flows"
COPIES = Path(__file__).resolve().parent / "flows"
T0 = "2026-04-01 09:00:00"

SURVEY = {
	"to": "{{ contact.number }}",
	"text": "How was it?",
	"buttons": [{"id": "good", "title": "Great"}, {"id": "bad", "title": "Not good"}],
	"save_as": "answer",
	"timeout_hours": 2,
}


def load_example(name: str) -> dict:
	path = SHARED / name if (SHARED / name).exists() else COPIES / name
	return json.loads(path.read_text())


def template_from_example(name: str, **fields):
	values = template_values_from_export(load_example(name))
	values["template_name"] = f"{values['template_name']} {frappe.generate_hash(length=6)}"
	return frappe.get_doc({"doctype": "Flow Template", **values, **fields}).insert()


def ask_flow(payload: dict | None = None, **step) -> str:
	steps = [
		{"id": "q", "kind": "ask", "payload": payload or SURVEY, **step},
		{
			"id": "yes",
			"kind": "set_variables",
			"parent_id": "q",
			"branch": "good",
			"payload": {"variables": {"path": "good"}},
		},
		{
			"id": "no",
			"kind": "set_variables",
			"parent_id": "q",
			"branch": "bad",
			"payload": {"variables": {"path": "bad"}},
		},
		{
			"id": "late",
			"kind": "set_variables",
			"parent_id": "q",
			"branch": "timeout",
			"payload": {"variables": {"path": "timeout"}},
		},
		{
			"id": "confused",
			"kind": "set_variables",
			"parent_id": "q",
			"branch": "invalid",
			"payload": {"variables": {"path": "invalid"}},
		},
	]
	return make_template(steps).name


def start(template: str) -> str:
	return runtime.start_run(template, contact=CONTACT, advance="now")


def run_status(run: str) -> str:
	return frappe.db.get_value("Flow Run", run, "status")


def variables(run: str) -> dict:
	return json.loads(frappe.db.get_value("Flow Run", run, "variables") or "{}")


class TestAsk(WhatsAppTestCase):
	def test_ask_sends_the_question_waits_and_a_button_reply_resumes_it(self):
		open_window()
		run = start(ask_flow())
		self.assertEqual(run_status(run), "Waiting")
		[question] = self.sent()
		self.assertEqual(question["interactive"]["type"], "button")
		pointer = conversation()
		self.assertEqual((pointer.waiting_run, pointer.waiting_step), (run, "q"))
		deliver(inbound_message(button=("bad", "Not good")))
		self.assertEqual(run_status(run), "Completed")
		self.assertEqual(variables(run), {"answer": "bad", "path": "bad"})
		self.assertEqual(state(run)["q"]["branch"], "bad")
		self.assertIsNone(conversation().waiting_run)

	def test_a_reply_reaches_a_sub_flows_question_after_its_parent_failed(self):
		open_window()
		child = ask_flow()
		parent = make_template(
			[
				{"id": "sub", "kind": "start_flow", "payload": {"template": child, "wait": True}},
				failing_step(),
			]
		).name
		run = start(parent)
		child_run = frappe.db.get_value("Flow Run", {"parent_run": run}, "name")
		self.assertEqual((run_status(run), run_status(child_run)), ("Failed", "Waiting"))
		self.assertEqual(
			conversation().waiting_run, child_run
		)  # the parent's failure released nothing of the child
		deliver(inbound_message(button=("good", "Great")))
		self.assertEqual(run_status(child_run), "Completed")
		self.assertEqual(variables(child_run), {"answer": "good", "path": "good"})
		self.assertEqual(run_status(run), "Failed")
		self.assertIsNone(conversation().waiting_run)

	def test_a_typed_title_counts_and_the_reply_row_points_at_the_run(self):
		open_window()
		run = start(ask_flow())
		body = inbound_message("great")
		deliver(body)
		self.assertEqual(variables(run)["path"], "good")
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.assertEqual(
			frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, ["run", "step_id"]), (run, "q")
		)

	def test_invalid_answers_are_asked_again_then_take_the_invalid_branch(self):
		open_window()
		payload = {
			"to": "{{ contact.number }}",
			"text": "Order number?",
			"expect": {"regex": r"^SO-\d{4,}$", "retries": 1, "retry_text": "Not an order number."},
			"save_as": "order",
		}
		run = make_template(
			[
				{"id": "q", "kind": "ask", "payload": payload},
				{
					"id": "ok",
					"kind": "set_variables",
					"parent_id": "q",
					"branch": "answered",
					"payload": {"variables": {"path": "ok"}},
				},
				{
					"id": "bad",
					"kind": "set_variables",
					"parent_id": "q",
					"branch": "invalid",
					"payload": {"variables": {"path": "invalid"}},
				},
			]
		).name
		run = start(run)
		deliver(inbound_message("hello?"))
		self.assertEqual(run_status(run), "Waiting")
		self.assertEqual(self.sent()[-1]["text"]["body"], "Not an order number.")
		deliver(inbound_message("still no"))
		self.assertEqual(run_status(run), "Completed")
		self.assertEqual(variables(run), {"order": None, "path": "invalid"})
		self.assertEqual(len(self.sent()), 2)  # the question and one re-ask

	def test_no_answer_takes_the_timeout_branch_and_frees_the_contact(self):
		with self.freeze_time(T0):
			open_window()
			run = start(ask_flow())
		with self.freeze_time(add_to_date(get_datetime(T0), hours=1)):
			run_due()
			self.assertEqual(run_status(run), "Waiting")
		with self.freeze_time(add_to_date(get_datetime(T0), hours=2, seconds=1)):
			run_due()
			self.assertEqual(run_status(run), "Completed")
			self.assertEqual(variables(run)["path"], "timeout")
			self.assertIsNone(conversation().waiting_run)
			# a late answer is not taken for the finished question
			deliver(inbound_message("good"))
			self.assertEqual(variables(run)["path"], "timeout")

	def test_the_first_of_reply_and_timeout_wins(self):
		with self.freeze_time(T0):
			open_window()
			run = start(ask_flow())
			deliver(inbound_message(button=("good", "Great")))
		with self.freeze_time(add_to_date(get_datetime(T0), hours=3)):
			run_due()  # the timeout row was cancelled with the answer
		self.assertEqual(variables(run)["path"], "good")
		self.assertEqual(state(run)["q"]["branch"], "good")

	def test_the_newest_question_gets_the_reply_and_the_older_times_out_cleanly(self):
		with self.freeze_time(T0):
			open_window()
			older = start(ask_flow())
		with self.freeze_time(add_to_date(get_datetime(T0), minutes=10)):
			newer = start(ask_flow())
			deliver(inbound_message(button=("good", "Great")))
			self.assertEqual(run_status(newer), "Completed")
			self.assertEqual(run_status(older), "Waiting")
		with self.freeze_time(add_to_date(get_datetime(T0), hours=2, minutes=1)):
			run_due()
		self.assertEqual(variables(older)["path"], "timeout")
		self.assertEqual(variables(newer)["path"], "good")

	def test_an_older_question_timing_out_leaves_the_newer_pointer_alone(self):
		with self.freeze_time(T0):
			open_window()
			older = start(ask_flow())
		with self.freeze_time(add_to_date(get_datetime(T0), hours=1)):
			newer = start(ask_flow({**SURVEY, "timeout_hours": 5}))
		with self.freeze_time(add_to_date(get_datetime(T0), hours=2, minutes=1)):
			run_due()
			self.assertEqual(run_status(older), "Completed")
			self.assertEqual(conversation().waiting_run, newer)
			deliver(inbound_message(button=("bad", "Not good")))
		self.assertEqual(variables(newer)["path"], "bad")

	def test_a_question_outside_the_window_fails_clearly(self):
		run = start(ask_flow())
		self.assertEqual(run_status(run), "Failed")
		self.assertIn("24 hours", state(run)["q"]["error"])
		self.assertIsNone((conversation() or frappe._dict()).get("waiting_run"))

	def test_retries_of_a_failed_question_do_not_double_send(self):
		open_window()
		self.graph.fail_next(1, status=500, code=131000, retry_after=0)
		run = start(ask_flow())  # the client retries the 5xx itself
		self.assertEqual(run_status(run), "Waiting")
		self.assertEqual(len(self.sent()), 2)
		self.assertEqual(frappe.db.count("WhatsApp Message", {"run": run}), 1)

	def test_dry_run_of_an_ask_records_the_question_and_the_answer_path(self):
		open_window()
		result = runtime.simulate_template(ask_flow(), answers={"q": "good"}, contact={"number": CONTACT})
		self.assertEqual(result.status, "Completed")
		self.assertEqual(result.variables["path"], "good")
		self.assertEqual(self.sent(), [])
		self.assertEqual(result.calls[0]["message"]["interactive"]["type"], "button")


class TestExampleFlows(WhatsAppTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.created_customer_doctype = ensure_customer_doctype()

	@classmethod
	def tearDownClass(cls):
		if cls.created_customer_doctype:
			frappe.delete_doc("DocType", "Customer", force=True, ignore_permissions=True)
			frappe.db.commit()
		super().tearDownClass()

	def test_keyword_menu_bot_order_path_with_a_wrong_then_right_order_number(self):
		template = template_from_example("keyword_menu_bot.json")
		deliver(inbound_message("Hi"))
		[run] = frappe.get_all("Flow Run", filters={"template": template.name}, pluck="name")
		[menu] = self.sent()
		self.assertEqual(menu["interactive"]["type"], "list")
		self.assertEqual(menu["interactive"]["action"]["button"], "Options")
		deliver(inbound_message(row=("order", "Order status")))
		self.assertEqual(self.sent()[-1]["text"]["body"], "Please type your order number (e.g. SO-0001).")
		deliver(inbound_message("my order please"))
		self.assertEqual(self.sent()[-1]["text"]["body"], "That doesn't look like an order number.")
		deliver(inbound_message("SO-12345"))
		self.assertEqual(run_status(run), "Completed")
		self.assertEqual(variables(run), {"choice": "order", "order_no": "SO-12345"})
		self.assertEqual(
			self.sent()[-1]["text"]["body"], "We're checking order SO-12345 — a colleague will reply shortly."
		)
		self.assertEqual(step_status(run)["catalog_pdf"], "skipped")

	def test_keyword_menu_bot_catalog_human_and_timeout_paths(self):
		template = template_from_example("keyword_menu_bot.json")
		deliver(inbound_message("menu"))
		deliver(inbound_message(row=("catalog", "Catalog")))
		document = self.sent()[-1]
		self.assertEqual(document["document"]["link"], "https://example.com/catalog.pdf")
		self.assertEqual(document["document"]["filename"], "catalog.pdf")
		deliver(inbound_message("HELLO", name="Sheena"))
		deliver(inbound_message(row=("human", "Talk to a person")))
		runs = frappe.get_all(
			"Flow Run", filters={"template": template.name}, pluck="name", order_by="creation"
		)
		self.assertEqual(len(runs), 2)
		todo = state(runs[1])["handoff"]["output"]["name"]
		self.assertEqual(
			frappe.db.get_value("ToDo", todo, "description"),
			"WhatsApp chat requested by Sheena (+16505551234)",
		)
		with self.freeze_time(T0):
			body = inbound_message("hello", at=get_datetime(T0))
			deliver(body)
		with self.freeze_time(add_to_date(get_datetime(T0), minutes=16)):
			run_due()
		last = frappe.db.get_value(
			"WhatsApp Message", {"wamid": body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]}, "run"
		)
		self.assertEqual(state(last)["menu"]["branch"], "timeout")
		self.assertEqual(self.sent()[-1]["text"]["body"], "Type 'menu' any time to start again.")

	def test_partner_run_dispatcher_sends_per_event_with_dedup(self):
		template = template_from_example("partner_run_dispatcher.json")
		production_run = frappe.get_doc({"doctype": "ToDo", "description": "Production run 42"}).insert()
		partner = {
			"partner_phone": "+55 11 98765-4321",
			"partner_language": "pt_BR",
			"due_date": "2026-04-10",
		}
		doc = {"doctype": "ToDo", "name": production_run.name}
		[first] = dispatch_event("production_run.assigned", doc=doc, variables=partner)
		[second] = dispatch_event("production_run.assigned", doc=doc, variables=partner)
		[cancelled] = dispatch_event("production_run.cancelled", doc=doc, variables=partner)
		self.assertEqual([run_status(r) for r in (first, second, cancelled)], ["Completed"] * 3)
		sent = self.sent()
		self.assertEqual(
			[m["template"]["name"] for m in sent],
			["production_run_assigned_v3", "production_run_cancelled_v3"],
		)
		assigned = sent[0]
		self.assertEqual(assigned["to"], "5511987654321")
		self.assertEqual(assigned["template"]["language"], {"code": "pt_BR"})
		self.assertEqual(
			[p["text"] for p in assigned["template"]["components"][0]["parameters"]],
			[production_run.name, "2026-04-10"],
		)
		self.assertEqual(
			[b["parameters"][0]["payload"] for b in assigned["template"]["components"][1:]],
			["accept", "decline"],
		)
		self.assertTrue(state(second)["assigned"]["output"]["deduplicated"])
		self.assertEqual(state(first)["route"]["branch"], "production_run.assigned")
		# delivery reports and the partner's tap on "accept" land on the stored message
		wamid = state(first)["assigned"]["output"]["wamid"]
		deliver(status_update(wamid, "delivered", recipient="+5511987654321"))
		deliver(status_update(wamid, "read", recipient="+5511987654321"))
		self.assertEqual(frappe.db.get_value("WhatsApp Message", {"wamid": wamid}, "status"), "Read")
		self.assertEqual(template.name, frappe.db.get_value("Flow Run", first, "template"))

	def test_customer_onboarding_end_to_end(self):
		template = template_from_example("customer_onboarding.json")
		with self.freeze_time(T0):
			customer = frappe.get_doc(
				{
					"doctype": "Customer",
					"customer_name": "Ana Lima",
					"mobile_no": "+16505551234",
					"language": "pt_BR",
				}
			).insert()
			[run] = frappe.get_all("Flow Run", filters={"template": template.name}, pluck="name")
			self.assertEqual(run_status(run), "Waiting")
			[welcome] = self.sent()
			self.assertEqual(welcome["template"]["name"], "customer_welcome_v1")
			self.assertEqual(welcome["template"]["language"], {"code": "pt_BR"})
			self.assertEqual(welcome["template"]["components"][0]["parameters"][0]["text"], "Ana Lima")
			self.assertTrue(
				frappe.db.exists(
					"ToDo",
					{
						"reference_type": "Customer",
						"reference_name": customer.name,
						"allocated_to": "Administrator",
					},
				)
			)
		with self.freeze_time(add_to_date(get_datetime(T0), hours=1)):
			deliver(
				inbound_message("Obrigada!", at=add_to_date(get_datetime(T0), hours=1))
			)  # opens the window
		with self.freeze_time(add_to_date(get_datetime(T0), hours=24, seconds=1)):
			run_due()
			survey = self.sent()[-1]
			self.assertEqual(
				survey["interactive"]["body"]["text"], "Hi Ana Lima, how was your first day with us?"
			)
			deliver(
				inbound_message(
					button=("good", "Great"), at=add_to_date(get_datetime(T0), hours=24, seconds=1)
				)
			)
		self.assertEqual(self.sent()[-1]["text"]["body"], "Thank you!")
		self.assertEqual(variables(run)["survey_answer"], "good")
		statuses = step_status(run)
		self.assertEqual(
			(statuses["thanks"], statuses["complaint"], statuses["no_answer"]), ("done", "skipped", "skipped")
		)
		self.assertEqual(statuses["renewal"], "scheduled")  # 330 days after the welcome
		self.assertEqual(run_status(run), "Waiting")

	def test_customer_onboarding_without_an_answer_tells_the_owner(self):
		template = template_from_example("customer_onboarding.json")
		with self.freeze_time(T0):
			frappe.get_doc(
				{"doctype": "Customer", "customer_name": "Bo Chen", "mobile_no": "+16505551234"}
			).insert()
			[run] = frappe.get_all("Flow Run", filters={"template": template.name}, pluck="name")
			self.assertEqual(self.sent()[0]["template"]["language"], {"code": "en"})
		with self.freeze_time(add_to_date(get_datetime(T0), hours=1)):
			deliver(inbound_message("ok", at=add_to_date(get_datetime(T0), hours=1)))
		with self.freeze_time(add_to_date(get_datetime(T0), hours=24, seconds=1)):
			run_due()
		with self.freeze_time(add_to_date(get_datetime(T0), hours=72, seconds=2)):
			run_due()
		self.assertEqual(state(run)["survey"]["branch"], "timeout")
		self.assertEqual(step_status(run)["no_answer"], "done")
		self.assertTrue(
			frappe.db.exists(
				"Notification Log", {"subject": ("like", "%Bo Chen did not answer the onboarding survey%")}
			)
		)


def ensure_customer_doctype() -> bool:
	"""ERPNext's Customer, reduced to what the onboarding example reads (created once, committed)."""
	if frappe.db.exists("DocType", "Customer"):
		return False
	frappe.get_doc(
		{
			"doctype": "DocType",
			"name": "Customer",
			"module": "Custom",
			"custom": 1,
			"autoname": "hash",
			"fields": [
				{"fieldname": "customer_name", "fieldtype": "Data", "label": "Customer Name"},
				{"fieldname": "mobile_no", "fieldtype": "Data", "label": "Mobile No"},
				{"fieldname": "language", "fieldtype": "Data", "label": "Language"},
			],
			"permissions": [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}],
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	return True
