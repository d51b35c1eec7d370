"""The `send_whatsapp` and `ask` step kinds: payload checks, branches, replies, the simulator."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import wa_testkit  # makes the repository importable
from shared_examples import EXAMPLE_FLOWS, example_params, needs_shared_examples

from flow_automation.channels.whatsapp import MessageValidationError, limits
from flow_automation.engine import catalog
from flow_automation.engine.definition import extract_definition
from flow_automation.engine.planner import Event
from flow_automation.engine.simulator import simulate
from flow_automation.engine.validation import parse_definition, validate_definition
from flow_automation.engine.whatsapp_kinds import (
	ANSWERED,
	INVALID,
	TIMEOUT,
	ask_branches,
	ask_timeout,
	ask_wait,
	check_ask,
	check_send,
	content_fingerprint,
	fallback_payload,
	judge_reply,
	message_body,
	resume_ask,
)

EXAMPLES = EXAMPLE_FLOWS
NOW = dt.datetime(2026, 3, 1, 9, 0)
needs_examples = needs_shared_examples


def send(**payload):
	return {"to": "{{ contact.number }}", **payload}


def pointers(problems):
	return [pointer for pointer, _ in problems]


def validate_step(kind: str, payload: dict) -> list[str]:
	return [str(i) for i in validate_definition({"steps": [{"id": "s", "kind": kind, "payload": payload}]})]


# --- registration and the shared examples ------------------------------------------------------
def test_both_kinds_are_in_the_catalog():
	assert catalog.get_kind("send_whatsapp").group == "Messaging"
	ask = catalog.get_kind("ask")
	assert ask.waits({}) is True and ask.resume is resume_ask and not ask.is_pure
	# what every ask offers, and what its payload adds: not the example's buttons
	assert ask.describe()["branches"] == {
		"fixed": [ANSWERED, INVALID, TIMEOUT],
		"from_payload": "one per button id or list row id",
		"paths": ["buttons[].id", "list.rows[].id", "list.sections[].rows[].id"],
	}


@pytest.mark.parametrize(
	"name",
	example_params(
		[
			"customer_onboarding.json",
			"keyword_menu_bot.json",
			"partner_run_dispatcher.json",
			"parallel_campaign.json",
			"quotation_follow_up.json",
		]
	),
)
def test_every_shared_example_validates(name):
	definition, _ = extract_definition(json.loads((EXAMPLES / name).read_text()))
	assert validate_definition(definition) == []


# --- send_whatsapp payloads -----------------------------------------------------------------
def test_send_modes_as_the_examples_write_them_are_valid():
	assert check_send(send(mode="text", text="Thank you!")) == []
	assert (
		check_send(send(mode="document", url="https://example.com/c.pdf", filename="c.pdf", caption="Ours"))
		== []
	)
	assert (
		check_send(
			send(
				mode="template",
				template="production_run_assigned_v3",
				language="{{ variables.partner_language or 'en' }}",
				parameters=["{{ doc.name }}", "{{ variables.due_date }}"],
				buttons=[{"id": "accept"}, {"id": "decline"}],
				dedup_minutes=60,
			)
		)
		== []
	)
	assert check_send(send(mode="buttons", text="Pick", buttons=[{"id": "a", "title": "A"}])) == []
	assert (
		check_send(
			send(mode="list", text="Pick", list={"button": "Menu", "rows": [{"id": "a", "title": "A"}]})
		)
		== []
	)


def test_text_limits_come_from_the_channel():
	too_long = "x" * (limits.TEXT_BODY_MAX + 1)
	[(pointer, message)] = check_send(send(mode="text", text=too_long))
	assert pointer == "/text" and str(limits.TEXT_BODY_MAX) in message
	# a template's rendered length is unknown when the flow is saved: not held against it
	assert check_send(send(mode="text", text="{{ doc.notes }}" + "x" * limits.TEXT_BODY_MAX)) == []


def test_reply_buttons_are_held_to_meta_limits_with_payload_pointers():
	buttons = [{"id": str(i), "title": f"B{i}"} for i in range(limits.REPLY_BUTTONS_MAX + 1)]
	assert "/buttons" in pointers(check_send(send(mode="buttons", text="Pick", buttons=buttons)))
	long_title = [{"id": "a", "title": "x" * (limits.REPLY_BUTTON_TITLE_MAX + 1)}]
	assert pointers(check_send(send(mode="buttons", text="Pick", buttons=long_title))) == ["/buttons/0/title"]


def test_list_rows_limit_and_pointer():
	rows = [{"id": f"r{i}", "title": f"Row {i}"} for i in range(limits.LIST_ROWS_MAX + 1)]
	problems = check_send(send(mode="list", text="Pick", list={"button": "Menu", "rows": rows}))
	assert "/list/rows" in pointers(problems)


def test_template_name_language_and_parameters_are_checked():
	assert pointers(check_send(send(mode="template", template="Bad Name"))) == ["/template"]
	assert pointers(check_send(send(mode="template", template="ok", language="english"))) == ["/language"]
	assert pointers(check_send(send(mode="template", template="ok", parameters=["a\nb"]))) == [
		"/parameters/0"
	]
	assert check_send(send(mode="template", template="{{ variables.template }}")) == []


def test_keys_that_do_not_apply_to_the_mode_are_named():
	assert pointers(check_send(send(mode="text", text="hi", caption="no"))) == ["/caption"]
	assert pointers(check_send(send(mode="template", template="ok", text="no"))) == ["/text"]


def test_media_needs_exactly_one_source_and_a_caption_where_allowed():
	assert pointers(check_send(send(mode="image"))) == ["/url"]
	assert pointers(check_send(send(mode="image", url="https://e.com/a.jpg", media_id="1"))) == ["/url"]
	assert pointers(check_send(send(mode="audio", url="https://e.com/a.ogg", caption="no"))) == ["/caption"]
	assert pointers(check_send(send(mode="image", url="ftp://e.com/a.jpg"))) == ["/url"]
	assert pointers(check_send(send(mode="media", url="https://e.com/a"))) == ["/media_type"]
	assert check_send(send(mode="media", media_type="video", file="/files/a.mp4")) == []


def test_a_literal_international_number_must_be_possible():
	assert pointers(check_send({"to": "+1 23", "mode": "text", "text": "hi"})) == ["/to"]
	assert check_send({"to": "+16505551234", "mode": "text", "text": "hi"}) == []


def test_fallback_template_is_checked_under_its_own_pointer():
	payload = send(mode="text", text="hi", fallback_template={"template": "Bad Name"})
	assert pointers(check_send(payload)) == ["/fallback_template/template"]
	assert fallback_payload(send(mode="text", text="hi", fallback_template={"template": "reopen_v1"})) == {
		"to": "{{ contact.number }}",
		"mode": "template",
		"template": "reopen_v1",
	}


def test_schema_errors_surface_through_validation():
	assert any("/payload/mode" in issue for issue in validate_step("send_whatsapp", send(mode="fax")))
	assert any(
		"/payload/to" in issue for issue in validate_step("send_whatsapp", {"mode": "text", "text": "x"})
	)
	assert any(
		"/payload/colour" in issue for issue in validate_step("send_whatsapp", send(text="x", colour=1))
	)


def test_message_body_builds_every_mode():
	to = "+16505551234"
	text = message_body({"mode": "text", "text": "hi"}, to, callback_data="run=R;step=s")
	assert text["to"] == "16505551234" and text["text"]["body"] == "hi"
	assert text["biz_opaque_callback_data"] == "run=R;step=s"
	template = message_body(
		{
			"mode": "template",
			"template": "t_v1",
			"language": "en",
			"parameters": ["A"],
			"buttons": [{"id": "ok"}],
		},
		to,
		language="pt_BR",
	)
	assert template["template"]["language"] == {"code": "pt_BR"}
	assert template["template"]["components"][1]["parameters"] == [{"type": "payload", "payload": "ok"}]
	document = message_body(
		{"mode": "document", "url": "https://e.com/c.pdf", "filename": "c.pdf", "caption": "C"}, to
	)
	assert document["document"] == {"link": "https://e.com/c.pdf", "caption": "C", "filename": "c.pdf"}
	uploaded = message_body({"mode": "image", "file": "/files/a.jpg"}, to, media_id="99")
	assert uploaded["image"] == {"id": "99"}
	listed = message_body(
		{"mode": "list", "text": "Pick", "list": {"button": "Menu", "rows": [{"id": "a", "title": "A"}]}}, to
	)
	assert listed["interactive"]["action"]["sections"][0]["rows"] == [{"id": "a", "title": "A"}]
	with pytest.raises(MessageValidationError):
		message_body({"mode": "text", "text": "x" * (limits.TEXT_BODY_MAX + 1)}, to)


def test_content_fingerprint_ignores_the_recipient_but_not_the_parameters():
	a = {"to": "+1", "mode": "template", "template": "t", "parameters": ["RUN-1"]}
	assert content_fingerprint(a) == content_fingerprint({**a, "to": "+2"})
	assert content_fingerprint(a) != content_fingerprint({**a, "parameters": ["RUN-2"]})


# --- ask payloads and branches --------------------------------------------------------------------
BUTTONS = {
	"to": "+16505551234",
	"text": "How was it?",
	"buttons": [{"id": "good", "title": "Great"}, {"id": "bad", "title": "Not good"}],
	"save_as": "answer",
	"timeout_hours": 48,
}
FREE_TEXT = {
	"to": "+16505551234",
	"text": "Order number?",
	"expect": {"regex": r"^SO-\d{4,}$", "retries": 2, "retry_text": "Not an order number."},
	"save_as": "order_no",
	"timeout_minutes": 15,
}


def test_ask_branches_are_its_choice_ids_then_the_outcomes():
	assert ask_branches(BUTTONS) == ("good", "bad", ANSWERED, INVALID, TIMEOUT)
	listed = {"list": {"button": "Options", "rows": [{"id": "catalog", "title": "Catalog"}]}}
	assert ask_branches(listed) == ("catalog", ANSWERED, INVALID, TIMEOUT)
	assert ask_branches(FREE_TEXT) == (ANSWERED, INVALID, TIMEOUT)


def test_a_branch_the_ask_does_not_offer_is_refused():
	issues = validate_definition(
		{
			"steps": [
				{"id": "q", "kind": "ask", "payload": BUTTONS},
				{
					"id": "x",
					"kind": "send_whatsapp",
					"parent_id": "q",
					"branch": "maybe",
					"trigger": {"type": "on_prev_complete"},
					"payload": {"to": "+16505551234", "text": "x"},
				},
			]
		}
	)
	assert [i.pointer for i in issues] == ["/branch"]
	assert "good, bad, answered, invalid, timeout" in issues[0].message


def test_ask_checks():
	assert check_ask(BUTTONS) == [] and check_ask(FREE_TEXT) == []
	both = {**BUTTONS, "list": {"button": "B", "rows": [{"id": "a", "title": "A"}]}}
	assert pointers(check_ask(both)) == ["/list"]
	assert pointers(check_ask({**FREE_TEXT, "expect": {"regex": "(["}})) == ["/expect/regex"]
	assert pointers(check_ask({**FREE_TEXT, "save_as": "order no"})) == ["/save_as"]
	reserved = {**BUTTONS, "buttons": [{"id": "timeout", "title": "Later"}]}
	assert pointers(check_ask(reserved)) == ["/buttons/0/id"]
	four = {**BUTTONS, "buttons": [{"id": str(i), "title": str(i)} for i in range(4)]}
	assert "/buttons" in pointers(check_ask(four))


def test_ask_timeout_adds_units_and_defaults_to_a_day():
	assert ask_timeout({"timeout_minutes": 15}) == dt.timedelta(minutes=15)
	assert ask_timeout({"timeout_hours": 1, "timeout_minutes": 30}) == dt.timedelta(minutes=90)
	assert ask_timeout({}) == dt.timedelta(hours=24)


def test_ask_wait_holds_what_a_reply_needs():
	outcome = ask_wait(BUTTONS, NOW, to="+16505551234", account="Main", key="R:q:1", wamid="wamid.Q")
	assert outcome.status == "waiting" and outcome.wait_type == "reply"
	assert outcome.until == NOW + dt.timedelta(hours=48)
	wait = dict(outcome.wait_data)
	assert wait["choices"] == {"good": "Great", "bad": "Not good"}
	assert wait["retries"] == 1 and wait["retries_used"] == 0  # choices default to one re-ask
	assert wait["question"]["mode"] == "buttons" and wait["key"] == "R:q:1"
	free = dict(ask_wait(FREE_TEXT, NOW, to="+1").wait_data)
	assert free["retries"] == 2 and free["retry_text"] == "Not an order number."


@pytest.mark.parametrize(
	("reply", "expected"),
	[
		({"reply_id": "good", "reply_title": "Great"}, ("good", "good")),
		({"text": "  not GOOD "}, ("bad", "bad")),  # a typed title counts
		({"text": "bad"}, ("bad", "bad")),  # so does a typed id
		({"text": "whatever"}, (None, None)),
		({"reply_id": "stale_button"}, (None, None)),
		("good", ("good", "good")),  # the simulator's bare answers
	],
)
def test_judge_reply_for_choices(reply, expected):
	wait = dict(ask_wait(BUTTONS, NOW, to="+1").wait_data)
	assert judge_reply(wait, reply) == expected


def test_judge_reply_for_free_text():
	wait = dict(ask_wait(FREE_TEXT, NOW, to="+1").wait_data)
	assert judge_reply(wait, {"text": " SO-12345 "}) == (ANSWERED, "SO-12345")
	assert judge_reply(wait, {"text": "SO-1"}) == (None, None)
	assert judge_reply(wait, {"type": "image"}) == (None, None)
	anything = dict(ask_wait({"to": "+1", "text": "Comments?"}, NOW, to="+1").wait_data)
	assert judge_reply(anything, {"text": "all fine"}) == (ANSWERED, "all fine")


def test_resume_answers_saves_and_releases():
	wait = dict(ask_wait(BUTTONS, NOW, to="+1", account="Main").wait_data)
	outcome = resume_ask(wait, Event("q", "reply", {"reply_id": "bad", "wamid": "wamid.A"}), {})
	assert (outcome.status, outcome.branch) == ("done", "bad")
	assert outcome.variables == {"answer": "bad"}
	assert outcome.output["wamid"] == "wamid.A"
	assert [e["type"] for e in outcome.effects] == ["release"]


def test_resume_reasks_until_the_retries_are_used_then_takes_invalid():
	wait = dict(ask_wait(FREE_TEXT, NOW, to="+1", key="R:q:1").wait_data)
	first = resume_ask(wait, Event("q", "reply", {"text": "no"}), {})
	assert first.status == "waiting" and first.wait_data == {"retries_used": 1}
	[effect] = first.effects
	assert effect["type"] == "reprompt" and effect["text"] == "Not an order number."
	assert effect["key"] == "R:q:1:retry:1"
	wait.update(first.wait_data)
	second = resume_ask(wait, Event("q", "reply", {"text": "no"}), {})
	assert second.status == "waiting" and second.effects[0]["key"] == "R:q:1:retry:2"
	wait.update(second.wait_data)
	third = resume_ask(wait, Event("q", "reply", {"text": "still no"}), {})
	assert (third.status, third.branch) == ("done", INVALID)
	assert third.variables == {"order_no": None} and third.effects[0]["type"] == "release"


def test_resume_on_timeout():
	wait = dict(ask_wait(BUTTONS, NOW, to="+1").wait_data)
	outcome = resume_ask(wait, Event("q", "timeout"), {})
	assert (outcome.status, outcome.branch) == ("done", TIMEOUT)
	assert outcome.effects[0]["type"] == "release"


# --- the simulator ----------------------------------------------------------------------------------
def _example(name: str):
	definition, _ = extract_definition(json.loads((EXAMPLES / name).read_text()))
	return parse_definition(definition)


@needs_examples
def test_simulated_menu_bot_with_an_invalid_then_a_valid_order_number():
	result = simulate(
		_example("keyword_menu_bot.json"),
		contact={"number": "+16505551234", "name": "Sheena"},
		answers={"menu": "order", "order_no": ["hello", "SO-12345"]},
		start=NOW,
	)
	assert result.status == "Completed"
	assert result.variables == {"choice": "order", "order_no": "SO-12345"}
	effects = [call["effect"]["type"] for call in result.calls if "effect" in call]
	assert effects == ["release", "reprompt", "release"]
	sent = [call["payload"]["text"] for call in result.calls if call.get("kind") == "send_whatsapp"]
	assert sent == ["We're checking order SO-12345 — a colleague will reply shortly."]


@needs_examples
def test_simulated_menu_bot_times_out_after_fifteen_minutes():
	result = simulate(_example("keyword_menu_bot.json"), contact={"number": "+16505551234"}, start=NOW)
	bye = next(e for e in result.timeline if e.step_id == "bye" and e.action == "executed")
	assert bye.at == NOW + dt.timedelta(minutes=15)
	assert result.step_state["menu"]["branch"] == TIMEOUT


@needs_examples
def test_simulated_onboarding_survey_answers():
	doc = {"name": "CUST-1", "customer_name": "Ana", "mobile_no": "+16505551234"}
	good = simulate(_example("customer_onboarding.json"), doc=doc, answers={"survey": "good"}, start=NOW)
	assert good.variables["survey_answer"] == "good"
	assert good.step_state["thanks"]["status"] == "done"
	assert good.step_state["complaint"]["status"] == "skipped"
	silent = simulate(_example("customer_onboarding.json"), doc=doc, start=NOW)
	assert silent.step_state["survey"]["branch"] == TIMEOUT
	assert silent.step_state["no_answer"]["status"] == "done"
