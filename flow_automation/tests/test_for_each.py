"""The for_each step on a real site: a sub-flow per item, never more than `concurrency` at
once, results collected in item order, cancelling, late children, the cap, and the schedule's
"for each matching document" that starts its runs through the same batch start.

Jobs run inline in tests (Frappe's `now` convention, see `transaction.enqueue`), so a child
that has nothing to wait for would finish inside its parent's advance. The children here
wait at a manual gate instead, and the tests complete them one at a time, in an order of
their choosing: the runs interleave as they would across workers.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from unittest.mock import patch

import frappe
from frappe.utils import add_days, now_datetime

from flow_automation import runtime, triggers
from flow_automation.portable import template_values_from_export
from flow_automation.tests.utils import (
	FlowTestCase,
	failing_step,
	logs,
	make_template,
	make_todo,
	runs_of,
	state,
	unique,
)

FLOWS = Path(__file__).resolve().parent / "flows"
ACTIVE = ("Running", "Waiting")
GATE = {"id": "gate", "kind": "wait", "trigger": {"type": "manual"}, "payload": {}}


def gated_child(**template):
	"""A sub-flow that waits at a manual gate, then notes which document it ran for."""
	return make_template(
		[
			GATE,
			{
				"id": "note",
				"kind": "set_variables",
				"depends_on": ["gate"],
				"payload": {"variables": {"done_for": "{{ doc.name }}"}},
			},
		],
		**template,
	)


def for_each_parent(payload: dict, *, extra_steps: list | None = None):
	return make_template([{"id": "each", "kind": "for_each", "payload": payload}, *(extra_steps or [])])


def start(template, **variables) -> str:
	return runtime.start_run(template.name, advance="now", variables=variables)


def children(run: str) -> list[frappe._dict]:
	"""The parent's children in item order, with their index."""
	rows = frappe.get_all(
		"Flow Run",
		filters={"parent_run": run},
		fields=["name", "status", "reference_name", "trigger_data", "variables", "next_due_at", "error"],
	)
	for row in rows:
		row.index = json.loads(row.trigger_data).get("index")
	return sorted(rows, key=lambda row: row.index)


def statuses(run: str) -> list[str]:
	return [child.status for child in children(run)]


def run_status(run: str) -> str:
	return frappe.db.get_value("Flow Run", run, "status")


