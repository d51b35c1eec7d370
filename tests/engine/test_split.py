"""The `split` step kind: weighted A/B/n branches chosen from the run, not drawn at random."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from flow_automation.engine import get_kind, simulate
from flow_automation.engine.experiment_kinds import choose_branch, split_point
from flow_automation.engine.planner import advance
from flow_automation.engine.validation import parse_definition, validate_definition

NOW = dt.datetime(2026, 6, 1, 10, 0, 0)


def split_step(*weights: tuple[str, int], **extra) -> dict:
	return {
		"id": "ab",
		"kind": "split",
		"payload": {"branches": [{"name": n, "weight": w} for n, w in weights]},
		**extra,
	}


def flow(*weights: tuple[str, int]) -> dict:
	steps = [split_step(*weights)]
	for name, _ in weights:
		steps.append(
			{
				"id": f"on_{name}",
				"kind": "set_variables",
				"parent_id": "ab",
				"branch": name,
				"payload": {"variables": {"took": name}},
			}
		)
	return {"version": 1, "steps": steps}


class NoHost:
	def execute(self, step, payload, context, attempt):
		raise AssertionError("a split is evaluated by the engine, never by the host")

	def reload_document(self):
		return {}

	def perform(self, step, effect, context):
		raise AssertionError("no effects")


def run_once(definition, run_name: str, state=None):
	return advance(definition, state or {}, {}, {"run": {"name": run_name}}, NOW, NoHost(), seed=run_name)


def issues_of(raw: dict) -> list[tuple[str | None, str, str]]:
	return [(i.step_id, i.pointer, i.message) for i in validate_definition(raw)]


# --- distribution and stability ---------------------------------------------------------------


def test_ten_thousand_runs_follow_the_weights():
	weights = {"a": 50, "b": 30, "control": 20}
	branches = [{"name": n, "weight": w} for n, w in weights.items()]
	counts = Counter(choose_branch(branches, split_point(f"FR-{i:06d}", "ab")) for i in range(10_000))
	# a fixed set of names: the counts are the same on every run of this test; 1.5 points is
	# about 3.5 standard deviations for the smallest arm, so the check is not luck either
	for name, weight in weights.items():
		share = counts[name] / 10_000 * 100
		assert abs(share - weight) < 1.5, (name, share, weight)


def test_the_point_depends_on_the_run_and_the_step():
	assert split_point("FR-1", "ab") == split_point("FR-1", "ab")
	assert split_point("FR-1", "ab") != split_point("FR-2", "ab")
	assert split_point("FR-1", "ab") != split_point("FR-1", "other")
	points = [split_point(f"FR-{i}", "ab") for i in range(1000)]
	assert all(0 <= p < 100 for p in points)


def test_the_branch_edges_follow_the_cumulative_weights():
	branches = [{"name": "a", "weight": 20}, {"name": "off", "weight": 0}, {"name": "b", "weight": 80}]
	assert choose_branch(branches, 0.0) == "a"
	assert choose_branch(branches, 19.999) == "a"
	assert choose_branch(branches, 20.0) == "b"  # a weight of 0 never gets a run
	assert choose_branch(branches, 99.999) == "b"


def test_a_run_takes_its_branch_and_records_it_in_the_output():
	definition = parse_definition(flow(("a", 50), ("b", 50)))
	result = run_once(definition, "FR-000123")
	entry = result.step_state["ab"]
	expected = choose_branch(definition.step("ab").payload["branches"], split_point("FR-000123", "ab"))
	assert entry["status"] == "done" and entry["branch"] == expected
	assert entry["output"]["branch"] == expected
	assert entry["output"]["weights"] == {"a": 50, "b": 50}
	assert entry["output"]["point"] == pytest.approx(split_point("FR-000123", "ab"), abs=1e-6)
	other = "b" if expected == "a" else "a"
	assert result.step_state[f"on_{expected}"]["status"] == "done"
	assert result.step_state[f"on_{other}"]["status"] == "skipped"
	assert result.variables == {"took": expected}
	assert (result.attempts[0].step_id, result.attempts[0].branch) == ("ab", expected)


def test_the_same_run_takes_the_same_branch_on_every_advance_and_retry():
	definition = parse_definition(flow(("a", 34), ("b", 33), ("c", 33)))
	names = [f"run-{i}" for i in range(60)]
	first = {name: run_once(definition, name).step_state["ab"]["branch"] for name in names}
	again = {name: run_once(definition, name).step_state["ab"]["branch"] for name in names}
	assert first == again
	assert set(first.values()) == {"a", "b", "c"}  # 60 runs reach every arm
	# a run re-advanced with the split already done keeps its branch (nothing re-draws it)
	done = run_once(definition, "run-7")
	later = run_once(definition, "run-7", state=done.step_state)
	assert later.step_state["ab"] == done.step_state["ab"] and later.attempts == []


def test_a_simulation_names_its_run_after_the_seed():
	definition = parse_definition(flow(("a", 50), ("b", 50)))
	branch = choose_branch(definition.step("ab").payload["branches"], split_point("trial-42", "ab"))
	result = simulate(definition, start=NOW, seed="trial-42")
	assert result.status == "Completed"
	assert result.step_state["ab"]["branch"] == branch
	assert [e.step_id for e in result.timeline if e.action == "skipped"] == [
		"on_b" if branch == "a" else "on_a"
	]


# --- the catalog and validation -----------------------------------------------------------------


def test_the_catalog_offers_one_branch_per_entry():
	kind = get_kind("split")
	assert kind is not None and kind.is_pure
	assert kind.branches({"branches": [{"name": "a", "weight": 60}, {"name": "b", "weight": 40}]}) == (
		"a",
		"b",
	)
	described = kind.describe()
	assert described["branches"]["paths"] == ["branches[].name"]
	assert described["executed_by"] == "engine" and described["quiet_hours"] is False


def test_a_valid_split_has_no_issues():
	assert issues_of(flow(("a", 50), ("b", 50))) == []
	assert issues_of(flow(("a", 100), ("b", 0))) == []


@pytest.mark.parametrize(
	("payload", "pointer", "message"),
	[
		({}, "/payload/branches", "'branches' is required"),
		({"branches": [{"name": "a", "weight": 100}]}, "/payload/branches", "needs at least 2 item(s)"),
		(
			{"branches": [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}]},
			"/payload/branches",
			"the weights add up to 90; they must add up to 100",
		),
		(
			{"branches": [{"name": "a", "weight": 50.5}, {"name": "b", "weight": 49.5}]},
			"/payload/branches/0/weight",
			"must be of type integer, got float 50.5",
		),
		(
			{"branches": [{"name": "a", "weight": -10}, {"name": "b", "weight": 110}]},
			"/payload/branches/0/weight",
			"-10 is too small; the minimum is 0",
		),
		(
			{"branches": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]},
			"/payload/branches/1/name",
			"branch 'a' is listed twice (first as branch #1)",
		),
		(
			{"branches": [{"name": "variant a", "weight": 50}, {"name": "b", "weight": 50}]},
			"/payload/branches/0/name",
			"'variant a' is not a valid branch name (letters, digits and _ only)",
		),
		(
			{"branches": [{"name": "error", "weight": 50}, {"name": "b", "weight": 50}]},
			"/payload/branches/0/name",
			"'error' is reserved for the step's failure branch",
		),
		(
			{"branches": [{"name": "a"}, {"name": "b", "weight": 100}]},
			"/payload/branches/0/weight",
			"'weight' is required",
		),
		(
			{"branches": [{"name": "a", "weight": 50, "colour": "red"}, {"name": "b", "weight": 50}]},
			"/payload/branches/0/colour",
			"unknown field 'colour'; allowed: name, weight",
		),
	],
)
def test_bad_splits_name_the_step_and_the_field(payload, pointer, message):
	raw = {"version": 1, "steps": [{"id": "ab", "kind": "split", "payload": payload}]}
	found = issues_of(raw)
	assert ("ab", pointer, message) in found, found


def test_a_child_on_a_branch_the_split_does_not_offer_is_refused():
	raw = flow(("a", 50), ("b", 50))
	raw["steps"][1]["branch"] = "c"
	assert ("on_a", "/branch", "'ab' has no branch 'c'; allowed: a, b") in issues_of(raw)
