# Copyright (c) 2026, flow_automation developers
# See license.txt
"""The scheduler's inbox: claiming with leases, concurrency, crash recovery, backoff."""

import json
from unittest.mock import patch

import frappe
from frappe.utils import add_to_date, get_datetime, now_datetime

from flow_automation import runtime, scheduler
from flow_automation.runtime import store
from flow_automation.scheduler import MAX_CLAIMS, begin_claim_transaction, claim_due, lease_seconds, run_due
from flow_automation.tests.utils import FlowTestCase, make_template, pending, step_status

# Rows due in the year 2000, claimed "then": nothing else on the site is due that early,
# so the claims below see only these rows.
PAST = get_datetime("2000-01-01 00:00:00")
CLAIM_AT = get_datetime("2000-01-01 00:00:05")


def make_due_rows(count: int, run: str, template: str, at) -> list[str]:
	now = now_datetime()
	names = [frappe.generate_hash(length=12) for _ in range(count)]
	frappe.db.bulk_insert(
		"Flow Step Pending",
		store.PENDING_FIELDS,
		[
			(n, now, now, "Administrator", "Administrator", run, "nap", template, "delay", at, "Pending", 0)
			for n in names
		],
	)
	return names


class TestClaiming(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "hours": 1}, "payload": {}}]
		)
		cls.run_name = runtime.start_run(cls.template.name, advance="now")
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		frappe.db.delete("Flow Step Pending", {"run": cls.run_name})
		frappe.db.delete("Flow Step Log", {"run": cls.run_name})
		frappe.db.delete("Flow Run", {"name": cls.run_name})
		frappe.delete_doc("Flow Template", cls.template.name, force=True)
		frappe.db.commit()
		super().tearDownClass()

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete("Flow Step Pending", {"run": self.run_name})
		frappe.db.commit()
		super().tearDown()

	def test_two_connections_claiming_at_once_never_get_the_same_row(self):
		names = set(make_due_rows(20, self.run_name, self.template.name, PAST))
		frappe.db.commit()
		now = CLAIM_AT
		try:
			with self.primary_connection():
				begin_claim_transaction()
				first = claim_due(now, limit=12)  # this transaction stays open: its rows stay locked
			with self.secondary_connection():
				begin_claim_transaction()
				second = claim_due(now, limit=12)
		finally:
			with self.secondary_connection():
				frappe.db.rollback()
			with self.primary_connection():
				frappe.db.rollback()
		first_names = {r.name for r in first}
		second_names = {r.name for r in second}
		self.assertEqual(len(first_names), 12)
		self.assertEqual(len(second_names), 8)
		self.assertEqual(first_names & second_names, set())
		self.assertEqual(first_names | second_names, names)

	def test_claim_sets_a_lease_and_bumps_the_claim_count(self):
		(name,) = make_due_rows(1, self.run_name, self.template.name, PAST)
		now = CLAIM_AT
		claimed = [r for r in claim_due(now) if r.name == name]
		self.assertEqual(len(claimed), 1)
		row = frappe.db.get_value(
			"Flow Step Pending", name, ["status", "attempt", "lease_until"], as_dict=True
		)
		self.assertEqual((row.status, row.attempt), ("Running", 1))
		self.assertEqual(get_datetime(row.lease_until), add_to_date(now, seconds=lease_seconds()))
		self.assertGreater(lease_seconds(), 600)  # longer than the fire job's queue timeout
		self.assertEqual([r for r in claim_due(now) if r.name == name], [])  # leased: not claimed again

	def test_an_expired_lease_is_claimed_again(self):
		(name,) = make_due_rows(1, self.run_name, self.template.name, PAST)
		now = CLAIM_AT
		claim_due(now)
		later = add_to_date(now, seconds=lease_seconds() + 1)  # the worker was killed: no Done
		again = [r for r in claim_due(later) if r.name == name]
		self.assertEqual([r.attempt for r in again], [2])

	def test_a_row_that_keeps_crashing_its_worker_fails_and_fails_its_run(self):
		template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}]
		)
		run = runtime.start_run(template.name, advance="now")
		row = pending(run)[0].name
		frappe.db.set_value(
			"Flow Step Pending",
			row,
			{"status": "Running", "attempt": MAX_CLAIMS, "lease_until": "2000-01-01"},
		)
		run_due(inline=True)
		self.assertEqual(frappe.db.get_value("Flow Step Pending", row, "status"), "Failed")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("claimed 5 times", frappe.db.get_value("Flow Run", run, "error"))


