"""Runs on a real site: every step kind start → finish, delays, waits, sub-flows, retries."""

from __future__ import annotations

import json

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation import runtime
from flow_automation.scheduler import run_due
from flow_automation.tests.utils import (
	FlowTestCase,
	RecordingServer,
	ensure_email_account,
	failing_step,
	logs,
	make_template,
	make_todo,
	pending,
	site_config,
	state,
	step_status,
	unique,
)


def start(template, doc=None, **kw) -> str:
	return runtime.start_run(
		template.name,
		reference_doctype=doc.doctype if doc else None,
		reference_name=doc.name if doc else None,
		advance="now",
		**kw,
	)


class TestStepKinds(FlowTestCase):
	def test_create_document_renders_fields_from_the_trigger_document(self):
		todo = make_todo("Call ACME", priority="High")
		template = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "Note",
						"fields": {"title": "About {{ doc.description }}", "public": 1},
					},
				}
			]
		)
		run = start(template, todo)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		output = state(run)["note"]["output"]
		self.assertEqual(output["doctype"], "Note")
		self.assertEqual(frappe.db.get_value("Note", output["name"], "title"), "About Call ACME")

	def test_create_document_with_an_unknown_field_fails_naming_it(self):
		template = make_template(
			[{"id": "bad", "kind": "create_document", "payload": {"doctype": "ToDo", "fields": {"nope": 1}}}]
		)
		run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("ToDo has no field 'nope'", frappe.db.get_value("Flow Run", run, "error"))
		self.assertEqual(frappe.db.count("ToDo", {"description": ["is", "not set"]}), 0)

	def test_update_document_changes_the_trigger_document(self):
		todo = make_todo("Update me")
		template = make_template(
			[
				{
					"id": "close",
					"kind": "update_document",
					"payload": {
						"target": "trigger_document",
						"fields": {"status": "Closed", "priority": "Low"},
					},
				}
			]
		)
		run = start(template, todo)
		self.assertEqual(frappe.db.get_value("ToDo", todo.name, ["status", "priority"]), ("Closed", "Low"))
		self.assertEqual(sorted(state(run)["close"]["output"]["changed"]), ["priority", "status"])

	def test_update_document_by_name(self):
		note = frappe.get_doc({"doctype": "Note", "title": unique("Note")}).insert()
		template = make_template(
			[
				{
					"id": "edit",
					"kind": "update_document",
					"payload": {
						"target": "document",
						"doctype": "Note",
						"name": note.name,
						"fields": {"content": "done"},
					},
				}
			]
		)
		start(template)
		self.assertEqual(frappe.db.get_value("Note", note.name, "content"), "done")

	def test_assign_creates_open_todos_for_each_user(self):
		note = frappe.get_doc({"doctype": "Note", "title": unique("Note")}).insert()
		template = make_template(
			[
				{
					"id": "assign",
					"kind": "assign",
					"payload": {
						"assign_to": ["Administrator"],
						"description": "Review {{ doc.title }}",
						"priority": "High",
					},
				}
			]
		)
		run = start(template, note)
		todos = frappe.get_all(
			"ToDo",
			filters={"reference_type": "Note", "reference_name": note.name, "status": "Open"},
			fields=["allocated_to", "description", "priority"],
		)
		self.assertEqual(len(todos), 1)
		self.assertEqual(todos[0].allocated_to, "Administrator")
		self.assertIn(f"Review {note.title}", todos[0].description)
		self.assertEqual(state(run)["assign"]["output"]["assigned_to"], ["Administrator"])

	def test_assign_to_a_missing_user_fails_without_retry(self):
		template = make_template(
			[
				{
					"id": "assign",
					"kind": "assign",
					"payload": {"assign_to": ["ghost@example.com"]},
					"retry": {"max_attempts": 3},
				}
			]
		)
		run = start(template, make_todo())
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual([l.attempt for l in logs(run)], [1])
		self.assertIn("ghost@example.com", frappe.db.get_value("Flow Run", run, "error"))

	def test_notify_email_is_queued_with_rendered_subject(self):
		todo = make_todo("Quote 42")
		template = make_template(
			[
				{
					"id": "mail",
					"kind": "notify",
					"payload": {
						"channel": "email",
						"to": ["buyer@example.com"],
						"subject": "About {{ doc.description }}",
						"body": "Hi",
					},
				}
			]
		)
		start(template, todo)
		queued = frappe.get_all(
			"Email Queue",
			filters={"reference_doctype": "ToDo", "reference_name": todo.name},
			fields=["message"],
		)
		self.assertEqual(len(queued), 1)
		self.assertIn("Subject: About Quote 42", queued[0].message)

	def test_notify_says_who_unsubscribed_instead_of_dropping_them_in_silence(self):
		todo = make_todo("Quote 43")
		frappe.get_doc(
			{"doctype": "Email Unsubscribe", "email": "gone@example.com", "global_unsubscribe": 1}
		).insert(ignore_permissions=True)
		frappe.get_doc(
			{
				"doctype": "Email Unsubscribe",
				"email": "this-doc@example.com",
				"reference_doctype": "ToDo",
				"reference_name": todo.name,
			}
		).insert(ignore_permissions=True)
		mail = {"channel": "email", "subject": "About {{ doc.description }}", "body": "Hi"}
		template = make_template(
			[
				{
					"id": "some",
					"kind": "notify",
					"payload": {**mail, "to": ["buyer@example.com", "gone@example.com"]},
				},
				{
					"id": "none",
					"kind": "notify",
					"payload": {**mail, "to": ["gone@example.com", "this-doc@example.com"]},
				},
			]
		)
		run = start(template, todo)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		steps = state(run)
		self.assertEqual(steps["some"]["output"]["recipients"], ["buyer@example.com"])
		self.assertEqual(steps["some"]["output"]["unsubscribed"], ["gone@example.com"])
		self.assertEqual(
			(steps["none"]["output"]["recipients"], steps["none"]["output"]["sent"]), ([], False)
		)
		self.assertEqual(
			steps["none"]["output"]["unsubscribed"], ["gone@example.com", "this-doc@example.com"]
		)
		recipients = frappe.get_all(
			"Email Queue Recipient",
			filters={
				"parent": ("in", frappe.get_all("Email Queue", {"reference_name": todo.name}, pluck="name"))
			},
			pluck="recipient",
		)
		self.assertEqual(recipients, ["buyer@example.com"])

	def test_notify_system_creates_a_notification_log(self):
		todo = make_todo("Alert me")
		template = make_template(
			[
				{
					"id": "bell",
					"kind": "notify",
					"payload": {
						"channel": "system",
						"to": ["Administrator"],
						"subject": "Look at {{ doc.description }}",
					},
				}
			]
		)
		start(template, todo)
		self.assertTrue(
			frappe.db.exists(
				"Notification Log",
				{"for_user": "Administrator", "subject": "Look at Alert me", "document_name": todo.name},
			)
		)

	def test_set_variables_and_switch(self):
		template = make_template(
			[
				{
					"id": "vars",
					"kind": "set_variables",
					"payload": {"variables": {"tier": "{{ doc.priority }}"}},
				},
				{
					"id": "route",
					"kind": "switch",
					"depends_on": ["vars"],
					"payload": {"value": "{{ variables.tier }}", "cases": ["High", "Low"]},
				},
				{
					"id": "high",
					"kind": "create_document",
					"parent_id": "route",
					"branch": "High",
					"payload": {"doctype": "Note", "fields": {"title": "high {{ doc.name }}"}},
				},
				{
					"id": "other",
					"kind": "create_document",
					"parent_id": "route",
					"branch": "default",
					"payload": {"doctype": "Note", "fields": {"title": "other {{ doc.name }}"}},
				},
			]
		)
		todo = make_todo(priority="High")
		run = start(template, todo)
		self.assertEqual(
			step_status(run), {"vars": "done", "route": "done", "high": "done", "other": "skipped"}
		)
		self.assertEqual(json.loads(frappe.db.get_value("Flow Run", run, "variables"))["tier"], "High")
		self.assertTrue(frappe.db.exists("Note", {"title": f"high {todo.name}"}))
		self.assertFalse(frappe.db.exists("Note", {"title": f"other {todo.name}"}))

	def test_every_attempt_is_logged_with_input_output_and_duration(self):
		template = make_template(
			[
				{
					"id": "a",
					"kind": "set_variables",
					"payload": {"variables": {"x": "{{ doc.description }}"}},
				},
				{
					"id": "b",
					"kind": "create_document",
					"depends_on": ["a"],
					"payload": {"doctype": "Note", "fields": {"title": "{{ variables.x }}"}},
				},
			]
		)
		run = start(template, make_todo("logged"))
		rows = logs(run)
		self.assertEqual(
			[(r.step_id, r.status, r.attempt) for r in rows], [("a", "Success", 1), ("b", "Success", 1)]
		)
		self.assertEqual(json.loads(rows[1].input)["fields"]["title"], "logged")
		self.assertEqual(json.loads(rows[1].output)["doctype"], "Note")
		self.assertGreater(rows[1].duration_ms, 0)


