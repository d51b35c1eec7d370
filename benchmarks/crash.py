"""Workers killed with SIGKILL in the middle of steps: is any run lost, any side effect doubled?

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/crash.py [kills] [runs]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The flow has three steps that
run in one fire job once its delayed first step is due:

	note_a  create_document: a Note titled "<prefix> <run> note_a"   (transactional)
	call    webhook: POST to an HTTP server on loopback run by this script, which records
	        every request's Idempotency-Key and answers after 0.5-1.0 s   (not transactional)
	note_b  create_document: a Note titled "<prefix> <run> note_b"

The script starts `runs` runs with their first step already due, a cron process (run_due() in
a loop on the benchmark clock, see _site.py; claim_batch_size set to 5 for the run, so a fire job
carries at most 5 runs and there are many jobs to kill) and 2 RQ workers, then kills a worker (its whole
process group: the worker and its work horse) with SIGKILL `kills` times, at random moments
while its horse is in the webhook call or just after it, and starts a new worker each time.
Flow Automation Settings `lease_seconds` is set to its minimum for the run, but lease_seconds()
never goes below FIRE_JOB_TIMEOUT + 60 s = 660 s, so the recovery does not wait for it: it makes
the leases of the stuck rows run out (it moves their lease_until into the past, which is what
run_due(now=<a time past the lease>) would see, without making other sessions' rows due) and
calls run_due(), first with RQ as it is (RQ still holds the killed jobs as "started"), then
after RQ's registry clean-up (which an RQ worker's maintenance does every 10-15 minutes) has
marked the killed jobs failed. The cron and the runs use the benchmark clock (see _site.py).

runs = runs started; lost = runs not Completed + rows not Done at the end;
duplicated_side_effects = Notes created more than once for the same run and step (must be 0);
http_repeats = Idempotency-Keys the HTTP server received more than once (at-least-once
delivery of a non-transactional call; receivers dedupe by that key). Site config
flow_automation_allow_private_webhook_targets is set to 1 for the run and put back after.
Prints figures; asserts nothing. Everything it made is deleted at the end.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

WORKERS = 2
CRON_INTERVAL = 2  # seconds the cron sleeps after a run_due() call that claimed nothing
HTTP_DELAY = (0.5, 1.0)  # seconds the loopback server takes to answer
KILL_AFTER = (0.0, 1.2)  # seconds after a request arrived that its worker is killed
CLAIM_BATCH = 5  # claim_batch_size for the run: fire jobs of at most 5 runs, so there are many jobs


class SlowServer:
	"""An HTTP server on loopback that answers slowly and counts Idempotency-Keys."""

	def __init__(self):
		self.lock = threading.Lock()
		self.keys: collections.Counter[str] = collections.Counter()
		self.in_flight: dict[int, tuple[str, float]] = {}  # client port -> (key, arrival)
		self.arrivals: list[tuple[int, str, float]] = []
		server = self

		class Handler(BaseHTTPRequestHandler):
			def do_POST(self):
				length = int(self.headers.get("Content-Length") or 0)
				if length:
					self.rfile.read(length)
				key = self.headers.get("Idempotency-Key") or ""
				port = self.client_address[1]
				arrived = time.monotonic()
				with server.lock:
					server.keys[key] += 1
					server.in_flight[port] = (key, arrived)
					server.arrivals.append((port, key, arrived))
				try:
					time.sleep(random.uniform(*HTTP_DELAY))
					data = b'{"ok": true}'
					self.send_response(200)
					self.send_header("Content-Type", "application/json")
					self.send_header("Content-Length", str(len(data)))
					self.end_headers()
					self.wfile.write(data)
				except OSError:
					pass  # the caller was killed
				finally:
					with server.lock:
						server.in_flight.pop(port, None)

			def log_message(self, *args):
				pass

		self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		self.httpd.daemon_threads = True
		self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
		self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
		self.thread.start()

	def close(self) -> None:
		self.httpd.shutdown()
		self.httpd.server_close()


def socket_owner(port: int, pids: list[int]) -> int | None:
	"""Which of `pids` holds the loopback TCP socket whose local port is `port`."""
	inode = None
	with open("/proc/net/tcp") as f:
		for line in f.readlines()[1:]:
			parts = line.split()
			if int(parts[1].split(":")[1], 16) == port:
				inode = parts[9]
				break
	if inode is None:
		return None
	target = f"socket:[{inode}]"
	for pid in pids:
		try:
			for fd in os.listdir(f"/proc/{pid}/fd"):
				try:
					if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
						return pid
				except OSError:
					continue
		except OSError:
			continue
	return None


def steps(prefix: str, url: str) -> list[dict]:
	def note(step: str) -> dict:
		return {"doctype": "Note", "fields": {"title": f"{prefix} {{{{ run.name }}}} {step}"}}

	return [
		{
			"id": "note_a",
			"kind": "create_document",
			"trigger": {"type": "after_delay", "minutes": 1},
			"payload": note("note_a"),
		},
		{
			"id": "call",
			"kind": "webhook",
			"depends_on": ["note_a"],
			"payload": {
				"method": "POST",
				"url": url,
				"body": {"run": "{{ run.name }}"},
				"timeout_seconds": 10,
			},
		},
		{"id": "note_b", "kind": "create_document", "depends_on": ["call"], "payload": note("note_b")},
	]


def start_runs(frappe, template: str, count: int, offset: float) -> list[str]:
	"""Runs whose delayed first step is already due on the benchmark clock."""
	from frappe.utils import add_to_date

	from flow_automation import runtime

	runs = []
	for _ in range(count):
		name = runtime.start_run(template, advance="none")
		runtime.advance_run(name, now=add_to_date(_site.bench_now(offset), minutes=-1))
		runs.append(name)
	frappe.db.commit()  # once: the due rows are visible to others only until the cron claims them
	return runs


class Workers:
	"""WORKERS slots of RQ worker processes; a killed one is replaced at once."""

	def __init__(self, procs: _site.Processes, queue: str):
		self.procs = procs
		self.queue = queue
		self.started = 0
		self.slots = [self.spawn() for _ in range(WORKERS)]

	def spawn(self):
		self.started += 1
		return self.procs.worker(self.queue, f"worker{self.started}.log")

	def horses(self) -> dict[int, int]:
		"""{work horse pid: slot}"""
		return {h: i for i, p in enumerate(self.slots) for h in _site.children(p.pid)}

	def kill(self, slot: int) -> None:
		"""SIGKILL the worker's process group, then its work horse (which has its own session)."""
		proc = self.slots[slot]
		self.procs.horses.update(self.procs.kill(proc))
		proc.wait(timeout=10)
		self.slots[slot] = self.spawn()


