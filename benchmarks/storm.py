"""A trigger storm: thousands of ToDos inserted in a loop, one flow started by each.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/storm.py [saves] [block] [timeout_s]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The script commits one
Document Event template (ToDo, on New, its trigger condition matching only this run's ToDos)
with three steps:

	label  set_variables   label = the ToDo's description
	check  condition       label starts with this run's prefix
	mark   update_document on "yes": the ToDo's priority becomes High

and starts 2 real RQ workers (Frappe's start_worker) on a private queue that gets every job
the app enqueues, whichever standard queue it names (_site.use_queue_for_all). Then one
process inserts 2 x `saves` ToDos (default 10,000 each way), each insert committed on its own
as a request would, timing insert + commit (the after-commit enqueue of the run's start job
included). The saves alternate in blocks of `block` (default 100) between the two set-ups,
so both see the same background load (the workers draining the runs):

	flow     the app's document-event hook live: each insert writes a Queued run and enqueues
	         its start job
	no_flow  `flow_automation.triggers.on_document_event` replaced by a no-op in this process
	         (Frappe looks doc_events hooks up by dotted path on every call), as on a site
	         without the template, less the hook's no-match path (~40 us, dispatch_overhead.py)

The template stays enabled throughout: enabling and disabling it between blocks is not
reliable here, since a start job whose transaction began before such a save can re-cache
the trigger index from its older snapshot after the save's after-commit clear, and that
stale index then stays until the next template save (a whole block of saves without runs).

added_ms_per_save = mean(flow) - mean(no_flow); p95_added_ms = p95(flow) - p95(no_flow).
complete_s = from the first flow save until every run of the template has finished (polled
every 0.5 s; `timeout_s`, default 3600). The depth of the private queue is sampled every
2 s from a thread and printed as a short series. lost = flow ToDos without exactly one
Completed run (none, or a run that never finished); duplicated = flow ToDos with more than
one run; no_flow ToDos with a run are counted too (stray, 0 expected).

Prints figures, asserts nothing; the last line is
`saves=<n> added_ms_per_save=<x> p95_added_ms=<x> runs=<n> complete_s=<x> lost=<n> duplicated=<n>`.
Everything it made (the ToDos and their change history, the runs, their logs and rows, the
template, the jobs) is deleted at the end.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

WORKERS = 2
SAMPLE_EVERY = 2.0  # seconds between queue-depth samples
SERIES_POINTS = 16  # samples printed (evenly spread, plus the peak)
UNFINISHED = ("Queued", "Running", "Waiting")


def steps(prefix: str) -> list[dict[str, Any]]:
	return [
		{
			"id": "label",
			"kind": "set_variables",
			"payload": {"variables": {"label": "{{ doc.description }}"}},
		},
		{
			"id": "check",
			"kind": "condition",
			"depends_on": ["label"],
			"payload": {"field": "variables.label", "op": "starts_with", "value": prefix},
		},
		{
			"id": "mark",
			"kind": "update_document",
			"parent_id": "check",
			"branch": "yes",
			"payload": {"target": "trigger_document", "fields": {"priority": "High"}},
		},
	]


def percentile(values: list[float], q: float) -> float:
	"""Nearest rank."""
	ordered = sorted(values)
	if not ordered:
		return float("nan")
	return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class QueueSampler(threading.Thread):
	"""Every SAMPLE_EVERY s: (seconds since start, flow saves so far, jobs queued, jobs running)."""

	def __init__(self, queue: str, progress: dict[str, int]):
		super().__init__(daemon=True)
		from rq.registry import StartedJobRegistry

		self.q = _site.rq_queue(queue)
		self.started = StartedJobRegistry(self.q.name, connection=self.q.connection)
		self.progress = progress
		self.samples: list[tuple[float, int, int, int]] = []
		self.stop = threading.Event()
		self.t0 = time.monotonic()

	def run(self) -> None:
		while not self.stop.is_set():
			try:
				self.samples.append(
					(time.monotonic() - self.t0, self.progress["flow"], self.q.count, self.started.count)
				)
			except Exception as e:  # a Redis hiccup costs a sample, not the run
				print(f"queue sample failed: {type(e).__name__}: {e}", flush=True)
			self.stop.wait(SAMPLE_EVERY)

	def series(self) -> list[str]:
		samples = self.samples
		if not samples:
			return []
		step = max(1, len(samples) // SERIES_POINTS)
		peak = max(range(len(samples)), key=lambda i: samples[i][2])
		picked = set(range(0, len(samples), step)) | {len(samples) - 1, peak}
		return [
			f"  t={t:6.0f} s  flow saves {saves:6d}  queued {queued:6d}  running {running}"
			+ ("  <- peak" if i == peak else "")
			for i, (t, saves, queued, running) in enumerate(samples)
			if i in picked
		]


def job_breakdown(jobs: list[dict[str, Any]]) -> list[str]:
	"""What one start job costs a worker: time in the work horse, and the gap before the next job
	of the same worker starts (reaping the horse, dequeuing, forking, the horse's set-up)."""
	jobs = [j for j in jobs if j["method"].endswith("start_queued_run") and j["started_at"] and j["ended_at"]]
	if not jobs:
		return ["start jobs: none left in RQ's registries"]
	in_horse = [(j["ended_at"] - j["started_at"]).total_seconds() * 1000 for j in jobs]
	gaps = []
	by_worker: dict[str, list[dict[str, Any]]] = {}
	for job in jobs:
		by_worker.setdefault(job["worker"] or "", []).append(job)
	for mine in by_worker.values():
		mine.sort(key=lambda j: j["started_at"])
		for previous, job in itertools.pairwise(mine):
			gap = (job["started_at"] - previous["ended_at"]).total_seconds() * 1000
			if 0 <= gap < 5000:  # back to back (the queue was not empty)
				gaps.append(gap)
	lines = [
		f"start jobs ({len(jobs)} that RQ still kept): in the work horse median "
		f"{statistics.median(in_horse):.0f} ms, p95 {percentile(in_horse, 0.95):.0f} ms"
	]
	if gaps:
		lines.append(
			f"  between two jobs of one worker (horse reaped, next dequeued, forked, set up): median "
			f"{statistics.median(gaps):.0f} ms, p95 {percentile(gaps, 0.95):.0f} ms"
		)
	return lines


def no_flow_hook(doc: Any, method: str) -> None:
	"""Stands in for triggers.on_document_event in the no_flow saves."""


def insert_todo(frappe, description: str) -> tuple[str, float]:
	start = time.perf_counter()
	doc = frappe.get_doc({"doctype": "ToDo", "description": description}).insert(ignore_permissions=True)
	frappe.db.commit()
	return doc.name, time.perf_counter() - start


def unfinished_runs(frappe, template: str) -> int:
	frappe.db.rollback()
	return frappe.db.count("Flow Run", {"template": template, "status": ("in", UNFINISHED)})


def cleanup(frappe, todos: list[str], template: str | None) -> str:
	frappe.db.rollback()
	for start in range(0, len(todos), 1000):
		batch = todos[start : start + 1000]
		frappe.db.delete("Version", {"ref_doctype": "ToDo", "docname": ("in", batch)})
		frappe.db.delete("Comment", {"reference_doctype": "ToDo", "reference_name": ("in", batch)})
		frappe.db.delete("ToDo", {"name": ("in", batch)})
	frappe.db.commit()
	runs = frappe.db.count("Flow Run", {"template": template}) if template else 0
	if template:
		_site.delete_templates([template])
	return f"{len(todos)} ToDos with their change history, {runs} runs with their logs and rows, the template"


def main() -> None:
	saves = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
	block = int(sys.argv[2]) if len(sys.argv) > 2 else 100
	timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 3600
	_site.on_signals()
	frappe = _site.connect()
	prefix = _site.unique_prefix("storm")
	queue = _site.queue_name("storm")
	_site.use_queue_for_all(queue)  # the start jobs this process enqueues after each commit
	tmp = tempfile.mkdtemp(prefix="flow-storm-")
	procs = _site.Processes(tmp)
	before = _site.counts()
	run_start = frappe.utils.now_datetime()
	started = time.monotonic()
	template = None
	todos: list[str] = []
	arm_of: dict[str, str] = {}
	times: dict[str, list[float]] = {"flow": [], "no_flow": []}
	progress = {"flow": 0}
	sampler = None
	complete_s = None
	runs = lost = duplicated = 0
	added = p95_added = float("nan")
	keep_logs = True
	try:
		template = _site.make_template(
			prefix,
			steps(prefix),
			trigger={
				"type": "Document Event",
				"doctype": "ToDo",
				"event": "New",
				"condition": {"field": "doc.description", "op": "starts_with", "value": f"{prefix} "},
			},
		).name
		frappe.db.commit()
		from flow_automation import triggers

		live_hook = triggers.on_document_event
		for i in range(WORKERS):
			procs.start(
				[_site.PYTHON, os.path.join(_site.HERE, "_site.py"), "worker-all", queue], f"worker{i}.log"
			)
		from rq import Worker

		deadline = time.monotonic() + 60
		while len(Worker.all(queue=_site.rq_queue(queue))) < WORKERS and time.monotonic() < deadline:
			time.sleep(0.2)
		print(
			f"{len(Worker.all(queue=_site.rq_queue(queue)))} RQ workers on private queue {queue}; "
			f"template {template!r}; {saves} ToDos with the flow and {saves} without, in blocks of {block}"
		)
		# The trigger index again, after any transaction older than the template's commit has ended
		# (see above); then check that it lists the template.
		time.sleep(2)
		triggers.clear_trigger_cache()
		frappe.local.cache.clear()
		index = triggers._index("ToDo", lambda: triggers._document_specs("ToDo"))
		if template not in {spec["name"] for spec in index}:
			print("WARNING: the template is not in the ToDo trigger index")
		for i in range(3):  # warm-up: imports, caches (their runs are not counted)
			name = insert_todo(frappe, f"{prefix} warm-up {i}")[0]
			todos.append(name)
			arm_of[name] = "warm-up"

		sampler = QueueSampler(queue, progress)
		sampler.start()
		first_flow_save = None
		done = {"flow": 0, "no_flow": 0}
		arm = "no_flow"
		while done["flow"] < saves or done["no_flow"] < saves:
			if done[arm] >= saves:
				arm = "flow" if arm == "no_flow" else "no_flow"
			triggers.on_document_event = live_hook if arm == "flow" else no_flow_hook
			if arm == "flow" and first_flow_save is None:
				first_flow_save = time.monotonic()
			for _ in range(min(block, saves - done[arm])):
				tag = "T" if arm == "flow" else "B"
				name, elapsed = insert_todo(frappe, f"{prefix} {tag} {done[arm]}")
				todos.append(name)
				arm_of[name] = arm
				times[arm].append(elapsed)
				done[arm] += 1
				if arm == "flow":
					progress["flow"] += 1
			arm = "flow" if arm == "no_flow" else "no_flow"
		loop_end = time.monotonic()
		triggers.on_document_event = live_hook
		print(
			f"inserted {2 * saves} ToDos in {loop_end - sampler.t0:.1f} s "
			f"(flow saves from t={first_flow_save - sampler.t0:.1f} s)",
			flush=True,
		)

		last_print = time.monotonic()
		while time.monotonic() - first_flow_save < timeout:
			left = unfinished_runs(frappe, template)
			if not left:
				complete_s = time.monotonic() - first_flow_save
				break
			if time.monotonic() - last_print >= 60:
				last_print = time.monotonic()
				print(f"  {time.monotonic() - sampler.t0:6.0f} s: {left} runs not finished", flush=True)
			time.sleep(0.5)
		done_at = time.monotonic()
		sampler.stop.set()
		sampler.join(timeout=10)

		frappe.db.rollback()
		by_status = dict(
			frappe.db.sql(
				"select status, count(*) from `tabFlow Run` where template = %s group by status", template
			)
		)
		per_doc: dict[str, list[str]] = {}
		for reference, status in frappe.db.sql(
			"select reference_name, status from `tabFlow Run` where template = %s", template
		):
			per_doc.setdefault(reference, []).append(status)
		flow_docs = [n for n, a in arm_of.items() if a == "flow"]
		runs = sum(len(per_doc.get(n, ())) for n in flow_docs)
		# lost: no run, or its one run never completed; more than one run counts as duplicated
		lost = sum(
			1 for n in flow_docs if per_doc.get(n, []) != ["Completed"] and len(per_doc.get(n, [])) <= 1
		)
		duplicated = sum(1 for n in flow_docs if len(per_doc.get(n, [])) > 1)
		no_run = sum(1 for n in flow_docs if n not in per_doc)
		stray = sum(1 for n, a in arm_of.items() if a == "no_flow" and n in per_doc)
		existing = set()
		for start in range(0, len(todos), 1000):
			existing |= set(
				frappe.get_all("ToDo", filters={"name": ("in", todos[start : start + 1000])}, pluck="name")
			)
		vanished = sum(1 for n in flow_docs if n not in existing)
		marked = 0
		for start in range(0, len(flow_docs), 1000):
			marked += frappe.db.count(
				"ToDo", {"name": ("in", flow_docs[start : start + 1000]), "priority": "High"}
			)
		queue_jobs = _site.rq_queue(queue).count

		flow, base = times["flow"], times["no_flow"]
		added = (statistics.fmean(flow) - statistics.fmean(base)) * 1000
		p95_added = (percentile(flow, 0.95) - percentile(base, 0.95)) * 1000
		for arm_name, values in (("no_flow", base), ("flow", flow)):
			print(
				f"{arm_name:8s} saves (insert + commit): mean {statistics.fmean(values) * 1000:.2f} ms, "
				f"p50 {percentile(values, 0.5) * 1000:.2f} ms, p95 {percentile(values, 0.95) * 1000:.2f} ms, "
				f"max {max(values) * 1000:.1f} ms ({len(values)} saves)"
			)
		print(f"added per save by the flow: mean {added:.2f} ms, p95 {p95_added:.2f} ms")
		print(f"runs created: {runs} for {saves} flow ToDos; all runs of the template by status {by_status}")
		if complete_s is not None:
			print(
				f"all runs finished {complete_s:.1f} s after the first flow save, "
				f"{done_at - loop_end:.1f} s after the last save "
				f"({runs / complete_s:.1f} runs/s over the storm)"
			)
		else:
			print(f"NOT all runs finished within {timeout:.0f} s; {queue_jobs} jobs still queued")
		print("queue depth of the private queue (jobs waiting; running = jobs in a work horse):")
		for line in sampler.series():
			print(line)
		print(
			f"flow ToDos: {no_run} without a run, {duplicated} with more than one, {stray} no_flow ToDos "
			f"with a run, {marked} marked High by their run, {vanished} gone before the end (deleted by "
			"someone else)"
		)
		for line in job_breakdown(_site.job_records(queue)):
			print(line)
		for run in frappe.get_all(
			"Flow Run",
			filters={"template": template, "status": ("not in", ("Completed",))},
			fields=["name", "status", "error"],
			limit=3,
		):
			print(f"  not Completed: {run.name} {run.status}: {(run.error or '')[:300]!r}")
		keep_logs = False
	finally:
		if sampler:
			sampler.stop.set()
		procs.stop_all()
		removed = cleanup(frappe, todos, template)
		purged = _site.purge_queue(queue)  # after: deleting the template queues Frappe's link clean-up job
		after = _site.counts()
		errors = frappe.db.count(
			"Error Log", {"creation": (">=", run_start), "method": ("like", "%start_queued_run%")}
		)
		left = frappe.db.count("Flow Run", {"template": template}) if template else 0
		print(
			f"clean-up: {procs.alive()} of our processes alive, {purged} RQ jobs purged; removed {removed}; "
			f"{left} of our runs left; site row count changes (all sessions) "
			f"{_site.count_changes(before, after) or 'none'}; Error Logs of start jobs since the start: {errors}"
		)
		frappe.destroy()
		_site.keep_or_remove_logs(tmp, keep_logs)
	print(f"run time {time.monotonic() - started:.0f} s")
	complete = f"{complete_s:.1f}" if complete_s is not None else f"timeout>{timeout:.0f}"
	print(
		f"saves={saves} added_ms_per_save={added:.2f} p95_added_ms={p95_added:.2f} runs={runs} "
		f"complete_s={complete} lost={lost} duplicated={duplicated}"
	)


if __name__ == "__main__":
	main()
