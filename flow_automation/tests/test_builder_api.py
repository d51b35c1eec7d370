"""The visual builder's server methods (`flow_automation.builder`) through Frappe's real request
path, and what they rely on: drafts, the `linked` context, dry runs of unsaved edits.

Requests run in their own thread and database connection, as a real request would, so the
fixtures are committed first; FlowTestCase deletes every row a test wrote afterwards.
"""

from __future__ import annotations

import json
import os

import frappe
from frappe.tests.test_api import make_request
from frappe.utils import get_test_client

from flow_automation import runtime
from flow_automation.portable import fixtures_path
from flow_automation.tests.utils import FlowTestCase, failing_step, make_template, make_todo, unique

PREFIX = "flow-builder-test"
USERS = {
	"user": ("Flow User", ["Flow User"]),
	"manager": ("Flow Manager", ["Flow Manager"]),
	"norole": ("Linked Person", []),
}
BUILDER = "flow_automation.builder."

GATE_FLOW = [
	{"id": "first", "kind": "set_variables", "label": "First", "payload": {"variables": {"a": "1"}}},
	{
		"id": "gate",
		"kind": "wait",
		"depends_on": ["first"],
		"trigger": {"type": "manual"},
		"payload": {},
	},
]

# One template, three fates: `variables.mode` decides (done → completes, fail → fails at
# `boom`, wait → waits at `gate`).
ROUTED_FLOW = [
	{"id": "start", "kind": "set_variables", "payload": {"variables": {"seen": "1"}}},
	{
		"id": "route",
		"kind": "switch",
		"depends_on": ["start"],
		"payload": {"value": "{{ variables.mode }}", "cases": ["fail", "wait"]},
	},
	failing_step("boom", parent_id="route", branch="fail"),
	{
		"id": "gate",
		"kind": "wait",
		"parent_id": "route",
		"branch": "wait",
		"trigger": {"type": "manual"},
		"payload": {},
	},
	{
		"id": "finish",
		"kind": "set_variables",
		"parent_id": "route",
		"branch": "default",
		"payload": {"variables": {"done": "1"}},
	},
]

# Two problems: an unknown kind and a dependency on a step that does not exist.
BROKEN_FLOW = [
	{"id": "first", "kind": "set_variables", "payload": {"variables": {"a": "2"}}},
	{"id": "second", "kind": "teleport", "depends_on": ["ghost"], "payload": {}},
]


