"""The planner's wave loop as an operator sees it: which steps ran, in which order, when the
rest is due, what the run status is, and what each attempt recorded."""

from __future__ import annotations

import copy
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from flow_automation.engine import planner
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.planner import EngineError, Event, advance, plan
from flow_automation.engine.state import waits_for_child
from flow_automation.engine.validation import parse_definition

NOW = dt.datetime(2024, 3, 1, 9, 0, 0)


class Host:
	"""Records every call; `script[step_id]` decides what an execution returns (or raises)."""

	def __init__(
		self,
		script: Mapping[str, Callable[[Any, Mapping, int], Outcome]] | None = None,
		doc: Mapping[str, Any] | None = None,
	):
		self.script = dict(script or {})
		self.doc = doc
		self.calls: list[tuple[str, Any, int]] = []
		self.reloads = 0
		self.effects: list[tuple[str, Any]] = []

	def execute(self, step, payload, context, attempt):
		self.calls.append((step.id, payload, attempt))
		handler = self.script.get(step.id)
		if handler is None:
			return Outcome.done({"sent": step.id})
		return handler(payload, context, attempt)

	def reload_document(self):
		self.reloads += 1
		return self.doc

	def perform(self, step, effect, context):
		self.effects.append((step.id, effect))

	@property
	def executed(self) -> list[str]:
		return [step_id for step_id, _, _ in self.calls]


def raise_error(message: str, retryable: bool = True):
	def handler(payload, context, attempt):
		raise StepError(message, retryable=retryable)

	return handler


def notify(step_id: str, **extra: Any) -> dict[str, Any]:
	"""A host-executed step (an email) with sensible defaults."""
	payload = extra.pop("payload", None) or {"to": ["ops@example.com"], "subject": f"About {step_id}"}
	return {"id": step_id, "kind": "notify", "payload": payload, **extra}


def flow(*steps: dict[str, Any], variables: Mapping[str, Any] | None = None):
	return parse_definition({"version": 1, "variables": dict(variables or {}), "steps": list(steps)})


def run(definition, host, state=None, variables=None, context=None, now=NOW, **kw):
	return advance(
		definition,
		state or {},
		variables if variables is not None else dict(definition.variables),
		context if context is not None else {"doc": {"name": "QTN-0001"}},
		now,
		host,
		**kw,
	)


def statuses(result) -> dict[str, str]:
	return {step_id: entry["status"] for step_id, entry in result.step_state.items()}


# --- sequences and parallel branches -----------------------------------------------------


def test_instant_chain_runs_in_one_advance_in_dependency_order():
	# declared out of order: the planner must still follow depends_on
	definition = flow(
		notify("third", depends_on=["second"]),
		notify("first"),
		notify("second", depends_on=["first"]),
	)
	host = Host()
	result = run(definition, host)
	assert host.executed == ["first", "second", "third"]
	assert result.status == planner.RUN_COMPLETED
	assert statuses(result) == {"first": "done", "second": "done", "third": "done"}
	assert result.timers == []


def test_parallel_roots_run_in_the_same_advance_and_the_join_after_both():
	definition = flow(notify("a"), notify("b"), notify("join", depends_on=["a", "b"]))
	host = Host()
	result = run(definition, host)
	assert set(host.executed[:2]) == {"a", "b"}
	assert host.executed[2] == "join"
	assert result.status == planner.RUN_COMPLETED


def test_join_waits_for_a_delayed_branch_then_finishes_at_the_due_time():
	definition = flow(
		notify("a"),
		notify("b", trigger={"type": "after_delay", "hours": 2}),
		notify("join", depends_on=["a", "b"]),
	)
	host = Host()
	first = run(definition, host)
	assert host.executed == ["a"]
	assert first.status == planner.RUN_WAITING
	assert first.step_state["b"]["status"] == "scheduled"
	assert planner.step_status(first.step_state, "join") == "pending"
	assert first.timers == [planner.Timer("b", NOW + dt.timedelta(hours=2), "delay")]
	assert first.next_due == NOW + dt.timedelta(hours=2)

	# nothing happens before the due time
	early = run(definition, host, state=first.step_state, now=NOW + dt.timedelta(hours=1))
	assert host.executed == ["a"]
	assert early.status == planner.RUN_WAITING

	second = run(definition, host, state=first.step_state, now=first.next_due)
	assert host.executed == ["a", "b", "join"]
	assert second.status == planner.RUN_COMPLETED
	assert first.next_due is not None
	assert second.next_due is None


