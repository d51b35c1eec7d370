"""The app's own RQ queue: declared the Frappe way (common_site_config.json → workers), every
flow job goes there, with the time limit of the standard queue it would have used; undeclared,
jobs use Frappe's standard queues. Checked on the real Redis queue, not inline."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import frappe
from frappe.utils.background_jobs import get_queue, get_queues_timeout

from flow_automation.desk import get_scheduler_status
from flow_automation.tests.utils import FlowTestCase
from flow_automation.transaction import FLOW_QUEUE, enqueue, flow_queue

JOB = "flow_automation.runtime.advance.start_job"


@contextmanager
def workers(config: dict | None) -> Iterator[None]:
	"""The site's `workers` setting for a block (as common_site_config.json would give it)."""
	had, before = "workers" in frappe.local.conf, frappe.local.conf.get("workers")
	if config is None:
		frappe.local.conf.pop("workers", None)
	else:
		frappe.local.conf["workers"] = config
	get_queues_timeout.cache_clear()  # Frappe reads the queues once per process (lru_cache)
	try:
		yield
	finally:
		if had:
			frappe.local.conf["workers"] = before
		else:
			frappe.local.conf.pop("workers", None)
		get_queues_timeout.cache_clear()


@contextmanager
def queued_for_real() -> Iterator[None]:
	"""Jobs go to Redis instead of running inline (Frappe runs them inline in tests)."""
	in_test = frappe.flags.in_test
	frappe.flags.in_test = False
	try:
		yield
	finally:
		frappe.flags.in_test = in_test


class TestFlowQueue(FlowTestCase):
	def take_job(self, queue: str, job_id: str):
		"""The job with `job_id` on `queue` in Redis (removed from it), or None."""
		q = get_queue(queue)
		for job in q.get_jobs():
			if job.id.endswith(job_id):
				job.delete()
				return job
		return None

	def test_declared_the_frappe_way_every_flow_job_goes_to_the_apps_own_queue(self):
		with workers({FLOW_QUEUE: {"timeout": 900}}), queued_for_real():
			self.assertEqual(flow_queue("default"), FLOW_QUEUE)
			self.assertEqual(flow_queue("short"), FLOW_QUEUE)
			enqueue(JOB, job_id="fa-queue-test-1", run="no-such-run")
			enqueue(JOB, queue="long", job_id="fa-queue-test-2", run="no-such-run")
			first = self.take_job(FLOW_QUEUE, "fa-queue-test-1")
			second = self.take_job(FLOW_QUEUE, "fa-queue-test-2")
		self.assertIsNotNone(first, "the job is on the flow_automation queue")
		self.assertIsNotNone(second)
		# the time limit of the queue the job was meant for, not the dedicated queue's
		self.assertEqual(first.timeout, 300)
		self.assertEqual(second.timeout, 1500)
		self.assertEqual(first.kwargs["kwargs"]["run"], "no-such-run")

	def test_undeclared_jobs_use_the_standard_queues(self):
		with workers(None), queued_for_real():
			self.assertEqual(flow_queue("short"), "short")
			enqueue(JOB, queue="short", job_id="fa-queue-test-3", run="no-such-run")
			job = self.take_job("short", "fa-queue-test-3")
		self.assertIsNotNone(job, "the job is on Frappe's short queue")

	def test_a_job_given_its_own_time_limit_keeps_it(self):
		with workers({FLOW_QUEUE: {}}), queued_for_real():
			enqueue(JOB, job_id="fa-queue-test-4", timeout=42, run="no-such-run")
			job = self.take_job(FLOW_QUEUE, "fa-queue-test-4")
		self.assertEqual(job.timeout, 42)

	def test_the_settings_page_says_which_queue_and_how_many_workers_listen(self):
		with workers(None):
			status = get_scheduler_status()
		self.assertEqual(status["queue"], "default")
		self.assertIsInstance(status["queue_workers"], int)
		with workers({FLOW_QUEUE: {}}):
			status = get_scheduler_status()
		self.assertEqual((status["queue"], status["queue_workers"]), (FLOW_QUEUE, 0))
