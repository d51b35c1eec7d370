"""Shared by the site benchmarks (dispatch_overhead, scheduler_drain, crash).

Finds the bench ($FRAPPE_BENCH, else the first in /opt, /home/*, /root, like the test command) and the site ($FRAPPE_TEST_SITE,
default test_site), re-runs a script with the bench's Python, connects, counts rows, cleans
up fixtures, and starts and stops the helper processes. It is also the entry point of those
processes:

	python _site.py worker QUEUE                          a real RQ worker (Frappe's start_worker)
	python _site.py worker-all QUEUE                      the same, its jobs' own jobs kept on QUEUE
	python _site.py scheduler QUEUE STOP_FILE OUT_FILE OFFSET   a "cron" calling run_due() in a loop

The app enqueues its jobs on Frappe's "default" queue. The queue is shared with the rest of
the bench (jobs of other sessions may be waiting there), so the benchmarks give their
processes a private RQ queue instead: `use_queue()` adds it to Frappe's list of queues and
sends what would go to "default" there. Everything else is Frappe's and the app's own code.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any


def find_bench() -> str:
	"""$FRAPPE_BENCH, else the first bench in the usual places (as the test command finds it)."""
	if os.environ.get("FRAPPE_BENCH"):
		return os.environ["FRAPPE_BENCH"]
	for pattern in ("/opt/*/sites/apps.txt", "/home/*/*/sites/apps.txt", "/root/*/sites/apps.txt"):
		found = sorted(glob.glob(pattern))
		if found:
			return os.path.dirname(os.path.dirname(found[0]))
	sys.exit("no Frappe bench found: set FRAPPE_BENCH to a bench folder")


BENCH = find_bench()
SITE = os.environ.get("FRAPPE_TEST_SITE", "test_site")
SITES = os.path.join(BENCH, "sites")
PYTHON = os.path.join(BENCH, "env", "bin", "python")
HERE = os.path.dirname(os.path.abspath(__file__))

# Row counts checked before and after a benchmark (its own rows must all be gone).
COUNTED_DOCTYPES = (
	"Flow Template",
	"Flow Template Version",
	"Flow Run",
	"Flow Step Pending",
	"Flow Step Log",
	"Note",
	"Notification",
	"ToDo",
	"Version",
	"Deleted Document",
	"Error Log",
	"Email Queue",
	"Notification Log",
)


def on_signals() -> None:
	"""SIGTERM (and SIGINT, even when a background shell ignores it) end the script through its
	finally blocks, so its fixtures and processes are cleaned up."""

	def stop(signum, frame):
		raise KeyboardInterrupt(f"signal {signum}")

	signal.signal(signal.SIGTERM, stop)
	signal.signal(signal.SIGINT, stop)


def ensure_bench_python() -> None:
	"""Re-run the calling script with the bench's interpreter (Frappe lives there)."""
	if os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(BENCH, "env")):
		return
	if os.environ.get("FLOW_BENCH_REEXEC"):
		sys.exit(f"{PYTHON} does not run from the bench's env (FRAPPE_BENCH={BENCH})")
	if not os.path.exists(PYTHON):
		sys.exit(f"no bench at {BENCH} (set FRAPPE_BENCH)")
	os.environ["FLOW_BENCH_REEXEC"] = "1"
	os.execv(PYTHON, [PYTHON, *sys.argv])


def connect():
	import frappe

	os.chdir(SITES)  # Frappe writes its logs to ../logs, relative to the sites folder
	frappe.init(site=SITE, sites_path=SITES)
	frappe.connect()
	frappe.set_user("Administrator")
	return frappe


def unique_prefix(tag: str) -> str:
	import frappe

	return f"bench-{tag}-{frappe.generate_hash(length=6)}"


def counts() -> dict[str, int]:
	import frappe

	return {doctype: frappe.db.count(doctype) for doctype in COUNTED_DOCTYPES}


def count_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
	return {k: after[k] - before[k] for k in before if after.get(k) != before[k]}


def count_queries():
	"""Every SQL statement sent through frappe.db.sql (exact): the tests' own counter."""
	from flow_automation.tests.utils import count_queries as counter

	return counter()


# --- the benchmark clock ------------------------------------------------------------------------

