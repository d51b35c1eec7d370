"""Triggers on a real site: document events, named events, schedules, webhooks, guard rails."""

from __future__ import annotations

import json
from unittest.mock import patch
from urllib.parse import quote

import frappe
from frappe.tests.test_api import make_request
from frappe.utils import add_days, get_test_client, getdate, now_datetime

import flow_automation
from flow_automation import runtime, triggers
from flow_automation.scheduler import run_due
from flow_automation.tests.utils import (
	FlowTestCase,
	count_queries,
	ensure_email_account,
	ensure_test_doctype,
	failing_step,
	make_order,
	make_template,
	make_todo,
	runs_of,
	site_config,
	unique,
)

NOTE_STEP = [
	{
		"id": "note",
		"kind": "create_document",
		"payload": {
			"doctype": "Note",
			"fields": {"title": "{{ trigger.event }} {{ doc.name }} {{ run.name }}"},
		},
	}
]
GATE_STEP = [{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}]


def doc_event(doctype: str, event: str, steps=None, **trigger):
	return make_template(
		steps or NOTE_STEP, trigger={"type": "Document Event", "doctype": doctype, "event": event, **trigger}
	)


class TriggerTestCase(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		ensure_email_account()
		ensure_test_doctype()

	def setUp(self):
		super().setUp()
		triggers.clear_trigger_cache()

	def tearDown(self):
		frappe.db.rollback()
		triggers.clear_trigger_cache()  # the cache is not part of the rolled-back transaction
		super().tearDown()


class TestDocumentEvents(TriggerTestCase):
	def test_no_matching_template_costs_exactly_zero_sql(self):
		# enabled templates on other doctypes, so the index is not simply empty
		for _ in range(3):
			doc_event("Note", "Save")
		todo = make_todo("zero sql")
		todo.save()  # warm the caches both ways
		for method in ("after_insert", "on_update", "on_submit", "on_cancel", "on_trash", "on_change"):
			with count_queries() as queries:
				triggers.on_document_event(todo, method)
			self.assertEqual(queries, [], method)
		todo.description = "changed once"
		with count_queries() as with_dispatch:
			todo.save()
		todo.description = "changed twice"
		with (
			patch.object(triggers, "on_document_event", lambda doc, method: None),
			count_queries() as without,
		):
			todo.save()
		self.assertEqual(len(with_dispatch), len(without), "\n".join(with_dispatch))

	def test_dispatch_is_quiet_during_install_migrate_import_and_uninstall(self):
		template = doc_event("ToDo", "New")
		for flag in ("in_install", "in_migrate", "in_patch", "in_import", "in_install_app", "in_uninstall"):
			frappe.local.flags[flag] = True
			try:
				make_todo(f"quiet {flag}")
			finally:
				frappe.local.flags.pop(flag)
		self.assertEqual(runs_of(template.name), [])
		make_todo("loud again")
		self.assertEqual(len(runs_of(template.name)), 1)

	def test_new_fires_once_per_insert(self):
		template = doc_event("ToDo", "New")
		todo = make_todo("new one")
		todo.save()
		runs = runs_of(template.name)
		self.assertEqual(len(runs), 1)
		self.assertEqual(
			(runs[0].status, runs[0].trigger_event, runs[0].reference_name), ("Completed", "New", todo.name)
		)
		self.assertTrue(frappe.db.exists("Note", {"title": f"New {todo.name} {runs[0].name}"}))

	def test_save_fires_on_every_save(self):
		template = doc_event("ToDo", "Save")
		todo = make_todo()
		todo.description = "second save"
		todo.save()
		self.assertEqual(len(runs_of(template.name)), 2)

	def test_submit_and_cancel(self):
		submitted = doc_event(ensure_test_doctype(), "Submit")
		cancelled = doc_event(ensure_test_doctype(), "Cancel")
		order = make_order()
		self.assertEqual(runs_of(submitted.name), [])
		order.submit()
		order.cancel()
		self.assertEqual([r.trigger_event for r in runs_of(submitted.name)], ["Submit"])
		self.assertEqual([r.trigger_event for r in runs_of(cancelled.name)], ["Cancel"])

	def test_delete_runs_with_a_snapshot_of_the_deleted_document(self):
		template = doc_event(
			"ToDo",
			"Delete",
			steps=[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {"doctype": "Note", "fields": {"title": "gone: {{ doc.description }}"}},
				}
			],
		)
		todo = make_todo("to be deleted")
		frappe.delete_doc("ToDo", todo.name)
		self.assertEqual([r.status for r in runs_of(template.name)], ["Completed"])
		self.assertTrue(frappe.db.exists("Note", {"title": "gone: to be deleted"}))

	def test_value_change_fires_only_on_a_real_change_of_that_field(self):
		template = doc_event("ToDo", "Value Change", field="status")
		todo = make_todo(status="Open")
		self.assertEqual(runs_of(template.name), [])  # an insert is not a change
		todo.save()
		todo.description = "other field"
		todo.save()
		self.assertEqual(runs_of(template.name), [])
		todo.status = "Closed"
		todo.save()
		self.assertEqual(len(runs_of(template.name)), 1)

	def test_condition_filters_documents(self):
		template = doc_event("ToDo", "New", condition={"field": "doc.priority", "op": "==", "value": "High"})
		make_todo(priority="Low")
		high = make_todo(priority="High")
		self.assertEqual([r.reference_name for r in runs_of(template.name)], [high.name])

	def test_the_same_event_delivered_twice_makes_one_run(self):
		template = doc_event("ToDo", "Save")
		todo = make_todo()
		self.assertEqual(len(runs_of(template.name)), 1)
		triggers.on_document_event(todo, "on_update")  # redelivered: same document, same modified
		self.assertEqual(len(runs_of(template.name)), 1)
		self.assertEqual(frappe.local.message_log, [])

	def test_a_trigger_whose_job_never_ran_is_drained_by_the_cron(self):
		template = doc_event("ToDo", "New")
		with patch("flow_automation.triggers.kick"):  # the after-commit job is lost
			todo = make_todo()
		self.assertEqual([r.status for r in runs_of(template.name)], ["Queued"])
		self.assertEqual(triggers.drain_outbox(now_datetime(), grace_seconds=3600), 0)  # too fresh yet
		self.assertEqual(triggers.drain_outbox(add_days(now_datetime(), 1)), 1)
		self.assertEqual([r.status for r in runs_of(template.name)], ["Completed"])
		self.assertTrue(frappe.db.exists("Note", {"title": ("like", f"New {todo.name} %")}))

	def test_disabled_and_deleted_templates_stop_firing(self):
		template = doc_event("ToDo", "New")
		template.enabled = 0
		template.save()
		make_todo()
		self.assertEqual(runs_of(template.name), [])

	def test_a_template_gone_from_the_database_never_breaks_the_users_save(self):
		template = doc_event("ToDo", "New")
		make_todo()  # the index is now cached with this template
		frappe.db.delete("Flow Template", template.name)  # gone behind the cache's back
		todo = make_todo("still saves")
		self.assertTrue(frappe.db.exists("ToDo", todo.name))
		self.assertEqual(frappe.local.message_log, [])

	def test_one_active_run_per_document(self):
		template = make_template(
			GATE_STEP,
			trigger={"type": "Document Event", "doctype": "ToDo", "event": "Save"},
			options={"one_active_run_per_document": True},
		)
		todo = make_todo()
		todo.description = "again"
		todo.save()
		self.assertEqual([r.status for r in runs_of(template.name)], ["Waiting"])
		other = make_todo()
		self.assertEqual(len(runs_of(template.name, reference_name=other.name)), 1)

	def test_recursion_is_stopped_at_the_depth_limit(self):
		# every save of a ToDo updates that ToDo, which saves it again...
		template = doc_event(
			"ToDo",
			"Save",
			steps=[
				{
					"id": "touch",
					"kind": "update_document",
					"payload": {
						"target": "trigger_document",
						"fields": {"description": "{{ doc.description }}+"},
					},
				}
			],
		)
		make_todo("loop")
		depths = sorted(r.depth for r in runs_of(template.name))
		self.assertEqual(depths, [0, 1, 2, 3, 4, 5])
		self.assertTrue(frappe.db.exists("Error Log", {"method": ("like", f"%{template.name}%recursion%")}))


