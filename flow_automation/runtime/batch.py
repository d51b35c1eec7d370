"""Starting a batch of runs, one per item: the one mechanism behind a schedule's "for each
matching document" and the `for_each` step.

`start_batch` writes one Queued run per item, in item order, and starts them: every one at
once (a schedule: its chunks committed as it goes), or only the first `concurrency` (the
children of a for_each step). The others are *held*: Queued, with trigger type "For Each"
and no `next_due_at`. Only their parent lets them go (`release`, under the parent's row
lock, when an earlier child ends): it sets `next_due_at` (due now) and kicks them. Nothing
else starts a held run — not the cron's drain of Queued runs, not a template's queue
(`startable`), not a job that reaches it anyway (`start.may_start`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import frappe
from frappe.utils import now_datetime

from flow_automation.engine import RunStatus
from flow_automation.runtime.start import FOR_EACH, ActiveRunExists, create_run, kick
from flow_automation.transaction import quiet_messages

CHUNK = 200

# What a run may be refused for: a duplicate event, one active run per document, a template
# or document that is not (or no longer) there.
REFUSALS = (
	frappe.DuplicateEntryError,
	frappe.UniqueValidationError,
	ActiveRunExists,
	frappe.ValidationError,
	frappe.DoesNotExistError,
)


@dataclass(frozen=True)
class BatchItem:
	"""One run of a batch: its document (or none), variables, dedup key, and what its trigger
	adds to the batch's (e.g. its index)."""

	reference_doctype: str | None = None
	reference_name: str | None = None
	variables: Mapping[str, Any] | None = None
	dedup_key: str | None = None
	trigger: Mapping[str, Any] | None = None


@dataclass
class StartedBatch:
	runs: list[str | None]  # per item, in order: its run, or None where it was refused
	released: list[str]  # the runs let start now (the others are held)


def start_batch(
	template: str,
	items: Iterable[BatchItem],
	*,
	trigger: Mapping[str, Any],
	concurrency: int | None = None,
	parent_run: str | None = None,
	parent_step: str | None = None,
	depth: int = 0,
	contact: str | None = None,
	refused: Callable[[int, BatchItem, Exception], None] | None = None,
	after_chunk: Callable[[], None] | None = None,
	start: Callable[[str], None] | None = kick,
) -> StartedBatch:
	"""Write one Queued run of `template` per item and let them start: all of them, or with
	`concurrency` the first that many (the rest held for their parent to `release`).

	`refused(position, item, error)` decides about an item whose run cannot be written (see
	REFUSALS); without it the error is raised. `after_chunk` runs after every CHUNK items (a
	job that owns its transaction commits there). `start` gets each released run going (a job
	after commit); None leaves that to the caller (a parent kicks its children once its own
	state is written).
	"""
	if concurrency is not None and not (parent_run and trigger.get("type") == FOR_EACH):
		raise ValueError("a batch started N at a time needs a parent run and a 'For Each' trigger")
	now = now_datetime()
	started = StartedBatch(runs=[], released=[])
	for position, item in enumerate(items):
		release_now = concurrency is None or len(started.released) < concurrency
		try:
			with quiet_messages():
				run = create_run(
					template,
					reference_doctype=item.reference_doctype,
					reference_name=item.reference_name,
					variables=item.variables,
					trigger={**dict(trigger), **dict(item.trigger or {})},
					contact=contact,
					parent_run=parent_run,
					parent_step=parent_step,
					depth=depth,
					dedup_key=item.dedup_key,
					next_due_at=now if concurrency is not None and release_now else None,
				)
		except REFUSALS as e:
			if refused is None:
				raise
			refused(position, item, e)
			started.runs.append(None)
			continue
		started.runs.append(run)
		if release_now:
			started.released.append(run)
			if start:
				start(run)
		if after_chunk and (position + 1) % CHUNK == 0:
			after_chunk()
	if after_chunk and len(started.runs) % CHUNK:
		after_chunk()
	return started


# --- the children of a for_each step ----------------------------------------------------------


def child_key(batch: str, index: int) -> str:
	"""The dedup key of a for_each child: its batch (hashed: keys are short) and its index."""
	return f"{_batch_prefix(batch)}{index}"


def _batch_prefix(batch: str) -> str:
	return f"for_each:{hashlib.sha1(batch.encode()).hexdigest()[:20]}:"


def _index_of(key: str | None, prefix: str) -> int | None:
	if not key or not key.startswith(prefix):
		return None
	tail = key[len(prefix) :]
	return int(tail) if tail.isdigit() else None


def release(parent_run: str, batch: str, indexes: Iterable[int]) -> list[str]:
	"""Let these held children of a batch start (due now); returns their names, for the caller
	to kick. Children no longer Queued (cancelled meanwhile) are left alone."""
	keys = [child_key(batch, i) for i in indexes]
	if not keys:
		return []
	table = frappe.qb.DocType("Flow Run")
	names = (
		frappe.qb.from_(table)
		.select(table.name)
		.where(
			(table.parent_run == parent_run) & table.dedup_key.isin(keys) & (table.status == RunStatus.QUEUED)
		)
		.run(pluck=True)
	)
	if names:
		frappe.qb.update(table).set(table.next_due_at, now_datetime()).where(table.name.isin(names)).run()
	return names


def batch_children(parent_run: str, batch: str, *, lock: bool = False) -> list[dict[str, Any]]:
	"""Every child of a batch as {index, run, status, variables, error}, in item order.

	`lock` reads them with a locking read: the latest committed values whatever this
	transaction's snapshot (a parent collects its children's results when the last one ends).
	"""
	prefix = _batch_prefix(batch)
	table = frappe.qb.DocType("Flow Run")
	query = (
		frappe.qb.from_(table)
		.select(table.name, table.status, table.variables, table.error, table.dedup_key)
		.where((table.parent_run == parent_run) & table.dedup_key.like(f"{prefix}%"))
	)
	if lock:
		query = query.for_update()
	children = []
	for row in query.run(as_dict=True):
		index = _index_of(row.dedup_key, prefix)
		if index is None:
			continue
		children.append(
			{
				"index": index,
				"run": row.name,
				"status": row.status,
				"variables": json.loads(row.variables) if row.variables else {},
				"error": row.error,
			}
		)
	return sorted(children, key=lambda child: child["index"])


def startable(table: Any) -> Any:
	"""The condition a Queued run must meet for anyone but its parent to start it: not a held
	child of a batch (query-builder criterion on Flow Run)."""
	return table.trigger_type.isnull() | (table.trigger_type != FOR_EACH) | table.next_due_at.isnotnull()
