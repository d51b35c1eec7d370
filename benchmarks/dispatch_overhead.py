"""What Document Event dispatch costs a save that no flow listens to, next to Frappe's Notifications.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/dispatch_overhead.py [rounds] [saves_per_round]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The script commits 50 enabled
Document Event Flow Templates and 50 enabled Notifications on other doctypes (conditions that
never hold, so nothing fires even if someone saves those doctypes meanwhile) and one ToDo, then
saves that ToDo again and again, rolling back after every save. Four set-ups take turns, in a
shuffled order, round after round, with warm caches:

	flows       our doc_events["*"] hook live (the shipped state)
	no_flows    `flow_automation.triggers.on_document_event` patched to a no-op
	            (Frappe resolves doc_events by dotted path at call time: checked below)
	no_notif    as no_flows, and the 50 Notifications disabled (no enabled Notification left)
	no_notif_path  as no_flows, and Document.run_notifications patched out altogether

queries_added = SQL statements per save (every frappe.db.sql call, counted exactly) with the
hook minus without; overhead_ratio = median time per save with ÷ without, per round, then the
median over rounds (spread printed). notification_* compare 50 Notifications elsewhere with
none. The time spent inside our hook and inside Document.run_notifications is also measured
directly (timers around them). Prints figures; asserts nothing. Everything it made is deleted
at the end.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import time
from unittest.mock import patch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

TEMPLATES = 50
NOTIFICATIONS = 50
OTHER_DOCTYPES = (
	"Note",
	"Event",
	"Contact",
	"Address",
	"Email Template",
	"Web Page",
	"Blog Post",
	"Letter Head",
	"User Group",
	"Newsletter",
)
FLOW_EVENTS = ("New", "Save", "Delete", "Save", "New")
NOTIFICATION_EVENTS = ("New", "Save", "Save", "New", "Save")
VARIANTS = ("flows", "no_flows", "no_notif", "no_notif_path")
WARMUP_SAVES = 5
COUNTED_SAVES = 3


def make_fixtures(frappe, prefix: str) -> tuple[list[str], list[str], str]:
	never = {"field": "doc.name", "op": "==", "value": prefix}
	templates = []
	for i in range(TEMPLATES):
		doctype = OTHER_DOCTYPES[i % len(OTHER_DOCTYPES)]
		doc = _site.make_template(
			f"{prefix} {i:02d}",
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {"doctype": "Note", "fields": {"title": f"{prefix} {{{{ doc.name }}}}"}},
				}
			],
			trigger={
				"type": "Document Event",
				"doctype": doctype,
				"event": FLOW_EVENTS[i % len(FLOW_EVENTS)],
				"condition": never,
			},
		)
		templates.append(doc.name)
	notifications = []
	for i in range(NOTIFICATIONS):
		doc = frappe.get_doc(
			{
				"doctype": "Notification",
				"name": f"{prefix} n{i:02d}",
				"subject": f"{prefix} n{i:02d}",
				"enabled": 1,
				"is_standard": 0,
				"channel": "System Notification",
				"document_type": OTHER_DOCTYPES[i % len(OTHER_DOCTYPES)],
				"event": NOTIFICATION_EVENTS[i % len(NOTIFICATION_EVENTS)],
				"condition": f"doc.name == '{prefix}'",
				"message": "never sent",
				"recipients": [{"receiver_by_role": "System Manager"}],
			}
		).insert(ignore_permissions=True)
		notifications.append(doc.name)
	todo = frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} todo"}).insert(
		ignore_permissions=True
	)
	frappe.db.commit()
	return templates, notifications, todo.name


def set_notifications(frappe, names: list[str], enabled: int) -> None:
	frappe.db.set_value("Notification", {"name": ("in", names)}, "enabled", enabled, update_modified=False)
	frappe.db.commit()
	frappe.cache.delete_value("notifications")


def save_once(frappe, todo: str, i: int) -> float:
	doc = frappe.get_doc("ToDo", todo)
	doc.description = f"save {i}"
	start = time.perf_counter()
	doc.save()
	elapsed = time.perf_counter() - start
	frappe.db.rollback()
	return elapsed


def count_save(frappe, todo: str, i: int) -> list[str]:
	doc = frappe.get_doc("ToDo", todo)
	doc.description = f"counted {i}"
	with _site.count_queries() as queries:
		doc.save()
	frappe.db.rollback()
	return list(queries)


def check_hook_resolution(frappe, todo: str) -> tuple[list[str], int]:
	"""How often a replacement put at `flow_automation.triggers.on_document_event` runs per save.

	Frappe looks doc_events hooks up by dotted path on every call (frappe.get_attr in
	Document.hook), so patching the module attribute switches the dispatch off for real.
	"""
	from flow_automation import triggers

	real = triggers.on_document_event
	calls = {"wrapper": [], "noop": 0}

	def wrapper(doc, method):
		calls["wrapper"].append(f"{doc.doctype}.{method}")
		return real(doc, method)

	def noop(doc, method):
		calls["noop"] += 1

	with patch.object(triggers, "on_document_event", wrapper):
		save_once(frappe, todo, -1)
	with patch.object(triggers, "on_document_event", noop):
		save_once(frappe, todo, -2)
	return calls["wrapper"], calls["noop"]


def time_inside(frappe, todo: str, saves: int) -> tuple[float, float, float]:
	"""(us per save inside our hook, us per save inside Document.run_notifications, us per save)

	A direct measure that the noise of the whole save does not blur: both are wrapped with a
	timer (the wrappers' own cost is included, so these are upper bounds).
	"""
	from frappe.model.document import Document

	from flow_automation import triggers

	real_hook, real_notifications = triggers.on_document_event, Document.run_notifications
	spent = {"hook": 0.0, "notifications": 0.0}

	def hook(doc, method):
		start = time.perf_counter()
		try:
			return real_hook(doc, method)
		finally:
			spent["hook"] += time.perf_counter() - start

	def notifications(self, method):
		start = time.perf_counter()
		try:
			return real_notifications(self, method)
		finally:
			spent["notifications"] += time.perf_counter() - start

	total = 0.0
	with (
		patch.object(triggers, "on_document_event", hook),
		patch.object(Document, "run_notifications", notifications),
	):
		for i in range(WARMUP_SAVES):
			save_once(frappe, todo, -100 - i)
		spent.update(hook=0.0, notifications=0.0)
		for i in range(saves):
			total += save_once(frappe, todo, -1000 - i)
	return spent["hook"] / saves * 1e6, spent["notifications"] / saves * 1e6, total / saves * 1e6


def variant(name: str):
	"""The patches of one set-up (a context manager)."""
	from contextlib import ExitStack

	from frappe.model.document import Document

	from flow_automation import triggers

	stack = ExitStack()
	if name != "flows":
		stack.enter_context(patch.object(triggers, "on_document_event", lambda doc, method: None))
	if name == "no_notif_path":
		stack.enter_context(patch.object(Document, "run_notifications", lambda self, method: None))
	return stack


def main() -> None:
	rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
	saves = int(sys.argv[2]) if len(sys.argv) > 2 else 400
	frappe = _site.connect()
	prefix = _site.unique_prefix("dispatch")
	before = _site.counts()
	templates: list[str] = []
	notifications: list[str] = []
	todo = None
	started = time.monotonic()
	try:
		templates, notifications, todo = make_fixtures(frappe, prefix)
		other_notifications = frappe.db.count(
			"Notification", {"enabled": 1, "name": ("not in", notifications)}
		)
		other_flow_templates = frappe.db.count(
			"Flow Template",
			{"enabled": 1, "trigger_type": "Document Event", "name": ("not in", templates)},
		)
		live_calls, patched_calls = check_hook_resolution(frappe, todo)
		print(
			f"fixtures: {len(templates)} enabled Document Event templates on {len(OTHER_DOCTYPES)} "
			f"other doctypes, {len(notifications)} enabled Notifications on the same, one ToDo "
			f"(other enabled: {other_flow_templates} Document Event templates, "
			f"{other_notifications} Notifications)"
		)
		print(
			f"hook resolution: a wrapper put at flow_automation.triggers.on_document_event ran "
			f"{len(live_calls)}x per ToDo save ({', '.join(live_calls)}), a no-op put there "
			f"{patched_calls}x: "
			"Frappe looks the hook up by dotted path at call time, so the patch disables dispatch"
		)

		times: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
		queries: dict[str, list[int]] = {v: [] for v in VARIANTS}
		sample_queries: dict[str, list[str]] = {}
		order = list(VARIANTS)
		i = 0
		for _round in range(rounds):
			random.shuffle(order)
			for name in order:
				set_notifications(frappe, notifications, 0 if name == "no_notif" else 1)
				with variant(name):
					for _ in range(WARMUP_SAVES):
						i += 1
						save_once(frappe, todo, i)
					for _ in range(COUNTED_SAVES):
						i += 1
						statements = count_save(frappe, todo, i)
						queries[name].append(len(statements))
						sample_queries.setdefault(name, statements)
					gc.collect()
					batch = []
					for _ in range(saves):
						i += 1
						batch.append(save_once(frappe, todo, i))
					times[name].append(batch)
		set_notifications(frappe, notifications, 1)

		def median_us(name: str) -> float:
			return statistics.median(t for batch in times[name] for t in batch) * 1e6

		def ratios(a: str, b: str) -> list[float]:
			return [
				statistics.median(x) / statistics.median(y) for x, y in zip(times[a], times[b], strict=True)
			]

		def query_delta(a: str, b: str) -> int:
			return int(statistics.median(queries[a]) - statistics.median(queries[b]))

		print(f"\n{rounds} rounds x {len(VARIANTS)} set-ups x {saves} saves (+{WARMUP_SAVES} warm-up each)")
		print(f"{'set-up':<15}{'median us/save':>16}{'p10':>10}{'p90':>10}{'SQL/save (min-max)':>22}")
		for name in VARIANTS:
			flat = sorted(t for batch in times[name] for t in batch)
			p10, p90 = flat[len(flat) // 10] * 1e6, flat[len(flat) * 9 // 10] * 1e6
			q = queries[name]
			print(f"{name:<15}{median_us(name):>16.1f}{p10:>10.1f}{p90:>10.1f}{f'{min(q)}-{max(q)}':>22}")

		figures = {}
		for label, a, b in (
			("overhead_ratio", "flows", "no_flows"),
			("notification_overhead_ratio", "no_flows", "no_notif"),
			("notification_path_ratio", "no_flows", "no_notif_path"),
		):
			r = ratios(a, b)
			figures[label] = statistics.median(r)
			print(
				f"{label} ({a} / {b}): median {statistics.median(r):.3f} over {len(r)} rounds, "
				f"spread {min(r):.3f}-{max(r):.3f}"
			)
		added = query_delta("flows", "no_flows")
		notification_added = query_delta("no_flows", "no_notif")
		path_added = query_delta("no_flows", "no_notif_path")
		if added:
			extra = [q for q in sample_queries["flows"] if q not in sample_queries["no_flows"]]
			print("statements only with the hook:", *extra[:10], sep="\n  ")
		print(
			f"SQL per save: flows {statistics.median(queries['flows'])}, "
			f"no_flows {statistics.median(queries['no_flows'])}, "
			f"no_notif {statistics.median(queries['no_notif'])}, "
			f"no_notif_path {statistics.median(queries['no_notif_path'])}"
		)
		print(f"notification_path_queries_added={path_added} (run_notifications live vs patched out)")
		hook_us, notifications_us, save_us = time_inside(frappe, todo, saves)
		print(
			f"time inside the hooks, measured directly over {saves} saves: our on_document_event "
			f"{hook_us:.1f} us/save ({hook_us / save_us:.2%} of a {save_us:.0f} us save), "
			f"Document.run_notifications {notifications_us:.1f} us/save ({notifications_us / save_us:.2%})"
		)
	finally:
		frappe.db.rollback()
		if notifications:
			for name in notifications:
				frappe.delete_doc("Notification", name, ignore_permissions=True, delete_permanently=True)
		if todo:
			frappe.delete_doc("ToDo", todo, ignore_permissions=True, delete_permanently=True)
		frappe.db.commit()
		_site.delete_templates(templates)
		frappe.cache.delete_value("notifications")
		after = _site.counts()
		changes = _site.count_changes(before, after)
		left = frappe.db.count("Flow Template", {"name": ("like", f"{prefix}%")}) + frappe.db.count(
			"Notification", {"name": ("like", f"{prefix}%")}
		)
		print(
			f"clean-up: {left} of our fixtures left; site row count changes {changes or 'none'} "
			"(changes are other sessions' work: this script's saves are rolled back)"
		)
		frappe.destroy()
	seconds = time.monotonic() - started
	print(f"run time {seconds:.0f} s")
	print(
		f"queries_added={added} overhead_ratio={figures['overhead_ratio']:.3f} "
		f"notification_queries_added={notification_added} "
		f"notification_overhead_ratio={figures['notification_overhead_ratio']:.3f} "
		f"notification_path_ratio={figures['notification_path_ratio']:.3f} "
		f"saves={rounds * saves} rounds={rounds} templates={TEMPLATES} notifications={NOTIFICATIONS} "
		f"dispatch_us_per_save={hook_us:.1f} notification_path_us_per_save={notifications_us:.1f}"
	)


if __name__ == "__main__":
	main()
