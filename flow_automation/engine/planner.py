"""The planner: from (definition, step state, context, now) to decisions, and the wave loop.

Deterministic: no clock, no I/O. `plan` looks at the state once and says, for every step
that can move, whether it executes now, is scheduled for later, waits for someone, is
skipped (its branch was not taken) or fails to start. `advance` repeats plan → execute
until nothing more can happen at `now`; side effects happen only inside the `Host` the
caller passes in.

Step state is plain JSON (stored on the Flow Run): `{step_id: entry}` where an entry holds
`status`, `attempt`, `attempt_group`, `branch`, `output`, `error`, `due_at`, `wait`, ...
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from flow_automation.engine import catalog, quiet_hours
from flow_automation.engine.definition import ERROR_BRANCH, GATE_TRIGGERS, Definition, Step
from flow_automation.engine.outcome import DONE, FAILED, WAITING, Outcome, StepError
from flow_automation.engine.render import (
	RenderError,
	format_datetime,
	parse_datetime,
	render_string,
	render_value,
)
from flow_automation.engine.retry import backoff_seconds, has_attempts_left
from flow_automation.engine.state import (
	FINISHED_RUN_STATUSES,
	GATE,
	SUB_FLOW,
	TERMINAL_STEP_STATUSES,
	RunStatus,
	StepStatus,
)

# step statuses, run statuses and wait types (one spelling each: engine/state.py)
PENDING = StepStatus.PENDING
SCHEDULED = StepStatus.SCHEDULED
WAITING_STATUS = StepStatus.WAITING
READY = StepStatus.READY
STEP_DONE = StepStatus.DONE
STEP_FAILED = StepStatus.FAILED
SKIPPED = StepStatus.SKIPPED
CANCELLED = StepStatus.CANCELLED
TERMINAL = TERMINAL_STEP_STATUSES

RUN_RUNNING = RunStatus.RUNNING
RUN_WAITING = RunStatus.WAITING
RUN_COMPLETED = RunStatus.COMPLETED
RUN_FAILED = RunStatus.FAILED
RUN_CANCELLED = RunStatus.CANCELLED

# decisions
EXECUTE = "execute"
SCHEDULE = "schedule"
WAIT = "wait"
SKIP = "skip"
TIMEOUT = "timeout"
FAIL = "fail"

MAX_STORED_OUTPUT_CHARS = 64_000


class Host(Protocol):
	"""What the engine needs from the outside world (the Frappe adapter or the simulator)."""

	def execute(
		self, step: Step, payload: Mapping[str, Any], context: Mapping[str, Any], attempt: int
	) -> Outcome:
		"""Perform a host-executed step kind; may raise StepError."""
		...

	def reload_document(self) -> Mapping[str, Any] | None:
		"""The trigger document as it is now (for `reload_document: true`)."""
		...

	def perform(
		self, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]
	) -> Mapping[str, Any] | None:
		"""A side effect requested while resuming a waiting step (e.g. re-asking a question).
		What it returns, if a mapping, is added to the step's output (a fan-out's results)."""
		...


class EngineError(ValueError):
	"""A request the run's state does not allow (e.g. completing a step that is not waiting)."""


@dataclass  # not frozen, as `Outcome`: one per decision
class Decision:
	step_id: str
	action: str
	at: dt.datetime | None = None
	reason: str = ""


@dataclass(frozen=True)
class Plan:
	decisions: tuple[Decision, ...]
	status: str


@dataclass(frozen=True)
class Timer:
	"""A Flow Step Pending row the host must keep: fire `advance` for this step at `at`."""

	step_id: str
	at: dt.datetime
	purpose: str  # delay | date | retry | timeout


@dataclass
class Attempt:
	"""One row for the Flow Step Log."""

	step_id: str
	kind: str
	attempt: int
	status: str  # Success | Failed | Waiting | Resumed
	started_at: dt.datetime
	input: Any = None
	output: Any = None
	error: str | None = None
	branch: str | None = None
	duration_ms: float = 0.0
	retry_at: dt.datetime | None = None


@dataclass
class AdvanceResult:
	status: str
	step_state: dict[str, dict[str, Any]]
	variables: dict[str, Any]
	error: str | None = None
	attempts: list[Attempt] = field(default_factory=list)
	timers: list[Timer] = field(default_factory=list)
	cleared_timers: list[str] = field(default_factory=list)
	waves: int = 0
	decisions: int = 0

	@property
	def next_due(self) -> dt.datetime | None:
		"""The earliest time something is scheduled (delay, retry or timeout)."""
		return next_due(self.step_state)