# Other sessions share the site: they may leave due rows behind, and their tests call run_due()
# with the real clock (or a frozen 2025/2026 one, or 2000-01-01) inside transactions they roll
# back. So the benchmarks keep their work apart in time:
# - their rows are due on a clock that runs at real speed but starts on a random day of the 20th
#   century, and their schedulers call run_due(now=<that clock>): rows of other sessions (real
#   dates, or 2000-01-01 in the claim tests) are never due on it, nor are those of another
#   benchmark run (on its own random day) once that run has claimed them;
# - a lease they take ends when it would on the real clock (lease_until = real time + lease),
#   so a row they hold is not "expired" for a scheduler on the real clock either.
# A row of theirs is visible to another session only between its insert and its first claim.
# Workers advance runs with the real clock, which is later still, so due steps run.


def clock_offset() -> float:
	"""Seconds from this run's benchmark clock to real time (fixed for one benchmark run)."""
	import datetime as dt
	import random

	from frappe.utils import now_datetime

	base = dt.datetime(1901, 1, 1) + dt.timedelta(days=random.randrange(35_000))
	return (now_datetime() - base).total_seconds()


def bench_now(offset: float):
	import datetime as dt

	from frappe.utils import now_datetime

	return now_datetime() - dt.timedelta(seconds=offset)


def real_time_leases(offset: float) -> int:
	"""Leases taken on the benchmark clock end when they would on the real clock; returns the lease."""
	from flow_automation import scheduler

	original = getattr(scheduler.lease_seconds, "original", scheduler.lease_seconds)

	def lease_seconds() -> int:
		return int(offset) + original()

	lease_seconds.original = original
	scheduler.lease_seconds = lease_seconds
	return original()


def foreign_due_rows(frappe, ours: list[str], until) -> int:
	"""Rows of other templates that a scheduler on the benchmark clock (up to `until`) would fire."""
	return frappe.db.sql(
		"""select count(*) from `tabFlow Step Pending`
		where template not in %(ours)s and (
			(status = 'Pending' and trigger_at <= %(until)s)
			or (status = 'Running' and lease_until < %(until)s))""",
		{"ours": tuple(ours) or ("",), "until": until},
	)[0][0]


# --- fixtures ---------------------------------------------------------------------------------


def make_template(name: str, steps: list[dict[str, Any]], trigger: dict[str, Any] | None = None, **fields):
	from flow_automation.tests.utils import make_template as _make

	return _make(steps, name=name, trigger=trigger, **fields)


def delete_templates(names: list[str]) -> None:
	"""Delete templates with their runs, pending rows, logs, versions and change history."""
	import frappe

	from flow_automation.triggers import clear_trigger_cache

	if not names:
		return
	runs = frappe.get_all("Flow Run", filters={"template": ("in", names)}, pluck="name")
	for start in range(0, len(runs), 1000):
		batch = runs[start : start + 1000]
		# failure alerts about our runs (a system notification, an email if the owner has one)
		frappe.db.delete("Notification Log", {"document_type": "Flow Run", "document_name": ("in", batch)})
		emails = frappe.get_all(
			"Email Queue",
			filters={"reference_doctype": "Flow Run", "reference_name": ("in", batch)},
			pluck="name",
		)
		if emails:
			frappe.db.delete("Email Queue Recipient", {"parent": ("in", emails)})
			frappe.db.delete("Email Queue", {"name": ("in", emails)})
	for doctype in ("Flow Step Log", "Flow Step Pending", "Flow Run"):
		frappe.db.delete(doctype, {"template": ("in", names)})
	frappe.db.delete("Flow Template Version", {"template": ("in", names)})
	for name in names:
		if frappe.db.exists("Flow Template", name):
			frappe.delete_doc(
				"Flow Template", name, force=True, ignore_permissions=True, delete_permanently=True
			)
	frappe.db.delete("Version", {"ref_doctype": "Flow Template", "docname": ("in", names)})
	frappe.db.commit()
	clear_trigger_cache()


@contextlib.contextmanager
def one_at_a_time(name: str):
	"""Refuse to start while another run of the same benchmark is going on: both would use
	and then remove the same fixtures (an account, rows by prefix) under each other."""
	import fcntl
	import tempfile

	with open(os.path.join(tempfile.gettempdir(), f"flow_automation_bench_{name}.lock"), "w") as lock:
		try:
			fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
		except BlockingIOError:
			sys.exit(f"another {name} benchmark is running on this machine: wait for it to finish")
		yield


