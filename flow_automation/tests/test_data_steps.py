"""`lookup` and `run_script` on a real site: reads with the right user's permissions, scripts
through Frappe's safe_exec, dry runs, and who may save a run_script step.

Server scripts are switched on for the tests that need them the only way Frappe reads the
switch: `server_script_enabled` in common_site_config.json (`is_safe_exec_enabled` reads that
file, not frappe.conf), set under Frappe's config lock and put back as it was afterwards.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import frappe
from frappe.tests.test_api import make_request
from frappe.utils import get_test_client
from frappe.utils.safe_exec import SAFE_EXEC_CONFIG_KEY, is_safe_exec_enabled
from frappe.utils.synchronization import filelock

from flow_automation import runtime
from flow_automation.portable import template_values_from_export
from flow_automation.tests.utils import (
	FlowTestCase,
	RecordingServer,
	logs,
	make_template,
	make_todo,
	state,
	unique,
)

PREFIX = "fa-data-test"
USERS = {
	"reader": [],
	"other": [],
	"manager": ["Flow Manager"],
	"sysman": ["Flow Manager", "System Manager"],
}
FLOWS = Path(__file__).resolve().parent / "flows"
CODE = "frappe.response['message'] = {'answer': 42}"


def email(key: str) -> str:
	return f"{PREFIX}-{key}@example.com"


@contextmanager
def server_scripts(enabled: bool) -> Iterator[None]:
	"""Server scripts on (or off) for a block: the site's real switch, restored afterwards."""
	path = os.path.join(frappe.local.sites_path, "common_site_config.json")
	missing = object()

	def write(update) -> Any:
		with filelock("site_config", is_global=True):
			config = json.loads(Path(path).read_text())
			previous = config.get(SAFE_EXEC_CONFIG_KEY, missing)
			update(config)
			# atomically: other processes of the bench read this file at any moment
			fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".common_site_config.")
			with os.fdopen(fd, "w") as f:
				f.write(json.dumps(config, indent=1, sort_keys=True))
			os.chmod(temporary, os.stat(path).st_mode)
			os.replace(temporary, path)
			return previous

	previous = write(lambda config: config.__setitem__(SAFE_EXEC_CONFIG_KEY, int(enabled)))
	try:
		yield
	finally:

		def restore(config: dict) -> None:
			if previous is missing:
				config.pop(SAFE_EXEC_CONFIG_KEY, None)
			else:
				config[SAFE_EXEC_CONFIG_KEY] = previous

		write(restore)


def start(template, doc=None, **kwargs) -> str:
	return runtime.start_run(
		template.name,
		reference_doctype=doc.doctype if doc else None,
		reference_name=doc.name if doc else None,
		advance="now",
		**kwargs,
	)


def run_of(name: str) -> Any:
	return frappe.db.get_value("Flow Run", name, ["status", "error", "variables"], as_dict=True)


def lookup_step(payload: dict[str, Any], step_id: str = "find", **extra: Any) -> dict[str, Any]:
	return {"id": step_id, "kind": "lookup", "payload": payload, **extra}


def script_step(payload: dict[str, Any], step_id: str = "compute", **extra: Any) -> dict[str, Any]:
	return {"id": step_id, "kind": "run_script", "payload": payload, **extra}


def branch_steps(parent: str = "find") -> list[dict[str, Any]]:
	"""A set_variables child on each of a lookup's branches: which one ran shows the branch."""
	return [
		{
			"id": "on_found",
			"kind": "set_variables",
			"parent_id": parent,
			"branch": "found",
			"payload": {"variables": {"took": "found"}},
		},
		{
			"id": "on_not_found",
			"kind": "set_variables",
			"parent_id": parent,
			"branch": "not_found",
			"payload": {"variables": {"took": "not_found"}},
		},
	]


def example_template(file: str):
	"""An example flow as a template, started by hand here (its trigger would start it on
	every new ToDo of the site)."""
	values = template_values_from_export(json.loads((FLOWS / file).read_text()))
	values.update(template_name=unique(values["template_name"]), trigger_type="Manual", document_event=None)
	return frappe.get_doc({"doctype": "Flow Template", **values}).insert()


