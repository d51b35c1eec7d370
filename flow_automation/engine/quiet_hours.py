"""Quiet hours: the hours in which message steps may reach people.

A window is JSON, the same on a template and on a step:

    {"start": "09:00", "end": "19:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
     "timezone": "site"}

- `start` / `end`: wall-clock times (HH:MM or HH:MM:SS). Messages go out from `start` up to,
  not including, `end`. A window whose end is earlier than its start crosses midnight
  (22:00 to 06:00) and belongs to the day it starts on; equal times mean the whole day.
- `days`: the days a window opens on (default: every day).
- `timezone`: `site` (default: the System Settings time zone), `contact` (the contact's own
  when known — given, or inferred from their phone number's country — else the site's), or
  an IANA name such as `Europe/Berlin`.

Pure: no clock and no Frappe. `next_allowed` answers "may it go now, and if not, when" for
an aware datetime, in instants, so DST gaps and repeated hours are handled: a window that
opens at a wall time the clocks skip opens when they land after it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_time_zones

from flow_automation.channels.whatsapp import InvalidPhoneNumber, normalize_number

Problems = list[tuple[str, str]]

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SITE = "site"
CONTACT = "contact"
DEFAULT_SITE_TIME_ZONE = "UTC"  # what a context without a site time zone (the CLI) assumes
KEYS = ("start", "end", "days", "timezone")
# The step state's `scheduled_for` for a step held until its window opens.
QUIET_HOURS = "quiet_hours"

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_UTC = dt.timezone.utc

WINDOW_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["start", "end"],
	"properties": {
		"start": {"type": "string", "description": "first minute messages may go out, HH:MM"},
		"end": {
			"type": "string",
			"description": "when they stop, HH:MM (earlier than start: crosses midnight)",
		},
		"days": {
			"type": "array",
			"items": {"enum": list(DAYS)},
			"description": "days the window opens on (default: every day)",
		},
		"timezone": {
			"type": "string",
			"description": "site (default), contact, or an IANA name such as Europe/Berlin",
		},
	},
	"additionalProperties": False,
}


@dataclass(frozen=True)
class Window:
	"""A parsed quiet-hours window (see the module docstring)."""

	start: dt.time
	end: dt.time
	days: frozenset[int]  # weekday numbers, Monday = 0
	timezone: str = SITE

	@classmethod
	def from_dict(cls, raw: Mapping[str, Any]) -> Window:
		"""Build from a window that `check_window` accepts; ValueError otherwise."""
		problems = check_window(raw)
		if problems:
			raise ValueError("; ".join(f"{p or '/'}: {m}" for p, m in problems))
		days = raw.get("days")
		return cls(
			start=_parse_time(raw["start"]),
			end=_parse_time(raw["end"]),
			days=frozenset(DAYS.index(d) for d in days) if days is not None else frozenset(range(7)),
			timezone=raw.get("timezone") or SITE,
		)

	def describe(self) -> str:
		"""E.g. "09:00-19:00 mon, tue (site time)"."""
		days = "every day" if len(self.days) == 7 else ", ".join(DAYS[d] for d in sorted(self.days))
		return f"{self.start:%H:%M}-{self.end:%H:%M} {days} ({self.timezone} time)"


# --- validation ------------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.time:
	match = _TIME.match(value.strip()) if isinstance(value, str) else None
	if not match:
		raise ValueError(f"{value!r} is not a time of day")
	hour, minute, second = match.groups()
	return dt.time(int(hour), int(minute), int(second or 0))


def check_window(raw: Any, pointer: str = "") -> Problems:
	"""Every problem of a window, as (JSON pointer, message); [] when it is valid."""
	if not isinstance(raw, Mapping):
		return [
			(
				pointer,
				"quiet hours must be an object such as "
				'{"start": "09:00", "end": "19:00", "days": ["mon", "tue"], "timezone": "site"}',
			)
		]
	problems: Problems = []
	for key in raw:
		if key not in KEYS:
			problems.append(
				(f"{pointer}/{key}", f"unknown field '{key}'; allowed: {', '.join(sorted(KEYS))}")
			)
	for key in ("start", "end"):
		if key not in raw or raw[key] in (None, ""):
			problems.append((f"{pointer}/{key}", f"'{key}' is required (a time of day such as 09:00)"))
			continue
		try:
			_parse_time(raw[key])
		except ValueError:
			problems.append(
				(f"{pointer}/{key}", f"{raw[key]!r} is not a time of day (HH:MM, 00:00 to 23:59)")
			)
	days = raw.get("days")
	if days is not None:
		if not isinstance(days, list):
			problems.append((f"{pointer}/days", f"must be a list of days ({', '.join(DAYS)})"))
		elif not days:
			problems.append(
				(f"{pointer}/days", "no day is open: messages would never go out; list at least one day")
			)
		else:
			seen: set[str] = set()
			for i, day in enumerate(days):
				if day not in DAYS:
					problems.append((f"{pointer}/days/{i}", f"{day!r} is not a day; use {', '.join(DAYS)}"))
				elif day in seen:
					problems.append((f"{pointer}/days/{i}", f"{day!r} is listed twice"))
				seen.add(day)
	zone = raw.get("timezone")
	if zone is not None and (not isinstance(zone, str) or not (zone in (SITE, CONTACT) or zone_of(zone))):
		problems.append(
			(
				f"{pointer}/timezone",
				f"{zone!r} is not a time zone; use site, contact or an IANA name such as Europe/Berlin",
			)
		)
	return problems


@lru_cache(maxsize=256)
def zone_of(name: Any) -> ZoneInfo | None:
	"""The IANA zone called `name`, or None when there is no such zone."""
	if not isinstance(name, str) or not name.strip() or name != name.strip():
		return None
	try:
		return ZoneInfo(name)
	except (ZoneInfoNotFoundError, ValueError):
		return None


def window_for(step_setting: Any, flow_setting: Any) -> Window | None:
	"""The window a message step keeps: its own (an object), none (`false` / `null`), or the
	flow's (`true`, the default). Invalid settings give None: validation reports them."""
	raw = flow_setting if step_setting is True else step_setting
	if not isinstance(raw, Mapping):
		return None
	try:
		return Window.from_dict(raw)
	except ValueError:
		return None