@contextlib.contextmanager
def site_config_value(key: str, value: Any):
	"""Set a key in site_config.json (read by every process), then put back what was there."""
	import frappe
	from frappe.installer import update_site_config

	path = os.path.join(SITES, SITE, "site_config.json")
	with open(path) as f:
		had, old = key in (conf := json.load(f)), conf.get(key)
	update_site_config(key, value, site_config_path=path)
	frappe.local.conf[key] = value
	try:
		yield
	finally:
		update_site_config(key, old if had else "None", site_config_path=path)
		if had:
			frappe.local.conf[key] = old
		else:
			frappe.local.conf.pop(key, None)


@contextlib.contextmanager
def setting(doctype: str, field: str, value: Any):
	"""Set a field of a Single doctype through the document (its validate and on_update run,
	committed), then put the old value back the same way. Yields the old value."""
	import frappe

	def put(v: Any) -> None:
		doc = frappe.get_single(doctype)
		doc.set(field, v)
		try:
			doc.save(ignore_permissions=True)
		except frappe.ValidationError:
			# an old value the form refuses (a fresh site's never-saved 0): put back as it was
			frappe.db.rollback()
			frappe.db.set_single_value(doctype, field, v)
		frappe.db.commit()
		frappe.clear_document_cache(doctype, doctype)
		frappe.local.cache.clear()  # this process's request-level cache of cached values

	old = frappe.db.get_single_value(doctype, field)
	put(value)
	try:
		yield old
	finally:
		put(old)


def keep_or_remove_logs(tmp: str, keep: bool) -> None:
	"""The processes' log folder: kept (and named) when something went wrong or
	FLOW_BENCH_KEEP_LOGS is set, else removed."""
	if keep or os.environ.get("FLOW_BENCH_KEEP_LOGS"):
		print("logs kept in", tmp)
	else:
		shutil.rmtree(tmp, ignore_errors=True)


# --- a private RQ queue -----------------------------------------------------------------------


def queue_name(tag: str) -> str:
	import frappe

	return f"flowbench_{tag}_{frappe.generate_hash(length=6)}"


def use_queue(queue: str, on_enqueue=None) -> None:
	"""Make `queue` a valid Frappe queue in this process and send "default" jobs to it.

	`on_enqueue(kwargs, job)` is called after each enqueue (job is None when Frappe's
	deduplication skipped it).
	"""
	_reroute(queue, ("default",), on_enqueue, "_flowbench_queue")


def _reroute(queue: str, names: tuple[str, ...], on_enqueue, flag: str) -> bool:
	"""Patch Frappe's enqueue so jobs naming one of `names` go to `queue` (once per `flag`)."""
	from frappe.utils import background_jobs

	if getattr(background_jobs, flag, None):
		return False
	setattr(background_jobs, flag, queue)
	original_timeouts = background_jobs.get_queues_timeout
	original_enqueue = background_jobs.enqueue

	def get_queues_timeout():
		return {**original_timeouts(), queue: 600}

	def enqueue(method, queue_=None, *args, **kwargs):
		name = kwargs.pop("queue", queue_) or "default"
		if name in names:
			name = queue
		job = original_enqueue(method, name, *args, **kwargs)
		if on_enqueue:
			on_enqueue(kwargs, job)
		return job

	background_jobs.get_queues_timeout = get_queues_timeout
	background_jobs.enqueue = enqueue
	return True


def rq_queue(queue: str):
	from frappe.utils.background_jobs import generate_qname, get_redis_conn
	from rq import Queue

	return Queue(generate_qname(queue), connection=get_redis_conn())


def purge_queue(queue: str) -> int:
	"""Delete every job of the private queue (queued or in any registry) and the queue itself."""
	from rq.job import Job
	from rq.registry import (
		DeferredJobRegistry,
		FailedJobRegistry,
		FinishedJobRegistry,
		ScheduledJobRegistry,
		StartedJobRegistry,
	)

	q = rq_queue(queue)
	ids = set(q.get_job_ids())
	registries = [
		cls(q.name, connection=q.connection)
		for cls in (
			StartedJobRegistry,
			FailedJobRegistry,
			FinishedJobRegistry,
			DeferredJobRegistry,
			ScheduledJobRegistry,
		)
	]
	for registry in registries:
		ids |= set(registry.get_job_ids())
	for job_id in ids:
		with contextlib.suppress(Exception):
			Job.fetch(job_id, connection=q.connection).delete()
	for registry in registries:
		q.connection.delete(registry.key)
	q.delete(delete_jobs=True)
	return len(ids)


def foreign_workers(queues: tuple[str, ...] = ("default",)) -> int:
	"""RQ workers of this bench listening on the given queues (someone else's)."""
	from frappe.utils.background_jobs import generate_qname, get_redis_conn
	from rq import Worker

	names = {generate_qname(q) for q in queues}
	return sum(1 for w in Worker.all(connection=get_redis_conn()) if names & set(w.queue_names()))


