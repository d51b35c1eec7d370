"""Split steps and quiet hours on a real site: a Days After trigger that fires at midnight
holds its email until the template's window opens (a Flow Step Pending row) and the minute
cron sends it then; splits keep their branch per run and the builder counts each branch."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from zoneinfo import ZoneInfo

import frappe
from frappe.utils import get_system_timezone, strip_html

from flow_automation import builder, runtime, triggers
from flow_automation.portable import InvalidFlowDefinition, export_values, template_values_from_export
from flow_automation.scheduler import run_due
from flow_automation.tests.utils import (
	FlowTestCase,
	logs,
	make_template,
	make_todo,
	pending,
	runs_of,
	state,
	unique,
)

MON_TO_SAT = {
	"quiet_hours_monday": 1,
	"quiet_hours_tuesday": 1,
	"quiet_hours_wednesday": 1,
	"quiet_hours_thursday": 1,
	"quiet_hours_friday": 1,
	"quiet_hours_saturday": 1,
	"quiet_hours_sunday": 0,
}
OFFICE_HOURS = {
	"quiet_hours_enabled": 1,
	"quiet_hours_start": "09:00:00",
	"quiet_hours_end": "19:00:00",
	"quiet_hours_timezone": "Site",
	**MON_TO_SAT,
}
DAYS_AFTER = {
	"type": "Document Event",
	"doctype": "ToDo",
	"event": "Days After",
	"date_field": "date",
	"days": 1,
	"time": "00:00:00",
}


def email_step(step_id: str = "mail", **extra) -> dict:
	return {
		"id": step_id,
		"kind": "notify",
		"payload": {
			"channel": "email",
			"to": ["customer@example.com"],
			"subject": f"{step_id}: {{{{ doc.description }}}} is overdue",
			"body": "Please pay",
		},
		**extra,
	}


def message_of(error: Exception) -> str:
	"""An error's message as the user reads it (no HTML, entities decoded)."""
	return html.unescape(strip_html(str(error)))


def emails_about(todo) -> list[str]:
	return [
		row.message
		for row in frappe.get_all(
			"Email Queue",
			filters={"reference_doctype": "ToDo", "reference_name": todo.name},
			fields=["message"],
			order_by="creation asc",
		)
	]


SPLIT_STEPS = [
	{
		"id": "offer",
		"kind": "split",
		"payload": {"branches": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]},
	},
	{
		"id": "note_a",
		"kind": "set_variables",
		"parent_id": "offer",
		"branch": "a",
		"payload": {"variables": {"variant": "a"}},
	},
	{
		"id": "note_b",
		"kind": "set_variables",
		"parent_id": "offer",
		"branch": "b",
		"payload": {"variables": {"variant": "b"}},
	},
]


