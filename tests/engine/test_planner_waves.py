"""The wave loop looks again only at the steps that changed: it must decide exactly what a full
rescan of every step decides, wave after wave, on any flow. The full rescan lives here only,
as the reference (the planner as it was before it kept track of what changed)."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections import Counter
from typing import Any

import pytest

from flow_automation.engine import planner
from flow_automation.engine.definition import ERROR_BRANCH, Definition
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.planner import Decision, EngineError, Event, advance, plan

NOW = dt.datetime(2024, 3, 1, 9, 0, 0)
CONTEXT = {"doc": {"name": "QTN-0001"}, "site": {"time_zone": "Europe/Berlin"}}


# --- the reference: a full rescan per wave -------------------------------------------------


def reference_plan(definition, state, context, now) -> planner.Plan:
	overlay: dict[str, str] = {}
	decisions: list[Decision] = []

	def status_of(step_id: str) -> str:
		return overlay.get(step_id) or planner.step_status(state, step_id)

	for step in definition.ordered_steps:
		status = status_of(step.id)
		entry = state.get(step.id) or {}
		if status in planner.TERMINAL:
			continue
		if status == planner.PENDING:
			release, reason = reference_release(definition, step, state, status_of)
			if release == "blocked":
				continue
			if release == planner.SKIP:
				overlay[step.id] = planner.SKIPPED
				decisions.append(Decision(step.id, planner.SKIP, reason=reason))
				continue
			decision = planner._held(definition, step, planner._start(step, context, now), context, now)
			decisions.append(decision)
			if decision.action in (planner.SCHEDULE, planner.WAIT):
				overlay[step.id] = (
					planner.SCHEDULED if decision.action == planner.SCHEDULE else planner.WAITING_STATUS
				)
		elif status == planner.SCHEDULED:
			due = planner.parse_datetime(entry.get("due_at"))
			if due is None or due <= now:
				decision = Decision(step.id, planner.EXECUTE, reason=entry.get("scheduled_for", "due"))
				decisions.append(planner._held(definition, step, decision, context, now))
		elif status == planner.READY:
			decision = Decision(step.id, planner.EXECUTE, reason="released")
			decisions.append(planner._held(definition, step, decision, context, now))
		elif status == planner.WAITING_STATUS:
			until = planner.parse_datetime((entry.get("wait") or {}).get("until"))
			if until is not None and until <= now:
				decisions.append(Decision(step.id, planner.TIMEOUT, at=until, reason="wait expired"))
	return planner.Plan(tuple(decisions), planner._run_status(definition, state, overlay, decisions))


def reference_release(definition, step, state, status_of) -> tuple[str, str]:
	if step.parent_id:
		parent_status = status_of(step.parent_id)
		if parent_status not in planner.TERMINAL:
			return "blocked", ""
		parent = state.get(step.parent_id) or {}
		if parent_status in (planner.SKIPPED, planner.CANCELLED):
			return planner.SKIP, f"parent '{step.parent_id}' did not run"
		taken = parent.get("branch")
		if parent_status == planner.STEP_FAILED and not parent.get("continued") and taken != ERROR_BRANCH:
			return planner.SKIP, f"parent '{step.parent_id}' failed"
		if step.branch is not None and step.branch != taken:
			return planner.SKIP, f"'{step.parent_id}' took branch {taken!r}, not {step.branch!r}"
		if step.branch is None and taken == ERROR_BRANCH:
			return planner.SKIP, f"'{step.parent_id}' failed and took its error branch"
	deps = [d for d in step.depends_on if d != step.parent_id and definition.has_step(d)]
	if any(status_of(d) not in planner.TERMINAL for d in deps):
		return "blocked", ""
	if deps:
		alive = [d for d in deps if planner._passes_on(state, d, status_of(d))]
		if not alive:
			return planner.SKIP, "none of " + ", ".join(f"'{d}'" for d in deps) + " completed"
	return "go", ""


class CheckedRun(planner._Run):
	"""The planner's own run, checking every wave against the reference's full rescan."""

	def __init__(self, *args: Any, **kwargs: Any):
		super().__init__(*args, **kwargs)
		self.waves_decided: list[list[Decision]] = []

	def wave(self) -> list[Decision]:
		expected = reference_plan(self.definition, self.state, self.context(), self.now)
		assert plan(self.definition, self.state, self.context(), self.now) == expected
		decisions = super().wave()
		assert decisions == list(expected.decisions)
		self.waves_decided.append(decisions)
		return decisions


class ReferenceRun(planner._Run):
	"""The wave loop as it was: a full rescan for every wave and for the run's status."""

	def __init__(self, *args: Any, **kwargs: Any):
		super().__init__(*args, **kwargs)
		self.waves_decided: list[list[Decision]] = []

	def loop(self, max_waves: int) -> planner.AdvanceResult:
		for wave in range(max_waves):
			current = self.rescan()
			self.result.decisions += len(current.decisions)
			if not current.decisions or self.fatal():
				break
			self.result.waves = wave + 1
			# timers that fell due together fire in their order (the planner's rule, not a cost)
			for decision in planner._in_due_order(list(current.decisions), self.state):
				if self.fatal():
					break
				self.apply(decision)
		else:
			if self.rescan().decisions:
				self.result.error = f"stopped after {max_waves} waves without settling (max waves guard)"
				self.result.status = planner.RUN_FAILED
				self.suspend_all()
				return self.result
		self.result.status = reference_plan(self.definition, self.state, self.context(), self.now).status
		if self.result.status == planner.RUN_FAILED and not self.result.error:
			self.result.error = "the run cannot continue: no step is waiting or scheduled"
		return self.result

	def rescan(self) -> planner.Plan:
		current = reference_plan(self.definition, self.state, self.context(), self.now)
		self.waves_decided.append(list(current.decisions))
		return current