# Every queue the app's jobs may name: Frappe's three standard ones, and the app's own when the
# bench declares it (flow_automation.transaction.flow_queue).
APP_QUEUES = ("default", "short", "long", "flow_automation")


def use_queue_for_all(queue: str, on_enqueue=None) -> None:
	"""As `use_queue`, for every queue in APP_QUEUES: the webhook's processing job ("short"), a
	run's start job ("default"), a media download ("long") all go to `queue`, in this process
	and in the processes it forks (gunicorn's workers, RQ's work horses)."""
	from frappe.utils import background_jobs

	if _reroute(queue, APP_QUEUES, on_enqueue, "_flowbench_all_queues") and not getattr(
		background_jobs, "_flowbench_queue", None
	):
		background_jobs._flowbench_queue = queue  # a later use_queue() changes nothing


def job_records(queue: str) -> list[dict[str, Any]]:
	"""The private queue's finished and failed jobs that RQ still keeps (finished ones for
	Frappe's rq_results_ttl, 10 minutes): method, its kwargs, status, worker and RQ's naive UTC
	timestamps (enqueued_at; started_at, in the work horse just before the job; ended_at)."""
	from rq.job import Job
	from rq.registry import FailedJobRegistry, FinishedJobRegistry

	q = rq_queue(queue)
	ids: list[str] = []
	for cls in (FinishedJobRegistry, FailedJobRegistry):
		ids += cls(q.name, connection=q.connection).get_job_ids()
	records = []
	for start in range(0, len(ids), 500):
		for job in Job.fetch_many(ids[start : start + 500], connection=q.connection):
			if job is None:
				continue
			kwargs = job.kwargs or {}
			records.append(
				{
					"method": kwargs.get("method") or "",
					"kwargs": kwargs.get("kwargs") or {},
					"status": job.get_status(refresh=False),
					"worker": job.worker_name,
					"enqueued_at": job.enqueued_at,
					"started_at": job.started_at,
					"ended_at": job.ended_at,
				}
			)
	return records


def wsgi_app():
	"""A gunicorn app (`--pythonpath benchmarks "_site:wsgi_app()"`): Frappe's own WSGI
	application, every job it enqueues sent to the private queue $FLOW_BENCH_QUEUE."""
	from frappe.app import application

	use_queue_for_all(os.environ["FLOW_BENCH_QUEUE"])
	return application


# --- processes --------------------------------------------------------------------------------