# --- time zones --------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def time_zone_for_number(number: Any) -> str | None:
	"""The time zone of a phone number's region (libphonenumber's geographic data), when the
	number pins one down: a country (or area code) with one time zone, or several that keep
	the same clock (the UK and its crown dependencies). None when unknown or ambiguous."""
	if not isinstance(number, str) or not number.strip():
		return None
	try:
		e164 = normalize_number(number)  # "+", "00" or a wa_id's bare digits; no national numbers
	except InvalidPhoneNumber:
		return None
	names = [n for n in phone_time_zones.time_zones_for_number(phonenumbers.parse(e164)) if zone_of(n)]
	if not names:
		return None
	# several names are one answer only if they keep the same clock all year round
	probes = [dt.datetime(2021, month, 15, 12, tzinfo=_UTC) for month in (1, 4, 7, 10)]
	offsets = {tuple(p.astimezone(zone_of(n)).utcoffset() for p in probes) for n in names}
	if len(offsets) != 1:
		return None
	return "Europe/London" if "Europe/London" in names else sorted(names)[0]


def contact_time_zone(contact: Mapping[str, Any] | None) -> str | None:
	"""A contact's time zone: the one given (`time_zone`), else its number's; None if unknown."""
	contact = contact or {}
	given = contact.get("time_zone")
	if zone_of(given):
		return given
	return time_zone_for_number(contact.get("number"))


