"""The dry-run simulator and the `flow-automation` command line, as an operator uses them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shared_examples import example_flow

from flow_automation.engine.cli import main
from flow_automation.engine.definition import extract_definition
from flow_automation.engine.simulator import RecordingHost, simulate
from flow_automation.engine.validation import parse_definition

REPO = Path(__file__).resolve().parents[2]
QUOTATION_FIXTURE = REPO / "fixtures" / "quotation_follow_up.json"
_SHARED_EXAMPLE = example_flow("quotation_follow_up.json")
# the shared example is the spec; the repo's fixture is the same flow where the spec is absent
EXAMPLE = _SHARED_EXAMPLE if _SHARED_EXAMPLE.exists() else QUOTATION_FIXTURE
FIXTURES = sorted(str(p) for p in (REPO / "fixtures").glob("*.json"))
START = dt.datetime(2024, 3, 1, 9, 0)
OPEN_QUOTE = {
	"name": "QTN-0001",
	"status": "Open",
	"contact_email": "buyer@example.com",
	"grand_total": 1500,
}


def quotation():
	definition, _ = extract_definition(json.loads(EXAMPLE.read_text()))
	return parse_definition(definition)


def executed(result) -> list[tuple[str, dt.datetime]]:
	return [(e.step_id, e.at) for e in result.timeline if e.action == "executed"]


# --- simulate ----------------------------------------------------------------------------


def test_quotation_follow_up_runs_three_checks_at_3_7_and_14_days():
	result = simulate(quotation(), doc=OPEN_QUOTE, start=START)
	day = dt.timedelta(days=1)
	assert executed(result) == [
		("d3_check", START + 3 * day),
		("d3_mail", START + 3 * day),
		("d7_check", START + 7 * day),
		("d7_mail", START + 7 * day),
		("d14_check", START + 14 * day),
		("d14_mail", START + 14 * day),
	]
	checks = [e for e in result.timeline if e.action == "executed" and e.kind == "condition"]
	assert [e.branch for e in checks] == ["yes", "yes", "yes"]
	first_mail = next(e for e in result.timeline if e.step_id == "d3_mail")
	assert first_mail.payload["to"] == ["buyer@example.com"]
	assert first_mail.payload["subject"] == "Your quotation QTN-0001"
	assert "QTN-0001 (1500)" in first_mail.payload["body"]
	assert result.status == "Completed"
	assert result.ended_at == START + 14 * day
	# nothing left the process: the recording host only noted the three emails
	assert [c["step"] for c in result.calls] == ["d3_mail", "d7_mail", "d14_mail"]


def test_quotation_that_is_no_longer_open_stops_after_the_first_check():
	result = simulate(quotation(), doc={**OPEN_QUOTE, "status": "Ordered"}, start=START)
	check = next(e for e in result.timeline if e.action == "executed")
	assert (check.step_id, check.branch) == ("d3_check", "no")
	skipped = {e.step_id for e in result.timeline if e.action == "skipped"}
	assert skipped == {"d3_mail", "d7_check", "d7_mail", "d14_check", "d14_mail"}
	assert result.calls == []
	assert result.status == "Completed"
	assert result.ended_at == START + dt.timedelta(days=3)


def test_simulated_conditions_see_the_document_as_it_is_at_that_moment():
	class ClosesAfterFirstCheck(RecordingHost):
		def reload_document(self):
			self.reloaded = getattr(self, "reloaded", 0) + 1
			return {**self.doc, "status": "Open" if self.reloaded == 1 else "Ordered"}

	result = simulate(quotation(), host=ClosesAfterFirstCheck(OPEN_QUOTE), doc=OPEN_QUOTE, start=START)
	branches = [
		(e.step_id, e.branch) for e in result.timeline if e.kind == "condition" and e.action == "executed"
	]
	assert branches == [("d3_check", "yes"), ("d7_check", "no")]
	assert [c["step"] for c in result.calls] == ["d3_mail"]


def approval_flow():
	return parse_definition(
		{
			"steps": [
				{"id": "approve", "kind": "wait", "trigger": {"type": "manual"}},
				{
					"id": "tell",
					"kind": "notify",
					"depends_on": ["approve"],
					"payload": {
						"to": ["ops@example.com"],
						"subject": "Approved by {{ steps.approve.output.by }}",
					},
				},
				{"id": "hook", "kind": "wait", "depends_on": ["tell"], "trigger": {"type": "on_webhook"}},
			]
		}
	)


def test_answers_complete_manual_and_webhook_steps():
	result = simulate(
		approval_flow(), answers={"approve": {"by": "Jane"}, "hook": {"paid": True}}, start=START
	)
	assert result.status == "Completed"
	tell = next(e for e in result.timeline if e.step_id == "tell" and e.action == "executed")
	assert tell.payload["subject"] == "Approved by Jane"
	assert result.step_state["hook"]["output"] == {"paid": True}


def test_a_flow_waiting_on_a_manual_step_without_an_answer_ends_waiting():
	result = simulate(approval_flow(), start=START)
	assert result.status == "Waiting"
	waiting = [e for e in result.timeline if e.action == "waiting"]
	assert [e.step_id for e in waiting] == ["approve"]
	assert result.calls == []


def test_extra_context_is_seen_by_templates_but_not_over_doc_trigger_or_contact():
	flow = parse_definition(
		{
			"steps": [
				{
					"id": "tell",
					"kind": "notify",
					"payload": {
						"channel": "email",
						"to": ["{{ doc.contact_email }}"],
						"subject": "{{ linked.owner.full_name }} / {{ run.name }} / {{ doc.name }}",
						"body": "hi",
					},
				}
			]
		}
	)
	result = simulate(
		flow,
		doc=OPEN_QUOTE,
		start=START,
		extra_context={"linked": {"owner": {"full_name": "Jane Doe"}}, "run": {"name": "r1"}, "doc": {}},
	)
	tell = next(e for e in result.timeline if e.step_id == "tell")
	assert tell.payload["subject"] == "Jane Doe / r1 / QTN-0001"


def test_simulation_result_as_json():
	data = simulate(quotation(), doc=OPEN_QUOTE, start=START).as_dict()
	json.dumps(data)
	assert data["status"] == "Completed"
	assert data["started_at"] == "2024-03-01 09:00:00"
	assert data["ended_at"] == "2024-03-15 09:00:00"


# --- CLI: validate -----------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: Any) -> str:
	path = tmp_path / name
	path.write_text(content if isinstance(content, str) else json.dumps(content))
	return str(path)


BROKEN = {
	"template_name": "Broken",
	"definition": {
		"version": 1,
		"steps": [
			{"id": "mail", "kind": "notify", "payload": {"to": ["a@example.com"]}},
			{"id": "mail", "kind": "wait"},
			{"id": "fax_it", "kind": "fax"},
			{"id": "later", "kind": "wait", "depends_on": ["ghost"]},
			{"id": "pause", "kind": "wait", "trigger": {"type": "after_delay", "days": -1}},
		],
	},
}


def test_validate_prints_every_error_with_step_and_pointer_and_exits_1(tmp_path, capsys):
	path = write(tmp_path, "broken.json", BROKEN)
	assert main(["validate", path]) == 1
	out = capsys.readouterr().out
	assert "INVALID" in out
	for expected in (
		"step 'mail' /payload/subject",
		"step 'mail' /id",
		"step 'fax_it' /kind",
		"step 'later' /depends_on/0",
		"step 'pause' /trigger/days",
	):
		assert expected in out, out


def test_validate_fixtures_exits_0(capsys):
	assert main(["validate", *FIXTURES]) == 0
	out = capsys.readouterr().out
	assert out.count(": valid (") == len(FIXTURES)


def test_validate_fails_if_any_file_is_invalid(tmp_path, capsys):
	path = write(tmp_path, "broken.json", BROKEN)
	assert main(["validate", FIXTURES[0], path]) == 1
	out = capsys.readouterr().out
	assert "valid (" in out
	assert "INVALID" in out


@pytest.mark.parametrize(
	("content", "words"),
	[(None, "cannot read"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object")],
)
def test_validate_unreadable_or_bad_files(tmp_path, capsys, content, words):
	path = str(tmp_path / "missing.json") if content is None else write(tmp_path, "bad.json", content)
	assert main(["validate", path]) == 1
	captured = capsys.readouterr()
	assert words in captured.out + captured.err
	assert path in captured.out + captured.err


# --- CLI: simulate -----------------------------------------------------------------------


def test_simulate_prints_the_timeline(capsys):
	code = main(
		[
			"simulate",
			str(QUOTATION_FIXTURE),
			"--doc",
			json.dumps(OPEN_QUOTE),
			"--start",
			"2024-03-01 09:00",
		]
	)
	out = capsys.readouterr().out
	assert code == 0
	lines = out.splitlines()
	d3 = next(line for line in lines if "d3_check" in line and "executed" in line)
	assert "+3d 00:00" in d3
	assert "2024-03-04 09:00:00" in d3
	assert "branch 'yes'" in d3
	mail = next(line for line in lines if "d3_mail" in line)
	assert "buyer@example.com" in mail
	assert "Your quotation QTN-0001" in mail
	assert any("+7d" in line and "d7_mail" in line for line in lines)
	assert any("+14d" in line and "d14_mail" in line for line in lines)
	assert "Final status: Completed" in out


def test_simulate_shows_the_branch_taken_and_skips(capsys):
	doc = json.dumps({**OPEN_QUOTE, "status": "Lost"})
	assert main(["simulate", str(QUOTATION_FIXTURE), "--doc", doc, "--start", "2024-03-01"]) == 0
	out = capsys.readouterr().out
	assert "branch 'no'" in out
	assert "skipped" in out
	assert "Final status: Completed" in out


def test_simulate_json_output_parses(capsys):
	code = main(
		[
			"simulate",
			str(QUOTATION_FIXTURE),
			"--doc",
			json.dumps(OPEN_QUOTE),
			"--start",
			"2024-03-01",
			"--json",
		]
	)
	assert code == 0
	data = json.loads(capsys.readouterr().out)
	assert data["status"] == "Completed"
	mails = [e for e in data["timeline"] if e["kind"] == "notify"]
	assert [m["at"] for m in mails] == ["2024-03-04 00:00:00", "2024-03-08 00:00:00", "2024-03-15 00:00:00"]
	assert mails[0]["payload"]["to"] == ["buyer@example.com"]


def test_simulate_reads_the_doc_from_a_file(tmp_path, capsys):
	doc_path = write(tmp_path, "doc.json", OPEN_QUOTE)
	assert (
		main(["simulate", str(QUOTATION_FIXTURE), "--doc", f"@{doc_path}", "--start", "2024-03-01", "--json"])
		== 0
	)
	data = json.loads(capsys.readouterr().out)
	assert data["timeline"][2]["payload"]["subject"] == "Your quotation QTN-0001"


def test_simulate_an_invalid_file_lists_the_problems_and_exits_1(tmp_path, capsys):
	path = write(tmp_path, "broken.json", BROKEN)
	assert main(["simulate", path, "--start", "2024-03-01"]) == 1
	out = capsys.readouterr().out
	assert "INVALID" in out
	assert "step 'fax_it' /kind" in out
	assert "step 'pause' /trigger/days" in out


def test_simulate_with_bad_doc_json_exits_2_with_a_message(capsys):
	assert main(["simulate", str(QUOTATION_FIXTURE), "--doc", "{bad json"]) == 2
	captured = capsys.readouterr()
	assert "--doc" in captured.err
	assert "not valid JSON" in captured.err


def test_simulate_with_an_unreadable_doc_file_exits_2(tmp_path, capsys):
	assert main(["simulate", str(QUOTATION_FIXTURE), "--doc", f"@{tmp_path / 'nope.json'}"]) == 2
	assert "cannot read" in capsys.readouterr().err


def test_simulate_with_a_bad_start_exits_2(capsys):
	assert main(["simulate", str(QUOTATION_FIXTURE), "--start", "someday"]) == 2
	assert "--start" in capsys.readouterr().err


def test_simulate_ending_waiting_on_a_manual_step(tmp_path, capsys):
	path = write(
		tmp_path,
		"gate.json",
		{"steps": [{"id": "approve", "kind": "wait", "trigger": {"type": "manual"}}]},
	)
	assert main(["simulate", path, "--start", "2024-03-01"]) == 0
	assert "Final status: Waiting" in capsys.readouterr().out
	assert main(["simulate", path, "--start", "2024-03-01", "--answers", '{"approve": {"ok": 1}}']) == 0
	assert "Final status: Completed" in capsys.readouterr().out


# --- the real command, once --------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
	env = {
		**os.environ,
		"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
	}
	return subprocess.run(
		[sys.executable, "-m", "flow_automation.engine.cli", *args],
		capture_output=True,
		text=True,
		cwd=REPO,
		env=env,
		check=False,
	)


def test_cli_as_a_real_process(tmp_path):
	ok = run_cli("validate", *FIXTURES)
	assert ok.returncode == 0, ok.stderr
	assert "quotation_follow_up.json: valid" in ok.stdout

	broken = run_cli("validate", write(tmp_path, "broken.json", BROKEN))
	assert broken.returncode == 1
	assert "step 'fax_it' /kind" in broken.stdout

	sim = run_cli(
		"simulate", str(QUOTATION_FIXTURE), "--doc", json.dumps(OPEN_QUOTE), "--start", "2024-03-01 09:00"
	)
	assert sim.returncode == 0, sim.stderr
	assert "+14d 00:00" in sim.stdout
	assert "Final status: Completed" in sim.stdout

	bad_doc = run_cli("simulate", str(QUOTATION_FIXTURE), "--doc", "{nope")
	assert bad_doc.returncode == 2
	assert "--doc" in bad_doc.stderr


# --- a dry run applies the runtime's checks to rendered payloads --------------------------


def _one_step(kind: str, payload: dict[str, Any]):
	return parse_definition({"steps": [{"id": "s", "kind": kind, "payload": payload}]})


@pytest.mark.parametrize(
	("kind", "payload", "error"),
	[
		("send_whatsapp", {"to": "{{ doc.mobile_no }}", "text": "Hi"}, "to: rendered to an empty value"),
		(
			"send_whatsapp",
			{"to": "{{ doc.phone }}", "text": "Hi"},
			"to: '+1 555 01' is not a usable phone number",
		),
		(
			"send_whatsapp",
			{"to": "+16505551234", "text": "{{ doc.essay }}"},
			"text: text body 'xxx",
		),
		("ask", {"to": "{{ contact.number }}", "text": "How was it?"}, "to: rendered to an empty value"),
		("notify", {"to": ["{{ doc.owner }}"], "subject": "Hi"}, "to: rendered to no values"),
		("assign", {"assign_to": ["{{ doc.owner }}"]}, "assign_to: rendered to no values"),
		("webhook", {"url": "{{ variables.hook }}"}, "url: rendered to an empty value"),
		("start_flow", {"template": "{{ variables.next }}"}, "template: rendered to an empty value"),
	],
)
def test_a_step_whose_rendered_payload_cannot_run_fails_in_the_dry_run(kind, payload, error):
	result = simulate(
		_one_step(kind, payload), doc={"name": "X", "phone": "+1 555 01", "essay": "x" * 5000}, start=START
	)
	assert result.status == "Failed"
	[entry] = [e for e in result.timeline if e.step_id == "s"]
	assert entry.action == "failed"
	assert entry.error.startswith(error)
	assert result.calls == []  # the host was never asked to carry it out


def test_a_step_whose_payload_renders_fine_is_executed_in_the_dry_run():
	result = simulate(
		_one_step("send_whatsapp", {"to": "{{ doc.mobile_no }}", "text": "Hi"}),
		doc={"name": "X", "mobile_no": "+16505551234"},
		start=START,
	)
	assert result.status == "Completed"
	assert [c["payload"]["to"] for c in result.calls] == ["+16505551234"]


def test_catalog_shows_what_each_kind_offers_not_its_example(capsys):
	assert main(["catalog"]) == 0
	lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1].strip()}
	assert lines["switch"].endswith("branches: default, (one per value in cases)")
	assert lines["condition"].endswith("branches: yes, no")
	assert lines["ask"].endswith("branches: answered, invalid, timeout, (one per button id or list row id)")
	assert lines["notify"].endswith("branches: -")