class TestFiringAndBackoff(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_fired_rows_are_done_and_retries_back_off_with_jitter(self):
		template = make_template(
			[
				{
					"id": "flaky",
					"kind": "webhook",
					"payload": {"url": "http://127.0.0.1:9/refused"},
					"retry": {"max_attempts": 3, "backoff_seconds": 60},
				}
			]
		)
		from flow_automation.tests.utils import site_config

		with (
			site_config(flow_automation_allow_private_webhook_targets=1),
			self.freeze_time("2026-01-01 00:00:00"),
		):
			run = runtime.start_run(template.name, advance="now")
			first = pending(run)
			self.assertEqual([p.purpose for p in first], ["retry"])
			wait = (first[0].trigger_at - get_datetime("2026-01-01 00:00:00")).total_seconds()
			self.assertTrue(30 <= wait <= 60, wait)  # 60 s backoff, equal jitter
		with (
			site_config(flow_automation_allow_private_webhook_targets=1),
			self.freeze_time(first[0].trigger_at),
		):
			run_due()
			self.assertEqual(frappe.db.get_value("Flow Step Pending", first[0].name, "status"), "Done")
			second = pending(run)
			wait = (second[0].trigger_at - first[0].trigger_at).total_seconds()
			self.assertTrue(60 <= wait <= 120, wait)  # doubled
		with (
			site_config(flow_automation_allow_private_webhook_targets=1),
			self.freeze_time(second[0].trigger_at),
		):
			run_due()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual(step_status(run), {"flaky": "failed"})
		self.assertEqual(pending(run), [])
		attempts = frappe.get_all("Flow Step Log", filters={"run": run}, pluck="attempt", order_by="creation")
		self.assertEqual(attempts, [1, 2, 3])

	def test_retention_clears_old_finished_runs_logs_and_pending_rows(self):
		from flow_automation.flow_automation.doctype.flow_run.flow_run import FlowRun
		from flow_automation.flow_automation.doctype.flow_step_pending.flow_step_pending import (
			FlowStepPending,
		)

		template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}]
		)
		with self.freeze_time("2025-01-01 00:00:00"):
			old = runtime.start_run(template.name, advance="now")
		with self.freeze_time("2025-01-01 00:01:00"):
			run_due()
		fresh = runtime.start_run(template.name, advance="now")
		self.assertEqual(frappe.db.get_value("Flow Run", old, "status"), "Completed")
		FlowStepPending.clear_old_logs(days=30)
		FlowRun.clear_old_logs(days=30)
		self.assertFalse(frappe.db.exists("Flow Run", old))
		self.assertFalse(frappe.db.exists("Flow Step Log", {"run": old}))
		self.assertFalse(frappe.db.exists("Flow Step Pending", {"run": old}))
		self.assertTrue(frappe.db.exists("Flow Run", fresh))
		self.assertEqual(len(pending(fresh)), 1)  # open work is never cleared

	def test_pii_is_redacted_in_step_logs_when_the_setting_is_on(self):
		from frappe.tests.utils import change_settings

		template = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "Note",
						"fields": {"title": "Call +91 98765 43210 or mail jane.doe@example.com"},
					},
				}
			]
		)
		with change_settings("Flow Automation Settings", redact_pii=1):
			frappe.cache.delete_value("flow_automation:settings")
			run = runtime.start_run(template.name, advance="now")
		frappe.cache.delete_value("flow_automation:settings")
		log = frappe.get_all("Flow Step Log", filters={"run": run}, fields=["input", "pii_redacted"])[0]
		self.assertEqual(log.pii_redacted, 1)
		title = json.loads(log.input)["fields"]["title"]
		self.assertEqual(title, "Call +********3210 or mail j***@example.com")
		# the document itself is untouched: only the stored log is redacted
		self.assertTrue(
			frappe.db.exists("Note", {"title": "Call +91 98765 43210 or mail jane.doe@example.com"})
		)

	def test_a_row_fired_before_its_step_is_due_is_not_spent(self):
		template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "hours": 2}, "payload": {}}]
		)
		run = runtime.start_run(template.name, advance="now")
		row = pending(run)[0]
		# someone pulls the row forward by hand: it fires, but the step is not due yet
		frappe.db.set_value(
			"Flow Step Pending", row.name, "trigger_at", add_to_date(now_datetime(), minutes=-1)
		)
		run_due()
		self.assertEqual(frappe.db.get_value("Flow Step Pending", row.name, "status"), "Done")
		self.assertEqual(step_status(run), {"nap": "scheduled"})
		again = pending(run)
		self.assertEqual([p.step_id for p in again], ["nap"])
		self.assertEqual(again[0].trigger_at, row.trigger_at)  # the step's own due time


