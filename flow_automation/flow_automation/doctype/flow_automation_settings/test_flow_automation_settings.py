# Copyright (c) 2026, flow_automation developers
# See license.txt

import frappe
from frappe.tests.utils import FrappeTestCase, change_settings

from flow_automation.settings import is_paused
from flow_automation.tests.utils import FlowTestCase, site_config


class TestFlowAutomationSettings(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		frappe.cache.delete_value(["flow_automation:paused", "flow_automation:settings"])
		super().tearDown()

	def test_kill_switch_from_settings_and_site_config_override(self):
		frappe.cache.delete_value("flow_automation:paused")
		self.assertFalse(is_paused())
		with change_settings("Flow Automation Settings", pause_all=1):
			self.assertTrue(is_paused())  # saving the settings cleared the cached flag
			with site_config(flow_automation_paused=0):
				self.assertFalse(is_paused())
		frappe.cache.delete_value("flow_automation:paused")
		with site_config(flow_automation_paused=1):
			self.assertTrue(is_paused())

	def test_lease_must_outlast_a_job(self):
		settings = frappe.get_doc("Flow Automation Settings")
		settings.lease_seconds = 10
		with self.assertRaisesRegex(frappe.ValidationError, "at least 60"):
			settings.save()

	def test_a_lease_left_empty_is_the_default_and_the_form_still_saves(self):
		settings = frappe.get_doc("Flow Automation Settings")
		settings.lease_seconds = 0
		settings.pause_all = 0
		settings.save()
		self.assertEqual(settings.lease_seconds, 1800)

	def test_the_scheduler_status_names_when_the_minute_cron_last_ran(self):
		from frappe.utils import get_datetime

		from flow_automation.desk import get_scheduler_status

		job = frappe.get_doc("Scheduled Job Type", {"method": "flow_automation.scheduler.every_minute"})
		self.assertEqual(job.frequency, "Cron")
		job.execute()  # as Frappe's scheduler runs it (it commits and records the time)
		ran = frappe.db.get_value("Scheduled Job Type", job.name, "last_execution")
		self.assertIsNotNone(ran)
		self.assertEqual(get_datetime(get_scheduler_status()["last_cron_run"]), get_datetime(ran))
