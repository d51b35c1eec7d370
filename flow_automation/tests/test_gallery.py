"""The gallery of system templates (`fixtures/`): how `seed-templates` loads them, and each
plain-Frappe one end to end on this site."""

from __future__ import annotations

import email
import json
import os
import tempfile
from email.header import decode_header, make_header
from typing import Any

import frappe
from frappe.utils import add_days, add_to_date, get_datetime, getdate

from flow_automation import api, runtime, triggers
from flow_automation.portable import seed_templates
from flow_automation.scheduler import run_due
from flow_automation.tests.utils import (
	FlowTestCase,
	failing_step,
	make_template,
	make_todo,
	runs_of,
	state,
	unique,
)
from flow_automation.tests.whatsapp_utils import (
	CONTACT,
	WhatsAppTestCase,
	conversation,
	deliver,
	inbound_message,
	open_window,
)


def flow_file(folder: str, name: str, **extra) -> str:
	data = {
		"template_name": name,
		"trigger": {"type": "Manual"},
		"definition": {
			"version": 1,
			"steps": [{"id": "hello", "kind": "set_variables", "payload": {"variables": {"a": "1"}}}],
		},
		**extra,
	}
	path = os.path.join(folder, f"{frappe.scrub(name)}.json")
	with open(path, "w", encoding="utf-8") as fh:
		json.dump(data, fh)
	return path


class TestSeeding(FlowTestCase):
	def test_a_template_needing_an_app_this_site_lacks_is_skipped_with_the_reason(self):
		plain, needy = unique("Plain Flow"), unique("Needs An App")
		with tempfile.TemporaryDirectory() as folder:
			flow_file(folder, plain)
			flow_file(folder, needy, requires_apps=["frappe", "no_such_app"])
			results = dict(seed_templates(folder))
		self.assertEqual(results[plain], "created")
		self.assertEqual(results[needy], "skipped: needs no_such_app, not installed on this site")
		self.assertTrue(frappe.db.exists("Flow Template", plain))
		self.assertFalse(frappe.db.exists("Flow Template", needy))

	def test_a_template_needing_only_installed_apps_is_loaded(self):
		name = unique("Needs Frappe")
		with tempfile.TemporaryDirectory() as folder:
			flow_file(folder, name, requires_apps=["frappe"])
			self.assertEqual(dict(seed_templates(folder))[name], "created")
		self.assertEqual(frappe.db.get_value("Flow Template", name, "is_system"), 1)


# --- the gallery end to end -------------------------------------------------------------------
# Each test seeds the gallery as `bench flow-automation seed-templates` does, switches on the
# templates it exercises as an admin would (Enabled, Save), then acts as a user would: inserts
# a document, presses Run Flow, texts the WhatsApp number or lets the schedule come round.

SEEDED_AT = "2026-12-01 09:30:00"  # a Tuesday, after its 08:00 and 09:00 slots
WEDNESDAY = "2026-12-02"  # a weekday: the weekday-only schedules fire on it


def seed_and_enable(*names: str) -> None:
	"""Seed the gallery, then enable these templates through the form's save."""
	results = dict(seed_templates())
	for name in names:
		assert results.get(name, "").startswith(("created", "unchanged", "updated")), (name, results)
		doc = frappe.get_doc("Flow Template", name)
		doc.enabled = 1
		doc.save()


def make_user(test, first_name: str, **fields: Any) -> Any:
	"""A user with an email address, deleted after the test (runs may have committed it)."""
	user = frappe.get_doc(
		{
			"doctype": "User",
			"email": f"{frappe.scrub(first_name)}.{frappe.generate_hash(length=6)}@example.com",
			"first_name": first_name,
			"send_welcome_email": 0,
			**fields,
		}
	).insert(ignore_permissions=True)
	test.addCleanup(delete_user, user.name)
	return user


def delete_user(name: str) -> None:
	frappe.db.rollback()
	if frappe.db.exists("User", name):
		frappe.delete_doc("User", name, force=True, ignore_permissions=True)
	frappe.db.commit()