# --- random flows ---------------------------------------------------------------------------

KINDS = ("wait", "condition", "switch", "set_variables", "notify", "webhook")
BRANCHES = {"condition": ("yes", "no"), "switch": ("on", "off", "default")}


def payload_for(kind: str, rng: random.Random) -> dict[str, Any]:
	if kind == "condition":
		return {"field": "variables.flag", "op": "==", "value": "on"}
	if kind == "switch":
		return {"value": "{{ variables.flag }}", "cases": ["on", "off"]}
	if kind == "set_variables":
		return {"variables": {"flag": rng.choice(["on", "off", "{{ doc.name }}"])}}
	if kind == "notify":
		return {"to": ["ops@example.com"], "subject": "About {{ variables.flag }}"}
	if kind == "webhook":
		return {"url": "https://example.com/{{ variables.flag }}", "body": {"n": "{{ doc.name }}"}}
	return {}


def random_flow(rng: random.Random, size: int) -> Definition:
	"""A random DAG of steps (now and then a dependency on a later step, a missing one or a
	cycle: shapes validation refuses, which the planner must still treat alike)."""
	steps: list[dict[str, Any]] = []
	for i in range(size):
		kind = rng.choice(KINDS)
		step: dict[str, Any] = {"id": f"s{i}", "kind": kind, "payload": payload_for(kind, rng)}
		earlier = [s["id"] for s in steps]
		if earlier and rng.random() < 0.85:
			if rng.random() < 0.5:
				parent = rng.choice(steps)
				step["parent_id"] = parent["id"]
				step["branch"] = rng.choice([None, None, *BRANCHES.get(parent["kind"], ()), ERROR_BRANCH])
				if rng.random() < 0.3:
					step["depends_on"] = rng.sample(earlier, k=min(len(earlier), rng.randint(1, 3)))
			else:
				step["depends_on"] = rng.sample(earlier, k=min(len(earlier), rng.randint(1, 3)))
		odd = rng.random()
		if odd < 0.04:
			step.setdefault("depends_on", []).append("ghost")
		elif odd < 0.08 and i + 1 < size:
			step.setdefault("depends_on", []).append(f"s{rng.randint(i + 1, size - 1)}")
		step["trigger"] = rng.choice(
			[
				*[{}] * 8,
				{"type": "after_delay", "minutes": 0},
				{"type": "after_delay", "minutes": 30},
				{"type": "on_date", "at": "2024-02-01 08:00:00"},
				{"type": "on_date", "at": "{{ doc.name }}"},
				{"type": "on_date", "at": "2024-03-02 08:00:00"},
				{"type": "manual"},
				{"type": "on_webhook"},
			]
		)
		step["on_error"] = rng.choice(["fail", "continue", "continue", "branch", "branch"])
		step["retry"] = {"max_attempts": rng.randint(1, 3), "backoff_seconds": rng.choice([0, 0, 600])}
		if kind == "notify" and rng.random() < 0.2:
			step["quiet_hours"] = {"start": "10:00", "end": "18:00"}
		steps.append(step)
	quiet_hours = {"start": "08:00", "end": "20:00"} if rng.random() < 0.3 else None
	return Definition.from_dict({"version": 1, "steps": steps, "quiet_hours": quiet_hours})