@dataclass(frozen=True)
class Event:
	"""Something from outside a run that resumes a waiting step."""

	step_id: str
	type: str  # complete | reply | timeout
	data: Any = None


# --- plan: pure decisions ----------------------------------------------------------------


def step_status(state: Mapping[str, Mapping[str, Any]], step_id: str) -> str:
	entry = state.get(step_id)
	return entry.get("status", PENDING) if entry else PENDING


def plan(
	definition: Definition,
	state: Mapping[str, Mapping[str, Any]],
	context: Mapping[str, Any],
	now: dt.datetime,
) -> Plan:
	"""Decide, for every step that can move at `now`, what happens to it. Does not mutate."""
	overlay: dict[str, str] = {}
	decisions = _scan(definition, state, overlay, context, now)
	return Plan(tuple(decisions), _run_status(definition, state, overlay, decisions))


def _scan(
	definition: Definition,
	state: Mapping[str, Mapping[str, Any]],
	overlay: dict[str, str],
	context: Mapping[str, Any],
	now: dt.datetime,
) -> list[Decision]:
	"""`plan`'s decisions: every step looked at, in `ordered_steps` order."""
	decisions = []
	for step in definition.ordered_steps:
		decision = _decide(definition, step, state, overlay, context, now)
		if decision is not None:
			decisions.append(decision)
	return decisions


def _replan(
	definition: Definition,
	state: Mapping[str, Mapping[str, Any]],
	context: Mapping[str, Any],
	now: dt.datetime,
	changed: Iterable[str],
) -> list[Decision]:
	"""`plan`'s decisions, looking only at the steps that can have changed since the last wave.

	A step's decision reads its own entry and its predecessors' (and the context, once it is
	released), so after a wave that left every other step unable to move, only the steps in
	`changed` and their successors can move now. They are looked at in `ordered_steps` order,
	as `plan` does; a skip releases its successors within the same wave, so they join the queue.
	"""
	queued: set[int] = set()  # positions in `ordered_steps`
	for step_id in changed:
		if not definition.has_step(step_id):
			continue
		if step_status(state, step_id) not in TERMINAL:
			queued.add(definition.position(step_id))
		queued.update(definition.position(s) for s in definition.successors(step_id))
	heap = sorted(queued)
	order = definition.ordered_steps
	overlay: dict[str, str] = {}
	decisions: list[Decision] = []
	while heap:
		index = heapq.heappop(heap)
		step = order[index]
		decision = _decide(definition, step, state, overlay, context, now)
		if decision is None:
			continue
		decisions.append(decision)
		if decision.action == SKIP:
			# a successor placed before it (in a cycle only) is left for the next wave, as in `plan`
			for successor in definition.successors(step.id):
				position = definition.position(successor)
				if position > index and position not in queued:
					queued.add(position)
					heapq.heappush(heap, position)
	return decisions


def _status(state: Mapping[str, Mapping[str, Any]], overlay: Mapping[str, str], step_id: str) -> str:
	"""A step's status as the wave being planned sees it: its entry, or what the wave decided."""
	status = overlay.get(step_id)
	if status:
		return status
	entry = state.get(step_id)
	return entry.get("status", PENDING) if entry else PENDING


def _decide(
	definition: Definition,
	step: Step,
	state: Mapping[str, Mapping[str, Any]],
	overlay: dict[str, str],
	context: Mapping[str, Any],
	now: dt.datetime,
) -> Decision | None:
	"""What happens to one step at `now` (None: nothing). A skip, a schedule or a wait is noted
	in `overlay`, so that the steps after it in the same wave see it."""
	entry = state.get(step.id) or {}
	status = overlay.get(step.id) or entry.get("status", PENDING)
	if status in TERMINAL:
		return None
	if status == PENDING:
		release, reason = _release(definition, step, state, overlay)
		if release == "blocked":
			return None
		if release == SKIP:
			overlay[step.id] = SKIPPED
			return Decision(step.id, SKIP, reason=reason)
		decision = _held(definition, step, _start(step, context, now), context, now)
		if decision.action in (SCHEDULE, WAIT):
			overlay[step.id] = SCHEDULED if decision.action == SCHEDULE else WAITING_STATUS
		return decision
	if status == SCHEDULED:
		due = parse_datetime(entry.get("due_at"))
		if due is None or due <= now:
			decision = Decision(step.id, EXECUTE, reason=entry.get("scheduled_for", "due"))
			return _held(definition, step, decision, context, now)
		return None
	if status == READY:
		return _held(definition, step, Decision(step.id, EXECUTE, reason="released"), context, now)
	if status == WAITING_STATUS:
		until = parse_datetime((entry.get("wait") or {}).get("until"))
		if until is not None and until <= now:
			return Decision(step.id, TIMEOUT, at=until, reason="wait expired")
	return None


