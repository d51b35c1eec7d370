"""How the Flow Builder page copes with a 200-step flow, in a real Chromium against a real server.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/builder.py [opens] [edits]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site (default test_site, whose
Administrator password is $FLOW_DESK_UI_ADMIN_PASSWORD, default "admin"). Needs Debian's Chromium
(/usr/bin/chromium, or $FLOW_DESK_UI_CHROMIUM) and the `playwright` package in the bench env
(never `playwright install`: the browser is the system one).

The script commits one Flow Template of 200 steps, built from the export shape: 20 segments of
10 steps, each a condition whose "yes" branch holds notify -> wait (after_delay) ->
create_document and whose "no" branch holds set_variables -> notify, a join step that depends
on both branch ends, then three chained steps (create_document, notify, set_variables) leading
to the next segment's condition. The definition is valid (validate_definition == []) and has
no canvas layout, so the builder lays it out (dagre) every time it opens.

It serves the site with `frappe serve` on a free loopback port, logs in over the API, opens
/app once to warm Desk's asset cache, then:

	open_ms    a fresh navigation to /app/flow-builder/<template>, from navigation start
	           (performance.timeOrigin) to the first animation frame of the state the page
	           settles in (unchanged for 1 s): the builder's store holds the 200 steps, Vue Flow
	           holds all 201 nodes (trigger included) with measured dimensions, every node Vue
	           Flow shows (getNodes) is drawn, and no Frappe request is pending
	           (frappe.request.ajax_count == 0). The builder opens a flow this tall at its top,
	           at a readable zoom (0.6), not fitted.
	nodes      `[data-step-id]` elements drawn in that settled view (the canvas draws every
	           node, in view or not); `in_flow` is the number of nodes in Vue Flow's state
	           with measured dimensions.
	select_ms  a click on a drawn step node until the inspector shows that step
	           ([data-inspector] [data-field='step_id'] has its id)
	edit_ms    a new Label filled into the inspector and the input blurred (its change event)
	           until the node's title shows it
	undo_ms    Ctrl+Z (focus on the page body) until the node's title is the old label again

Times are taken inside the page with performance.now(): from the capture-phase pointerdown,
change or keydown event to the first animation frame showing the result. Each is printed per
try, then the median (5 opens, 5 edit tries on different steps; argv changes the counts).
Afterwards the script asks Vue Flow for a fit over all nodes (includeHiddenNodes) and pans
over the whole graph at zoom 0.5, a view at a time: `drawable` is how many distinct nodes
were drawn along the way (201 when every node can be drawn). Nothing is saved from the page. Prints
figures; asserts nothing; the last line is

	open_ms=<n> nodes=<n> select_ms=<n> edit_ms=<n> undo_ms=<n> steps=200 in_flow=<n> drawable=<n>

The template, its version rows and its change history are deleted at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

# the Desk tests' harness: `frappe serve` on a free loopback port, Chromium and its flags
from flow_automation.tests.browser import ADMIN_PASSWORD, CHROMIUM, CHROMIUM_ARGS, DeskServer

SEGMENTS = 20  # 10 steps each
VIEWPORT = {"width": 1400, "height": 1000}
TIMEOUT_MS = 60_000


# --- the flow -----------------------------------------------------------------------------------


def definition_steps(segments: int = SEGMENTS) -> list[dict]:
	steps: list[dict] = []
	tail = None  # the step the next segment's condition runs after (None: the trigger)
	for k in range(1, segments + 1):
		c = f"check_{k:02d}"
		steps.append(
			{
				"id": c,
				"kind": "condition",
				"label": f"Gold customer? ({k})",
				**({"depends_on": [tail]} if tail else {}),
				"payload": {"field": "variables.tier", "op": "==", "value": "gold"},
			}
		)
		# yes: notify -> wait 2 h -> create a ToDo
		steps += [
			{
				"id": f"yes_notify_{k:02d}",
				"kind": "notify",
				"label": f"Tell the account manager ({k})",
				"parent_id": c,
				"branch": "yes",
				"payload": {
					"channel": "email",
					"to": ["{{ variables.manager }}"],
					"subject": "Gold customer {{ variables.customer }}",
					"body": "Segment " + str(k),
				},
			},
			{
				"id": f"yes_wait_{k:02d}",
				"kind": "wait",
				"label": f"Wait two hours ({k})",
				"depends_on": [f"yes_notify_{k:02d}"],
				"trigger": {"type": "after_delay", "hours": 2},
				"payload": {},
			},
			{
				"id": f"yes_todo_{k:02d}",
				"kind": "create_document",
				"label": f"Follow-up call ({k})",
				"depends_on": [f"yes_wait_{k:02d}"],
				"payload": {
					"doctype": "ToDo",
					"fields": {"description": "Call {{ variables.customer }}", "priority": "High"},
				},
			},
		]
		# no: set a variable -> notify
		steps += [
			{
				"id": f"no_mark_{k:02d}",
				"kind": "set_variables",
				"label": f"Mark as regular ({k})",
				"parent_id": c,
				"branch": "no",
				"payload": {"variables": {f"regular_{k}": "yes"}},
			},
			{
				"id": f"no_notify_{k:02d}",
				"kind": "notify",
				"label": f"Send the newsletter ({k})",
				"depends_on": [f"no_mark_{k:02d}"],
				"payload": {
					"channel": "email",
					"to": ["{{ variables.customer_email }}"],
					"subject": "News for {{ variables.customer }}",
					"body": "Hello",
				},
			},
		]
		# rejoin, then three steps in a row
		join = f"join_{k:02d}"
		steps += [
			{
				"id": join,
				"kind": "set_variables",
				"label": f"Segment {k} done",
				"depends_on": [f"yes_todo_{k:02d}", f"no_notify_{k:02d}"],
				"payload": {"variables": {f"segment_{k}": "done"}},
			},
			{
				"id": f"record_{k:02d}",
				"kind": "create_document",
				"label": f"Record segment {k}",
				"depends_on": [join],
				"payload": {
					"doctype": "ToDo",
					"fields": {"description": f"Segment {k} of {{{{ variables.customer }}}}"},
				},
			},
			{
				"id": f"report_{k:02d}",
				"kind": "notify",
				"label": f"Report segment {k}",
				"depends_on": [f"record_{k:02d}"],
				"payload": {
					"channel": "email",
					"to": ["{{ variables.manager }}"],
					"subject": f"Segment {k}",
					"body": "Done",
				},
			},
			{
				"id": f"count_{k:02d}",
				"kind": "set_variables",
				"label": f"Count segment {k}",
				"depends_on": [f"report_{k:02d}"],
				"payload": {"variables": {"segments_done": str(k)}},
			},
		]
		tail = f"count_{k:02d}"
	return steps


VARIABLES = {
	"tier": "gold",
	"customer": "ACME",
	"customer_email": "acme@example.com",
	"manager": "manager@example.com",
}


def make_flow(frappe, name: str) -> list[dict]:
	from flow_automation.engine import validate_definition

	steps = definition_steps()
	problems = validate_definition({"version": 1, "variables": VARIABLES, "steps": steps})
	if problems:
		sys.exit(f"the benchmark's flow is not valid: {problems[:5]}")
	_site.make_template(name, steps, variables=VARIABLES)
	frappe.db.commit()
	return steps


def delete_flow(frappe, name: str) -> None:
	frappe.db.rollback()
	_site.delete_templates([name])


# --- in the page --------------------------------------------------------------------------------

# Installed in every document before its own scripts: on each animation frame, the builder's
# state (Pinia store, Vue Flow's store, the DOM, Frappe's pending requests) is sampled, and a
# row is recorded whenever it changed. Vue Flow's store is the one the <VueFlow> component
# provides; it is found through the Vue vnode tree of the builder's mount point (read only).
MONITOR = r"""
(() => {
	const fb = (window.__flow_bench = { rows: [], vf: null });
	let vf_el = null;
	function find_vue_flow(vnode) {
		if (!vnode) return null;
		if (vnode.component) {
			if (vnode.component.type && vnode.component.type.name === "VueFlow") return vnode.component;
			return find_vue_flow(vnode.component.subTree);
		}
		for (const list of [vnode.children, vnode.dynamicChildren]) {
			if (!Array.isArray(list)) continue;
			for (const child of list) {
				const found = find_vue_flow(child);
				if (found) return found;
			}
		}
		return null;
	}
	function vue_flow() {
		const el = document.querySelector(".flow-builder .vue-flow");
		if (!el) return null;
		if (el !== vf_el) {
			vf_el = el;
			fb.vf = null;
			const root = document.querySelector(".flow-builder").parentElement;
			const instance = find_vue_flow(root && root._vnode);
			if (instance) {
				const key = Object.getOwnPropertySymbols(instance.provides).find((s) => s.description === "vueFlow");
				fb.vf = key ? instance.provides[key] : null;
			}
		}
		return fb.vf;
	}
	fb.vue_flow = vue_flow;
	fb.state = function () {
		const page = window.frappe && frappe.pages && frappe.pages["flow-builder"];
		const store = page && page.flow_builder && page.flow_builder.store;
		const vf = vue_flow();
		const nodes = vf ? vf.nodes.value : [];
		const viewport = vf ? vf.viewport.value : null;
		return {
			name: store ? store.name : null,
			loading: store ? store.loading : null,
			steps: store && store.definition.steps ? store.definition.steps.length : 0,
			in_flow: nodes.length,
			measured: nodes.filter((n) => n.initialized && n.dimensions.width && n.dimensions.height).length,
			visible: vf ? vf.getNodes.value.length : 0,
			drawn: document.querySelectorAll(".vue-flow__node [data-step-id]").length,
			viewport: viewport ? [viewport.x, viewport.y, viewport.zoom].map((v) => +v.toFixed(3)).join(",") : "",
			ajax: window.frappe && frappe.request ? frappe.request.ajax_count : null,
		};
	};
	let last = "";
	function tick() {
		try {
			const state = fb.state();
			const key = JSON.stringify(state);
			if (key !== last) {
				last = key;
				fb.rows.push({ t: performance.now(), ...state });
			}
		} catch (e) {
			fb.error = String(e);
		}
		requestAnimationFrame(tick);
	}
	requestAnimationFrame(tick);
	// when the last input event of each type started (capture phase, before any handler)
	fb.input = {};
	for (const type of ["pointerdown", "change", "keydown"]) {
		window.addEventListener(type, () => (fb.input[type] = performance.now()), true);
	}
})();
"""

# The builder is open and settled: the store holds the flow, Vue Flow holds every step plus the
# trigger with measured dimensions, each node Vue Flow shows is drawn, and nothing is pending.
OPEN_DONE = """(row, [name, steps]) => row.name === name && row.loading === false && row.steps === steps
	&& row.in_flow === steps + 1 && row.measured === steps + 1 && row.drawn > 0
	&& row.drawn === row.visible && row.ajax === 0 && row.viewport !== ''"""

QUIET_MS = 1000  # the state must stay the same this long to count as settled


def open_builder(page, url: str, name: str, steps: int) -> tuple[float, dict]:
	"""Navigate afresh; (ms from navigation start to the first frame of the settled state, that state)."""
	page.goto(url, wait_until="commit")
	found = page.wait_for_function(
		"""([name, steps, quiet]) => {
			const fb = window.__flow_bench;
			if (!fb || !fb.rows.length) return false;
			const done = """
		+ OPEN_DONE
		+ """;
			const last = fb.rows[fb.rows.length - 1];
			if (!done(last, [name, steps]) || performance.now() - last.t < quiet) return false;
			return last;
		}""",
		arg=[name, steps, QUIET_MS],
		polling=100,
		timeout=TIMEOUT_MS,
	)
	row = found.json_value()
	return row["t"], row


def wait_in_page(page, predicate: str, arg) -> float:
	"""performance.now() at the first animation frame where `predicate(arg)` holds."""
	return page.wait_for_function(
		f"(arg) => ({predicate})(arg) && performance.now()", arg=arg, polling="raf", timeout=TIMEOUT_MS
	).json_value()


def wait_idle(page) -> None:
	"""No Frappe request pending (the builder validates 350 ms after an edit) for 500 ms."""
	page.wait_for_function(
		"""() => {
			const fb = window.__flow_bench;
			if (frappe.request.ajax_count) { fb.idle_since = null; return false; }
			fb.idle_since = fb.idle_since || performance.now();
			return performance.now() - fb.idle_since > 500;
		}""",
		polling=50,
		timeout=TIMEOUT_MS,
	)
	page.evaluate("() => { window.__flow_bench.idle_since = null; }")


INSPECTOR_SHOWS = """([id]) => {
	const input = document.querySelector("[data-inspector] [data-field='step_id']");
	return !!input && input.value === id;
}"""
TITLE_IS = """([id, label]) => {
	const title = document.querySelector(`.vue-flow__node [data-step-id='${id}'] .flow-node-title`);
	return !!title && title.textContent.trim() === label;
}"""


def edit_once(page, step_id: str, old_label: str, try_no: int) -> tuple[float, float, float]:
	"""Select a step, relabel it, undo: the three times in ms, measured in the page."""
	# bring the step into view at a readable zoom first (what a double click on it does)
	page.evaluate("id => frappe.container.page.flow_builder.view.focus(id)", step_id)
	page.wait_for_timeout(300)
	node = page.locator(f".vue-flow__node [data-step-id='{step_id}']")
	node.locator(".flow-node-title").click()
	shown = wait_in_page(page, INSPECTOR_SHOWS, [step_id])
	select_ms = shown - page.evaluate("() => window.__flow_bench.input.pointerdown")

	new_label = f"{old_label} edited {try_no}"
	label_input = page.locator("[data-inspector] [data-field='label']")
	label_input.fill(new_label)
	label_input.blur()
	titled = wait_in_page(page, TITLE_IS, [step_id, new_label])
	edit_ms = titled - page.evaluate("() => window.__flow_bench.input.change")
	wait_idle(page)

	page.keyboard.press("Control+z")
	back = wait_in_page(page, TITLE_IS, [step_id, old_label])
	undo_ms = back - page.evaluate("() => window.__flow_bench.input.keydown")
	wait_idle(page)
	return select_ms, edit_ms, undo_ms


def sweep(page) -> tuple[int, int]:
	"""Pan over the whole laid-out graph at zoom 0.5, a canvas height at a time: how many distinct
	nodes were drawn along the way, and in how many views."""
	height = page.evaluate("() => window.__flow_bench.vue_flow().dimensions.value.height")
	bottom = page.evaluate(
		"""() => Math.max(...window.__flow_bench.vue_flow().nodes.value
			.map((n) => n.computedPosition.y + n.dimensions.height))"""
	)
	seen: set[str] = set()
	views = 0
	zoom = 0.5
	y = -50.0
	while y < bottom:
		page.evaluate(
			"""async ([y, zoom]) => {
				await window.__flow_bench.vue_flow().setViewport({x: 20, y: -y * zoom, zoom});
				await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
			}""",
			[y, zoom],
		)
		seen.update(
			page.eval_on_selector_all(
				".vue-flow__node [data-step-id]", "els => els.map(e => e.dataset.stepId)"
			)
		)
		views += 1
		y += height / zoom * 0.9
	return len(seen), views


def median(values: list[float]) -> float:
	return statistics.median(values) if values else float("nan")


def main() -> None:
	opens = int(sys.argv[1]) if len(sys.argv) > 1 else 5
	edits = int(sys.argv[2]) if len(sys.argv) > 2 else 5
	try:
		from playwright.sync_api import sync_playwright
	except ImportError:
		sys.exit(f"the `playwright` package is not installed in {_site.PYTHON}'s env")
	if not os.path.exists(CHROMIUM):
		sys.exit(f"no Chromium at {CHROMIUM}")

	_site.on_signals()
	frappe = _site.connect()
	name = _site.unique_prefix("builder")
	before = _site.counts()
	started = time.monotonic()
	log_fd, log_path = tempfile.mkstemp(prefix="flow-bench-builder-", suffix=".log")
	os.close(log_fd)
	server = DeskServer(_site.SITE, log_path)
	playwright = None
	open_times: list[float] = []
	selects: list[float] = []
	edits_ms: list[float] = []
	undos: list[float] = []
	settled: dict = {}
	drawable = views = 0
	try:
		steps = make_flow(frappe, name)
		labels = {s["id"]: s["label"] for s in steps}
		print(f"fixture: Flow Template {name!r}, {len(steps)} steps ({SEGMENTS} segments of 10), no layout")
		server.start()
		playwright = sync_playwright().start()
		browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
		context = browser.new_context(viewport=VIEWPORT)
		context.set_default_timeout(TIMEOUT_MS)
		context.add_init_script(MONITOR)
		page = context.new_page()
		page.on("dialog", lambda dialog: dialog.accept())
		response = context.request.post(
			f"{server.url}/api/method/login", form={"usr": "Administrator", "pwd": ADMIN_PASSWORD}
		)
		if not response.ok:
			sys.exit(f"login failed: {response.status} {response.text()[:200]}")
		page.goto(f"{server.url}/app")
		page.wait_for_function("() => window.frappe && frappe.container && frappe.request.ajax_count === 0")

		url = f"{server.url}/app/flow-builder/{name}"
		print(
			f"\nopen (viewport {VIEWPORT['width']}x{VIEWPORT['height']}, settled = unchanged for {QUIET_MS} ms)"
		)
		for i in range(opens):
			try:
				ms, settled = open_builder(page, url, name, len(steps))
			except Exception as e:
				last = page.evaluate("() => window.__flow_bench && window.__flow_bench.rows.slice(-3)")
				print(f"  open {i + 1}: did not settle ({type(e).__name__}); last states: {json.dumps(last)}")
				continue
			open_times.append(ms)
			first_all = page.evaluate(
				"""([name, steps]) => (window.__flow_bench.rows.find((r) => r.name === name && r.in_flow === steps + 1
					&& r.measured === steps + 1) || {}).t""",
				[name, len(steps)],
			)
			print(
				f"  open {i + 1}: {ms:7.0f} ms  (all {len(steps) + 1} nodes measured in Vue Flow at "
				f"{first_all or float('nan'):.0f} ms; drawn {settled['drawn']} of {settled['in_flow']}, "
				f"viewport x,y,zoom {settled['viewport']})"
			)
		if open_times:
			print(f"  median {median(open_times):.0f} ms")

		if settled:
			drawn_ids = page.eval_on_selector_all(
				".vue-flow__node [data-step-id]", "els => els.map(e => e.dataset.stepId)"
			)
			targets = [i for i in drawn_ids if i in labels]  # steps, not the trigger
			print(f"\nedit ({edits} tries, steps drawn in the view: {', '.join(targets)})")
			for i in range(edits):
				if not targets:
					break
				step_id = targets[i % len(targets)]
				s, e, u = edit_once(page, step_id, labels[step_id], i + 1)
				selects.append(s)
				edits_ms.append(e)
				undos.append(u)
				print(f"  {step_id:<16} select {s:6.1f} ms  edit {e:6.1f} ms  undo {u:6.1f} ms")
			print(
				f"  median select {median(selects):.1f} ms, edit {median(edits_ms):.1f} ms, "
				f"undo {median(undos):.1f} ms"
			)

			# What a fit over every node (not only those Vue Flow shows) would draw.
			fit_all = page.evaluate(
				"""async () => {
					const vf = window.__flow_bench.vue_flow();
					await vf.fitView({padding: 0.2, includeHiddenNodes: true});
					await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
					return {...window.__flow_bench.state(), min_zoom: vf.minZoom.value,
						height: Math.max(...vf.nodes.value.map((n) => n.computedPosition.y + n.dimensions.height))};
				}"""
			)
			print(
				f"\nVue Flow fitView over all {fit_all['in_flow']} nodes (graph {fit_all['height']:.0f} px tall, "
				f"min zoom {fit_all['min_zoom']}): viewport x,y,zoom {fit_all['viewport']}, "
				f"drawn {fit_all['drawn']}"
			)
			drawable, views = sweep(page)
			print(
				f"panning over the whole graph at zoom 0.5 ({views} views): {drawable} distinct nodes drawn"
			)
	finally:
		if playwright:
			playwright.stop()
		server.stop()
		os.unlink(log_path)
		delete_flow(frappe, name)
		after = _site.counts()
		changes = _site.count_changes(before, after)
		left = frappe.db.count("Flow Template", {"name": name}) + frappe.db.count(
			"Flow Template Version", {"template": name}
		)
		print(
			f"\nclean-up: {left} rows of our template left; site row count changes {changes or 'none'} "
			"(changes are other sessions' work)"
		)
		frappe.destroy()
	print(f"run time {time.monotonic() - started:.0f} s")
	print(
		f"open_ms={median(open_times):.0f} nodes={settled.get('drawn', 0)} "
		f"select_ms={median(selects):.1f} edit_ms={median(edits_ms):.1f} undo_ms={median(undos):.1f} "
		f"steps={SEGMENTS * 10} in_flow={settled.get('in_flow', 0)} drawable={drawable}"
	)


if __name__ == "__main__":
	main()