class Processes:
	"""The processes a benchmark starts, each in its own process group; all are ended at exit."""

	def __init__(self, log_dir: str):
		self.log_dir = log_dir
		self.procs: list[subprocess.Popen] = []
		self.horses: set[int] = set()

	def start(self, args: list[str], log_name: str, **env_vars: str) -> subprocess.Popen:
		log = open(os.path.join(self.log_dir, log_name), "ab")
		env = {**os.environ, "FLOW_BENCH_REEXEC": "1", "PYTHONUNBUFFERED": "1", **env_vars}
		proc = subprocess.Popen(
			args, cwd=SITES, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
		)
		log.close()
		self.procs.append(proc)
		return proc

	def worker(self, queue: str, log_name: str, **env_vars: str) -> subprocess.Popen:
		"""`env_vars`: e.g. FRAPPE_REDIS_QUEUE / FRAPPE_REDIS_CACHE, Frappe's own overrides of the
		site's Redis (a private redis-server, see RedisServer)."""
		return self.start([PYTHON, os.path.join(HERE, "_site.py"), "worker", queue], log_name, **env_vars)

	def scheduler(
		self,
		queue: str,
		stop_file: str,
		out_file: str,
		log_name: str,
		offset: float,
		idle_interval: float,
		go_file: str = "",
		**env_vars: str,
	) -> subprocess.Popen:
		"""A "cron" process; after a run_due() call that claimed nothing it sleeps `idle_interval` s.

		With `go_file` it makes its first call as soon as that file exists. `env_vars`: see
		scheduler_main (FLOW_BENCH_LEASE_SECONDS, FLOW_BENCH_RUNS_PER_JOB) and worker().
		"""
		args = [PYTHON, os.path.join(HERE, "_site.py"), "scheduler", queue, stop_file, out_file, str(offset)]
		return self.start(
			args,
			log_name,
			FLOW_BENCH_CRON_INTERVAL=str(idle_interval),
			FLOW_BENCH_GO_FILE=go_file,
			**env_vars,
		)

	def gunicorn(self, port: int, log_name: str, workers: int = 2, **env_vars: str) -> subprocess.Popen:
		"""The site served by the bench's gunicorn on a loopback port (as `bench serve` would)."""
		args = [
			os.path.join(BENCH, "env", "bin", "gunicorn"),
			"-b",
			f"127.0.0.1:{port}",
			"-w",
			str(workers),
			"-t",
			"120",
			"--preload",
			"--log-level",
			"warning",
			"frappe.app:application",
		]
		return self.start(args, log_name, **env_vars)

	@staticmethod
	def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> list[int]:
		"""Signal one of our processes: its process group, then its children (an RQ work horse
		calls setsid(), so it is not in its worker's group). Returns the children signalled."""
		kids = children(proc.pid)
		with contextlib.suppress(ProcessLookupError):
			os.killpg(proc.pid, sig)
		for pid in kids:
			with contextlib.suppress(ProcessLookupError):
				os.kill(pid, sig)
		return kids

	def stop_all(self, grace: float = 5.0) -> None:
		for proc in self.procs:
			if proc.poll() is None:
				self.horses.update(self.kill(proc, signal.SIGTERM))
		deadline = time.monotonic() + grace
		for proc in self.procs:
			with contextlib.suppress(subprocess.TimeoutExpired):
				proc.wait(timeout=max(0.1, deadline - time.monotonic()))
		for proc in self.procs:
			self.horses.update(self.kill(proc, signal.SIGKILL))
			with contextlib.suppress(subprocess.TimeoutExpired):
				proc.wait(timeout=5)
		for pid in self.horses:
			with contextlib.suppress(ProcessLookupError):
				os.kill(pid, signal.SIGKILL)
		time.sleep(0.2)

	def alive(self) -> int:
		"""Our processes (and work horses we saw) still running."""
		alive = 0
		for pid in [p.pid for p in self.procs if p.poll() is None] + sorted(self.horses):
			try:
				with open(f"/proc/{pid}/stat") as f:
					alive += f.read().split(")")[-1].split()[0] != "Z"
			except OSError:
				pass
		return alive


def free_port() -> int:
	import socket

	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60, **headers: str) -> bool:
	"""Until `url` answers 200 (a server just started)."""
	import requests

	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		try:
			if requests.get(url, headers=headers, timeout=2).ok:
				return True
		except requests.RequestException:
			pass
		time.sleep(0.3)
	return False


class RedisServer:
	"""A private redis-server on a loopback port, for fault tests: stopped and started again on
	the same port (by its own PID; the bench's Redis is never touched). Point processes at it
	with Frappe's own overrides of the site's Redis: `RedisServer.env(queue=..., cache=...)`."""

	def __init__(self, log_dir: str, name: str = "redis"):
		self.port = free_port()
		self.log = os.path.join(log_dir, f"{name}-{self.port}.log")
		self.proc: subprocess.Popen | None = None

	@property
	def url(self) -> str:
		return f"redis://127.0.0.1:{self.port}"

	@staticmethod
	def env(queue: RedisServer | None = None, cache: RedisServer | None = None) -> dict[str, str]:
		"""FRAPPE_REDIS_QUEUE / FRAPPE_REDIS_CACHE (frappe.get_site_config reads them first)."""
		env = {}
		if queue:
			env["FRAPPE_REDIS_QUEUE"] = queue.url
		if cache:
			env["FRAPPE_REDIS_CACHE"] = cache.url
		return env

	def start(self) -> RedisServer:
		import redis

		with open(self.log, "ab") as log:
			self.proc = subprocess.Popen(
				[
					"redis-server",
					"--bind",
					"127.0.0.1",
					"--port",
					str(self.port),
					"--save",
					"",
					"--appendonly",
					"no",
				],
				stdout=log,
				stderr=subprocess.STDOUT,
				start_new_session=True,
			)
		client = redis.Redis(port=self.port)
		deadline = time.monotonic() + 10
		while time.monotonic() < deadline:
			with contextlib.suppress(redis.exceptions.ConnectionError):
				if client.ping():
					return self
			time.sleep(0.05)
		raise RuntimeError(f"redis-server on port {self.port} did not start (see {self.log})")

	def stop(self) -> None:
		"""SIGKILL: an outage, not a shutdown (nothing saved; it comes back empty)."""
		if self.proc and self.proc.poll() is None:
			self.proc.kill()
			self.proc.wait(timeout=10)
		self.proc = None