_GO = ("go", "")
_BLOCKED = ("blocked", "")


def _release(
	definition: Definition,
	step: Step,
	state: Mapping[str, Mapping[str, Any]],
	overlay: Mapping[str, str],
) -> tuple[str, str]:
	"""Whether a pending step may start ("go"), must wait ("blocked") or will never run ("skip")."""
	if step.parent_id:
		parent_status = _status(state, overlay, step.parent_id)
		if parent_status not in TERMINAL:
			return _BLOCKED
		parent = state.get(step.parent_id) or {}
		if parent_status in (SKIPPED, CANCELLED):
			return SKIP, f"parent '{step.parent_id}' did not run"
		taken = parent.get("branch")
		if parent_status == STEP_FAILED and not parent.get("continued") and taken != ERROR_BRANCH:
			return SKIP, f"parent '{step.parent_id}' failed"
		if step.branch is not None and step.branch != taken:
			return SKIP, f"'{step.parent_id}' took branch {taken!r}, not {step.branch!r}"
		if step.branch is None and taken == ERROR_BRANCH:
			return SKIP, f"'{step.parent_id}' failed and took its error branch"
	deps = definition.dependencies(step.id)
	if not deps:
		return _GO
	passed = False  # one loop, no lists: this runs for every step a wave looks at
	for dep in deps:
		status = _status(state, overlay, dep)
		if status not in TERMINAL:
			return _BLOCKED
		passed = passed or _passes_on(state, dep, status)
	if not passed:
		return SKIP, "none of " + ", ".join(f"'{d}'" for d in deps) + " completed"
	return _GO


def _passes_on(state: Mapping[str, Mapping[str, Any]], step_id: str, status: str) -> bool:
	"""Whether a finished step lets its `depends_on` successors run."""
	entry = state.get(step_id) or {}
	return status == STEP_DONE or (status == STEP_FAILED and bool(entry.get("continued")))


def _start(step: Step, context: Mapping[str, Any], now: dt.datetime) -> Decision:
	trigger = step.trigger
	kind = step.trigger_type
	if kind == "after_delay":
		delay = dt.timedelta(
			days=float(trigger.get("days") or 0),
			hours=float(trigger.get("hours") or 0),
			minutes=float(trigger.get("minutes") or 0),
		)
		return Decision(step.id, SCHEDULE, at=now + delay, reason="delay")
	if kind == "on_date":
		source = str(trigger.get("at") or "")
		try:
			rendered = render_string(source, context)
		except RenderError as e:
			return Decision(step.id, FAIL, reason=f"trigger.at: {e}")
		at = parse_datetime(rendered)
		if at is None:
			return Decision(step.id, FAIL, reason=f"trigger.at rendered to {rendered!r}, which is not a date")
		if at <= now:
			return Decision(step.id, EXECUTE, reason="date reached")
		return Decision(step.id, SCHEDULE, at=at, reason="date")
	if kind in GATE_TRIGGERS:
		return Decision(step.id, WAIT, reason=kind)
	return Decision(step.id, EXECUTE, reason=kind)


def _held(
	definition: Definition, step: Step, decision: Decision, context: Mapping[str, Any], now: dt.datetime
) -> Decision:
	"""A message step about to execute outside its quiet hours is scheduled for the window's
	next opening instead (a timer, like a delay); every other decision stands."""
	if decision.action != EXECUTE:
		return decision
	kind = catalog.get_kind(step.kind)
	if kind is None or not kind.quiet_hours:
		return decision
	window = quiet_hours.window_for(step.quiet_hours, definition.quiet_hours)
	site = (context.get("site") or {}).get("time_zone")
	at = quiet_hours.hold_until(window, now, site, context.get("contact"))
	if at is None:
		return decision
	return Decision(step.id, SCHEDULE, at=at, reason=quiet_hours.QUIET_HOURS)