class TestQuietHours(FlowTestCase):
	def test_a_days_after_trigger_at_midnight_sends_its_email_when_the_window_opens(self):
		template = make_template([email_step()], trigger=DAYS_AFTER, **OFFICE_HOURS)
		self.assertEqual(
			json.loads(template.definition)["quiet_hours"],
			{
				"start": "09:00",
				"end": "19:00",
				"days": ["mon", "tue", "wed", "thu", "fri", "sat"],
				"timezone": "site",
			},
		)
		todo = make_todo("Invoice 7", date="2026-06-19")
		frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-06-19 00:00:00")
		with self.freeze_time("2026-06-20 00:00:00"):  # a Saturday, in the site's time zone
			self.assertEqual(len(triggers.fire_schedules()), 1)
			[run] = runs_of(template.name)
			runtime.advance_run(run.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run.name, "status"), "Waiting")
		[row] = pending(run.name)
		self.assertEqual((row.step_id, str(row.trigger_at)), ("mail", "2026-06-20 09:00:00"))
		self.assertEqual(row.purpose, "delay")  # the same machinery as an after_delay step
		entry = state(run.name)["mail"]
		self.assertEqual((entry["status"], entry["scheduled_for"]), ("scheduled", "quiet_hours"))
		self.assertEqual(emails_about(todo), [])

		with self.freeze_time("2026-06-20 08:59:00"):
			self.assertEqual(run_due(), 0)
		with self.freeze_time("2026-06-20 09:00:00"):
			self.assertEqual(run_due(), 1)
		self.assertEqual(frappe.db.get_value("Flow Run", run.name, "status"), "Completed")
		[message] = emails_about(todo)
		self.assertIn("Subject: mail: Invoice 7 is overdue", message)
		self.assertEqual([(log.step_id, log.status) for log in logs(run.name)], [("mail", "Success")])

	def test_a_step_may_keep_no_quiet_hours_or_its_own(self):
		template = make_template(
			[
				email_step("now", quiet_hours=False),
				email_step("early", quiet_hours={"start": "06:00", "end": "07:00"}),
				email_step("office"),
				{
					"id": "note",
					"kind": "create_document",
					"payload": {"doctype": "Note", "fields": {"title": unique("qh")}},
				},
			],
			**OFFICE_HOURS,
		)
		# the form keeps each step's setting in its row's Quiet Hours field
		rows = {row.step_id: row.quiet_hours for row in template.steps}
		self.assertEqual((rows["now"], rows["office"]), ("false", ""))
		self.assertEqual(json.loads(rows["early"]), {"start": "06:00", "end": "07:00"})
		todo = make_todo("Invoice 8")
		with self.freeze_time("2026-06-16 02:00:00"):
			run = runtime.start_run(
				template.name, reference_doctype="ToDo", reference_name=todo.name, advance="now"
			)
		self.assertEqual(len(emails_about(todo)), 1)  # "now" went out at 02:00
		self.assertEqual(
			[(r.step_id, str(r.trigger_at)) for r in pending(run)],
			[("early", "2026-06-16 06:00:00"), ("office", "2026-06-16 09:00:00")],
		)
		self.assertEqual(state(run)["note"]["status"], "done")  # not a message: any hour

	def test_a_delay_ending_at_night_is_held_again_and_its_old_row_is_spent(self):
		template = make_template([email_step(trigger={"type": "after_delay", "hours": 8})], **OFFICE_HOURS)
		todo = make_todo("Invoice 9")
		with self.freeze_time("2026-06-16 14:00:00"):
			run = runtime.start_run(
				template.name, reference_doctype="ToDo", reference_name=todo.name, advance="now"
			)
		self.assertEqual([str(r.trigger_at) for r in pending(run)], ["2026-06-16 22:00:00"])
		with self.freeze_time("2026-06-16 22:00:00"):
			self.assertEqual(run_due(), 1)
		self.assertEqual(emails_about(todo), [])
		self.assertEqual([str(r.trigger_at) for r in pending(run)], ["2026-06-17 09:00:00"])
		self.assertEqual([r.status for r in pending(run, status=None)], ["Done", "Pending"])
		with self.freeze_time("2026-06-17 09:00:30"):
			self.assertEqual(run_due(), 1)
		self.assertEqual(len(emails_about(todo)), 1)

	def test_contact_time_zone_from_the_contacts_number(self):
		template = make_template([email_step()], **{**OFFICE_HOURS, "quiet_hours_timezone": "Contact"})
		todo = make_todo("Invoice 10")
		site = ZoneInfo(get_system_timezone())
		# 06:30 UTC on Tuesday is 23:30 on Monday in California: closed until 09:00 there (16:00 UTC)
		frozen = dt.datetime(2026, 6, 16, 6, 30, tzinfo=dt.timezone.utc).astimezone(site)
		opens = dt.datetime(2026, 6, 16, 16, 0, tzinfo=dt.timezone.utc).astimezone(site)
		with self.freeze_time(frozen.replace(tzinfo=None)):
			run = runtime.start_run(
				template.name,
				reference_doctype="ToDo",
				reference_name=todo.name,
				contact="+16505551234",
				advance="now",
			)
		self.assertEqual([r.trigger_at for r in pending(run)], [opens.replace(tzinfo=None)])
		self.assertEqual(emails_about(todo), [])

	def test_a_new_template_offers_09_to_19_not_the_time_it_was_made(self):
		# Frappe sets every Time field of a new document to the current time
		template = make_template([email_step()])
		stored = frappe.db.get_value(
			"Flow Template", template.name, ["quiet_hours_start", "quiet_hours_end"], as_dict=True
		)
		self.assertEqual(
			(str(stored.quiet_hours_start), str(stored.quiet_hours_end)), ("9:00:00", "19:00:00")
		)
		self.assertNotIn("quiet_hours", json.loads(template.definition))

	def test_the_form_refuses_a_window_with_no_open_day_or_an_unknown_time_zone(self):
		closed = {**OFFICE_HOURS, **{field: 0 for field in MON_TO_SAT}}
		with self.assertRaises(InvalidFlowDefinition) as caught:
			make_template([email_step()], **closed)
		self.assertIn("no day is open", message_of(caught.exception))
		with self.assertRaises(InvalidFlowDefinition) as caught:
			make_template([email_step()], **{**OFFICE_HOURS, "quiet_hours_timezone": "Mars/Olympus"})
		self.assertIn("Time Zone", message_of(caught.exception))
		self.assertIn("'Mars/Olympus' is not a time zone", message_of(caught.exception))
		# an IANA name is fine
		zoned = make_template([email_step()], **{**OFFICE_HOURS, "quiet_hours_timezone": "Europe/Berlin"})
		self.assertEqual(json.loads(zoned.definition)["quiet_hours"]["timezone"], "Europe/Berlin")

	def test_step_level_quiet_hours_are_checked_and_only_on_message_steps(self):
		with self.assertRaises(InvalidFlowDefinition) as caught:
			make_template(
				[
					{
						"id": "note",
						"kind": "create_document",
						"payload": {"doctype": "Note", "fields": {"title": "x"}},
						"quiet_hours": False,
					}
				]
			)
		self.assertIn("Row #1 (note) · Quiet Hours", message_of(caught.exception))
		self.assertIn("quiet hours apply only to message steps", message_of(caught.exception))
		with self.assertRaises(InvalidFlowDefinition) as caught:
			make_template([email_step(quiet_hours={"start": "09:00", "end": "19:00", "days": []})])
		self.assertIn("Row #1 (mail) · Quiet Hours", message_of(caught.exception))
		self.assertIn("no day is open", message_of(caught.exception))

	def test_export_and_import_carry_the_quiet_hours(self):
		template = make_template(
			[email_step("mail", quiet_hours=False)],
			**{**OFFICE_HOURS, "quiet_hours_timezone": "Contact"},
		)
		exported = export_values(template)
		self.assertEqual(exported["definition"]["quiet_hours"]["timezone"], "contact")
		self.assertIs(exported["definition"]["steps"][0]["quiet_hours"], False)
		values = template_values_from_export({**exported, "template_name": unique("Imported")})
		copy = frappe.get_doc({"doctype": "Flow Template", **values}).insert()
		self.assertEqual(copy.quiet_hours_timezone, "Contact")
		self.assertEqual((copy.quiet_hours_saturday, copy.quiet_hours_sunday), (1, 0))
		self.assertEqual(copy.definition_hash, template.definition_hash)  # the same flow, to the byte

	def test_the_example_flow_imports_with_its_quiet_hours(self):
		with open(os.path.join(os.path.dirname(__file__), "flows", "overdue_reminder_ab.json")) as fh:
			data = json.load(fh)
		values = template_values_from_export({**data, "template_name": unique("Overdue A/B")})
		template = frappe.get_doc({"doctype": "Flow Template", **values}).insert()
		self.assertEqual(
			(template.quiet_hours_enabled, template.quiet_hours_timezone, template.quiet_hours_sunday),
			(1, "Site", 0),
		)
		compiled = json.loads(template.definition)
		self.assertEqual(compiled["quiet_hours"], data["definition"]["quiet_hours"])
		by_id = {step["id"]: step for step in compiled["steps"]}
		self.assertEqual(by_id["nudge"]["quiet_hours"]["days"], ["mon", "tue", "wed", "thu", "fri"])
		self.assertIs(by_id["owner_alert"]["quiet_hours"], False)
		self.assertNotIn("quiet_hours", by_id["friendly_mail"])

	def test_a_dry_run_shows_the_hold(self):
		template = make_template([email_step()], **OFFICE_HOURS)
		todo = make_todo("Invoice 11")
		with self.freeze_time("2026-06-20 23:00:00"):  # Saturday night: Monday 09:00
			result = runtime.simulate_template(
				template.name, reference_doctype="ToDo", reference_name=todo.name
			)
		actions = [(e.step_id, e.action, e.note) for e in result.timeline]
		self.assertEqual(actions[0], ("mail", "scheduled", "due 2026-06-22 09:00:00 (quiet_hours)"))
		self.assertEqual(actions[1][:2], ("mail", "executed"))
		self.assertEqual(emails_about(todo), [])  # a dry run sends nothing

	def test_the_builder_shows_the_quiet_hours_fields(self):
		template = make_template([email_step()], **OFFICE_HOURS)
		loaded = builder.get_builder(template.name)
		fields = {f["fieldname"]: f for f in loaded["fields"]}
		self.assertEqual(fields["quiet_hours_enabled"]["section"], "Quiet Hours")
		self.assertEqual(fields["quiet_hours_start"]["depends_on"], "quiet_hours_enabled")
		self.assertEqual(str(frappe.utils.get_time(loaded["template"]["quiet_hours_start"])), "09:00:00")
		self.assertEqual(loaded["definition"]["quiet_hours"]["start"], "09:00")
		# saved back as loaded, with a step-level window added on the canvas
		loaded["definition"]["steps"][0]["quiet_hours"] = {"start": "10:00", "end": "11:00"}
		saved = builder.save_builder(
			{"template": loaded["template"], "definition": loaded["definition"], "layout": {}}, template.name
		)
		self.assertEqual(saved["definition"]["steps"][0]["quiet_hours"], {"start": "10:00", "end": "11:00"})
		self.assertEqual(str(frappe.utils.get_time(saved["template"]["quiet_hours_end"])), "19:00:00")