def emails_to(address: str) -> list[dict[str, str]]:
	"""The emails queued for `address`: their subject and HTML body, as Email Queue sends them."""
	queued = frappe.get_all(
		"Email Queue Recipient", filters={"recipient": address}, pluck="parent", order_by="creation asc"
	)
	mails = []
	for name in queued:
		message = email.message_from_string(frappe.db.get_value("Email Queue", name, "message"))
		html = [
			part.get_payload(decode=True).decode()
			for part in message.walk()
			if part.get_content_type() == "text/html"
		]
		mails.append(
			{
				"name": name,
				"subject": str(make_header(decode_header(message["Subject"]))),
				"body": "".join(html),
			}
		)
	return mails


def subjects(address: str) -> list[str]:
	return [mail["subject"] for mail in emails_to(address)]


def run_status(run: str) -> str:
	return frappe.db.get_value("Flow Run", run, "status")


class TestNewUserWelcome(FlowTestCase):
	def test_a_new_system_user_gets_the_welcome_email_and_the_administrator_a_notification(self):
		seed_and_enable("New User Welcome")
		user = make_user(self, "Amara", last_name="Okafor", roles=[{"role": "Desk User"}])
		self.assertEqual(user.user_type, "System User")
		[run] = runs_of("New User Welcome")
		self.assertEqual((run.status, run.reference_name), ("Completed", user.name), state(run.name))
		[welcome] = [mail for mail in emails_to(user.email) if mail["subject"] == "Welcome, Amara"]
		self.assertIn("Hello Amara,", welcome["body"])
		self.assertIn('/app/home"', welcome["body"])  # Frappe makes the link absolute
		self.assertTrue(
			frappe.db.exists(
				"Notification Log",
				{
					"for_user": "Administrator",
					"subject": "New user: Amara Okafor",
					"document_type": "User",
					"document_name": user.name,
				},
			)
		)

	def test_a_website_user_gets_nothing(self):
		seed_and_enable("New User Welcome")
		user = make_user(self, "Webb")
		self.assertEqual(user.user_type, "Website User")
		self.assertEqual(runs_of("New User Welcome"), [])
		self.assertEqual(subjects(user.email), [])


OPS = "flow-ops@example.com"


def seed_digest_for_ops(case: FlowTestCase) -> None:
	"""The digest enabled and sent to OPS, as an admin sets it up (Frappe's own test records
	unsubscribe Administrator's address from every email on a test site)."""
	with case.freeze_time(SEEDED_AT):
		seed_and_enable("Failed Run Digest")
		doc = frappe.get_doc("Flow Template", "Failed Run Digest")
		doc.variables = json.dumps({"send_to": OPS})
		doc.save()


class TestFailedRunDigest(FlowTestCase):
	def test_the_morning_digest_lists_the_runs_that_failed_since_yesterday(self):
		broken = make_template([failing_step()], name=unique("Broken Flow"))
		with self.freeze_time(add_days(get_datetime(f"{WEDNESDAY} 07:30:00"), -2)):
			too_old = runtime.start_run(broken.name, advance="now")
		seed_digest_for_ops(self)
		with self.freeze_time(f"{WEDNESDAY} 07:30:00"):
			failed = runtime.start_run(broken.name, advance="now")
		self.assertEqual((run_status(too_old), run_status(failed)), ("Failed", "Failed"))
		before = {mail["name"] for mail in emails_to(OPS)}
		with self.freeze_time(f"{WEDNESDAY} 07:59:00"):
			self.assertEqual(triggers.fire_schedules(), [])
		with self.freeze_time(f"{WEDNESDAY} 08:00:00"):
			[digest_run] = triggers.fire_schedules()
		self.assertEqual(run_status(digest_run), "Completed", state(digest_run))
		# the site may hold older emails to this address, created at any (frozen) time
		mails = [mail for mail in emails_to(OPS) if mail["name"] not in before]
		[digest] = [mail for mail in mails if "failed since yesterday" in mail["subject"]]
		self.assertEqual(digest["subject"], "1 flow run(s) failed since yesterday")
		self.assertIn(f'/app/flow-run/{failed}"', digest["body"])
		self.assertIn(f">{failed}</a> at {WEDNESDAY} 07:30:00: step 'boom'", digest["body"])
		self.assertIn(f"<b>{broken.name}</b>", digest["body"])
		self.assertNotIn(too_old, digest["body"])

	def test_a_morning_without_failures_sends_nothing(self):
		seed_digest_for_ops(self)
		before = subjects(OPS)
		with self.freeze_time(f"{WEDNESDAY} 08:00:00"):
			[digest_run] = triggers.fire_schedules()
		self.assertEqual(run_status(digest_run), "Completed", state(digest_run))
		self.assertEqual(subjects(OPS), before)


