"""The `lookup` and `run_script` kinds in the engine: their schemas and checks (every error
names the field), branches, describe(), the helpers the host reads, and the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flow_automation.engine import (
	get_kind,
	lookup_outcome,
	lookup_request,
	output_too_large,
	script_error_line,
	script_fingerprints,
	script_timeout,
	simulate,
	validate_definition,
)
from flow_automation.engine.cli import main
from flow_automation.engine.definition import extract_definition
from flow_automation.engine.validation import parse_definition

FLOWS = Path(__file__).resolve().parents[2] / "flow_automation" / "tests" / "flows"
EXAMPLES = ("todo_workload_lookup.json", "todo_workload_script.json")
READ_LIST = {"doctype": "ToDo", "filters": {"status": "Open"}}
CODE = "frappe.response['message'] = {'total': 1}"


def issues(kind: str, payload: dict[str, Any], *more: dict[str, Any]) -> list[tuple[str, str]]:
	raw = {"version": 1, "steps": [{"id": "s", "kind": kind, "payload": payload}, *more]}
	return [(i.pointer, i.message) for i in validate_definition(raw)]


def pointers(kind: str, payload: dict[str, Any]) -> list[str]:
	return [pointer for pointer, _ in issues(kind, payload)]


def only(kind: str, payload: dict[str, Any]) -> tuple[str, str]:
	found = issues(kind, payload)
	assert len(found) == 1, found
	return found[0]


# --- the catalog -------------------------------------------------------------------------


def test_both_kinds_are_in_the_catalog_and_describe_themselves():
	lookup = get_kind("lookup").describe()
	assert lookup["branches"] == {"fixed": ["found", "not_found"], "from_payload": "", "paths": []}
	assert lookup["executed_by"] == "host" and lookup["waits"] is False
	assert lookup["payload_schema"]["properties"]["limit"]["maximum"] == 500
	assert "at most 500" in lookup["payload_schema"]["properties"]["limit"]["description"]
	script = get_kind("run_script").describe()
	assert script["branches"]["fixed"] == [] and script["executed_by"] == "host"
	assert "System Manager" in script["description"]
	assert set(script["payload_schema"]["properties"]) == {"script", "code", "args", "timeout_seconds"}


@pytest.mark.parametrize("kind", ["lookup", "run_script"])
def test_each_kinds_example_is_a_valid_payload(kind):
	assert issues(kind, dict(get_kind(kind).example)) == []


def test_the_command_line_catalog_lists_both(capsys):
	assert main(["catalog"]) == 0
	out = capsys.readouterr().out
	assert "lookup" in out and "found, not_found" in out
	assert "run_script" in out


# --- lookup: what a payload may say --------------------------------------------------------


def test_a_lookup_reads_one_by_name_or_a_list_by_filters():
	assert issues("lookup", {"doctype": "ToDo", "name": "{{ doc.todo }}"}) == []
	assert issues("lookup", {"doctype": "ToDo", "filters": {}}) == []
	assert issues("lookup", {"doctype": "ToDo", "filters": [["status", "=", "Open"]], "limit": 500}) == []
	assert only("lookup", {"doctype": "ToDo"}) == (
		"/payload/name",
		"give name (one document) or filters (a list; {} for every document)",
	)
	pointer, message = only("lookup", {"doctype": "ToDo", "name": "x", "filters": {}})
	assert pointer == "/payload/filters" and "not both" in message


def test_lookup_schema_errors_name_the_field():
	assert only("lookup", {"filters": {}}) == ("/payload/doctype", "'doctype' is required")
	assert only("lookup", {**READ_LIST, "limit": 501}) == (
		"/payload/limit",
		"501 is too large; the maximum is 500",
	)
	assert only("lookup", {**READ_LIST, "limit": 0})[0] == "/payload/limit"
	assert only("lookup", {**READ_LIST, "fields": "name"})[0] == "/payload/fields"
	pointer, message = only("lookup", {**READ_LIST, "page": 2})
	assert pointer == "/payload/page" and "unknown field 'page'" in message and "limit" in message


def test_list_options_do_not_apply_to_one_document():
	found = issues("lookup", {"doctype": "ToDo", "name": "x", "limit": 5, "order_by": "modified desc"})
	assert [p for p, _ in found] == ["/payload/order_by", "/payload/limit"]
	assert "applies to a list (filters)" in found[0][1]
	assert only("lookup", {"doctype": "ToDo", "name": " "}) == ("/payload/name", "must not be empty")


@pytest.mark.parametrize(
	("filters", "pointer", "words"),
	[
		({"status": ["equals", "Open"]}, "/payload/filters/status/0", "'equals' is not a filter operator"),
		({"status": ["=", "Open", "x"]}, "/payload/filters/status", "[operator, value]"),
		({"status": {"op": "="}}, "/payload/filters/status", "not an object"),
		({"bad-field": "x"}, "/payload/filters/bad-field", "is not a field name"),
		([["status", "Open"]], "/payload/filters/0", "[field, operator, value]"),
		(["status = Open"], "/payload/filters/0", "[field, operator, value]"),
		([["status", "~", "Open"]], "/payload/filters/0/1", "not a filter operator"),
		([["ToDo", "st atus", "=", "Open"]], "/payload/filters/0/1", "is not a field name"),
		([["{{ variables.f }}", "=", "x"]], "/payload/filters/0/0", "cannot be a template"),
	],
)
def test_bad_filters_name_the_filter(filters, pointer, words):
	found = issues("lookup", {"doctype": "ToDo", "filters": filters})
	assert pointer in [p for p, _ in found], found
	assert any(words in m for p, m in found if p == pointer), found


def test_frappe_filter_forms_are_accepted():
	filters = {
		"status": "Open",
		"priority": ["in", ["High", "Medium"]],
		"date": ["between", ["{{ now }}", "{{ now | add_days(7) }}"]],
		"description": ["like", "%{{ doc.name }}%"],
		"allocated_to": ["is", "set"],
		"modified": ["Timespan", "this week"],
	}
	assert issues("lookup", {"doctype": "ToDo", "filters": filters}) == []
	listed = [["ToDo", "status", "not in", ["Closed"]], ["reference_name", "=", "{{ doc.name }}"]]
	assert issues("lookup", {"doctype": "ToDo", "filters": listed}) == []


def test_fields_and_order_by_must_be_plain_names():
	found = issues("lookup", {**READ_LIST, "fields": ["name", "*", "count(*)", "{{ x }}"]})
	assert [p for p, _ in found] == ["/payload/fields/2", "/payload/fields/3"]
	assert issues("lookup", {**READ_LIST, "order_by": "modified desc, name ASC"}) == []
	pointer, message = only("lookup", {**READ_LIST, "order_by": "modified desc; drop table x"})
	assert pointer == "/payload/order_by" and "field [asc|desc]" in message


def test_a_lookup_branches_found_and_not_found_only():
	child = {"id": "c", "kind": "wait", "parent_id": "s", "branch": "found"}
	assert issues("lookup", READ_LIST, child) == []
	assert issues("lookup", READ_LIST, {**child, "branch": "not_found"}) == []
	((pointer, message),) = issues("lookup", READ_LIST, {**child, "branch": "yes"})
	assert pointer == "/branch" and "allowed: found, not_found" in message


# --- lookup: what the host reads -----------------------------------------------------------


def test_lookup_request_normalises_a_rendered_payload():
	request = lookup_request(
		{
			"doctype": " ToDo ",
			"filters": [["ToDo", "status", "=", "Open"], ["priority", "in", "High,Medium"]],
			"fields": ["name", " description "],
			"order_by": "modified desc, name",
			"limit": 900,
		}
	)
	assert request["doctype"] == "ToDo" and request["name"] is None
	assert request["fields"] == ["name", "description"]
	assert request["limit"] == 500  # never more than the cap
	assert request["filter_fields"] == [("filters/0", "status", "ToDo"), ("filters/1", "priority", None)]
	assert request["order_fields"] == ["modified", "name"]
	one = lookup_request({"doctype": "ToDo", "name": ""})
	assert one["name"] == "" and one["filters"] is None and one["limit"] == 20


def test_lookup_outcome_takes_the_branch_of_what_it_read():
	assert lookup_outcome({"doctype": "ToDo", "doc": {"name": "a"}}).branch == "found"
	assert lookup_outcome({"doctype": "ToDo", "doc": None}).branch == "not_found"
	assert lookup_outcome({"doctype": "ToDo", "docs": [{"name": "a"}], "count": 1}).branch == "found"
	assert lookup_outcome({"doctype": "ToDo", "docs": [], "count": 0}).branch == "not_found"
	big = lookup_outcome({"doctype": "ToDo", "docs": [{"description": "x" * 70_000}], "count": 1})
	assert big.status == "failed" and not big.retryable
	assert "at most 64000" in big.error and "read fewer fields" in big.error


def test_a_rendered_order_by_is_checked_before_the_host_reads():
	definition = parse_definition(
		{
			"version": 1,
			"steps": [
				{"id": "s", "kind": "lookup", "payload": {**READ_LIST, "order_by": "{{ variables.o }}"}}
			],
		}
	)
	result = simulate(definition, variables={"o": "name; drop table x"})
	assert result.status == "Failed"
	assert "order_by: 'name; drop table x' is not 'field [asc|desc], ...'" in result.error
	assert simulate(definition, variables={"o": "name desc"}).status == "Completed"


# --- run_script ----------------------------------------------------------------------------


def test_a_script_is_inline_code_or_a_server_script_by_name():
	assert issues("run_script", {"code": CODE, "args": {"user": "{{ doc.owner }}"}}) == []
	assert issues("run_script", {"script": "Order Totals"}) == []
	pointer, message = only("run_script", {})
	assert pointer == "/payload/code" and "give code" in message
	pointer, message = only("run_script", {"code": CODE, "script": "Order Totals"})
	assert pointer == "/payload/code" and "not both" in message


def test_code_and_script_names_are_never_templates():
	pointer, message = only("run_script", {"code": "x = '{{ doc.name }}'"})
	assert pointer == "/payload/code" and "not a template" in message and "args" in message
	assert only("run_script", {"script": "{{ variables.which }}"})[0] == "/payload/script"


def test_inline_code_must_parse_and_the_error_gives_the_line():
	assert only("run_script", {"code": "x = 1\ny = (\n"}) == (
		"/payload/code",
		"syntax error on line 2: '(' was never closed",
	)


def test_run_script_schema_errors_name_the_field():
	assert only("run_script", {"code": CODE, "timeout_seconds": 31}) == (
		"/payload/timeout_seconds",
		"31 is too large; the maximum is 30",
	)
	assert only("run_script", {"code": CODE, "args": ["a"]})[0] == "/payload/args"
	assert only("run_script", {"code": CODE, "args": {"bad key": 1}})[0] == "/payload/args/bad key"
	assert only("run_script", {"code": ""}) == ("/payload/code", "must not be empty")


def test_script_timeout_defaults_and_caps():
	assert script_timeout({}) == 10
	assert script_timeout({"timeout_seconds": 2.5}) == 2.5
	assert script_timeout({"timeout_seconds": 600}) == 30
	assert script_timeout({"timeout_seconds": True}) == 10


def test_script_error_line_reads_restricted_pythons_messages():
	assert script_error_line(("Line 3: Exec calls are not allowed.",)) == 3
	assert script_error_line('Line 12: "_x" is an invalid variable name') == 12
	assert script_error_line(("no line here",)) is None


def test_output_too_large_names_the_limit():
	assert output_too_large({"a": "x" * 100}) is None
	message = output_too_large({"a": "x" * 64_001}, "the script's result")
	assert message.startswith("the script's result is 64") and "at most 64000" in message


def test_script_fingerprints_count_payloads_not_ids_or_places():
	step = {"id": "a", "kind": "run_script", "payload": {"code": CODE, "args": {"x": 1}}}
	moved = {**step, "id": "b", "parent_id": "p", "branch": "yes", "retry": {"max_attempts": 3}}
	reordered = {**step, "payload": {"args": {"x": 1}, "code": CODE}}
	assert script_fingerprints([step]) == script_fingerprints([moved]) == script_fingerprints([reordered])
	changed = {**step, "payload": {"code": CODE, "args": {"x": 2}}}
	assert script_fingerprints([changed]) != script_fingerprints([step])
	assert script_fingerprints([{"id": "w", "kind": "wait", "payload": {}}]) == {}
	assert sum(script_fingerprints([step, moved]).values()) == 2


# --- examples and the simulator ------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_flows_validate_with_the_command_line(name, capsys):
	assert main(["validate", str(FLOWS / name)]) == 0
	assert "valid" in capsys.readouterr().out


def test_the_simulator_takes_a_lookups_found_branch():
	definition, _ = extract_definition(json.loads((FLOWS / "todo_workload_lookup.json").read_text()))
	result = simulate(parse_definition(definition), doc={"name": "T1", "allocated_to": "a@example.com"})
	actions = {entry.step_id: (entry.action, entry.branch) for entry in result.timeline}
	assert actions["open_todos"] == ("executed", "found")
	assert actions["queue"][0] == "executed" and actions["first"][0] == "skipped"
	assert result.status == "Completed"


def test_the_simulator_reads_one_document_by_name():
	definition = parse_definition(
		{"version": 1, "steps": [{"id": "s", "kind": "lookup", "payload": {"doctype": "User", "name": "x"}}]}
	)
	result = simulate(definition)
	assert result.step_state["s"]["output"]["doc"] == {"doctype": "User", "name": "x"}
	assert result.step_state["s"]["branch"] == "found"