def state(frappe, template: str) -> dict[str, int]:
	frappe.db.rollback()
	rows = dict(
		frappe.db.sql(
			"select status, count(*) from `tabFlow Step Pending` where template = %s group by status",
			template,
		)
	)
	runs = dict(
		frappe.db.sql(
			"select status, count(*) from `tabFlow Run` where template = %s group by status", template
		)
	)
	return {"rows": rows, "runs": runs}


def wait_calm(frappe, template: str, queue: str, workers: Workers, timeout: float) -> bool:
	"""Until no job is queued, no horse works and no row is Pending, for 3 s in a row."""
	q = _site.rq_queue(queue)
	calm_since = None
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		busy = q.count or workers.horses() or state(frappe, template)["rows"].get("Pending")
		if busy:
			calm_since = None
		elif calm_since is None:
			calm_since = time.monotonic()
		elif time.monotonic() - calm_since >= 3:
			return True
		time.sleep(0.3)
	return False


def kill_loop(server: SlowServer, workers: Workers, kills_wanted: int, frappe, template, queue) -> list[dict]:
	"""Kill the worker whose horse is in (or just past) a webhook call, `kills_wanted` times."""
	kills: list[dict] = []
	skipped = collections.Counter()
	seen = 0
	idle_since = None
	q = _site.rq_queue(queue)
	deadline = time.monotonic() + 900
	while len(kills) < kills_wanted and time.monotonic() < deadline:
		with server.lock:
			fresh = server.arrivals[seen:]
			seen = len(server.arrivals)
		if not fresh:
			# (a claim commits before its jobs are enqueued: idle for 3 s means no work is left)
			if q.count or workers.horses() or state(frappe, template)["rows"].get("Pending"):
				idle_since = None
			elif idle_since is None:
				idle_since = time.monotonic()
			elif time.monotonic() - idle_since > 3:
				print(f"no work left to interrupt after {len(kills)} kills")
				break
			time.sleep(0.05)
			continue
		idle_since = None
		port, key, arrived = random.choice(fresh)
		horses = workers.horses()
		horse = socket_owner(port, list(horses))
		if horse is None:
			skipped["caller not found"] += 1
			continue
		slot = horses[horse]
		time.sleep(max(0.0, arrived + random.uniform(*KILL_AFTER) - time.monotonic()))
		if horse not in _site.children(workers.slots[slot].pid):
			skipped["job ended first"] += 1
			continue
		with server.lock:
			phase = "in_call" if port in server.in_flight else "after_call"
		workers.kill(slot)
		kills.append({"key": key, "run": key.split(":")[0], "phase": phase})
		time.sleep(random.uniform(0.3, 1.5))
		with server.lock:
			seen = len(server.arrivals)  # pick among requests made after the restart
	if skipped:
		print(f"kill attempts given up: {dict(skipped)}")
	return kills


