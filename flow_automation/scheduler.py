"""The minute cron: claim due Flow Step Pending rows and hand them to RQ workers.

Claiming follows graphile-worker: select due rows `FOR UPDATE SKIP LOCKED` in a batch,
mark them Running with a lease and a bumped claim count in the same short transaction,
commit, then enqueue one job per run. Any number of schedulers and workers can do this at
once without two of them getting the same row. A row whose lease ran out (its worker was
killed) is claimed again; after `MAX_CLAIMS` claims it fails and so does its run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from typing import Any

import frappe
from frappe.utils import add_to_date, now_datetime
from redis.exceptions import RedisError

from flow_automation.engine import FINISHED_RUN_STATUSES, restored_timers
from flow_automation.runtime import RunNotFound, add_timers, advance_run, fail_run, lock_runs
from flow_automation.settings import is_paused, setting
from flow_automation.transaction import commit, enqueue, isolated, separately
from flow_automation.triggers import drain_outbox, fire_schedules

MAX_CLAIMS = 5
DEADLOCK_RETRIES = 3
DEFAULT_LEASE_SECONDS = 1800
DEFAULT_BATCH = 200
FIRE_JOB_TIMEOUT = 600  # seconds; the lease must stay longer than this
RUNS_PER_JOB = 100


def lease_seconds() -> int:
	return max(int(setting("lease_seconds", DEFAULT_LEASE_SECONDS)), FIRE_JOB_TIMEOUT + 60)


def batch_size() -> int:
	return int(setting("claim_batch_size", DEFAULT_BATCH))


def begin_claim_transaction() -> None:
	"""End the open transaction and start a READ COMMITTED one to claim in.

	Under MariaDB's default REPEATABLE READ a locking range scan takes next-key (gap) locks:
	once one claimer has marked its rows Running, a second claimer's `SKIP LOCKED` scan
	finds the whole due range locked and gets nothing, and their updates wait on each
	other. READ COMMITTED takes record locks only, so concurrent claimers split the rows.
	"""
	frappe.db.commit()
	frappe.db.sql("commit")  # the empty transaction frappe.db.commit() just began
	frappe.db.sql("set transaction isolation level read committed")  # the next transaction only
	frappe.db.sql("start transaction")


def claim_due(now: dt.datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
	"""Claim due rows (and rows whose lease expired) in the current transaction.

	Returns [{name, run, attempt}]. Call inside `begin_claim_transaction()` and commit
	right after, as `run_due` does.
	"""
	now = now or now_datetime()
	limit = limit or batch_size()
	table = frappe.qb.DocType("Flow Step Pending")
	due = (
		frappe.qb.from_(table)
		.select(table.name, table.run, table.attempt)
		.where((table.status == "Pending") & (table.trigger_at <= now))
		.orderby(table.trigger_at)
		.limit(limit)
		.for_update(skip_locked=True)
		.run(as_dict=True)
	)
	if len(due) < limit:
		due += (
			frappe.qb.from_(table)
			.select(table.name, table.run, table.attempt)
			.where((table.status == "Running") & (table.lease_until < now))
			.orderby(table.lease_until)
			.limit(limit - len(due))
			.for_update(skip_locked=True)
			.run(as_dict=True)
		)
	if not due:
		return []
	lease_until = add_to_date(now, seconds=lease_seconds())
	(
		frappe.qb.update(table)
		.set(table.status, "Running")
		.set(table.attempt, table.attempt + 1)
		.set(table.lease_until, lease_until)
		.set(table.modified, now)
		.where(table.name.isin([row.name for row in due]))
	).run()
	for row in due:
		row.attempt = (row.attempt or 0) + 1
	return due


def run_due(now: dt.datetime | None = None, inline: bool = False) -> int:
	"""The cron entry: claim everything due and fire it; returns how many rows were claimed.

	`inline=True` fires in this process (the `run-due` bench command); otherwise each run
	gets a background job.
	"""
	if is_paused():
		return 0
	now = now or now_datetime()
	claimed_total = 0
	while True:
		begin_claim_transaction()
		claimed = claim_due(now)
		commit()
		if not claimed:
			break
		claimed_total += len(claimed)
		too_often = [row for row in claimed if row.attempt > MAX_CLAIMS]
		if too_often:
			give_up(too_often)
		by_run: dict[str, list[str]] = defaultdict(list)
		claim_count = {row.name: row.attempt for row in claimed}
		for row in claimed:
			if row.attempt <= MAX_CLAIMS:
				by_run[row.run].append(row.name)
		# Several runs per job: a worker forks once per job, which costs more than a short advance.
		batches = list(by_run.items())
		if inline:
			for start in range(0, len(batches), RUNS_PER_JOB):
				fire_due_many(batches[start : start + RUNS_PER_JOB], now=now)
			continue
		for start in range(0, len(batches), RUNS_PER_JOB):
			batch = batches[start : start + RUNS_PER_JOB]
			try:
				enqueue_fire(batch, claim_count)
			except RedisError:
				# the queue is unreachable: give back the rows no job took (not claimed after all),
				# so the next minute tries them again instead of waiting out their lease
				unclaim([name for _run, names in batches[start:] for name in names])
				commit()
				raise
		if len(claimed) < batch_size():
			break
	return claimed_total


def enqueue_fire(batch: list[tuple[str, list[str]]], claim_count: dict[str, int]) -> None:
	enqueue(
		"flow_automation.scheduler.fire_due_many",
		timeout=FIRE_JOB_TIMEOUT,
		# The claim already makes this job the rows' only owner. No RQ deduplication: a
		# worker killed mid-job leaves its job "started" until RQ's clean-up, and the
		# re-claim's job would be dropped as a duplicate of it.
		job_id=f"flow_automation:fire:{batch[0][1][0]}:{claim_count[batch[0][1][0]]}",
		batch=batch,
	)


def unclaim(rows: list[str]) -> None:
	"""Claimed rows no job was given: Pending again, their claim not counted."""
	table = frappe.qb.DocType("Flow Step Pending")
	(
		frappe.qb.update(table)
		.set(table.status, "Pending")
		.set(table.attempt, table.attempt - 1)
		.set(table.lease_until, None)
		.where(table.name.isin(rows) & (table.status == "Running"))
	).run()


def every_minute() -> None:
	"""The minute cron: schedules, due steps, and Queued runs a lost job left behind."""
	if is_paused():
		return
	now = now_datetime()
	# Each part on its own: a broken schedule must not stop delayed steps from firing.
	for what, part in (("schedules", fire_schedules), ("due steps", run_due), ("queued runs", drain_outbox)):
		separately(lambda: part(now), title=f"Flow Automation cron: {what} failed")


def fire_due_many(batch: list[tuple[str, list[str]]], now: dt.datetime | None = None) -> None:
	"""A worker's job: fire several runs' claimed rows in one transaction, a savepoint each.

	One commit per job instead of one per run (a commit is a round trip and a log flush), the
	runs locked and loaded in one query, their rows marked Done in one update. A run that
	raises is rolled back to its savepoint, its error logged and kept on its rows (they wait
	for their lease); the others still fire. If the group cannot commit (a deadlock, a lost
	connection), it is rolled back and fired again one run at a time, as Frappe's own
	automation drainer does.
	"""
	try:
		runs = lock_runs([run for run, _pending in batch])
		done: list[str] = []
		for run, pending in batch:
			with isolated() as block:
				fire(run, pending, now, loaded=runs.get(run), mark=False)
			if block.failed:
				keep_error(run, pending, block.error, block.traceback)
			else:
				done += pending
		mark_done(done)
		commit()
	except Exception:
		frappe.db.rollback()
		for run, pending in batch:
			separately(lambda: fire_due(run, pending, now), title=f"Flow Run {run}: firing due steps failed")


def fire(
	run: str,
	pending: list[str],
	now: dt.datetime | None = None,
	*,
	loaded: Any = None,
	mark: bool = True,
) -> None:
	"""Advance a run for its claimed rows (and `mark` them Done), in the caller's transaction.

	`loaded`: the run as `lock_runs` loaded it, used while nothing has written it since."""
	try:
		result = advance_run(run, now=now, loaded=loaded)
	except RunNotFound:
		result = None
	if mark:
		mark_done(pending)
	if result is not None and result.status not in FINISHED_RUN_STATUSES:
		reschedule_early_rows(run, pending, result)


def mark_done(rows: list[str]) -> None:
	"""Claimed rows whose run fired: Done (a row no longer Running was not ours any more)."""
	if not rows:
		return
	table = frappe.qb.DocType("Flow Step Pending")
	(
		frappe.qb.update(table)
		.set(table.status, "Done")
		.set(table.lease_until, None)
		.set(table.modified, now_datetime())
		.where(table.name.isin(rows) & (table.status == "Running"))
	).run()


def keep_error(run: str, pending: list[str], error: BaseException, traceback: str) -> None:
	"""A run that failed to fire: its rows keep the error and stay Running for the lease to
	expire and the next claim to retry; the traceback goes to the Error Log."""
	table = frappe.qb.DocType("Flow Step Pending")
	(
		frappe.qb.update(table)
		.set(table.last_error, f"{type(error).__name__}: {error}"[:1000])
		.where(table.name.isin(pending))
	).run()
	frappe.log_error(title=f"Flow Run {run}: firing due steps failed", message=traceback)


def fire_due(run: str, pending: list[str], now: dt.datetime | None = None) -> None:
	"""Fire one run's claimed rows in a transaction of its own, and commit.

	A deadlock (two transactions touching the same rows in another order) rolls the whole
	transaction back, so trying again is safe; anything else leaves the rows Running for
	the lease to expire and the next claim to retry.
	"""
	table = frappe.qb.DocType("Flow Step Pending")
	for attempt in range(1, DEADLOCK_RETRIES + 1):
		try:
			fire(run, pending, now)
			commit()
			return
		except frappe.QueryDeadlockError:
			if attempt == DEADLOCK_RETRIES:
				raise
			frappe.db.rollback()
			time.sleep(0.05 * 2**attempt)
		except Exception as e:
			# the rows stay Running: their lease runs out and the next claim tries again
			frappe.db.rollback()
			(
				frappe.qb.update(table)
				.set(table.last_error, f"{type(e).__name__}: {e}"[:1000])
				.where(table.name.isin(pending))
			).run()
			commit()
			raise


def reschedule_early_rows(run: str, fired: list[str], result: Any) -> None:
	"""A row fired before its step was due by the run's own clock (a row edited by hand, clocks
	that disagree) must not be spent: put a timer back for every open step that lost its own."""
	table = frappe.qb.DocType("Flow Step Pending")
	open_rows = (
		frappe.qb.from_(table)
		.select(table.step_id)
		.where((table.run == run) & table.status.isin(("Pending", "Running")) & table.name.notin(fired))
		.run(pluck=True)
	)
	missing = [t for t in restored_timers(result.step_state) if t.step_id not in open_rows]
	if missing:
		add_timers(frappe.get_doc("Flow Run", run), missing)


def give_up(rows: list[dict[str, Any]]) -> None:
	"""Rows claimed MAX_CLAIMS times never finished (a crashing worker): fail them and their runs."""
	table = frappe.qb.DocType("Flow Step Pending")
	(
		frappe.qb.update(table)
		.set(table.status, "Failed")
		.set(table.lease_until, None)
		.where(table.name.isin([row.name for row in rows]))
	).run()
	for run in {row.run for row in rows}:
		fail_run(
			run, f"a due step was claimed {MAX_CLAIMS} times and never finished (worker crash or timeout)"
		)
	commit()