class TestNamedEvents(TriggerTestCase):
	def test_patterns_match_and_the_run_carries_the_real_event_name(self):
		template = make_template(
			NOTE_STEP, trigger={"type": "Named Event", "event_pattern": "production_run.*"}
		)
		exact = make_template(
			NOTE_STEP, trigger={"type": "Named Event", "event_pattern": "production_run.assigned"}
		)
		todo = make_todo()
		runs = flow_automation.dispatch_event(
			"production_run.assigned", doc=todo, variables={"partner_phone": "+15550001"}
		)
		self.assertEqual(len(runs), 2)
		flow_automation.dispatch_event("production_run.cancelled", doc=todo)
		flow_automation.dispatch_event("production.assigned", doc=todo)
		self.assertEqual(
			[r.trigger_event for r in runs_of(template.name)],
			["production_run.assigned", "production_run.cancelled"],
		)
		self.assertEqual([r.trigger_event for r in runs_of(exact.name)], ["production_run.assigned"])
		run = runs_of(template.name)[0].name
		self.assertEqual(
			json.loads(frappe.db.get_value("Flow Run", run, "variables"))["partner_phone"], "+15550001"
		)
		self.assertTrue(frappe.db.exists("Note", {"title": f"production_run.assigned {todo.name} {run}"}))

	def test_condition_on_variables(self):
		template = make_template(
			NOTE_STEP,
			trigger={
				"type": "Named Event",
				"event_pattern": "order.*",
				"condition": {"field": "variables.amount", "op": ">", "value": 100},
			},
		)
		flow_automation.dispatch_event("order.placed", variables={"amount": 50})
		flow_automation.dispatch_event("order.placed", variables={"amount": 500})
		self.assertEqual(len(runs_of(template.name)), 1)

	def test_a_failed_run_raises_flow_run_failed_and_alerts_the_owner(self):
		watcher = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "Note",
						"fields": {"title": "failed: {{ variables.failed_template }}"},
					},
				}
			],
			trigger={"type": "Named Event", "event_pattern": "flow_run.failed"},
		)
		failing = make_template([failing_step()])

		run = runtime.start_run(failing.name, advance="now")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual([r.trigger_event for r in runs_of(watcher.name)], ["flow_run.failed"])
		self.assertTrue(frappe.db.exists("Note", {"title": f"failed: {failing.name}"}))
		self.assertTrue(
			frappe.db.exists("Notification Log", {"document_name": run, "for_user": "Administrator"})
		)