def recover(frappe, template: str, queue: str, workers: Workers, offset: float) -> list[dict]:
	"""Let the leases of stuck rows run out and call run_due(); first with RQ as it is, then after
	RQ's registry clean-up."""
	import logging

	from rq.registry import StartedJobRegistry

	from flow_automation.scheduler import run_due

	logging.getLogger("rq.registry").setLevel(logging.WARNING)

	records: list[bool] = []
	_site.use_queue(
		queue, lambda kwargs, job: records.append(job is not None) if _site.fired_rows(kwargs) else None
	)
	table = frappe.qb.DocType("Flow Step Pending")
	stages = []
	for stage in range(4):
		stuck = state(frappe, template)["rows"].get("Running", 0)
		if not stuck:
			break
		cleaned = 0
		if stage > 0:
			# What an RQ worker's maintenance does every 10-15 minutes: jobs whose worker died
			# (no heartbeat) move from "started" to "failed". Nothing legitimately runs now.
			q = _site.rq_queue(queue)
			registry = StartedJobRegistry(q.name, connection=q.connection)
			cleaned = len(registry.get_job_ids())
			registry.cleanup(timestamp=time.time() + 10**6)
		now = _site.bench_now(offset)
		# the lease ran out
		frappe.qb.update(table).set(table.lease_until, now - dt.timedelta(seconds=1)).where(
			(table.template == template) & (table.status == "Running")
		).run()
		frappe.db.commit()
		records.clear()
		claimed = run_due(now=now)
		frappe.db.commit()
		enqueued = sum(records)
		wait_calm(frappe, template, queue, workers, timeout=300)
		left = state(frappe, template)["rows"].get("Running", 0)
		stages.append(
			{
				"stage": stage + 1,
				"rq_cleanup": stage > 0,
				"stale_started_jobs_cleaned": cleaned,
				"stuck_before": stuck,
				"claimed": claimed,
				"jobs_enqueued": enqueued,
				"dropped_by_dedup": len(records) - enqueued,
				"stuck_after": left,
			}
		)
	return stages


