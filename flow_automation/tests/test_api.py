"""The whitelisted API through Frappe's real request path (WSGI app, token auth, status codes).

Requests run in their own thread and database connection, as a real request would, so the
fixtures here are committed and removed again in tearDownClass.
"""

from __future__ import annotations

import json

import frappe
from frappe.tests.test_api import make_request
from frappe.utils import get_test_client

from flow_automation import runtime
from flow_automation.tests.utils import FlowTestCase, make_template, unique

PREFIX = "flow-api-test"
USERS = {
	"user": ["Flow User"],
	"manager": ["Flow Manager"],
	"norole": [],
}
METHODS = (
	"start",
	"advance",
	"complete",
	"cancel",
	"retry",
	"validate_definition",
	"simulate",
	"get_step_catalog",
	"dispatch_event",
	"start_many",
	"flow_automation.flow_automation.doctype.flow_template.flow_template.duplicate_template",
)
# Methods a Flow User may not call (they change or dry-run templates).
MANAGER_ONLY = (
	"simulate",
	"flow_automation.flow_automation.doctype.flow_template.flow_template.duplicate_template",
)


class TestFlowAPI(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.client = get_test_client(use_cookies=False)
		cls.tokens = {}
		for key, roles in USERS.items():
			email = f"{PREFIX}-{key}@example.com"
			if not frappe.db.exists("User", email):
				frappe.get_doc(
					{
						"doctype": "User",
						"email": email,
						"first_name": key,
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
		cls.template = make_template(
			[
				{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}},
				{
					"id": "note",
					"kind": "create_document",
					"depends_on": ["gate"],
					"payload": {"doctype": "Note", "fields": {"title": "api {{ steps.gate.output.who }}"}},
				},
			],
			name=unique("API Flow"),
		)
		# a public Note: readable by every desk user (start_many checks each document)
		cls.note = frappe.get_doc({"doctype": "Note", "title": "api matrix", "public": 1}).insert().name
		cls.failing = make_template(
			[
				{
					"id": "boom",
					"kind": "update_document",
					"payload": {
						"target": "document",
						"doctype": "ToDo",
						"name": "nope-api",
						"fields": {"status": "Closed"},
					},
				}
			],
			name=unique("API Failing"),
		)
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		copies = frappe.get_all("Flow Template", filters={"name": ("like", "API Copy%")}, pluck="name")
		for template in (cls.template.name, cls.failing.name, *copies):
			for run in frappe.get_all("Flow Run", filters={"template": template}, pluck="name"):
				frappe.db.delete("Flow Step Log", {"run": run})
				frappe.db.delete("Flow Step Pending", {"run": run})
				frappe.db.delete("Flow Run", {"name": run})
			frappe.delete_doc("Flow Template", template, force=True)
		frappe.db.delete("Note", {"title": ("like", "api %")})
		frappe.db.delete("Note", {"name": cls.note})
		for key in USERS:
			frappe.delete_doc("User", f"{PREFIX}-{key}@example.com", force=True)
		frappe.db.commit()
		super().tearDownClass()

	def call(self, method: str, data: dict | None = None, who: str | None = None):
		headers = {"Authorization": self.tokens[who]} if who else {}
		response = make_request(
			target=self.client.post,
			args=(f"/api/method/{method if '.' in method else 'flow_automation.api.' + method}",),
			kwargs={"json": data or {}, "headers": headers},
		)
		return response.status_code, response.json if response.is_json else response.get_data(as_text=True)

	def new_waiting_run(self) -> str:
		run = runtime.start_run(self.template.name, advance="now")
		frappe.db.commit()
		return run

	def new_failed_run(self) -> str:
		run = runtime.start_run(self.failing.name, advance="now")
		frappe.db.commit()
		return run

	def args_for(self, method: str) -> dict:
		if method == "start":
			return {"template": self.template.name, "run_now": 1}
		if method in ("advance", "cancel"):
			return {"run": self.new_waiting_run()}
		if method == "complete":
			return {"run": self.new_waiting_run(), "step": "gate", "result": {"who": "api"}}
		if method == "retry":
			return {"run": self.new_failed_run(), "steps": ["boom"]}
		if method == "validate_definition":
			return {"definition": {"steps": [{"id": "a", "kind": "wait", "payload": {}}]}}
		if method == "simulate":
			return {"template": self.template.name, "answers": {"gate": {"who": "sim"}}}
		if method == "dispatch_event":
			return {"event": "api.matrix.nobody_listens"}
		if method == "start_many":
			return {"template": self.template.name, "reference_doctype": "Note", "names": [self.note]}
		if method.endswith("duplicate_template"):
			return {"template": self.template.name, "new_name": unique("API Copy")}
		return {}

	def test_guests_and_users_without_a_flow_role_get_403_from_every_method(self):
		for method in METHODS:
			for who in (None, "norole"):
				with self.subTest(method=method, who=who or "Guest"):
					status, body = self.call(method, self.args_for(method), who)
					self.assertEqual(status, 403, body)

	def test_flow_users_may_run_flows_but_not_dry_run_or_copy_templates(self):
		for method in METHODS:
			with self.subTest(method=method):
				status, body = self.call(method, self.args_for(method), "user")
				self.assertEqual(status, 403 if method in MANAGER_ONLY else 200, body)

	def test_flow_managers_may_call_every_method(self):
		for method in METHODS:
			with self.subTest(method=method):
				status, body = self.call(method, self.args_for(method), "manager")
				self.assertEqual(status, 200, body)

	def test_start_then_complete_through_the_api(self):
		status, body = self.call("start", {"template": self.template.name, "run_now": 1}, "user")
		self.assertEqual(status, 200)
		run = body["message"]["run"]
		self.assertEqual(body["message"]["status"], "Waiting")
		status, body = self.call(
			"complete", {"run": run, "step": "gate", "result": json.dumps({"who": "Jane"})}, "user"
		)
		self.assertEqual((status, body["message"]["status"]), (200, "Completed"))
		frappe.db.rollback()  # see the request's committed writes
		self.assertTrue(frappe.db.exists("Note", {"title": "api Jane"}))

	def test_bad_input_is_a_clear_validation_error_never_a_500(self):
		run = self.new_waiting_run()
		cases = [
			("start", {"template": "No Such Template"}, 417, "does not exist"),
			("start", {"template": self.template.name, "reference_doctype": "ToDo"}, 417, "go together"),
			(
				"start",
				{"template": self.template.name, "reference_doctype": "ToDo", "reference_name": "nope"},
				417,
				"does not exist",
			),
			(
				"start",
				{"template": self.template.name, "variables": "{oops"},
				417,
				"variables: not valid JSON",
			),
			(
				"start",
				{"template": self.template.name, "variables": "[1, 2]"},
				417,
				"variables: must be an object",
			),
			("complete", {"run": "no-such-run", "step": "gate"}, 404, "does not exist"),
			("complete", {"run": run, "step": "note"}, 417, "is not waiting"),
			("complete", {"run": run, "step": "ghost"}, 417, "no step 'ghost'"),
			("complete", {"run": run, "step": "gate", "result": "not json"}, 417, "result: not valid JSON"),
			("retry", {"run": run, "steps": []}, 417, "list of failed step ids"),
			("retry", {"run": run, "steps": ["gate"]}, 417, "has not failed"),
			("validate_definition", {"definition": "{"}, 417, "not valid JSON"),
			("simulate", {"template": "No Such Template"}, 417, "does not exist"),
		]
		for method, args, expected, text in cases:
			with self.subTest(method=method, args=args):
				status, body = self.call(method, args, "manager")
				self.assertEqual(status, expected, body)
				self.assertIn(text, json.dumps(body))

	def test_validate_definition_returns_every_problem(self):
		status, body = self.call(
			"validate_definition",
			{
				"definition": {
					"steps": [{"id": "a", "kind": "nope"}, {"id": "a", "kind": "wait", "depends_on": ["zz"]}]
				}
			},
			"user",
		)
		self.assertEqual(status, 200)
		result = body["message"]
		self.assertFalse(result["valid"])
		pointers = {(e["step"], e["pointer"]) for e in result["errors"]}
		self.assertIn(("a", "/kind"), pointers)
		self.assertIn(("a", "/id"), pointers)
		self.assertIn(("a", "/depends_on/0"), pointers)

	def test_simulate_through_the_api_leaves_no_rows_behind(self):
		before = {dt: frappe.db.count(dt) for dt in ("Note", "Flow Run", "Flow Step Log")}
		status, body = self.call(
			"simulate", {"template": self.template.name, "answers": {"gate": {"who": "sim"}}}, "manager"
		)
		self.assertEqual(status, 200, body)
		self.assertEqual(body["message"]["status"], "Completed")
		self.assertEqual(
			[e["step"] for e in body["message"]["timeline"] if e["action"] == "executed"], ["gate", "note"]
		)
		frappe.db.rollback()
		self.assertEqual({dt: frappe.db.count(dt) for dt in before}, before)

	def test_start_many_checks_read_permission_on_each_document(self):
		todo = frappe.get_doc({"doctype": "ToDo", "description": "api matrix private"}).insert().name
		frappe.db.commit()
		try:
			args = {"template": self.template.name, "reference_doctype": "ToDo", "names": [todo]}
			status, body = self.call("start_many", args, "user")  # someone else's ToDo
			self.assertEqual(status, 403, body)
			frappe.db.rollback()
			self.assertFalse(frappe.db.exists("Flow Run", {"reference_name": todo}))
		finally:
			frappe.db.delete("ToDo", {"name": todo})
			frappe.db.commit()

	def test_every_whitelisted_method_answers_a_bare_post_with_403_or_417_never_500(self):
		"""Found by walking the app, so a new method cannot slip through: no role → 403 whatever
		the arguments; a missing argument → 417 naming it; never a TypeError's 500."""
		methods = whitelisted_methods()
		self.assertIn("flow_automation.api.start", methods)
		self.assertGreaterEqual(len(methods), 17)
		for path, fn in methods.items():
			guest = fn in frappe.guest_methods
			required = required_arguments(fn)
			with self.subTest(method=path):
				status, body = self.call(path, {}, None if guest else "norole")
				self.assertEqual(status, 403, body)  # a guest without a valid signature or secret, too
				if guest:
					continue
				status, body = self.call(path, {}, "manager")
				if required:
					self.assertEqual(status, 417, body)
					for name in required:
						self.assertIn(name, json.dumps(body))
				else:
					self.assertEqual(status, 200, body)

	def test_a_run_needs_a_document_of_the_templates_doctype(self):
		contact_flow = make_template(
			[{"id": "a", "kind": "wait", "payload": {}}],
			name=unique("API Contact Flow"),
			trigger={"type": "Manual", "doctype": "Contact"},
		)
		frappe.db.commit()
		cases = [
			(
				"start",
				{"template": contact_flow.name, "reference_doctype": "Note", "reference_name": self.note},
			),
			(
				"start_many",
				{"template": contact_flow.name, "reference_doctype": "Note", "names": [self.note]},
			),
			(
				"simulate",
				{"template": contact_flow.name, "reference_doctype": "Note", "reference_name": self.note},
			),
		]
		for method, args in cases:
			with self.subTest(method=method):
				status, body = self.call(method, args, "manager")
				self.assertEqual(status, 417, body)
				self.assertIn("works on Contact documents, not on Note", json.dumps(body))
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("Flow Run", {"template": contact_flow.name}), 0)


def whitelisted_methods() -> dict[str, object]:
	"""Every whitelisted function of this app, by dotted path (importing every module first)."""
	import importlib
	import pkgutil

	import flow_automation

	for module in pkgutil.walk_packages(flow_automation.__path__, "flow_automation."):
		if ".tests" not in module.name and ".test_" not in module.name and not module.name.endswith(".hooks"):
			importlib.import_module(module.name)
	return {
		f"{fn.__module__}.{fn.__name__}": fn
		for fn in frappe.whitelisted
		if getattr(fn, "__module__", "").startswith("flow_automation.")
	}


def required_arguments(fn) -> list[str]:
	import inspect

	return [
		name
		for name, p in inspect.signature(fn).parameters.items()
		if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
	]
