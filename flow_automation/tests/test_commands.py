"""The bench commands, run as a user runs them: a separate `bench --site S flow-automation ...`
process (Frappe's own CLI entry point) against committed data, cleaned up afterwards."""

from __future__ import annotations

import json
import subprocess

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation import runtime
from flow_automation.tests.utils import FlowTestCase, bench_command, make_template, make_todo, unique


def bench(*args: str) -> subprocess.CompletedProcess:
	return bench_command("flow-automation", *args)


class TestBenchCommands(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.todo = make_todo("command test")
		cls.template = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {
						"doctype": "Note",
						"fields": {"title": "cmd {{ doc.description }} {{ run.name }}"},
					},
				},
				{
					"id": "later",
					"kind": "wait",
					"depends_on": ["note"],
					"trigger": {"type": "after_delay", "minutes": 5},
					"payload": {},
				},
			],
			name=unique("Command Flow"),
		)
		cls.run_name = runtime.start_run(
			cls.template.name, reference_doctype="ToDo", reference_name=cls.todo.name, advance="now"
		)
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		frappe.db.delete("Note", {"title": ("like", "cmd command test %")})
		for run in frappe.get_all("Flow Run", filters={"template": cls.template.name}, pluck="name"):
			frappe.db.delete("Flow Step Log", {"run": run})
			frappe.db.delete("Flow Step Pending", {"run": run})
			frappe.db.delete("Flow Run", {"name": run})
		frappe.delete_doc("Flow Template", cls.template.name, force=True)
		frappe.delete_doc("ToDo", cls.todo.name, force=True)
		frappe.db.commit()
		super().tearDownClass()

	def test_inspect_shows_every_step_with_its_state_and_attempts(self):
		result = bench("inspect", self.run_name)
		self.assertEqual(result.returncode, 0, result.stderr)
		self.assertIn(f"Run {self.run_name}: {self.template.name} v1 — Waiting", result.stdout)
		self.assertRegex(result.stdout, r"note\s+create_document\s+done")
		self.assertRegex(result.stdout, r"later\s+wait\s+scheduled\s+due ")
		self.assertIn("#1 Success", result.stdout)
		as_json = json.loads(bench("inspect", self.run_name, "--json").stdout)
		self.assertEqual([s["status"] for s in as_json["steps"]], ["done", "scheduled"])

	def test_inspect_of_a_missing_run_is_a_clear_error(self):
		result = bench("inspect", "no-such-run")
		self.assertNotEqual(result.returncode, 0)
		self.assertIn("Flow Run no-such-run does not exist", result.stdout + result.stderr)

	def test_simulate_prints_the_timeline_and_changes_nothing(self):
		before = frappe.db.count("Note")
		result = bench("simulate", self.template.name, "--doc", f"ToDo/{self.todo.name}")
		self.assertEqual(result.returncode, 0, result.stderr)
		self.assertIn(f"Dry run of {self.template.name}: Completed", result.stdout)
		self.assertRegex(result.stdout, r"note\s+create_document\s+executed")
		self.assertIn("cmd command test", result.stdout)
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("Note"), before)
		bad = bench("simulate", self.template.name, "--doc", "ToDo")
		self.assertNotEqual(bad.returncode, 0)
		self.assertIn("--doc takes DOCTYPE/NAME", bad.stdout + bad.stderr)

	def test_simulate_refuses_a_document_of_another_doctype_or_one_that_does_not_exist(self):
		contact_flow = make_template(
			[{"id": "a", "kind": "wait", "payload": {}}],
			name=unique("Contact Command Flow"),
			trigger={"type": "Manual", "doctype": "Contact"},
		)
		frappe.db.commit()
		wrong = bench("simulate", contact_flow.name, "--doc", f"ToDo/{self.todo.name}")
		self.assertNotEqual(wrong.returncode, 0)
		self.assertIn(f"works on Contact documents, not on ToDo ({self.todo.name} is a ToDo)", wrong.stderr)
		self.assertNotIn("Traceback", wrong.stderr)
		missing = bench("simulate", contact_flow.name, "--doc", "Contact/nonexistent")
		self.assertNotEqual(missing.returncode, 0)
		self.assertIn("Contact nonexistent does not exist", missing.stderr)
		self.assertNotIn("Dry run of", missing.stdout)

	def test_run_due_fires_due_steps(self):
		# five minutes pass: the row and the run's own due time both lie in the past
		past = add_to_date(now_datetime(), minutes=-1).replace(microsecond=0)
		frappe.db.set_value(
			"Flow Step Pending", {"run": self.run_name, "status": "Pending"}, "trigger_at", past
		)
		state = json.loads(frappe.db.get_value("Flow Run", self.run_name, "step_state"))
		state["later"]["due_at"] = str(past)
		frappe.db.set_value("Flow Run", self.run_name, "step_state", json.dumps(state))
		frappe.db.commit()
		result = bench("run-due")
		self.assertEqual(result.returncode, 0, result.stderr)
		self.assertRegex(result.stdout, r"fired [1-9]\d* due row")
		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("Flow Run", self.run_name, "status"), "Completed")

	def test_seed_templates_reports_what_it_did(self):
		result = bench("seed-templates")
		self.assertEqual(result.returncode, 0, result.stderr)
		self.assertIn("Parallel Campaign (Email): ", result.stdout)
		self.assertIn("Quotation Follow-up: ", result.stdout)

	def test_purge_refuses_zero_days_and_reports_counts(self):
		self.assertNotEqual(bench("purge", "--days", "0").returncode, 0)
		result = bench("purge", "--days", "3650")
		self.assertEqual(result.returncode, 0, result.stderr)
		self.assertIn("Flow Run: deleted 0", result.stdout)
