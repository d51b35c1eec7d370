"""A process's copy of a cached fact: read once, kept for its seconds, per site, cleared."""

from __future__ import annotations

import time

import frappe
from frappe.tests.utils import FrappeTestCase

from flow_automation.process_copy import process_copy


class TestProcessCopy(FrappeTestCase):
	def test_a_copy_is_read_once_kept_for_its_seconds_and_cleared_on_demand(self):
		loads = []

		@process_copy(0.2)
		def facts() -> int:
			loads.append(frappe.local.site)
			return len(loads)

		self.assertEqual((facts(), facts()), (1, 1))  # kept
		facts.clear()
		self.assertEqual(facts(), 2)  # read afresh
		time.sleep(0.25)
		self.assertEqual(facts(), 3)  # expired
		self.assertEqual(facts.__name__, "facts")

	def test_each_site_has_its_own_copy(self):
		@process_copy(60)
		def site_name() -> str:
			return frappe.local.site

		here = frappe.local.site
		self.assertEqual(site_name(), here)
		frappe.local.site = "another.site"
		try:
			self.assertEqual(site_name(), "another.site")
		finally:
			frappe.local.site = here
		self.assertEqual(site_name(), here)
