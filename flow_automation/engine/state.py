"""The names and shapes of a run's state: run statuses, step statuses and step entries.

A Flow Run stores its step state as JSON, `{step_id: StepEntry}`. The planner writes it;
the adapter reads a few facts from it (is this step waiting, for what, in which attempt
group). Those reads go through the accessors here, so the shape is described once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypedDict


class _Names(str, Enum):
	"""A str enum (Python 3.10 has no StrEnum): members compare, hash and JSON-encode as their value."""

	def __str__(self) -> str:
		return self.value


class RunStatus(_Names):
	"""A Flow Run's status (the doctype's Select options, in this spelling)."""

	QUEUED = "Queued"
	RUNNING = "Running"
	WAITING = "Waiting"
	COMPLETED = "Completed"
	FAILED = "Failed"
	CANCELLED = "Cancelled"

	@property
	def is_finished(self) -> bool:
		return self in FINISHED_RUN_STATUSES


FINISHED_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING})


class StepStatus(_Names):
	"""A step's status inside a run's step state."""

	PENDING = "pending"  # not reached yet
	SCHEDULED = "scheduled"  # has a due time: a delay, a date or a retry
	WAITING = "waiting"  # a gate before executing, or a wait after executing (a reply, a sub-flow)
	READY = "ready"  # released by a completed gate or a manual retry; executes in the next wave
	DONE = "done"
	FAILED = "failed"
	SKIPPED = "skipped"
	CANCELLED = "cancelled"


TERMINAL_STEP_STATUSES = frozenset(
	{StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)

# What a waiting step waits for (`wait.type`).
GATE = "gate"  # a manual / on_webhook step, before it executes
SUB_FLOW = "sub_flow"  # a start_flow step with wait: true
REPLY = "reply"  # an ask step, for the contact's answer
FAN_OUT = "fan_out"  # a for_each step, while its children start (and, with wait: true, finish)


class Wait(TypedDict, total=False):
	type: str  # GATE | SUB_FLOW | REPLY | FAN_OUT (channel kinds may add their own)
	since: str
	until: str  # a timeout fires after this time
	trigger: str  # GATE: manual | on_webhook
	run: str | None  # SUB_FLOW: the child run
	template: str  # SUB_FLOW, FAN_OUT: the children's template
	batch: str  # FAN_OUT: what its children carry (their trigger's `batch`)
	total: int  # FAN_OUT: how many children there are
	released: int  # FAN_OUT: children 0 .. released-1 were let start
	completed: list[int]  # FAN_OUT: the children (by item index) that completed
	failed: list[int]  # FAN_OUT: ... that failed or were cancelled


class StepEntry(TypedDict, total=False):
	status: str  # a StepStatus value
	attempt: int
	attempt_group: int  # bumped by a manual retry: a new idempotency key for side effects
	started_at: str
	finished_at: str
	branch: str | None
	output: Any
	error: str | None
	reason: str  # why a step was skipped
	due_at: str  # SCHEDULED: when it fires
	scheduled_for: str  # delay | date | retry | quiet_hours (held until its window opens)
	wait: Wait  # WAITING: what for
	result: Any  # a completed gate's result, merged into the output when it executes
	continued: bool  # failed with on_error "continue"
	fatal: bool  # failed with on_error "fail": the run failed
	suspended: dict[str, Any]  # what a fatal failure parked (restored by a retry)


StepState = dict[str, StepEntry]


def load_state(value: str | Mapping[str, Any] | None) -> StepState:
	"""A run's stored step state (JSON text or already a mapping) as a dict."""
	if not value:
		return {}
	if isinstance(value, Mapping):
		return dict(value)  # type: ignore[return-value]
	return json.loads(value)


def dump_state(state: Mapping[str, Any]) -> str:
	return json.dumps(state, default=str)


def entry_of(state: Mapping[str, Any], step_id: str) -> StepEntry:
	"""The entry of a step ({} for a step the run has not reached)."""
	return state.get(step_id) or {}


def status_of(state: Mapping[str, Any], step_id: str) -> StepStatus:
	return StepStatus(entry_of(state, step_id).get("status") or StepStatus.PENDING)


def attempt_group(state: Mapping[str, Any], step_id: str) -> int:
	"""The step's attempt group: 1, plus one for every manual retry."""
	return int(entry_of(state, step_id).get("attempt_group") or 1)


def waiting_for(state: Mapping[str, Any], step_id: str, wait_type: str | None = None) -> Wait | None:
	"""What the step waits for, if it is waiting now (and for `wait_type`, when given)."""
	entry = entry_of(state, step_id)
	wait = entry.get("wait")
	if entry.get("status") != StepStatus.WAITING or not wait:
		return None
	if wait_type is not None and wait.get("type") != wait_type:
		return None
	return wait


def waits_for_child(state: Mapping[str, Any], step_id: str, child_run: str, batch: str | None = None) -> bool:
	"""Whether the step is waiting now for this sub-flow run to finish: a start_flow's child,
	or a child of the for_each batch it is waiting on (`batch`, from the child's trigger)."""
	wait = waiting_for(state, step_id)
	if not wait:
		return False
	if wait.get("type") == SUB_FLOW:
		return wait.get("run") == child_run
	return wait.get("type") == FAN_OUT and batch is not None and wait.get("batch") == batch
