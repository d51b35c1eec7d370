"""How fast two racing schedulers and two RQ workers drain 10 000 due steps, and whether any is
fired twice or lost.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/scheduler_drain.py [rows] [timeout_s]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The script commits a template
whose only step is a delayed `wait`, starts one real run of it, and copies that run with
`frappe.db.bulk_insert` into `rows` runs, each with one Flow Step Pending row due in the past:
firing a row advances its run to Completed (and writes its Flow Step Log). Then it starts 2 RQ
workers and 2 "schedulers" (separate processes calling flow_automation.scheduler.run_due() in a
loop, as the minute cron would: again at once while it claims rows, every 60 s when idle, so
their claims race) and measures the wall time until every row is Done and every run Completed.
The rows are due, and the schedulers claim, on a clock shifted back into the 20th century, and
their leases end on the real clock (see _site.py): other sessions' rows and schedulers stay out
of the way.

double_claims = rows whose step executed more than once (Flow Step Log Success rows per run and
step > 1), or that were handed to two fire jobs, or claimed twice; lost = rows not Done + runs
not Completed when the drain ends (or times out). The workers and schedulers use a private RQ
queue (see _site.py), so other jobs waiting on the bench's "default" queue are left alone.
Prints figures; asserts nothing. Everything it made is deleted at the end.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

WORKERS = 2
SCHEDULERS = 2
CRON_INTERVAL = 60  # seconds a scheduler sleeps after a run_due() call that claimed nothing
STEP = {"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}


def build_runs(frappe, template: str, count: int, offset: float) -> None:
	"""`count` Waiting runs, each with one row due 10 minutes ago (benchmark clock): copies of one real run."""
	from frappe.utils import add_to_date, now_datetime

	from flow_automation import runtime

	prototype = runtime.start_run(template, advance="now")
	run = frappe.db.sql("select * from `tabFlow Run` where name = %s", prototype, as_dict=True)[0]
	row = frappe.db.sql("select * from `tabFlow Step Pending` where run = %s", prototype, as_dict=True)[0]
	now = now_datetime()
	due = add_to_date(_site.bench_now(offset), minutes=-10).replace(microsecond=0)
	state = json.loads(run.step_state)
	for entry in state.values():
		if entry.get("due_at"):
			entry["due_at"] = due.strftime("%Y-%m-%d %H:%M:%S")
	run.step_state = json.dumps(state)
	run.next_due_at = due
	run_fields = [f for f in run if not f.startswith("_")]
	row_fields = [f for f in row if not f.startswith("_")]
	runs, rows = [], []
	for _ in range(count):
		name = frappe.generate_hash(length=10)
		values = {**run, "name": name, "creation": now, "modified": now}
		runs.append(tuple(values[f] for f in run_fields))
		values = {
			**row,
			"name": frappe.generate_hash(length=12),
			"run": name,
			"creation": now,
			"modified": now,
		}
		values["trigger_at"] = due
		rows.append(tuple(values[f] for f in row_fields))
	frappe.db.delete("Flow Step Pending", {"run": prototype})
	frappe.db.delete("Flow Run", {"name": prototype})
	frappe.db.bulk_insert("Flow Run", run_fields, runs, chunk_size=2000)
	frappe.db.bulk_insert("Flow Step Pending", row_fields, rows, chunk_size=2000)
	frappe.db.commit()


def progress(frappe, template: str) -> tuple[int, int, int]:
	"""(rows not Done, runs not Completed, rows still Pending) in a fresh snapshot."""
	frappe.db.rollback()
	not_done = frappe.db.count("Flow Step Pending", {"template": template, "status": ("!=", "Done")})
	pending = frappe.db.count("Flow Step Pending", {"template": template, "status": "Pending"})
	not_completed = frappe.db.count("Flow Run", {"template": template, "status": ("!=", "Completed")})
	return not_done, not_completed, pending


def wait_for_workers(queue: str, count: int, timeout: float = 60) -> int:
	from rq import Worker

	q = _site.rq_queue(queue)
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		registered = len(Worker.all(queue=q))
		if registered >= count:
			return registered
		time.sleep(0.2)
	return len(Worker.all(queue=q))


def main() -> None:
	rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
	timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 1800
	_site.on_signals()
	frappe = _site.connect()
	prefix = _site.unique_prefix("drain")
	queue = _site.queue_name("drain")
	tmp = tempfile.mkdtemp(prefix="flow-drain-")
	stop_file = os.path.join(tmp, "stop")
	go_file = os.path.join(tmp, "go")
	procs = _site.Processes(tmp)
	before = _site.counts()
	run_start = frappe.utils.now_datetime()
	template = None
	started = time.monotonic()
	keep_logs = True
	try:
		template = _site.make_template(prefix, [STEP]).name
		frappe.db.commit()
		offset = _site.clock_offset()
		foreign = _site.foreign_due_rows(frappe, [template], _site.bench_now(offset - timeout - 3600))
		if foreign:
			raise SystemExit(
				f"{foreign} Flow Step Pending rows of other templates are due on the benchmark clock; "
				"the schedulers would fire them, so the benchmark does not start"
			)
		workers = [procs.worker(queue, f"worker{i}.log") for i in range(WORKERS)]
		registered = wait_for_workers(queue, WORKERS)
		print(f"{registered} RQ workers ready on private queue {queue}")
		for i in range(SCHEDULERS):
			out = os.path.join(tmp, f"scheduler{i}.json")
			procs.scheduler(queue, stop_file, out, f"scheduler{i}.log", offset, CRON_INTERVAL, go_file)
		time.sleep(3)  # the schedulers are up and wait for the go file
		t = time.monotonic()
		build_runs(frappe, template, rows, offset)
		print(f"built {rows} runs + {rows} due rows with bulk_insert in {time.monotonic() - t:.1f} s")
		t0 = time.monotonic()
		open(go_file, "w").close()
		claimed_all_s = None
		drain_s = None
		last_print = t0
		while time.monotonic() - t0 < timeout:
			not_done, not_completed, pending = progress(frappe, template)
			now = time.monotonic()
			if claimed_all_s is None and pending == 0:
				claimed_all_s = now - t0
			if not_done == 0 and not_completed == 0:
				drain_s = now - t0
				break
			if now - last_print >= 60:
				last_print = now
				print(
					f"  {now - t0:6.0f} s: {rows - not_done} rows Done, {rows - not_completed} runs Completed, "
					f"{pending} rows not claimed yet",
					flush=True,
				)
			if any(w.poll() is not None for w in workers):
				print("a worker exited early: see", tmp)
				break
			time.sleep(0.25)
		wall = time.monotonic() - t0
		not_done, not_completed, _pending = progress(frappe, template)

		open(stop_file, "w").close()
		schedulers = []
		deadline = time.monotonic() + 30
		for i in range(SCHEDULERS):
			path = os.path.join(tmp, f"scheduler{i}.json")
			while not os.path.exists(path) and time.monotonic() < deadline:
				time.sleep(0.2)
			if os.path.exists(path):
				with open(path) as f:
					schedulers.append(json.load(f))

		executed_twice = frappe.db.sql(
			"""select run, step_id, count(*) from `tabFlow Step Log`
			where template = %s and status = 'Success' group by run, step_id having count(*) > 1""",
			template,
		)
		logged = frappe.db.count("Flow Step Log", {"template": template, "status": "Success"})
		failed_fires = frappe.db.count(
			"Flow Step Pending", {"template": template, "last_error": ("is", "set")}
		)
		claimed_twice = frappe.get_all(
			"Flow Step Pending", filters={"template": template, "attempt": (">", 1)}, pluck="name"
		)
		handed = collections.Counter()
		skipped_by_dedup = 0
		for s in schedulers:
			for _job_id, names, queued in s["enqueued"]:
				if queued:
					handed.update(names)
				else:
					skipped_by_dedup += 1
		handed_twice = {name for name, n in handed.items() if n > 1}
		run_of_row = dict(
			frappe.db.sql("select name, run from `tabFlow Step Pending` where template = %s", template)
		)
		doubled_runs = {r[0] for r in executed_twice}
		doubled_rows = (
			{n for n, r in run_of_row.items() if r in doubled_runs} | handed_twice | set(claimed_twice)
		)
		lost = not_done + not_completed

		print(
			f"\nwall time {wall:.1f} s; every row Done and run Completed: {'yes' if drain_s else 'NO (timeout)'}"
		)
		if claimed_all_s is not None:
			print(f"all rows claimed after {claimed_all_s:.1f} s")
		for i, s in enumerate(schedulers):
			jobs = sum(1 for e in s["enqueued"] if e[2])
			print(
				f"scheduler {i}: {s['calls']} run_due calls, {s['claimed']} rows claimed, "
				f"{jobs} fire jobs enqueued, {s['errors']} errors"
			)
		print(
			f"Flow Step Log Success rows: {logged} for {rows} runs; steps executed twice: {len(executed_twice)}; "
			f"rows handed to 2+ jobs: {len(handed_twice)}; rows claimed 2+ times: {len(claimed_twice)}; "
			f"enqueues dropped by RQ deduplication: {skipped_by_dedup}"
		)
		print(
			f"rows not Done: {not_done}; runs not Completed: {not_completed}; rows whose fire job failed "
			f"(last_error set; they wait for their lease, which outlasts the benchmark): {failed_fires}"
		)
		if drain_s:
			print(f"throughput {rows / drain_s:.1f} rows/s")
		keep_logs = False
	finally:
		open(stop_file, "w").close()
		time.sleep(1)
		procs.stop_all()
		purged = _site.purge_queue(queue)
		frappe.db.rollback()
		if template:
			_site.delete_templates([template])
		after = _site.counts()
		errors = frappe.db.count(
			"Error Log", {"creation": (">=", run_start), "method": ("like", "%fire_due%")}
		)
		alive = procs.alive()
		left = frappe.db.count("Flow Run", {"template": template}) if template else 0
		print(
			f"clean-up: {alive} of our processes alive, {purged} RQ jobs purged, {left} of our runs left; "
			f"site row count changes {_site.count_changes(before, after) or 'none'}; "
			f"Error Logs of fire jobs since the start (left in place): {errors}"
		)
		frappe.destroy()
		_site.keep_or_remove_logs(tmp, keep_logs)
	print(f"run time {time.monotonic() - started:.0f} s")
	drain = f"{drain_s:.1f}" if drain_s else f"timeout>{wall:.0f}"
	print(
		f"drain_s={drain} double_claims={len(doubled_rows)} lost={lost} rows={rows} "
		f"workers={WORKERS} schedulers={SCHEDULERS} rows_per_s={rows / (drain_s or wall):.1f}"
	)


if __name__ == "__main__":
	main()
