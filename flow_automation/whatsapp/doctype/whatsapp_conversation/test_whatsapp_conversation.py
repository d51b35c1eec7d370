"""WhatsApp Conversation: one per E.164 number, the 24-hour window, flags stamped."""

from __future__ import annotations

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation.tests.whatsapp_utils import CONTACT, WhatsAppTestCase, open_window
from flow_automation.whatsapp import conversations


class TestWhatsAppConversation(WhatsAppTestCase):
	def test_the_number_is_normalised_and_is_the_name(self):
		doc = frappe.get_doc(
			{"doctype": "WhatsApp Conversation", "contact_number": "+1 (650) 555-1234"}
		).insert()
		self.assertEqual(doc.name, CONTACT)
		with self.assertRaises(frappe.ValidationError):
			frappe.get_doc({"doctype": "WhatsApp Conversation", "contact_number": "call me"}).insert()

	def test_the_window_is_24_hours_from_the_last_inbound_message(self):
		now = now_datetime()
		open_window(at=add_to_date(now, hours=-23, minutes=-59))
		self.assertTrue(conversations.is_window_open(conversations.get(CONTACT), self.account.name, now))
		self.assertFalse(
			conversations.is_window_open(
				conversations.get(CONTACT), self.account.name, add_to_date(now, minutes=2)
			)
		)
		self.assertFalse(conversations.is_window_open(None, self.account.name, now))

	def test_an_older_inbound_time_never_moves_the_window_back(self):
		now = now_datetime()
		open_window(at=now)
		open_window(at=add_to_date(now, hours=-5))
		self.assertEqual(
			str(conversations.get(CONTACT).last_inbound_at), str(now.replace(microsecond=now.microsecond))
		)

	def test_opt_out_is_stamped_when_set_by_hand(self):
		doc = frappe.get_doc(
			{"doctype": "WhatsApp Conversation", "contact_number": CONTACT, "opted_out": 1}
		).insert()
		self.assertTrue(doc.opted_out_at)
		doc.opted_out = 0
		doc.save()
		self.assertIsNone(doc.opted_out_at)