class TestWebhookStep(FlowTestCase):
	def test_posts_rendered_json_with_an_idempotency_key_and_stores_the_response(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			server.responses.append((201, {"id": "crm-7"}))
			template = make_template(
				[
					{
						"id": "crm",
						"kind": "webhook",
						"payload": {
							"url": server.url + "/hook",
							"headers": {"X-Tenant": "t1"},
							"body": {"todo": "{{ doc.name }}", "n": [1, 2]},
						},
					}
				]
			)
			todo = make_todo()
			run = start(template, todo)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(server.json_bodies(), [{"todo": todo.name, "n": [1, 2]}])
		headers = server.requests[0]["headers"]
		self.assertEqual(headers["X-Tenant"], "t1")
		self.assertEqual(headers["Idempotency-Key"], f"{run}:crm:1")
		self.assertEqual(
			state(run)["crm"]["output"], {"status_code": 201, "body": {"id": "crm-7"}, "truncated": False}
		)

	def test_non_2xx_fails_and_retries_with_the_same_idempotency_key(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			server.responses += [(503, {"error": "busy"}), (200, {"ok": True})]
			template = make_template(
				[
					{
						"id": "crm",
						"kind": "webhook",
						"payload": {"url": server.url},
						"retry": {"max_attempts": 3, "backoff_seconds": 10},
					}
				]
			)
			run = start(template)
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Waiting")
			self.assertIn("HTTP 503", state(run)["crm"]["error"])
			due = pending(run)
			self.assertEqual([(p.step_id, p.purpose) for p in due], [("crm", "retry")])
			run_due(now=add_to_date(now_datetime(), seconds=11), inline=True)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		keys = [r["headers"]["Idempotency-Key"] for r in server.requests]
		self.assertEqual(keys, [f"{run}:crm:1", f"{run}:crm:1"])
		self.assertEqual([(l.attempt, l.status) for l in logs(run)], [(1, "Failed"), (2, "Success")])

	def test_a_manual_retry_sends_a_new_idempotency_key(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			server.responses += [(422, {"error": "bad"}), (200, {"ok": True})]
			template = make_template([{"id": "crm", "kind": "webhook", "payload": {"url": server.url}}])
			run = start(template)
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
			runtime.retry_steps(run, ["crm"])
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		keys = [r["headers"]["Idempotency-Key"] for r in server.requests]
		self.assertEqual(keys, [f"{run}:crm:1", f"{run}:crm:2"])

	def test_client_errors_do_not_retry(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			server.responses.append((422, {"error": "bad"}))
			template = make_template(
				[
					{
						"id": "crm",
						"kind": "webhook",
						"payload": {"url": server.url},
						"retry": {"max_attempts": 3},
					}
				]
			)
			run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual(len(server.requests), 1)

	def test_loopback_targets_are_refused_unless_the_site_allows_them(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=None):
			template = make_template([{"id": "crm", "kind": "webhook", "payload": {"url": server.url}}])
			run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("private/loopback/link-local", frappe.db.get_value("Flow Run", run, "error"))
		self.assertEqual(server.requests, [])

	def test_large_responses_are_truncated(self):
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			server.responses.append((200, b"x" * 200_000))
			template = make_template(
				[{"id": "crm", "kind": "webhook", "payload": {"url": server.url, "method": "GET"}}]
			)
			run = start(template)
		output = state(run)["crm"]["output"]
		self.assertTrue(output["truncated"])
		self.assertEqual(len(output["body"]), 32 * 1024)


class TestDelaysAndWaits(FlowTestCase):
	def test_delayed_step_becomes_a_pending_row_and_fires_when_due(self):
		template = make_template(
			[
				{"id": "first", "kind": "set_variables", "payload": {"variables": {"a": 1}}},
				{
					"id": "later",
					"kind": "create_document",
					"depends_on": ["first"],
					"trigger": {"type": "after_delay", "hours": 2},
					"payload": {"doctype": "Note", "fields": {"title": "later {{ doc.name }}"}},
				},
			]
		)
		todo = make_todo()
		with self.freeze_time("2026-03-01 10:00:00"):
			run = start(template, todo)
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Waiting")
			rows = pending(run)
			self.assertEqual(
				[(r.step_id, str(r.trigger_at)) for r in rows], [("later", "2026-03-01 12:00:00")]
			)
			self.assertEqual(run_due(), 0)  # not yet due
		with self.freeze_time("2026-03-01 12:00:01"):
			self.assertEqual(run_due(), 1)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(pending(run, status="Done")[0].step_id, "later")
		self.assertTrue(frappe.db.exists("Note", {"title": f"later {todo.name}"}))

	def test_on_date_step_waits_for_the_rendered_date(self):
		todo = make_todo(date="2026-05-10")
		template = make_template(
			[
				{
					"id": "remind",
					"kind": "notify",
					"trigger": {"type": "on_date", "at": "{{ doc.date }} 09:00:00"},
					"payload": {"channel": "system", "to": ["Administrator"], "subject": "due"},
				}
			]
		)
		with self.freeze_time("2026-05-01 08:00:00"):
			run = start(template, todo)
		self.assertEqual(str(pending(run)[0].trigger_at), "2026-05-10 09:00:00")
		with self.freeze_time("2026-05-10 09:00:00"):
			run_due()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")

	def test_manual_step_waits_until_completed_and_exposes_the_result(self):
		template = make_template(
			[
				{"id": "approve", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}},
				{
					"id": "note",
					"kind": "create_document",
					"depends_on": ["approve"],
					"payload": {
						"doctype": "Note",
						"fields": {"title": "approved by {{ steps.approve.output.by }}"},
					},
				},
			]
		)
		run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Waiting")
		self.assertEqual(step_status(run)["approve"], "waiting")
		runtime.complete_step(run, "approve", {"by": "Jane"})
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertTrue(frappe.db.exists("Note", {"title": "approved by Jane"}))
		with self.assertRaises(frappe.ValidationError):
			runtime.complete_step(run, "approve", {})

	def test_on_webhook_step_executes_its_kind_when_completed(self):
		template = make_template(
			[
				{
					"id": "paid",
					"kind": "create_document",
					"trigger": {"type": "on_webhook"},
					"payload": {"doctype": "Note", "fields": {"title": "paid {{ result.ref }}"}},
				}
			]
		)
		run = start(template)
		self.assertEqual(step_status(run), {"paid": "waiting"})
		runtime.complete_step(run, "paid", {"ref": "PAY-1"})
		self.assertTrue(frappe.db.exists("Note", {"title": "paid PAY-1"}))
		self.assertEqual(state(run)["paid"]["output"]["ref"], "PAY-1")

	def test_completing_a_step_that_is_not_waiting_is_a_clear_error(self):
		template = make_template(
			[
				{"id": "a", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}},
				{
					"id": "b",
					"kind": "wait",
					"depends_on": ["a"],
					"trigger": {"type": "manual"},
					"payload": {},
				},
			]
		)
		run = start(template)
		with self.assertRaisesRegex(frappe.ValidationError, "step 'b' is not waiting"):
			runtime.complete_step(run, "b", {})
		with self.assertRaisesRegex(frappe.ValidationError, "no step 'zzz'"):
			runtime.complete_step(run, "zzz", {})


class TestBranchesAndParallel(FlowTestCase):
	def test_parallel_branches_join_after_both_finish(self):
		template = make_template(
			[
				{"id": "left", "kind": "set_variables", "payload": {"variables": {"l": 1}}},
				{
					"id": "slow",
					"kind": "wait",
					"trigger": {"type": "after_delay", "minutes": 30},
					"payload": {},
				},
				{
					"id": "join",
					"kind": "create_document",
					"depends_on": ["left", "slow"],
					"payload": {"doctype": "Note", "fields": {"title": "joined {{ run.name }}"}},
				},
			]
		)
		with self.freeze_time("2026-01-01 00:00:00"):
			run = start(template)
			self.assertEqual(step_status(run), {"left": "done", "slow": "scheduled"})
		with self.freeze_time("2026-01-01 00:30:00"):
			run_due()
		self.assertEqual(step_status(run), {"left": "done", "slow": "done", "join": "done"})
		self.assertTrue(frappe.db.exists("Note", {"title": f"joined {run}"}))

	def test_condition_reloads_the_document_and_skips_the_branch_not_taken(self):
		todo = make_todo(status="Open")
		template = make_template(
			[
				{
					"id": "check",
					"kind": "condition",
					"trigger": {"type": "after_delay", "days": 3},
					"payload": {"reload_document": True, "field": "doc.status", "op": "==", "value": "Open"},
				},
				{
					"id": "remind",
					"kind": "notify",
					"parent_id": "check",
					"branch": "yes",
					"payload": {"channel": "system", "to": ["Administrator"], "subject": "still open"},
				},
				{
					"id": "thanks",
					"kind": "notify",
					"parent_id": "check",
					"branch": "no",
					"payload": {"channel": "system", "to": ["Administrator"], "subject": "closed"},
				},
				{"id": "after_thanks", "kind": "wait", "depends_on": ["thanks"], "payload": {}},
			]
		)
		with self.freeze_time("2026-02-01 10:00:00"):
			run = start(template, todo)
		frappe.db.set_value("ToDo", todo.name, "status", "Closed")
		with self.freeze_time("2026-02-04 10:00:00"):
			run_due()
		self.assertEqual(
			step_status(run), {"check": "done", "remind": "skipped", "thanks": "done", "after_thanks": "done"}
		)
		self.assertEqual(state(run)["check"]["branch"], "no")


class TestSubFlows(FlowTestCase):
	def test_parent_waits_for_a_child_and_reads_its_variables(self):
		child = make_template(
			[
				{
					"id": "compute",
					"kind": "set_variables",
					"payload": {"variables": {"score": "{{ variables.base }}0"}},
				}
			],
			variables={"base": "0"},
		)
		parent = make_template(
			[
				{
					"id": "sub",
					"kind": "start_flow",
					"payload": {"template": child.name, "wait": True, "variables": {"base": "4"}},
				},
				{
					"id": "use",
					"kind": "create_document",
					"depends_on": ["sub"],
					"payload": {
						"doctype": "Note",
						"fields": {"title": "score {{ steps.sub.output.variables.score }}"},
					},
				},
			]
		)
		run = start(parent, make_todo())
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		child_run = state(run)["sub"]["output"]["run"]
		self.assertEqual(
			frappe.db.get_value("Flow Run", child_run, ["status", "parent_run", "depth"]),
			("Completed", run, 1),
		)
		self.assertTrue(frappe.db.exists("Note", {"title": "score 40"}))

	def parent_that_fails_while_its_child_waits(self, child_steps: list) -> tuple[str, str]:
		child = make_template(child_steps)
		parent = make_template(
			[
				{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}},
				failing_step(),
			]
		)
		run = start(parent)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		child_run = frappe.db.get_value("Flow Run", {"parent_run": run}, "name")
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Waiting")
		return run, child_run

	def test_a_child_that_finishes_after_its_parent_failed_finishes_normally(self):
		with self.freeze_time("2026-01-01 00:00:00"):
			run, child_run = self.parent_that_fails_while_its_child_waits(
				[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "hours": 1}, "payload": {}}]
			)
			parent_before = frappe.db.get_value(
				"Flow Run", run, ["status", "error", "step_state", "modified"]
			)
		errors_before = frappe.db.count("Error Log")
		with self.freeze_time("2026-01-01 01:00:00"):
			self.assertEqual(run_due(), 1)  # the child's timer, fired as the cron fires it
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Completed")
		self.assertEqual(pending(child_run, status="Running"), [])  # spent, not left for another claim
		self.assertEqual(
			frappe.db.get_value("Flow Run", run, ["status", "error", "step_state", "modified"]), parent_before
		)
		self.assertEqual(frappe.db.count("Error Log"), errors_before)

	def test_a_child_of_a_failed_parent_can_still_be_cancelled(self):
		run, child_run = self.parent_that_fails_while_its_child_waits(
			[{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}]
		)
		runtime.cancel_run(child_run, "not needed any more")
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Cancelled")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")

	def test_cancelling_a_parent_cancels_its_waiting_child(self):
		child = make_template([{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}])
		parent = make_template(
			[{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}}]
		)
		run = start(parent)
		child_run = frappe.db.get_value("Flow Run", {"parent_run": run}, "name")
		runtime.cancel_run(run)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Cancelled")
		self.assertEqual(
			frappe.db.get_value("Flow Run", child_run, ["status", "error"]),
			("Cancelled", f"Parent run {run} was cancelled"),
		)

	def test_retrying_a_failed_parent_picks_up_a_child_that_finished_meanwhile(self):
		run, child_run = self.parent_that_fails_while_its_child_waits(
			[{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}]
		)
		runtime.complete_step(child_run, "gate", {})
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Completed")
		self.assertEqual(state(run)["sub"]["status"], "cancelled")  # parked while the parent is failed
		# the retried step fails again (its ToDo still does not exist); the sub-flow's result is kept
		runtime.retry_steps(run, ["boom"])
		self.assertEqual(state(run)["sub"]["status"], "done")
		self.assertEqual(state(run)["sub"]["output"]["run"], child_run)

	def test_a_delayed_child_resumes_the_parent_when_it_finishes(self):
		child = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "hours": 1}, "payload": {}}]
		)
		parent = make_template(
			[{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}}]
		)
		with self.freeze_time("2026-01-01 00:00:00"):
			run = start(parent)
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Waiting")
		with self.freeze_time("2026-01-01 01:00:00"):
			run_due()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")

	def test_a_failed_child_fails_the_waiting_step(self):
		child = make_template(
			[
				{
					"id": "boom",
					"kind": "create_document",
					"payload": {"doctype": "No Such Doctype", "fields": {"x": 1}},
				}
			]
		)
		parent = make_template(
			[{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}}]
		)
		run = start(parent)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("sub-flow run", frappe.db.get_value("Flow Run", run, "error"))

	def test_fire_and_forget_child(self):
		child = make_template([{"id": "x", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}])
		parent = make_template([{"id": "sub", "kind": "start_flow", "payload": {"template": child.name}}])
		run = start(parent)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		child_run = state(run)["sub"]["output"]["run"]
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Waiting")

	def test_recursion_depth_is_limited(self):
		name = unique()
		template = make_template(
			[{"id": "again", "kind": "start_flow", "payload": {"template": name, "wait": True}}], name=name
		)
		run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		depths = frappe.get_all("Flow Run", filters={"template": template.name}, pluck="depth")
		self.assertEqual(max(depths), 5)


