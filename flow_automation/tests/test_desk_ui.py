"""Browser test of the Desk UI: a real Chromium (Playwright) against a real `frappe serve`.

Run: `bench --site test_site run-tests --module flow_automation.tests.test_desk_ui`

Needs Debian's `chromium` (`apt-get install -y chromium`) and the `playwright` Python package
in the bench env (`env/bin/pip install playwright`; never `playwright install`: the browser
is the system one). Without either, the whole class is skipped with a loud message.

The fixtures are committed (the server is another process and only sees committed rows) and
deleted again in tearDownClass.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unittest
from urllib.parse import quote

import frappe

from flow_automation import runtime
from flow_automation.engine import get_kind
from flow_automation.tests.browser import (
	ADMIN_PASSWORD,
	CHROMIUM,
	CHROMIUM_ARGS,
	TIMEOUT_MS,
	DeskServer,
	missing_browser_tools,
)
from flow_automation.tests.utils import FlowTestCase, make_template

TEMPLATE = "Desk UI Test Flow"
SCREENSHOTS = os.environ.get("FLOW_DESK_UI_SCREENSHOTS")  # a folder: save a PNG per page

# bad_todo fails (ToDo has no field "nope"), approve waits at a manual gate, skip_me is on
# the branch not taken, finish joins and stays pending.
STEPS = [
	{
		"id": "prepare",
		"kind": "set_variables",
		"label": "Prepare",
		"payload": {"variables": {"greeting": "Hello {{ variables.tier }}"}},
	},
	{
		"id": "check",
		"kind": "condition",
		"label": "Gold customer?",
		"depends_on": ["prepare"],
		"payload": {"field": "variables.tier", "op": "==", "value": "gold"},
	},
	{
		"id": "bad_todo",
		"kind": "create_document",
		"label": "Create follow-up",
		"parent_id": "check",
		"branch": "yes",
		"on_error": "continue",
		"payload": {"doctype": "ToDo", "fields": {"description": "follow up", "nope": "1"}},
	},
	{
		"id": "approve",
		"kind": "wait",
		"label": "Manager approval",
		"parent_id": "check",
		"branch": "yes",
		"trigger": {"type": "manual"},
		"payload": {},
	},
	{
		"id": "skip_me",
		"kind": "set_variables",
		"label": "Not gold",
		"parent_id": "check",
		"branch": "no",
		"payload": {"variables": {"tier_seen": "other"}},
	},
	{
		"id": "finish",
		"kind": "set_variables",
		"label": "Finish",
		"depends_on": ["approve", "bad_todo"],
		"trigger": {"type": "after_delay", "hours": 1},
		"payload": {"variables": {"done": "yes"}},
	},
]
# (from, to) pairs the diagram must draw: depends_on and parent_id edges.
EDGES = {
	("prepare", "check"),
	("check", "bad_todo"),
	("check", "approve"),
	("check", "skip_me"),
	("approve", "finish"),
	("bad_todo", "finish"),
}


def delete_fixtures() -> None:
	"""Delete the test template, its copies (Duplicate test) and everything their runs wrote."""
	for attempt in range(3):
		try:
			return _delete_fixtures()
		except frappe.QueryDeadlockError:
			# Other test runs share this site; a deadlock victim only has to try again.
			frappe.db.rollback()
			if attempt == 2:
				raise
			time.sleep(1)


def _delete_fixtures() -> None:
	templates = frappe.get_all("Flow Template", filters={"name": ("like", f"{TEMPLATE}%")}, pluck="name")
	runs = frappe.get_all("Flow Run", filters={"template": ("in", templates or [TEMPLATE])}, pluck="name")
	if runs:
		for doctype in ("Flow Step Log", "Flow Step Pending"):
			frappe.db.delete(doctype, {"run": ("in", runs)})
		frappe.db.delete("Flow Run", {"name": ("in", runs)})
	for name in templates:
		frappe.delete_doc("Flow Template", name, force=True, ignore_permissions=True)
	frappe.db.commit()


class TestDeskUI(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		reason = missing_browser_tools()
		if reason:
			message = f"SKIPPING flow_automation Desk browser test: {reason}"
			print("\n" + "!" * len(message) + f"\n{message}\n" + "!" * len(message), file=sys.stderr)
			raise unittest.SkipTest(message)
		super().setUpClass()
		from playwright.sync_api import sync_playwright

		delete_fixtures()
		cls.run_name = cls.make_fixtures()
		cls.server = DeskServer(frappe.local.site)
		cls.playwright = None
		try:
			cls.server.start()
			cls.playwright = sync_playwright().start()
			cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
			cls.context = cls.browser.new_context(viewport={"width": 1400, "height": 1000})
			cls.context.set_default_timeout(TIMEOUT_MS)
			cls.page = cls.context.new_page()
			cls.page.on("dialog", lambda dialog: dialog.accept())  # a beforeunload on a dirty form
			cls.login()
		except Exception:
			cls.tear_down_browser()
			delete_fixtures()
			raise

	@classmethod
	def tearDownClass(cls):
		cls.tear_down_browser()
		delete_fixtures()
		super().tearDownClass()

	@classmethod
	def tear_down_browser(cls):
		if getattr(cls, "playwright", None):
			if getattr(cls, "browser", None):
				cls.browser.close()
			cls.playwright.stop()
			cls.playwright = None
		if getattr(cls, "server", None):
			cls.server.stop()

	@classmethod
	def make_fixtures(cls) -> str:
		"""A template with six steps and a run left with a failed, a waiting and a pending step."""
		make_template(STEPS, name=TEMPLATE, variables={"tier": "bronze"})
		run = runtime.start_run(TEMPLATE, variables={"tier": "gold"}, trigger={"type": "Test"}, advance="now")
		frappe.db.commit()
		return run

	@classmethod
	def login(cls):
		response = cls.context.request.post(
			f"{cls.server.url}/api/method/login", form={"usr": "Administrator", "pwd": ADMIN_PASSWORD}
		)
		assert response.ok, f"login failed: {response.status} {response.text()}"

	# --- helpers -------------------------------------------------------------------------

	def open_form(self, doctype: str, name: str):
		page = self.page
		page.goto(f"{self.server.url}/app/{frappe.scrub(doctype).replace('_', '-')}/{name}")
		try:
			page.wait_for_function(
				"([doctype, name]) => window.cur_frm && cur_frm.doctype === doctype"
				" && cur_frm.docname === name && !cur_frm.is_dirty() && $(cur_frm.wrapper).is(':visible')",
				arg=[doctype, name],
			)
		except Exception as e:
			raise AssertionError(f"{doctype} {name} did not open: {self.page_state()}") from e
		return page

	def page_state(self) -> str:
		"""Where the browser is, for failure messages (and a screenshot if asked for)."""
		self.screenshot(f"failure_{self._testMethodName}")
		return self.page.evaluate(
			"""() => JSON.stringify({
				route: window.frappe && frappe.get_route && frappe.get_route(),
				form: window.cur_frm && [cur_frm.doctype, cur_frm.docname, cur_frm.is_dirty()],
				dialogs: [...document.querySelectorAll('.modal.show')].map(m => m.innerText.slice(0, 300)),
				page: document.body.innerText.slice(0, 300),
			})"""
		)

	def screenshot(self, name: str) -> None:
		if SCREENSHOTS:
			os.makedirs(SCREENSHOTS, exist_ok=True)
			self.page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)

	def custom_button(self, label: str, group: str | None = None):
		"""A form's custom button (frm.add_custom_button); Frappe URI-encodes data-label."""
		page = self.page

		def encode(text: str) -> str:
			return quote(text, safe="-_.!~*'()")  # as JS encodeURIComponent

		if group:
			group_selector = f".page-head .inner-group-button[data-label='{encode(group)}']"
			page.locator(f"{group_selector} button").first.click()
			return page.locator(f"{group_selector} .dropdown-item[data-label='{encode(label)}']")
		return page.locator(f".page-head button[data-label='{encode(label)}']").first

	def open_step_row(self, step_id: str):
		"""Open a step's row form from the grid (the edit icon of its row)."""
		page = self.page
		index = [s["id"] for s in STEPS].index(step_id) + 1
		row = page.locator(f"[data-fieldname='steps'] .grid-body .grid-row[data-idx='{index}']")
		row.locator(".btn-open-row").click()
		form = page.locator(".grid-row-open .form-in-grid")
		form.wait_for()
		return form

	def visible_dialog(self):
		return self.page.locator(".modal.show .modal-dialog").last

	# --- Flow Template form --------------------------------------------------------------

	def test_template_diagram_draws_steps_and_edges(self):
		page = self.open_form("Flow Template", TEMPLATE)
		svg = page.locator("[data-fieldname='builder_html'] svg.flow-diagram")
		svg.wait_for()
		steps = page.eval_on_selector_all(
			"svg.flow-diagram .flow-node", "nodes => nodes.map(n => n.dataset.step)"
		)
		self.assertEqual(sorted(steps), sorted(s["id"] for s in STEPS))
		edges = page.eval_on_selector_all(
			"svg.flow-diagram .flow-edge", "edges => edges.map(e => [e.dataset.from, e.dataset.to])"
		)
		self.assertEqual({tuple(e) for e in edges}, EDGES)
		labels = page.eval_on_selector_all(
			"svg.flow-diagram .flow-edge-label text", "texts => texts.map(t => t.textContent)"
		)
		self.assertEqual(sorted(labels), ["no", "yes", "yes"])
		# Layers by topological depth: prepare above check above its branches above finish.
		y = page.evaluate(
			"""() => Object.fromEntries([...document.querySelectorAll('svg.flow-diagram .flow-node')]
				.map(n => [n.dataset.step, n.transform.baseVal.consolidate().matrix.f]))"""
		)
		self.assertLess(y["prepare"], y["check"])
		self.assertLess(y["check"], y["approve"])
		self.assertEqual(y["approve"], y["skip_me"])
		self.assertLess(y["approve"], y["finish"])
		self.assertIn("Manager approval", svg.text_content())
		self.assertIn("manual gate", svg.text_content())
		self.screenshot("flow_template")

	def test_kind_options_come_from_the_catalog(self):
		page = self.open_form("Flow Template", TEMPLATE)
		page.wait_for_function(
			"() => Array.isArray(cur_frm.fields_dict.steps.grid.get_docfield('kind').options)"
		)
		options = page.evaluate(
			"() => cur_frm.fields_dict.steps.grid.get_docfield('kind').options.map(o => o.value)"
		)
		# The same list the server's catalog API gives (the web process is the source of truth).
		served = page.evaluate(
			"() => frappe.xcall('flow_automation.api.get_step_catalog').then(c => c.kinds.map(k => k.name))"
		)
		self.assertEqual(options, served)
		self.assertTrue({"condition", "create_document", "wait"} <= set(options), options)

		# The kind's description, output and branches are shown with the payload.
		form = self.open_step_row("check")
		help_box = form.locator("[data-fieldname='payload'] .flow-kind-help")
		help_box.wait_for()
		self.assertIn(get_kind("condition").description, help_box.inner_text())
		self.assertIn("yes", help_box.inner_text())

		# What the user sees: the autocomplete list of the row's Kind field (emptied to list all).
		kind_input = form.locator("[data-fieldname='kind'] input")
		kind_input.fill("")
		kind_input.focus()
		kind_input.press("ArrowDown")
		items = form.locator("[data-fieldname='kind'] .awesomplete ul li")
		items.first.wait_for()
		shown = " ".join(items.all_inner_texts())
		for name in served:
			self.assertIn(name, shown)

	def test_new_step_gets_the_kind_example_and_help(self):
		page = self.open_form("Flow Template", TEMPLATE)
		page.wait_for_function("() => cur_frm._catalog && cur_frm._catalog.kinds.length")
		page.locator("[data-fieldname='steps'] .grid-add-row").click()
		new_row = page.locator(f"[data-fieldname='steps'] .grid-body .grid-row[data-idx='{len(STEPS) + 1}']")
		new_row.locator(".btn-open-row").click()
		form = page.locator(".grid-row-open .form-in-grid")
		form.wait_for()
		kind_input = form.locator("input[data-fieldname='kind']")
		kind_input.fill("notify")
		kind_input.press("Enter")
		kind_input.blur()
		page.wait_for_function("() => (cur_frm.doc.steps.at(-1).payload || '').includes('subject')")
		payload = json.loads(page.evaluate("() => cur_frm.doc.steps.at(-1).payload"))
		self.assertEqual(payload, get_kind("notify").example)
		form.locator("[data-fieldname='payload'] .flow-kind-help").wait_for()
		self.assertIn(
			get_kind("notify").output,
			form.locator("[data-fieldname='payload'] .flow-kind-help").inner_text(),
		)

	def test_trigger_field_options_follow_the_reference_doctype(self):
		page = self.open_form("Flow Template", TEMPLATE)
		page.evaluate("() => cur_frm.set_value('trigger_type', 'Document Event')")
		page.evaluate("() => cur_frm.set_value('reference_doctype', 'ToDo')")
		page.wait_for_function(
			"() => (cur_frm.get_field('date_field').df.options || []).some(o => o.value === 'date')"
		)
		value_fields = page.evaluate(
			"() => cur_frm.get_field('value_changed_field').df.options.map(o => o.value)"
		)
		date_fields = page.evaluate("() => cur_frm.get_field('date_field').df.options.map(o => o.value)")
		self.assertIn("status", value_fields)
		self.assertIn("description", value_fields)
		self.assertEqual([f for f in date_fields if f], ["date"])

	def test_export_downloads_the_template_json(self):
		page = self.open_form("Flow Template", TEMPLATE)
		with page.expect_download() as download_info:
			self.custom_button("Export", group="Actions").click()
		download = download_info.value
		self.assertEqual(download.suggested_filename, f"{frappe.scrub(TEMPLATE)}.json")
		with open(download.path()) as f:
			data = json.load(f)
		self.assertEqual(data["template_name"], TEMPLATE)
		self.assertEqual([s["id"] for s in data["definition"]["steps"]], [s["id"] for s in STEPS])

	def test_duplicate_routes_to_the_copy(self):
		page = self.open_form("Flow Template", TEMPLATE)
		self.custom_button("Duplicate", group="Actions").click()
		dialog = self.visible_dialog()
		dialog.locator("input[data-fieldname='new_name']").fill(f"{TEMPLATE} copy")
		dialog.locator(".btn-primary").click()
		page.wait_for_function("name => window.cur_frm && cur_frm.docname === name", arg=f"{TEMPLATE} copy")
		self.assertEqual(
			frappe.db.get_value("Flow Template", f"{TEMPLATE} copy", "is_system", cache=False), 0
		)

	def test_start_run_routes_to_the_new_run(self):
		page = self.open_form("Flow Template", TEMPLATE)
		before = set(frappe.get_all("Flow Run", filters={"template": TEMPLATE}, pluck="name"))
		self.custom_button("Start Run").click()
		dialog = self.visible_dialog()
		dialog.locator(".btn-primary", has_text="Start").click()
		page.wait_for_function("() => window.cur_frm && cur_frm.doctype === 'Flow Run'")
		run = page.evaluate("() => cur_frm.docname")
		self.assertNotIn(run, before)
		# The template's default tier is bronze: the condition takes branch "no".
		page.locator(".flow-timeline .flow-step[data-step='skip_me'][data-status='done']").wait_for()

	# --- "Run Flow" on documents of a Manual template's doctype -----------------------------

	def manual_template_and_todos(self, count: int) -> tuple[str, list[str]]:
		"""A Manual template on ToDo and some ToDos, committed (the server is another process)."""
		name = f"{TEMPLATE} Manual {frappe.generate_hash(length=4)}"
		make_template(
			[{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}],
			name=name,
			trigger={"type": "Manual", "doctype": "ToDo"},
		)
		todos = [
			frappe.get_doc({"doctype": "ToDo", "description": f"desk ui run flow {i}"}).insert().name
			for i in range(count)
		]
		frappe.db.commit()
		self.addCleanup(self.delete_todos, todos)
		return name, todos

	def delete_todos(self, todos: list[str]) -> None:
		frappe.db.delete("ToDo", {"name": ("in", todos)})
		frappe.db.commit()

	def queued_runs(self, template: str) -> list:
		frappe.db.rollback()  # see what the server committed
		return frappe.get_all("Flow Run", filters={"template": template}, fields=["reference_name", "status"])

	def test_run_flow_button_on_a_document_starts_the_template(self):
		template, (todo,) = self.manual_template_and_todos(1)
		page = self.open_form("ToDo", todo)
		self.custom_button(template, group="Run Flow").click()
		page.locator(".alert-message", has_text=template).wait_for()
		self.screenshot("run_flow_button")
		runs = self.queued_runs(template)
		self.assertEqual([r.reference_name for r in runs], [todo])

	def test_run_flow_bulk_action_starts_one_run_per_selected_document(self):
		template, todos = self.manual_template_and_todos(3)
		page = self.page
		page.goto(f"{self.server.url}/app/todo?description=" + quote("desk ui run flow%"))
		page.locator(".list-row-checkbox").first.wait_for()
		page.wait_for_function("() => document.querySelectorAll('.list-row-checkbox').length >= 3")
		for box in page.locator(".list-row-container .list-row-checkbox").all()[:3]:
			box.check()
		page.locator(".actions-btn-group button").first.click()
		page.locator(".actions-btn-group .dropdown-item", has_text="Run Flow").click()
		page.locator(".alert-message", has_text="runs of").wait_for()
		self.screenshot("run_flow_bulk")
		runs = self.queued_runs(template)
		self.assertEqual(sorted(r.reference_name for r in runs), sorted(todos))

	def test_edit_payload_dialog_fields_come_from_the_schema(self):
		page = self.open_form("Flow Template", TEMPLATE)
		form = self.open_step_row("bad_todo")
		form.locator(".btn-edit-payload").click()
		dialog = page.locator(".flow-payload-dialog.show")
		dialog.wait_for()
		schema = get_kind("create_document").payload_schema
		fields = dialog.locator(".frappe-control[data-fieldname]:not([data-fieldtype='HTML'])").evaluate_all(
			"els => els.map(e => [e.dataset.fieldname, e.dataset.fieldtype])"
		)
		self.assertEqual(dict(fields), {"doctype": "Data", "fields": "Code", "submit": "Check"})
		self.assertEqual([f for f, _t in fields], list(schema["properties"]))

		# Writing back: the row's payload JSON follows the dialog.
		dialog.locator("input[data-fieldname='doctype']").fill("Note")
		dialog.locator("input[data-fieldname='submit']").check()
		dialog.locator(".btn-primary", has_text="Update Payload").click()
		page.wait_for_function(
			"() => JSON.parse(cur_frm.doc.steps.find(r => r.step_id === 'bad_todo').payload).doctype === 'Note'"
		)
		payload = json.loads(
			page.evaluate("() => cur_frm.doc.steps.find(r => r.step_id === 'bad_todo').payload")
		)
		self.assertEqual(
			payload, {"doctype": "Note", "fields": {"description": "follow up", "nope": "1"}, "submit": True}
		)

	def test_invalid_payload_error_names_row_and_field(self):
		page = self.open_form("Flow Template", TEMPLATE)
		page.evaluate(
			"""() => {
				const row = cur_frm.doc.steps.find(r => r.step_id === 'bad_todo');
				frappe.model.set_value(row.doctype, row.name, 'payload', JSON.stringify({doctype: 'ToDo'}));
			}"""
		)
		page.keyboard.press("Control+s")
		message = page.locator(".modal.show .msgprint").last
		message.wait_for()
		text = message.inner_text()
		self.assertIn("Row #3 (bad_todo)", text)
		self.assertIn("Payload", text)
		self.assertIn("fields", text)
		self.screenshot("flow_template_invalid")
		# Nothing was saved.
		self.assertEqual(json.loads(self.saved_payload("bad_todo"))["doctype"], "ToDo")
		self.assertIn("fields", json.loads(self.saved_payload("bad_todo")))

	def saved_payload(self, step_id: str) -> str:
		return frappe.db.get_value(
			"Flow Template Step", {"parent": TEMPLATE, "step_id": step_id}, "payload", cache=False
		)

	def test_dry_run_shows_the_timeline(self):
		page = self.open_form("Flow Template", TEMPLATE)
		self.custom_button("Test (Dry Run)").click()
		dialog = page.locator(".flow-dry-run-dialog.show")
		dialog.wait_for()
		dialog.locator(".btn-primary", has_text="Run Dry Run").click()
		table = dialog.locator("table.flow-dry-run-timeline")
		table.wait_for()
		steps = dialog.locator(".flow-dry-run-row").evaluate_all("rows => rows.map(r => r.dataset.step)")
		self.assertIn("prepare", steps)
		self.assertIn("check", steps)
		self.screenshot("flow_template_dry_run")

	def test_system_template_headline(self):
		frappe.db.set_value("Flow Template", TEMPLATE, "is_system", 1)
		frappe.db.commit()
		try:
			page = self.open_form("Flow Template", TEMPLATE)
			intro = page.locator(".form-message", has_text="system template")
			intro.wait_for()
			self.assertIn("Duplicate", intro.inner_text())
		finally:
			frappe.db.set_value("Flow Template", TEMPLATE, "is_system", 0)
			frappe.db.commit()

	# --- Flow Run form -------------------------------------------------------------------

	def test_run_timeline_shows_statuses_and_errors(self):
		page = self.open_form("Flow Run", self.run_name)
		page.locator(".flow-timeline").wait_for()
		statuses = page.eval_on_selector_all(
			".flow-timeline .flow-step", "steps => steps.map(s => [s.dataset.step, s.dataset.status])"
		)
		self.assertEqual(
			dict(statuses),
			{
				"prepare": "done",
				"check": "done",
				"bad_todo": "failed",
				"approve": "waiting",
				"skip_me": "skipped",
				"finish": "pending",
			},
		)
		# Flow order, children indented under their parent with the branch name.
		self.assertEqual(
			[s for s, _ in statuses], ["prepare", "check", "bad_todo", "approve", "skip_me", "finish"]
		)
		bad = page.locator(".flow-step[data-step='bad_todo']")
		self.assertIn("has no field", bad.locator(".flow-step-error").inner_text())
		self.assertIn("yes", bad.locator(".flow-branch-tag").inner_text())
		self.assertEqual(bad.locator(".indicator-pill.red").count() >= 1, True)
		self.assertEqual(bad.locator(".flow-attempt").count(), 1)
		self.assertIn("waiting for completion", page.locator(".flow-step[data-step='approve']").inner_text())
		for label in ("Retry Failed Steps", "Complete Step", "Advance Now", "Cancel Run"):
			self.assertTrue(self.custom_button(label).is_visible(), label)
		self.screenshot("flow_run")

	def test_run_complete_step_from_the_form(self):
		run = runtime.start_run(TEMPLATE, variables={"tier": "gold"}, trigger={"type": "Test"}, advance="now")
		frappe.db.commit()
		page = self.open_form("Flow Run", run)
		self.custom_button("Complete Step").click()
		dialog = self.visible_dialog()
		dialog.locator("[data-fieldname='step'] select").wait_for()
		self.assertEqual(dialog.locator("[data-fieldname='step'] select").input_value(), "approve")
		dialog.locator(".btn-primary", has_text="Complete").click()
		page.wait_for_function(
			"() => cur_frm.doc.__onload && cur_frm.doc.__onload.timeline"
			".find(s => s.id === 'approve').status === 'done'"
		)
		self.assertIn("done", page.locator(".flow-step[data-step='approve']").get_attribute("data-status"))

	def test_run_retry_failed_steps(self):
		run = runtime.start_run(TEMPLATE, variables={"tier": "gold"}, trigger={"type": "Test"}, advance="now")
		frappe.db.commit()
		page = self.open_form("Flow Run", run)
		self.custom_button("Retry Failed Steps").click()
		dialog = self.visible_dialog()
		checkbox = dialog.locator("input[type='checkbox'][data-unit='bad_todo']")
		checkbox.wait_for()
		self.assertTrue(checkbox.is_checked())
		dialog.locator(".btn-primary", has_text="Retry").click()
		# The step fails again (ToDo still has no field "nope"): a second attempt is logged.
		page.wait_for_function(
			"() => cur_frm.doc.__onload.timeline.find(s => s.id === 'bad_todo').attempts.length === 2"
		)
		self.assertEqual(
			page.locator(".flow-step[data-step='bad_todo'] .flow-attempt").count(), 2, "attempt rows"
		)

	def test_run_cancel_with_a_reason(self):
		run = runtime.start_run(TEMPLATE, variables={"tier": "gold"}, trigger={"type": "Test"}, advance="now")
		frappe.db.commit()
		page = self.open_form("Flow Run", run)
		self.custom_button("Cancel Run").click()
		dialog = self.visible_dialog()
		dialog.locator("textarea[data-fieldname='reason']").fill("desk ui test")
		dialog.locator(".btn-primary").click()
		page.wait_for_function("() => cur_frm.doc.status === 'Cancelled'")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "error", cache=False), "desk ui test")
		self.assertFalse(self.custom_button("Cancel Run").is_visible())

	# --- workspace and settings -----------------------------------------------------------

	def test_workspace_opens_with_cards_and_charts(self):
		page = self.page
		page.goto(f"{self.server.url}/app/flow-automation")
		page.locator(".number-widget-box").first.wait_for()
		page.wait_for_function("() => document.querySelectorAll('.number-widget-box .number').length >= 5")
		cards = page.eval_on_selector_all(
			".number-widget-box", "cards => cards.map(c => c.getAttribute('data-widget-name'))"
		)
		self.assertEqual(len(cards), 5)
		self.assertGreaterEqual(page.locator(".dashboard-widget-box").count(), 3)
		shortcuts = page.locator(".shortcut-widget-box").all_inner_texts()
		for label in ("Flow Template", "Flow Run", "Flow Step Log", "Flow Step Pending"):
			self.assertTrue(any(label in s for s in shortcuts), label)
		page.wait_for_timeout(1000)  # let the charts draw for the screenshot
		self.screenshot("workspace")

	def test_settings_show_scheduler_status(self):
		page = self.page
		page.goto(f"{self.server.url}/app/flow-automation-settings")
		status = page.locator(".flow-scheduler-status")
		status.wait_for()
		text = status.inner_text()
		self.assertIn("Pending rows", text)
		self.assertTrue("Scheduler enabled" in text or "Scheduler off" in text)
		self.screenshot("settings")


