"""Planner throughput: decisions per second on a 200-step flow with parallel branches.

Frappe-free: `python benchmarks/engine.py` (with the project installed, or from the repo
root). Builds a start step, 9 parallel branches of 22 steps (conditions, variables, waits and
host-executed kinds answered by a no-op host) and a join: 200 steps, then advances
fresh runs of it to completion again and again. Prints figures; asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flow_automation.engine.outcome import Outcome
from flow_automation.engine.planner import advance, plan
from flow_automation.engine.validation import parse_definition

BRANCHES = 9
STEPS_PER_BRANCH = 22  # + a start step and a join: 200 steps
ROUNDS = 7


def build_definition() -> dict:
	steps: list[dict] = [
		{"id": "start", "kind": "set_variables", "payload": {"variables": {"started": "yes"}}}
	]
	last_of_branch = []
	for b in range(BRANCHES):
		previous = "start"
		for i in range(STEPS_PER_BRANCH):
			sid = f"b{b}_s{i}"
			step: dict = {"id": sid, "depends_on": [previous]}
			kind = i % 4
			if kind == 0:
				step.update(
					kind="set_variables", payload={"variables": {f"v{b}": "{{ doc.name }}-" + str(i)}}
				)
			elif kind == 1:
				step.update(kind="condition", payload={"field": "doc.total", "op": ">", "value": 10})
			elif kind == 2:
				step.update(
					kind="notify",
					payload={"to": ["{{ doc.owner }}"], "subject": "Step {{ run.name }} " + sid},
				)
			else:
				step.update(kind="wait", payload={})
			steps.append(step)
			previous = sid
		last_of_branch.append(previous)
	steps.append({"id": "join", "kind": "wait", "depends_on": last_of_branch, "payload": {}})
	return {"version": 1, "steps": steps}


class NullHost:
	def execute(self, step, payload, context, attempt):
		return Outcome.done({"ok": True})

	def reload_document(self):
		return None

	def perform(self, step, effect, context):
		pass


def main() -> None:
	definition = parse_definition(build_definition())
	context = {"doc": {"name": "DOC-1", "total": 42, "owner": "a@example.com"}, "run": {"name": "bench"}}
	now = dt.datetime(2026, 1, 1)
	host = NullHost()
	print(
		f"flow: {len(definition.steps)} steps: a start, {BRANCHES} parallel branches of {STEPS_PER_BRANCH}, a join"
	)

	# a warm-up run that also checks the flow really completes
	result = advance(definition, {}, {}, context, now, host, seed="warm")
	assert result.status == "Completed", result.error
	decisions_per_run, waves = result.decisions, result.waves
	print(f"one run: {decisions_per_run} decisions in {waves} waves, {len(result.attempts)} step attempts")

	rates = []
	for _ in range(ROUNDS):
		runs = 0
		decisions = 0
		started = time.perf_counter()
		while time.perf_counter() - started < 1.0:
			result = advance(definition, {}, {}, context, now, host, seed=f"r{runs}")
			decisions += result.decisions
			runs += 1
		elapsed = time.perf_counter() - started
		rates.append(decisions / elapsed)
	print(
		f"advance (waves + rendering + pure kinds): {ROUNDS} rounds of 1 s, decisions/s median {statistics.median(rates):.0f}, min {min(rates):.0f}, max {max(rates):.0f}"
	)

	# plan() alone on the state in the middle of a run: the pure decision function
	half = advance(definition, {}, {}, context, now, host, max_waves=STEPS_PER_BRANCH // 2)
	state = half.step_state
	calls = 0
	started = time.perf_counter()
	while time.perf_counter() - started < 1.0:
		decided = plan(definition, state, context, now)
		calls += 1
	elapsed = time.perf_counter() - started
	print(
		f"plan() alone, mid-run state: {calls / elapsed:.0f} calls/s, {len(decided.decisions)} decisions per call, {calls * len(decided.decisions) / elapsed:.0f} decisions/s"
	)
	print(f"decisions_per_s={statistics.median(rates):.0f}")


if __name__ == "__main__":
	main()
