"""WhatsApp Template sync from the loopback Graph API, and the bench commands around it."""

from __future__ import annotations

import json
import os
import tempfile

import frappe

from flow_automation.channels.whatsapp import FakeGraphAPI
from flow_automation.tests.utils import FlowTestCase, bench_command
from flow_automation.tests.whatsapp_utils import TOKEN, WABA_ID, WhatsAppTestCase, make_account
from flow_automation.whatsapp import accounts, templates

META_TEMPLATES = [
	{
		"id": "1001",
		"name": "order_update_v1",
		"language": "en",
		"status": "APPROVED",
		"category": "UTILITY",
		"components": [
			{"type": "BODY", "text": "Order {{1}} is {{2}}"},
			{
				"type": "BUTTONS",
				"buttons": [
					{"type": "QUICK_REPLY", "text": "Thanks"},
					{"type": "QUICK_REPLY", "text": "Help"},
				],
			},
		],
	},
	{
		"id": "1002",
		"name": "order_update_v1",
		"language": "pt_BR",
		"status": "PENDING",
		"category": "UTILITY",
		"components": [{"type": "BODY", "text": "Pedido {{1}}"}],
	},
	{
		"id": "1003",
		"name": "spring_offer",
		"language": "en",
		"status": "APPROVED",
		"category": "MARKETING",
		"components": [],
	},
]


class TestWhatsAppTemplate(WhatsAppTestCase):
	def setUp(self):
		super().setUp()
		# the fake keeps templates for the whole class: each test lists its own business account
		self.waba = f"waba-{frappe.generate_hash(length=8)}"
		self.account.db_set("waba_id", self.waba)

	def test_sync_creates_updates_and_marks_removed_templates(self):
		self.graph.add_templates(self.waba, META_TEMPLATES)
		result = templates.sync(self.account.name)[self.account.name]
		self.assertEqual((result["created"], result["updated"], result["deleted"]), (3, 0, 0))
		row = frappe.get_doc("WhatsApp Template", f"order_update_v1:en:{self.account.name}")
		self.assertEqual((row.status, row.category, row.parameter_count), ("APPROVED", "UTILITY", 2))
		self.assertEqual(row.button_titles, "Thanks\nHelp")
		self.assertTrue(frappe.db.get_value("WhatsApp Account", self.account.name, "last_template_sync"))
		again = templates.sync(self.account.name)[self.account.name]
		self.assertEqual((again["created"], again["updated"], again["unchanged"]), (0, 0, 3))

	def test_dry_run_writes_nothing(self):
		self.graph.add_templates(self.waba, META_TEMPLATES)
		result = templates.sync(self.account.name, dry_run=True)[self.account.name]
		self.assertEqual(result["created"], 3)
		self.assertEqual(frappe.db.count("WhatsApp Template", {"account": self.account.name}), 0)

	def test_upsert_from_graph_json_without_meta(self):
		result = templates.upsert(self.account.name, {"data": META_TEMPLATES[:1]})
		self.assertEqual(result[self.account.name]["created"], 1)
		changed = [{**META_TEMPLATES[0], "status": "PAUSED"}]
		self.assertEqual(templates.upsert(self.account.name, changed)[self.account.name]["updated"], 1)
		self.assertEqual(self.graph.requests, [])

	def test_templates_gone_from_meta_are_kept_as_deleted(self):
		templates.upsert(self.account.name, [META_TEMPLATES[2]])
		self.graph.add_templates(self.waba, META_TEMPLATES[:2])
		result = templates.sync(self.account.name)[self.account.name]
		self.assertEqual(result["deleted"], 1)
		self.assertEqual(
			frappe.db.get_value("WhatsApp Template", f"spring_offer:en:{self.account.name}", "status"),
			"DELETED",
		)

	def test_an_account_without_a_waba_id_cannot_sync(self):
		self.account.db_set("waba_id", None)
		with self.assertRaises(frappe.ValidationError):
			templates.sync(self.account.name)


class TestTemplateCommands(FlowTestCase):
	"""`bench --site S flow-automation whatsapp-templates dry-run | sync | upsert`, as an admin runs them."""

	ACCOUNT = "WA Template Command Test"

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.graph = FakeGraphAPI(access_token=TOKEN).start()
		cls.graph.add_templates(WABA_ID, META_TEMPLATES)
		make_account(cls.graph, cls.ACCOUNT, phone_number_id="987654321", is_default=0)
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		frappe.db.delete("WhatsApp Template", {"account": cls.ACCOUNT})
		frappe.delete_doc("WhatsApp Account", cls.ACCOUNT, force=True, ignore_permissions=True)
		frappe.db.commit()
		accounts.clear_account_cache()
		cls.graph.stop()
		super().tearDownClass()

	def bench(self, *args: str) -> str:
		result = bench_command("flow-automation", "whatsapp-templates", *args)
		self.assertEqual(result.returncode, 0, result.stderr[-2000:])
		return result.stdout

	def count(self) -> int:
		frappe.db.rollback()
		return frappe.db.count("WhatsApp Template", {"account": self.ACCOUNT})

	def test_dry_run_then_sync_then_upsert(self):
		out = self.bench("dry-run", "--account", self.ACCOUNT)
		self.assertIn("3 would be created", out)
		self.assertIn("create: order_update_v1:pt_BR", out)
		self.assertEqual(self.count(), 0)
		self.assertIn("3 created", self.bench("sync", "--account", self.ACCOUNT))
		self.assertEqual(self.count(), 3)
		with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
			json.dump({"data": [{**META_TEMPLATES[2], "status": "PAUSED"}]}, fh)
		try:
			self.assertIn("1 updated", self.bench("upsert", fh.name, "--account", self.ACCOUNT))
		finally:
			os.unlink(fh.name)
		frappe.db.rollback()
		self.assertEqual(
			frappe.db.get_value("WhatsApp Template", f"spring_offer:en:{self.ACCOUNT}", "status"), "PAUSED"
		)