class TestRecovery(FlowTestCase):
	"""The cron and the workers own their transactions: a failure in one part or one run is
	rolled back, recorded and logged, and the rest goes on (the failure is injected here)."""

	def due_runs(self, count: int) -> list[str]:
		template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}]
		)
		with self.freeze_time(add_to_date(now_datetime(), minutes=-5)):
			runs = [runtime.start_run(template.name, advance="now") for _ in range(count)]
		frappe.db.commit()
		return runs

	def test_one_run_that_fails_to_fire_never_stops_the_others_and_keeps_its_error(self):
		broken, *fine = self.due_runs(3)
		real = scheduler.fire

		def fire(run, pending, now=None, **kw):
			if run == broken:
				frappe.db.set_value("Flow Run", run, "error", "half-written")  # undone with the rest
				raise RuntimeError("the database went away")
			return real(run, pending, now, **kw)

		errors = frappe.db.count("Error Log")
		with patch("flow_automation.scheduler.fire", fire):
			self.assertEqual(run_due(), 3)
		for run in fine:
			self.assertEqual(step_status(run), {"nap": "done"})
		self.assertEqual(frappe.db.get_value("Flow Run", broken, ["status", "error"]), ("Waiting", None))
		self.assertEqual(
			len(pending(broken, status="Running")), 1
		)  # left to its lease: the next claim retries
		self.assertEqual(frappe.db.count("Error Log"), errors + 1)
		self.assertTrue(
			frappe.db.exists("Error Log", {"method": f"Flow Run {broken}: firing due steps failed"})
		)

	def test_the_row_of_a_run_whose_advance_fails_records_the_error_for_the_next_claim(self):
		[run] = self.due_runs(1)
		with patch(
			"flow_automation.scheduler.advance_run", side_effect=RuntimeError("worker lost its database")
		):
			run_due()
		row = frappe.db.get_value("Flow Step Pending", {"run": run}, ["status", "last_error"], as_dict=True)
		self.assertEqual(row.status, "Running")
		self.assertEqual(row.last_error, "RuntimeError: worker lost its database")

	def test_a_deadlock_is_tried_again_and_the_run_fires_once(self):
		[run] = self.due_runs(1)
		real = scheduler.advance_run
		calls = []

		def advance_run(name, **kw):
			calls.append(name)
			if len(calls) == 1:
				raise frappe.QueryDeadlockError("Deadlock found when trying to get lock")
			return real(name, **kw)

		with patch("flow_automation.scheduler.advance_run", advance_run):
			run_due()
		self.assertEqual(calls, [run, run])
		self.assertEqual(step_status(run), {"nap": "done"})
		self.assertEqual(pending(run, status="Done")[0].step_id, "nap")

	def claim(self) -> list[tuple[str, list[str]]]:
		begin_claim_transaction()
		claimed = claim_due()
		frappe.db.commit()
		return [(row.run, [row.name]) for row in claimed]

	def test_a_group_that_cannot_commit_is_fired_again_one_run_at_a_time_each_once(self):
		runs = self.due_runs(3)
		batch = [b for b in self.claim() if b[0] in runs]
		self.assertEqual(len(batch), 3)
		real = scheduler.commit
		commits = []

		def commit():
			commits.append(1)
			if len(commits) == 1:  # the group's one commit: the connection drops
				raise frappe.db.OperationalError(2013, "Lost connection to server during query")
			real()

		with patch("flow_automation.scheduler.commit", commit):
			scheduler.fire_due_many(batch)
		self.assertEqual(len(commits), 1 + 3)  # the group's, then one per run
		for run in runs:
			self.assertEqual(step_status(run), {"nap": "done"})
			self.assertEqual(pending(run, status="Done")[0].step_id, "nap")
			self.assertEqual(
				frappe.db.count("Flow Step Log", {"run": run, "step_id": "nap", "status": "Success"}), 1
			)

	def test_a_run_undone_in_its_group_leaves_no_work_after_commit(self):
		broken, fine = self.due_runs(2)
		batch = [b for b in self.claim() if b[0] in (broken, fine)]
		real = scheduler.fire
		queued = []

		def fire(run, pending, now=None, **kw):
			real(run, pending, now, **kw)
			frappe.db.after_commit.add(lambda: queued.append(run))  # e.g. a job for a sub-flow
			if run == broken:
				raise RuntimeError("failed after its advance")

		with patch("flow_automation.scheduler.fire", fire):
			scheduler.fire_due_many(batch)
		self.assertEqual(queued, [fine])
		self.assertEqual(step_status(fine), {"nap": "done"})
		self.assertEqual(step_status(broken), {"nap": "scheduled"})  # undone: its lease retries it
		self.assertEqual(len(pending(broken, status="Running")), 1)

	def test_a_parent_resumed_by_its_child_in_the_same_group_is_not_overwritten_by_its_own_row(self):
		nap = {"kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}
		child = make_template([{"id": "child_nap", **nap}])
		parent = make_template(
			[
				{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}},
				{"id": "nap", **nap},
			]
		)
		with self.freeze_time(add_to_date(now_datetime(), minutes=-5)):
			run = runtime.start_run(parent.name, advance="now")
		frappe.db.commit()
		child_run = frappe.db.get_value("Flow Run", {"parent_run": run}, "name")
		claimed = dict(self.claim())
		# the child fires first and resumes its parent; then the parent's own row, whose run the
		# group loaded before the child changed it
		batch = [(child_run, claimed[child_run]), (run, claimed[run])]
		scheduler.fire_due_many(batch)
		self.assertEqual(step_status(child_run), {"child_nap": "done"})
		self.assertEqual(step_status(run), {"sub": "done", "nap": "done"})
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")

	def test_a_failing_part_of_the_minute_cron_is_logged_and_the_other_parts_still_run(self):
		[run] = self.due_runs(1)
		errors = frappe.db.count("Error Log")
		with patch("flow_automation.scheduler.fire_schedules", side_effect=RuntimeError("bad schedule")):
			scheduler.every_minute()
		self.assertEqual(step_status(run), {"nap": "done"})  # due steps fired after the failed part
		self.assertEqual(frappe.db.count("Error Log"), errors + 1)
		self.assertTrue(frappe.db.exists("Error Log", {"method": "Flow Automation cron: schedules failed"}))