def _run_status(
	definition: Definition,
	state: Mapping[str, Mapping[str, Any]],
	overlay: Mapping[str, str],
	decisions: list[Decision],
) -> str:
	if any((state.get(s.id) or {}).get("fatal") for s in definition.steps):
		return RUN_FAILED  # a fatal failure stops the run, whatever else could still move
	if any(d.action in (EXECUTE, TIMEOUT, FAIL) for d in decisions):
		return RUN_RUNNING
	statuses = [overlay.get(s.id) or step_status(state, s.id) for s in definition.steps]
	if all(s in TERMINAL for s in statuses):
		return RUN_COMPLETED
	if any(s in (SCHEDULED, WAITING_STATUS, READY) for s in statuses):
		return RUN_WAITING
	return RUN_FAILED  # nothing can move and nothing waits: only a broken state gets here


def next_due(state: Mapping[str, Mapping[str, Any]]) -> dt.datetime | None:
	times = []
	for entry in state.values():
		if entry.get("status") == SCHEDULED:
			times.append(parse_datetime(entry.get("due_at")))
		elif entry.get("status") == WAITING_STATUS:
			times.append(parse_datetime((entry.get("wait") or {}).get("until")))
	times = [t for t in times if t is not None]
	return min(times) if times else None


# --- advance: the wave loop ---------------------------------------------------------------


def default_max_waves(definition: Definition) -> int:
	# Each step moves at most a handful of times per advance (release, execute, resume).
	return 4 * len(definition.steps) + 20


class _StepsView(Mapping):
	"""`steps.<id>.output` for templates: a live read-only view, built on access, not per step."""

	_FIELDS = ("status", "output", "branch", "error", "attempt", "attempt_group")

	def __init__(self, state: Mapping[str, Mapping[str, Any]]):
		self._state = state

	def __getitem__(self, step_id: str) -> dict[str, Any]:
		entry = self._state[step_id]
		return {key: entry.get(key) for key in self._FIELDS}

	def __iter__(self):
		return iter(self._state)

	def __len__(self) -> int:
		return len(self._state)