# --- condition and switch branches -------------------------------------------------------


def branching_flow(field_value_op: dict[str, Any]):
	"""check → yes_1 → yes_2, check → no_1 → no_2, join after the last step of each branch."""
	return flow(
		{"id": "check", "kind": "condition", "payload": field_value_op},
		notify("yes_1", parent_id="check", branch="yes"),
		notify("yes_2", depends_on=["yes_1"]),
		notify("no_1", parent_id="check", branch="no"),
		notify("no_2", depends_on=["no_1"]),
		notify("join", depends_on=["yes_2", "no_2"]),
	)


def test_condition_runs_only_the_taken_branch_and_skips_the_other_transitively():
	definition = branching_flow({"field": "doc.status", "op": "==", "value": "Open"})
	host = Host()
	result = run(definition, host, context={"doc": {"status": "Open"}})
	assert host.executed == ["yes_1", "yes_2", "join"]
	assert result.step_state["check"]["branch"] == "yes"
	assert result.step_state["no_1"]["status"] == "skipped"
	assert "no" in result.step_state["no_1"]["reason"]
	# the chain hanging off the skipped step is skipped too, with a reason
	assert result.step_state["no_2"]["status"] == "skipped"
	assert result.step_state["no_2"]["reason"]
	# the join does not hang on the skipped branch
	assert result.step_state["join"]["status"] == "done"
	assert result.status == planner.RUN_COMPLETED


def test_condition_no_branch_runs_the_other_side():
	definition = branching_flow({"field": "doc.status", "op": "==", "value": "Open"})
	host = Host()
	result = run(definition, host, context={"doc": {"status": "Closed"}})
	assert host.executed == ["no_1", "no_2", "join"]
	assert statuses(result)["yes_1"] == statuses(result)["yes_2"] == "skipped"
	assert result.status == planner.RUN_COMPLETED


def test_step_whose_dependencies_are_all_skipped_is_skipped():
	definition = flow(
		{"id": "check", "kind": "condition", "payload": {"field": "doc.vip", "op": "not_empty"}},
		notify("vip_a", parent_id="check", branch="yes"),
		notify("vip_b", parent_id="check", branch="yes"),
		notify("after_both", depends_on=["vip_a", "vip_b"]),
		notify("after_that", depends_on=["after_both"]),
	)
	host = Host()
	result = run(definition, host, context={"doc": {}})
	assert host.executed == []
	assert statuses(result) == {
		"check": "done",
		"vip_a": "skipped",
		"vip_b": "skipped",
		"after_both": "skipped",
		"after_that": "skipped",
	}
	assert result.status == planner.RUN_COMPLETED


@pytest.mark.parametrize(
	("priority", "expected"),
	[("High", "urgent"), ("Low", "relaxed"), ("Medium", "fallback"), ("", "fallback")],
)
def test_switch_runs_the_matching_case_or_default(priority, expected):
	definition = flow(
		{
			"id": "route",
			"kind": "switch",
			"payload": {"value": "{{ doc.priority }}", "cases": ["High", "Low"]},
		},
		notify("urgent", parent_id="route", branch="High"),
		notify("relaxed", parent_id="route", branch="Low"),
		notify("fallback", parent_id="route", branch="default"),
	)
	host = Host()
	result = run(definition, host, context={"doc": {"priority": priority}})
	assert host.executed == [expected]
	assert {s for s, st in statuses(result).items() if st == "skipped"} == {
		"urgent",
		"relaxed",
		"fallback",
	} - {expected}


def test_switch_compares_numeric_cases_as_strings():
	definition = flow(
		{"id": "route", "kind": "switch", "payload": {"value": "{{ doc.qty }}", "cases": [1, 2]}},
		notify("one", parent_id="route", branch=1),
		notify("two", parent_id="route", branch="2"),
		notify("other", parent_id="route", branch="default"),
	)
	host = Host()
	result = run(definition, host, context={"doc": {"qty": 2}})
	assert host.executed == ["two"]
	assert result.step_state["route"]["branch"] == "2"
	host = Host()
	run(definition, host, context={"doc": {"qty": 1}})
	assert host.executed == ["one"]


# --- gates: manual and on_webhook ---------------------------------------------------------