class TestBuilderAPI(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.client = get_test_client(use_cookies=False)
		cls.tokens = {}
		cls.emails = {}
		for key, (first_name, roles) in USERS.items():
			email = f"{PREFIX}-{key}@example.com"
			if not frappe.db.exists("User", email):
				frappe.get_doc(
					{
						"doctype": "User",
						"email": email,
						"first_name": first_name,
						"last_name": "Builder",
						"send_welcome_email": 0,
						"user_type": "System User",
					}
				).insert(ignore_permissions=True)
			user = frappe.get_doc("User", email)
			user.set("roles", [])
			for role in roles:
				user.append("roles", {"role": role})
			user.api_key = user.api_key or frappe.generate_hash(length=15)
			secret = frappe.generate_hash(length=15)
			user.api_secret = secret
			user.save(ignore_permissions=True)
			cls.tokens[key] = f"token {user.api_key}:{secret}"
			cls.emails[key] = email
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		for email in cls.emails.values():
			frappe.delete_doc("User", email, force=True, ignore_permissions=True)
		frappe.db.commit()
		super().tearDownClass()

	def call(self, method: str, data: dict | None = None, who: str | None = "manager"):
		headers = {"Authorization": self.tokens[who]} if who else {}
		path = method if method.startswith("flow_automation.") else BUILDER + method
		response = make_request(
			target=self.client.post,
			args=(f"/api/method/{path}",),
			kwargs={"json": data or {}, "headers": headers},
		)
		frappe.db.rollback()  # see what the request committed
		body = response.json if response.is_json else response.get_data(as_text=True)
		return response.status_code, body

	def ok(self, method: str, data: dict | None = None, who: str = "manager"):
		status, body = self.call(method, data, who)
		self.assertEqual(status, 200, body)
		return body["message"]

	def committed_template(self, steps=GATE_FLOW, **kwargs):
		template = make_template(steps, **kwargs)
		frappe.db.commit()
		return template

	def versions(self, template: str) -> int:
		return frappe.db.count("Flow Template Version", {"template": template})

	# --- get_builder ----------------------------------------------------------------------

	def test_get_builder_gives_the_template_its_definition_layout_and_rights(self):
		template = make_template(
			GATE_FLOW,
			variables={"team": "Support"},
			trigger={
				"type": "Document Event",
				"doctype": "ToDo",
				"event": "Save",
				"condition": {"field": "doc.status", "op": "==", "value": "Open"},
			},
			description="for the builder",
		)
		template.canvas_layout = json.dumps({"first": {"x": 10, "y": 20}, "__trigger__": {"x": 0, "y": 0}})
		template.save()
		frappe.db.commit()
		stored = frappe.get_doc("Flow Template", template.name)

		built = self.ok("get_builder", {"template": template.name})
		values = built["template"]
		self.assertEqual(values["name"], template.name)
		self.assertEqual(values["template_name"], template.name)
		self.assertEqual(
			(values["trigger_type"], values["reference_doctype"], values["document_event"]),
			("Document Event", "ToDo", "Save"),
		)
		self.assertEqual(values["trigger_condition"], {"field": "doc.status", "op": "==", "value": "Open"})
		self.assertEqual(values["whatsapp_keywords"], [])
		self.assertEqual(values["description"], "for the builder")
		self.assertEqual(values["version"], 1)
		self.assertEqual(values["modified"], str(stored.modified))
		self.assertEqual([s["id"] for s in built["definition"]["steps"]], ["first", "gate"])
		self.assertEqual(built["definition"]["variables"], {"team": "Support"})
		self.assertEqual(built["layout"], {"first": {"x": 10, "y": 20}, "__trigger__": {"x": 0, "y": 0}})
		self.assertEqual((built["can_edit"], built["can_run"]), (True, True))
		self.assertEqual(built["problems"], [])
		self.assertIsNone(built["run"])
		self.assertIsNone(built["missing_doctype"])
		# the flow panel's fields: the template's own, from its meta, in the form's order
		fields = {df["fieldname"]: df for df in built["fields"]}
		meta = frappe.get_meta("Flow Template")
		self.assertEqual(
			[df["fieldname"] for df in built["fields"]],
			[df.fieldname for df in meta.fields if df.fieldname in fields],
		)
		self.assertTrue({"trigger_type", "cron_expression", "run_as", "max_concurrent_runs"} <= set(fields))
		self.assertNotIn("webhook_secret", fields)  # a Password field is never sent
		self.assertEqual(
			fields["cron_expression"]["depends_on"], meta.get_field("cron_expression").depends_on
		)
		self.assertEqual(fields["cron_expression"]["section"], "Trigger")
		self.assertEqual(fields["trigger_type"]["options"], meta.get_field("trigger_type").options)
		self.assertEqual(fields["trigger_condition"]["value_kind"], "json")
		self.assertEqual(fields["whatsapp_keywords"]["value_kind"], "lines")

		as_user = self.ok("get_builder", {"template": template.name}, "user")
		self.assertEqual((as_user["can_edit"], as_user["can_run"]), (False, True))
		self.assertEqual(as_user["definition"], built["definition"])

		for who in ("norole", None):
			with self.subTest(who=who or "Guest"):
				status, body = self.call("get_builder", {"template": template.name}, who)
				self.assertEqual(status, 403, body)

		status, body = self.call("get_builder", {"template": "No Such Flow"})
		self.assertEqual(status, 417, body)
		self.assertIn("template: Flow Template", json.dumps(body))

	def test_get_builder_of_a_new_flow_gives_defaults(self):
		built = self.ok("get_builder")
		self.assertEqual(built["definition"], {"version": 1, "variables": {}, "steps": []})
		self.assertEqual(built["layout"], {})
		values = built["template"]
		self.assertEqual(
			(values["enabled"], values["trigger_type"], values["version"], values["modified"]),
			(0, "Manual", 0, None),
		)
		self.assertIsNone(values["name"])
		self.assertTrue(built["can_edit"])
		self.assertFalse(self.ok("get_builder", who="user")["can_edit"])

	# --- save_builder ---------------------------------------------------------------------

	def test_save_builder_saves_through_the_controller_and_bumps_the_version(self):
		template = self.committed_template()
		built = self.ok("get_builder", {"template": template.name})
		definition = built["definition"]
		definition["steps"].append(
			{
				"id": "after",
				"kind": "create_document",
				"label": "Note",
				"depends_on": ["gate"],
				"payload": {"doctype": "Note", "fields": {"title": "x {{ variables.a }}"}},
				"retry": {"max_attempts": 3, "backoff_seconds": 30},
			}
		)
		definition["variables"] = {"team": "Ops"}
		fields = {
			**built["template"],
			"description": "edited in the builder",
			"trigger_type": "WhatsApp Message",
			"whatsapp_keywords": ["hello", "hi"],
			"whatsapp_match": "contains",
			"trigger_condition": {"field": "trigger.text", "op": "not_empty"},
			"max_concurrent_runs": 2,
		}
		layout = {"first": {"x": 1, "y": 2}, "after": {"x": 3, "y": 4}}
		saved = self.ok(
			"save_builder",
			{
				"template": template.name,
				"doc": {"template": fields, "definition": definition, "layout": layout},
			},
		)
		self.assertEqual(saved["template"]["version"], 2)
		self.assertEqual(saved["layout"], layout)
		self.assertEqual([s["id"] for s in saved["definition"]["steps"]], ["first", "gate", "after"])
		self.assertEqual(saved["definition"]["steps"][2]["retry"], {"max_attempts": 3, "backoff_seconds": 30})
		self.assertEqual(saved["template"]["whatsapp_keywords"], ["hello", "hi"])
		self.assertEqual(saved["template"]["trigger_condition"], {"field": "trigger.text", "op": "not_empty"})
		stored = frappe.get_doc("Flow Template", template.name)
		self.assertEqual(
			(stored.description, stored.trigger_type, stored.whatsapp_match, stored.max_concurrent_runs),
			("edited in the builder", "WhatsApp Message", "contains", 2),
		)
		self.assertEqual(json.loads(stored.definition)["variables"], {"team": "Ops"})
		self.assertEqual(self.versions(template.name), 2)
		self.assertEqual(saved["template"]["modified"], str(stored.modified))

		# saving what was just returned changes nothing: no new version
		again = self.ok(
			"save_builder",
			{
				"template": template.name,
				"doc": {"template": saved["template"], "definition": saved["definition"], "layout": layout},
			},
		)
		self.assertEqual(again["template"]["version"], 2)
		self.assertEqual(self.versions(template.name), 2)

	def test_save_builder_creates_a_new_non_system_template(self):
		name = unique("Builder New")
		saved = self.ok(
			"save_builder",
			{
				"doc": {
					"template": {"template_name": name, "is_system": 1, "reference_doctype": "ToDo"},
					"definition": {"steps": GATE_FLOW},
					"layout": {"gate": {"x": 5, "y": 6}},
				}
			},
		)
		self.assertEqual(saved["template"]["name"], name)
		stored = frappe.get_doc("Flow Template", name)
		self.assertEqual((stored.is_system, stored.enabled, stored.version), (0, 0, 1))
		self.assertEqual(stored.reference_doctype, "ToDo")
		self.assertEqual(json.loads(stored.canvas_layout), {"gate": {"x": 5, "y": 6}})

		status, body = self.call(
			"save_builder", {"doc": {"template": {"template_name": name}, "definition": {"steps": []}}}
		)
		self.assertEqual(status, 417, body)
		self.assertIn("already exists", json.dumps(body))

	def test_flow_users_and_users_without_roles_cannot_save(self):
		template = self.committed_template()
		built = self.ok("get_builder", {"template": template.name}, "user")
		doc = {
			"template": {**built["template"], "description": "user edit"},
			"definition": built["definition"],
		}
		for who in ("user", "norole", None):
			with self.subTest(who=who or "Guest"):
				status, body = self.call("save_builder", {"template": template.name, "doc": doc}, who)
				self.assertEqual(status, 403, body)
		self.assertNotEqual(frappe.db.get_value("Flow Template", template.name, "description"), "user edit")

	def test_a_stale_modified_is_refused_and_the_template_is_left_as_the_other_save_made_it(self):
		template = self.committed_template()
		loaded = self.ok("get_builder", {"template": template.name})
		# someone else saves meanwhile (the form, another builder)
		other = frappe.get_doc("Flow Template", template.name)
		other.description = "saved by someone else"
		other.save()
		frappe.db.commit()
		before = frappe.db.get_value("Flow Template", template.name, ["modified", "version"], as_dict=True)

		definition = loaded["definition"]
		definition["steps"][0]["payload"] = {"variables": {"a": "changed"}}
		status, body = self.call(
			"save_builder",
			{
				"template": template.name,
				"doc": {
					"template": {**loaded["template"], "description": "stale"},
					"definition": definition,
				},
			},
		)
		self.assertEqual(status, 417, body)
		self.assertEqual(body["exc_type"], "TimestampMismatchError")
		after = frappe.get_doc("Flow Template", template.name)
		self.assertEqual(after.description, "saved by someone else")
		self.assertEqual((after.modified, after.version), (before.modified, before.version))
		self.assertEqual(json.loads(after.steps[0].payload), {"variables": {"a": "1"}})

		status, body = self.call(
			"save_builder",
			{"template": template.name, "doc": {"template": {"description": "no timestamp"}}},
		)
		self.assertEqual(status, 417, body)
		self.assertIn("doc.template.modified", json.dumps(body))

	def test_bad_documents_are_417_naming_the_part(self):
		template = self.committed_template()
		modified = str(frappe.db.get_value("Flow Template", template.name, "modified"))
		cases = [
			("not json", "doc: not valid JSON"),
			(
				{"template": {"modified": modified}, "definition": {"steps": {"a": 1}}},
				"doc.definition.steps: must be a list",
			),
			({"template": {"modified": modified}, "definition": {"steps": ["x"]}}, "doc.definition.steps[0]"),
			(
				{"template": {"modified": modified}, "definition": {"steps": [{"kind": "wait"}]}},
				"doc.definition.steps[0].id",
			),
			(
				{"template": {"modified": modified, "template_name": "Renamed"}, "definition": {}},
				"doc.template.template_name",
			),
		]
		for doc, text in cases:
			with self.subTest(text=text):
				status, body = self.call("save_builder", {"template": template.name, "doc": doc})
				self.assertEqual(status, 417, body)
				self.assertIn(text, json.dumps(body))

	# --- drafts ---------------------------------------------------------------------------

	def test_an_invalid_flow_is_kept_as_a_disabled_draft_and_cannot_be_enabled_until_fixed(self):
		template = self.committed_template()
		definition_before = frappe.db.get_value("Flow Template", template.name, "definition")
		loaded = self.ok("get_builder", {"template": template.name})

		status, body = self.call(
			"save_builder",
			{
				"template": template.name,
				"doc": {
					"template": {**loaded["template"], "enabled": 0},
					"definition": {"variables": {}, "steps": BROKEN_FLOW},
				},
			},
		)
		self.assertEqual(status, 200, body)
		self.assertIn("Saved as a draft with 2 problem(s); fix them to enable it", json.dumps(body))
		draft = body["message"]
		self.assertEqual(draft["template"]["enabled"], 0)
		self.assertEqual(draft["template"]["version"], 1)
		self.assertEqual([s["id"] for s in draft["definition"]["steps"]], ["first", "second"])
		self.assertEqual({p["step"] for p in draft["problems"]}, {"second"})
		self.assertEqual(len(draft["problems"]), 2)
		# the runnable definition and version are the last valid save's
		stored = frappe.get_doc("Flow Template", template.name)
		self.assertEqual(stored.definition, definition_before)
		self.assertEqual(self.versions(template.name), 1)
		self.assertEqual([row.step_id for row in stored.steps], ["first", "second"])

		# enabling it as it is: refused, with every problem
		status, body = self.call(
			"save_builder",
			{
				"template": template.name,
				"doc": {"template": {**draft["template"], "enabled": 1}, "definition": draft["definition"]},
			},
		)
		self.assertEqual(status, 417, body)
		self.assertEqual(body["exc_type"], "InvalidFlowDefinition")
		self.assertIn("unknown kind", json.dumps(body))
		self.assertIn("ghost", json.dumps(body))
		self.assertEqual(frappe.db.get_value("Flow Template", template.name, "enabled"), 0)

		# fixed and enabled: a new version
		fixed = draft["definition"]
		fixed["steps"][1] = {"id": "second", "kind": "wait", "depends_on": ["first"], "payload": {}}
		enabled = self.ok(
			"save_builder",
			{
				"template": template.name,
				"doc": {"template": {**draft["template"], "enabled": 1}, "definition": fixed},
			},
		)
		self.assertEqual((enabled["template"]["enabled"], enabled["template"]["version"]), (1, 2))
		self.assertEqual(enabled["problems"], [])
		self.assertEqual(self.versions(template.name), 2)

	# --- the variable picker --------------------------------------------------------------

	def test_doc_fields_lists_fields_child_rows_and_linked_documents(self):
		fields = self.ok("doc_fields", {"doctype": "ToDo"}, "user")
		paths = {f["path"]: f for f in fields}
		self.assertEqual(paths["doc.description"]["group"], "ToDo")
		self.assertEqual(paths["doc.description"]["fieldtype"], "Text Editor")
		self.assertIn("doc.name", paths)
		self.assertIn("doc.modified", paths)
		self.assertEqual(paths["linked.allocated_to.full_name"]["group"], "Allocated To → User")
		self.assertFalse(
			[p for p in paths if p.startswith("doc.") and paths[p]["fieldtype"] == "Column Break"]
		)
		self.assertLessEqual(len(fields), 400)

		user_fields = {f["path"]: f for f in self.ok("doc_fields", {"doctype": "User"})}
		self.assertEqual(user_fields["doc.roles[0].role"]["group"], "Roles Assigned (first row)")
		self.assertNotIn("doc.new_password", user_fields)  # no Password fields

		status, body = self.call("doc_fields", {"doctype": "No Such Type"}, "user")
		self.assertEqual(status, 417, body)
		self.assertIn("No Such Type", json.dumps(body))
		status, body = self.call("doc_fields", {"doctype": "ToDo"}, "norole")
		self.assertEqual(status, 403, body)

	# --- statistics and run overlays ------------------------------------------------------

	def routed_runs(self):
		template = self.committed_template(ROUTED_FLOW)
		runs = {
			mode: runtime.start_run(template.name, variables={"mode": mode}, advance="now")
			for mode in ("done", "fail", "wait")
		}
		frappe.db.commit()
		statuses = {mode: frappe.db.get_value("Flow Run", run, "status") for mode, run in runs.items()}
		self.assertEqual(statuses, {"done": "Completed", "fail": "Failed", "wait": "Waiting"})
		return template, runs

	def test_step_stats_count_reached_completed_failed_and_stopped_runs(self):
		template, _runs = self.routed_runs()
		other = self.committed_template(ROUTED_FLOW)  # its runs count for it, not here
		runtime.start_run(other.name, variables={"mode": "fail"}, advance="now")
		frappe.db.commit()

		stats = self.ok("step_stats", {"template": template.name, "days": 7}, "user")
		self.assertEqual(stats["runs"], 3)
		self.assertEqual(stats["days"], 7)
		self.assertEqual(
			stats["steps"],
			{
				"start": {"reached": 3, "completed": 3, "failed": 0, "stopped": 0},
				# the waiting run's last log row is the switch's: the gate waits before executing
				"route": {"reached": 3, "completed": 3, "failed": 0, "stopped": 1},
				"boom": {"reached": 1, "completed": 0, "failed": 1, "stopped": 1},
				"gate": {"reached": 0, "completed": 0, "failed": 0, "stopped": 0},
				"finish": {"reached": 1, "completed": 1, "failed": 0, "stopped": 0},
			},
		)
		for days in (0, 91, "many"):
			with self.subTest(days=days):
				status, body = self.call("step_stats", {"template": template.name, "days": days})
				self.assertEqual(status, 417, body)
				self.assertIn("days:", json.dumps(body))

	def test_run_overlay_shows_each_steps_attempts_and_what_may_be_done(self):
		template, runs = self.routed_runs()
		failed = self.ok("get_builder", {"template": template.name, "run": runs["fail"]}, "user")["run"]
		self.assertEqual((failed["name"], failed["status"]), (runs["fail"], "Failed"))
		self.assertEqual(failed["version"], 1)
		self.assertEqual(failed["template_version"], f"{template.name}-v1")
		self.assertEqual([s["id"] for s in failed["definition"]["steps"]][:2], ["start", "route"])
		boom = failed["steps"]["boom"]
		self.assertEqual(boom["status"], "failed")
		self.assertIn("nope", boom["error"])
		[attempt] = boom["attempts"]
		self.assertEqual((attempt["attempt"], attempt["status"]), (1, "Failed"))
		self.assertIn("nope", attempt["error"])
		self.assertEqual(attempt["input"]["name"], "nope")  # parsed, not JSON text
		self.assertEqual(failed["steps"]["route"]["attempts"][0]["branch"], "fail")
		self.assertEqual(failed["steps"]["route"]["attempts"][0]["output"]["value"], "fail")
		self.assertEqual(failed["steps"]["gate"]["status"], "pending")  # never reached
		self.assertEqual(
			(failed["can_retry"], failed["can_cancel"], failed["waiting_steps"]), (True, False, [])
		)

		waiting = self.ok("get_builder", {"template": template.name, "run": runs["wait"]})["run"]
		self.assertEqual(waiting["status"], "Waiting")
		self.assertEqual(waiting["steps"]["gate"]["wait"]["type"], "gate")
		self.assertEqual((waiting["can_retry"], waiting["can_cancel"]), (False, True))
		self.assertEqual(waiting["waiting_steps"], ["gate"])

		other = self.committed_template()
		status, body = self.call("get_builder", {"template": other.name, "run": runs["fail"]})
		self.assertEqual(status, 417, body)
		self.assertIn(
			f"is a run of {template.name}", json.dumps(body).replace("<strong>", "").replace("</strong>", "")
		)

	# --- new flows --------------------------------------------------------------------------

	def test_import_template_makes_an_ordinary_template_from_a_flow_file(self):
		with open(os.path.join(fixtures_path(), "quotation_follow_up.json"), encoding="utf-8") as fh:
			data = json.load(fh)
		name = self.ok("import_template", {"data": data})
		self.assertEqual(name, "Quotation Follow-up")
		stored = frappe.get_doc("Flow Template", name)
		self.assertEqual(stored.is_system, 0)
		self.assertEqual(stored.reference_doctype, "Quotation")
		# loaded disabled where Quotation is not installed (as seeding does)
		self.assertEqual(stored.enabled, int(bool(frappe.db.exists("DocType", "Quotation"))))
		# the builder says so instead of offering Quotation's fields
		missing = None if frappe.db.exists("DocType", "Quotation") else "Quotation"
		self.assertEqual(self.ok("get_builder", {"template": name})["missing_doctype"], missing)
		self.assertEqual(
			[s["id"] for s in json.loads(stored.definition)["steps"]],
			[s["id"] for s in data["definition"]["steps"]],
		)

		status, body = self.call("import_template", {"data": data})
		self.assertEqual(status, 417, body)
		self.assertIn("Quotation Follow-up", json.dumps(body))
		self.assertIn("already exists", json.dumps(body))

		copy = self.ok("import_template", {"data": json.dumps(data), "template_name": unique("Imported")})
		self.assertEqual(frappe.db.get_value("Flow Template", copy, "is_system"), 0)

		broken = {
			"template_name": unique("Imported Draft"),
			"trigger": {"type": "Manual"},
			"definition": {"steps": BROKEN_FLOW},
		}
		draft = self.ok("import_template", {"data": broken})
		values = frappe.db.get_value(
			"Flow Template", draft, ["enabled", "version", "definition"], as_dict=True
		)
		self.assertEqual((values.enabled, values.version, values.definition), (0, 0, None))

		status, body = self.call("import_template", {"data": data, "template_name": unique("x")}, "user")
		self.assertEqual(status, 403, body)

	def test_starter_templates_are_the_system_templates(self):
		system = self.committed_template(is_system=1, category="Starters", description="a starter")
		ordinary = self.committed_template()
		starters = {t["name"]: t for t in self.ok("starter_templates", who="user")}
		self.assertIn(system.name, starters)
		self.assertNotIn(ordinary.name, starters)
		self.assertEqual(
			starters[system.name],
			{
				"name": system.name,
				"category": "Starters",
				"description": "a starter",
				"trigger_type": "Manual",
				"reference_doctype": None,
			},
		)

	# --- dry runs of unsaved edits ----------------------------------------------------------

	def test_simulate_an_unsaved_definition_and_a_typed_document(self):
		template = self.committed_template(trigger={"type": "Manual", "doctype": "ToDo"})
		unsaved = {
			"variables": {"greeting": "Hi"},
			"steps": [
				{
					"id": "say",
					"kind": "set_variables",
					"payload": {"variables": {"text": "{{ variables.greeting }} {{ doc.description }}"}},
				}
			],
		}
		result = self.ok(
			"flow_automation.api.simulate",
			{"template": template.name, "definition": unsaved, "doc": {"description": "typed"}},
		)
		self.assertEqual(result["status"], "Completed")
		self.assertEqual([e["step"] for e in result["timeline"]], ["say"])
		self.assertEqual(result["variables"]["text"], "Hi typed")
		self.assertEqual(self.versions(template.name), 1)  # nothing saved

		todo = make_todo("stored", assigned_by=self.emails["manager"])  # readable by the manager
		frappe.db.commit()
		stored = self.ok(
			"flow_automation.api.simulate",
			{
				"template": template.name,
				"definition": json.dumps(unsaved),
				"reference_doctype": "ToDo",
				"reference_name": todo.name,
			},
		)
		self.assertEqual(stored["variables"]["text"], "Hi stored")

		cases = [
			({"definition": {"steps": BROKEN_FLOW}}, "step 'second' /kind"),
			({"definition": {"steps": BROKEN_FLOW}}, "step 'second' /depends_on/0"),
			({"doc": {"doctype": "Note", "title": "x"}}, "works on ToDo documents, not on Note"),
			(
				{"doc": {"description": "x"}, "reference_doctype": "ToDo", "reference_name": todo.name},
				"not both",
			),
			({"doc": "[1]"}, "doc: must be an object"),
		]
		for args, text in cases:
			with self.subTest(text=text):
				status, body = self.call("flow_automation.api.simulate", {"template": template.name, **args})
				self.assertEqual(status, 417, body)
				self.assertIn(text, json.dumps(body))

	def test_a_draft_without_a_valid_version_is_dry_run_through_its_definition(self):
		name = self.ok(
			"import_template",
			{"data": {"template_name": unique("Draft"), "definition": {"steps": BROKEN_FLOW}}},
		)
		status, body = self.call("flow_automation.api.simulate", {"template": name})
		self.assertEqual(status, 417, body)
		self.assertIn("no valid version yet", json.dumps(body))

	# --- linked documents in templates --------------------------------------------------------

	def test_linked_documents_render_in_a_real_run_and_a_dry_run(self):
		template = self.committed_template(
			[
				{
					"id": "who",
					"kind": "set_variables",
					"payload": {
						"variables": {
							"name": "{{ linked.allocated_to.full_name }}",
							"owner": "{{ linked.owner.name }}",
							"by": "{{ linked.assigned_by.first_name }}",
							"nothing": "{{ linked.description.full_name }}|{{ linked.role.name }}",
						}
					},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		)
		todo = make_todo("linked", allocated_to=self.emails["norole"], assigned_by=self.emails["manager"])
		frappe.db.commit()
		expected = {
			"name": "Linked Person Builder",
			"owner": "Administrator",
			"by": "Flow Manager",
			"nothing": "|",
		}

		run = runtime.start_run(
			template.name, reference_doctype="ToDo", reference_name=todo.name, advance="now"
		)
		variables = json.loads(frappe.db.get_value("Flow Run", run, "variables"))
		self.assertEqual({k: variables[k] for k in expected}, expected)

		result = self.ok(
			"flow_automation.api.simulate",
			{"template": template.name, "reference_doctype": "ToDo", "reference_name": todo.name},
		)
		self.assertEqual({k: result["variables"][k] for k in expected}, expected)

		typed = self.ok(
			"flow_automation.api.simulate",
			{"template": template.name, "doc": {"allocated_to": self.emails["norole"], "name": "typed"}},
		)
		self.assertEqual(typed["variables"]["name"], "Linked Person Builder")

	def test_linked_documents_are_read_with_the_run_as_users_permissions(self):
		template = self.committed_template(
			[
				{
					"id": "who",
					"kind": "set_variables",
					"payload": {"variables": {"name": "[{{ linked.allocated_to.full_name }}]"}},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
			options={"run_as": self.emails["user"]},
		)
		# a Flow User may not read another user's User record
		todo = make_todo("linked", allocated_to=self.emails["manager"])
		frappe.db.commit()
		run = runtime.start_run(
			template.name, reference_doctype="ToDo", reference_name=todo.name, advance="now"
		)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(json.loads(frappe.db.get_value("Flow Run", run, "variables"))["name"], "[]")
