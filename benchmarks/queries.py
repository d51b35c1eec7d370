"""SQL statements per advance of a 10-step instant flow, on a real site.

Run with the bench's Python: `$FRAPPE_BENCH/env/bin/python benchmarks/queries.py`
(re-execs itself with it; $FRAPPE_TEST_SITE picks the site, default test_site).
Everything happens in one transaction that is rolled back: nothing is left behind.

Two flows of 10 instant steps: one of engine-evaluated kinds (set_variables, condition,
switch, wait), which shows the runtime's own overhead, and one where every step creates a
Note (the per-step cost of a real side effect on top). Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _site import connect, ensure_bench_python

ensure_bench_python()


def pure_steps() -> list[dict]:
	kinds = [
		{"kind": "set_variables", "payload": {"variables": {"n": "{{ doc.name }}"}}},
		{"kind": "condition", "payload": {"field": "variables.n", "op": "not_empty"}},
		{"kind": "switch", "payload": {"value": "{{ doc.status }}", "cases": ["Open", "Closed"]}},
		{"kind": "wait", "payload": {}},
	]
	steps = []
	for i in range(10):
		step = {"id": f"s{i}", **kinds[i % 4]}
		if i:
			step["depends_on"] = [f"s{i - 1}"]
		steps.append(step)
	return steps


def note_steps() -> list[dict]:
	steps = []
	for i in range(10):
		step = {
			"id": f"n{i}",
			"kind": "create_document",
			"payload": {"doctype": "Note", "fields": {"title": f"q{i} " + "{{ run.name }}"}},
		}
		if i:
			step["depends_on"] = [f"n{i - 1}"]
		steps.append(step)
	return steps


def measure(frappe, template: str, todo: str) -> tuple[int, list[str]]:
	from _site import count_queries

	from flow_automation import runtime

	run = runtime.start_run(template, reference_doctype="ToDo", reference_name=todo, advance="none")
	runtime.load_definition(frappe.db.get_value("Flow Run", run, "template_version"))  # warm cache
	with count_queries() as queries:
		runtime.advance_run(run)
	status = frappe.db.get_value("Flow Run", run, "status")
	assert status == "Completed", status
	return len(queries), queries


def summarize(queries: list[str]) -> dict[str, int]:
	kinds: dict[str, int] = {}
	for q in queries:
		text = " ".join(q.split())
		verb = text.split(" ", 1)[0].upper()
		match = re.search(r"(?:from|into|update)\s+`(tab[^`]+)`", text, re.I)
		key = f"{verb} {match.group(1) if match else ''}".strip()
		kinds[key] = kinds.get(key, 0) + 1
	return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def main() -> None:
	frappe = connect()
	from flow_automation.tests.utils import make_template

	try:
		todo = frappe.get_doc(
			{"doctype": "ToDo", "description": "queries benchmark", "status": "Open"}
		).insert()
		pure = make_template(pure_steps(), name="Benchmark Queries Pure")
		notes = make_template(note_steps(), name="Benchmark Queries Notes")
		measure(frappe, pure.name, todo.name)  # warm-up: metadata and caches
		count, queries = measure(frappe, pure.name, todo.name)
		run_writes = sum(1 for q in queries if re.match(r"\s*update\s+`tabFlow Run`", q, re.I))
		print(f"10 engine-evaluated steps, one advance: {count} SQL statements")
		for key, n in summarize(queries).items():
			print(f"    {n:3d}  {key}")
		measure(frappe, notes.name, todo.name)
		note_count, note_queries = measure(frappe, notes.name, todo.name)
		print(
			f"10 create_document steps, one advance: {note_count} SQL statements ({(note_count - count) / 10:.1f} per Note insert on top)"
		)
		for key, n in list(summarize(note_queries).items())[:8]:
			print(f"    {n:3d}  {key}")
		print(
			f"queries_per_step={count / 10:.1f} run_writes_per_advance={run_writes} queries_per_advance={count} with_side_effects_per_step={note_count / 10:.1f}"
		)
	finally:
		frappe.db.rollback()
		frappe.destroy()


if __name__ == "__main__":
	main()
