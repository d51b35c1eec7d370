"""Planner throughput: decisions per second on flows of 50, 200 and 1,000 steps.

Frappe-free: `python benchmarks/engine.py` (with the project installed, or from the repo
root). Each flow has the same shape: a start step, 9 parallel branches (conditions,
variables, waits and host-executed kinds answered by a no-op host) and a join; only the
branches grow. Advances fresh runs of each to completion again and again; a planner whose
cost per decision does not depend on the flow's size gives the same rate for all three.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flow_automation.engine import planner
from flow_automation.engine.definition import Definition
from flow_automation.engine.outcome import Outcome
from flow_automation.engine.planner import advance, plan
from flow_automation.engine.validation import MAX_STEPS, parse_definition

SIZES = (50, 200, 1000)
BRANCHES = 9  # 200 steps: a start, 9 branches of 22, a join
ROUNDS = 7
CONTEXT = {"doc": {"name": "DOC-1", "total": 42, "owner": "a@example.com"}, "run": {"name": "bench"}}
NOW = dt.datetime(2026, 1, 1)


def build_definition(size: int = 200) -> dict:
	"""A start, `BRANCHES` parallel branches sharing `size - 2` steps, and a join."""
	steps: list[dict] = [
		{"id": "start", "kind": "set_variables", "payload": {"variables": {"started": "yes"}}}
	]
	last_of_branch = []
	for b in range(BRANCHES):
		previous = "start"
		for i in range(_branch_length(size, b)):
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


def parsed_definition(size: int) -> Definition:
	raw = build_definition(size)
	if size <= MAX_STEPS:
		return parse_definition(raw)
	# more steps than a template may hold: the same shape, unvalidated, to show the trend
	return Definition.from_dict(raw)


def _branch_length(size: int, branch: int) -> int:
	length, longer = divmod(size - 2, BRANCHES)
	return length + (1 if branch < longer else 0)


def _branch_lengths(size: int) -> str:
	return " or ".join(str(n) for n in sorted({_branch_length(size, b) for b in range(BRANCHES)}))


class NullHost:
	def execute(self, step, payload, context, attempt):
		return Outcome.done({"ok": True})

	def reload_document(self):
		return None

	def perform(self, step, effect, context):
		pass


def steps_looked_at(definition) -> int:
	"""How many times one run's planning looks at a step (the planner's unit of work)."""
	decide = planner._decide
	calls = 0

	def counted(*args):
		nonlocal calls
		calls += 1
		return decide(*args)

	planner._decide = counted
	try:
		advance(definition, {}, {}, CONTEXT, NOW, NullHost(), seed="count")
	finally:
		planner._decide = decide
	return calls


def decisions_per_second(definition) -> list[float]:
	"""`ROUNDS` rounds of 1 s, each advancing fresh runs to completion: decisions/s per round."""
	host = NullHost()
	rates = []
	for _ in range(ROUNDS):
		runs = 0
		decisions = 0
		started = time.perf_counter()
		while time.perf_counter() - started < 1.0:
			result = advance(definition, {}, {}, CONTEXT, NOW, host, seed=f"r{runs}")
			decisions += result.decisions
			runs += 1
		elapsed = time.perf_counter() - started
		rates.append(decisions / elapsed)
	return rates


def main() -> None:
	medians: dict[int, float] = {}
	for size in SIZES:
		definition = parsed_definition(size)
		# a warm-up run that also checks the flow really completes
		result = advance(definition, {}, {}, CONTEXT, NOW, NullHost(), seed="warm")
		assert result.status == "Completed", result.error
		looked_at = steps_looked_at(definition)
		print(
			f"{len(definition.steps)} steps (a start, {BRANCHES} branches of {_branch_lengths(size)}, a join):"
			f" one run makes {result.decisions} decisions in {result.waves} waves,"
			f" looking at a step {looked_at} times ({looked_at / result.decisions:.2f} per decision)"
		)
		rates = decisions_per_second(definition)
		medians[size] = statistics.median(rates)
		print(
			f"  advance (waves + rendering + pure kinds): {ROUNDS} rounds of 1 s, decisions/s median {medians[size]:.0f}, min {min(rates):.0f}, max {max(rates):.0f}"
		)

	# plan() alone on the 200-step flow in the middle of a run: the pure decision function,
	# which looks at every step (advance looks again only at the steps that changed)
	definition = parsed_definition(200)
	half = advance(definition, {}, {}, CONTEXT, NOW, NullHost(), max_waves=_branch_length(200, 0) // 2)
	state = half.step_state
	calls = 0
	started = time.perf_counter()
	while time.perf_counter() - started < 1.0:
		decided = plan(definition, state, CONTEXT, NOW)
		calls += 1
	elapsed = time.perf_counter() - started
	print(
		f"plan() alone, 200 steps, mid-run state: {calls / elapsed:.0f} calls/s, {len(decided.decisions)} decisions per call, {calls * len(decided.decisions) / elapsed:.0f} decisions/s"
	)
	print(
		f"decisions_per_s={medians[200]:.0f} "
		+ " ".join(f"decisions_per_s_{size}={medians[size]:.0f}" for size in SIZES)
	)


if __name__ == "__main__":
	main()