@pytest.mark.parametrize("gate_trigger", ["manual", "on_webhook"])
def test_gate_waits_until_completed_and_its_result_becomes_the_output(gate_trigger):
	definition = flow(
		{"id": "gate", "kind": "wait", "trigger": {"type": gate_trigger}},
		notify(
			"after",
			depends_on=["gate"],
			payload={"to": ["ops@example.com"], "subject": "x={{ steps.gate.output.x }}"},
		),
	)
	host = Host()
	first = run(definition, host)
	assert first.status == planner.RUN_WAITING
	assert first.step_state["gate"]["status"] == "waiting"
	assert first.step_state["gate"]["wait"]["type"] == "gate"
	assert host.executed == []
	assert first.next_due is None

	second = run(definition, host, state=first.step_state, events=[Event("gate", "complete", {"x": 1})])
	assert second.step_state["gate"]["status"] == "done"
	assert second.step_state["gate"]["output"] == {"x": 1}
	assert host.calls[0][1]["subject"] == "x=1"
	assert second.status == planner.RUN_COMPLETED


def test_gate_on_a_host_step_executes_the_kind_when_released():
	definition = flow(notify("approve_and_send", trigger={"type": "manual"}))
	host = Host()
	first = run(definition, host)
	assert host.executed == []
	second = run(
		definition,
		host,
		state=first.step_state,
		events=[Event("approve_and_send", "complete", {"by": "boss"})],
	)
	assert host.executed == ["approve_and_send"]
	output = second.step_state["approve_and_send"]["output"]
	assert output["by"] == "boss"
	assert output["sent"] == "approve_and_send"


def test_completing_a_step_that_is_not_waiting_is_refused():
	definition = flow(notify("a"), {"id": "gate", "kind": "wait", "trigger": {"type": "manual"}})
	first = run(definition, Host())
	assert first.step_state["a"]["status"] == "done"
	with pytest.raises(EngineError, match="not waiting"):
		run(definition, Host(), state=first.step_state, events=[Event("a", "complete", {})])
	with pytest.raises(EngineError, match="no step 'ghost'"):
		run(definition, Host(), state=first.step_state, events=[Event("ghost", "complete", {})])
	# completing it twice: the second completion is refused
	done = run(definition, Host(), state=first.step_state, events=[Event("gate", "complete", {})])
	with pytest.raises(EngineError):
		run(definition, Host(), state=done.step_state, events=[Event("gate", "complete", {})])


# --- delays and dates ---------------------------------------------------------------------


def test_on_date_in_the_past_runs_now_and_in_the_future_is_scheduled():
	definition = flow(notify("remind", trigger={"type": "on_date", "at": "{{ doc.due_date }}"}))
	host = Host()
	past = run(definition, host, context={"doc": {"due_date": "2024-02-01"}})
	assert host.executed == ["remind"]
	assert past.status == planner.RUN_COMPLETED

	host = Host()
	future = run(definition, host, context={"doc": {"due_date": "2024-03-10 08:30:00"}})
	assert host.executed == []
	assert future.status == planner.RUN_WAITING
	assert future.timers == [planner.Timer("remind", dt.datetime(2024, 3, 10, 8, 30), "date")]
	assert future.next_due == dt.datetime(2024, 3, 10, 8, 30)


def test_on_date_that_is_not_a_date_fails_the_step_naming_trigger_at():
	definition = flow(notify("remind", trigger={"type": "on_date", "at": "{{ doc.due_date }}"}))
	host = Host()
	result = run(definition, host, context={"doc": {"due_date": "next tuesday"}})
	assert host.executed == []
	assert result.status == planner.RUN_FAILED
	assert result.step_state["remind"]["status"] == "failed"
	assert "trigger.at" in result.step_state["remind"]["error"]
	assert "remind" in result.error
	assert "trigger.at" in result.error


def test_after_delay_adds_days_hours_and_minutes():
	definition = flow(
		{
			"id": "pause",
			"kind": "wait",
			"trigger": {"type": "after_delay", "days": 1, "hours": 2, "minutes": 30},
		}
	)
	result = run(definition, Host())
	assert result.next_due == NOW + dt.timedelta(days=1, hours=2, minutes=30)
	done = run(definition, Host(), state=result.step_state, now=result.next_due)
	assert done.status == planner.RUN_COMPLETED


# --- retries and on_error ----------------------------------------------------------------


def retrying_step(**extra: Any) -> dict[str, Any]:
	return notify("send", retry={"max_attempts": 3, "backoff_seconds": 60, **extra.pop("retry", {})}, **extra)


