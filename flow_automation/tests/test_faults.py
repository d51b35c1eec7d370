"""Faults injected for real: Redis gone (a redis-server of the test's own on a loopback port,
stopped), a worker process SIGKILLed in the middle of a WhatsApp send, a database connection
KILLed in the middle of a step, a save whose snapshot predates another save (two connections),
timers fired a day late. Nothing is lost, nothing is done twice.

The other process of a test (the worker) sees only what is committed, so those tests commit;
FlowTestCase removes every row a test added, committed or not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from unittest.mock import patch

import frappe
import redis
from frappe.utils import add_to_date, background_jobs, now_datetime
from frappe.utils.redis_wrapper import RedisWrapper

from flow_automation import runtime, triggers
from flow_automation.scheduler import fire, run_due
from flow_automation.tests.utils import (
	FlowTestCase,
	RecordingServer,
	logs,
	make_template,
	pending,
	site_config,
	state,
	unique,
)
from flow_automation.tests.whatsapp_utils import (
	CONTACT,
	WhatsAppTestCase,
	message_row,
	signed,
	status_update,
)
from flow_automation.tests.whatsapp_utils import inbound_message as inbound
from flow_automation.triggers import OUTBOX_GRACE_SECONDS, clear_trigger_cache, drain_outbox
from flow_automation.whatsapp import routing, webhook

# What a worker does with a run: advance it in a process of its own (argv: site, sites path, run).
# With "--print-connection" it first prints its database connection id; "--allow-private-targets"
# lets its webhook steps call loopback (the site config of the test's own process, for the worker).
WORKER = """
import sys
import frappe
frappe.init(site=sys.argv[1], sites_path=sys.argv[2])
frappe.connect()
frappe.set_user("Administrator")
if "--allow-private-targets" in sys.argv:
	frappe.local.conf.flow_automation_allow_private_webhook_targets = 1
if "--print-connection" in sys.argv:
	print(frappe.db.sql("select connection_id()")[0][0], flush=True)
