"""Validation of flow definitions: every rule names the step, the field (JSON pointer) and
says what is wrong and what is allowed; every problem is reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from shared_examples import EXAMPLE_FLOWS, example_params, needs_shared_examples

from flow_automation.engine import catalog
from flow_automation.engine.definition import extract_definition
from flow_automation.engine.validation import (
	FlowValidationError,
	definition_json_schema,
	parse_definition,
	validate_definition,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = EXAMPLE_FLOWS
FIXTURES = sorted((REPO / "fixtures").glob("*.json"))
EMAIL = {"to": ["a@example.com"], "subject": "Hello"}


def issues_of(*steps: dict[str, Any], **definition: Any) -> list[tuple[str | None, str, str]]:
	raw = {"version": 1, "steps": list(steps), **definition}
	return [(i.step_id, i.pointer, i.message) for i in validate_definition(raw)]


def only_issue(*steps: dict[str, Any], **definition: Any) -> tuple[str | None, str, str]:
	found = issues_of(*steps, **definition)
	assert len(found) == 1, found
	return found[0]


def wait(step_id: str, **extra: Any) -> dict[str, Any]:
	return {"id": step_id, "kind": "wait", **extra}


def load_example(name: str) -> dict[str, Any]:
	definition, _ = extract_definition(json.loads((EXAMPLES / name).read_text()))
	return definition


# --- ids and kinds -----------------------------------------------------------------------


def test_duplicate_ids():
	step_id, pointer, message = only_issue(wait("greet"), wait("greet"))
	assert (step_id, pointer) == ("greet", "/id")
	assert "duplicate" in message
	assert "#1" in message  # which step already uses it


def test_unknown_kind_lists_allowed_kinds():
	step_id, pointer, message = only_issue({"id": "fax_it", "kind": "fax"})
	assert (step_id, pointer) == ("fax_it", "/kind")
	assert "'fax'" in message
	for name in catalog.kind_names():
		assert name in message


# --- payload schema ----------------------------------------------------------------------


def test_missing_required_payload_field():
	step_id, pointer, message = only_issue({"id": "mail", "kind": "notify", "payload": {"to": ["a@x.io"]}})
	assert (step_id, pointer) == ("mail", "/payload/subject")
	assert "required" in message


def test_unknown_payload_field_lists_the_allowed_ones():
	step_id, pointer, message = only_issue(
		{"id": "mail", "kind": "notify", "payload": {**EMAIL, "bcc": ["x@y.z"]}}
	)
	assert (step_id, pointer) == ("mail", "/payload/bcc")
	assert "unknown field 'bcc'" in message
	for allowed in ("to", "subject", "body", "cc", "channel"):
		assert allowed in message


def test_wrong_payload_type():
	step_id, pointer, message = only_issue(
		{"id": "mail", "kind": "notify", "payload": {**EMAIL, "to": "a@example.com"}}
	)
	assert (step_id, pointer) == ("mail", "/payload/to")
	assert "array" in message


def test_payload_enum_lists_allowed_values():
	step_id, pointer, message = only_issue(
		{"id": "mail", "kind": "notify", "payload": {**EMAIL, "channel": "fax"}}
	)
	assert (step_id, pointer) == ("mail", "/payload/channel")
	assert "'fax'" in message
	assert "email" in message
	assert "system" in message
	assert "sms" in message


# --- references between steps ------------------------------------------------------------


def test_dangling_depends_on():
	step_id, pointer, message = only_issue(wait("a", depends_on=["ghost"]))
	assert (step_id, pointer) == ("a", "/depends_on/0")
	assert "'ghost'" in message
	assert "does not exist" in message


def test_dangling_parent_id():
	step_id, pointer, message = only_issue(wait("a"), wait("b", parent_id="ghost"))
	assert (step_id, pointer) == ("b", "/parent_id")
	assert "'ghost'" in message


def test_self_dependency():
	step_id, pointer, message = only_issue(wait("root"), wait("a", depends_on=["root", "a"]))
	assert (step_id, pointer) == ("a", "/depends_on/1")
	assert "itself" in message


def test_self_parent():
	found = issues_of(wait("root"), wait("a", parent_id="a"))
	assert ("a", "/parent_id") in [(s, p) for s, p, _ in found]
	assert any("own parent" in m for _, _, m in found)


def test_cycle_shows_the_path_and_steps_behind_it_can_never_start():
	found = issues_of(
		wait("root"),
		wait("a", depends_on=["b"]),
		wait("b", depends_on=["a"]),
		wait("behind", depends_on=["a"]),
	)
	by_step = {s: (p, m) for s, p, m in found}
	assert set(by_step) == {"a", "b", "behind"}
	pointer, message = by_step["a"]
	assert pointer == "/depends_on"
	assert "cycle" in message
	assert "a → b → a" in message
	assert "b → a → b" in by_step["b"][1]
	assert "can never start" in by_step["behind"][1]


def test_longer_cycle_path_names_every_member():
	found = issues_of(
		wait("root"),
		wait("x", depends_on=["z"]),
		wait("y", depends_on=["x"]),
		wait("z", depends_on=["y"]),
	)
	message = {s: m for s, _, m in found}["x"]
	assert message.count("→") == 3
	for member in ("x", "y", "z"):
		assert member in message


# --- triggers ----------------------------------------------------------------------------


def test_on_prev_complete_without_a_previous_step():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "on_prev_complete"}))
	assert (step_id, pointer) == ("a", "/trigger/type")
	assert "previous step" in message
	assert "on_flow_start" in message


def test_on_flow_start_with_predecessors():
	step_id, pointer, message = only_issue(
		wait("a"), wait("b", depends_on=["a"], trigger={"type": "on_flow_start"})
	)
	assert (step_id, pointer) == ("b", "/trigger/type")
	assert "on_prev_complete" in message


def test_negative_delay():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "after_delay", "days": -1}))
	assert (step_id, pointer) == ("a", "/trigger/days")
	assert "minimum is 0" in message


def test_absurd_delay():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "after_delay", "days": 6 * 365}))
	assert (step_id, pointer) == ("a", "/trigger")
	assert "too long" in message
	assert "1830" in message


def test_absurd_delay_in_minutes():
	step_id, pointer, message = only_issue(
		wait("a", trigger={"type": "after_delay", "minutes": 6 * 366 * 1440})
	)
	assert (step_id, pointer) == ("a", "/trigger")
	assert "too long" in message


def test_long_but_reasonable_delay_is_fine():
	assert issues_of(wait("a", trigger={"type": "after_delay", "days": 330})) == []


def test_zero_delay():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "after_delay", "days": 0, "hours": 0}))
	assert (step_id, pointer) == ("a", "/trigger")
	assert "zero" in message


def test_after_delay_without_any_unit():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "after_delay"}))
	assert (step_id, pointer) == ("a", "/trigger")
	assert "minutes, hours or days" in message


def test_on_date_without_at():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "on_date"}))
	assert (step_id, pointer) == ("a", "/trigger/at")
	assert "needs 'at'" in message


def test_on_date_with_a_broken_template():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "on_date", "at": "{{ doc.due_date "}))
	assert (step_id, pointer) == ("a", "/trigger/at")
	assert "syntax" in message


def test_delay_fields_on_a_non_delay_trigger():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "manual", "hours": 2}))
	assert (step_id, pointer) == ("a", "/trigger/hours")
	assert "after_delay" in message


def test_at_on_a_non_date_trigger():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "manual", "at": "2024-01-01"}))
	assert (step_id, pointer) == ("a", "/trigger/at")
	assert "on_date" in message


def test_unknown_trigger_type_lists_the_allowed_ones():
	step_id, pointer, message = only_issue(wait("a", trigger={"type": "on_full_moon"}))
	assert (step_id, pointer) == ("a", "/trigger/type")
	assert "after_delay" in message
	assert "manual" in message


# --- branches ----------------------------------------------------------------------------


def test_branch_on_a_parent_that_offers_no_branches():
	step_id, pointer, message = only_issue(wait("a"), wait("b", parent_id="a", branch="yes"))
	assert (step_id, pointer) == ("b", "/branch")
	assert "does not branch" in message


def test_branch_name_the_parent_does_not_offer_lists_the_allowed_ones():
	step_id, pointer, message = only_issue(
		{"id": "check", "kind": "condition", "payload": {"field": "doc.x", "op": "empty"}},
		wait("b", parent_id="check", branch="maybe"),
	)
	assert (step_id, pointer) == ("b", "/branch")
	assert "'maybe'" in message
	assert "yes, no" in message


def test_switch_branches_are_its_cases_and_default():
	ok = issues_of(
		{"id": "route", "kind": "switch", "payload": {"value": "{{ doc.x }}", "cases": ["A", 2]}},
		wait("a", parent_id="route", branch="A"),
		wait("two", parent_id="route", branch=2),
		wait("other", parent_id="route", branch="default"),
	)
	assert ok == []
	step_id, pointer, message = only_issue(
		{"id": "route", "kind": "switch", "payload": {"value": "{{ doc.x }}", "cases": ["A"]}},
		wait("b", parent_id="route", branch="B"),
	)
	assert (step_id, pointer) == ("b", "/branch")
	assert "A, default" in message


def test_branch_without_parent():
	step_id, pointer, message = only_issue(wait("a", branch="yes"))
	assert (step_id, pointer) == ("a", "/branch")
	assert "parent_id" in message


def test_on_error_branch_without_error_children():
	step_id, pointer, message = only_issue(
		{"id": "call", "kind": "notify", "payload": EMAIL, "on_error": "branch"}
	)
	assert (step_id, pointer) == ("call", "/on_error")
	assert "'error'" in message


def test_on_error_branch_with_an_error_child_is_valid():
	assert (
		issues_of(
			{"id": "call", "kind": "notify", "payload": EMAIL, "on_error": "branch"},
			wait("alert", parent_id="call", branch="error"),
		)
		== []
	)


# --- retry -------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "word"), [(0, "minimum is 1"), (26, "maximum is 25")])
def test_retry_max_attempts_out_of_range(attempts, word):
	step_id, pointer, message = only_issue(wait("a", retry={"max_attempts": attempts}))
	assert (step_id, pointer) == ("a", "/retry/max_attempts")
	assert word in message


# --- templates, conditions, variables ----------------------------------------------------


def test_template_syntax_error_points_at_the_string():
	step_id, pointer, message = only_issue(
		{"id": "mail", "kind": "notify", "payload": {**EMAIL, "body": "Hi {{ doc.name "}}
	)
	assert (step_id, pointer) == ("mail", "/payload/body")
	assert "syntax error" in message


def test_template_syntax_error_deep_inside_a_payload():
	step_id, pointer, message = only_issue(
		{
			"id": "hook",
			"kind": "webhook",
			"payload": {"url": "https://example.com/h", "body": {"items": [{"v": "{% if %}"}]}},
		}
	)
	assert (step_id, pointer) == ("hook", "/payload/body/items/0/v")
	assert "syntax error" in message


def test_invalid_regex_in_a_matches_condition():
	step_id, pointer, message = only_issue(
		{
			"id": "check",
			"kind": "condition",
			"payload": {"field": "doc.name", "op": "matches", "value": "(QTN"},
		}
	)
	assert (step_id, pointer) == ("check", "/payload/value")
	assert "regular expression" in message


def test_invalid_regex_nested_in_a_condition_group():
	found = issues_of(
		{
			"id": "check",
			"kind": "condition",
			"payload": {
				"condition": {
					"any": [
						{"field": "doc.a", "op": "empty"},
						{"field": "doc.b", "op": "matches", "value": "[z"},
					]
				}
			},
		}
	)
	assert [(s, p) for s, p, _ in found] == [("check", "/payload/condition/any/1/value")]


@pytest.mark.parametrize(
	("payload", "pointer", "words"),
	[
		({"field": "doc.x", "op": "=="}, "/payload/value", "needs a 'value'"),
		({"field": "doc.x", "op": "in", "value": "Open"}, "/payload/value", "list"),
		({}, "/payload/field", "field"),
		({"all": {"field": "doc.x", "op": "empty"}}, "/payload/all", "array|list"),
		({"condition": {"not": {"op": "empty"}}}, "/payload/condition/not/field", "field"),
		({"condition": {"any": ["doc.x == 1"]}}, "/payload/condition/any/0", "object"),
	],
)
def test_bad_condition_structures(payload, pointer, words):
	found = issues_of({"id": "check", "kind": "condition", "payload": payload})
	assert found, "a malformed condition must be reported"
	assert {s for s, _, _ in found} == {"check"}
	assert pointer in [p for _, p, _ in found]
	assert any(word in m for _, p, m in found if p == pointer for word in words.split("|"))


def test_bad_operator_lists_the_operators():
	found = issues_of({"id": "check", "kind": "condition", "payload": {"field": "doc.x", "op": "~="}})
	assert {(s, p) for s, p, _ in found} == {("check", "/payload/op")}
	assert all("matches" in m and "not_empty" in m for _, _, m in found)


def test_condition_mixing_a_test_and_a_group_points_at_the_payload():
	found = issues_of(
		{"id": "check", "kind": "condition", "payload": {"field": "doc.x", "op": "empty", "all": []}}
	)
	assert [(s, p) for s, p, _ in found] == [("check", "/payload")]
	assert "either" in found[0][2]


def test_invalid_variable_names():
	found = issues_of(wait("a"), variables={"bad-name": 1, "ok_name": 2, "2fast": 3})
	assert sorted(p for _, p, _ in found) == ["/variables/2fast", "/variables/bad-name"]
	assert all(s is None for s, _, _ in found)
	assert all("not valid" in m for _, _, m in found)


def test_invalid_set_variables_name():
	step_id, pointer, message = only_issue(
		{"id": "remember", "kind": "set_variables", "payload": {"variables": {"grand total": 1}}}
	)
	assert (step_id, pointer) == ("remember", "/payload/variables/grand total")
	assert "not a valid name" in message


# --- all at once, and what valid means ---------------------------------------------------


def test_every_problem_is_reported_at_once():
	raw = {
		"version": 1,
		"variables": {"bad-name": 1},
		"steps": [
			wait("dup"),
			wait("dup"),
			{"id": "fax_it", "kind": "fax"},
			{"id": "mail", "kind": "notify", "payload": {"to": ["a@x.io"]}},
			wait("orphan", depends_on=["ghost"]),
			wait("pause", trigger={"type": "after_delay", "days": -3}),
			wait("lonely", branch="yes"),
		],
	}
	found = {(i.step_id, i.pointer) for i in validate_definition(raw)}
	assert {
		(None, "/variables/bad-name"),
		("dup", "/id"),
		("fax_it", "/kind"),
		("mail", "/payload/subject"),
		("orphan", "/depends_on/0"),
		("pause", "/trigger/days"),
		("lonely", "/branch"),
	} <= found
	with pytest.raises(FlowValidationError) as raised:
		parse_definition(raw)
	assert len(raised.value.issues) >= 7
	text = str(raised.value)
	assert "step 'fax_it' /kind" in text
	assert "step 'mail' /payload/subject" in text


def test_not_an_object_and_no_steps():
	assert validate_definition([]) and "JSON object" in str(validate_definition([])[0])
	[issue] = validate_definition({"version": 1, "steps": []})
	assert issue.pointer == "/steps"
	[issue] = validate_definition({"version": 2, "steps": [wait("a")]})
	assert issue.pointer == "/version"


def test_issue_text_names_the_step_and_the_pointer():
	[issue] = validate_definition({"steps": [{"id": "mail", "kind": "notify", "payload": {"to": ["x"]}}]})
	assert str(issue) == "step 'mail' /payload/subject: 'subject' is required"
	assert issue.as_dict() == {
		"step": "mail",
		"index": 0,
		"pointer": "/payload/subject",
		"message": "'subject' is required",
	}


def examples_with_known_kinds() -> list[str]:
	"""Shared examples whose every step kind is in the catalog (WhatsApp kinds may not be)."""
	names = []
	for path in sorted(EXAMPLES.glob("*.json")):
		definition, _ = extract_definition(json.loads(path.read_text()))
		if all(catalog.get_kind(s.get("kind")) for s in definition.get("steps") or ()):
			names.append(path.name)
	return names


@needs_shared_examples
def test_quotation_follow_up_uses_only_catalog_kinds():
	assert "quotation_follow_up.json" in examples_with_known_kinds()


@pytest.mark.parametrize("name", example_params(examples_with_known_kinds()))
def test_shared_examples_with_known_kinds_are_valid(name):
	assert validate_definition(load_example(name)) == []


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_repo_fixtures_are_valid(path):
	definition, meta = extract_definition(json.loads(path.read_text()))
	assert meta.get("template_name")
	assert validate_definition(definition) == []
	assert parse_definition(definition).steps


def test_fixtures_exist():
	assert len(FIXTURES) >= 2


# --- the published JSON schema -----------------------------------------------------------


def test_definition_json_schema_is_a_valid_draft_2020_12_schema():
	Draft202012Validator.check_schema(definition_json_schema())


@needs_shared_examples
def test_definition_json_schema_accepts_quotation_follow_up_and_rejects_bad_steps():
	validator = Draft202012Validator(definition_json_schema())
	assert list(validator.iter_errors(load_example("quotation_follow_up.json"))) == []
	assert list(validator.iter_errors({"steps": [{"id": "a", "kind": "fax"}]}))
	assert list(validator.iter_errors({"steps": [{"id": "a", "kind": "notify", "payload": {"to": ["x"]}}]}))
	bad_condition = {"condition": {"any": [{"field": "doc.x", "op": "almost"}]}}
	assert list(
		validator.iter_errors({"steps": [{"id": "a", "kind": "condition", "payload": bad_condition}]})
	)
