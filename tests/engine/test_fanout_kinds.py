"""The for_each kind without Frappe: its payload checks, how its list is read, what it starts,
and how the planner walks a batch of children ending in any order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from flow_automation.engine import (
	Definition,
	Outcome,
	fan_out,
	fan_out_started,
	get_kind,
	results_output,
	simulate,
	validate_definition,
)
from flow_automation.engine.fanout_kinds import MAX_RESULTS_CHARS
from flow_automation.engine.outcome import StepError
from flow_automation.engine.planner import EngineError, Event, advance
from flow_automation.engine.render import render_as_value as evaluate
from flow_automation.engine.render import weight
from flow_automation.engine.state import FAN_OUT, waits_for_child

NOW = dt.datetime(2024, 3, 1, 9, 0, 0)
DOCS = [{"doctype": "Sales Invoice", "name": f"SINV-{i}"} for i in range(4)]


def flow(payload: Mapping[str, Any], *extra: dict) -> dict[str, Any]:
	return {"version": 1, "steps": [{"id": "each", "kind": "for_each", "payload": dict(payload)}, *extra]}


def issues(payload: Mapping[str, Any], *extra: dict) -> list[tuple[str | None, str, str]]:
	return [(i.step_id, i.pointer, i.message) for i in validate_definition(flow(payload, *extra))]


def context(**variables: Any) -> dict[str, Any]:
	return {
		"variables": variables,
		"steps": {"find": {"output": {"docs": DOCS, "count": len(DOCS)}}},
		"doc": {"name": "PARENT-1"},
	}


# --- the catalog and saved payloads ------------------------------------------------------------


def test_the_kind_offers_done_and_some_failed_and_waits_with_wait():
	kind = get_kind("for_each")
	assert kind is not None and not kind.is_pure and not kind.render_payload
	assert kind.branches({}) == ("done", "some_failed")
	described = kind.describe()
	assert described["branches"]["fixed"] == ["done", "some_failed"]
	assert set(described["payload_schema"]["properties"]) >= {
		"items",
		"template",
		"item_as",
		"doctype",
		"variables",
		"concurrency",
		"max_items",
		"wait",
		"collect",
	}
	assert kind.waits({"wait": True}) and not kind.waits({})


def test_a_valid_payload_has_no_issues():
	assert issues({"items": "{{ steps.find.output.docs }}", "template": "Reminder", "wait": True}) == []


@pytest.mark.parametrize(
	"payload, pointer, words",
	[
		({"template": "T"}, "/payload/items", "'items' is required"),
		({"items": "{{ x }}"}, "/payload/template", "'template' is required"),
		({"items": [], "template": "T", "concurrency": 0}, "/payload/concurrency", "minimum"),
		({"items": [], "template": "T", "concurrency": 101}, "/payload/concurrency", "maximum"),
		({"items": [], "template": "T", "max_items": 10_001}, "/payload/max_items", "maximum"),
		({"items": [], "template": "T", "items_as": "x"}, "/payload/items_as", "unknown field"),
		({"items": "a, b", "template": "T"}, "/payload/items", "give a list"),
		(
			{"items": ["a", "b", "c"], "template": "T", "max_items": 2},
			"/payload/items",
			"more than max_items (2)",
		),
		({"items": ["INV-1"], "template": "T"}, "/payload/items/0", "needs a DocType"),
		(
			{"items": [{"name": "x", "doctype": "A"}], "doctype": "B", "template": "T"},
			"/payload/items/0",
			"a A, but doctype says B",
		),
		({"items": [True], "template": "T", "doctype": "A"}, "/payload/items/0", "is not a document"),
		(
			{"items": [], "template": "T", "item_as": "variable", "doctype": "A"},
			"/payload/doctype",
			"only applies",
		),
		(
			{"items": [], "template": "T", "variables": {"bad name": 1}},
			"/payload/variables/bad name",
			"not a valid name",
		),
		(
			{"items": [], "template": "T", "item_as": "variable", "variables": {"item": 1}},
			"/payload/variables/item",
			"the item itself",
		),
		({"items": [], "template": "T", "collect": ["a"]}, "/payload/collect", "with wait: true"),
	],
)
def test_payload_problems_name_the_field(payload, pointer, words):
	found = issues(payload)
	assert any(
		step == "each" and where == pointer and words in message for step, where, message in found
	), found


def test_a_child_on_branch_some_failed_is_valid():
	child = {"id": "alert", "kind": "wait", "parent_id": "each", "branch": "some_failed", "payload": {}}
	assert issues({"items": [], "template": "T", "wait": True}, child) == []
	child["branch"] = "partly"
	assert any("partly" in message for _, _, message in issues({"items": [], "template": "T"}, child))


# --- reading the list -------------------------------------------------------------------------


def test_one_expression_gives_the_list_itself_not_its_text():
	assert evaluate("{{ steps.find.output.docs }}", context()) == DOCS
	assert evaluate("{{ steps.find.output.docs[1:3] }}", context()) == DOCS[1:3]
	assert evaluate("{{- steps.find.output.docs -}}", context()) == DOCS
	assert evaluate("{{ steps.find.output.count }} docs", context()) == "4 docs"


def test_the_expression_runs_in_the_templates_sandbox():
	assert evaluate("{{ doc.__class__ }}", context()) is None
	with pytest.raises(Exception, match="sandbox"):
		evaluate("{{ 'x' * 10000000 }}", context())


@pytest.mark.parametrize(
	"items, expected",
	[
		("{{ steps.find.output.docs }}", [("Sales Invoice", d["name"]) for d in DOCS]),
		("{{ variables.names | tojson }}", [("ToDo", "a"), ("ToDo", "b")]),
		('["a", "b"]', [("ToDo", "a"), ("ToDo", "b")]),
		(["a", "{{ variables.names[1] }}"], [("ToDo", "a"), ("ToDo", "b")]),
		("{{ variables.names }}", [("ToDo", "a"), ("ToDo", "b")]),
		("{{ steps.find.output.docs | map(attribute='name') }}", [("ToDo", d["name"]) for d in DOCS]),
	],
)
def test_the_list_can_be_given_in_every_form(items, expected):
	payload = {"items": items, "template": "T"}
	if not (isinstance(items, str) and items.endswith("docs }}")):
		payload["doctype"] = "ToDo"
	fan = fan_out(payload, context(names=["a", "b"]))
	assert [(c.doctype, c.name) for c in fan.children] == expected


@pytest.mark.parametrize(
	"items, words",
	[
		("{{ variables.missing }}", "rendered to nothing"),
		("{{ steps.find.output }}", "is an object, not a list"),
		("{{ steps.find.output.count }}", "is 4, not a list"),
		("names: {{ variables.names }}", "which is not a list"),
		("{{ variables.names + 1 }}", "template error"),
	],
)
def test_a_list_that_is_not_one_is_a_step_error_naming_items(items, words):
	with pytest.raises(StepError) as raised:
		fan_out({"items": items, "template": "T", "doctype": "ToDo"}, context(names=["a"]))
	assert str(raised.value).startswith("items: ") and words in str(raised.value)
	assert raised.value.retryable is False


def test_more_items_than_max_items_starts_nothing():
	payload = {"items": "{{ steps.find.output.docs }}", "template": "T", "max_items": 3}
	with pytest.raises(StepError, match=r"items: 4 items is more than max_items \(3\); nothing was started"):
		fan_out(payload, context())
	assert fan_out({**payload, "max_items": 4}, context()).total == 4


def test_the_default_cap_is_1000():
	names = [str(i) for i in range(1001)]
	with pytest.raises(StepError, match=r"more than max_items \(1000\)"):
		fan_out({"items": "{{ variables.names }}", "template": "T", "doctype": "ToDo"}, context(names=names))


def test_items_as_variables_and_variables_rendered_per_item():
	fan = fan_out(
		{
			"items": "{{ variables.rows }}",
			"item_as": "variable",
			"template": "{{ variables.flow }}",
			"variables": {"label": "{{ item.code }}#{{ index }}", "parent": "{{ doc.name }}"},
			"concurrency": 2,
			"wait": True,
			"collect": ["label"],
		},
		context(rows=[{"code": "A"}, {"code": "B"}], flow="Child Flow"),
	)
	assert fan.template == "Child Flow"
	assert [(c.doctype, c.name) for c in fan.children] == [(None, None), (None, None)]
	assert [c.variables for c in fan.children] == [
		{"label": "A#0", "parent": "PARENT-1", "item": {"code": "A"}},
		{"label": "B#1", "parent": "PARENT-1", "item": {"code": "B"}},
	]
	assert (fan.concurrency, fan.wait, fan.collect) == (2, True, ("label",))


@pytest.mark.parametrize(
	"item, doctype, words",
	[
		({"name": "x"}, None, "items/0: 'x' needs a DocType"),
		({"doctype": "A"}, None, "items/0: the item has no document name"),
		([1, 2], "A", "items/0: [1, 2] is not a document"),
		({"doctype": "A", "name": "x"}, "B", "items/0: a A, but doctype says B"),
	],
)
def test_an_item_that_is_not_a_document_names_it(item, doctype, words):
	payload = {"items": [item], "template": "T", **({"doctype": doctype} if doctype else {})}
	with pytest.raises(StepError, match=words.replace("[", r"\[").replace("]", r"\]")):
		fan_out(payload, context())


def test_an_empty_template_name_names_the_field():
	with pytest.raises(StepError, match="template: rendered to an empty value"):
		fan_out({"items": [], "template": "{{ variables.none }}"}, context())


# --- a batch walked by the planner --------------------------------------------------------------


class BatchHost:
	"""A host that 'starts' children by recording them, and answers the collect effect."""

	def __init__(self):
		self.started: list[int] = []
		self.effects: list[Mapping[str, Any]] = []
		self.ended: dict[int, dict[str, Any]] = {}

	def execute(self, step, payload, context, attempt):
		fan = fan_out(payload, context)
		released = min(fan.concurrency, fan.total)
		self.started += list(range(released))
		return fan_out_started(fan, batch="run-1:each:1", released=released)

	def reload_document(self):
		return {}

	def perform(self, step, effect, context):
		self.effects.append(effect)
		if effect["type"] == "release":
			self.started += list(effect["indexes"])
			return None
		assert effect["type"] == "collect"
		children = [{"index": i, "run": f"child-{i}", **ended} for i, ended in self.ended.items()]
		return results_output(children, effect["total"], effect.get("collect"))


class Batch:
	def __init__(self, payload: Mapping[str, Any], *extra: dict, **variables: Any):
		self.definition = Definition.from_dict(flow(payload, *extra))
		self.host = BatchHost()
		result = advance(self.definition, {}, variables, {}, NOW, self.host)
		self.state, self.variables, self.status = result.step_state, result.variables, result.status

	def end(self, index: int, status: str = "Completed", batch: str = "run-1:each:1", **variables: Any):
		self.host.ended[index] = {"status": status, "variables": variables, "error": None}
		data = {
			"run": f"child-{index}",
			"status": status,
			"variables": variables,
			"batch": batch,
			"index": index,
		}
		result = advance(
			self.definition,
			self.state,
			self.variables,
			{},
			NOW,
			self.host,
			events=[Event("each", "complete", data)],
		)
		self.state, self.variables, self.status = result.step_state, result.variables, result.status
		return result

	@property
	def each(self) -> dict[str, Any]:
		return self.state["each"]

	def running(self) -> set[int]:
		return set(self.host.started) - set(self.host.ended)


def test_never_more_than_concurrency_children_run_and_each_end_lets_the_next_start():
	names = [f"n{i}" for i in range(10)]
	batch = Batch({"items": names, "item_as": "variable", "template": "T", "concurrency": 3, "wait": True})
	assert batch.status == "Waiting" and batch.each["wait"]["type"] == FAN_OUT
	assert batch.host.started == [0, 1, 2]
	for index in (1, 0, 2, 5, 3, 4, 7, 6, 9, 8):
		assert index in batch.running()
		batch.end(index, value=names[index])
		assert len(batch.running()) == min(3, 10 - len(batch.host.ended))
	assert batch.host.started == list(range(10))
	assert batch.status == "Completed"
	assert batch.each["branch"] == "done"
	output = batch.each["output"]
	assert (output["total"], output["started"], output["completed"], output["failed"]) == (10, 10, 10, 0)
	assert [r["variables"]["value"] for r in output["results"]] == names
	assert [r["run"] for r in output["results"]] == [f"child-{i}" for i in range(10)]


def test_one_failed_child_takes_some_failed():
	batch = Batch(
		{"items": ["a", "b"], "item_as": "variable", "template": "T", "wait": True},
		{"id": "ok", "kind": "wait", "parent_id": "each", "branch": "done", "payload": {}},
		{"id": "alert", "kind": "wait", "parent_id": "each", "branch": "some_failed", "payload": {}},
	)
	batch.end(0, "Failed")
	batch.end(1)
	assert batch.each["branch"] == "some_failed"
	assert (batch.state["ok"]["status"], batch.state["alert"]["status"]) == ("skipped", "done")
	assert [r["status"] for r in batch.each["output"]["results"]] == ["Failed", "Completed"]


def test_a_childs_ending_counts_once_and_a_retried_child_moves_to_completed():
	batch = Batch(
		{"items": ["a", "b", "c"], "item_as": "variable", "template": "T", "concurrency": 1, "wait": True}
	)
	batch.end(0, "Failed")
	batch.end(0, "Failed")  # told twice
	assert batch.each["wait"]["failed"] == [0] and batch.host.started == [0, 1]
	batch.end(0)  # the failed child was retried and completed
	assert (batch.each["wait"]["completed"], batch.each["wait"]["failed"]) == ([0], [])
	assert batch.host.started == [0, 1]  # nothing more started for it


def test_a_child_cancelled_before_it_started_is_never_started():
	batch = Batch(
		{"items": ["a", "b", "c"], "item_as": "variable", "template": "T", "concurrency": 1, "wait": True}
	)
	batch.end(1, "Cancelled")  # cancelled while held
	batch.end(0)
	assert batch.host.started == [0, 2]
	batch.end(2)
	assert batch.status == "Completed" and batch.each["output"]["failed"] == 1


def test_without_wait_the_step_ends_once_the_last_child_started():
	batch = Batch({"items": ["a", "b", "c"], "item_as": "variable", "template": "T", "concurrency": 2})
	assert batch.status == "Waiting"
	batch.end(1)
	assert batch.status == "Completed"
	assert batch.each["output"] == {"total": 3, "started": 3, "completed": 1, "failed": 0}
	assert not any(effect["type"] == "collect" for effect in batch.host.effects)


def test_without_wait_and_room_for_all_the_step_ends_at_once():
	batch = Batch({"items": ["a", "b"], "item_as": "variable", "template": "T"})
	assert batch.status == "Completed" and batch.each["branch"] == "done"
	assert batch.host.started == [0, 1]


def test_an_empty_list_ends_at_once_on_done():
	batch = Batch({"items": [], "item_as": "variable", "template": "T", "wait": True})
	assert batch.status == "Completed"
	assert batch.each["output"] == {"total": 0, "started": 0, "completed": 0, "failed": 0, "results": []}


def test_an_ending_of_another_batch_or_from_outside_is_refused():
	batch = Batch({"items": ["a", "b"], "item_as": "variable", "template": "T", "wait": True})
	with pytest.raises(EngineError, match="cannot be completed from outside"):
		batch.end(0, batch="run-1:each:2")  # a child of the step's earlier attempt group
	with pytest.raises(EngineError):
		advance(
			batch.definition, batch.state, {}, {}, NOW, batch.host, events=[Event("each", "complete", {})]
		)


def test_waits_for_child_knows_a_batch_by_its_key():
	batch = Batch({"items": ["a", "b"], "item_as": "variable", "template": "T", "wait": True})
	assert waits_for_child(batch.state, "each", "child-0", "run-1:each:1")
	assert not waits_for_child(batch.state, "each", "child-0", "run-1:each:2")
	assert not waits_for_child(batch.state, "each", "child-0")


def test_results_stay_under_the_output_budget():
	big = [
		{"index": i, "run": f"r{i}", "status": "Completed", "variables": {"text": "x" * 500}}
		for i in range(200)
	]
	output = results_output(big, 200)
	assert "too large to keep their variables" in output["results_truncated"]
	assert all("variables" not in r for r in output["results"])
	assert weight(output, MAX_RESULTS_CHARS * 2) <= MAX_RESULTS_CHARS + 200
	many = [{"index": i, "run": f"run-{i:06d}", "status": "Completed"} for i in range(5000)]
	output = results_output(many, 5000)
	assert len(output["results"]) < 5000 and output["results"][0]["run"] == "run-000000"
	assert "the first" in output["results_truncated"]
	assert results_output(big[:2], 2, collect=[])["results"][0]["variables"] == {}


# --- simulation -----------------------------------------------------------------------------


def test_the_simulator_shows_every_child_completing_and_starts_nothing():
	definition = Definition.from_dict(
		{
			"version": 1,
			"steps": [
				{
					"id": "names",
					"kind": "set_variables",
					"payload": {"variables": {"names": ["a", "b", "c"]}},
				},
				{
					"id": "each",
					"kind": "for_each",
					"depends_on": ["names"],
					"payload": {
						"items": "{{ variables.names }}",
						"doctype": "ToDo",
						"template": "T",
						"wait": True,
					},
				},
				{"id": "ok", "kind": "wait", "parent_id": "each", "branch": "done", "payload": {}},
			],
		}
	)
	result = simulate(definition)
	assert result.status == "Completed"
	each = result.step_state["each"]
	assert each["branch"] == "done"
	assert each["output"]["items"] == ["a", "b", "c"] and each["output"]["dry_run"] is True
	assert [r["status"] for r in each["output"]["results"]] == ["Completed"] * 3
	assert result.step_state["ok"]["status"] == "done"


def test_the_simulator_fails_the_step_as_a_run_would():
	definition = Definition.from_dict(flow({"items": "{{ variables.missing }}", "template": "T"}))
	result = simulate(definition)
	assert result.status == "Failed"
	assert "items: {{ variables.missing }} rendered to nothing" in result.step_state["each"]["error"]


def test_a_started_outcome_is_done_when_nothing_waits():
	fan = fan_out({"items": ["a"], "item_as": "variable", "template": "T"}, context())
	outcome = fan_out_started(fan, batch="b", released=1)
	assert isinstance(outcome, Outcome) and outcome.status == "done" and outcome.branch == "done"
