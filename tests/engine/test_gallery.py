"""The gallery of system templates (`fixtures/`): every one validates and simulates.

Each fixture has a sample here (a document, answers, a start time) and what its dry run must
do; a fixture without a sample fails the test, so a new template cannot ship unsimulated.
The plain-Frappe ones also run end to end on a site (flow_automation/tests/test_gallery.py).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from flow_automation.engine.definition import extract_definition
from flow_automation.engine.simulator import simulate
from flow_automation.engine.validation import parse_definition, validate_definition

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
START = dt.datetime(2026, 12, 1, 9, 0)  # a Tuesday
PHONE = "+15551234567"

TODO = {
	"doctype": "ToDo",
	"name": "TD-1",
	"status": "Open",
	"date": "2026-11-28",
	"description": "Call ACME back",
	"allocated_to": "ana@example.com",
	"assigned_by": "bo@example.com",
	"owner": "bo@example.com",
}
USER = {
	"doctype": "User",
	"name": "ana@example.com",
	"email": "ana@example.com",
	"first_name": "Ana",
	"full_name": "Ana Lima",
	"user_type": "System User",
	"mobile_no": PHONE,
	"birth_date": "1990-12-01",
}
CONTACT = {"doctype": "Contact", "name": "Ana Lima", "first_name": "Ana", "mobile_no": PHONE}
LEAD = {
	"doctype": "Lead",
	"name": "CRM-LEAD-0001",
	"lead_name": "Lee Park",
	"first_name": "Lee",
	"email_id": "lee@example.com",
	"status": "Lead",
	"lead_owner": "sales@example.com",
	"owner": "sales@example.com",
}
APPOINTMENT = {
	"doctype": "Appointment",
	"name": "APP-0001",
	"status": "Open",
	"customer_name": "Cy",
	"customer_phone_number": PHONE,
	"scheduled_time": "2026-12-02 10:00:00",
	"appointment_with": "User",
}

# file -> (simulate keyword arguments, steps that must execute, final status)
SAMPLES: dict[str, tuple[dict[str, Any], list[str], str]] = {
	"appointment_reminder.json": (
		{"doc": APPOINTMENT, "answers": {"remind": "reschedule"}},
		["remind", "rebook", "rebook_reply"],
		"Completed",
	),
	"birthday_greeting.json": ({"trigger": {"type": "Schedule"}}, ["birthdays", "greet_each"], "Completed"),
	"birthday_whatsapp.json": ({"doc": USER}, ["greet"], "Completed"),
	"failed_run_digest.json": ({"trigger": {"type": "Schedule"}}, ["failed", "digest"], "Completed"),
	"feedback_survey.json": (
		{"doc": CONTACT, "answers": {"ask": "poor"}},
		["ask", "note_poor", "thanks"],
		"Completed",
	),
	"lead_nurture.json": ({"doc": LEAD}, ["touch_1", "touch_2", "touch_3", "hand_over"], "Completed"),
	"new_user_welcome.json": ({"doc": USER}, ["welcome", "tell_admins"], "Completed"),
	"parallel_campaign_email.json": (
		{"doc": {"doctype": "Contact", "name": "C-1", "first_name": "Ana", "email_id": "ana@example.com"}},
		["hello", "reminder"],
		"Completed",
	),
	"partner_run_dispatcher.json": (
		{
			"doc": {"name": "PR-0001"},
			"trigger": {"type": "Named Event", "event": "production_run.assigned"},
			"variables": {"partner_phone": PHONE, "due_date": "2026-12-03"},
		},
		["route", "assigned"],
		"Completed",
	),
	"quotation_follow_up.json": (
		{
			"doc": {
				"name": "QTN-1",
				"status": "Open",
				"contact_email": "buyer@example.com",
				"grand_total": 100,
			}
		},
		["d3_check", "d3_mail", "d7_check", "d7_mail", "d14_check", "d14_mail"],
		"Completed",
	),
	"todo_overdue_escalation.json": (
		{"trigger": {"type": "Schedule"}},
		["overdue", "remind_each"],
		"Completed",
	),
	"todo_overdue_reminder.json": ({"doc": TODO}, ["remind", "still_open", "escalate"], "Completed"),
	"whatsapp_menu_bot.json": (
		{"contact": {"number": PHONE, "name": "Ana"}, "answers": {"menu": "human"}},
		["menu", "handoff"],
		"Completed",
	),
}

INVOICE = {
	"doctype": "Sales Invoice",
	"name": "ACC-SINV-0001",
	"docstatus": 1,
	"customer_name": "ACME",
	"contact_email": "ap@acme.example",
	"contact_mobile": PHONE,
	"grand_total": 1200,
	"outstanding_amount": 1200,
	"currency": "EUR",
	"due_date": "2026-11-28",
}
SAMPLES.update(
	{
		"overdue_invoice_reminder.json": ({"doc": INVOICE}, ["pdf", "has_mobile", "whatsapp"], "Completed"),
		"payment_receipt.json": (
			{
				"doc": {
					"doctype": "Payment Entry",
					"name": "ACC-PAY-0001",
					"party_name": "ACME",
					"contact_email": "ap@acme.example",
					"paid_amount": 1200,
					"paid_from_account_currency": "EUR",
					"posting_date": "2026-12-01",
				}
			},
			["pdf", "mail"],
			"Completed",
		),
	}
)
OPTIONAL: set[str] = set()


def fixture(name: str) -> dict[str, Any]:
	return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def run(name: str, **overrides: Any):
	data = fixture(name)
	raw, _ = extract_definition(data)
	kwargs = {**SAMPLES[name][0], **overrides}
	return simulate(parse_definition(raw), start=START, **kwargs)


def executed(result) -> list[str]:
	return [e.step_id for e in result.timeline if e.action == "executed"]


def payload_of(result, step_id: str) -> Any:
	return next(e.payload for e in result.timeline if e.step_id == step_id and e.action == "executed")


def test_every_fixture_has_a_sample():
	files = {p.name for p in FIXTURES.glob("*.json")}
	assert len(files) >= 10
	assert files - set(SAMPLES) - OPTIONAL == set(), "add a sample for each new fixture"


def test_every_fixture_says_what_it_is_and_is_a_system_template():
	for path in FIXTURES.glob("*.json"):
		data = json.loads(path.read_text(encoding="utf-8"))
		assert data.get("template_name"), path.name
		assert data.get("description"), path.name
		assert data.get("is_system") is True, path.name
		# a flow that starts on its own ships disabled: an admin turns on what they want
		if data["trigger"]["type"] != "Manual":
			assert data.get("enabled") is False, path.name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_fixture_validates_and_simulates(name):
	raw, _ = extract_definition(fixture(name))
	assert validate_definition(raw) == []
	result = run(name)
	assert result.status == SAMPLES[name][2], (result.status, result.error)
	missing = [s for s in SAMPLES[name][1] if s not in executed(result)]
	assert (
		not missing
	), f"{name}: {missing} did not execute; timeline: {[e.as_dict() for e in result.timeline]}"


def test_todo_escalation_reads_todos_due_before_today_and_reminds_each():
	result = run("todo_overdue_escalation.json")
	filters = payload_of(result, "overdue")["filters"]
	assert ["date", "<", "2026-12-01"] in filters
	assert payload_of(result, "remind_each")["template"] == "ToDo Overdue Reminder"
	assert (FIXTURES / "todo_overdue_reminder.json").exists()


def test_todo_reminder_escalates_to_the_assigner_a_day_later_only_while_open():
	result = run("todo_overdue_reminder.json")
	assert payload_of(result, "remind")["to"] == ["ana@example.com"]
	escalate = next(e for e in result.timeline if e.step_id == "escalate" and e.action == "executed")
	assert escalate.at == START + dt.timedelta(days=1)
	assert escalate.payload["to"] == ["bo@example.com"]
	closed = run("todo_overdue_reminder.json", doc={**TODO, "status": "Closed"})
	assert "escalate" not in executed(closed)
	self_assigned = run("todo_overdue_reminder.json", doc={**TODO, "assigned_by": TODO["allocated_to"]})
	assert "escalate" not in executed(self_assigned)


def test_birthday_greeting_looks_for_todays_month_and_day():
	result = run("birthday_greeting.json")
	# `in` every year's date: Frappe reads any other filter value on a Date field as one date
	[(_, op, dates)] = [f for f in payload_of(result, "birthdays")["filters"] if f[0] == "birth_date"]
	days = dates.split(",")
	assert (op, days[0], days[-1], len(days)) == ("in", "1900-12-01", "2026-12-01", 127)
	assert payload_of(result, "greet_each")["template"] == "Birthday WhatsApp"
	greet = payload_of(run("birthday_whatsapp.json"), "greet")
	assert (greet["to"], greet["template"], greet["parameters"]) == (PHONE, "birthday_greeting", ["Ana"])


def test_failed_run_digest_reads_the_last_24_hours():
	filters = payload_of(run("failed_run_digest.json"), "failed")["filters"]
	assert ["modified", ">=", "2026-11-30 09:00:00"] in filters
	assert ["status", "=", "Failed"] in filters


def test_lead_nurture_stops_once_the_lead_converts():
	result = run("lead_nurture.json", doc={**LEAD, "status": "Converted"})
	assert executed(result)[:2] == ["touch_1", "day_3"]
	assert "touch_2" not in executed(result)
	touches = [
		e.at
		for e in run("lead_nurture.json").timeline
		if e.action == "executed" and e.step_id.startswith("touch")
	]
	assert touches == [START, START + dt.timedelta(days=3), START + dt.timedelta(days=10)]


def test_feedback_survey_notes_each_answer_and_silence():
	for answer in ("great", "okay", "poor"):
		result = run("feedback_survey.json", answers={"ask": answer})
		note = payload_of(result, f"note_{answer}")
		assert note["fields"]["title"] == f"Feedback from Ana: {answer}"
	silent = run("feedback_survey.json", answers={})
	assert "no_answer" in executed(silent)
	assert "thanks" not in executed(silent)


def test_appointment_reminder_confirms_or_asks_for_a_new_time():
	confirmed = run("appointment_reminder.json", answers={"remind": "confirm"})
	assert "confirmed" in executed(confirmed) and "rebook" not in executed(confirmed)
	todo = payload_of(run("appointment_reminder.json"), "rebook")["fields"]
	assert todo["reference_name"] == "APP-0001"
	assert "asks to reschedule" in todo["description"]


def test_overdue_invoice_goes_on_whatsapp_with_its_pdf_or_by_email():
	result = run("overdue_invoice_reminder.json")
	whatsapp = payload_of(result, "whatsapp")
	assert (whatsapp["mode"], whatsapp["file"]) == ("document", "/private/files/ACC-SINV-0001.pdf")
	no_mobile = run("overdue_invoice_reminder.json", doc={**INVOICE, "contact_mobile": ""})
	mail = payload_of(no_mobile, "email")
	assert mail["attachments"] == ["/private/files/ACC-SINV-0001.pdf"]
	assert "whatsapp" not in executed(no_mobile)


def test_payment_receipt_emails_the_pdf():
	mail = payload_of(run("payment_receipt.json"), "mail")
	assert mail["attachments"] == ["/private/files/Receipt ACC-PAY-0001.pdf"]
	assert mail["subject"] == "Payment received: 1200 EUR"