def window_time_zone(window: Window, site_time_zone: str | None, contact: Mapping[str, Any] | None) -> str:
	"""Where a window's wall-clock times are read."""
	site = site_time_zone if zone_of(site_time_zone) else DEFAULT_SITE_TIME_ZONE
	if window.timezone == SITE:
		return site
	if window.timezone == CONTACT:
		return contact_time_zone(contact) or site
	return window.timezone if zone_of(window.timezone) else site


# --- the arithmetic --------------------------------------------------------------------------


def _instant(day: dt.date, time: dt.time, zone: ZoneInfo) -> dt.datetime:
	"""The first instant at which the wall clock in `zone` reads `day` `time` or later.

	Usually that wall time itself (its first occurrence when the clocks go back). When the
	clocks skip it (a spring-forward gap), the moment they jump past it.
	"""
	wall = dt.datetime.combine(day, time)
	early = wall.replace(tzinfo=zone, fold=0)
	if early.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) == wall:
		return early.astimezone(_UTC)
	# In a gap: fold=1 reads it with the offset after the jump (the earlier instant), fold=0
	# with the one before (the later). The jump lies between them: find it to the second.
	low = wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)
	high = early.astimezone(_UTC)
	if low > high:
		low, high = high, low
	while (high - low) > dt.timedelta(seconds=1):
		middle = low + (high - low) / 2
		if middle.astimezone(zone).replace(tzinfo=None) >= wall:
			high = middle
		else:
			low = middle
	return high.replace(microsecond=0)


def _openings(window: Window, zone: ZoneInfo, first: dt.date, count: int):
	"""(open, close) instants of the window's openings on `count` days from `first`."""
	for offset in range(count):
		day = first + dt.timedelta(days=offset)
		if day.weekday() not in window.days:
			continue
		close_day = day + dt.timedelta(days=1) if window.end <= window.start else day
		yield _instant(day, window.start, zone), _instant(close_day, window.end, zone)


def next_allowed(now: dt.datetime, window: Window, zone: str | ZoneInfo) -> dt.datetime | None:
	"""None when a message may go out at `now` (an aware datetime); else the next moment the
	window opens, as an aware datetime in `zone`."""
	if now.tzinfo is None:
		raise ValueError("next_allowed needs an aware datetime")
	tz = zone if isinstance(zone, ZoneInfo) else zone_of(zone)
	if tz is None:
		raise ValueError(f"{zone!r} is not a time zone")
	if not window.days:
		raise ValueError("the window opens on no day")
	instant = now.astimezone(_UTC)
	today = instant.astimezone(tz).date()
	# yesterday's window may still be open (it crosses midnight); a week and a day ahead
	# always holds the next opening
	for opens, closes in _openings(window, tz, today - dt.timedelta(days=1), 9):
		if opens <= instant < closes:
			return None
		if opens > instant:
			return opens.astimezone(tz)
	raise AssertionError("a window with an open day opens within eight days")  # pragma: no cover


def hold_until(
	setting: Window | None,
	now: dt.datetime,
	site_time_zone: str | None,
	contact: Mapping[str, Any] | None = None,
) -> dt.datetime | None:
	"""For the planner: None when a message step may run at `now`, else when it may.

	`now` and the answer are naive datetimes in the site's time zone (how Frappe keeps time).
	"""
	if setting is None:
		return None
	site = zone_of(site_time_zone) or zone_of(DEFAULT_SITE_TIME_ZONE)
	zone = window_time_zone(setting, site_time_zone, contact)
	aware = now.replace(tzinfo=site) if now.tzinfo is None else now
	opens = next_allowed(aware, setting, zone)
	if opens is None:
		return None
	at = opens.astimezone(site).replace(tzinfo=None)
	# A naive site time can name an instant twice (clocks going back): never hand back a time
	# that is not later than now, so the step waits instead of being held again and again.
	naive_now = aware.astimezone(site).replace(tzinfo=None)
	return max(at, naive_now + dt.timedelta(minutes=1))