class _Run:
	"""Mutable working copy of one run during an advance."""

	def __init__(
		self,
		definition: Definition,
		step_state: Mapping[str, Mapping[str, Any]],
		variables: Mapping[str, Any],
		base_context: Mapping[str, Any],
		now: dt.datetime,
		host: Host,
		seed: str,
		timer: Callable[[], float] | None,
	):
		self.definition = definition
		self.state: dict[str, dict[str, Any]] = json.loads(json.dumps(step_state or {}, default=str))
		self.variables = dict(variables or {})
		self.base = dict(base_context or {})
		self.now = now
		self.stamp = _ts(now)  # `now` as stored, formatted once: every step it touches stores it
		self.host = host
		self.seed = seed
		self.timer = timer
		self.result = AdvanceResult(status=RUN_RUNNING, step_state=self.state, variables=self.variables)
		self.has_fatal = any(e.get("fatal") for e in self.state.values())
		# The steps whose entry changed since the last wave was planned (None: no wave yet).
		self.changed: set[str] | None = None

	# context ------------------------------------------------------------------------
	def context(self) -> dict[str, Any]:
		return {**self.base, "variables": self.variables, "steps": _StepsView(self.state), "now": self.now}

	def entry(self, step_id: str) -> dict[str, Any]:
		"""The step's entry, to change: the next wave looks at the step and its successors again."""
		if self.changed is not None:
			self.changed.add(step_id)
		if step_id in self.state:
			return self.state[step_id]
		entry = self.state[step_id] = {"status": PENDING, "attempt": 0, "attempt_group": 1}
		return entry

	def clock(self) -> float:
		return self.timer() if self.timer else 0.0

	# timers -------------------------------------------------------------------------
	def set_timer(self, step_id: str, at: dt.datetime, purpose: str) -> None:
		self.result.timers.append(Timer(step_id, at, purpose))

	def clear_timer(self, step_id: str) -> None:
		# a timer set earlier in this same advance was never stored: just forget it
		self.result.timers = [t for t in self.result.timers if t.step_id != step_id]
		if step_id not in self.result.cleared_timers:
			self.result.cleared_timers.append(step_id)

	# applying decisions and outcomes ------------------------------------------------
	def apply(self, decision: Decision) -> None:
		step = self.definition.step(decision.step_id)
		entry = self.entry(step.id)
		if decision.action == SKIP:
			entry.update(status=SKIPPED, reason=decision.reason, finished_at=self.stamp)
		elif decision.action == SCHEDULE:
			if entry.get("due_at"):
				self.clear_timer(step.id)  # held for quiet hours when it came due: a new time
			entry.update(status=SCHEDULED, due_at=_ts(decision.at), scheduled_for=decision.reason)
			self.set_timer(step.id, decision.at, decision.reason)
		elif decision.action == WAIT:
			entry.update(
				status=WAITING_STATUS, wait={"type": GATE, "trigger": decision.reason, "since": self.stamp}
			)
		elif decision.action == FAIL:
			entry["attempt"] = entry.get("attempt", 0) + 1
			self.record(step, entry["attempt"], None, Outcome.failed(decision.reason, retryable=False), 0.0)
			self.apply_outcome(step, Outcome.failed(decision.reason, retryable=False))
		elif decision.action == TIMEOUT:
			self.resume(step, Event(step.id, "timeout"))
		elif decision.action == EXECUTE:
			self.execute(step)

	def execute(self, step: Step) -> None:
		entry = self.entry(step.id)
		kind = catalog.get_kind(step.kind)
		entry["attempt"] = entry.get("attempt", 0) + 1
		entry.setdefault("started_at", self.stamp)
		attempt = entry["attempt"]
		started = self.clock()
		payload: Any = None
		if kind is None:
			outcome = Outcome.failed(f"unknown step kind {step.kind!r}", retryable=False)
		else:
			if kind.reloads_document and step.payload.get("reload_document"):
				self.base["doc"] = self.host.reload_document()
			context = self.context()
			context["step"] = {"id": step.id, "attempt": attempt}
			if "result" in entry:
				context["result"] = entry["result"]
			try:
				payload = (
					render_value(step.payload, context, "/payload")
					if kind.render_payload
					else dict(step.payload)
				)
			except RenderError as e:
				outcome = Outcome.failed(str(e), retryable=False)
			else:
				outcome = self.run_kind(kind, step, payload, context, attempt)
			if outcome.status == DONE and "result" in entry:
				outcome = _merge_result(outcome, entry["result"])
		duration = (self.clock() - started) * 1000
		self.record(step, attempt, payload, outcome, duration)
		self.apply_outcome(step, outcome)

	def run_kind(
		self, kind: catalog.StepKind, step: Step, payload: Any, context: Mapping, attempt: int
	) -> Outcome:
		try:
			if kind.evaluate is not None:
				return kind.evaluate(payload, context)
			problems = kind.rendered_problems(payload)
			if problems:
				# the same check for a real run and a dry run: this payload can never be carried out
				return Outcome.failed(
					"; ".join(
						f"{pointer.lstrip('/') or 'payload'}: {message}" for pointer, message in problems
					),
					retryable=False,
				)
			return self.host.execute(step, payload, context, attempt)
		except StepError as e:
			return Outcome.failed(str(e), retryable=e.retryable)
		except RenderError as e:
			return Outcome.failed(str(e), retryable=False)
		except Exception as e:  # a handler bug must fail the step, not the whole advance
			return Outcome.failed(f"{type(e).__name__}: {e}")

	def record(self, step: Step, attempt: int, payload: Any, outcome: Outcome, duration_ms: float) -> None:
		status = {DONE: "Success", FAILED: "Failed", WAITING: "Waiting"}[outcome.status]
		self.result.attempts.append(
			Attempt(
				step_id=step.id,
				kind=step.kind,
				attempt=attempt,
				status=status,
				started_at=self.now,
				input=payload,
				output=outcome.output,
				error=outcome.error,
				branch=outcome.branch,
				duration_ms=round(duration_ms, 3),
			)
		)

	def apply_outcome(self, step: Step, outcome: Outcome) -> None:
		entry = self.entry(step.id)
		if entry.get("due_at") or (entry.get("wait") or {}).get("until"):
			self.clear_timer(step.id)  # only steps that had a timer: no needless writes
		for key in ("due_at", "scheduled_for", "wait", "result"):
			entry.pop(key, None)
		if outcome.variables:
			self.variables.update(outcome.variables)
		if outcome.status == DONE:
			entry.update(
				status=STEP_DONE,
				output=_cap(outcome.output),
				branch=outcome.branch,
				error=None,
				finished_at=self.stamp,
			)
		elif outcome.status == WAITING:
			wait = {"type": outcome.wait_type, "since": self.stamp, **dict(outcome.wait_data)}
			if outcome.until is not None:
				wait["until"] = _ts(outcome.until)
				self.set_timer(step.id, outcome.until, "timeout")
			entry.update(status=WAITING_STATUS, wait=wait, output=_cap(outcome.output), error=None)
		else:
			self.fail(step, entry, outcome)

	def fail(self, step: Step, entry: dict[str, Any], outcome: Outcome) -> None:
		attempt = entry.get("attempt", 1)
		entry["error"] = outcome.error
		if outcome.retryable and has_attempts_left(step.retry, attempt):
			delay = backoff_seconds(
				step.retry, attempt, f"{self.seed}:{step.id}:{entry.get('attempt_group', 1)}"
			)
			due = self.now + dt.timedelta(seconds=delay)
			entry.update(status=SCHEDULED, due_at=_ts(due), scheduled_for="retry")
			self.set_timer(step.id, due, "retry")
			if self.result.attempts and self.result.attempts[-1].step_id == step.id:
				self.result.attempts[-1].retry_at = due
			return
		entry.update(status=STEP_FAILED, finished_at=self.stamp)
		if step.on_error == "continue":
			entry["continued"] = True
		elif step.on_error == "branch":
			entry["branch"] = ERROR_BRANCH
		else:
			entry["fatal"] = True
			self.has_fatal = True
			self.result.error = f"step '{step.id}' ({step.title}) failed: {outcome.error}"
			self.suspend_all()

	def suspend_all(self) -> None:
		"""A fatal failure stops the run: park every open step so a retry can restore it."""
		for step_id, entry in self.state.items():
			if entry.get("status") in (SCHEDULED, WAITING_STATUS, READY):
				# parked, not waiting: a sub-flow or a reply that ends now must not resume it
				keep = {k: entry.pop(k) for k in ("due_at", "scheduled_for", "wait") if k in entry}
				entry["suspended"] = {"status": entry["status"], **keep}
				entry["status"] = CANCELLED
				self.clear_timer(step_id)
				if self.changed is not None:
					self.changed.add(step_id)

	def resume(self, step: Step, event: Event) -> None:
		entry = self.entry(step.id)
		if entry.get("status") != WAITING_STATUS:
			raise EngineError(
				f"step '{step.id}' is not waiting (its status is {entry.get('status', PENDING)})"
			)
		wait = entry.get("wait") or {}
		if wait.get("type") == GATE:
			if event.type == "timeout":
				return
			entry.pop("wait", None)
			entry.update(status=READY, result=event.data if event.data is not None else {})
			self.clear_timer(step.id)
			self.result.attempts.append(
				Attempt(step.id, step.kind, entry.get("attempt", 0), "Resumed", self.now, input=event.data)
			)
			return
		kind = catalog.get_kind(step.kind)
		resume = kind.resume if kind else None
		context = self.context()
		outcome = resume(wait, event, context) if resume else _default_resume(kind, wait, event)
		for effect in outcome.effects:
			added = self.host.perform(step, effect, context)
			if isinstance(added, Mapping) and isinstance(outcome.output, Mapping):
				outcome = replace(outcome, output={**outcome.output, **added})
		self.result.attempts.append(
			Attempt(
				step.id,
				step.kind,
				entry.get("attempt", 1),
				{DONE: "Success", FAILED: "Failed", WAITING: "Waiting"}[outcome.status],
				self.now,
				input={"event": event.type, "data": event.data},
				output=outcome.output,
				error=outcome.error,
				branch=outcome.branch,
			)
		)
		if outcome.status == WAITING:
			# still waiting (e.g. an invalid answer with retries left): keep the timeout
			wait.update(dict(outcome.wait_data))
			entry["wait"] = wait
			if outcome.output is not None:
				entry["output"] = _cap(outcome.output)
			if outcome.variables:
				self.variables.update(outcome.variables)
			return
		self.apply_outcome(step, outcome)

	def wave(self) -> list[Decision]:
		"""What `plan` decides on the state as it is now. The first wave looks at every step;
		later ones only at the steps whose entries changed since and their successors (a step
		decided but not applied, after a fatal failure, is looked at again too)."""
		if self.changed is None:
			decisions = _scan(self.definition, self.state, {}, self.context(), self.now)
		else:
			decisions = _replan(self.definition, self.state, self.context(), self.now, self.changed)
		self.changed = {d.step_id for d in decisions}
		return decisions

	def loop(self, max_waves: int) -> AdvanceResult:
		for wave in range(max_waves):
			decisions = self.wave()
			self.result.decisions += len(decisions)
			if not decisions or self.fatal():
				break
			self.result.waves = wave + 1
			for decision in _in_due_order(decisions, self.state):
				if self.fatal():
					break
				self.apply(decision)
		else:
			if self.wave():
				self.result.error = f"stopped after {max_waves} waves without settling (max waves guard)"
				self.result.status = RUN_FAILED
				self.suspend_all()
				return self.result
		# the last wave decided nothing (or a step failed fatally): what `plan` says of the run
		self.result.status = _run_status(self.definition, self.state, {}, [])
		if self.result.status == RUN_FAILED and not self.result.error:
			self.result.error = "the run cannot continue: no step is waiting or scheduled"
		return self.result

	def fatal(self) -> bool:
		return self.has_fatal


