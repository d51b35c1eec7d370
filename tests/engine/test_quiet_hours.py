"""Quiet hours: the window arithmetic (time zones, DST, midnight), its validation, and how the
planner holds message steps until the window opens."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flow_automation.engine import extract_definition, get_kind, simulate
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.planner import Event, advance
from flow_automation.engine.quiet_hours import (
	Window,
	check_window,
	contact_time_zone,
	hold_until,
	next_allowed,
	time_zone_for_number,
	window_for,
)
from flow_automation.engine.validation import parse_definition, validate_definition

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = {"start": "09:00", "end": "19:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat"]}
NIGHT = {"start": "22:00", "end": "06:00"}


def window(**raw) -> Window:
	return Window.from_dict(raw)


def at(text: str, zone=BERLIN) -> dt.datetime:
	return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


def local(value: dt.datetime | None, zone=BERLIN) -> str | None:
	return None if value is None else value.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


# --- next_allowed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
	("now", "expected"),
	[
		("2026-06-16 10:00", None),  # Tuesday, open
		("2026-06-16 09:00", None),  # the first minute is in
		("2026-06-16 18:59:59", None),
		("2026-06-16 19:00", "Wed 2026-06-17 09:00 CEST"),  # the end is out
		("2026-06-16 00:00", "Tue 2026-06-16 09:00 CEST"),  # a Days After trigger at midnight
		("2026-06-20 20:00", "Mon 2026-06-22 09:00 CEST"),  # Saturday evening: Sunday is closed
		("2026-06-21 12:00", "Mon 2026-06-22 09:00 CEST"),  # Sunday
	],
)
def test_office_hours(now, expected):
	assert local(next_allowed(at(now), window(**OFFICE), BERLIN)) == expected


@pytest.mark.parametrize(
	("now", "expected"),
	[
		("2026-06-16 23:00", None),
		("2026-06-17 03:00", None),  # after midnight: still the window that opened at 22:00
		("2026-06-17 05:59", None),
		("2026-06-17 06:00", "Wed 2026-06-17 22:00 CEST"),
		("2026-06-17 12:00", "Wed 2026-06-17 22:00 CEST"),
	],
)
def test_a_window_crossing_midnight(now, expected):
	assert local(next_allowed(at(now), window(**NIGHT), BERLIN)) == expected


def test_a_window_crossing_midnight_belongs_to_the_day_it_opens():
	mondays = window(start="22:00", end="06:00", days=["mon"])
	assert next_allowed(at("2026-06-16 03:00"), mondays, BERLIN) is None  # Tuesday 03:00: Monday's
	assert local(next_allowed(at("2026-06-16 23:00"), mondays, BERLIN)) == "Mon 2026-06-22 22:00 CEST"
	assert local(next_allowed(at("2026-06-15 21:00"), mondays, BERLIN)) == "Mon 2026-06-15 22:00 CEST"


def test_equal_start_and_end_mean_the_whole_day():
	weekdays = window(start="00:00", end="00:00", days=["mon", "tue", "wed", "thu", "fri"])
	assert next_allowed(at("2026-06-19 23:59"), weekdays, BERLIN) is None  # Friday
	assert local(next_allowed(at("2026-06-20 08:00"), weekdays, BERLIN)) == "Mon 2026-06-22 00:00 CEST"


def test_the_answer_is_an_instant_in_the_window_time_zone():
	now = dt.datetime(2026, 6, 16, 5, 0, tzinfo=UTC)  # 07:00 in Berlin, 01:00 in New York
	assert local(next_allowed(now, window(**OFFICE), BERLIN)) == "Tue 2026-06-16 09:00 CEST"
	opens = next_allowed(now, window(**OFFICE), "America/New_York")
	assert local(opens, NEW_YORK) == "Tue 2026-06-16 09:00 EDT"
	assert opens.astimezone(UTC).hour == 13


def test_naive_datetimes_and_unknown_zones_are_refused():
	with pytest.raises(ValueError):
		next_allowed(dt.datetime(2026, 6, 16, 10), window(**OFFICE), BERLIN)
	with pytest.raises(ValueError):
		next_allowed(at("2026-06-16 10:00"), window(**OFFICE), "Mars/Olympus")


# --- DST ---------------------------------------------------------------------------------------


def test_the_day_the_clocks_go_forward():
	# Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST
	assert (
		local(next_allowed(at("2026-03-28 20:00"), window(**OFFICE), BERLIN)) == "Mon 2026-03-30 09:00 CEST"
	)
	opens = next_allowed(at("2026-03-29 00:30"), window(start="09:00", end="19:00"), BERLIN)
	assert local(opens) == "Sun 2026-03-29 09:00 CEST"
	assert opens.astimezone(UTC).hour == 7  # the day before, 09:00 was 08:00 UTC


def test_a_window_that_opens_at_a_skipped_time_opens_when_the_clocks_jump():
	early = window(start="02:30", end="05:00")
	opens = next_allowed(at("2026-03-29 01:00"), early, BERLIN)
	assert opens.astimezone(UTC) == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
	assert local(opens) == "Sun 2026-03-29 03:00 CEST"
	assert next_allowed(at("2026-03-29 03:10"), early, BERLIN) is None


def test_the_day_the_clocks_go_back():
	# Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00 to 03:00 happens twice
	early = window(start="02:30", end="05:00")
	first_0230 = dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
	# (compared in UTC: Python never calls an ambiguous local time equal to another zone's)
	opens = next_allowed(dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC), early, BERLIN)
	assert opens.astimezone(UTC) == first_0230
	# 02:15 the second time (CET): the window opened at the first 02:30
	assert next_allowed(dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC), early, BERLIN) is None
	# office hours on that day are 10 hours long, as on any other
	opens = next_allowed(at("2026-10-25 01:00"), window(start="09:00", end="19:00"), BERLIN)
	assert local(opens) == "Sun 2026-10-25 09:00 CET"
	assert opens.astimezone(UTC).hour == 8


def test_new_york_spring_forward_with_a_night_window():
	night = window(start="01:00", end="03:00")
	# 2026-03-08: 02:00 EST becomes 03:00 EDT, so the window is an hour long
	assert next_allowed(dt.datetime(2026, 3, 8, 6, 30, tzinfo=UTC), night, NEW_YORK) is None  # 01:30 EST
	opens = next_allowed(dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC), night, NEW_YORK)  # 03:00 EDT
	assert local(opens, NEW_YORK) == "Mon 2026-03-09 01:00 EDT"


# --- the planner's view: naive site times ------------------------------------------------------


def test_hold_until_reads_and_answers_in_site_time():
	office = window(**OFFICE)
	assert hold_until(office, dt.datetime(2026, 6, 16, 0, 0), "Asia/Kolkata") == dt.datetime(
		2026, 6, 16, 9, 0
	)
	assert hold_until(office, dt.datetime(2026, 6, 16, 10, 0), "Asia/Kolkata") is None
	assert hold_until(None, dt.datetime(2026, 6, 16, 0, 0), "Asia/Kolkata") is None
	# no site time zone (the CLI): UTC
	assert hold_until(office, dt.datetime(2026, 6, 16, 3, 0), None) == dt.datetime(2026, 6, 16, 9, 0)


def test_contact_time_zone_from_the_contact_or_its_number():
	contacts = window(**OFFICE, timezone="contact")
	early = dt.datetime(2026, 6, 16, 5, 0)  # in Berlin; 20:00 the day before in Los Angeles, 12:00 in Tokyo
	# a Californian number: 09:00 in Los Angeles is 18:00 in Berlin
	assert hold_until(contacts, early, "Europe/Berlin", {"number": "+16505551234"}) == dt.datetime(
		2026, 6, 16, 18, 0
	)
	# a given time zone wins over the number's: noon in Tokyo is open
	tokyo = {"number": "+16505551234", "time_zone": "Asia/Tokyo"}
	assert hold_until(contacts, early, "Europe/Berlin", tokyo) is None
	# nothing known: the site's
	assert hold_until(contacts, early, "Europe/Berlin", {}) == dt.datetime(2026, 6, 16, 9, 0)
	# a country with several time zones tells nothing: the site's
	assert hold_until(contacts, early, "Europe/Berlin", {"number": "+61412345678"}) == dt.datetime(
		2026, 6, 16, 9, 0
	)


@pytest.mark.parametrize(
	("number", "zone"),
	[
		("+4915123456789", "Europe/Berlin"),
		("4915123456789", "Europe/Berlin"),  # a wa_id, as Meta sends it
		("0049 151 23456789", "Europe/Berlin"),
		("+16505551234", "America/Los_Angeles"),
		("+12125551234", "America/New_York"),
		("+447911123456", "Europe/London"),  # London and the crown dependencies keep one clock
		("+5511987654321", "America/Sao_Paulo"),
		("+79161234567", None),  # a Russian mobile: eleven time zones
		("+61412345678", None),
		("0151 23456789", None),  # national: no country
		("not a number", None),
		("", None),
		(None, None),
	],
)
def test_time_zone_for_number(number, zone):
	assert time_zone_for_number(number) == zone


def test_contact_time_zone_ignores_an_unknown_given_zone():
	assert contact_time_zone({"time_zone": "Mars/Olympus", "number": "+4915123456789"}) == "Europe/Berlin"
	assert contact_time_zone(None) is None


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
	("raw", "expected"),
	[
		(OFFICE, []),
		(NIGHT, []),
		({"start": "9:00", "end": "19:00:30", "timezone": "Europe/Berlin"}, []),
		({"start": "09:00", "end": "19:00", "days": []}, [("/days", "no day is open")]),
		({"end": "19:00"}, [("/start", "'start' is required")]),
		({"start": "25:00", "end": "19:00"}, [("/start", "'25:00' is not a time of day")]),
		({"start": "09:00", "end": 19}, [("/end", "19 is not a time of day")]),
		(
			{"start": "09:00", "end": "19:00", "days": ["mon", "funday"]},
			[("/days/1", "'funday' is not a day")],
		),
		({"start": "09:00", "end": "19:00", "days": ["mon", "mon"]}, [("/days/1", "'mon' is listed twice")]),
		({"start": "09:00", "end": "19:00", "days": "mon"}, [("/days", "must be a list of days")]),
		(
			{"start": "09:00", "end": "19:00", "timezone": "Mars/Olympus"},
			[("/timezone", "is not a time zone")],
		),
		({"start": "09:00", "end": "19:00", "from": "x"}, [("/from", "unknown field 'from'")]),
		("09:00-19:00", [("", "quiet hours must be an object")]),
	],
)
def test_check_window(raw, expected):
	found = check_window(raw)
	assert len(found) == len(expected), found
	for (pointer, message), (want_pointer, want_text) in zip(found, expected, strict=True):
		assert pointer == want_pointer and want_text in message


def test_window_for_a_step():
	flow = {"start": "09:00", "end": "19:00"}
	own = {"start": "10:00", "end": "12:00"}
	assert window_for(True, flow).start == dt.time(9)
	assert window_for(own, flow).start == dt.time(10)
	assert window_for(False, flow) is None
	assert window_for(None, flow) is None
	assert window_for(True, None) is None
	assert window_for({"start": "nope"}, flow) is None  # invalid: validation reports it


def test_the_message_kinds_carry_the_flag_in_the_catalog():
	flagged = {
		name
		for name in ("notify", "send_whatsapp", "ask", "webhook", "create_document", "split")
		if get_kind(name).quiet_hours
	}
	assert flagged == {"notify", "send_whatsapp", "ask"}
	assert get_kind("notify").describe()["quiet_hours"] is True


def flow_def(*steps, quiet_hours=None) -> dict:
	raw = {"version": 1, "steps": list(steps)}
	if quiet_hours is not None:
		raw["quiet_hours"] = quiet_hours
	return raw


MAIL = {"id": "mail", "kind": "notify", "payload": {"to": ["a@example.com"], "subject": "Hi"}}
NOTE = {"id": "note", "kind": "create_document", "payload": {"doctype": "Note", "fields": {"title": "x"}}}


def issues_of(raw) -> list[tuple]:
	return [(i.step_id, i.pointer, i.message) for i in validate_definition(raw)]


def test_validation_names_the_flow_or_the_step_and_the_field():
	assert issues_of(flow_def(MAIL, quiet_hours=OFFICE)) == []
	assert issues_of(flow_def({**MAIL, "quiet_hours": False}, quiet_hours=OFFICE)) == []
	assert issues_of(flow_def({**MAIL, "quiet_hours": None})) == []
	assert issues_of(flow_def({**MAIL, "quiet_hours": NIGHT})) == []
	assert issues_of(flow_def(MAIL, quiet_hours={**OFFICE, "days": []})) == [
		(None, "/quiet_hours/days", "no day is open: messages would never go out; list at least one day")
	]
	assert issues_of(flow_def({**MAIL, "quiet_hours": {"start": "09:00", "end": "19:00", "days": []}})) == [
		("mail", "/quiet_hours/days", "no day is open: messages would never go out; list at least one day")
	]
	assert issues_of(flow_def({**MAIL, "quiet_hours": "nights"})) == [
		("mail", "/quiet_hours", "must be of type object or boolean or null, got str 'nights'")
	]
	(found,) = issues_of(flow_def({**NOTE, "quiet_hours": OFFICE}))
	assert found[:2] == ("note", "/quiet_hours")
	assert "quiet hours apply only to message steps (notify, " in found[2]
	assert issues_of(flow_def(MAIL, quiet_hours="9-5")) == [
		(None, "/quiet_hours", "must be of type object or null, got str '9-5'")
	]


def test_definitions_keep_the_settings_through_a_round_trip():
	raw = flow_def({**MAIL, "quiet_hours": False}, {**NOTE, "id": "n2"}, quiet_hours=OFFICE)
	definition = parse_definition(raw)
	assert definition.quiet_hours == OFFICE
	assert definition.step("mail").quiet_hours is False
	assert definition.step("n2").quiet_hours is True
	again = definition.to_dict()
	assert again["quiet_hours"] == OFFICE
	assert again["steps"][0]["quiet_hours"] is False
	assert "quiet_hours" not in again["steps"][1]
	assert "quiet_hours" not in parse_definition(flow_def(MAIL)).to_dict()


# --- the planner ------------------------------------------------------------------------------


class Host:
	def __init__(self, fail_first: int = 0):
		self.calls: list[tuple[str, dt.datetime]] = []
		self.fail_first = fail_first

	def execute(self, step, payload, context, attempt):
		self.calls.append((step.id, context["now"]))
		if attempt <= self.fail_first:
			raise StepError("SMTP is down", retryable=True)
		return Outcome.done({"sent": step.id})

	def reload_document(self):
		return {}

	def perform(self, step, effect, context):
		pass


SITE = {"site": {"time_zone": "Europe/Berlin"}}


def run(raw, now, state=None, host=None, context=None, events=()):
	host = host or Host()
	result = advance(
		parse_definition(raw),
		state or {},
		{},
		{**SITE, **(context or {})},
		now,
		host,
		events=events,
		seed="r1",
	)
	return result, host


def test_a_midnight_start_holds_the_message_until_the_window_opens():
	raw = flow_def(MAIL, NOTE, quiet_hours=OFFICE)
	midnight = dt.datetime(2026, 6, 16, 0, 0)
	result, host = run(raw, midnight)
	assert host.calls == [("note", midnight)]  # other steps run at any hour
	entry = result.step_state["mail"]
	assert (entry["status"], entry["due_at"], entry["scheduled_for"]) == (
		"scheduled",
		"2026-06-16 09:00:00",
		"quiet_hours",
	)
	assert [(t.step_id, t.at, t.purpose) for t in result.timers] == [
		("mail", dt.datetime(2026, 6, 16, 9, 0), "quiet_hours")
	]
	assert result.status == "Waiting" and result.next_due == dt.datetime(2026, 6, 16, 9, 0)
	# the timer fires at 09:00: the message goes out
	later, host = run(raw, dt.datetime(2026, 6, 16, 9, 0), state=result.step_state)
	assert host.calls == [("mail", dt.datetime(2026, 6, 16, 9, 0))]
	assert later.status == "Completed" and later.step_state["mail"]["status"] == "done"


def test_a_step_override_wins_over_the_flow():
	midnight = dt.datetime(2026, 6, 16, 0, 0)
	result, host = run(flow_def({**MAIL, "quiet_hours": False}, quiet_hours=OFFICE), midnight)
	assert host.calls == [("mail", midnight)] and result.status == "Completed"
	result, host = run(flow_def({**MAIL, "quiet_hours": None}, quiet_hours=OFFICE), midnight)
	assert host.calls == [("mail", midnight)]
	# a window of its own, on a flow without one
	result, host = run(flow_def({**MAIL, "quiet_hours": {"start": "06:00", "end": "07:00"}}), midnight)
	assert host.calls == [] and result.step_state["mail"]["due_at"] == "2026-06-16 06:00:00"


def test_no_window_means_any_hour():
	_, host = run(flow_def(MAIL), dt.datetime(2026, 6, 16, 3, 0))
	assert host.calls == [("mail", dt.datetime(2026, 6, 16, 3, 0))]


def test_a_delay_that_ends_in_quiet_hours_is_held_again_with_a_new_timer():
	raw = flow_def(
		NOTE,
		{**MAIL, "depends_on": ["note"], "trigger": {"type": "after_delay", "hours": 10}},
		quiet_hours=OFFICE,
	)
	result, host = run(raw, dt.datetime(2026, 6, 16, 12, 0))
	assert result.step_state["mail"]["due_at"] == "2026-06-16 22:00:00"
	later, host = run(raw, dt.datetime(2026, 6, 16, 22, 0), state=result.step_state)
	assert host.calls == []
	entry = later.step_state["mail"]
	assert (entry["due_at"], entry["scheduled_for"]) == ("2026-06-17 09:00:00", "quiet_hours")
	# the delay's timer is replaced, not kept beside the new one
	assert later.cleared_timers == ["mail"]
	assert [(t.step_id, t.at) for t in later.timers] == [("mail", dt.datetime(2026, 6, 17, 9, 0))]


def test_a_retry_that_falls_in_quiet_hours_waits_for_the_window():
	raw = flow_def({**MAIL, "retry": {"max_attempts": 3, "backoff_seconds": 3600}}, quiet_hours=OFFICE)
	host = Host(fail_first=1)
	result, _ = run(raw, dt.datetime(2026, 6, 16, 18, 30), host=host)
	retry_at = result.step_state["mail"]["due_at"]
	assert result.step_state["mail"]["scheduled_for"] == "retry" and retry_at > "2026-06-16 19:00:00"
	later, _ = run(raw, dt.datetime.fromisoformat(retry_at), state=result.step_state, host=host)
	assert len(host.calls) == 1  # not tried again at night
	assert later.step_state["mail"]["due_at"] == "2026-06-17 09:00:00"


def test_a_gate_released_at_night_sends_in_the_morning():
	raw = flow_def({**MAIL, "trigger": {"type": "manual"}}, quiet_hours=OFFICE)
	waiting, host = run(raw, dt.datetime(2026, 6, 16, 12, 0))
	assert waiting.step_state["mail"]["status"] == "waiting"
	night = dt.datetime(2026, 6, 16, 23, 0)
	released, host = run(raw, night, state=waiting.step_state, events=[Event("mail", "complete", {"ok": 1})])
	assert host.calls == []
	assert released.step_state["mail"]["due_at"] == "2026-06-17 09:00:00"
	done, host = run(raw, dt.datetime(2026, 6, 17, 9, 0), state=released.step_state)
	assert host.calls == [("mail", dt.datetime(2026, 6, 17, 9, 0))]
	assert done.step_state["mail"]["output"] == {"ok": 1, "sent": "mail"}  # the gate's result kept


def test_the_contact_time_zone_comes_from_the_context():
	raw = flow_def(MAIL, quiet_hours={**OFFICE, "timezone": "contact"})
	result, _ = run(raw, dt.datetime(2026, 6, 16, 5, 0), context={"contact": {"number": "+16505551234"}})
	assert result.step_state["mail"]["due_at"] == "2026-06-16 18:00:00"  # 09:00 in California


def test_simulate_shows_the_hold():
	raw = flow_def(MAIL, quiet_hours=OFFICE)
	result = simulate(parse_definition(raw), start=dt.datetime(2026, 6, 20, 20, 0), time_zone="Europe/Berlin")
	assert result.status == "Completed"
	assert [(e.action, e.note) for e in result.timeline] == [
		("scheduled", "due 2026-06-22 09:00:00 (quiet_hours)"),
		("executed", ""),
	]
	assert result.ended_at == dt.datetime(2026, 6, 22, 9, 0)


def test_simulate_shows_a_delay_held_again():
	raw = flow_def(
		NOTE,
		{**MAIL, "depends_on": ["note"], "trigger": {"type": "after_delay", "hours": 10}},
		quiet_hours=OFFICE,
	)
	result = simulate(parse_definition(raw), start=dt.datetime(2026, 6, 16, 12, 0))
	notes = [(e.step_id, e.action, e.note) for e in result.timeline if e.step_id == "mail"]
	assert notes == [
		("mail", "scheduled", "due 2026-06-16 22:00:00 (delay)"),
		("mail", "scheduled", "due 2026-06-17 09:00:00 (quiet_hours)"),
		("mail", "executed", ""),
	]


# --- the example flow --------------------------------------------------------------------------

EXAMPLE = (
	Path(__file__).resolve().parents[2] / "flow_automation" / "tests" / "flows" / "overdue_reminder_ab.json"
)


def test_the_example_flow_is_valid_and_holds_its_messages():
	definition_raw, meta = extract_definition(json.loads(EXAMPLE.read_text()))
	assert validate_definition(definition_raw) == []
	assert meta["trigger"]["time"] == "00:00:00"
	doc = {"name": "TD-1", "description": "Send the quote", "date": "2026-06-19", "owner": "a@example.com"}
	linked = {"allocated_to": {"mobile_no": "+4915123456789"}}
	result = simulate(
		parse_definition(definition_raw),
		doc=doc,
		start=dt.datetime(2026, 6, 20, 0, 0),  # a Saturday, midnight
		extra_context={"linked": linked},
		seed="FR-0001",
	)
	assert result.status == "Completed"
	scheduled = {e.step_id: e.note for e in result.timeline if e.action == "scheduled"}
	mail = "friendly_mail" if result.step_state["variant"]["branch"] == "friendly" else "firm_mail"
	assert scheduled[mail] == "due 2026-06-20 09:00:00 (quiet_hours)"
	assert scheduled["nudge"] == "due 2026-06-22 10:00:00 (quiet_hours)"  # its own hours: Monday 10:00
	executed = {e.step_id: e.at for e in result.timeline if e.action == "executed"}
	assert executed["owner_alert"] == dt.datetime(2026, 6, 22, 9, 0)  # two days after the email


def test_the_published_schema_describes_quiet_hours_and_split():
	from jsonschema import Draft202012Validator

	from flow_automation.engine import definition_json_schema

	validator = Draft202012Validator(definition_json_schema())
	example, _ = extract_definition(json.loads(EXAMPLE.read_text()))
	assert list(validator.iter_errors(example)) == []
	assert list(validator.iter_errors(flow_def({**MAIL, "quiet_hours": {"start": "09:00", "colour": "x"}})))
	assert list(
		validator.iter_errors(flow_def(MAIL, quiet_hours={"start": "09:00", "end": "10:00", "days": ["x"]}))
	)