def test_failed_step_is_rescheduled_with_equal_jitter_doubling_per_attempt():
	definition = flow(retrying_step())
	host = Host({"send": raise_error("SMTP down")})

	first = run(definition, host, seed="run-1")
	entry = first.step_state["send"]
	assert entry["status"] == "scheduled"
	assert entry["scheduled_for"] == "retry"
	assert entry["error"] == "SMTP down"
	assert first.status == planner.RUN_WAITING
	[timer] = first.timers
	assert timer.step_id == "send"
	assert timer.purpose == "retry"
	assert 30 <= (timer.at - NOW).total_seconds() <= 60

	second = run(definition, host, state=first.step_state, now=timer.at, seed="run-1")
	[timer2] = second.timers
	assert 60 <= (timer2.at - timer.at).total_seconds() <= 120
	assert [attempt for _, _, attempt in host.calls] == [1, 2]

	third = run(definition, host, state=second.step_state, now=timer2.at, seed="run-1")
	assert [attempt for _, _, attempt in host.calls] == [1, 2, 3]
	assert third.step_state["send"]["status"] == "failed"
	assert third.status == planner.RUN_FAILED
	assert "send" in third.error
	assert "SMTP down" in third.error
	assert third.timers == []


def test_timers_that_fall_due_together_fire_in_the_order_they_were_due():
	# a dormant site, a stalled cron or a clock that jumped: one advance, a day late
	definition = flow(
		notify("late", trigger={"type": "after_delay", "hours": 20}),
		notify("mid", trigger={"type": "after_delay", "hours": 5}),
		notify("instant"),
		retrying_step(retry={"max_attempts": 3, "backoff_seconds": 600}),
		notify("early", trigger={"type": "after_delay", "hours": 1}),
	)
	host = Host(
		{
			"send": lambda payload, context, attempt: Outcome.failed("down")
			if attempt == 1
			else Outcome.done({})
		}
	)
	first = run(definition, host)
	assert host.executed == ["instant", "send"]
	host.calls.clear()
	later = run(definition, host, state=first.step_state, now=NOW + dt.timedelta(hours=26))
	# the retry (due after 300-600 s) first, then the delays by their due times; not definition order
	assert host.executed == ["send", "early", "mid", "late"]
	assert later.status == planner.RUN_COMPLETED


def test_retry_backoff_is_capped_by_max_backoff_seconds():
	definition = flow(retrying_step(retry={"max_backoff_seconds": 70, "max_attempts": 5}))
	host = Host({"send": raise_error("down")})
	result = run(definition, host)
	now = NOW
	for _ in range(3):
		[timer] = result.timers
		assert (timer.at - now).total_seconds() <= 70
		now = timer.at
		result = run(definition, host, state=result.step_state, now=now)
	# attempts 2 and 3 would be 120 s and 240 s uncapped: capped at 70 → between 35 and 70
	[timer] = result.timers
	assert 35 <= (timer.at - now).total_seconds() <= 70


def test_retry_delay_is_deterministic_per_seed_and_differs_between_seeds():
	definition = flow(retrying_step())

	def due(seed: str) -> dt.datetime:
		return run(definition, Host({"send": raise_error("down")}), seed=seed).timers[0].at

	assert due("run-1") == due("run-1")
	assert len({due(f"run-{i}") for i in range(5)}) > 1


def test_non_retryable_error_skips_the_remaining_attempts():
	definition = flow(retrying_step())
	host = Host({"send": raise_error("invalid address", retryable=False)})
	result = run(definition, host)
	assert host.executed == ["send"]
	assert result.step_state["send"]["status"] == "failed"
	assert result.status == planner.RUN_FAILED
	assert result.timers == []


def test_failed_outcome_returned_by_the_host_is_retried_like_an_error():
	definition = flow(retrying_step())
	host = Host({"send": lambda payload, context, attempt: Outcome.failed("HTTP 503")})
	result = run(definition, host)
	assert result.step_state["send"]["status"] == "scheduled"
	assert result.step_state["send"]["error"] == "HTTP 503"