class RandomHost:
	"""What an execution returns depends only on the step, its attempt and the host's seed."""

	def __init__(self, seed: int):
		self.seed = seed

	def execute(self, step, payload, context, attempt):
		rng = random.Random(f"{self.seed}:{step.id}:{attempt}")
		roll = rng.random()
		if roll < 0.45:
			return Outcome.done({"sent": step.id, "attempt": attempt})
		if roll < 0.55:
			return Outcome.done({"items": [payload, 1.5, ("a", "b")], "at": context["now"]})
		if roll < 0.65:
			raise StepError("SMTP 451", retryable=rng.random() < 0.7)
		if roll < 0.75:
			return Outcome.failed("refused", retryable=rng.random() < 0.5)
		if roll < 0.8:
			raise RuntimeError("a handler bug")
		until = context["now"] + dt.timedelta(minutes=rng.choice([-5, 0, 45]))
		return Outcome.waiting("reply", until=until if rng.random() < 0.7 else None, asked=step.id)

	def reload_document(self):
		return {"name": "QTN-0001"}

	def perform(self, step, effect, context):
		return {"performed": True}


def events_for(state: dict[str, Any], rng: random.Random) -> list[Event]:
	"""Answers for some of the steps that wait: a gate completed, a reply, a timeout."""
	events = []
	for step_id, entry in state.items():
		if entry.get("status") != planner.WAITING_STATUS or rng.random() < 0.3:
			continue
		kind = rng.choice(["complete", "reply", "timeout"])
		events.append(Event(step_id, kind, {"answer": rng.choice(["yes", "no"])}))
	return events


def advance_with(run_class, monkeypatch, *args: Any, **kwargs: Any):
	runs = []

	class Recorded(run_class):
		def __init__(self, *a: Any, **kw: Any):
			super().__init__(*a, **kw)
			runs.append(self)

	monkeypatch.setattr(planner, "_Run", Recorded)
	try:
		result = advance(*args, **kwargs)
	finally:
		monkeypatch.undo()
	return result, runs[0].waves_decided


def as_compared(result: planner.AdvanceResult) -> dict[str, Any]:
	return {
		"status": result.status,
		"error": result.error,
		# the order of the entries too: it is the order the state is stored in
		"step_state": json.dumps(result.step_state, default=str),
		"variables": json.dumps(result.variables, default=str),
		"attempts": result.attempts,
		"timers": result.timers,
		"cleared_timers": result.cleared_timers,
		"waves": result.waves,
		"decisions": result.decisions,
	}


@pytest.mark.parametrize("seed", range(250))
def test_waves_decide_what_a_full_rescan_decides_on_random_flows(seed, monkeypatch):
	rng = random.Random(seed)
	definition = random_flow(rng, rng.randint(1, 30))
	host = RandomHost(seed)
	state: dict[str, Any] = {}
	variables: dict[str, Any] = {"flag": "on"}
	later = (NOW, NOW + dt.timedelta(hours=1), NOW + dt.timedelta(days=2), NOW + dt.timedelta(days=3))
	for round_, now in enumerate(later):
		events = events_for(state, rng) if round_ else []
		if round_ == 2 and any(e.get("status") == planner.STEP_FAILED for e in state.values()):
			failed = [k for k, e in state.items() if e.get("status") == planner.STEP_FAILED]
			state = planner.retry_steps(definition, state, failed)
		args = (definition, state, variables, CONTEXT, now, host)
		kwargs = {"events": events, "seed": f"run-{seed}", "max_waves": rng.choice([None, None, None, 3])}
		try:
			expected, expected_waves = advance_with(ReferenceRun, monkeypatch, *args, **kwargs)
		except EngineError as e:  # an answer for a step that an earlier answer's failure cancelled
			with pytest.raises(EngineError, match=re.escape(str(e))):
				advance_with(CheckedRun, monkeypatch, *args, **kwargs)
			continue
		result, waves = advance_with(CheckedRun, monkeypatch, *args, **kwargs)
		assert waves == expected_waves
		assert as_compared(result) == as_compared(expected)
		state, variables = result.step_state, result.variables