class TestToDoOverdue(FlowTestCase):
	def setUp(self):
		super().setUp()
		self.assignee = make_user(self, "Ada")
		self.assigner = make_user(self, "Boris")
		with self.freeze_time(SEEDED_AT):
			seed_and_enable("ToDo Overdue Escalation")
			self.todo = make_todo(
				"Send the Q4 figures",
				date=add_days(getdate(WEDNESDAY), -1),
				allocated_to=self.assignee.name,
				assigned_by=self.assigner.name,
			)

	def fire_on_wednesday_morning(self) -> str:
		"""The escalation's 09:00 slot; returns the reminder run it started for the ToDo."""
		with self.freeze_time(f"{WEDNESDAY} 09:00:00"):
			[escalation] = triggers.fire_schedules()
		self.assertEqual(run_status(escalation), "Completed", state(escalation))
		[reminder] = runs_of("ToDo Overdue Reminder", reference_name=self.todo.name)
		self.assertEqual(reminder.status, "Waiting")  # a day before it looks again
		self.assertEqual(
			frappe.db.get_value("Flow Run", reminder.name, "parent_run"), escalation, "a child run"
		)
		return reminder.name

	def a_day_later(self) -> None:
		with self.freeze_time(add_to_date(get_datetime(f"{WEDNESDAY} 09:00:00"), days=1, seconds=1)):
			run_due()

	def test_the_assignee_is_reminded_and_whoever_assigned_it_hears_a_day_later(self):
		reminder = self.fire_on_wednesday_morning()
		[mail] = emails_to(self.assignee.email)
		self.assertEqual(mail["subject"], "Overdue since 2026-12-01: Send the Q4 figures")
		self.assertIn(f'/app/todo/{self.todo.name}"', mail["body"])
		self.assertEqual(emails_to(self.assigner.email), [])

		self.a_day_later()
		self.assertEqual(run_status(reminder), "Completed", state(reminder))
		self.assertEqual(state(reminder)["still_open"]["branch"], "yes")
		[escalation] = emails_to(self.assigner.email)
		self.assertEqual(escalation["subject"], f"Still open: a ToDo you assigned to {self.assignee.name}")
		self.assertIn("Send the Q4 figures", escalation["body"])
		self.assertEqual(len(emails_to(self.assignee.email)), 1)

	def test_a_todo_closed_after_the_reminder_is_not_escalated(self):
		reminder = self.fire_on_wednesday_morning()
		self.assertEqual(len(emails_to(self.assignee.email)), 1)
		todo = frappe.get_doc("ToDo", self.todo.name)
		todo.status = "Closed"
		todo.save()
		self.a_day_later()
		self.assertEqual(run_status(reminder), "Completed", state(reminder))
		self.assertEqual(state(reminder)["still_open"]["branch"], "no")
		self.assertEqual(emails_to(self.assigner.email), [])

	def test_only_open_todos_past_their_date_with_someone_to_remind_are_reminded(self):
		with self.freeze_time(f"{WEDNESDAY} 08:59:00"):
			self.assertEqual(triggers.fire_schedules(), [])
		yesterday = add_days(getdate(WEDNESDAY), -1)
		others = [
			make_todo("Due today", date=WEDNESDAY, allocated_to=self.assignee.name),
			make_todo("Done already", date=yesterday, allocated_to=self.assignee.name, status="Closed"),
			make_todo("Nobody's", date=yesterday),
		]
		self.fire_on_wednesday_morning()
		for todo in others:
			self.assertEqual(runs_of("ToDo Overdue Reminder", reference_name=todo.name), [], todo.description)
		self.assertEqual(len(emails_to(self.assignee.email)), 1)

	def test_the_next_weekday_morning_the_schedule_and_the_escalation_both_go_through(self):
		reminder = self.fire_on_wednesday_morning()
		# the minute cron at Thursday 09:00: schedules first, then the due steps
		with self.freeze_time(add_to_date(get_datetime(f"{WEDNESDAY} 09:00:00"), days=1)):
			[thursday] = triggers.fire_schedules()
			run_due()
		self.assertEqual(run_status(thursday), "Completed", state(thursday))
		self.assertEqual(run_status(reminder), "Completed", state(reminder))
		self.assertEqual(len(emails_to(self.assigner.email)), 1)
		# still overdue: reminded again, and Thursday's reminder looks again on Friday
		self.assertEqual(len(emails_to(self.assignee.email)), 2)
		statuses = sorted(r.status for r in runs_of("ToDo Overdue Reminder", reference_name=self.todo.name))
		self.assertEqual(statuses, ["Completed", "Waiting"])

	def test_more_overdue_todos_than_run_at_once_are_all_reminded_the_same_morning(self):
		yesterday = add_days(getdate(WEDNESDAY), -1)
		for i in range(6):
			make_todo(f"Overdue {i}", date=yesterday, allocated_to=self.assignee.name)
		self.fire_on_wednesday_morning()
		self.assertEqual(len(emails_to(self.assignee.email)), 7)

	def test_a_todo_its_assignee_gave_themselves_is_not_escalated(self):
		frappe.db.set_value("ToDo", self.todo.name, "assigned_by", self.assignee.name)
		reminder = self.fire_on_wednesday_morning()
		self.a_day_later()
		self.assertEqual(state(reminder)["still_open"]["branch"], "no")
		self.assertEqual(len(emails_to(self.assignee.email)), 1)


