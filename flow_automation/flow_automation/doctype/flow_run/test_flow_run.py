# Copyright (c) 2026, flow_automation developers
# See license.txt

import frappe

from flow_automation import runtime
from flow_automation.tests.utils import FlowTestCase, make_template


class TestFlowRun(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_the_form_gets_a_timeline_of_steps_in_flow_order(self):
		template = make_template(
			[
				{"id": "first", "kind": "set_variables", "payload": {"variables": {"a": 1}}},
				{
					"id": "check",
					"kind": "condition",
					"depends_on": ["first"],
					"payload": {"field": "variables.a", "op": "==", "value": 2},
				},
				{"id": "yes", "kind": "wait", "parent_id": "check", "branch": "yes", "payload": {}},
				{
					"id": "later",
					"kind": "wait",
					"parent_id": "check",
					"branch": "no",
					"trigger": {"type": "after_delay", "hours": 1},
					"payload": {},
				},
			]
		)
		run = runtime.start_run(template.name, advance="now")
		doc = frappe.get_doc("Flow Run", run)
		doc.run_method("onload")
		timeline = doc.get_onload().timeline
		self.assertEqual([s["id"] for s in timeline], ["first", "check", "yes", "later"])
		by_id = {s["id"]: s for s in timeline}
		self.assertEqual(by_id["check"]["branch"], "no")
		self.assertEqual(by_id["yes"]["status"], "skipped")
		self.assertEqual(by_id["later"]["status"], "scheduled")
		self.assertTrue(by_id["later"]["due_at"])
		self.assertEqual([a.status for a in by_id["first"]["attempts"]], ["Success"])

	def test_runs_are_read_only_for_flow_users(self):
		meta = frappe.get_meta("Flow Run")
		self.assertTrue(meta.in_create)
		perms = {p.role: p for p in meta.permissions}
		self.assertTrue(perms["Flow User"].read)
		self.assertFalse(perms["Flow User"].write or perms["Flow User"].create or perms["Flow User"].delete)
		self.assertFalse(any(p.write for p in meta.permissions))
