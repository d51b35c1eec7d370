"""Transactions, the way this app uses them: savepoints, commits and work after commit.

- `isolated()`: a block in its own savepoint; an exception rolls back only that block's
  writes, the messages and the after-commit work it queued, and is handed back, not raised.
- `rolled_back()`: a block whose writes are always undone (dry runs), including the
  after-commit callbacks it queued.
- `quiet_messages()`: drop what a block queued for the user's message box.
- `commit()`: end a job's transaction (background jobs and the cron own theirs).
- `separately()`: one piece of a job as its own transaction: committed, or rolled back and
  logged, so one bad item never stops the others.
- `enqueue()`: one background job, optionally after commit; the one place that knows
  Frappe's test convention (`now=frappe.flags.in_test`: in tests nothing commits, so jobs run
  inline). A job after commit that Redis cannot take is logged, never raised into a commit
  that already happened.
- `enqueue(after_commit=True, doorbell=…)` / `doorbell_answered()`: a job after commit unless
  one is already on its way, for callers that come in bursts and whose job drains stored work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import frappe
from frappe.utils.background_jobs import get_queues_timeout, get_redis_conn
from redis.exceptions import RedisError

# The RQ queue of the app's own workers, declared the Frappe way in common_site_config.json:
# "workers": {"flow_automation": {"timeout": 1500}}. Without it, jobs use the standard queues.
FLOW_QUEUE = "flow_automation"
# how long a rung doorbell holds back new jobs when the job it queued never starts
DOORBELL_SECONDS = 60


@dataclass
class Block:
	"""What happened inside an `isolated()` block."""

	error: BaseException | None = None
	traceback: str = ""

	@property
	def failed(self) -> bool:
		return self.error is not None


def _savepoint_name() -> str:
	return "flow_" + frappe.generate_hash(length=10)


@contextmanager
def quiet_messages() -> Iterator[None]:
	"""Drop the messages a block queued for the user (its errors are reported elsewhere)."""
	before = len(frappe.local.message_log)
	try:
		yield
	finally:
		del frappe.local.message_log[before:]


@contextmanager
def isolated(catch: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> Iterator[Block]:
	"""Run a block in its own savepoint; an exception in `catch` undoes only the block.

	The error (and its traceback) is on the yielded Block; anything not in `catch` rolls the
	block back and propagates.
	"""
	block = Block()
	name = _savepoint_name()
	callbacks = len(frappe.db.after_commit._functions)
	with quiet_messages():
		frappe.db.savepoint(name)
		try:
			yield block
		except frappe.QueryDeadlockError:
			raise  # the server rolled back the whole transaction: nothing of it is left to keep
		except catch as e:
			frappe.db.rollback(save_point=name)
			_drop_after_commit(callbacks)
			block.error = e
			block.traceback = frappe.get_traceback(with_context=False)
		except BaseException:
			frappe.db.rollback(save_point=name)
			raise
		else:
			frappe.db.release_savepoint(name)


@contextmanager
def rolled_back() -> Iterator[None]:
	"""Run a block and undo every write it made, and the after-commit work it queued."""
	name = _savepoint_name()
	callbacks = len(frappe.db.after_commit._functions)
	with quiet_messages():
		frappe.db.savepoint(name)
		try:
			yield
		finally:
			frappe.db.rollback(save_point=name)
			_drop_after_commit(callbacks)


def _drop_after_commit(keep: int) -> None:
	"""A savepoint rollback keeps after-commit callbacks: drop those queued after the first `keep`
	(the work of a block that was undone, e.g. the job that would start a run never written)."""
	while len(frappe.db.after_commit._functions) > keep:
		frappe.db.after_commit._functions.pop()


def commit() -> None:
	frappe.db.commit()


def separately(work: Callable[[], Any], *, title: str) -> bool:
	"""Run `work` and commit; if it raises, roll back, log the error under `title` and go on.

	Returns whether it succeeded. For jobs that own their transaction (the cron, workers).
	"""
	try:
		work()
		commit()
		return True
	except Exception:
		frappe.db.rollback()
		frappe.log_error(title=title)
		commit()  # the Error Log row
		return False


def flow_queue(standard: str = "default") -> str:
	"""Where a job meant for `standard` goes: the app's own queue when the bench declares it
	(`bench setup supervisor` then runs workers for it), else `standard`."""
	return FLOW_QUEUE if FLOW_QUEUE in (frappe.get_conf().get("workers") or {}) else standard


def enqueue(
	method: str,
	*,
	queue: str = "default",
	job_id: str | None = None,
	deduplicate: bool = False,
	after_commit: bool = False,
	doorbell: str | None = None,
	timeout: int | None = None,
	**kwargs: Any,
) -> None:
	"""Enqueue `method` (a dotted path) as a background job.

	In tests it runs at once, inline (Frappe's own convention), since nothing commits there.
	The job goes to the app's own queue when the bench declares one (`flow_queue`), with the
	time limit of the standard queue it names, so routing never changes how long it may run.

	`after_commit`: the job is handed to Redis once the transaction commits, deduplication
	check included (Frappe would ask Redis at once, in the middle of the caller's save). If
	Redis cannot take it then, that is logged (the app's log file) and the caller's commit
	stands, as an error could not undo it: a run's start and an inbound message's processing
	are already durable (a Queued run, a Pending message) and the minute cron drains them.

	`doorbell` (with `after_commit`): for work that arrives in bursts and is stored first
	(inbound messages), whose job drains everything stored. After commit each caller costs one
	`SET NX`, and only the one that rings queues the job. The job calls
	`doorbell_answered(doorbell)` before it reads its work, so what commits after that rings
	again and nothing waits for a job that has already looked. The doorbell expires after
	DOORBELL_SECONDS: a job lost while it rang is replaced by the next ring, and the minute
	cron drains what is left if none comes.
	"""
	now = bool(frappe.flags.in_test)
	options: dict[str, Any] = {
		"queue": flow_queue(queue),
		"timeout": timeout or get_queues_timeout().get(queue),
		"job_id": job_id,
		"deduplicate": deduplicate and not now,
		"now": now,
		**kwargs,
	}
	if after_commit and not now:
		frappe.db.after_commit.add(partial(_enqueue_committed, method, options, doorbell))
		return
	frappe.enqueue(method, **options)


def doorbell_answered(doorbell: str) -> None:
	"""The job rung at `doorbell` has started: from now on, new work rings for a new job."""
	try:
		get_redis_conn().delete(_doorbell_key(doorbell))
	except RedisError as e:
		frappe.logger("flow_automation").error(f"doorbell {doorbell} not cleared ({type(e).__name__}: {e})")


def _doorbell_key(doorbell: str) -> str:
	# on the queue's Redis, beside the jobs it stands for; one per site
	return f"flow_automation:doorbell:{frappe.local.site}:{doorbell}"


def _enqueue_committed(method: str, options: dict[str, Any], doorbell: str | None = None) -> None:
	try:
		if doorbell and not get_redis_conn().set(_doorbell_key(doorbell), 1, nx=True, ex=DOORBELL_SECONDS):
			return  # the job rung for earlier work has not started yet: it will read this too
		frappe.enqueue(method, **options)
	except RedisError as e:
		# no Error Log: nothing commits after this point of a request, and an outage would
		# write one per save
		frappe.logger("flow_automation").error(
			f"job {method} ({options.get('job_id') or 'no job id'}) not queued, Redis unreachable "
			f"({type(e).__name__}: {e}); the minute cron will pick up its work"
		)