class TestFailuresRetryCancel(FlowTestCase):
	def failing_template(self, on_error: str, **kw):
		steps = [
			{
				"id": "boom",
				"kind": "update_document",
				"payload": {
					"target": "document",
					"doctype": "ToDo",
					"name": "missing-todo",
					"fields": {"status": "Closed"},
				},
				"on_error": on_error,
				**kw,
			},
			{
				"id": "after",
				"kind": "set_variables",
				"depends_on": ["boom"],
				"payload": {"variables": {"after": 1}},
			},
		]
		if on_error == "branch":
			steps.append(
				{
					"id": "handler",
					"kind": "set_variables",
					"parent_id": "boom",
					"branch": "error",
					"payload": {"variables": {"handled": "{{ steps.boom.error }}"}},
				}
			)
		return make_template(steps)

	def test_on_error_fail_fails_the_run(self):
		run = start(self.failing_template("fail"))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual(step_status(run), {"boom": "failed"})
		self.assertIn("step 'boom'", frappe.db.get_value("Flow Run", run, "error"))

	def test_on_error_continue_goes_on(self):
		run = start(self.failing_template("continue"))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(step_status(run), {"boom": "failed", "after": "done"})

	def test_on_error_branch_runs_the_error_branch_only(self):
		run = start(self.failing_template("branch"))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(step_status(run), {"boom": "failed", "after": "skipped", "handler": "done"})
		handled = json.loads(frappe.db.get_value("Flow Run", run, "variables"))["handled"]
		self.assertIn("missing-todo", handled)

	def test_a_failed_step_rolls_back_only_its_own_writes(self):
		template = make_template(
			[
				{
					"id": "ok",
					"kind": "create_document",
					"payload": {"doctype": "Note", "fields": {"title": "kept {{ run.name }}"}},
				},
				{
					"id": "bad",
					"kind": "create_document",
					"depends_on": ["ok"],
					"payload": {"doctype": "ToDo", "fields": {"description": "x", "status": "Not A Status"}},
				},
			]
		)
		run = start(template)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertTrue(frappe.db.exists("Note", {"title": f"kept {run}"}))
		self.assertFalse(frappe.db.exists("ToDo", {"description": "x", "status": "Not A Status"}))

	def test_manual_retry_of_a_failed_step_continues_the_run(self):
		run = start(self.failing_template("fail"))
		# make the step succeed on retry: the document it targets now exists
		frappe.db.sql("update `tabToDo` set name='missing-todo' where name=%s", make_todo().name)
		runtime.retry_steps(run, ["boom"])
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(step_status(run), {"boom": "done", "after": "done"})
		self.assertEqual(
			[(l.step_id, l.attempt, l.status) for l in logs(run)][-2:],
			[("boom", 1, "Success"), ("after", 1, "Success")],
		)
		self.assertEqual(state(run)["boom"]["attempt_group"], 2)

	def test_retry_restores_the_parallel_branch_a_failure_parked(self):
		template = make_template(
			[
				{
					"id": "timer",
					"kind": "wait",
					"trigger": {"type": "after_delay", "hours": 5},
					"payload": {},
				},
				failing_step(),
			]
		)
		with self.freeze_time("2026-01-01 00:00:00"):
			run = start(template)
			self.assertEqual(step_status(run), {"timer": "cancelled", "boom": "failed"})
			self.assertEqual(pending(run), [])
			with self.assertRaisesRegex(frappe.ValidationError, "has not failed"):
				runtime.retry_steps(run, ["timer"])
			frappe.db.sql("update `tabToDo` set name='nope' where name=%s", make_todo().name)
			runtime.retry_steps(run, ["boom"])
			self.assertEqual(step_status(run), {"timer": "scheduled", "boom": "done"})
			self.assertEqual([str(p.trigger_at) for p in pending(run)], ["2026-01-01 05:00:00"])

	def test_cancel_stops_open_steps_timers_and_children(self):
		child = make_template([{"id": "wait", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}])
		template = make_template(
			[
				{"id": "later", "kind": "wait", "trigger": {"type": "after_delay", "days": 1}, "payload": {}},
				{"id": "sub", "kind": "start_flow", "payload": {"template": child.name, "wait": True}},
			]
		)
		run = start(template)
		child_run = state(run)["sub"]["output"]["run"]
		runtime.cancel_run(run, "not needed")
		self.assertEqual(
			frappe.db.get_value("Flow Run", run, ["status", "error"]), ("Cancelled", "not needed")
		)
		self.assertEqual(step_status(run), {"later": "cancelled", "sub": "cancelled"})
		self.assertEqual(pending(run), [])
		self.assertEqual(frappe.db.get_value("Flow Run", child_run, "status"), "Cancelled")
		with self.assertRaises(frappe.ValidationError):
			runtime.cancel_run(run)

	def test_start_flow_with_a_missing_template_fails_clearly(self):
		template = make_template([{"id": "sub", "kind": "start_flow", "payload": {"template": "x"}}])
		run = start(template)
		self.assertIn("does not exist", frappe.db.get_value("Flow Run", run, "error"))

	def test_a_disabled_template_cannot_start(self):
		template = make_template(
			[{"id": "a", "kind": "wait", "payload": {}, "trigger": {"type": "manual"}}], enabled=False
		)
		with self.assertRaisesRegex(frappe.ValidationError, "disabled"):
			start(template)