def test_on_error_fail_fails_the_run_and_parks_open_steps_as_cancelled():
	definition = flow(
		{"id": "later", "kind": "wait", "trigger": {"type": "after_delay", "hours": 1}},
		{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}},
		notify("send", depends_on=["gate"], trigger={"type": "on_prev_complete"}),
		notify("boom"),
		notify("after_boom", depends_on=["boom"]),
	)
	host = Host({"boom": raise_error("mailbox full", retryable=False)})
	result = run(definition, host)
	assert result.status == planner.RUN_FAILED
	assert "boom" in result.error
	assert "mailbox full" in result.error
	assert result.step_state["boom"]["status"] == "failed"
	assert result.step_state["later"]["status"] == "cancelled"
	assert result.step_state["gate"]["status"] == "cancelled"
	assert "after_boom" not in host.executed
	assert set(result.cleared_timers) >= {"later"}


def test_on_error_fail_fails_the_run_even_when_a_parallel_root_has_not_run_yet():
	definition = flow(notify("boom"), notify("other_root"))
	host = Host({"boom": raise_error("mailbox full", retryable=False)})
	result = run(definition, host)
	assert result.status == planner.RUN_FAILED
	assert "boom" in result.error
	# advancing the failed run again does not bring it back to life
	again = run(definition, host, state=result.step_state, now=NOW + dt.timedelta(minutes=1))
	assert again.status == planner.RUN_FAILED


def test_on_error_continue_marks_the_step_failed_and_dependents_still_run():
	definition = flow(notify("flaky", on_error="continue"), notify("next", depends_on=["flaky"]))
	host = Host({"flaky": raise_error("timeout", retryable=False)})
	result = run(definition, host)
	assert result.step_state["flaky"]["status"] == "failed"
	assert result.step_state["flaky"]["continued"] is True
	assert result.step_state["flaky"]["error"] == "timeout"
	assert host.executed == ["flaky", "next"]
	assert result.status == planner.RUN_COMPLETED


def test_on_error_branch_runs_only_the_error_children():
	definition = flow(
		notify("call", on_error="branch", retry={"max_attempts": 2, "backoff_seconds": 10}),
		notify("alert", parent_id="call", branch="error"),
		notify("child", parent_id="call"),
		notify("dependent", depends_on=["call"]),
	)
	host = Host({"call": raise_error("HTTP 500")})
	first = run(definition, host)
	assert first.step_state["call"]["status"] == "scheduled"
	assert host.executed == ["call"]
	second = run(definition, host, state=first.step_state, now=first.next_due)
	assert host.executed == ["call", "call", "alert"]
	assert second.step_state["call"]["status"] == "failed"
	assert second.step_state["call"]["branch"] == "error"
	assert second.step_state["child"]["status"] == "skipped"
	assert second.step_state["dependent"]["status"] == "skipped"
	assert second.status == planner.RUN_COMPLETED


def test_error_branch_children_are_skipped_when_the_step_succeeds():
	definition = flow(
		notify("call", on_error="branch"),
		notify("alert", parent_id="call", branch="error"),
		notify("child", parent_id="call"),
	)
	host = Host()
	result = run(definition, host)
	assert host.executed == ["call", "child"]
	assert result.step_state["alert"]["status"] == "skipped"


# --- manual retry and cancel --------------------------------------------------------------


def test_retry_steps_reopens_a_failed_step_and_restores_parked_steps():
	definition = flow(
		{"id": "later", "kind": "wait", "trigger": {"type": "after_delay", "hours": 1}},
		{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}},
		notify("boom"),
		notify("after_boom", depends_on=["boom"]),
	)
	failing = Host({"boom": raise_error("down", retryable=False)})
	failed = run(definition, failing)
	assert failed.status == planner.RUN_FAILED
	assert failed.step_state["later"]["status"] == "cancelled"

	reopened = planner.retry_steps(definition, failed.step_state, ["boom"])
	assert reopened["boom"]["status"] == "ready"
	assert reopened["boom"]["attempt"] == 0
	assert reopened["boom"]["attempt_group"] == failed.step_state["boom"]["attempt_group"] + 1
	assert "error" not in reopened["boom"]
	assert reopened["later"]["status"] == "scheduled"
	assert reopened["gate"]["status"] == "waiting"
	assert planner.restored_timers(reopened) == [planner.Timer("later", NOW + dt.timedelta(hours=1), "delay")]
	# the input state is not modified
	assert failed.step_state["boom"]["status"] == "failed"

	host = Host()
	resumed = run(definition, host, state=reopened, now=NOW + dt.timedelta(minutes=5))
	assert host.calls[0][0] == "boom"
	assert host.calls[0][2] == 1  # the attempt counter starts again
	assert host.executed == ["boom", "after_boom"]
	assert resumed.status == planner.RUN_WAITING
	done = run(
		definition,
		host,
		state=resumed.step_state,
		now=NOW + dt.timedelta(hours=1),
		events=[Event("gate", "complete", {})],
	)
	assert done.status == planner.RUN_COMPLETED


