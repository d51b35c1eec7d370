"""WhatsApp Message: unique wamid, hash names, indexes for the hot lookups."""

from __future__ import annotations

import frappe

from flow_automation.tests.whatsapp_utils import WhatsAppTestCase, deliver, inbound_message


class TestWhatsAppMessage(WhatsAppTestCase):
	def test_wamid_and_idempotency_key_are_unique_in_the_table(self):
		body = inbound_message("unique")
		deliver(body)
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		with self.assertRaises(frappe.UniqueValidationError):
			frappe.get_doc(
				{"doctype": "WhatsApp Message", "direction": "Inbound", "wamid": message_id}
			).insert()
		frappe.get_doc(
			{"doctype": "WhatsApp Message", "direction": "Outbound", "idempotency_key": "k1"}
		).insert()
		with self.assertRaises(frappe.UniqueValidationError):
			frappe.get_doc(
				{"doctype": "WhatsApp Message", "direction": "Outbound", "idempotency_key": "k1"}
			).insert()

	def test_hot_lookups_are_indexed(self):
		indexed = {
			row.Column_name for row in frappe.db.sql("show index from `tabWhatsApp Message`", as_dict=True)
		}
		self.assertTrue(
			{"wamid", "idempotency_key", "dedup_key", "processing_status", "run", "contact_number"} <= indexed
		)
		self.assertEqual(frappe.get_meta("WhatsApp Message").autoname, "hash")