class TestSplit(FlowTestCase):
	def test_runs_take_a_stable_branch_and_the_builder_counts_each(self):
		template = make_template(SPLIT_STEPS)
		runs = [runtime.start_run(template.name, advance="now") for _ in range(12)]
		taken = {}
		for run in runs:
			entry = state(run)["offer"]
			self.assertEqual(entry["branch"], entry["output"]["branch"])
			self.assertEqual(
				json.loads(frappe.db.get_value("Flow Run", run, "variables"))["variant"], entry["branch"]
			)
			taken[run] = entry["branch"]
		# the same run name always maps to the same branch: advancing again changes nothing
		runtime.advance_run(runs[0])
		self.assertEqual(state(runs[0])["offer"]["branch"], taken[runs[0]])
		stats = builder.step_stats(template.name, 7)
		expected = {name: sum(1 for b in taken.values() if b == name) for name in ("a", "b")}
		self.assertEqual(stats["steps"]["offer"]["branches"], expected)
		self.assertEqual(stats["steps"]["offer"]["reached"], 12)
		self.assertNotIn("branches", stats["steps"]["note_a"])
		self.assertEqual(stats["steps"]["note_a"]["completed"], expected["a"])

	def test_a_branch_no_run_took_counts_zero(self):
		steps = json.loads(json.dumps(SPLIT_STEPS))
		steps[0]["payload"]["branches"] = [{"name": "a", "weight": 100}, {"name": "b", "weight": 0}]
		template = make_template(steps)
		for _ in range(3):
			runtime.start_run(template.name, advance="now")
		self.assertEqual(builder.step_stats(template.name, 7)["steps"]["offer"]["branches"], {"a": 3, "b": 0})

	def test_the_form_refuses_weights_that_do_not_add_up(self):
		steps = json.loads(json.dumps(SPLIT_STEPS))
		steps[0]["payload"]["branches"][1]["weight"] = 40
		with self.assertRaises(InvalidFlowDefinition) as caught:
			make_template(steps)
		self.assertIn("Row #1 (offer) · Payload/branches", message_of(caught.exception))
		self.assertIn("the weights add up to 90; they must add up to 100", message_of(caught.exception))

	def test_a_dry_run_takes_the_branch_its_run_name_gives(self):
		template = make_template(SPLIT_STEPS)
		result = runtime.simulate_template(template.name)
		self.assertEqual(result.status, "Completed")
		output = result.step_state["offer"]["output"]
		self.assertEqual(output["branch"], "a" if output["point"] < 50 else "b")
		self.assertEqual(result.variables["variant"], output["branch"])