def test_a_fatal_failure_parks_a_sub_flow_wait_so_the_child_cannot_resume_it():
	definition = flow(
		{"id": "child", "kind": "start_flow", "payload": {"template": "Child", "wait": True}},
		notify("boom"),
	)
	host = Host(
		{
			"child": lambda payload, context, attempt: Outcome.waiting(planner.SUB_FLOW, run="RUN-2"),
			"boom": raise_error("down", retryable=False),
		}
	)
	failed = run(definition, host)
	assert failed.status == planner.RUN_FAILED
	parked = failed.step_state["child"]
	assert parked["status"] == "cancelled"
	assert "wait" not in parked  # nothing left that says "waiting for RUN-2"
	assert not waits_for_child(failed.step_state, "child", "RUN-2")
	with pytest.raises(EngineError, match="is not waiting"):
		run(definition, Host(), state=failed.step_state, events=[Event("child", "complete", {})])

	# a retry of the failed step brings the wait back
	reopened = planner.retry_steps(definition, failed.step_state, ["boom"])
	assert waits_for_child(reopened, "child", "RUN-2")


def test_retry_steps_refuses_steps_that_have_not_failed():
	definition = flow(notify("a"), notify("b", depends_on=["a"]))
	state = run(definition, Host()).step_state
	with pytest.raises(EngineError, match="has not failed"):
		planner.retry_steps(definition, state, ["a"])
	with pytest.raises(EngineError):
		planner.retry_steps(definition, state, ["nope"])
	with pytest.raises(EngineError):
		planner.retry_steps(definition, state, [])


def test_cancel_cancels_every_open_step_and_leaves_finished_ones():
	definition = flow(
		notify("sent"),
		{"id": "gate", "kind": "wait", "trigger": {"type": "manual"}},
		{"id": "pause", "kind": "wait", "trigger": {"type": "after_delay", "days": 1}},
	)
	state = run(definition, Host()).step_state
	later = NOW + dt.timedelta(minutes=3)
	cancelled = planner.cancel(state, later)
	assert {k: v["status"] for k, v in cancelled.items()} == {
		"sent": "done",
		"gate": "cancelled",
		"pause": "cancelled",
	}
	assert cancelled["gate"]["finished_at"] == "2024-03-01 09:03:00"
	assert state["gate"]["status"] == "waiting"  # input untouched
	# nothing runs any more on a cancelled state
	host = Host()
	after = run(definition, host, state=cancelled, now=NOW + dt.timedelta(days=2))
	assert host.executed == []
	assert after.timers == []


# --- guards and determinism --------------------------------------------------------------


def test_max_waves_guard_fails_a_run_that_needs_more_waves():
	definition = flow(notify("a"), notify("b", depends_on=["a"]), notify("c", depends_on=["b"]))
	result = run(definition, Host(), max_waves=1)
	assert result.status == planner.RUN_FAILED
	assert "max waves guard" in result.error


def test_same_inputs_give_identical_results():
	definition = flow(
		notify("a", retry={"max_attempts": 3, "backoff_seconds": 60}),
		notify("b"),
		{"id": "pause", "kind": "wait", "trigger": {"type": "after_delay", "hours": 5}},
		notify("join", depends_on=["a", "b", "pause"]),
	)

	def once():
		return run(definition, Host({"a": raise_error("flaky")}), seed="seed-1")

	first, second = once(), once()
	assert first.step_state == second.step_state
	assert first.attempts == second.attempts
	assert first.timers == second.timers
	assert first.status == second.status
	assert first.variables == second.variables


def test_planner_never_reads_the_clock(monkeypatch):
	def no_clock(*args, **kwargs):
		raise AssertionError("the planner read the clock")

	for name in ("time", "time_ns", "monotonic", "perf_counter"):
		monkeypatch.setattr(time, name, no_clock)
	long_ago = dt.datetime(1990, 5, 17, 12, 0, 0)
	definition = flow(
		notify("a"),
		{"id": "pause", "kind": "wait", "trigger": {"type": "after_delay", "days": 1}},
		notify("b", retry={"max_attempts": 2, "backoff_seconds": 60}),
	)
	result = run(definition, Host({"b": raise_error("down")}), now=long_ago)
	assert result.step_state["a"]["finished_at"] == "1990-05-17 12:00:00"
	assert result.step_state["pause"]["due_at"] == "1990-05-18 12:00:00"
	assert all(attempt.started_at == long_ago for attempt in result.attempts)
	assert all(timer.at.year == 1990 for timer in result.timers)


