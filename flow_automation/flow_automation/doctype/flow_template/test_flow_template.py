# Copyright (c) 2026, flow_automation developers
# See license.txt

import glob
import html
import json
import os

import frappe

from flow_automation.flow_automation.doctype.flow_template.flow_template import duplicate_template
from flow_automation.portable import (
	InvalidFlowDefinition,
	fixtures_path,
	seed_templates,
	template_values_from_export,
)
from flow_automation.tests.utils import FlowTestCase, make_template, unique

STEPS = [
	{"id": "first", "kind": "set_variables", "payload": {"variables": {"a": "1"}}},
	{
		"id": "check",
		"kind": "condition",
		"depends_on": ["first"],
		"trigger": {"type": "after_delay", "days": 2},
		"payload": {"field": "variables.a", "op": "==", "value": "1"},
	},
	{"id": "yes", "kind": "wait", "parent_id": "check", "branch": "yes", "payload": {}},
]


class TestFlowTemplate(FlowTestCase):
	def tearDown(self):
		frappe.db.rollback()
		super().tearDown()

	def test_save_compiles_steps_into_a_validated_definition(self):
		template = make_template(STEPS, variables={"team": "Support"})
		definition = json.loads(template.definition)
		self.assertEqual([s["id"] for s in definition["steps"]], ["first", "check", "yes"])
		self.assertEqual(definition["variables"], {"team": "Support"})
		self.assertEqual(definition["steps"][1]["trigger"], {"type": "after_delay", "days": 2})
		self.assertEqual(definition["steps"][2]["branch"], "yes")

	def test_invalid_steps_are_reported_all_at_once_naming_row_and_field(self):
		template = make_template(STEPS)
		template.steps[1].payload = json.dumps({"field": "variables.a", "op": "is", "value": 1})
		template.steps[2].branch = "maybe"
		template.append("steps", {"step_id": "first", "kind": "teleport", "payload": "{}"})
		with self.assertRaises(InvalidFlowDefinition) as caught:
			template.save()
		message = html.unescape(str(caught.exception))
		self.assertIn("Row #2 (check)", message)
		self.assertIn("Payload/op: 'is' is not allowed; allowed: ==, !=", message)
		self.assertEqual(message.count("Payload/op"), 1)
		self.assertIn("Row #3 (yes)", message)
		self.assertIn("has no branch 'maybe'; allowed: yes, no", message)
		self.assertIn("Row #4 (first)", message)
		self.assertIn("duplicate id", message)
		self.assertIn("unknown kind 'teleport'", message)

	def test_payload_that_is_not_json_names_the_row(self):
		template = make_template(STEPS)
		template.steps[0].payload = "{not json"
		with self.assertRaisesRegex(InvalidFlowDefinition, r"Row #1 \(first\) · Payload is not valid JSON"):
			template.save()

	def test_version_bumps_only_when_the_definition_changes_and_versions_are_immutable(self):
		template = make_template(STEPS)
		self.assertEqual(template.version, 1)
		template.description = "only metadata changed"
		template.save()
		self.assertEqual(template.version, 1)
		template.steps[0].payload = json.dumps({"variables": {"a": "2"}})
		template.save()
		self.assertEqual(template.version, 2)
		versions = frappe.get_all(
			"Flow Template Version",
			filters={"template": template.name},
			fields=["name", "version", "definition"],
			order_by="version",
		)
		self.assertEqual([v.version for v in versions], [1, 2])
		self.assertEqual(json.loads(versions[0].definition)["steps"][0]["payload"], {"variables": {"a": "1"}})
		version = frappe.get_doc("Flow Template Version", versions[0].name)
		version.definition = "{}"
		with self.assertRaisesRegex(frappe.ValidationError, "immutable"):
			version.save()

	def test_a_template_read_back_from_the_database_saves_without_a_new_version(self):
		steps = [{**STEPS[0], "retry": {"max_attempts": 2, "backoff_seconds": 30}}, *STEPS[1:]]
		template = make_template(steps)
		stored = frappe.get_doc("Flow Template", template.name)  # Float fields come back as 30.0
		stored.save()
		self.assertEqual((stored.version, stored.definition_hash), (1, template.definition_hash))

	def test_a_disabled_template_with_problems_is_saved_as_a_draft(self):
		template = make_template(STEPS)
		compiled = (template.definition, template.definition_hash)
		template.enabled = 0
		template.steps[2].branch = "maybe"
		template.append("steps", {"step_id": "extra", "kind": "teleport", "payload": "{}"})
		frappe.clear_messages()
		template.save()
		self.assertIn("Saved as a draft with 2 problem(s)", str(frappe.message_log))
		stored = frappe.get_doc("Flow Template", template.name)
		self.assertEqual([row.step_id for row in stored.steps], ["first", "check", "yes", "extra"])
		self.assertEqual(stored.steps[2].branch, "maybe")
		# what runs start with stays the last valid save's
		self.assertEqual((stored.definition, stored.definition_hash, stored.version), (*compiled, 1))
		self.assertEqual(frappe.db.count("Flow Template Version", {"template": template.name}), 1)

		stored.enabled = 1
		with self.assertRaises(InvalidFlowDefinition) as caught:
			stored.save()
		message = html.unescape(str(caught.exception))
		self.assertIn("has no branch 'maybe'", message)
		self.assertIn("unknown kind 'teleport'", message)

		stored.reload()
		stored.steps[2].branch = "yes"
		stored.steps[3].kind = "wait"
		stored.enabled = 1
		stored.save()
		self.assertEqual(stored.version, 2)
		self.assertEqual(frappe.db.count("Flow Template Version", {"template": template.name}), 2)

	def test_a_new_disabled_template_with_problems_has_no_version_until_fixed(self):
		template = make_template([{"id": "a", "kind": "teleport"}], enabled=False)
		self.assertEqual((template.version, template.definition), (0, None))
		self.assertFalse(frappe.db.exists("Flow Template Version", {"template": template.name}))

	def test_system_templates_cannot_be_deleted_or_renamed_but_can_be_duplicated(self):
		template = make_template(STEPS, is_system=1)
		with self.assertRaisesRegex(frappe.ValidationError, "cannot be deleted"):
			frappe.delete_doc("Flow Template", template.name)
		with self.assertRaisesRegex(frappe.ValidationError, "cannot be renamed"):
			frappe.rename_doc("Flow Template", template.name, unique("Renamed"))
		copy_name = duplicate_template(template.name, unique("Copy of"))
		copy = frappe.get_doc("Flow Template", copy_name)
		self.assertEqual(copy.is_system, 0)
		self.assertEqual(copy.version, 1)
		self.assertEqual(json.loads(copy.definition), json.loads(template.definition))
		frappe.delete_doc("Flow Template", copy_name)
		self.assertFalse(frappe.db.exists("Flow Template", copy_name))
		self.assertFalse(frappe.db.exists("Flow Template Version", {"template": copy_name}))

	def test_duplicate_refuses_an_existing_name(self):
		template = make_template(STEPS)
		with self.assertRaises(frappe.DuplicateEntryError):
			duplicate_template(template.name, template.name)

	def test_template_with_runs_cannot_be_deleted(self):
		from flow_automation import runtime

		template = make_template(
			[{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}]
		)
		runtime.start_run(template.name, advance="now")
		with self.assertRaisesRegex(frappe.ValidationError, "has runs"):
			frappe.delete_doc("Flow Template", template.name)

	def test_export_and_import_round_trip(self):
		template = make_template(
			STEPS,
			trigger={
				"type": "Document Event",
				"doctype": "ToDo",
				"event": "Value Change",
				"field": "status",
				"condition": {"field": "doc.status", "op": "==", "value": "Closed"},
			},
			options={"one_active_run_per_document": True, "max_concurrent_runs": 3},
		)
		exported = template.as_export()
		self.assertEqual(exported["trigger"]["type"], "Document Event")
		self.assertEqual(exported["trigger"]["field"], "status")
		self.assertEqual(exported["options"], {"one_active_run_per_document": True, "max_concurrent_runs": 3})
		exported["template_name"] = unique("Imported")
		copy = frappe.get_doc({"doctype": "Flow Template", **template_values_from_export(exported)}).insert()
		self.assertEqual(json.loads(copy.definition), json.loads(template.definition))
		self.assertEqual(
			(copy.reference_doctype, copy.document_event, copy.value_changed_field),
			("ToDo", "Value Change", "status"),
		)

	def test_invalid_trigger_condition_and_cron_are_refused(self):
		template = make_template(STEPS)
		template.trigger_condition = json.dumps({"field": "doc.status", "op": "~~"})
		with self.assertRaisesRegex(InvalidFlowDefinition, "not an operator"):
			template.save()
		template.reload()
		template.trigger_type = "Schedule"
		template.cron_expression = "every monday"
		with self.assertRaisesRegex(frappe.ValidationError, "not valid"):
			template.save()

	def test_seed_templates_is_idempotent_and_marks_system_templates(self):
		files = {}
		for path in glob.glob(os.path.join(fixtures_path(), "*.json")):
			with open(path, encoding="utf-8") as fh:
				data = json.load(fh)
			files[data["template_name"]] = data
		installed = set(frappe.get_installed_apps())
		needs_missing_app = {
			name for name, data in files.items() if set(data.get("requires_apps") or []) - installed
		}
		first = dict(seed_templates())
		second = dict(seed_templates())
		self.assertEqual(set(first), set(files))
		for name, action in second.items():
			expected = "unchanged" if name not in needs_missing_app else first[name]
			self.assertEqual(action, expected, name)
		for name in set(files) - needs_missing_app:
			self.assertEqual(frappe.db.get_value("Flow Template", name, "is_system"), 1)
		for name in needs_missing_app:  # e.g. the ERPNext flows on plain Frappe
			self.assertTrue(first[name].startswith("skipped: needs "), first[name])
		versions = frappe.db.count("Flow Template Version", {"template": "Parallel Campaign (Email)"})
		seed_templates()
		self.assertEqual(
			frappe.db.count("Flow Template Version", {"template": "Parallel Campaign (Email)"}), versions
		)
		self.assertTrue(fixtures_path().endswith("fixtures"))