class TestSchedules(TriggerTestCase):
	def test_a_missed_schedule_fires_once_after_downtime(self):
		template = make_template(GATE_STEP, trigger={"type": "Schedule", "cron": "*/5 * * * *"})
		with self.freeze_time("2026-04-01 08:00:30"):
			frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-04-01 06:00:00")
			self.assertEqual(len(triggers.fire_schedules()), 1)  # 24 slots missed, one run
			self.assertEqual(triggers.fire_schedules(), [])  # the same slot never fires twice
		with self.freeze_time("2026-04-01 08:04:00"):
			self.assertEqual(triggers.fire_schedules(), [])
		with self.freeze_time("2026-04-01 08:05:00"):
			self.assertEqual(len(triggers.fire_schedules()), 1)
		self.assertEqual(
			str(frappe.db.get_value("Flow Template", template.name, "last_scheduled_at")),
			"2026-04-01 08:05:00",
		)

	def test_for_each_document_starts_one_run_per_matching_document(self):
		tag = unique("sched")
		matching = [make_todo(tag, priority="High") for _ in range(3)]
		make_todo(tag, priority="Low")
		template = make_template(
			GATE_STEP,
			trigger={
				"type": "Schedule",
				"cron": "0 9 * * *",
				"doctype": "ToDo",
				"for_each": True,
				"filters": {"description": tag, "priority": "High"},
			},
		)
		with self.freeze_time("2026-04-02 09:00:00"):
			frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-04-01 09:00:00")
			runs = triggers.fire_schedules()
		self.assertEqual(len(runs), 3)
		self.assertEqual(
			sorted(r.reference_name for r in runs_of(template.name)), sorted(t.name for t in matching)
		)

	def test_days_before_a_date_field(self):
		template = make_template(
			GATE_STEP,
			trigger={
				"type": "Document Event",
				"doctype": "ToDo",
				"event": "Days Before",
				"date_field": "date",
				"days": 2,
				"time": "09:00:00",
			},
		)
		due = make_todo(date="2026-06-12")
		make_todo(date="2026-06-13")
		frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-06-09 09:00:00")
		with self.freeze_time("2026-06-10 08:59:00"):
			self.assertEqual(triggers.fire_schedules(), [])
		with self.freeze_time("2026-06-10 09:00:30"):
			self.assertEqual(len(triggers.fire_schedules()), 1)
			self.assertEqual(triggers.fire_schedules(), [])
		self.assertEqual([r.reference_name for r in runs_of(template.name)], [due.name])

	def test_days_after(self):
		template = make_template(
			GATE_STEP,
			trigger={
				"type": "Document Event",
				"doctype": "ToDo",
				"event": "Days After",
				"date_field": "date",
				"days": 3,
				"time": "07:00:00",
			},
		)
		overdue = make_todo(date=str(add_days(getdate("2026-06-20"), -3)))
		frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-06-19 07:00:00")
		with self.freeze_time("2026-06-20 07:00:00"):
			triggers.fire_schedules()
		self.assertEqual([r.reference_name for r in runs_of(template.name)], [overdue.name])