# --- plan: decisions without side effects -------------------------------------------------


def test_plan_returns_every_kind_of_decision_without_mutating_the_state():
	definition = flow(
		notify("now_step"),
		{"id": "later", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 10}},
		{"id": "gate", "kind": "wait", "trigger": {"type": "on_webhook"}},
		notify("bad_date", trigger={"type": "on_date", "at": "{{ doc.when }}"}),
		{"id": "check", "kind": "condition", "payload": {"field": "doc.x", "op": "empty"}},
		notify("on_yes", parent_id="check", branch="yes"),
		notify("reply_wait", depends_on=["now_step"], trigger={"type": "on_prev_complete"}),
	)
	state = {
		"check": {"status": "done", "branch": "no", "attempt": 1, "attempt_group": 1},
		"reply_wait": {
			"status": "waiting",
			"attempt": 1,
			"attempt_group": 1,
			"wait": {"type": "reply", "until": "2024-03-01 08:00:00"},
		},
	}
	snapshot = copy.deepcopy(state)
	result = plan(definition, state, {"doc": {"when": "soon"}}, NOW)
	assert state == snapshot
	actions = {d.step_id: d.action for d in result.decisions}
	assert actions == {
		"now_step": "execute",
		"later": "schedule",
		"gate": "wait",
		"bad_date": "fail",
		"on_yes": "skip",
		"reply_wait": "timeout",
	}
	by_id = {d.step_id: d for d in result.decisions}
	assert by_id["later"].at == NOW + dt.timedelta(minutes=10)
	assert "trigger.at" in by_id["bad_date"].reason
	assert result.status == planner.RUN_RUNNING


def test_plan_status_reflects_waiting_and_completed_runs():
	definition = flow({"id": "gate", "kind": "wait", "trigger": {"type": "manual"}})
	fresh = plan(definition, {}, {}, NOW)
	assert [d.action for d in fresh.decisions] == ["wait"]
	assert fresh.status == planner.RUN_WAITING
	waiting = {"gate": {"status": "waiting", "wait": {"type": "gate"}}}
	assert plan(definition, waiting, {}, NOW).status == planner.RUN_WAITING
	assert plan(definition, waiting, {}, NOW).decisions == ()
	done = {"gate": {"status": "done"}}
	assert plan(definition, done, {}, NOW).status == planner.RUN_COMPLETED


# --- attempts, variables, rendering -------------------------------------------------------


def test_attempt_records_hold_rendered_input_output_error_and_branch():
	definition = flow(
		{"id": "check", "kind": "condition", "payload": {"field": "doc.status", "op": "==", "value": "Open"}},
		notify(
			"mail",
			parent_id="check",
			branch="yes",
			retry={"max_attempts": 2, "backoff_seconds": 60},
			payload={"to": ["{{ doc.email }}"], "subject": "Quote {{ doc.name }}"},
		),
	)
	outcomes = iter([StepError("SMTP 451"), Outcome.done({"message_id": "m-1"})])

	def mail(payload, context, attempt):
		outcome = next(outcomes)
		if isinstance(outcome, Exception):
			raise outcome
		return outcome

	host = Host({"mail": mail})
	context = {"doc": {"name": "QTN-9", "status": "Open", "email": "c@example.com"}}
	first = run(definition, host, context=context)
	check, failed = first.attempts
	assert (check.step_id, check.status, check.branch, check.output) == (
		"check",
		"Success",
		"yes",
		{"result": True},
	)
	assert failed.step_id == "mail"
	assert failed.attempt == 1
	assert failed.status == "Failed"
	assert failed.error == "SMTP 451"
	assert failed.input == {"to": ["c@example.com"], "subject": "Quote QTN-9"}
	assert failed.retry_at == first.timers[0].at

	second = run(definition, host, state=first.step_state, context=context, now=first.next_due)
	[ok] = second.attempts
	assert (ok.step_id, ok.attempt, ok.status, ok.error) == ("mail", 2, "Success", None)
	assert ok.output == {"message_id": "m-1"}
	assert ok.input == {"to": ["c@example.com"], "subject": "Quote QTN-9"}


