"""The Flow Builder in a real Chromium against a real `frappe serve`: building a flow with the
mouse and keyboard, undo/redo, live validation, test runs, run overlays, read-only users,
saves that lose a race and leaving with unsaved changes.

The server is another process: fixtures are committed (and deleted after each test by
FlowTestCase). `FLOW_BUILDER_SCREENSHOTS=<folder>` saves the README's pictures.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import quote

import frappe
from frappe.utils.password import update_password

from flow_automation import runtime
from flow_automation.tests.browser import Browser, DeskServer, skip_without_browser_tools
from flow_automation.tests.utils import FlowTestCase, failing_step, make_template, make_todo, unique

SCREENSHOTS = os.environ.get("FLOW_BUILDER_SCREENSHOTS")
FLOW_USER = "flow-builder-reader@example.com"
USER_PASSWORD = "Flow-Builder-Reader-1"


def step_shape(definition: dict) -> dict:
	"""What the canvas decides about each step: its place in the graph and when it runs."""
	return {
		step["id"]: {
			"kind": step["kind"],
			"parent_id": step.get("parent_id"),
			"branch": step.get("branch"),
			"depends_on": sorted(step.get("depends_on") or []),
			"trigger": step.get("trigger"),
		}
		for step in definition["steps"]
	}


class TestFlowBuilder(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		skip_without_browser_tools()
		super().setUpClass()
		cls.server = DeskServer(frappe.local.site)
		cls.server.start()
		try:
			cls.browser = Browser(cls.server)
		except Exception:
			cls.server.stop()
			raise

	@classmethod
	def tearDownClass(cls):
		cls.browser.close()
		cls.server.stop()
		super().tearDownClass()

	def setUp(self):
		super().setUp()
		self.context, self.page = self.browser.context(viewport={"width": 1500, "height": 950})
		self.page.on("dialog", lambda dialog: dialog.accept())

	def tearDown(self):
		self.context.close()
		self.browser.contexts.remove(self.context)
		super().tearDown()

	# --- helpers -------------------------------------------------------------------------

	def open_builder(self, template: str | None = None, run: str | None = None, page=None):
		page = page or self.page
		path = f"/app/flow-builder/{quote(template) if template else 'new'}"
		if run:
			path += f"?run={quote(run)}"
		page.goto(self.server.url + path)
		page.locator(f"[data-step-id='{'__trigger__'}']").wait_for()
		page.wait_for_function("() => !document.querySelector('.flow-loading')")
		return page

	def node(self, step_id: str):
		return self.page.locator(f".flow-node[data-step-id='{step_id}']")

	def select(self, step_id: str):
		self.node(step_id).click()
		self.wait_for_inspector(step_id)

	def wait_for_inspector(self, step_id: str, page=None):
		(page or self.page).wait_for_function(
			"id => (document.querySelector(\"[data-inspector] [data-field='step_id']\") || {}).value === id",
			arg=step_id,
		)

	def add_after(self, step_id: str, handle: str, kind: str) -> str:
		"""Click the "+" under a node's handle and pick a kind; returns the new step's id."""
		before = set(self.step_ids())
		self.in_view(step_id)
		self.node(step_id).click()
		self.page.locator(
			f".flow-node[data-step-id='{step_id}'] [data-handle='{handle}'] ~ .flow-plus"
		).click()
		self.page.locator(f"[data-kind-picker] [data-kind='{kind}']").click()
		self.page.wait_for_function(
			"n => document.querySelectorAll('.flow-node[data-step-id]').length === n",
			arg=len(before) + 2,  # the steps and the trigger
		)
		[new] = set(self.step_ids()) - before
		return new

	def in_view(self, step_id: str) -> None:
		"""Fit the flow in view (F) if the step is off the canvas, as a person would."""
		box = self.node(step_id).bounding_box()
		canvas = self.page.locator(".flow-canvas").bounding_box()
		inside = (
			box
			and box["x"] >= canvas["x"]
			and box["y"] >= canvas["y"]
			and box["x"] + box["width"] <= canvas["x"] + canvas["width"]
			and box["y"] + box["height"] <= canvas["y"] + canvas["height"]
		)
		if not inside:
			self.page.locator(".vue-flow__pane").click(position={"x": 5, "y": 5})
			self.page.keyboard.press("f")
			self.page.wait_for_timeout(300)

	def step_ids(self) -> list[str]:
		return [
			i
			for i in self.page.eval_on_selector_all(
				".flow-node[data-step-id]", "ns => ns.map(n => n.dataset.stepId)"
			)
			if i != "__trigger__"
		]

	def edges(self) -> set[str]:
		return set(self.page.eval_on_selector_all("[data-edge]", "es => es.map(e => e.dataset.edge)"))

	def wait_for_edge(self, edge: str) -> None:
		# an edge is an SVG path: a straight one has no width, so wait for it to exist, not "show"
		self.page.locator(f"[data-edge='{edge}']").wait_for(state="attached")

	def inspector_field(self, field: str):
		return self.page.locator(f"[data-inspector] [data-field='{field}']")

	def drag(self, source, target) -> None:
		"""Press on one element and release on another, as a person drags."""
		a, b = source.bounding_box(), target.bounding_box()
		mouse = self.page.mouse
		mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
		mouse.down()
		mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
		mouse.up()

	def save(self) -> None:
		self.page.keyboard.press("Control+s")
		self.page.wait_for_function("() => !document.querySelector('.indicator-pill.orange')")

	def shot(self, name: str) -> None:
		if SCREENSHOTS:
			os.makedirs(SCREENSHOTS, exist_ok=True)
			self.page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"))

	def stored_definition(self, name: str) -> dict:
		frappe.db.rollback()  # see what the server committed
		return frappe.get_doc("Flow Template", name).build_definition()

	# --- building ------------------------------------------------------------------------

	def test_building_a_flow_from_nothing_with_mouse_and_keyboard(self):
		page = self.open_builder()
		name = unique("Builder Flow")
		page.locator("[data-trigger-panel] [data-fieldname='template_name'] input").fill(name)
		page.keyboard.press("Tab")

		condition = self.add_after("__trigger__", "next", "condition")
		first_wait = self.add_after(condition, "b:yes", "wait")
		self.inspector_field("trigger_type").select_option("after_delay")
		self.inspector_field("delay_days").fill("1")
		self.inspector_field("delay_days").press("Tab")
		first_mail = self.add_after(first_wait, "next", "notify")
		second_wait = self.add_after(condition, "b:yes", "wait")
		self.inspector_field("trigger_type").select_option("after_delay")
		self.inspector_field("delay_hours").fill("2")
		self.inspector_field("delay_hours").press("Tab")
		second_mail = self.add_after(second_wait, "next", "notify")
		join = self.add_after(first_mail, "next", "set_variables")
		# the join: drag from the second branch's last step to the join's input
		self.in_view(second_mail)
		self.drag(
			page.locator(f".flow-node[data-step-id='{second_mail}'] [data-handle='next']"),
			page.locator(f".flow-node[data-step-id='{join}'] .flow-handle-in"),
		)
		self.wait_for_edge(f"{second_mail}->{join}")
		page.wait_for_selector("[data-problem-count][data-count='0']")
		self.save()
		page.wait_for_function("name => decodeURIComponent(location.pathname).endsWith(name)", arg=name)

		expected = {
			condition: {
				"kind": "condition",
				"parent_id": None,
				"branch": None,
				"depends_on": [],
				"trigger": None,
			},
			first_wait: {
				"kind": "wait",
				"parent_id": condition,
				"branch": "yes",
				"depends_on": [],
				"trigger": {"type": "after_delay", "days": 1},
			},
			first_mail: {
				"kind": "notify",
				"parent_id": None,
				"branch": None,
				"depends_on": [first_wait],
				"trigger": None,
			},
			second_wait: {
				"kind": "wait",
				"parent_id": condition,
				"branch": "yes",
				"depends_on": [],
				"trigger": {"type": "after_delay", "hours": 2},
			},
			second_mail: {
				"kind": "notify",
				"parent_id": None,
				"branch": None,
				"depends_on": [second_wait],
				"trigger": None,
			},
			join: {
				"kind": "set_variables",
				"parent_id": None,
				"branch": None,
				"depends_on": sorted([first_mail, second_mail]),
				"trigger": None,
			},
		}
		self.assertEqual(step_shape(self.stored_definition(name)), expected)
		doc = frappe.get_doc("Flow Template", name)
		self.assertEqual(doc.version, 1)
		self.assertEqual(set(json.loads(doc.canvas_layout)), {"__trigger__", *expected})

		page.reload()
		self.open_builder(name)
		self.assertEqual(sorted(self.step_ids()), sorted(expected))
		self.assertTrue(
			{f"{condition}->{first_wait}", f"{first_mail}->{join}", f"{second_mail}->{join}"} <= self.edges()
		)
		self.shot("builder")

	def test_a_message_step_gets_its_own_quiet_hours_or_any_hour(self):
		template = make_template(
			[
				{
					"id": "mail",
					"kind": "notify",
					"payload": {"channel": "email", "to": ["{{ doc.owner }}"], "subject": "Hi"},
				},
				{"id": "nap", "kind": "wait", "depends_on": ["mail"], "payload": {}},
			]
		).name
		frappe.db.commit()
		page = self.open_builder(template)
		self.select("nap")
		self.assertEqual(self.inspector_field("quiet_hours_mode").count(), 0)  # not a message step
		self.select("mail")
		mode = self.inspector_field("quiet_hours_mode")
		self.assertEqual(mode.input_value(), "flow")
		mode.select_option("own")
		hours = page.locator("[data-inspector] [data-field='quiet_hours']")
		hours.fill('{"start": "10:00", "end": "18:00", "days": ["sat"], "timezone": "contact"}')
		hours.blur()
		self.save()
		[mail] = [s for s in self.stored_definition(template)["steps"] if s["id"] == "mail"]
		self.assertEqual(
			mail["quiet_hours"], {"start": "10:00", "end": "18:00", "days": ["sat"], "timezone": "contact"}
		)
		mode.select_option("any")
		self.save()
		[mail] = [s for s in self.stored_definition(template)["steps"] if s["id"] == "mail"]
		self.assertIs(mail["quiet_hours"], False)

	def test_undo_and_redo_follow_every_edit(self):
		template = make_template(
			[
				{
					"id": "check",
					"kind": "condition",
					"payload": {"field": "doc.status", "op": "==", "value": "Open"},
				},
				{"id": "nap", "kind": "wait", "parent_id": "check", "branch": "yes", "payload": {}},
				failing_step("tell", depends_on=["nap"]),
			]
		).name
		frappe.db.commit()
		page = self.open_builder(template)
		self.select("nap")
		page.keyboard.press("Delete")
		self.node("nap").wait_for(state="detached")
		self.wait_for_edge("check->tell")  # `tell` stays in branch yes
		self.assertIn("yes", page.locator("[data-edge-label='check->tell']").inner_text())
		page.keyboard.press("Control+z")
		self.node("nap").wait_for()
		self.assertTrue({"check->nap", "nap->tell"} <= self.edges())
		page.keyboard.press("Control+Shift+z")
		self.node("nap").wait_for(state="detached")
		page.locator("[data-action='undo']").click()
		self.node("nap").wait_for()
		page.locator(".indicator-pill", has_text="Not Saved").wait_for()

	def test_a_flow_too_tall_to_fit_opens_readable_at_its_top_and_f_fits_it(self):
		steps = [{"id": "s00", "kind": "set_variables", "payload": {"variables": {"n": "0"}}}]
		for i in range(1, 40):
			steps.append(
				{
					"id": f"s{i:02d}",
					"kind": "set_variables",
					"depends_on": [f"s{i - 1:02d}"],
					"payload": {"variables": {"n": str(i)}},
				}
			)
		template = make_template(steps).name
		frappe.db.commit()
		page = self.open_builder(template)
		canvas = page.locator(".flow-canvas").bounding_box()

		def shown(step_id):
			box = self.node(step_id).bounding_box()
			inside = canvas["y"] <= box["y"] and box["y"] + box["height"] <= canvas["y"] + canvas["height"]
			return box, inside

		top, top_inside = shown("__trigger__")
		self.assertTrue(top_inside, (top, canvas))
		self.assertGreaterEqual(top["width"], 0.59 * 240)  # a readable zoom, not a sliver
		self.assertFalse(shown("s39")[1])  # the end is further down

		page.locator(".vue-flow__pane").click(position={"x": 5, "y": 5})
		page.keyboard.press("f")
		page.wait_for_function(
			"() => { const c = document.querySelector('.flow-canvas').getBoundingClientRect();"
			" const n = document.querySelector(\".flow-node[data-step-id='s39']\").getBoundingClientRect();"
			" return n.bottom <= c.bottom && n.top >= c.top; }"
		)
		self.assertTrue(shown("__trigger__")[1])

	def test_the_flow_panel_shows_the_fields_each_trigger_needs_as_the_form_does(self):
		page = self.open_builder()
		panel = page.locator("[data-trigger-panel]")

		def field(name):
			return panel.locator(f"[data-fieldname='{name}']")

		panel.locator("[data-fieldname='trigger_type'] select").select_option("Schedule")
		field("cron_expression").wait_for()
		self.assertEqual(field("document_event").count(), 0)
		self.assertEqual(field("schedule_filters").count(), 0)  # only once "for each document"
		field("schedule_for_each").locator("input").check()
		field("schedule_filters").wait_for()

		panel.locator("[data-fieldname='trigger_type'] select").select_option("WhatsApp Message")
		field("cron_expression").wait_for(state="detached")
		keywords = panel.locator("[data-field='whatsapp_keywords']")
		keywords.fill("menu\n  Hi \n\n")
		keywords.blur()
		page.wait_for_function(
			"() => JSON.stringify(frappe.container.page.flow_builder.store.template.whatsapp_keywords)"
			" === JSON.stringify(['menu', 'Hi'])"
		)

		condition = panel.locator("[data-field='trigger_condition']")
		condition.fill('{"field": "doc.status",')
		condition.blur()
		panel.locator("[data-fieldname='trigger_condition'] [data-json-error]").wait_for()
		self.assertIsNone(
			page.evaluate("frappe.container.page.flow_builder.store.template.trigger_condition")
		)
		condition.fill('{"field": "doc.status", "op": "==", "value": "Open"}')
		condition.blur()
		panel.locator("[data-fieldname='trigger_condition'] [data-json-error]").wait_for(state="detached")
		self.assertEqual(
			page.evaluate("frappe.container.page.flow_builder.store.template.trigger_condition"),
			{"field": "doc.status", "op": "==", "value": "Open"},
		)

	def test_an_invalid_edit_shows_its_error_on_its_node_and_field(self):
		template = make_template(
			[
				{"id": "first", "kind": "set_variables", "payload": {"variables": {"a": "1"}}},
				{
					"id": "mail",
					"kind": "notify",
					"depends_on": ["first"],
					"payload": {"to": ["someone@example.com"], "subject": "Hello"},
				},
			]
		).name
		frappe.db.commit()
		page = self.open_builder(template)
		page.wait_for_selector("[data-problem-count][data-count='0']")
		self.select("mail")
		subject = page.locator("[data-inspector] [data-payload-field='subject'] input")
		subject.fill("")
		subject.press("Tab")
		page.wait_for_selector("[data-problem-count][data-count='1']")
		self.assertEqual(self.node("mail").locator("[data-problems]").inner_text().strip(), "1")
		self.assertEqual(self.node("first").locator("[data-problems]").count(), 0)
		self.assertIn(
			"subject", page.locator("[data-payload-field='subject'] .flow-field-problem").inner_text()
		)
		page.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})  # off the inspector's inputs
		page.keyboard.press("Control+z")
		page.wait_for_selector("[data-problem-count][data-count='0']")

	# --- test runs and runs ----------------------------------------------------------------

	def branching_template(self) -> str:
		template = make_template(
			[
				{
					"id": "check",
					"kind": "condition",
					"label": "High priority?",
					"payload": {"field": "doc.priority", "op": "==", "value": "High"},
				},
				{
					"id": "note",
					"kind": "create_document",
					"label": "Write a note",
					"parent_id": "check",
					"branch": "yes",
					"payload": {"doctype": "Note", "fields": {"title": "About {{ doc.description }}"}},
				},
				{
					"id": "calm",
					"kind": "set_variables",
					"label": "Nothing urgent",
					"parent_id": "check",
					"branch": "no",
					"payload": {"variables": {"urgent": "no"}},
				},
				{
					"id": "mail",
					"kind": "notify",
					"label": "Tell the owner",
					"depends_on": ["note", "calm"],
					"trigger": {"type": "after_delay", "hours": 1},
					"payload": {"to": ["{{ doc.owner }}"], "subject": "{{ doc.description }} handled"},
				},
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		frappe.db.commit()
		return template

	def test_a_test_run_highlights_the_path_taken(self):
		template = self.branching_template()
		todo = make_todo("Call ACME back", priority="High").name
		notes = frappe.db.count("Note")
		frappe.db.commit()
		page = self.open_builder(template)
		page.locator("[data-action='test-run']").click()
		dialog = page.locator(".modal.show")
		dialog.locator("[data-fieldname='reference_name'] input").fill(todo)
		dialog.locator("[data-fieldname='reference_name'] input").press("Tab")
		page.wait_for_function(
			"name => cur_dialog && cur_dialog.get_value('reference_name') === name", arg=todo
		)
		dialog.locator(".btn-primary").click()
		page.locator("[data-test-status]").wait_for()
		states = {i: self.node(i).get_attribute("data-state") for i in ("check", "note", "calm", "mail")}
		self.assertEqual(states, {"check": "done", "note": "done", "calm": "skipped", "mail": "done"})
		self.assertEqual(page.locator("[data-test-status]").get_attribute("data-status"), "Completed")
		self.node("note").click()
		event = page.locator("[data-inspector] [data-test-event]").first
		self.assertIn("About Call ACME back", event.inner_text())  # the rendered payload
		self.shot("test_run")
		frappe.db.rollback()
		self.assertEqual(frappe.db.count("Note"), notes)  # rolled back
		page.locator("[data-modebar] [data-action='back']").click()
		page.wait_for_function("() => !document.querySelector('[data-step-id][data-state]')")

	def test_a_runs_overlay_shows_the_failed_step_and_its_retry_works(self):
		template = make_template(
			[
				{"id": "start", "kind": "set_variables", "payload": {"variables": {"a": "1"}}},
				{
					"id": "close",
					"kind": "update_document",
					"depends_on": ["start"],
					"payload": {
						"target": "document",
						"doctype": "ToDo",
						"name": "flow-builder-missing",
						"fields": {"status": "Closed"},
					},
				},
				{
					"id": "after",
					"kind": "set_variables",
					"depends_on": ["close"],
					"payload": {"variables": {"b": "2"}},
				},
			]
		).name
		run = runtime.start_run(template, advance="now")
		frappe.db.commit()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		page = self.open_builder(template, run=run)
		self.assertEqual(self.node("close").get_attribute("data-state"), "failed")
		self.assertEqual(self.node("start").get_attribute("data-state"), "done")
		self.node("close").click()
		attempt = page.locator("[data-inspector] [data-attempt]").first
		self.assertIn("flow-builder-missing", attempt.inner_text())
		self.shot("run_overlay")
		frappe.get_doc({"doctype": "ToDo", "description": "now it exists"}).insert(
			set_name="flow-builder-missing"
		)
		frappe.db.commit()
		page.locator("[data-modebar] [data-action='retry']").click()
		page.locator("[data-run-status][data-status='Completed']").wait_for()
		self.assertEqual(self.node("close").get_attribute("data-state"), "done")
		self.assertEqual(self.node("after").get_attribute("data-state"), "done")
		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("ToDo", "flow-builder-missing", "status"), "Closed")

	def test_the_run_form_opens_the_run_on_the_canvas(self):
		template = make_template([failing_step()]).name
		run = runtime.start_run(template, advance="now")
		frappe.db.commit()
		page = self.page
		page.goto(f"{self.server.url}/app/flow-run/{run}")
		page.locator(".page-head button", has_text="Open on Canvas").first.click()
		page.locator(".flow-node[data-step-id='boom'][data-state='failed']").wait_for()
		self.assertIn(f"run={run}", page.url)

	# --- who may edit, and saving ---------------------------------------------------------------

	def test_a_flow_user_opens_it_read_only_but_may_test_run(self):
		if not frappe.db.exists("User", FLOW_USER):
			frappe.get_doc(
				{"doctype": "User", "email": FLOW_USER, "first_name": "Reader", "send_welcome_email": 0}
			).insert(ignore_permissions=True)
		user = frappe.get_doc("User", FLOW_USER)
		user.set("roles", [{"role": "Flow User"}])
		user.save(ignore_permissions=True)
		update_password(FLOW_USER, USER_PASSWORD)
		template = self.branching_template()
		frappe.db.commit()
		try:
			_context, page = self.browser.context(FLOW_USER, USER_PASSWORD)
			self.open_builder(template, page=page)
			page.locator(".indicator-pill", has_text="Read only").wait_for()
			self.assertEqual(page.locator(".flow-palette").count(), 0)
			self.assertEqual(page.locator(".page-head .primary-action:visible").count(), 0)
			self.assertTrue(page.locator("[data-action='test-run']").is_visible())
			page.locator(".flow-node[data-step-id='note']").click()
			self.wait_for_inspector("note", page)
			page.keyboard.press("Delete")
			self.assertEqual(page.locator(".flow-node[data-step-id='note']").count(), 1)
			self.assertTrue(
				page.locator("[data-inspector] [data-field='step_id']").get_attribute("readonly") is not None
			)
		finally:
			frappe.delete_doc("User", FLOW_USER, force=True, ignore_permissions=True)
			frappe.db.commit()

	def relabel(self, step_id: str, label: str) -> None:
		self.select(step_id)
		field = self.inspector_field("label")
		field.fill(label)
		field.press("Tab")

	def test_a_save_that_loses_a_race_says_so_and_overwrites_nothing(self):
		template = self.branching_template()
		page = self.open_builder(template)
		doc = frappe.get_doc("Flow Template", template)
		doc.description = "saved by someone else"
		doc.save()
		frappe.db.commit()
		self.relabel("note", "Write a longer note")
		page.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})
		page.keyboard.press("Control+s")
		page.locator(".modal.show", has_text="Someone saved this flow").wait_for()
		frappe.db.rollback()
		self.assertEqual(
			frappe.db.get_value("Flow Template", template, "description"), "saved by someone else"
		)
		page.locator(".indicator-pill", has_text="Not Saved").wait_for()

	def test_leaving_with_unsaved_changes_asks_first(self):
		template = self.branching_template()
		page = self.open_builder(template)
		self.relabel("note", "Write a longer note")
		page.locator(".indicator-pill", has_text="Not Saved").wait_for()
		page.evaluate("() => frappe.set_route('List', 'ToDo')")
		page.locator(".modal.show", has_text="unsaved changes").wait_for()
		self.assertEqual(page.evaluate("() => frappe.get_route()[0]"), "flow-builder")
		page.locator(".modal.show .btn-primary").click()  # leave anyway
		page.wait_for_function("() => frappe.get_route()[0] === 'List'")