def test_random_flows_reach_every_kind_of_decision(monkeypatch):
	# the property above means little unless the random flows exercise every path
	actions: Counter[str] = Counter()
	statuses: Counter[str] = Counter()
	for seed in range(250):
		rng = random.Random(seed)
		definition = random_flow(rng, rng.randint(1, 30))
		_, waves = advance_with(
			CheckedRun, monkeypatch, definition, {}, {"flag": "on"}, CONTEXT, NOW, RandomHost(seed)
		)
		actions.update(d.action for wave in waves for d in wave)
		result = advance(definition, {}, {"flag": "on"}, CONTEXT, NOW, RandomHost(seed))
		statuses[result.status] += 1
	assert set(actions) == {
		planner.EXECUTE,
		planner.SCHEDULE,
		planner.WAIT,
		planner.SKIP,
		planner.TIMEOUT,
		planner.FAIL,
	}
	assert {planner.RUN_COMPLETED, planner.RUN_WAITING, planner.RUN_FAILED} <= set(statuses)


# --- the cost: a wave looks again only at what changed ----------------------------------------


def branches_and_join(branches: int, length: int) -> Definition:
	steps: list[dict[str, Any]] = [{"id": "start", "kind": "wait"}]
	last = []
	for b in range(branches):
		previous = "start"
		for i in range(length):
			steps.append({"id": f"b{b}_{i}", "kind": "wait", "depends_on": [previous]})
			previous = f"b{b}_{i}"
		last.append(previous)
	steps.append({"id": "join", "kind": "wait", "depends_on": last})
	return Definition.from_dict({"version": 1, "steps": steps})


@pytest.mark.parametrize("length", [5, 50, 200])
def test_an_advance_looks_at_each_step_a_bounded_number_of_times(length, monkeypatch):
	looked_at: Counter[str] = Counter()
	decide = planner._decide

	def counted(definition, step, *args):
		looked_at[step.id] += 1
		return decide(definition, step, *args)

	monkeypatch.setattr(planner, "_decide", counted)
	definition = branches_and_join(3, length)
	result = advance(definition, {}, {}, CONTEXT, NOW, RandomHost(0))
	assert result.status == planner.RUN_COMPLETED
	assert result.decisions == len(definition.steps)
	# once in the first wave, once when its predecessor finished: never once per wave
	assert sum(looked_at.values()) == 2 * len(definition.steps) - 1
	assert max(looked_at.values()) == 2  # the join too: its branches finish in the same wave


def test_a_skip_reaches_every_step_after_it_in_the_same_wave(monkeypatch):
	definition = Definition.from_dict(
		{
			"version": 1,
			"steps": [
				{
					"id": "check",
					"kind": "condition",
					"payload": {"field": "doc.name", "op": "==", "value": "x"},
				},
				{"id": "yes", "kind": "wait", "parent_id": "check", "branch": "yes"},
				{"id": "after_yes", "kind": "wait", "depends_on": ["yes"]},
				{"id": "child", "kind": "wait", "parent_id": "after_yes"},
				{"id": "no", "kind": "wait", "parent_id": "check", "branch": "no"},
			],
		}
	)
	result, waves = advance_with(CheckedRun, monkeypatch, definition, {}, {}, CONTEXT, NOW, RandomHost(0))
	assert result.status == planner.RUN_COMPLETED
	assert [[(d.step_id, d.action) for d in wave] for wave in waves] == [
		[("check", "execute")],
		[("yes", "skip"), ("after_yes", "skip"), ("child", "skip"), ("no", "execute")],
		[],
	]


