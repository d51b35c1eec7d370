"""The engine side of generate_pdf, notify's `sms` channel and attachments, and the Graph API
stand-in's media uploads (no Frappe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flow_automation.channels.whatsapp import CloudAPIClient, FakeGraphAPI, InvalidRequestError
from flow_automation.engine import get_kind, notify_channel, pdf_file_name, sms_number, validate_definition
from flow_automation.engine.cli import main
from flow_automation.engine.simulator import simulate
from flow_automation.engine.validation import parse_definition

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "flow_automation" / "tests" / "flows" / "todo_brief_pdf.json"


def issues(kind: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
	found = validate_definition({"version": 1, "steps": [{"id": "s", "kind": kind, "payload": payload}]})
	assert all(issue.step_id == "s" for issue in found)
	return [(issue.pointer, issue.message) for issue in found]


# --- generate_pdf ------------------------------------------------------------------------------


def test_generate_pdf_is_in_the_catalog_as_a_host_kind():
	kind = get_kind("generate_pdf")
	described = kind.describe()
	assert (described["group"], described["executed_by"], described["waits"]) == ("Documents", "host", False)
	assert {
		"target",
		"doctype",
		"name",
		"print_format",
		"letterhead",
		"no_letterhead",
		"language",
		"file_name",
	} == set(described["payload_schema"]["properties"])
	assert "file_url" in described["output"]
	assert issues("generate_pdf", kind.example) == []


@pytest.mark.parametrize(
	"payload",
	[
		{},
		{"print_format": "Standard"},
		{
			"target": "document",
			"doctype": "Sales Invoice",
			"name": "{{ doc.invoice }}",
			"print_format": "Tax",
		},
		{"doctype": "ToDo", "name": "abc", "letterhead": "Company", "language": "pt-BR"},
		{"no_letterhead": True, "file_name": "{{ doc.name }} brief.pdf", "language": "{{ doc.language }}"},
	],
)
def test_valid_pdf_payloads(payload):
	assert issues("generate_pdf", payload) == []


@pytest.mark.parametrize(
	("payload", "pointer", "words"),
	[
		({"format": "Standard"}, "/payload/format", "unknown field 'format'"),
		({"print_format": ""}, "/payload/print_format", "must not be empty"),
		({"print_format": 3}, "/payload/print_format", "string"),
		({"no_letterhead": "yes"}, "/payload/no_letterhead", "boolean"),
		({"target": "document", "doctype": "ToDo"}, "/payload/name", "'name' is required"),
		({"target": "document", "name": "x"}, "/payload/doctype", "'doctype' is required"),
		({"name": "x"}, "/payload/name", "only applies with target 'document'"),
		({"target": "elsewhere"}, "/payload/target", "'elsewhere'"),
		({"letterhead": "Company", "no_letterhead": True}, "/payload/letterhead", "not both"),
		({"file_name": "reports/q1.pdf"}, "/payload/file_name", "is not a file name"),
		({"language": "German"}, "/payload/language", "is not a language code"),
	],
)
def test_bad_pdf_payloads_name_the_field(payload, pointer, words):
	found = issues("generate_pdf", payload)
	assert [p for p, _ in found] == [pointer], found
	assert words in found[0][1]


@pytest.mark.parametrize(
	("payload", "name", "expected"),
	[
		({}, "TODO-0001", "TODO-0001.pdf"),
		({}, "SINV/2026/7", "SINV-2026-7.pdf"),
		({"file_name": "Brief Q1"}, "x", "Brief Q1.pdf"),
		({"file_name": "  brief.PDF "}, "x", "brief.PDF"),
		({"file_name": "a\\b/c\n"}, "x", "a-b-c.pdf"),
	],
)
def test_pdf_file_name(payload, name, expected):
	assert pdf_file_name(payload, name) == expected


def test_a_rendered_pdf_payload_is_checked_before_the_host_runs_it():
	kind = get_kind("generate_pdf")
	assert kind.rendered_problems({"target": "document", "doctype": "ToDo", "name": ""}) == [
		("/name", "rendered to an empty value")
	]
	assert kind.rendered_problems({"language": "not a language"}) == [
		("/language", "'not a language' is not a language code (e.g. de, pt-BR)")
	]
	assert kind.rendered_problems({"file_name": "a/b"}) == []  # made safe, not refused


def test_the_simulator_runs_a_pdf_step_and_the_steps_that_use_it():
	definition = parse_definition(
		{
			"version": 1,
			"steps": [
				{"id": "pdf", "kind": "generate_pdf", "payload": {}},
				{
					"id": "mail",
					"kind": "notify",
					"depends_on": ["pdf"],
					"payload": {
						"to": ["a@example.com"],
						"subject": "s",
						"attachments": ["{{ steps.pdf.output.file_url }}"],
					},
				},
			],
		}
	)
	result = simulate(definition, doc={"name": "TD-1"})
	assert result.status == "Completed"
	assert [e.step_id for e in result.timeline if e.action == "executed"] == ["pdf", "mail"]


# --- notify: attachments and sms ---------------------------------------------------------------


def test_notify_channels_and_what_each_requires():
	assert notify_channel({}) == "email"
	assert issues("notify", {"to": ["a@example.com"]}) == [("/payload/subject", "'subject' is required")]
	assert issues("notify", {"channel": "system", "to": ["Administrator"]}) == [
		("/payload/subject", "'subject' is required")
	]
	assert issues("notify", {"channel": "sms", "to": ["+16505551234"]}) == [
		("/payload/body", "'body' is required")
	]
	assert issues("notify", {"channel": "sms", "to": ["+16505551234"], "body": "Hi {{ doc.name }}"}) == []
	assert (
		issues(
			"notify",
			{
				"to": ["a@example.com"],
				"subject": "s",
				"attachments": ["{{ steps.pdf.output.file_url }}", "abc123"],
			},
		)
		== []
	)


@pytest.mark.parametrize(
	("payload", "expected"),
	[
		(
			{"channel": "sms", "to": ["+1650555"], "body": "x", "subject": "s"},
			("/payload/subject", "'subject' does not apply to channel 'sms'"),
		),
		(
			{"channel": "sms", "to": ["+1650555"], "body": "x", "attachments": ["f"]},
			("/payload/attachments", "'attachments' does not apply to channel 'sms'"),
		),
		(
			{"channel": "system", "to": ["u"], "subject": "s", "attachments": ["f"]},
			("/payload/attachments", "'attachments' does not apply to channel 'system'"),
		),
		(
			{"channel": "sms", "to": ["+1650555", "call me"], "body": "x"},
			("/payload/to/1", "'call me' is not a phone number"),
		),
		({"to": ["a@example.com"], "subject": "s", "attachments": []}, None),
		(
			{"to": ["a@example.com"], "subject": "s", "attachments": [""]},
			("/payload/attachments/0", "must not be empty"),
		),
		(
			{"to": ["a@example.com"], "subject": "s", "attachments": "file.pdf"},
			("/payload/attachments", "of type array"),
		),
		({"channel": "fax", "to": ["a"], "subject": "s"}, ("/payload/channel", "'fax'")),
	],
)
def test_bad_notify_payloads_name_the_field(payload, expected):
	found = issues("notify", payload)
	if expected is None:
		assert found == []
		return
	assert len(found) == 1, found
	assert found[0][0] == expected[0]
	assert expected[1] in found[0][1]


@pytest.mark.parametrize(
	("raw", "number"),
	[
		("+16505551234", "+16505551234"),
		("+1 (650) 555-1234", "+16505551234"),
		("0171 234.5678", "01712345678"),
		("12345", "12345"),  # a short code
		(4915112345678, "4915112345678"),
		("call me", None),
		("+", None),
		("++4930", None),
		("1234567890123456", None),  # longer than E.164 allows
		("", None),
		(None, None),
		(True, None),
	],
)
def test_sms_number(raw, number):
	assert sms_number(raw) == number


def test_a_rendered_sms_is_checked_before_it_is_sent():
	kind = get_kind("notify")
	ok = {"channel": "sms", "to": ["+16505551234"], "body": "Hi"}
	assert kind.rendered_problems(ok) == []
	assert kind.rendered_problems({**ok, "to": ["+16505551234", "n/a"]}) == [
		("/to/1", "'n/a' is not a phone number")
	]
	assert kind.rendered_problems({**ok, "body": "  "}) == [("/body", "rendered to an empty value")]
	assert kind.rendered_problems({**ok, "to": [""]}) == [
		("/to", "rendered to no values (every entry is empty)")
	]
	# emails are judged by the host (users or addresses)
	assert kind.rendered_problems({"to": ["someone"], "subject": "s"}) == []


def test_the_simulator_fails_an_sms_whose_recipient_renders_to_no_number():
	definition = parse_definition(
		{
			"version": 1,
			"steps": [
				{
					"id": "sms",
					"kind": "notify",
					"payload": {"channel": "sms", "to": ["{{ doc.phone }}"], "body": "Hi"},
				}
			],
		}
	)
	result = simulate(definition, doc={"phone": "ask reception"})
	assert result.status == "Failed"
	[failed] = [e for e in result.timeline if e.action == "failed"]
	assert failed.error == "to/0: 'ask reception' is not a phone number"
	assert simulate(definition, doc={"phone": "+44 20 7946 0958"}).status == "Completed"


def test_the_example_flow_is_valid_and_simulates(capsys):
	assert main(["validate", str(EXAMPLE)]) == 0
	assert "valid" in capsys.readouterr().out
	doc = json.dumps({"name": "TD-9", "allocated_to": "a@example.com"})
	assert main(["simulate", str(EXAMPLE), "--doc", doc]) == 0
	out = capsys.readouterr().out
	assert "generate_pdf" in out and "Final status: Completed" in out


# --- the Graph API stand-in: media uploads -------------------------------------------------------


def test_the_graph_stand_in_records_what_an_upload_carried():
	with FakeGraphAPI(access_token="token-1065") as graph:
		client = CloudAPIClient("1065", "token-1065", base_url=graph.base_url)
		media_id = client.upload_media(b"%PDF-1.4 brief", "application/pdf", "TD-9.pdf")
		[upload] = graph.uploads
		assert (upload.media_id, upload.phone_number_id, upload.file_name) == (media_id, "1065", "TD-9.pdf")
		assert (upload.data, upload.mime_type, upload.type) == (
			b"%PDF-1.4 brief",
			"application/pdf",
			"application/pdf",
		)
		assert client.download_media(client.get_media(media_id).url) == b"%PDF-1.4 brief"
		graph.reset()
		assert graph.uploads == []


def test_the_graph_stand_in_refuses_an_upload_without_its_type_as_meta_does():
	with FakeGraphAPI() as graph:
		client = CloudAPIClient("1065", "token-1065", base_url=graph.base_url, max_attempts=1)
		with pytest.raises(InvalidRequestError) as info:
			client._request(
				"POST",
				client.url("1065", "media"),
				data={"messaging_product": "whatsapp"},
				files={"file": ("a.pdf", b"%PDF", "application/pdf")},
			)
		assert info.value.code == 100 and "parameter type is required" in str(info.value)
		assert graph.uploads == []