class TestPinnedVersion(FlowTestCase):
	def test_editing_a_template_does_not_change_runs_in_flight(self):
		template = make_template(
			[
				{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}},
				{
					"id": "note",
					"kind": "create_document",
					"depends_on": ["gate"],
					"payload": {"doctype": "Note", "fields": {"title": "v1 {{ run.name }}"}},
				},
			]
		)
		run = start(template)
		template.steps[1].payload = json.dumps({"doctype": "Note", "fields": {"title": "v2 {{ run.name }}"}})
		template.save()
		self.assertEqual(template.version, 2)
		runtime.complete_step(run, "gate", {})
		self.assertTrue(frappe.db.exists("Note", {"title": f"v1 {run}"}))
		new_run = start(template)
		runtime.complete_step(new_run, "gate", {})
		self.assertTrue(frappe.db.exists("Note", {"title": f"v2 {new_run}"}))
		self.assertEqual(frappe.db.get_value("Flow Run", new_run, "template_version"), f"{template.name}-v2")


class TestSimulate(FlowTestCase):
	def test_simulate_executes_for_real_but_leaves_no_rows_behind(self):
		todo = make_todo("Dry")
		with RecordingServer() as server, site_config(flow_automation_allow_private_webhook_targets=1):
			template = make_template(
				[
					{
						"id": "note",
						"kind": "create_document",
						"payload": {"doctype": "Note", "fields": {"title": "dry {{ doc.description }}"}},
					},
					{
						"id": "mail",
						"kind": "notify",
						"depends_on": ["note"],
						"trigger": {"type": "after_delay", "days": 2},
						"payload": {"to": ["a@example.com"], "subject": "made {{ steps.note.output.name }}"},
					},
					{
						"id": "crm",
						"kind": "webhook",
						"depends_on": ["mail"],
						"payload": {"url": server.url, "body": {"x": 1}},
					},
				]
			)
			counts = {
				dt: frappe.db.count(dt)
				for dt in ("Note", "Email Queue", "Flow Run", "Flow Step Log", "Flow Step Pending")
			}
			result = runtime.simulate_template(
				template.name, reference_doctype="ToDo", reference_name=todo.name
			)
			self.assertEqual(server.requests, [])
		self.assertEqual(result.status, "Completed")
		executed = [e for e in result.timeline if e.action == "executed"]
		self.assertEqual([e.step_id for e in executed], ["note", "mail", "crm"])
		self.assertEqual((executed[1].at - executed[0].at).days, 2)
		note_name = executed[0].output["name"]
		self.assertIn(note_name, executed[1].payload["subject"])
		self.assertEqual([c["action"] for c in result.calls], ["email", "http"])
		self.assertEqual({dt: frappe.db.count(dt) for dt in counts}, counts)
		self.assertFalse(frappe.db.exists("Note", note_name))

	def test_a_dry_run_shows_a_step_whose_rendered_payload_cannot_run_as_failed_with_the_reason(self):
		todo = make_todo("no phone here")
		template = make_template(
			[
				{
					"id": "hello",
					"kind": "send_whatsapp",
					"payload": {
						"to": "{{ doc.mobile_no }}",
						"mode": "text",
						"text": "Hi {{ doc.description }}",
					},
				},
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		)
		result = runtime.simulate_template(template.name, reference_doctype="ToDo", reference_name=todo.name)
		by_step = {
			entry.step_id: entry for entry in result.timeline if entry.action in ("executed", "failed")
		}
		self.assertEqual(by_step["hello"].action, "failed")
		self.assertEqual(by_step["hello"].error, "to: rendered to an empty value")
		self.assertEqual(result.status, "Failed")
		self.assertEqual(result.calls, [])  # nothing would have been sent
		# the same check a real run makes
		run = runtime.start_run(
			template.name, reference_doctype="ToDo", reference_name=todo.name, advance="now"
		)
		self.assertEqual(state(run)["hello"]["error"], "to: rendered to an empty value")