def test_set_variables_updates_variables_for_later_steps():
	definition = flow(
		{
			"id": "remember",
			"kind": "set_variables",
			"payload": {"variables": {"total": "{{ doc.grand_total }}"}},
		},
		notify(
			"mail",
			depends_on=["remember"],
			payload={
				"to": ["a@example.com"],
				"subject": "Total {{ variables.total }} for {{ variables.team }}",
			},
		),
		variables={"team": "Sales"},
	)
	host = Host()
	result = run(definition, host, context={"doc": {"grand_total": 1500}})
	assert result.variables == {"team": "Sales", "total": "1500"}
	assert host.calls[0][1]["subject"] == "Total 1500 for Sales"


def test_render_error_in_a_payload_fails_the_step_without_retry_naming_the_pointer():
	definition = flow(
		notify(
			"mail",
			retry={"max_attempts": 3, "backoff_seconds": 60},
			payload={"to": ["a@example.com"], "subject": "Due {{ doc.date | add_days('soon') }}"},
		)
	)
	host = Host()
	result = run(definition, host, context={"doc": {"date": "2024-01-01"}})
	assert host.executed == []  # nothing is sent with a broken payload
	assert result.step_state["mail"]["status"] == "failed"
	assert "/payload/subject" in result.step_state["mail"]["error"]
	assert result.timers == []
	assert result.status == planner.RUN_FAILED


def test_reload_document_lets_a_condition_see_the_fresh_document():
	definition = flow(
		{
			"id": "still_open",
			"kind": "condition",
			"payload": {"reload_document": True, "field": "doc.status", "op": "==", "value": "Open"},
		},
		notify("remind", parent_id="still_open", branch="yes"),
	)
	host = Host(doc={"name": "QTN-1", "status": "Ordered"})
	result = run(definition, host, context={"doc": {"name": "QTN-1", "status": "Open"}})
	assert host.reloads == 1
	assert result.step_state["still_open"]["branch"] == "no"
	assert host.executed == []


def test_condition_without_reload_uses_the_document_from_the_start():
	definition = flow(
		{
			"id": "still_open",
			"kind": "condition",
			"payload": {"field": "doc.status", "op": "==", "value": "Open"},
		},
	)
	host = Host(doc={"status": "Ordered"})
	result = run(definition, host, context={"doc": {"status": "Open"}})
	assert host.reloads == 0
	assert result.step_state["still_open"]["branch"] == "yes"


def test_huge_step_output_is_truncated_in_the_stored_state():
	definition = flow(notify("big"), notify("next", depends_on=["big"]))
	host = Host({"big": lambda payload, context, attempt: Outcome.done({"body": "x" * 200_000})})
	result = run(definition, host)
	stored = result.step_state["big"]["output"]
	assert stored["truncated"] is True
	assert len(str(stored)) < 10_000
	assert result.status == planner.RUN_COMPLETED


def test_small_step_output_is_stored_as_is():
	definition = flow(notify("small"))
	host = Host({"small": lambda payload, context, attempt: Outcome.done({"name": "ToDo-1", "n": [1, 2]})})
	assert run(definition, host).step_state["small"]["output"] == {"name": "ToDo-1", "n": [1, 2]}


def test_a_crashing_handler_fails_the_step_instead_of_the_advance():
	definition = flow(notify("buggy"))

	def crash(payload, context, attempt):
		raise KeyError("oops")

	result = run(definition, Host({"buggy": crash}))
	assert result.status == planner.RUN_FAILED
	assert "KeyError" in result.step_state["buggy"]["error"]


def test_timers_returned_are_only_for_steps_still_open():
	# a zero backoff retries within the same advance: no timer may be left for the finished step
	attempts = iter([StepError("blip"), Outcome.done({"ok": True})])

	def flaky(payload, context, attempt):
		outcome = next(attempts)
		if isinstance(outcome, Exception):
			raise outcome
		return outcome

	definition = flow(
		notify("flaky", retry={"max_attempts": 2, "backoff_seconds": 0}),
		{"id": "pause", "kind": "wait", "trigger": {"type": "after_delay", "minutes": 5}},
	)
	host = Host({"flaky": flaky})
	result = run(definition, host)
	assert [attempt for _, _, attempt in host.calls] == [1, 2]
	assert result.step_state["flaky"]["status"] == "done"
	open_steps = {s for s, e in result.step_state.items() if e["status"] in ("scheduled", "waiting")}
	assert {t.step_id for t in result.timers} == open_steps == {"pause"}