def children(pid: int) -> list[int]:
	try:
		with open(f"/proc/{pid}/task/{pid}/children") as f:
			return [int(p) for p in f.read().split()]
	except OSError:
		return []


# --- helper process entry points ----------------------------------------------------------------


def worker_main(queue: str) -> None:
	"""A real RQ worker (Frappe's start_worker: a work horse is forked per job) on our queue."""
	import frappe
	from frappe.utils import background_jobs

	os.chdir(SITES)
	use_queue(queue)
	background_jobs.start_worker(queue=queue, quiet=True)
	frappe.destroy()


def worker_for_all_main(queue: str) -> None:
	"""As worker_main, with use_queue_for_all: the jobs its jobs enqueue stay on the private
	queue whichever standard queue they name."""
	import frappe
	from frappe.utils import background_jobs

	os.chdir(SITES)
	use_queue_for_all(queue)
	background_jobs.start_worker(queue=queue, quiet=True)
	frappe.destroy()


def fired_rows(kwargs: dict[str, Any]) -> list[str]:
	"""The Flow Step Pending rows a fire job was handed (fire_due_many's batch, or fire_due's)."""
	if kwargs.get("batch"):
		return [name for _run, names in kwargs["batch"] for name in names]
	return list(kwargs.get("pending") or [])


def scheduler_main(queue: str, stop_file: str, out_file: str, offset: str) -> None:
	"""The minute cron, called again and again: each call is a fresh Frappe context, as a job's is.

	It calls run_due(now=<the benchmark clock>): see clock_offset().

	Records every fire job handed to RQ (the rows in it, and whether RQ's deduplication
	dropped it) so double hand-outs can be counted afterwards.

	FLOW_BENCH_LEASE_SECONDS=<n>: leases of n seconds on the benchmark clock, so they run out
	for this cron after n real seconds (instead of real_time_leases: a lease that ends on the
	real clock never ends for a cron on the benchmark clock). The rows it holds are then
	expired for a cron on the real clock: use it for a few rows, briefly.
	FLOW_BENCH_RUNS_PER_JOB=<n>: fire jobs of at most n runs (scheduler.RUNS_PER_JOB).
	"""
	import frappe

	interval = float(os.environ.get("FLOW_BENCH_CRON_INTERVAL") or 60)
	short_lease = int(os.environ.get("FLOW_BENCH_LEASE_SECONDS") or 0)
	runs_per_job = int(os.environ.get("FLOW_BENCH_RUNS_PER_JOB") or 0)
	enqueued: list[list[Any]] = []

	def on_enqueue(kwargs, job):
		rows = fired_rows(kwargs)
		if rows:
			enqueued.append([kwargs.get("job_id"), rows, job is not None])

	use_queue(queue, on_enqueue)
	go_file = os.environ.get("FLOW_BENCH_GO_FILE")
	while go_file and not os.path.exists(go_file) and not os.path.exists(stop_file):
		time.sleep(0.02)
	calls = claimed = errors = 0
	started = time.time()
	while not os.path.exists(stop_file):
		try:
			connect()
			from flow_automation import scheduler
			from flow_automation.scheduler import run_due

			if short_lease:
				scheduler.lease_seconds = lambda: short_lease
			else:
				real_time_leases(float(offset))
			if runs_per_job:
				scheduler.RUNS_PER_JOB = runs_per_job

			n = run_due(now=bench_now(float(offset)))
			frappe.db.commit()
			calls += 1
			claimed += n
		except Exception as e:
			errors += 1
			print(f"run_due failed: {type(e).__name__}: {e}", flush=True)
			n = 0
		finally:
			frappe.destroy()
		if not n:
			deadline = time.monotonic() + interval
			while time.monotonic() < deadline and not os.path.exists(stop_file):
				time.sleep(0.2)
	with open(out_file, "w") as f:
		json.dump(
			{
				"pid": os.getpid(),
				"calls": calls,
				"claimed": claimed,
				"errors": errors,
				"seconds": time.time() - started,
				"enqueued": enqueued,
			},
			f,
		)


if __name__ == "__main__":
	ensure_bench_python()
	sys.path.insert(0, HERE)
	if sys.argv[1:2] == ["worker"]:
		worker_main(sys.argv[2])
	elif sys.argv[1:2] == ["worker-all"]:
		worker_for_all_main(sys.argv[2])
	elif sys.argv[1:2] == ["scheduler"]:
		scheduler_main(*sys.argv[2:6])
	else:
		sys.exit(__doc__)
