"""WhatsApp Account: one default, secrets in Password fields, a verify token, the webhook URL."""

from __future__ import annotations

import frappe
from frappe.utils.password import get_decrypted_password

from flow_automation.tests.whatsapp_utils import APP_SECRET, TOKEN, WhatsAppTestCase, make_account
from flow_automation.whatsapp import accounts


class TestWhatsAppAccount(WhatsAppTestCase):
	def test_secrets_are_stored_encrypted_and_never_in_the_row(self):
		row = frappe.db.get_value("WhatsApp Account", self.account.name, ["access_token", "app_secret"])
		self.assertNotIn(TOKEN, str(row))
		self.assertEqual(get_decrypted_password("WhatsApp Account", self.account.name, "access_token"), TOKEN)
		self.assertEqual(accounts.app_secret(accounts.account_info(self.account.name)), APP_SECRET)
		self.assertNotIn(APP_SECRET, str(accounts.active_accounts()))

	def test_only_one_default_and_the_first_account_becomes_it(self):
		second = make_account(self.graph, "WA Test Second", phone_number_id="555", is_default=1)
		self.assertEqual(frappe.db.get_value("WhatsApp Account", self.account.name, "is_default"), 0)
		self.assertEqual(accounts.default_account()["name"], second.name)

	def test_verify_token_is_generated_and_the_webhook_url_shown(self):
		doc = make_account(self.graph, "WA Test Third", phone_number_id="666", verify_token="", is_default=0)
		self.assertEqual(len(doc.verify_token), 24)
		self.assertTrue(doc.webhook_url.endswith("/api/method/flow_automation.whatsapp.api.webhook"))

	def test_phone_number_id_and_country_are_checked(self):
		with self.assertRaises(frappe.ValidationError):
			make_account(self.graph, "WA Test Bad", phone_number_id="+1 650 555", is_default=0)
		with self.assertRaises(frappe.ValidationError):
			make_account(
				self.graph, "WA Test Bad", phone_number_id="777", default_country="India", is_default=0
			)

	def test_choose_account_order(self):
		second = make_account(self.graph, "WA Test Second", phone_number_id="555", is_default=0)
		self.assertEqual(accounts.choose_account(second.name, None)["name"], second.name)
		self.assertEqual(accounts.choose_account(None, second.name)["name"], second.name)
		self.assertEqual(accounts.choose_account(None, "Gone")["name"], self.account.name)
		self.assertEqual(accounts.choose_account(None, None)["name"], self.account.name)