def _in_due_order(decisions: list[Decision], state: Mapping[str, Mapping[str, Any]]) -> list[Decision]:
	"""A wave's decisions with its timers (delays, retries, wait timeouts) in the order they came
	due; every other decision keeps its place.

	Several timers of a run fall due in one wave when nothing fired them one by one (a cron that
	stalled, a site dormant for a day, a clock that jumped): they still fire in their order.
	Decisions of one wave never depend on each other, so only the order of their effects changes.
	"""
	due: dict[int, dt.datetime] = {}
	for position, decision in enumerate(decisions):
		at = None
		if decision.action == TIMEOUT:
			at = decision.at
		elif decision.action == EXECUTE and (state.get(decision.step_id) or {}).get("status") == SCHEDULED:
			at = parse_datetime(state[decision.step_id].get("due_at"))
		if at is not None:
			due[position] = at
	if len(due) < 2:
		return decisions
	slots = sorted(due)
	ordered = list(decisions)
	for slot, position in zip(slots, sorted(slots, key=lambda p: (due[p], p)), strict=True):
		ordered[slot] = decisions[position]
	return ordered


def _default_resume(kind: catalog.StepKind | None, wait: Mapping[str, Any], event: Event) -> Outcome:
	if event.type == "timeout":
		return (
			Outcome.done({"timed_out": True}, branch="timeout")
			if kind and "timeout" in kind.branches({})
			else Outcome.failed("timed out waiting", retryable=False)
		)
	data = event.data if isinstance(event.data, Mapping) else {"result": event.data}
	if wait.get("type") == SUB_FLOW:
		status = data.get("status")
		if status == RUN_COMPLETED:
			return Outcome.done(dict(data))
		return Outcome.failed(
			f"sub-flow run {data.get('run')} ended {status}: {data.get('error') or ''}".strip(),
			retryable=False,
		)
	return Outcome.done(dict(data))