class TestGuardRails(TriggerTestCase):
	def test_kill_switch_keeps_triggers_queued_until_it_is_lifted(self):
		template = doc_event("ToDo", "New")
		frappe.cache.delete_value("flow_automation:paused")
		with site_config(flow_automation_paused=1):
			todo = make_todo()
			self.assertEqual([r.status for r in runs_of(template.name)], ["Queued"])
			self.assertEqual(run_due(), 0)
			self.assertEqual(triggers.drain_outbox(add_days(now_datetime(), 1)), 0)
			self.assertIsNone(runtime.start_queued_run(runs_of(template.name)[0].name))
			self.assertEqual([r.status for r in runs_of(template.name)], ["Queued"])
		frappe.conf.pop("flow_automation_paused", None)
		self.assertEqual(triggers.drain_outbox(add_days(now_datetime(), 1)), 1)
		self.assertEqual([r.status for r in runs_of(template.name)], ["Completed"])
		self.assertTrue(frappe.db.exists("Note", {"title": ("like", f"New {todo.name} %")}))

	def test_max_concurrent_runs_queues_the_extra_runs(self):
		make_template(
			GATE_STEP,
			trigger={"type": "Named Event", "event_pattern": "slot.*"},
			options={"max_concurrent_runs": 1},
		)
		first, second = (flow_automation.dispatch_event("slot.take")[0] for _ in range(2))
		self.assertEqual(frappe.db.get_value("Flow Run", first, "status"), "Waiting")
		self.assertEqual(frappe.db.get_value("Flow Run", second, "status"), "Queued")
		runtime.complete_step(first, "gate", {})
		self.assertEqual(frappe.db.get_value("Flow Run", first, "status"), "Completed")
		self.assertEqual(frappe.db.get_value("Flow Run", second, "status"), "Waiting")

	def test_circuit_breaker_disables_a_template_after_consecutive_failures(self):
		template = make_template(
			[
				{
					"id": "boom",
					"kind": "update_document",
					"payload": {
						"target": "document",
						"doctype": "ToDo",
						"name": "{{ variables.target }}",
						"fields": {"status": "Closed"},
					},
				}
			],
			options={"max_consecutive_failures": 2},
		)
		runtime.start_run(template.name, variables={"target": "missing"}, advance="now")
		runtime.start_run(
			template.name, variables={"target": make_todo().name}, advance="now"
		)  # success resets
		self.assertEqual(frappe.db.get_value("Flow Template", template.name, "consecutive_failures"), 0)
		runtime.start_run(template.name, variables={"target": "missing"}, advance="now")
		self.assertEqual(frappe.db.get_value("Flow Template", template.name, "enabled"), 1)
		runtime.start_run(template.name, variables={"target": "missing"}, advance="now")
		self.assertEqual(
			frappe.db.get_value("Flow Template", template.name, ["enabled", "consecutive_failures"]), (0, 2)
		)
		self.assertTrue(
			frappe.db.exists(
				"Notification Log",
				{"for_user": "Administrator", "subject": ("like", f"%{template.name}%disabled%")},
			)
		)
		with self.assertRaisesRegex(frappe.ValidationError, "disabled"):
			runtime.start_run(template.name, advance="now")