class TestForEach(FlowTestCase):
	def test_25_items_run_at_most_3_at_once_and_their_results_come_back_in_item_order(self):
		todos = [make_todo(f"item {i}").name for i in range(25)]
		child = gated_child()
		parent = for_each_parent(
			{
				"items": "{{ variables.todos }}",
				"doctype": "ToDo",
				"template": child.name,
				"concurrency": 3,
				"wait": True,
			}
		)
		run = start(parent, todos=todos)
		self.assertEqual(run_status(run), "Waiting")
		self.assertEqual(statuses(run), ["Waiting"] * 3 + ["Queued"] * 22)
		self.assertEqual([c.reference_name for c in children(run)], todos)

		completed_order = []
		rng = random.Random(7)  # the order children end in: not the order they started in
		most_at_once = 0
		while True:
			waiting = [c for c in children(run) if c.status in ACTIVE]
			most_at_once = max(most_at_once, len(waiting))
			if not waiting:
				break
			queued = [c for c in children(run) if c.status == "Queued"]
			self.assertEqual(len(waiting), min(3, len(waiting) + len(queued)))
			if len(completed_order) == 10:
				# the minute cron's drain of Queued runs never starts a held child
				self.assertEqual(triggers.drain_outbox(add_days(now_datetime(), 1)), 0)
			chosen = rng.choice(waiting)
			runtime.complete_step(chosen.name, "gate", {})
			self.assertEqual(run_status(chosen.name), "Completed")
			completed_order.append(chosen.index)

		self.assertEqual(most_at_once, 3)
		self.assertEqual(sorted(completed_order), list(range(25)))
		self.assertNotEqual(completed_order, list(range(25)))
		self.assertEqual(run_status(run), "Completed")
		each = state(run)["each"]
		self.assertEqual(each["branch"], "done")
		output = each["output"]
		self.assertEqual((output["total"], output["completed"], output["failed"]), (25, 25, 0))
		self.assertEqual([r["variables"]["done_for"] for r in output["results"]], todos)
		self.assertEqual([r["run"] for r in output["results"]], [c.name for c in children(run)])
		self.assertEqual({r["status"] for r in output["results"]}, {"Completed"})
		# one log row per child's ending on the parent, and the first execution
		self.assertEqual(len([log for log in logs(run) if log.step_id == "each"]), 26)

	def test_a_failing_child_takes_the_some_failed_branch(self):
		child = make_template(
			[
				{
					"id": "bad",
					"kind": "condition",
					"payload": {"field": "variables.item", "op": "==", "value": "b"},
				},
				failing_step(parent_id="bad", branch="yes"),
				{
					"id": "fine",
					"kind": "set_variables",
					"parent_id": "bad",
					"branch": "no",
					"payload": {"variables": {"seen": "{{ variables.item }}{{ variables.position }}"}},
				},
			]
		)
		note = {"kind": "create_document", "parent_id": "each"}
		parent = for_each_parent(
			{
				"items": ["a", "b", "c"],
				"item_as": "variable",
				"template": child.name,
				"variables": {"position": "{{ index }}"},
				"concurrency": 2,
				"wait": True,
			},
			extra_steps=[
				{
					**note,
					"id": "all_good",
					"branch": "done",
					"payload": {"doctype": "Note", "fields": {"title": unique("good")}},
				},
				{
					**note,
					"id": "tell",
					"branch": "some_failed",
					"payload": {
						"doctype": "Note",
						"fields": {
							"title": "{{ steps.each.output.failed }} of {{ steps.each.output.total }} failed "
							+ unique()
						},
					},
				},
			],
		)
		run = start(parent)
		self.assertEqual(run_status(run), "Completed")
		self.assertEqual(statuses(run), ["Completed", "Failed", "Completed"])
		each = state(run)["each"]
		self.assertEqual(each["branch"], "some_failed")
		self.assertEqual(state(run)["all_good"]["status"], "skipped")
		self.assertEqual(state(run)["tell"]["status"], "done")
		self.assertTrue(frappe.db.exists("Note", {"title": ("like", "1 of 3 failed %")}))
		results = each["output"]["results"]
		self.assertEqual([r["status"] for r in results], ["Completed", "Failed", "Completed"])
		self.assertEqual(results[0]["variables"]["seen"], "a0")
		self.assertEqual(results[2]["variables"]["seen"], "c2")
		self.assertIn("boom", results[1]["error"])

	def test_cancelling_the_parent_cancels_its_running_and_queued_children(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(8)]
		parent = for_each_parent(
			{"items": todos, "doctype": "ToDo", "template": child.name, "concurrency": 3, "wait": True}
		)
		run = start(parent)
		for name in [c.name for c in children(run)][:2]:
			runtime.complete_step(name, "gate", {})
		self.assertEqual(statuses(run), ["Completed"] * 2 + ["Waiting"] * 3 + ["Queued"] * 3)

		runtime.cancel_run(run, "enough")
		self.assertEqual(run_status(run), "Cancelled")
		self.assertEqual(statuses(run), ["Completed"] * 2 + ["Cancelled"] * 6)
		self.assertEqual({c.error for c in children(run)[2:]}, {f"Parent run {run} was cancelled"})
		self.assertEqual(state(run)["each"]["status"], "cancelled")
		self.assertEqual(triggers.drain_outbox(add_days(now_datetime(), 1)), 0)

	def test_a_child_that_finishes_after_its_parent_was_cancelled_changes_nothing(self):
		# the first child fails (the ToDo it closes is not there yet) and the second waits; the
		# operator cancels the parent, then adds the ToDo and retries the first child, which
		# completes long after its parent was cancelled: the parent is left exactly as it was
		target = unique("target").replace(" ", "-")
		child = make_template(
			[
				{
					"id": "mine",
					"kind": "condition",
					"payload": {"field": "doc.description", "op": "==", "value": target},
				},
				{
					"id": "close",
					"kind": "update_document",
					"parent_id": "mine",
					"branch": "yes",
					"payload": {
						"target": "document",
						"doctype": "ToDo",
						"name": target,
						"fields": {"status": "Closed"},
					},
				},
				{**GATE, "parent_id": "mine", "branch": "no"},
			]
		)
		items = [make_todo(target).name, make_todo("another").name]
		parent = for_each_parent(
			{"items": items, "doctype": "ToDo", "template": child.name, "concurrency": 1, "wait": True}
		)
		run = start(parent)
		first = children(run)[0].name
		self.assertEqual(statuses(run), ["Failed", "Waiting"])  # the second started as the first ended
		runtime.cancel_run(run)
		self.assertEqual(statuses(run), ["Failed", "Cancelled"])
		parent_before = frappe.db.get_value("Flow Run", run, ["status", "error", "step_state", "modified"])
		errors_before = frappe.db.count("Error Log")

		frappe.get_doc({"doctype": "ToDo", "description": "the target"}).insert(set_name=target)
		runtime.retry_steps(first, ["close"])
		self.assertEqual(run_status(first), "Completed")
		self.assertEqual(
			frappe.db.get_value("Flow Run", run, ["status", "error", "step_state", "modified"]), parent_before
		)
		self.assertEqual(frappe.db.count("Error Log"), errors_before)

	def test_a_child_that_finishes_after_its_parent_failed_changes_nothing_and_a_retry_counts_it(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(4)]
		parent = make_template(
			[
				{
					"id": "each",
					"kind": "for_each",
					"payload": {
						"items": todos,
						"doctype": "ToDo",
						"template": child.name,
						"concurrency": 2,
						"wait": True,
					},
				},
				failing_step(),
			]
		)
		run = start(parent)
		self.assertEqual(run_status(run), "Failed")
		self.assertEqual(statuses(run), ["Waiting", "Waiting", "Queued", "Queued"])
		parent_before = frappe.db.get_value("Flow Run", run, ["status", "error", "step_state", "modified"])
		errors_before = frappe.db.count("Error Log")

		runtime.complete_step(children(run)[0].name, "gate", {})
		self.assertEqual(statuses(run), ["Completed", "Waiting", "Queued", "Queued"])  # none let start
		self.assertEqual(
			frappe.db.get_value("Flow Run", run, ["status", "error", "step_state", "modified"]), parent_before
		)
		self.assertEqual(frappe.db.count("Error Log"), errors_before)

		# retrying the parent counts the child that ended meanwhile (the retried step fails again)
		runtime.retry_steps(run, ["boom"])
		self.assertEqual(state(run)["each"]["suspended"]["wait"]["completed"], [0])
		self.assertEqual(statuses(run), ["Completed", "Waiting", "Waiting", "Queued"])

	def test_children_ending_at_the_same_time_in_two_workers_are_both_counted(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(3)]
		parent = for_each_parent(
			{"items": todos, "doctype": "ToDo", "template": child.name, "concurrency": 2, "wait": True}
		)
		run = start(parent)
		first, second = (c.name for c in children(run)[:2])
		frappe.db.commit()  # the workers' connections see the runs

		# both workers have advanced their child and reach for the parent together: the second
		# one's snapshot predates the first one's commit, so only the row lock keeps its count
		at_the_parent = threading.Barrier(2, timeout=30)
		errors: list[BaseException] = []
		site, sites_path = frappe.local.site, frappe.local.sites_path

		# the seam: where a finished child locks its parent (resume_parent)
		seam = "flow_automation.runtime.advance.lock_run"
		real_lock_run = frappe.get_attr(seam)

		def lock_run(name):
			if name == run:
				at_the_parent.wait()
			return real_lock_run(name)

		def worker(child_run: str) -> None:
			frappe.init(site=site, sites_path=sites_path)
			frappe.connect()
			frappe.flags.in_test = True
			try:
				runtime.complete_step(child_run, "gate", {})
				frappe.db.commit()
			except BaseException as e:
				errors.append(e)
				frappe.db.rollback()
			finally:
				frappe.destroy()

		with patch(seam, lock_run):
			threads = [threading.Thread(target=worker, args=(name,)) for name in (first, second)]
			for thread in threads:
				thread.start()
			for thread in threads:
				thread.join(60)
		self.assertEqual(errors, [])
		frappe.db.rollback()
		wait = state(run)["each"]["wait"]
		self.assertEqual(sorted(wait["completed"]), [0, 1])
		self.assertEqual(statuses(run), ["Completed", "Completed", "Waiting"])

	def test_a_long_batch_of_children_that_end_at_once_is_walked_to_its_end(self):
		# with jobs inline each child ends inside its own kick and lets the next one start:
		# 100 of them must not nest 100 deep
		child = make_template(
			[
				{
					"id": "keep",
					"kind": "set_variables",
					"payload": {"variables": {"twice": "{{ variables.item * 2 }}"}},
				}
			]
		)
		parent = for_each_parent(
			{
				"items": "{{ variables.numbers }}",
				"item_as": "variable",
				"template": child.name,
				"concurrency": 5,
				"wait": True,
				"max_items": 100,
			}
		)
		run = start(parent, numbers=list(range(100)))
		self.assertEqual(run_status(run), "Completed")
		output = state(run)["each"]["output"]
		self.assertEqual((output["completed"], output["failed"]), (100, 0))
		self.assertEqual(
			[r["variables"]["twice"] for r in output["results"]], [str(2 * i) for i in range(100)]
		)

	def test_more_items_than_max_items_is_a_step_error_and_nothing_starts(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(6)]
		parent = for_each_parent(
			{"items": "{{ variables.todos }}", "doctype": "ToDo", "template": child.name, "max_items": 5}
		)
		run = start(parent, todos=todos)
		self.assertEqual(run_status(run), "Failed")
		self.assertEqual(
			state(run)["each"]["error"], "items: 6 items is more than max_items (5); nothing was started"
		)
		self.assertEqual(children(run), [])
		self.assertEqual(runs_of(child.name), [])

	def test_max_items_is_capped_by_the_schema(self):
		with self.assertRaisesRegex(frappe.ValidationError, "max_items"):
			for_each_parent({"items": [], "template": "Any", "max_items": 10_001})

	def test_an_empty_list_completes_at_once_on_branch_done(self):
		child = gated_child()
		parent = for_each_parent(
			{"items": "{{ variables.todos }}", "doctype": "ToDo", "template": child.name, "wait": True}
		)
		run = start(parent, todos=[])
		self.assertEqual(run_status(run), "Completed")
		each = state(run)["each"]
		self.assertEqual(each["branch"], "done")
		self.assertEqual(
			each["output"], {"total": 0, "started": 0, "completed": 0, "failed": 0, "results": []}
		)
		self.assertEqual(children(run), [])

	def test_without_wait_the_step_ends_once_the_last_child_has_started(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(3)]
		parent = for_each_parent(
			{
				"items": [{"doctype": "ToDo", "name": name} for name in todos],
				"template": child.name,
				"concurrency": 2,
			}
		)
		run = start(parent)
		self.assertEqual(run_status(run), "Waiting")  # one child is still held back
		runtime.complete_step(children(run)[1].name, "gate", {})
		self.assertEqual(run_status(run), "Completed")
		self.assertEqual(
			state(run)["each"]["output"], {"total": 3, "started": 3, "completed": 1, "failed": 0}
		)
		self.assertEqual(statuses(run), ["Waiting", "Completed", "Waiting"])
		# the children go on by themselves, and leave the finished parent alone
		for name in (children(run)[0].name, children(run)[2].name):
			runtime.complete_step(name, "gate", {})
		self.assertEqual(statuses(run), ["Completed"] * 3)

	def test_items_as_variables_and_per_item_variables(self):
		child = make_template(
			[
				{
					"id": "keep",
					"kind": "set_variables",
					"payload": {"variables": {"label": "{{ variables.item.code }}-{{ variables.n }}"}},
				}
			]
		)
		parent = for_each_parent(
			{
				"items": "{{ variables.rows }}",
				"item_as": "variable",
				"template": child.name,
				"variables": {"n": "{{ index + 1 }}"},
				"wait": True,
				"collect": ["label"],
			}
		)
		run = start(parent, rows=[{"code": "A"}, {"code": "B"}])
		results = state(run)["each"]["output"]["results"]
		self.assertEqual([r["variables"] for r in results], [{"label": "A-1"}, {"label": "B-2"}])
		self.assertEqual([c.reference_name for c in children(run)], [None, None])

	def test_a_template_rendered_to_json_text_is_a_list_too(self):
		child = gated_child()
		todo = make_todo()
		parent = for_each_parent(
			{"items": "{{ variables.names | tojson }}", "doctype": "ToDo", "template": child.name}
		)
		run = start(parent, names=[todo.name])
		self.assertEqual([c.reference_name for c in children(run)], [todo.name])

	def test_an_unknown_template_is_a_step_error_naming_the_field(self):
		parent = for_each_parent({"items": ["x"], "item_as": "variable", "template": "No Such Flow"})
		run = start(parent)
		self.assertEqual(run_status(run), "Failed")
		self.assertEqual(state(run)["each"]["error"], "template: flow template 'No Such Flow' does not exist")

	def test_a_document_that_does_not_exist_names_its_item_and_nothing_starts(self):
		child = gated_child()
		todo = make_todo()
		parent = for_each_parent(
			{"items": [todo.name, "no-such-todo"], "doctype": "ToDo", "template": child.name}
		)
		run = start(parent)
		self.assertEqual(run_status(run), "Failed")
		self.assertIn("items/1: ", state(run)["each"]["error"])
		self.assertIn("no-such-todo", state(run)["each"]["error"])
		self.assertEqual(runs_of(child.name), [])

	def test_a_list_that_is_not_one_names_items(self):
		child = gated_child()
		parent = for_each_parent(
			{"items": "{{ variables.order }}", "doctype": "ToDo", "template": child.name}
		)
		run = start(parent, order={"name": "x"})
		self.assertEqual(run_status(run), "Failed")
		self.assertIn("items: {{ variables.order }} is an object, not a list", state(run)["each"]["error"])

	def test_a_dry_run_records_the_children_and_starts_nothing(self):
		child = gated_child()
		todos = [make_todo().name for _ in range(7)]
		parent = for_each_parent(
			{
				"items": "{{ variables.todos }}",
				"doctype": "ToDo",
				"template": child.name,
				"wait": True,
				"concurrency": 2,
			}
		)
		result = runtime.simulate_template(parent.name, variables={"todos": todos})
		self.assertEqual(result.status, "Completed")
		(call,) = (c for c in result.calls if c["step"] == "each")
		self.assertEqual(
			(call["action"], call["count"], call["items"], call["concurrency"], call["wait"]),
			("start sub-flows", 7, todos[:5], 2, True),
		)
		each = result.step_state["each"]
		self.assertEqual((each["branch"], each["output"]["completed"]), ("done", 7))
		self.assertEqual(runs_of(child.name), [])

	def test_the_child_templates_own_concurrency_limit_holds_as_well(self):
		child = gated_child(options={"max_concurrent_runs": 1})
		todos = [make_todo().name for _ in range(4)]
		parent = for_each_parent(
			{"items": todos, "doctype": "ToDo", "template": child.name, "concurrency": 3, "wait": True}
		)
		run = start(parent)
		self.assertEqual(statuses(run), ["Waiting", "Queued", "Queued", "Queued"])
		for _ in range(4):
			(active,) = (c for c in children(run) if c.status in ACTIVE)
			runtime.complete_step(active.name, "gate", {})
		self.assertEqual(statuses(run), ["Completed"] * 4)
		self.assertEqual(run_status(run), "Completed")