def main() -> None:
	kills_wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 20
	run_count = int(sys.argv[2]) if len(sys.argv) > 2 else 150
	_site.on_signals()
	frappe = _site.connect()
	prefix = _site.unique_prefix("crash")
	queue = _site.queue_name("crash")
	tmp = tempfile.mkdtemp(prefix="flow-crash-")
	stop_file = os.path.join(tmp, "stop")
	procs = _site.Processes(tmp)
	before = _site.counts()
	run_start = frappe.utils.now_datetime()
	started = time.monotonic()
	template = None
	server = None
	keep_logs = True
	try:
		with (
			_site.site_config_value("flow_automation_allow_private_webhook_targets", 1),
			_site.setting("Flow Automation Settings", "lease_seconds", 60) as old_lease,
			_site.setting("Flow Automation Settings", "claim_batch_size", CLAIM_BATCH) as old_batch,
		):
			server = SlowServer()
			template = _site.make_template(prefix, steps(prefix, server.url)).name
			frappe.db.commit()
			offset = _site.clock_offset()
			horizon = _site.bench_now(offset - 3600)
			foreign = _site.foreign_due_rows(frappe, [template], horizon)
			if foreign:
				raise SystemExit(
					f"{foreign} Flow Step Pending rows of other templates are due on the benchmark clock; "
					"the cron would fire them, so the benchmark does not start"
				)
			lease = _site.real_time_leases(offset)  # the leases this process takes end on the real clock
			print(
				f"lease_seconds: setting {old_lease} -> 60 for the run; lease_seconds() = {lease} s "
				"(floor FIRE_JOB_TIMEOUT + 60)"
			)
			t = time.monotonic()
			runs = start_runs(frappe, template, run_count, offset)
			print(f"started {len(runs)} runs (first step due) in {time.monotonic() - t:.1f} s")
			print(
				f"claim_batch_size: setting {old_batch} -> {CLAIM_BATCH} for the run (fire jobs of <= {CLAIM_BATCH} runs)"
			)

			workers = Workers(procs, queue)
			time.sleep(2)
			procs.scheduler(
				queue, stop_file, os.path.join(tmp, "cron.json"), "cron.log", offset, CRON_INTERVAL
			)
			t_kill = time.monotonic()
			kills = kill_loop(server, workers, kills_wanted, frappe, template, queue)
			phases = collections.Counter(k["phase"] for k in kills)
			print(
				f"{len(kills)} SIGKILLs in {time.monotonic() - t_kill:.0f} s "
				f"({phases['in_call']} during the webhook call, {phases['after_call']} after it), "
				f"{workers.started} worker processes started in all"
			)
			calm = wait_calm(frappe, template, queue, workers, timeout=900)
			s = state(frappe, template)
			print(
				f"after the kills{'' if calm else ' (NOT calm after 900 s)'}: rows {s['rows']}, runs {s['runs']}"
			)

			stages = recover(frappe, template, queue, workers, offset)
			for st in stages:
				print(
					f"recovery stage {st['stage']}: leases of stuck rows run out, run_due(), "
					f"{'after' if st['rq_cleanup'] else 'without'} RQ's registry clean-up "
					f"({st['stale_started_jobs_cleaned']} stale 'started' jobs): {st['stuck_before']} rows stuck, "
					f"{st['claimed']} claimed, {st['jobs_enqueued']} fire jobs enqueued, "
					f"{st['dropped_by_dedup']} dropped by RQ deduplication, {st['stuck_after']} still stuck"
				)

			open(stop_file, "w").close()
			s = state(frappe, template)
			rows_not_done = sum(n for status, n in s["rows"].items() if status != "Done")
			runs_not_completed = sum(n for status, n in s["runs"].items() if status != "Completed")
			lost = rows_not_done + runs_not_completed
			notes = frappe.db.sql(
				"select title, count(*) from `tabNote` where title like %s group by title", f"{prefix} %"
			)
			duplicated = sum(1 for _title, n in notes if n > 1)
			completed = s["runs"].get("Completed", 0)
			missing = 2 * completed - sum(1 for _title, n in notes if n >= 1)
			repeats = {k: n for k, n in server.keys.items() if n > 1}
			extra_calls = sum(n - 1 for n in repeats.values())
			claims = dict(
				frappe.db.sql(
					"select attempt, count(*) from `tabFlow Step Pending` where template = %s group by attempt",
					template,
				)
			)
			reclaimed = frappe.db.count("Flow Step Pending", {"template": template, "attempt": (">", 1)})
			print(f"end: rows {s['rows']}, runs {s['runs']}; claims per row {claims}")
			for run in frappe.get_all(
				"Flow Run",
				filters={"template": template, "status": ("!=", "Completed")},
				fields=["name", "status", "error"],
				limit=5,
			):
				failed = frappe.get_all(
					"Flow Step Log",
					filters={"run": run.name, "status": ("!=", "Success")},
					fields=["step_id", "attempt", "status", "error"],
				)
				print(f"  not Completed: {run.name} {run.status}: {(run.error or '')[:300]!r}")
				for log in failed:
					print(
						f"    step {log.step_id} attempt {log.attempt} {log.status}: {(log.error or '')[:300]!r}"
					)
			print(
				f"rows left Running by the kills and claimed again: {reclaimed} (a kill strands the rest of "
				"its fire job: the run in progress and the runs after it in the job)"
			)
			print(
				f"Notes: {len(notes)} distinct titles, {duplicated} created twice, "
				f"{missing} missing for Completed runs"
			)
			print(
				f"HTTP: {sum(server.keys.values())} calls for {len(server.keys)} keys; "
				f"{len(repeats)} keys received more than once ({extra_calls} extra calls)"
			)
			keep_logs = False
	finally:
		open(stop_file, "w").close()
		time.sleep(1)
		procs.stop_all()
		if server:
			server.close()
		purged = _site.purge_queue(queue)
		frappe.db.rollback()
		notes = frappe.get_all("Note", filters={"title": ("like", f"{prefix} %")}, pluck="name")
		if notes:
			frappe.db.delete("Note Seen By", {"parenttype": "Note", "parent": ("in", notes)})
			frappe.db.delete("Note", {"name": ("in", notes)})
			frappe.db.commit()
		if template:
			_site.delete_templates([template])
		after = _site.counts()
		errors = frappe.db.count(
			"Error Log", {"creation": (">=", run_start), "method": ("like", "%fire_due%")}
		)
		print(
			f"clean-up: {procs.alive()} of our processes alive, {purged} RQ jobs purged; "
			f"site row count changes {_site.count_changes(before, after) or 'none'}; "
			f"Error Logs of fire jobs since the start (left in place): {errors}"
		)
		frappe.destroy()
		_site.keep_or_remove_logs(tmp, keep_logs)
	print(
		f"run time {time.monotonic() - started:.0f} s; lease expiry simulated (lease_until moved to the past)"
	)
	print(
		f"runs={len(runs)} lost={lost} duplicated_side_effects={duplicated} http_repeats={len(repeats)} "
		f"kills={len(kills)} rows_reclaimed={reclaimed} http_extra_calls={extra_calls} "
		f"missing_side_effects={missing} lease_s={lease} dedup_dropped_refires="
		f"{sum(st['dropped_by_dedup'] for st in stages)}"
	)


if __name__ == "__main__":
	main()