class TestDeskServerMethods(FlowTestCase):
	"""flow_automation.desk: the server side of the Desk UI (no browser needed)."""

	def setUp(self):
		super().setUp()
		self.template = make_template(STEPS[:2], variables={"tier": "gold"})

	def tearDown(self):
		frappe.set_user("Administrator")
		super().tearDown()

	def test_export_template_is_the_portable_file(self):
		from flow_automation.desk import export_template

		data = export_template(self.template.name)
		self.assertEqual(data, self.template.as_export())
		self.assertEqual([s["id"] for s in data["definition"]["steps"]], ["prepare", "check"])

	def test_methods_need_a_flow_role(self):
		from flow_automation.desk import export_template, failure_rate_card, get_scheduler_status

		frappe.set_user("Guest")
		for call in (lambda: export_template(self.template.name), get_scheduler_status, failure_rate_card):
			with self.assertRaises(frappe.PermissionError):
				call()

	def test_scheduler_status_reports_overdue_rows_and_fixes(self):
		from flow_automation.desk import get_scheduler_status

		run = runtime.start_run(self.template.name, advance="none")
		overdue = frappe.utils.add_to_date(frappe.utils.now_datetime(), hours=-2)
		frappe.get_doc(
			{
				"doctype": "Flow Step Pending",
				"run": run,
				"step_id": "check",
				"template": self.template.name,
				"purpose": "delay",
				"trigger_at": overdue,
				"status": "Pending",
			}
		).insert(ignore_permissions=True)
		status = get_scheduler_status()
		self.assertGreaterEqual(status["pending_overdue"], 1)
		self.assertIsNotNone(status["oldest_overdue"])
		self.assertLessEqual(frappe.utils.get_datetime(status["oldest_overdue"]["trigger_at"]), overdue)
		self.assertFalse(status["healthy"])
		fixes = " ".join(p["fix"] for p in status["problems"])
		if not status["scheduler_enabled"]:
			self.assertIn("enable-scheduler", fixes)
		if status["dormant"]:
			self.assertIn("dormant_days", fixes)  # System Settings, not site config

	def test_failure_rate_card_is_a_percentage(self):
		from flow_automation.desk import failure_rate_card

		result = failure_rate_card()
		self.assertEqual(result["fieldtype"], "Percent")
		self.assertTrue(0 <= result["value"] <= 100)