# --- the definition's graph -------------------------------------------------------------------


def test_a_definition_knows_each_steps_position_successors_and_dependencies():
	definition = Definition.from_dict(
		{
			"version": 1,
			"steps": [
				{"id": "join", "kind": "wait", "depends_on": ["a", "b", "ghost", "a"]},
				{"id": "a", "kind": "wait"},
				{"id": "b", "kind": "wait", "parent_id": "a", "depends_on": ["a"]},
				{"id": "orphan", "kind": "wait", "parent_id": "ghost"},
			],
		}
	)
	assert [s.id for s in definition.ordered_steps] == ["a", "b", "orphan", "join"]
	assert [definition.position(s.id) for s in definition.ordered_steps] == [0, 1, 2, 3]
	assert definition.successors("a") == ("b", "join")  # once, though join names it twice
	assert definition.successors("b") == ("join",)
	assert definition.successors("join") == ()
	assert definition.successors("ghost") == ()  # only the flow's own steps
	assert definition.dependencies("join") == ("a", "b", "a")
	assert definition.dependencies("b") == ()  # its parent is checked as the parent
	assert definition.dependencies("a") == ()


# --- stored outputs -----------------------------------------------------------------------------


def reference_cap(value: Any) -> Any:
	if value is None or isinstance(value, bool | int | float):
		return value
	text = json.dumps(value, default=str)
	if len(text) <= planner.MAX_STORED_OUTPUT_CHARS:
		return json.loads(text)
	return {"truncated": True, "preview": text[:2000], "size": len(text)}


def typed(value: Any) -> Any:
	"""The value with every type spelled out, so that 1 and True, "1" and 1 differ."""
	if isinstance(value, dict):
		return {(type(k).__name__, k): typed(v) for k, v in value.items()}
	if isinstance(value, list | tuple):
		return [type(value).__name__, *map(typed, value)]
	return (type(value).__name__, value)


LIMIT = planner.MAX_STORED_OUTPUT_CHARS
OUTPUTS = [
	{},
	{"ok": True, "none": None, "n": 3, "text": "hi"},
	{"text": "é" * 100, "emoji": "\U0001f600" * 50},
	{"a": "x" * (LIMIT - 9)},  # exactly at the limit once quoted
	{"a": "x" * (LIMIT - 8)},  # one over: truncated
	{"a": "\U0001f600" * (LIMIT // 12)},  # escapes to twelve characters each
	{"a": "\U0001f600" * (LIMIT // 12 + 1)},
	{"big": 2**63, "small": -(2**63)},
	{"big": 2**63 - 1, "small": -(2**63) + 1},
	{1: "int key", True: "bool key", None: "none key"},
	{"f": 1.5, "nan": float("inf")},
	{"nested": {"a": [1, 2]}, "t": ("a", "b")},
	{"when": dt.datetime(2024, 3, 1)},
	{"quote": 'say "hi"\n\\', "lone": "\ud800"},
	[1, 2],
	"text",
]


@pytest.mark.parametrize("value", OUTPUTS, ids=range(len(OUTPUTS)))
def test_stored_outputs_are_what_a_json_round_trip_gives(value):
	stored = planner._cap(value)
	assert typed(stored) == typed(reference_cap(value))
	if isinstance(value, dict):
		assert stored is not value


def test_random_flat_outputs_are_what_a_json_round_trip_gives():
	rng = random.Random(7)
	alphabet = ["a", "é", '"', "\\", "\n", "\U0001f600", "\x00"]
	for _ in range(2000):
		value: dict[Any, Any] = {}
		for _ in range(rng.randint(0, 6)):
			key = "".join(rng.choices(alphabet, k=rng.randint(0, 5)))
			value[key] = rng.choice(
				[
					None,
					True,
					False,
					rng.randint(-(2**64), 2**64),
					"".join(rng.choices(alphabet, k=rng.choice([0, 3, 2000, 9000]))),
				]
			)
		assert typed(planner._cap(value)) == typed(reference_cap(value))