def forget_server_script(name: str) -> None:
	"""Delete a test's Server Script and Frappe's cached map of scripts, which may still name it
	after a rollback removed the row (a DocType Event script would then run on every save)."""
	frappe.db.delete("Server Script", {"name": name})
	frappe.db.commit()
	frappe.cache.delete_value("server_script_map")


def ensure_users() -> None:
	for key, roles in USERS.items():
		if not frappe.db.exists("User", email(key)):
			frappe.get_doc(
				{
					"doctype": "User",
					"email": email(key),
					"first_name": key,
					"last_name": "Data",
					"send_welcome_email": 0,
					"user_type": "System User",
				}
			).insert(ignore_permissions=True)
		user = frappe.get_doc("User", email(key))
		user.set("roles", [])
		for role in roles:
			user.append("roles", {"role": role})
		user.save(ignore_permissions=True)


def todo_of(user: str, description: str, **fields: Any):
	"""A ToDo that `user` may read (allocated to and assigned by them), made by Administrator."""
	return make_todo(description, allocated_to=user, assigned_by=user, **fields)


class DataStepsTestCase(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		ensure_users()
		frappe.db.commit()
		cls.reader, cls.other = email("reader"), email("other")

	@classmethod
	def tearDownClass(cls):
		frappe.set_user("Administrator")
		for key in USERS:
			frappe.delete_doc("User", email(key), force=True, ignore_permissions=True)
		frappe.db.commit()
		super().tearDownClass()


class TestLookup(DataStepsTestCase):
	def test_by_name_it_reads_the_document_as_run_as_and_later_steps_use_it(self):
		todo = todo_of(self.reader, "Mine to read", priority="High")
		template = make_template(
			[
				lookup_step({"doctype": "ToDo", "name": "{{ variables.todo }}", "fields": ["description"]}),
				*branch_steps(),
				{
					"id": "use",
					"kind": "set_variables",
					"depends_on": ["on_found"],
					"payload": {"variables": {"seen": "{{ steps.find.output.doc.description }}"}},
				},
			],
			run_as=self.reader,
		)
		run = start(template, variables={"todo": todo.name})
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		find = state(run)["find"]
		self.assertEqual(find["branch"], "found")
		self.assertEqual(
			find["output"],
			{"doctype": "ToDo", "doc": {"doctype": "ToDo", "name": todo.name, "description": "Mine to read"}},
		)
		variables = json.loads(run_of(run).variables)
		self.assertEqual((variables["took"], variables["seen"]), ("found", "Mine to read"))

	def test_a_missing_document_takes_not_found(self):
		template = make_template(
			[lookup_step({"doctype": "ToDo", "name": "{{ variables.todo }}"}), *branch_steps()],
			run_as=self.reader,
		)
		for missing in ("no-such-todo", ""):
			run = start(template, variables={"todo": missing})
			self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
			self.assertEqual(state(run)["find"]["branch"], "not_found")
			self.assertEqual(state(run)["find"]["output"], {"doctype": "ToDo", "doc": None})
			self.assertEqual(json.loads(run_of(run).variables)["took"], "not_found")

	def test_a_document_the_user_may_not_read_is_a_step_error(self):
		theirs = todo_of(self.other, "Not yours")
		template = make_template(
			[lookup_step({"doctype": "ToDo", "name": theirs.name}), *branch_steps()], run_as=self.reader
		)
		run = start(template)
		self.assertEqual(run_of(run).status, "Failed")
		self.assertIn(f"name: {self.reader} may not read ToDo '{theirs.name}'", run_of(run).error)
		self.assertNotIn("on_found", state(run))

	def test_a_list_shows_only_what_the_user_may_read(self):
		tag = unique("lookup-list")
		mine = [todo_of(self.reader, f"{tag} one"), todo_of(self.reader, f"{tag} two")]
		todo_of(self.other, f"{tag} three")
		payload = {
			"doctype": "ToDo",
			"filters": {"description": ["like", f"{tag}%"]},
			"fields": ["name", "allocated_to", "description"],
			"order_by": "description asc",
		}
		template = make_template([lookup_step(payload), *branch_steps()], run_as=self.reader)
		find = state(start(template))["find"]
		self.assertEqual(find["branch"], "found")
		self.assertEqual(find["output"]["count"], 2)
		self.assertEqual([d["name"] for d in find["output"]["docs"]], [mine[0].name, mine[1].name])
		self.assertEqual({d["allocated_to"] for d in find["output"]["docs"]}, {self.reader})

		# rows the user may not see: none found, not an error
		only_theirs = {
			**payload,
			"filters": [["description", "like", f"{tag}%"], ["allocated_to", "=", self.other]],
		}
		template = make_template([lookup_step(only_theirs), *branch_steps()], run_as=self.reader)
		run = start(template)
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		self.assertEqual(state(run)["find"]["branch"], "not_found")
		self.assertEqual(state(run)["find"]["output"]["docs"], [])

		# Run As Administrator, said explicitly, reads everything
		template = make_template([lookup_step(payload), *branch_steps()], run_as="Administrator")
		self.assertEqual(state(start(template))["find"]["output"]["count"], 3)

	def test_without_run_as_it_reads_as_the_trigger_documents_owner(self):
		tag = unique("lookup-owner")
		todo_of(self.reader, f"{tag} a")
		todo_of(self.other, f"{tag} b")
		frappe.set_user(self.reader)
		trigger_doc = make_todo(f"{tag} trigger", allocated_to=self.reader)
		frappe.set_user("Administrator")
		self.assertEqual(trigger_doc.owner, self.reader)
		template = make_template(
			[lookup_step({"doctype": "ToDo", "filters": {"description": ["like", f"{tag}%"]}, "limit": 10})]
		)
		run = start(template, trigger_doc)
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		# the run's other steps run as Administrator (no Run As); the lookup read as the owner
		self.assertEqual(frappe.db.get_value("Flow Run", run, "run_as"), "Administrator")
		self.assertEqual(state(run)["find"]["output"]["count"], 2)

	def test_it_never_reads_as_administrator_by_default(self):
		admins = make_todo("made by Administrator")
		template = make_template([lookup_step({"doctype": "ToDo", "filters": {}})])
		run = start(template, admins)
		self.assertEqual(run_of(run).status, "Failed")
		self.assertIn(f"ToDo {admins.name} is owned by Administrator", run_of(run).error)
		self.assertIn("set Run As on the template", run_of(run).error)

		run = start(template)  # no document, no Run As: nobody to read as
		self.assertEqual(run_of(run).status, "Failed")
		self.assertIn("this run has neither: set Run As", run_of(run).error)

	def test_bad_input_fails_the_step_naming_the_field(self):
		cases = [
			(
				{"doctype": "No Such DocType", "filters": {}},
				"doctype: DocType 'No Such DocType' does not exist",
			),
			(
				{"doctype": "ToDo", "filters": {}, "fields": ["name", "nope"]},
				"fields/1: ToDo has no field 'nope'",
			),
			({"doctype": "ToDo", "filters": {"nope": "x"}}, "filters/nope: ToDo has no field 'nope'"),
			(
				{"doctype": "ToDo", "filters": [["ToDo", "nope", "=", 1]]},
				"filters/0: ToDo has no field 'nope'",
			),
			(
				{"doctype": "ToDo", "filters": {}, "order_by": "nope desc"},
				"order_by: ToDo has no field 'nope'",
			),
			({"doctype": "Has Role", "filters": {}}, "doctype: Has Role is a child table"),
			(
				{"doctype": "Flow Template", "filters": {}},
				f"doctype: {email('reader')} may not read Flow Template documents",
			),
		]
		for payload, message in cases:
			with self.subTest(payload=payload):
				template = make_template([lookup_step(payload)], run_as=self.reader)
				run = start(template)
				self.assertEqual(run_of(run).status, "Failed")
				self.assertIn(f"step 'find' (find) failed: {message}", run_of(run).error)
				(log,) = logs(run)
				self.assertEqual((log.step_id, log.status), ("find", "Failed"))

	def test_a_dry_run_reads_for_real_and_records_that_it_read(self):
		todo = todo_of(self.reader, "Dry run reads me")
		template = make_template(
			[lookup_step({"doctype": "ToDo", "name": "{{ doc.name }}"}), *branch_steps()],
			run_as=self.reader,
		)
		result = runtime.simulate_template(template.name, reference_doctype="ToDo", reference_name=todo.name)
		self.assertEqual(result.status, "Completed", result.error)
		(find,) = (entry for entry in result.timeline if entry.step_id == "find")
		self.assertEqual(find.branch, "found")
		self.assertEqual(find.output["doc"]["description"], "Dry run reads me")
		self.assertIn(
			{
				"step": "find",
				"kind": "lookup",
				"action": "read",
				"doctype": "ToDo",
				"user": self.reader,
				"found": True,
				"name": todo.name,
			},
			result.calls,
		)
		self.assertFalse(frappe.db.exists("Flow Run", {"template": template.name}))

	def test_the_example_flow_runs_on_a_new_todo(self):
		template = example_template("todo_workload_lookup.json")
		tag = unique("example")
		todo_of(self.reader, f"{tag} already open")
		frappe.set_user(self.reader)
		first = make_todo(f"{tag} new", allocated_to=self.reader)
		frappe.set_user("Administrator")
		run = start(template, first)
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		self.assertEqual(state(run)["open_todos"]["branch"], "found")
		self.assertEqual(frappe.db.get_value("ToDo", first.name, "priority"), "Low")
		self.assertEqual(
			frappe.db.get_value("ToDo", first.name, "description"), f"{tag} new (after 1 open ToDos)"
		)


class TestRunScript(DataStepsTestCase):
	def test_an_inline_script_reads_the_run_and_its_result_is_the_output(self):
		todo = make_todo("seven c")
		code = "\n".join(
			[
				"total = int(variables.factor) * len(doc.description)",
				"frappe.response['message'] = {",
				"    'total': total,",
				"    'who': args.who,",
				"    'earlier': steps.setup.output.factor,",
				"    'event': trigger.event,",
				"}",
			]
		)
		template = make_template(
			[
				{"id": "setup", "kind": "set_variables", "payload": {"variables": {"factor": "3"}}},
				script_step({"code": code, "args": {"who": "{{ doc.name }}"}}, depends_on=["setup"]),
				{
					"id": "after",
					"kind": "set_variables",
					"depends_on": ["compute"],
					"payload": {"variables": {"total": "{{ steps.compute.output.total }}"}},
				},
			]
		)
		with server_scripts(True):
			run = start(template, todo, trigger={"type": "Manual", "event": "by hand"})
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		self.assertEqual(
			state(run)["compute"]["output"],
			{"total": 21, "who": todo.name, "earlier": "3", "event": "by hand"},
		)
		self.assertEqual(json.loads(run_of(run).variables)["total"], "21")
		log = next(entry for entry in logs(run) if entry.step_id == "compute")
		self.assertEqual(json.loads(log.input)["args"], {"who": todo.name})  # the rendered arguments

	def test_a_server_script_of_type_api_by_name(self):
		with server_scripts(True):
			script = self.make_server_script("frappe.flags.doubled = int(frappe.form_dict.n) * 2")
			other = self.make_server_script(
				"pass", script_type="DocType Event", reference_doctype="Note", doctype_event="Before Insert"
			)
			off = self.make_server_script("frappe.response['message'] = 1", disabled=1)
			template = make_template([script_step({"script": script, "args": {"n": "{{ variables.n }}"}})])
			run = start(template, variables={"n": 21})
			self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
			self.assertEqual(state(run)["compute"]["output"], {"doubled": 42})
			for name, message in (
				(other, f"script: Server Script '{other}' is of type DocType Event, not API"),
				(off, f"script: Server Script '{off}' is disabled"),
				("No Such Script", "script: Server Script 'No Such Script' does not exist"),
			):
				run = start(make_template([script_step({"script": name})]))
				self.assertEqual(run_of(run).status, "Failed")
				self.assertIn(message, run_of(run).error)

	def make_server_script(self, source: str, **fields: Any) -> str:
		name = unique("Flow Data Script")
		frappe.get_doc(
			{
				"doctype": "Server Script",
				"name": name,
				"script_type": "API",
				"api_method": frappe.scrub(name),
				"script": source,
				**fields,
			}
		).insert()
		self.addCleanup(forget_server_script, name)
		return name

	def test_with_server_scripts_disabled_the_step_fails_clearly(self):
		template = make_template([script_step({"code": CODE})])
		with server_scripts(False):
			self.assertFalse(is_safe_exec_enabled())
			run = start(template)
		self.assertEqual(run_of(run).status, "Failed")
		self.assertIn("server scripts are disabled on this site", run_of(run).error)
		self.assertIn("server_script_enabled", run_of(run).error)

	def test_a_script_error_is_the_steps_error_with_its_line(self):
		cases = [
			("a = 1\nb = a / 0", "script error on line 2: ZeroDivisionError: division by zero"),
			(
				"x = 1\n\nfrappe.throw('Too big: ' + str(x))",
				"script error on line 3: ValidationError: Too big: 1",
			),
			("x = 1\n_hidden = 2", 'script error on line 2: "_hidden" is an invalid variable name'),
			(
				"x = 1\nfrappe.get_doc('ToDo', 'no-such-todo-xyz')",
				"script error on line 2: DoesNotExistError: ToDo no-such-todo-xyz not found",
			),
			("def f(n):\n    return n.missing()\nf(1)", "script error on line 2: TypeError"),
			("frappe.db.commit()", "script error on line 1"),  # commit is taken away
		]
		with server_scripts(True):
			for code, message in cases:
				with self.subTest(code=code):
					run = start(make_template([script_step({"code": code})]))
					self.assertEqual(run_of(run).status, "Failed")
					self.assertIn(f"step 'compute' (compute) failed: {message}", run_of(run).error)

	def test_the_time_cap_stops_a_loop_where_it_is(self):
		loops = [
			"n = 0\nwhile True:\n    n = n + 1",
			# a script's own `except Exception` does not swallow the cap
			"n = 0\nwhile True:\n    try:\n        n = n + 1\n    except Exception:\n        pass",
		]
		with server_scripts(True):
			for code in loops:
				with self.subTest(code=code):
					run = start(make_template([script_step({"code": code, "timeout_seconds": 0.3})]))
					self.assertEqual(run_of(run).status, "Failed")
					self.assertIn(
						"ran longer than its cap of 0.3 s and was stopped on line", run_of(run).error
					)
			# one long call is not interrupted halfway: the step fails when it returns
			slow = "x = 1\nfrappe.db.sql('select sleep(0.6)')"
			run = start(make_template([script_step({"code": slow, "timeout_seconds": 0.3})]))
			self.assertEqual(run_of(run).status, "Failed")
			self.assertRegex(run_of(run).error, r"the script took \d+\.\d s; its cap is 0\.3 s")

	def test_the_output_is_capped(self):
		template = make_template([script_step({"code": "frappe.response['message'] = 'x' * 70000"})])
		with server_scripts(True):
			run = start(template)
		self.assertEqual(run_of(run).status, "Failed")
		self.assertIn(
			"the script's result is 70002 characters of JSON; a step's output may hold at most 64000",
			run_of(run).error,
		)

	def test_the_runs_data_is_read_only_and_a_failed_script_writes_nothing(self):
		todo = make_todo("as it was")
		title = unique("script note")
		template = make_template(
			[
				{"id": "setup", "kind": "set_variables", "payload": {"variables": {"factor": "3"}}},
				script_step(
					{
						"code": "doc.description = 'changed'\nvariables.factor = 'x'\nfrappe.response['message'] = 1"
					},
					depends_on=["setup"],
				),
				{
					"id": "after",
					"kind": "set_variables",
					"depends_on": ["compute"],
					"payload": {"variables": {"seen": "{{ doc.description }}/{{ variables.factor }}"}},
				},
				script_step(
					{
						"code": f"frappe.get_doc({{'doctype': 'Note', 'title': '{title}'}}).insert()\n"
						"frappe.throw('after the insert')"
					},
					step_id="writes",
					depends_on=["after"],
					on_error="continue",
				),
			]
		)
		with server_scripts(True):
			run = start(template, todo)
		self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
		self.assertEqual(json.loads(run_of(run).variables)["seen"], "as it was/3")
		self.assertEqual(frappe.db.get_value("ToDo", todo.name, "description"), "as it was")
		self.assertIn(
			"script error on line 2: ValidationError: after the insert", state(run)["writes"]["error"]
		)
		self.assertFalse(frappe.db.exists("Note", {"title": title}))  # the step's savepoint undid it

	def test_a_dry_run_executes_the_script_and_leaves_nothing_behind(self):
		title = unique("dry note")
		with RecordingServer() as server:
			code = "\n".join(
				[
					f"note = frappe.get_doc({{'doctype': 'Note', 'title': '{title}'}}).insert()",
					f"frappe.make_post_request('{server.url}/hook', data={{'note': note.name}})",
					"frappe.enqueue('frappe.ping')",
					"frappe.sendmail(recipients=['x@example.com'], subject='hi', now=True)",
					"frappe.response['message'] = {'note': note.name}",
				]
			)
			template = make_template([script_step({"code": code})])
			with server_scripts(True):
				result = runtime.simulate_template(template.name)
				self.assertEqual(result.status, "Completed", result.error)
				(compute,) = (entry for entry in result.timeline if entry.step_id == "compute")
				note = compute.output["note"]
				self.assertTrue(note)
				self.assertFalse(frappe.db.exists("Note", note))  # rolled back
				self.assertFalse(frappe.db.exists("Note", {"title": title}))
				self.assertEqual(server.requests, [])  # recorded, not made
				actions = [call["action"] for call in result.calls]
				self.assertEqual(
					actions, ["script: make_post_request", "script: enqueue", "script: sendmail"]
				)
				self.assertEqual(result.calls[0]["args"], [f"{server.url}/hook"])
				self.assertEqual(result.calls[0]["kwargs"], {"data": {"note": note}})

				# a real run makes its calls
				calls = f"note = frappe.get_doc({{'doctype': 'Note', 'title': '{title}'}}).insert()\n"
				calls += f"frappe.make_post_request('{server.url}/hook', data={{'note': note.name}})"
				run = start(make_template([script_step({"code": calls})]))
				self.assertEqual(run_of(run).status, "Completed", run_of(run).error)
				self.assertEqual(len(server.requests), 1)
				self.assertTrue(frappe.db.exists("Note", {"title": title}))

	def test_a_dry_run_never_executes_unsaved_script_code(self):
		template = make_template([script_step({"code": CODE})])
		edited = {"version": 1, "steps": [script_step({"code": "frappe.response['message'] = 'edited'"})]}
		with server_scripts(True):
			saved = runtime.simulate_template(template.name)
			unsaved = runtime.simulate_template(template.name, definition=edited)
		self.assertEqual(saved.status, "Completed", saved.error)
		self.assertEqual(unsaved.status, "Failed")
		self.assertIn("a test run executes a run_script step only as saved on the template", unsaved.error)

	def test_the_example_flow_scores_and_routes(self):
		template = example_template("todo_workload_script.json")
		for priority in ("High", "High"):
			todo_of(self.other, "busy work", priority=priority)
		free = todo_of(self.reader, "reader's only one")
		busy = todo_of(self.other, "one more")
		with server_scripts(True):
			free_run, busy_run = start(template, free), start(template, busy)
		self.assertEqual(state(free_run)["score"]["output"], {"score": 0, "open": 0, "level": "free"})
		self.assertEqual(frappe.db.get_value("ToDo", free.name, "priority"), "High")
		self.assertEqual(state(busy_run)["score"]["output"]["level"], "busy")
		self.assertEqual(frappe.db.get_value("ToDo", busy.name, "priority"), "Low")


class TestWhoMaySaveScripts(DataStepsTestCase):
	"""Only a System Manager may add or change a run_script step; keeping one is anyone's save."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.client = get_test_client(use_cookies=False)
		cls.tokens = {}
		for key in ("manager", "sysman"):
			user = frappe.get_doc("User", email(key))
			user.api_key = user.api_key or frappe.generate_hash(length=15)
			secret = frappe.generate_hash(length=15)
			user.api_secret = secret
			user.save(ignore_permissions=True)
			cls.tokens[key] = f"token {user.api_key}:{secret}"
		frappe.db.commit()

	def steps(self, code: str = CODE, args: dict | None = None) -> list[dict[str, Any]]:
		return [
			{"id": "first", "kind": "wait", "label": "First", "payload": {}},
			script_step({"code": code, "args": args or {}}, depends_on=["first"]),
		]

	def test_a_flow_manager_may_not_add_a_script_step(self):
		frappe.set_user(email("manager"))
		with self.assertRaises(frappe.PermissionError) as raised:
			make_template(self.steps())
		self.assertIn("Row #2 (compute): only a System Manager may add or change a", str(raised.exception))
		template = make_template(self.steps()[:1])  # no script: fine
		template.append(
			"steps", {"step_id": "compute", "kind": "run_script", "payload": json.dumps({"code": CODE})}
		)
		self.assertRaises(frappe.PermissionError, template.save)

	def test_a_system_manager_may_add_and_change_one(self):
		frappe.set_user(email("sysman"))
		template = make_template(self.steps())
		template.steps[1].payload = json.dumps({"code": "frappe.response['message'] = 2"})
		template.save()
		self.assertEqual(template.version, 2)

	def test_a_flow_manager_keeps_an_unchanged_script_step_and_may_remove_it(self):
		frappe.set_user(email("sysman"))
		name = make_template(self.steps(args={"n": "{{ doc.name }}"})).name
		frappe.set_user(email("manager"))
		template = frappe.get_doc("Flow Template", name)
		template.steps[0].label = "Renamed by a Flow Manager"
		template.steps[1].step_id = "compute_renamed"  # its id and place are not what it runs
		template.steps[1].payload = json.dumps({"args": {"n": "{{ doc.name }}"}, "code": CODE}, indent=4)
		template.save()
		self.assertEqual(template.version, 2)

		for change in (
			{"code": CODE + "\nx = 1"},
			{"args": {"n": "{{ doc.owner }}"}},
			{"timeout_seconds": 20},
		):
			with self.subTest(change=change):
				template = frappe.get_doc("Flow Template", name)
				payload = {"code": CODE, "args": {"n": "{{ doc.name }}"}, **change}
				template.steps[1].payload = json.dumps(payload)
				self.assertRaises(frappe.PermissionError, template.save)

		template = frappe.get_doc("Flow Template", name)
		template.steps[1].kind = "wait"  # a copy of an existing script under another kind is no script
		template.steps[1].payload = "{}"
		template.save()
		template.append(
			"steps", {"step_id": "again", "kind": "run_script", "payload": json.dumps({"code": CODE})}
		)
		self.assertRaises(frappe.PermissionError, template.save)  # the removed one cannot come back

	def test_over_the_builders_save(self):
		frappe.set_user(email("sysman"))
		name = make_template(self.steps()).name
		frappe.set_user("Administrator")
		frappe.db.commit()

		def save(who: str, change) -> int:
			loaded = self.call("flow_automation.builder.get_builder", {"template": name}, who)[1]["message"]
			change(loaded["definition"]["steps"])
			doc = {key: loaded[key] for key in ("template", "definition", "layout")}
			status, body = self.call(
				"flow_automation.builder.save_builder", {"template": name, "doc": json.dumps(doc)}, who
			)
			return status, body

		def relabel(steps):
			steps[0]["label"] = unique("label")

		def edit_code(steps):
			steps[1]["payload"]["code"] = "frappe.response['message'] = 'mine'"

		self.assertEqual(save("manager", relabel)[0], 200)
		status, body = save("manager", edit_code)
		self.assertEqual(status, 403, body)
		self.assertIn("only a System Manager may add or change", json.dumps(body))
		self.assertEqual(
			json.loads(frappe.db.get_value("Flow Template Step", {"parent": name, "idx": 2}, "payload"))[
				"code"
			],
			CODE,
		)
		self.assertEqual(save("sysman", edit_code)[0], 200)

	def call(self, method: str, data: dict, who: str) -> tuple[int, Any]:
		response = make_request(
			target=self.client.post,
			args=(f"/api/method/{method}",),
			kwargs={"json": data, "headers": {"Authorization": self.tokens[who]}},
		)
		frappe.db.rollback()  # see what the request committed
		return response.status_code, (response.json if response.is_json else response.get_data(as_text=True))