class TestWebhookTrigger(TriggerTestCase):
	def setUp(self):
		super().setUp()
		self.template = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "Note",
						"fields": {"title": "hook {{ trigger.payload.order.id }}"},
					},
				}
			],
			trigger={"type": "Webhook"},
		)
		from frappe.utils.password import get_decrypted_password

		self.secret = get_decrypted_password("Flow Template", self.template.name, "webhook_secret")
		frappe.db.commit()
		self.client = get_test_client(use_cookies=False)

	def tearDown(self):
		for run in frappe.get_all("Flow Run", filters={"template": self.template.name}, pluck="name"):
			frappe.db.delete("Flow Step Log", {"run": run})
			frappe.db.delete("Flow Run", {"name": run})
		frappe.db.delete("Note", {"title": ("like", "hook %")})
		frappe.delete_doc("Flow Template", self.template.name, force=True)
		frappe.db.commit()
		super().tearDown()

	def post(self, body, secret=None, template=None):
		headers = {"X-Flow-Secret": secret} if secret else {}
		response = make_request(
			target=self.client.post,
			args=(
				f"/api/method/flow_automation.api.webhook_trigger?template={quote(template or self.template.name)}",
			),
			kwargs={"data": json.dumps(body), "content_type": "application/json", "headers": headers},
		)
		return response.status_code, response.json

	def test_only_the_right_secret_starts_a_run_and_the_body_is_the_payload(self):
		self.assertEqual(self.post({"order": {"id": 1}})[0], 403)
		self.assertEqual(self.post({"order": {"id": 1}}, secret="wrong")[0], 403)
		self.assertEqual(
			self.post({"order": {"id": 1}}, secret=self.secret, template="No Such Template")[0], 403
		)
		frappe.db.rollback()
		self.assertEqual(runs_of(self.template.name), [])
		status, body = self.post({"order": {"id": 77}}, secret=self.secret)
		self.assertEqual(status, 202, body)
		frappe.db.rollback()
		run = body["message"]["run"]
		self.assertEqual(
			json.loads(frappe.db.get_value("Flow Run", run, "trigger_data"))["payload"], {"order": {"id": 77}}
		)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "trigger_type"), "Webhook")

	def test_calls_are_rate_limited(self):
		from frappe.installer import update_site_config

		frappe.cache.delete_keys("rl:flow_automation.api.webhook_trigger")  # a fresh window for this test
		update_site_config("flow_automation_webhook_rate_limit", 3)  # requests read the site's config file
		try:
			statuses = [self.post({}, secret="wrong")[0] for _ in range(5)]
		finally:
			update_site_config("flow_automation_webhook_rate_limit", "None")
			frappe.local.conf.pop("flow_automation_webhook_rate_limit", None)
		self.assertEqual(statuses[:3], [403, 403, 403])
		self.assertEqual(statuses[3:], [429, 429])