class TestOneMechanism(FlowTestCase):
	def test_a_for_each_step_starts_its_children_through_the_batch_start(self):
		child = gated_child()
		parent = for_each_parent({"items": [make_todo().name], "doctype": "ToDo", "template": child.name})
		with patch("flow_automation.runtime.host.start_batch", wraps=runtime.start_batch) as batch:
			start(parent)
		self.assertEqual(batch.call_count, 1)
		self.assertEqual(batch.call_args.kwargs["concurrency"], 10)

	def test_a_schedules_for_each_starts_every_run_through_the_batch_start(self):
		tag = unique("sched")
		matching = [make_todo(tag, priority="High") for _ in range(3)]
		make_todo(tag, priority="Low")
		template = gated_child(
			trigger={
				"type": "Schedule",
				"cron": "0 9 * * *",
				"doctype": "ToDo",
				"for_each": True,
				"filters": {"description": tag, "priority": "High"},
			}
		)
		with self.freeze_time("2026-04-02 09:00:00"):
			frappe.db.set_value("Flow Template", template.name, "last_scheduled_at", "2026-04-01 09:00:00")
			with patch("flow_automation.triggers.start_batch", wraps=triggers.start_batch) as batch:
				runs = triggers.fire_schedules()
		self.assertEqual(batch.call_count, 1)
		self.assertEqual(len(runs), 3)
		started = runs_of(template.name)
		self.assertEqual(sorted(r.reference_name for r in started), sorted(t.name for t in matching))
		# every run started at once (none held back), each waiting at its gate
		self.assertEqual({r.status for r in started}, {"Waiting"})
		self.assertEqual({json.loads(r.trigger_data)["type"] for r in started}, {"Schedule"})

	def test_the_example_flow_follows_up_every_overdue_todo(self):
		for file in ("todo_follow_up.json", "todo_follow_ups_for_each.json"):
			data = json.loads((FLOWS / file).read_text())
			frappe.get_doc({"doctype": "Flow Template", **template_values_from_export(data)}).insert()
		overdue = [
			make_todo(unique("overdue"), date=add_days(now_datetime(), -3).date()).name for _ in range(3)
		]
		run = runtime.start_run("Overdue ToDo Follow-ups", advance="now")
		self.assertEqual(run_status(run), "Completed", state(run))
		each = state(run)["each"]
		self.assertEqual(each["branch"], "done")
		followed = {c.reference_name for c in children(run)}
		self.assertLessEqual(set(overdue), followed)  # (and whatever else is overdue on this site)
		self.assertEqual(each["output"]["completed"], len(followed))
		self.assertEqual(
			{r["variables"]["reminded"] for r in each["output"]["results"]} - {"Administrator"}, set()
		)
		self.assertTrue(
			frappe.db.exists(
				"Notification Log",
				{"subject": f"{len(followed)} overdue ToDos followed up", "for_user": "Administrator"},
			)
		)
