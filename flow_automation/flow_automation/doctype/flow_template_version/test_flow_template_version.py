# Copyright (c) 2026, flow_automation developers
# See license.txt

import frappe

from flow_automation import runtime
from flow_automation.tests.utils import FlowTestCase, make_template

GATE = [{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}]


class TestFlowTemplateVersion(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_versions_are_immutable_and_pinned_ones_cannot_be_deleted(self):
		template = make_template(GATE)
		version = frappe.get_doc("Flow Template Version", f"{template.name}-v1")
		self.assertEqual(version.version, 1)
		version.definition_hash = "tampered"
		with self.assertRaisesRegex(frappe.ValidationError, "immutable"):
			version.save()
		runtime.start_run(template.name, advance="now")
		with self.assertRaises(frappe.LinkExistsError):
			frappe.delete_doc("Flow Template Version", version.name)

	def test_users_cannot_create_versions_from_desk(self):
		self.assertFalse(frappe.has_permission("Flow Template Version", "create", user="Guest"))
		meta = frappe.get_meta("Flow Template Version")
		self.assertTrue(meta.in_create)
		self.assertFalse(any(p.create or p.write for p in meta.permissions))