def _merge_result(outcome: Outcome, result: Any) -> Outcome:
	"""A completed gate's result is the step's output, extended by what the kind itself returned."""
	if isinstance(result, Mapping) and isinstance(outcome.output, Mapping):
		output: Any = {**result, **outcome.output}
	elif outcome.output in (None, {}):
		output = result
	else:
		output = outcome.output
	return Outcome(**{**outcome.__dict__, "output": output})


def _cap(value: Any) -> Any:
	if value is None or isinstance(value, bool | int | float):
		return value
	plain = _flat_copy(value)
	if plain is not None:
		return plain
	text = json.dumps(value, default=str)
	if len(text) <= MAX_STORED_OUTPUT_CHARS:
		return json.loads(text)
	return {"truncated": True, "preview": text[:2000], "size": len(text)}


def _flat_copy(value: Any) -> dict[str, Any] | None:
	"""What `_cap`'s JSON round trip gives back for a flat dict of strings, small ints, booleans
	and None that surely fits (a copy), without the round trip; None for any other value."""
	if type(value) is not dict:
		return None
	# an upper bound of the JSON's length: a character escapes to at most 12 (a surrogate
	# pair), an int below 2**63 prints in at most 20, each item adds quotes, ": " and ", "
	size = 2
	for key, item in value.items():
		if type(key) is not str:
			return None
		kind = type(item)
		if kind is str:
			size += 12 * len(item) + 2
		elif item is None or kind is bool:
			size += 5
		elif kind is int and -(2**63) < item < 2**63:
			size += 20
		else:
			return None
		size += 12 * len(key) + 6
	return dict(value) if size <= MAX_STORED_OUTPUT_CHARS else None