class TestManualTrigger(TriggerTestCase):
	def test_manual_templates_reach_the_desk_with_the_boot_info(self):
		template = make_template(GATE_STEP, trigger={"type": "Manual", "doctype": "ToDo"})
		make_template(GATE_STEP, trigger={"type": "Manual", "doctype": "Note"}, enabled=False)
		bootinfo = frappe._dict()
		triggers.boot_session(bootinfo)
		self.assertIn(template.name, bootinfo.flow_automation_manual["ToDo"])
		self.assertNotIn("Note", {k for k, v in bootinfo.flow_automation_manual.items() if v})

	def test_start_many_starts_one_run_per_document(self):
		from flow_automation.api import start_many

		template = make_template(
			GATE_STEP,
			trigger={"type": "Manual", "doctype": "ToDo"},
			options={"one_active_run_per_document": True},
		)
		todos = [make_todo().name for _ in range(3)]
		runs = start_many(template.name, "ToDo", todos)["runs"]
		self.assertEqual(len(runs), 3)
		self.assertEqual(sorted(r.reference_name for r in runs_of(template.name)), sorted(todos))
		self.assertEqual(start_many(template.name, "ToDo", todos[:1])["runs"], [])  # already active
		with self.assertRaisesRegex(frappe.ValidationError, "does not exist"):
			start_many(template.name, "ToDo", ["no-such-todo"])

	def test_a_new_manual_template_reaches_users_with_a_cached_boot(self):
		frappe.cache.hset("bootinfo", "Administrator", {"cached": True})
		make_template(GATE_STEP, trigger={"type": "Manual", "doctype": "ToDo"})
		self.assertIsNone(frappe.cache.hget("bootinfo", "Administrator"))


class TestScheduleFailures(TriggerTestCase):
	def test_a_broken_schedule_is_logged_and_does_not_stop_the_others(self):
		broken = make_template(
			GATE_STEP,
			trigger={
				"type": "Schedule",
				"cron": "* * * * *",
				"doctype": "ToDo",
				"for_each": True,
				"filters": {"no_such_field": 1},
			},
		)
		fine = make_template(GATE_STEP, trigger={"type": "Schedule", "cron": "* * * * *"})
		for template in (broken, fine):
			frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-01-01 00:00:00")
		with self.freeze_time("2026-01-01 00:05:00"):
			runs = triggers.fire_schedules()
		self.assertEqual(len(runs), 1)
		self.assertEqual(len(runs_of(fine.name)), 1)
		self.assertTrue(frappe.db.exists("Error Log", {"method": f"Flow schedule of {broken.name} failed"}))


class TestTriggerIndex(TriggerTestCase):
	def test_a_part_built_from_an_older_snapshot_lasts_a_minute_at_most(self):
		"""A job whose snapshot predates a template's save may rebuild the index from it after the
		save cleared the cache; the index expires, so such a stale part does not last until the
		next template save."""
		triggers.clear_trigger_cache()
		name = frappe.cache.make_key(triggers.INDEX_KEY)
		self.assertEqual(frappe.cache.ttl(name), -2)  # cleared: no hash at all
		triggers.whatsapp_templates_for("menu")  # builds a part
		self.assertTrue(0 < frappe.cache.ttl(name) <= triggers.INDEX_SECONDS)
		frappe.cache.expire(name, 5)
		triggers.whatsapp_templates_for("menu")  # read from the cache: the expiry is not pushed back
		self.assertLessEqual(frappe.cache.ttl(name), 5)
