"""WhatsApp Message: unique wamid, hash names, indexes for the hot lookups."""

from __future__ import annotations

import frappe

from flow_automation.tests.utils import FlowTestCase
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


class TestWhatsAppMessageRetention(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_old_messages_are_cleared_but_unprocessed_inbound_rows_stay(self):
		from flow_automation.whatsapp.doctype.whatsapp_message.whatsapp_message import WhatsAppMessage

		def message(wamid: str, processing_status: str) -> str:
			doc = frappe.get_doc(
				{
					"doctype": "WhatsApp Message",
					"direction": "Inbound",
					"wamid": wamid,
					"contact_number": "+16505551234",
					"status": "Received",
					"processing_status": processing_status,
				}
			).insert(ignore_permissions=True)
			return doc.name

		with self.freeze_time("2025-01-01 00:00:00"):
			done = message("wamid.retention.done", "Done")
			pending = message("wamid.retention.pending", "Pending")
		fresh = message("wamid.retention.fresh", "Done")
		WhatsAppMessage.clear_old_logs(days=30)
		self.assertFalse(frappe.db.exists("WhatsApp Message", done))
		self.assertTrue(frappe.db.exists("WhatsApp Message", pending))
		self.assertTrue(frappe.db.exists("WhatsApp Message", fresh))