def _ts(value: dt.datetime | None) -> str | None:
	return format_datetime(value) if value else None


def advance(
	definition: Definition,
	step_state: Mapping[str, Mapping[str, Any]],
	variables: Mapping[str, Any],
	context: Mapping[str, Any],
	now: dt.datetime,
	host: Host,
	*,
	events: tuple[Event, ...] | list[Event] = (),
	seed: str = "",
	max_waves: int | None = None,
	timer: Callable[[], float] | None = None,
) -> AdvanceResult:
	"""Apply `events`, then run waves until nothing more can happen at `now`.

	`context` holds `doc`, `trigger`, `contact`, `run` (the engine adds `variables`, `steps`
	and `now`). Returns the new state, the run status, one Attempt per step attempt (for
	the log) and the timers to add or clear. Raises EngineError for an event the state
	does not allow.
	"""
	run = _Run(definition, step_state, variables, context, now, host, seed, timer)
	for event in events:
		if not definition.has_step(event.step_id):
			raise EngineError(f"the flow has no step '{event.step_id}'")
		run.resume(definition.step(event.step_id), event)
	return run.loop(max_waves or default_max_waves(definition))


def retry_steps(
	definition: Definition, step_state: Mapping[str, Mapping[str, Any]], step_ids: list[str]
) -> dict[str, dict[str, Any]]:
	"""Reopen failed steps (a new attempt group) and restore steps a fatal failure parked.

	Returns the new step state; the caller advances the run afterwards.
	"""
	state: dict[str, dict[str, Any]] = json.loads(json.dumps(step_state or {}, default=str))
	if not step_ids:
		raise EngineError("choose at least one failed step to retry")
	for step_id in step_ids:
		if not definition.has_step(step_id):
			raise EngineError(f"the flow has no step '{step_id}'")
		entry = state.get(step_id) or {}
		if entry.get("status") != STEP_FAILED:
			raise EngineError(
				f"step '{step_id}' has not failed (its status is {entry.get('status', PENDING)})"
			)
	for step_id in step_ids:
		entry = state[step_id]
		for key in ("fatal", "continued", "branch", "error", "finished_at"):
			entry.pop(key, None)
		entry.update(status=READY, attempt=0, attempt_group=entry.get("attempt_group", 1) + 1)
	if not any(e.get("fatal") for e in state.values()):
		for entry in state.values():
			parked = entry.pop("suspended", None)
			if parked:
				entry.update(parked)
	return state


def restored_timers(step_state: Mapping[str, Mapping[str, Any]]) -> list[Timer]:
	"""Timers every open step needs (after a retry restored parked steps)."""
	timers = []
	for step_id, entry in step_state.items():
		if entry.get("status") == SCHEDULED and parse_datetime(entry.get("due_at")):
			timers.append(
				Timer(step_id, parse_datetime(entry["due_at"]), entry.get("scheduled_for") or "delay")
			)
		elif entry.get("status") == WAITING_STATUS and parse_datetime((entry.get("wait") or {}).get("until")):
			timers.append(Timer(step_id, parse_datetime(entry["wait"]["until"]), "timeout"))
	return timers


def cancel(step_state: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> dict[str, dict[str, Any]]:
	"""Every open step cancelled; the caller cancels the run's timers."""
	state: dict[str, dict[str, Any]] = json.loads(json.dumps(step_state or {}, default=str))
	for entry in state.values():
		if entry.get("status") not in TERMINAL:
			entry.update(status=CANCELLED, finished_at=_ts(now))
			entry.pop("wait", None)
	return state
