"""Conditions are data: every operator with the coercions a Frappe user expects, groups,
paths into the run context, rendered values — and never code."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from flow_automation.engine.conditions import (
	OPERATORS,
	ConditionError,
	check_condition,
	evaluate,
	resolve_path,
)

CONTEXT: dict[str, Any] = {
	"doc": {
		"name": "QTN-0001",
		"status": "Open",
		"qty": "10",
		"count": 9,
		"blank": "",
		"nothing": None,
		"zero": 0,
		"enabled": True,
		"transaction_date": dt.date(2024, 1, 5),
		"modified": dt.datetime(2024, 1, 5, 10, 30),
		"valid_till": "2024-01-31",
		"items": [{"item_code": "A", "qty": 3}, {"item_code": "B", "qty": 7}],
		"tags": ["vip", "new"],
	},
	"variables": {"limit": "5", "wanted_status": "Open", "statuses": ["Open", "Replied"]},
	"steps": {"check": {"output": {"total": 1500}}},
	"trigger": {"event": "production_run.assigned"},
}


def holds(field: str, op: str, value: Any = None, *, has_value: bool = True) -> bool:
	condition = {"field": field, "op": op}
	if has_value:
		condition["value"] = value
	return evaluate(condition, CONTEXT)


def test_every_operator_is_covered_here():
	# keeps this file honest when an operator is added
	assert set(OPERATORS) == {
		"==",
		"!=",
		"<",
		">",
		"<=",
		">=",
		"in",
		"not_in",
		"empty",
		"not_empty",
		"contains",
		"starts_with",
		"ends_with",
		"matches",
	}


@pytest.mark.parametrize(
	("field", "op", "value", "expected"),
	[
		("doc.status", "==", "Open", True),
		("doc.status", "==", "open", False),
		("doc.status", "!=", "Open", False),
		("doc.status", "!=", "Closed", True),
		# numeric strings against numbers, both ways
		("doc.qty", "==", 10, True),
		("doc.qty", "==", "10.0", True),
		("doc.count", "==", "9", True),
		("doc.qty", ">", 9, True),
		("doc.qty", ">", "9", True),  # as numbers: 10 > 9 (as text "10" < "9")
		("doc.count", "<", "10", True),
		("doc.count", "<=", 9, True),
		("doc.count", ">=", 10, False),
		("doc.qty", "<", 10, False),
		# None and "" are the same empty value for ==
		("doc.nothing", "==", "", True),
		("doc.blank", "==", None, True),
		("doc.missing", "==", "", True),
		("doc.blank", "!=", "", False),
		("doc.zero", "==", "", False),
		# dates against date strings
		("doc.transaction_date", "==", "2024-01-05", True),
		("doc.transaction_date", "<", "2024-01-06", True),
		("doc.transaction_date", ">", "2024-01-06", False),
		("doc.modified", ">", "2024-01-05", True),
		("doc.modified", "<", "2024-01-05 11:00:00", True),
		("doc.valid_till", ">=", dt.date(2024, 1, 31), True),
		("doc.valid_till", ">", "2024-02-01", False),
		# missing values never compare as ordered
		("doc.missing", ">", 1, False),
		("doc.missing", "<", 1, False),
		("doc.missing", "!=", "x", True),
	],
)
def test_comparisons_with_coercions(field, op, value, expected):
	assert holds(field, op, value) is expected


@pytest.mark.parametrize(
	("field", "op", "value", "expected"),
	[
		("doc.status", "in", ["Open", "Replied"], True),
		("doc.status", "in", ["Closed"], False),
		("doc.qty", "in", [1, 10], True),
		("doc.qty", "in", ["1", "10"], True),
		("doc.status", "not_in", ["Closed", "Lost"], True),
		("doc.status", "not_in", ["Open"], False),
		("doc.missing", "in", ["a"], False),
		("doc.missing", "in", ["", "a"], True),
		("doc.name", "contains", "0001", True),
		("doc.name", "contains", "9999", False),
		("doc.tags", "contains", "vip", True),
		("doc.tags", "contains", "vi", False),  # lists contain items, not substrings
		("doc.missing", "contains", "x", False),
		("doc.name", "starts_with", "QTN-", True),
		("doc.name", "starts_with", "SO-", False),
		("doc.name", "ends_with", "0001", True),
		("doc.name", "ends_with", "QTN", False),
		("doc.missing", "starts_with", "", False),
		("doc.name", "matches", r"^QTN-\d{4}$", True),
		("doc.name", "matches", "qtn", False),
		("doc.name", "matches", "TN-00", True),  # search, not full match
		("doc.missing", "matches", ".*", False),
	],
)
def test_list_and_text_operators(field, op, value, expected):
	assert holds(field, op, value) is expected


@pytest.mark.parametrize(
	("field", "expected"),
	[
		("doc.blank", True),
		("doc.nothing", True),
		("doc.missing", True),
		("doc.zero", False),  # 0 is a value
		("doc.enabled", False),
		("doc.status", False),
		("doc.tags", False),
		("doc.no_tags", True),
	],
)
def test_empty_and_not_empty(field, expected):
	assert holds(field, "empty", has_value=False) is expected
	assert holds(field, "not_empty", has_value=False) is (not expected)


def test_empty_list_is_empty():
	assert evaluate({"field": "doc.rows", "op": "empty"}, {"doc": {"rows": []}}) is True


def test_all_any_not_nesting():
	open_and_big = {
		"all": [
			{"field": "doc.status", "op": "==", "value": "Open"},
			{
				"any": [
					{"field": "doc.qty", "op": ">", "value": 100},
					{"field": "doc.tags", "op": "contains", "value": "vip"},
				]
			},
			{"not": {"field": "doc.blank", "op": "not_empty"}},
		]
	}
	assert evaluate(open_and_big, CONTEXT) is True
	assert evaluate({"not": open_and_big}, CONTEXT) is False
	closed = {"all": [*open_and_big["all"], {"field": "doc.status", "op": "==", "value": "Closed"}]}
	assert evaluate(closed, CONTEXT) is False
	neither = {
		"any": [
			{"field": "doc.qty", "op": ">", "value": 100},
			{"field": "doc.status", "op": "==", "value": "Lost"},
		]
	}
	assert evaluate(neither, CONTEXT) is False


def test_empty_groups():
	assert evaluate({"all": []}, CONTEXT) is True
	assert evaluate({"any": []}, CONTEXT) is False


def test_paths_into_every_part_of_the_context():
	assert holds("steps.check.output.total", ">=", 1500) is True
	assert holds("trigger.event", "starts_with", "production_run.") is True
	assert holds("variables.limit", "==", 5) is True


def test_list_index_paths():
	assert holds("doc.items.0.qty", "==", 3) is True
	assert holds("doc.items.1.item_code", "==", "B") is True
	assert holds("doc.items.-1.qty", "==", 7) is True
	assert holds("doc.items.5.qty", "empty", has_value=False) is True
	assert resolve_path(CONTEXT, "doc.items.0.qty") == 3
	assert resolve_path(CONTEXT, "doc.items.x") is None


def test_missing_paths_resolve_to_none():
	assert resolve_path(CONTEXT, "doc.missing") is None
	assert resolve_path(CONTEXT, "doc.status.deeper") is None
	assert resolve_path(CONTEXT, "nowhere.at.all") is None
	assert resolve_path(CONTEXT, "doc.items.0.qty.more") is None


def test_values_are_templates_rendered_from_the_context():
	assert holds("doc.items.1.qty", ">", "{{ variables.limit }}") is True
	assert holds("doc.items.0.qty", ">", "{{ variables.limit }}") is False
	assert holds("doc.status", "==", "{{ variables.wanted_status }}") is True
	assert holds("doc.count", "==", "{{ doc.qty | int - 1 }}") is True
	assert holds("doc.status", "in", ["{{ variables.wanted_status }}", "Replied"]) is True


def test_a_value_that_looks_like_code_is_only_a_string(tmp_path: Path):
	marker = tmp_path / "pwned"
	payload = f"__import__('os').system('touch {marker}')"
	context = {"doc": {"note": payload, "other": "hello"}}
	assert evaluate({"field": "doc.note", "op": "==", "value": payload}, context) is True
	assert evaluate({"field": "doc.other", "op": "==", "value": payload}, context) is False
	assert evaluate({"field": "doc.other", "op": "contains", "value": payload}, context) is False
	assert evaluate({"field": "doc.other", "op": "matches", "value": "hel+o"}, context) is True
	assert not marker.exists()


def test_field_paths_cannot_reach_python_internals():
	assert holds("doc.__class__", "empty", has_value=False) is True
	assert holds("doc.items.__len__", "empty", has_value=False) is True
	assert holds("doc.status.__class__.__name__", "empty", has_value=False) is True


def test_invalid_regex_at_run_time_is_a_condition_error():
	with pytest.raises(ConditionError, match="regular expression"):
		holds("doc.name", "matches", "(QTN")


def test_malformed_condition_is_a_condition_error_not_a_crash():
	with pytest.raises(ConditionError):
		evaluate({"field": "doc.status", "op": "is"}, CONTEXT)
	with pytest.raises(ConditionError):
		evaluate({"field": "doc.status", "op": "=="}, CONTEXT)


# --- check_condition: the structural rules used by validation ------------------------------


def test_check_condition_accepts_valid_conditions():
	assert check_condition({"field": "doc.status", "op": "==", "value": "Open"}) == []
	assert check_condition({"field": "doc.x", "op": "empty"}) == []
	assert (
		check_condition({"all": [{"any": [{"not": {"field": "doc.x", "op": "in", "value": ["a"]}}]}]}) == []
	)
	assert check_condition({"field": "doc.x", "op": "in", "value": "{{ variables.statuses }}"}) == []


@pytest.mark.parametrize(
	("condition", "pointer", "words"),
	[
		("doc.status == 'Open'", "/c", "must be an object"),
		({"field": "doc.x", "op": "==", "all": []}, "/c", "either"),
		({"all": [], "any": []}, "/c", "either"),
		({"all": "nope"}, "/c/all", "list"),
		({"any": [{"op": "empty"}]}, "/c/any/0/field", "field"),
		({"not": {"field": "doc.x", "op": "like", "value": 1}}, "/c/not/op", "allowed"),
		({"field": "doc.x", "op": ">"}, "/c/value", "needs a 'value'"),
		({"field": "doc.x", "op": "not_in", "value": "a"}, "/c/value", "list"),
		({"field": "doc.x", "op": "matches", "value": "[a-"}, "/c/value", "regular expression"),
		({"field": "doc.x", "op": "matches", "value": "a" * 501}, "/c/value", "limit"),
		({"field": " ", "op": "empty"}, "/c/field", "required"),
	],
)
def test_check_condition_reports_structure_problems(condition, pointer, words):
	problems = check_condition(condition, "/c")
	assert pointer in [p for p, _ in problems], problems
	assert any(words in message for p, message in problems if p == pointer)
