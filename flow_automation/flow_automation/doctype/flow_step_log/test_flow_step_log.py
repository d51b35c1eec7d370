# Copyright (c) 2026, flow_automation developers
# See license.txt

import frappe

from flow_automation import runtime
from flow_automation.flow_automation.doctype.flow_step_log.flow_step_log import FlowStepLog
from flow_automation.tests.utils import FlowTestCase, make_template


class TestFlowStepLog(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_log_clearing_removes_only_old_rows_and_is_registered_with_log_settings(self):
		template = make_template([{"id": "a", "kind": "set_variables", "payload": {"variables": {"x": 1}}}])
		with self.freeze_time("2025-01-01 10:00:00"):
			old = runtime.start_run(template.name, advance="now")
		fresh = runtime.start_run(template.name, advance="now")
		FlowStepLog.clear_old_logs(days=30)
		self.assertFalse(frappe.db.exists("Flow Step Log", {"run": old}))
		self.assertTrue(frappe.db.exists("Flow Step Log", {"run": fresh}))
		self.assertEqual(frappe.get_hooks("default_log_clearing_doctypes")["Flow Step Log"], [30])