class TestGalleryWhatsApp(WhatsAppTestCase):
	def make_contact(self, first_name: str = "Sheena", number: str = CONTACT) -> Any:
		return frappe.get_doc(
			{
				"doctype": "Contact",
				"first_name": first_name,
				"last_name": "Nelson",
				"phone_nos": [{"phone": number, "is_primary_mobile_no": 1}],
			}
		).insert()

	def sent_to(self, number: str) -> list[dict[str, Any]]:
		return [message for message in self.sent() if message.get("to") == number.lstrip("+")]

	def start_survey(self, contact: Any) -> str:
		"""Run Flow on the Contact, as the Desk button does."""
		return api.start("Feedback Survey", reference_doctype="Contact", reference_name=contact.name)["run"]

	def test_feedback_survey_an_answer_is_noted_and_thanked(self):
		seed_templates()
		contact = self.make_contact()
		self.assertEqual(contact.mobile_no, CONTACT)
		open_window()  # they wrote to us today: a free-form question may go out
		run = self.start_survey(contact)
		self.assertEqual(run_status(run), "Waiting", state(run))
		[question] = self.sent()
		self.assertEqual(question["to"], CONTACT.lstrip("+"))
		self.assertEqual(question["interactive"]["type"], "button")
		self.assertEqual(question["interactive"]["body"]["text"], "Hi Sheena, how did we do?")
		self.assertEqual(
			[b["reply"]["id"] for b in question["interactive"]["action"]["buttons"]],
			["great", "okay", "poor"],
		)
		self.assertEqual(conversation().waiting_run, run)

		deliver(inbound_message(button=("great", "Great")))
		self.assertEqual(run_status(run), "Completed", state(run))
		note = frappe.db.get_value(
			"Note", {"title": "Feedback from Sheena: great"}, ["content", "public"], as_dict=True
		)
		self.assertEqual((note.content, note.public), (f"{contact.name} rated us great.", 1))
		self.assertFalse(frappe.db.exists("Note", {"title": ("like", "%: okay")}))
		thanks = self.sent()[-1]
		self.assertEqual((thanks["type"], thanks["text"]["body"]), ("text", "Thank you for your feedback!"))
		self.assertEqual(len(self.sent()), 2)
		self.assertIsNone(conversation().waiting_run)

	def test_feedback_survey_no_answer_in_a_day_is_noted(self):
		start_at = get_datetime(f"{WEDNESDAY} 10:00:00")
		with self.freeze_time(start_at):
			seed_templates()
			contact = self.make_contact()
			open_window()
			run = self.start_survey(contact)
			self.assertEqual(run_status(run), "Waiting", state(run))
		with self.freeze_time(add_to_date(start_at, hours=23)):
			run_due()
			self.assertEqual(run_status(run), "Waiting")
		with self.freeze_time(add_to_date(start_at, hours=24, seconds=1)):
			run_due()
		self.assertEqual(run_status(run), "Completed", state(run))
		self.assertEqual(state(run)["ask"]["branch"], "timeout")
		self.assertEqual(
			frappe.db.get_value("Note", {"title": "No feedback from Sheena"}, "content"),
			f"{contact.name} did not answer the survey within a day.",
		)
		self.assertEqual(len(self.sent()), 1)  # the question only: no thank-you
		self.assertIsNone(conversation().waiting_run)

	def test_feedback_survey_to_a_contact_outside_the_24_hour_window_fails_clearly(self):
		# buttons are a free-form message: Meta allows them only 24 hours after the contact wrote
		seed_templates()
		run = self.start_survey(self.make_contact())
		self.assertEqual(run_status(run), "Failed")
		self.assertIn("24 hours", state(run)["ask"]["error"])
		self.assertEqual(self.sent(), [])
		self.assertFalse(frappe.db.exists("Note", {"title": ("like", "%Sheena%")}))

	def test_menu_bot_a_person_means_a_todo(self):
		seed_and_enable("WhatsApp Menu Bot")
		deliver(inbound_message("Menu"))
		[run] = runs_of("WhatsApp Menu Bot")
		self.assertEqual(run.status, "Waiting", state(run.name))
		[menu] = self.sent()
		self.assertEqual((menu["to"], menu["interactive"]["type"]), (CONTACT.lstrip("+"), "list"))
		self.assertEqual(menu["interactive"]["body"]["text"], "How can we help?")
		rows = [row["id"] for section in menu["interactive"]["action"]["sections"] for row in section["rows"]]
		self.assertEqual(rows, ["catalog", "order", "human"])

		deliver(inbound_message(row=("human", "Talk to a person")))
		self.assertEqual(run_status(run.name), "Completed", state(run.name))
		todo = state(run.name)["handoff"]["output"]["name"]
		self.assertEqual(
			frappe.db.get_value("ToDo", todo, ["description", "priority"]),
			("WhatsApp chat requested by Sheena Nelson (+16505551234)", "Medium"),
		)
		self.assertEqual(len(self.sent()), 1)  # no message besides the menu

	def test_birthday_greeting_goes_to_whoever_has_a_birthday_today(self):
		other_number = "+16505550199"
		asha = make_user(self, "Asha", last_name="Rao", birth_date="1990-12-02", mobile_no=CONTACT)
		make_user(self, "Bea", birth_date="1991-12-03", mobile_no=other_number)
		with self.freeze_time(SEEDED_AT):
			seed_and_enable("Birthday Greeting")
		with self.freeze_time(f"{WEDNESDAY} 09:00:00"):
			[greeting] = triggers.fire_schedules()
		self.assertEqual(run_status(greeting), "Completed", state(greeting))
		[child] = runs_of("Birthday WhatsApp")
		self.assertEqual((child.status, child.reference_name), ("Completed", asha.name), state(child.name))
		[message] = self.sent_to(CONTACT)
		self.assertEqual(message["type"], "template")
		template = message["template"]
		self.assertEqual((template["name"], template["language"]["code"]), ("birthday_greeting", "en"))
		self.assertEqual(
			[p["text"] for c in template["components"] if c["type"] == "body" for p in c["parameters"]],
			["Asha"],
		)
		self.assertEqual(self.sent_to(other_number), [])