from flow_automation import runtime
runtime.advance_run(sys.argv[3])
frappe.db.commit()
"""


class PrivateRedis:
	"""A redis-server of the test's own on a free loopback port (the site's Redis is not touched)."""

	def __init__(self):
		with socket.socket() as s:
			s.bind(("127.0.0.1", 0))
			self.port = s.getsockname()[1]
		self.url = f"redis://127.0.0.1:{self.port}"
		self.process: subprocess.Popen | None = None

	def start(self) -> PrivateRedis:
		args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
		self.process = subprocess.Popen(
			[*args, "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
		)
		client = redis.Redis(port=self.port)
		for _ in range(200):
			with contextlib.suppress(redis.exceptions.ConnectionError):
				if client.ping():
					return self
			time.sleep(0.05)
		raise RuntimeError(f"redis-server did not start on port {self.port}")

	def stop(self) -> None:
		if self.process and self.process.poll() is None:
			self.process.kill()
			self.process.wait(timeout=10)

	def __enter__(self) -> PrivateRedis:
		return self.start()

	def __exit__(self, *exc) -> None:
		self.stop()


@contextlib.contextmanager
def jobs_queued_on(server: PrivateRedis) -> Iterator[None]:
	"""Jobs go to `server` for real (not run inline, as tests otherwise do), over a connection
	made while it is up: stopping it then is an outage, not a misconfiguration."""
	conf, in_test = frappe.local.conf, frappe.flags.in_test
	before, connection = conf.redis_queue, background_jobs._redis_queue_conn
	conf.redis_queue, background_jobs._redis_queue_conn = server.url, None
	frappe.flags.in_test = False
	try:
		background_jobs.get_redis_conn().ping()
		yield
	finally:
		conf.redis_queue, background_jobs._redis_queue_conn = before, connection
		frappe.flags.in_test = in_test


def worker(run: str, *flags: str) -> subprocess.Popen:
	sites = os.path.abspath(frappe.local.sites_path)
	return subprocess.Popen(
		[sys.executable, "-c", WORKER, frappe.local.site, sites, run, *flags],
		cwd=sites,
		stdout=subprocess.PIPE,
		stderr=subprocess.DEVNULL,
		text=True,
	)


def runs_of(template: str) -> list[frappe._dict]:
	return frappe.get_all(
		"Flow Run",
		filters={"template": template},
		fields=["name", "status", "error"],
		order_by="creation asc",
	)


def notes_titled(prefix: str) -> list[str]:
	return frappe.get_all("Note", filters={"title": ("like", f"{prefix}%")}, pluck="title")


class TestRedisDown(FlowTestCase):
	def test_a_save_commits_while_redis_is_down_and_its_run_waits_in_the_outbox(self):
		prefix = unique("Fault")
		template = make_template(
			[
				{
					"id": "todo",
					"kind": "create_document",
					"payload": {"doctype": "ToDo", "fields": {"description": f"{prefix} {{{{ run.name }}}}"}},
				}
			],
			trigger={
				"type": "Document Event",
				"doctype": "Note",
				"event": "New",
				"condition": {"field": "doc.title", "op": "starts_with", "value": prefix},
			},
		)
		clear_trigger_cache()
		with PrivateRedis() as server, jobs_queued_on(server):
			server.stop()
			note = frappe.get_doc({"doctype": "Note", "title": f"{prefix} saved"}).insert()
			frappe.db.commit()  # the end of the user's request: the job cannot be queued
		frappe.db.rollback()
		self.assertTrue(frappe.db.exists("Note", note.name), "the save was committed")
		[run] = runs_of(template.name)
		self.assertEqual(run.status, "Queued")

		# the minute cron's outbox drain kicks it once its grace is over (and Redis is back)
		# (the kick is recorded, not queued; every Queued run of the site is in one batch here)
		kicked: list[str] = []
		with (
			patch.object(triggers, "enqueue_start", kicked.append),
			patch.object(triggers, "OUTBOX_BATCH", 10**6),
		):
			drain_outbox(now=add_to_date(now_datetime(), seconds=OUTBOX_GRACE_SECONDS + 1))
		self.assertTrue(run.name in kicked, "the drain kicks it")
		runtime.start_queued_run(run.name)  # the kick's job
		runtime.start_queued_run(run.name)  # a second kick finds nothing to do
		self.assertEqual(frappe.db.get_value("Flow Run", run.name, "status"), "Completed")
		todos = frappe.get_all("ToDo", filters={"description": ("like", f"{prefix}%")}, pluck="name")
		self.assertEqual(len(todos), 1)

	def test_due_rows_the_cron_cannot_hand_to_a_job_are_given_back_not_left_to_their_lease(self):
		template = make_template(
			[{"id": "nap", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 1}, "payload": {}}]
		)
		with self.freeze_time(add_to_date(now_datetime(), minutes=-5)):
			run = runtime.start_run(template.name, advance="now")
		frappe.db.commit()
		with PrivateRedis() as server, jobs_queued_on(server):
			server.stop()
			with self.assertRaises(redis.exceptions.RedisError):
				run_due()
		frappe.db.rollback()
		row = frappe.db.get_value(
			"Flow Step Pending", {"run": run}, ["name", "status", "attempt", "lease_until"], as_dict=True
		)
		self.assertEqual((row.status, row.attempt, row.lease_until), ("Pending", 0, None))
		run_due()  # Redis is back (jobs run inline here): the row fires once
		self.assertEqual(state(run)["nap"]["status"], "done")
		self.assertEqual(
			frappe.db.get_value("Flow Step Pending", row.name, ["status", "attempt"]), ("Done", 1)
		)


class TestStartJobs(FlowTestCase):
	def test_one_start_job_starts_the_runs_whose_jobs_still_wait_and_takes_those_jobs(self):
		"""A storm of saves queues a start job per run; the first job to run starts the runs
		queued behind it and takes their jobs out of the queue (one fork, not one each)."""
		template = make_template(
			[{"id": "note", "kind": "set_variables", "payload": {"variables": {"x": "1"}}}]
		)
		with PrivateRedis() as server, jobs_queued_on(server):
			runs = [runtime.start_run(template.name) for _ in range(3)]
			frappe.db.commit()  # the kicks' jobs go to the private queue after commit
			queue = background_jobs.get_queue("default")
			self.assertEqual(len(queue.get_job_ids()), 3)
			runtime.start_job(runs[0])  # what the first job does when a worker runs it
			frappe.db.commit()
			left = queue.get_job_ids()
		self.assertEqual([frappe.db.get_value("Flow Run", r, "status") for r in runs], ["Completed"] * 3)
		# the jobs of the runs it started are gone; its own is still there (it was called here)
		self.assertEqual(left, [f"{frappe.local.site}::flow_automation:start:{runs[0]}"])

	def test_a_run_with_no_job_waiting_is_left_alone(self):
		template = make_template(
			[{"id": "note", "kind": "set_variables", "payload": {"variables": {"x": "1"}}}]
		)
		with PrivateRedis() as server, jobs_queued_on(server):
			first = runtime.start_run(template.name)
			held = runtime.start_run(template.name, advance="none")  # its caller starts it
			frappe.db.commit()
			runtime.start_job(first)
		self.assertEqual(frappe.db.get_value("Flow Run", first, "status"), "Completed")
		self.assertEqual(frappe.db.get_value("Flow Run", held, "status"), "Queued")


class TestWhatsAppFaults(WhatsAppTestCase):
	def send_step(self) -> str:
		return make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {"to": "{{ variables.phone }}", "mode": "template", "template": "fault_v1"},
					"retry": {"max_attempts": 3, "backoff_seconds": 60},
				}
			]
		).name

	def test_a_delivery_is_stored_and_acknowledged_while_redis_is_down(self):
		body = inbound("hello there")  # no flow answers it: it waits for the processing job
		wamid = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		with PrivateRedis() as server, jobs_queued_on(server):
			server.stop()
			answer = webhook.receive(*signed(body))
			frappe.db.commit()  # the end of Meta's request: the job cannot be queued
		self.assertEqual(answer, (200, "OK"))
		frappe.db.rollback()
		row = message_row(wamid)
		self.assertEqual(row.processing_status, "Pending")

		# the minute cron's sweep takes it once its grace is over
		swept: list[str] = []
		with (
			patch.object(routing, "process_message", swept.append),
			patch.object(routing, "DRAIN_BATCH", 10**6),
		):
			routing.drain(now=add_to_date(now_datetime(), seconds=routing.DRAIN_GRACE_SECONDS + 1))
		self.assertTrue(row.name in swept, "the sweep takes it")
		routing.process_message(row.name)
		routing.process_message(row.name)  # swept twice: processed once
		self.assertEqual(message_row(wamid).processing_status, "Done")

	def test_a_failure_report_that_cannot_be_queued_is_applied_in_the_request(self):
		run = runtime.start_run(self.send_step(), variables={"phone": CONTACT}, advance="now")
		wamid = state(run)["send"]["output"]["wamid"]
		with PrivateRedis() as server, jobs_queued_on(server):
			server.stop()
			answer = webhook.receive(*signed(status_update(wamid, "failed", code=131026)))
		self.assertEqual(answer, (200, "OK"))
		self.assertEqual(frappe.db.get_value("WhatsApp Conversation", CONTACT, "undeliverable"), 1)
		self.assertTrue(
			frappe.db.exists("Flow Step Log", {"run": run, "step_id": "send", "error": ("like", "%131026%")})
		)

	def test_without_redis_nothing_is_sent_and_the_retry_sends_once(self):
		template = self.send_step()
		with PrivateRedis() as server:
			unreachable = RedisWrapper.from_url(server.url)
			server.stop()
			with patch.object(frappe, "cache", unreachable):
				run = runtime.start_run(template, variables={"phone": CONTACT}, advance="now")
		self.assertEqual(self.sent(), [], "no pacing, no marker: nothing goes out")
		self.assertEqual(state(run)["send"]["status"], "scheduled")
		self.assertIn("Redis", state(run)["send"]["error"])

		runtime.advance_run(run, now=add_to_date(now_datetime(), minutes=5))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(len(self.sent()), 1)

	def test_a_send_cut_off_by_a_killed_worker_is_not_sent_again(self):
		template = self.send_step()
		run = runtime.start_run(template, variables={"phone": CONTACT}, advance="none")
		frappe.db.commit()  # the worker is another process
		self.graph.delay_next(1, seconds=10)  # Meta has the message, its answer is slow to come
		process = worker(run)
		try:
			for _ in range(600):
				if self.sent() or process.poll() is not None:
					break
				time.sleep(0.05)
			self.assertEqual(len(self.sent()), 1, "the worker's send reached Meta")
		finally:
			process.kill()
			process.wait(timeout=30)

		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Queued", "rolled back")
		runtime.advance_run(run)  # the step runs again (its lease ran out)
		self.assertEqual(len(self.sent()), 1, "not sent a second time")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertIn("may have been delivered", state(run)["send"]["error"])


class TestDatabaseConnectionLost(FlowTestCase):
	def test_a_step_whose_connection_is_killed_runs_again_and_its_effects_happen_once(self):
		prefix = unique("Fault")
		arrived, release = threading.Event(), threading.Event()

		def hold(request: dict) -> None:  # each request waits for `release`
			arrived.set()
			release.wait(30)

		with RecordingServer(on_request=hold) as server:
			try:
				self.kill_the_connection_inside_a_call(prefix, server, arrived, release)
			finally:
				release.set()

	def kill_the_connection_inside_a_call(self, prefix, server, arrived, release) -> None:
		template = make_template(
			[
				{
					"id": "note",
					"kind": "create_document",
					"payload": {"doctype": "Note", "fields": {"title": f"{prefix} {{{{ run.name }}}}"}},
				},
				{
					"id": "call",
					"kind": "webhook",
					"depends_on": ["note"],
					"payload": {
						"method": "POST",
						"url": f"{server.url}/hook",
						"body": {"run": "{{ run.name }}"},
					},
				},
			]
		)
		run = runtime.start_run(template.name, advance="none")
		frappe.db.commit()
		with site_config(flow_automation_allow_private_webhook_targets=1):
			process = worker(run, "--print-connection", "--allow-private-targets")
			try:
				connection = int(process.stdout.readline())
				self.assertTrue(arrived.wait(60), "the worker is inside the HTTP step")
				frappe.db.sql(f"kill connection {connection}")  # its Note is written, not committed
				release.set()
				process.wait(timeout=60)
			finally:
				process.kill()
			self.assertNotEqual(process.returncode, 0, "the worker could not commit")
			frappe.db.rollback()
			self.assertEqual(notes_titled(prefix), [], "the killed transaction was rolled back")
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Queued")

			runtime.advance_run(run)  # the step runs again (its lease ran out)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(notes_titled(prefix), [f"{prefix} {run}"], "one Note")
		keys = [r["headers"].get("Idempotency-Key") for r in server.requests]
		self.assertEqual(keys, [f"{run}:call:1"] * 2, "the repeat carries the same key")


class TestEventFlood(FlowTestCase):
	def setUp(self):
		super().setUp()
		self.second: frappe.database.database.Database | None = None
		self.addCleanup(self.close_other)

	@contextlib.contextmanager
	def other(self) -> Iterator[None]:
		"""The block runs on a second database connection of its own (another request or worker),
		which keeps its transaction, and its snapshot, from one block to the next."""
		primary = frappe.local.db
		if self.second is None:
			frappe.connect(set_admin_as_user=False)
			self.second = frappe.local.db
		frappe.local.db = self.second
		try:
			yield
		finally:
			frappe.local.db = primary

	def close_other(self) -> None:
		if self.second is not None:
			self.second.rollback()
			self.second.close()

	def flood_template(self, prefix: str, steps: list[dict]) -> str:
		template = make_template(
			steps,
			trigger={
				"type": "Document Event",
				"doctype": "Note",
				"event": "Value Change",
				"field": "content",
				"condition": {"field": "doc.title", "op": "starts_with", "value": prefix},
			},
			options={"one_active_run_per_document": True},
		)
		clear_trigger_cache()
		return template.name

	def test_a_save_whose_snapshot_missed_the_active_run_starts_no_second_one(self):
		prefix = unique("Fault")
		template = self.flood_template(
			prefix, [{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}}]
		)
		note = frappe.get_doc({"doctype": "Note", "title": f"{prefix} flooded", "content": "0"}).insert()
		frappe.db.commit()
		with PrivateRedis() as server, jobs_queued_on(server):  # the runs start as their jobs would
			with self.other():
				frappe.db.get_value("Note", note.name, "modified")  # this save read first
			self.save(note.name, "1")
			# another save commits a run meanwhile
			with self.other():
				self.save(note.name, "2")  # the document locked, its snapshot still older
		frappe.db.rollback()
		runs = runs_of(template)
		self.assertEqual(len(runs), 2, "the second save could not see the first run")
		for run in runs:
			runtime.start_queued_run(run.name)
		runs = runs_of(template)
		self.assertEqual([r.status for r in runs], ["Waiting", "Cancelled"])
		self.assertIn(runs[0].name, runs[1].error)
		self.assertFalse(logs(runs[1].name), "the duplicate never ran a step")

	def save(self, note: str, content: str) -> None:
		doc = frappe.get_doc("Note", note, for_update=True)
		doc.content = content
		doc.save()
		frappe.db.commit()

	def test_a_flow_updates_a_document_saved_after_its_worker_read_it(self):
		note = frappe.get_doc({"doctype": "Note", "title": unique("Fault"), "content": "0"}).insert()
		template = make_template(
			[{"id": "mark", "kind": "update_document", "payload": {"fields": {"public": 1}}}],
			trigger={"type": "Manual", "doctype": "Note"},
		)
		run = runtime.start_run(
			template.name, reference_doctype="Note", reference_name=note.name, advance="none"
		)
		frappe.db.commit()
		with self.other():
			frappe.db.get_value("Note", note.name, "modified")  # the worker's snapshot
		self.save(note.name, "edited by a user")
		with self.other():
			runtime.advance_run(run)
			frappe.db.commit()
		frappe.db.rollback()
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(
			frappe.db.get_value("Note", note.name, ["public", "content"]), (1, "edited by a user")
		)


class TestClockJump(FlowTestCase):
	def test_timers_a_day_late_fire_once_each_in_the_order_they_were_due(self):
		def delay(step_id: str, hours: int) -> dict:
			return {"id": step_id, "kind": "wait", "trigger": {"type": "after_delay", "hours": hours}}

		template = make_template([delay("late", 20), delay("mid", 5), delay("early", 1)])
		run = runtime.start_run(template.name, advance="now")
		rows = [row.name for row in pending(run)]
		self.assertEqual(len(rows), 3)
		# the cron claims all three at once, 26 hours late (a dormant site, a clock that jumped)
		frappe.db.set_value("Flow Step Pending", {"name": ("in", rows)}, "status", "Running")
		fire(run, rows, add_to_date(now_datetime(), hours=26))
		fire(run, rows, add_to_date(now_datetime(), hours=26))  # a second claim fires nothing again
		self.assertEqual([log.step_id for log in logs(run)], ["early", "mid", "late"])
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual({row.status for row in pending(run, status=None)}, {"Done"})
		self.assertEqual(state(run)["late"]["attempt"], 1)
