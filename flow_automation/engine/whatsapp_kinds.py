"""WhatsApp step kinds: `send_whatsapp` and `ask`.

Frappe-free, like the rest of the engine. What a payload may say, which branches an `ask`
offers and what a reply means live here; Meta's limits are read from the channel's
`check_*` helpers (numbers in `channels/whatsapp/limits.py`), so they are written once.
Sending, conversations and the 24-hour window are the host's business (`steps/whatsapp.py`
on a site, `RecordingHost` in the simulator).

An `ask` executes by sending its question and waiting (`Outcome.waiting("reply", until)`).
A reply resumes it through `resume_ask`: a valid answer finishes the step on the branch
of the chosen button / list row (or `answered` for free text) and saves it to
`variables.<save_as>`; an invalid one asks again (`reprompt` effect) until the retries are
used up (branch `invalid`); no answer before `until` takes branch `timeout`. Every way out
asks the host to `release` the contact's conversation so later messages route elsewhere.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flow_automation.channels.whatsapp import (
	InvalidPhoneNumber,
	Problem,
	buttons_message,
	check_buttons,
	check_list,
	check_media,
	check_template,
	check_text,
	limits,
	list_message,
	media_message,
	normalize_number,
	template_message,
	text_message,
)
from flow_automation.engine import catalog
from flow_automation.engine.outcome import Outcome
from flow_automation.engine.render import is_template

Problems = list[tuple[str, str]]

MEDIA_MODES = tuple(limits.MEDIA_TYPES)
SEND_MODES = ("text", "template", "media", "buttons", "list", *MEDIA_MODES)
REPLY_WAIT = "reply"
ANSWERED = "answered"
INVALID = "invalid"
TIMEOUT = "timeout"
ASK_OUTCOME_BRANCHES = (ANSWERED, INVALID, TIMEOUT)
RESERVED_BRANCHES = (*ASK_OUTCOME_BRANCHES, "error", "default")
DEFAULT_ASK_TIMEOUT_HOURS = 24
DEFAULT_CHOICE_RETRIES = 1
MAX_ASK_RETRIES = 10
MAX_DEDUP_MINUTES = 7 * 24 * 60
# What the contact is told after an invalid answer when the flow does not say.
DEFAULT_RETRY_TEXT = "Sorry, I did not understand that. Please answer again."
DEFAULT_CHOICE_RETRY_TEXT = "Please choose one of the options."

_TEXT = {"type": "string"}
_REQUIRED_TEXT = {"type": "string", "minLength": 1}
_CHOICE = {"type": ["object", "string"]}
_TIMEOUTS = {
	"timeout_minutes": {"type": "number", "exclusiveMinimum": 0},
	"timeout_hours": {"type": "number", "exclusiveMinimum": 0},
	"timeout_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 366},
}
_LIST_SCHEMA = {
	"type": "object",
	"required": ["button"],
	"properties": {
		"button": _REQUIRED_TEXT,
		"rows": {"type": "array", "items": {"type": "object"}},
		"sections": {"type": "array", "items": {"type": "object"}},
	},
	"additionalProperties": False,
}
_TEMPLATE_PROPERTIES = {
	"template": {**_REQUIRED_TEXT, "description": "approved template name"},
	"language": {**_TEXT, "description": "language code, e.g. en or pt_BR (default: the contact's, else en)"},
	"parameters": {
		"type": ["array", "object"],
		"description": "body parameters: a list ({{1}}, {{2}}) or a mapping of names",
	},
}

SEND_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["to"],
	"properties": {
		"to": {**_REQUIRED_TEXT, "description": "the recipient's number, e.g. {{ doc.mobile_no }}"},
		"mode": {"enum": list(SEND_MODES), "description": "text (default) or template, media, buttons, list"},
		"account": {**_TEXT, "description": "WhatsApp Account to send from (default: pinned, else default)"},
		"text": {**_TEXT, "description": "the text; the body of buttons and list messages"},
		"preview_url": {"type": "boolean"},
		**_TEMPLATE_PROPERTIES,
		"header": {"type": ["string", "array", "object"]},
		"footer": _TEXT,
		"buttons": {
			"type": "array",
			"items": _CHOICE,
			"description": "reply buttons [{id, title}], or a template's quick-reply payloads [{id}]",
		},
		"list": _LIST_SCHEMA,
		"media_type": {"enum": list(MEDIA_MODES)},
		"url": {**_TEXT, "description": "public http(s) URL of the media"},
		"media_id": _TEXT,
		"file": {**_TEXT, "description": "a File in this site (its file_url or name)"},
		"filename": _TEXT,
		"caption": _TEXT,
		"reply_to": {**_TEXT, "description": "wamid of the message this one answers"},
		"dedup_minutes": {
			"type": "number",
			"minimum": 0,
			"maximum": MAX_DEDUP_MINUTES,
			"description": "send once per recipient + content + document within this many minutes",
		},
		"only_known_contacts": {
			"type": "boolean",
			"description": "refuse numbers that belong to no Contact",
		},
		"fallback_template": {
			"type": "object",
			"required": ["template"],
			"properties": {
				**_TEMPLATE_PROPERTIES,
				"header": {"type": ["string", "array", "object"]},
				"buttons": {"type": "array", "items": _CHOICE},
			},
			"additionalProperties": False,
			"description": "template sent instead when the 24-hour window is closed",
		},
	},
	"additionalProperties": False,
}

ASK_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["to", "text"],
	"properties": {
		"to": _REQUIRED_TEXT,
		"text": {**_REQUIRED_TEXT, "description": "the question"},
		"account": _TEXT,
		"header": {"type": ["string", "object"]},
		"footer": _TEXT,
		"buttons": {"type": "array", "items": _CHOICE, "description": "up to 3 reply buttons [{id, title}]"},
		"list": _LIST_SCHEMA,
		"expect": {
			"type": "object",
			"properties": {
				"regex": {**_REQUIRED_TEXT, "description": "a free-text answer must match this"},
				"retries": {"type": "integer", "minimum": 0, "maximum": MAX_ASK_RETRIES},
				"retry_text": _REQUIRED_TEXT,
			},
			"additionalProperties": False,
		},
		"save_as": {**_REQUIRED_TEXT, "description": "variable that receives the answer"},
		**_TIMEOUTS,
	},
	"additionalProperties": False,
}

# Which payload keys each send mode reads (beyond the ones every mode shares).
_COMMON_KEYS = frozenset({"to", "mode", "account", "dedup_minutes", "only_known_contacts", "reply_to"})
_MODE_KEYS: dict[str, frozenset[str]] = {
	"text": frozenset({"text", "preview_url", "fallback_template"}),
	"template": frozenset({"template", "language", "parameters", "header", "buttons"}),
	"buttons": frozenset({"text", "buttons", "header", "footer", "fallback_template"}),
	"list": frozenset({"text", "list", "header", "footer", "fallback_template"}),
	"media": frozenset({"media_type", "url", "media_id", "file", "filename", "caption", "fallback_template"}),
}


def send_mode(payload: Mapping[str, Any]) -> str:
	"""The payload's mode: as given, else `template` when it names one, else `text`."""
	mode = payload.get("mode")
	if isinstance(mode, str) and mode:
		return mode
	return "template" if payload.get("template") else "text"


def media_type_of(payload: Mapping[str, Any]) -> str | None:
	"""The media type of a media send (`mode: document` or `mode: media` + `media_type`)."""
	mode = send_mode(payload)
	if mode in MEDIA_MODES:
		return mode
	return payload.get("media_type") if mode == "media" else None


def _mode_group(mode: str) -> str:
	return "media" if mode in MEDIA_MODES else mode


# --- stand-ins: checking payloads whose values are still templates ---------------------------
def _stand_in(value: Any, make: Callable[[], str]) -> Any:
	"""`value` with every template string replaced by a valid-looking stand-in.

	A template's rendered length is unknown when the flow is saved, so only literal text is
	held to Meta's limits then; the builders check the rendered message before sending.
	"""
	if isinstance(value, str):
		return make() if is_template(value) else value
	if isinstance(value, Mapping):
		return {k: _stand_in(v, make) for k, v in value.items()}
	if isinstance(value, list | tuple):
		return [_stand_in(v, make) for v in value]
	return value


def _stand_ins(prefix: str = "t") -> Callable[[], str]:
	counter = itertools.count(1)
	return lambda: f"{prefix}{next(counter)}"


def _concrete(value: Any) -> Any:
	return _stand_in(value, _stand_ins())


def _literal(value: Any, stand_in: str) -> Any:
	return stand_in if is_template(value) else value


def _moved(problems: Sequence[Problem], renames: Mapping[str, str], base: str = "") -> Problems:
	"""Channel problems as (payload pointer, message): `/body` of a check is `/text` here, etc."""
	out: Problems = []
	for problem in problems:
		field = problem.field
		for old, new in renames.items():
			if field == old or field.startswith(old + "/"):
				field = new + field[len(old) :]
				break
		out.append((base + field, problem.message))
	return out


def _choices_of(payload: Mapping[str, Any]) -> list[Any]:
	"""Reply buttons, or every list row (across sections), in order."""
	if payload.get("buttons") is not None:
		return list(payload.get("buttons") or [])
	spec = payload.get("list")
	if not isinstance(spec, Mapping):
		return []
	if spec.get("sections") is not None:
		rows: list[Any] = []
		for section in spec.get("sections") or []:
			if isinstance(section, Mapping):
				rows.extend(section.get("rows") or [])
		return rows
	return list(spec.get("rows") or [])


def _choice_fields(choice: Any) -> tuple[str | None, str | None]:
	if isinstance(choice, str):
		return choice, choice
	if isinstance(choice, Mapping):
		choice_id, title = choice.get("id"), choice.get("title")
		return (
			str(choice_id) if choice_id is not None else None,
			str(title) if title is not None else None,
		)
	return None, None


def _check_interactive(payload: Mapping[str, Any], body_key: str = "text") -> Problems:
	concrete = _concrete(payload)
	body = concrete.get(body_key)
	header, footer = concrete.get("header"), concrete.get("footer")
	if payload.get("buttons") is not None:
		return _moved(
			check_buttons(concrete.get("buttons"), body=body, header=header, footer=footer),
			{"/body": "/text"},
		)
	spec = concrete.get("list") or {}
	return _moved(
		check_list(
			spec.get("button"),
			spec.get("rows"),
			spec.get("sections"),
			body=body,
			header=header,
			footer=footer,
		),
		{"/body": "/text", "/button": "/list/button", "/rows": "/list/rows", "/sections": "/list/sections"},
	)


def _check_template_part(part: Mapping[str, Any], base: str = "") -> Problems:
	concrete = _concrete(part)
	language = _literal(part.get("language"), "en") or "en"
	problems = check_template(
		concrete.get("template"),
		language,
		header_params=concrete.get("header"),
		body_params=concrete.get("parameters"),
		buttons=concrete.get("buttons"),
	)
	return _moved(problems, {"/name": "/template", "/body": "/parameters"}, base)


def _check_recipient(to: Any) -> Problems:
	if isinstance(to, str) and not is_template(to) and to.strip().startswith("+"):
		try:
			normalize_number(to)
		except InvalidPhoneNumber as e:
			return [("/to", f"{to!r} is not a usable phone number: {e.reason}")]
	return []


def check_send(payload: Mapping[str, Any]) -> Problems:
	"""Problems of a `send_whatsapp` payload beyond its schema (Meta's limits, per mode)."""
	problems = _check_recipient(payload.get("to"))
	mode = send_mode(payload)
	if mode not in SEND_MODES:
		return problems  # the schema's enum already names the allowed modes
	group = _mode_group(mode)
	allowed = _COMMON_KEYS | _MODE_KEYS[group]
	for key in payload:
		if key not in allowed:
			problems.append((f"/{key}", f"'{key}' does not apply to mode '{mode}'"))
	if group == "text":
		if "text" not in payload:
			problems.append(("/text", "mode 'text' needs 'text'"))
		else:
			problems += _moved(check_text(_literal(payload.get("text"), "x")), {"/body": "/text"})
	elif group == "template":
		if not payload.get("template"):
			problems.append(("/template", "mode 'template' needs the template's name"))
		else:
			problems += _check_template_part(payload)
	elif group in ("buttons", "list"):
		if group == "buttons" and payload.get("buttons") is None:
			problems.append(("/buttons", "mode 'buttons' needs 'buttons': [{id, title}, ...]"))
		elif group == "list" and payload.get("list") is None:
			problems.append(("/list", "mode 'list' needs 'list': {button, rows}"))
		else:
			problems += _check_interactive(payload)
	else:
		problems += _check_media_payload(payload, mode)
	if isinstance(payload.get("fallback_template"), Mapping):
		problems += _check_template_part(payload["fallback_template"], "/fallback_template")
	return problems


def preflight_send(payload: Mapping[str, Any]) -> Problems:
	"""A rendered message that could never be sent: an unusable number, or one over Meta's
	limits once its values are known. National numbers pass here (the host reads them with
	the sending account's country)."""
	to = str(payload.get("to") or "").strip()
	if to.startswith("+") or (to.isdigit() and len(to) > 10):
		try:
			normalize_number(to)
		except InvalidPhoneNumber as e:
			return [("/to", f"{to!r} is not a usable phone number: {e.reason}")]
	return check_send(payload)  # Meta's limits, now on the real values


def _check_media_payload(payload: Mapping[str, Any], mode: str) -> Problems:
	media_type = media_type_of(payload)
	if mode == "media" and not media_type:
		return [("/media_type", f"mode 'media' needs media_type: one of {', '.join(MEDIA_MODES)}")]
	sources = [key for key in ("url", "media_id", "file") if payload.get(key)]
	if len(sources) != 1:
		return [("/url", "a media message needs exactly one of url, media_id or file")]
	concrete = _concrete(payload)
	link = _literal(payload.get("url"), "https://example.com/media") if payload.get("url") else None
	if payload.get("file"):
		link = "https://example.com/file"  # a File is uploaded to Meta when the step runs
	problems = check_media(
		media_type,
		link=link,
		media_id=concrete.get("media_id") if payload.get("media_id") else None,
		caption=concrete.get("caption"),
		filename=concrete.get("filename"),
	)
	return _moved(problems, {"/media_type": "/mode", "/media/link": "/url", "/media/id": "/media_id"})


# --- building the message a rendered payload describes ----------------------------------------
def message_body(
	payload: Mapping[str, Any],
	to: str,
	*,
	language: str | None = None,
	media_id: str | None = None,
	callback_data: str | None = None,
) -> dict[str, Any]:
	"""The Graph API body for a rendered `send_whatsapp` payload; raises MessageValidationError.

	`language` overrides the payload's (the host resolved the contact's); `media_id` stands
	for a `file` the host uploaded.
	"""
	mode = send_mode(payload)
	common = {"reply_to": payload.get("reply_to") or None, "callback_data": callback_data}
	if mode == "template":
		return template_message(
			to,
			payload.get("template") or "",
			language or payload.get("language") or "en",
			header_params=payload.get("header") or None,
			body_params=payload.get("parameters") or None,
			buttons=payload.get("buttons") or None,
			**common,
		)
	if mode == "buttons":
		return buttons_message(
			to,
			payload.get("text") or "",
			payload.get("buttons") or [],
			header=payload.get("header") or None,
			footer=payload.get("footer") or None,
			**common,
		)
	if mode == "list":
		spec = payload.get("list") or {}
		return list_message(
			to,
			payload.get("text") or "",
			spec.get("button") or "",
			rows=spec.get("rows"),
			sections=spec.get("sections"),
			header=payload.get("header") or None,
			footer=payload.get("footer") or None,
			**common,
		)
	media_type = media_type_of(payload)
	if media_type:
		return media_message(
			to,
			media_type,
			link=None if media_id else payload.get("url") or None,
			media_id=media_id or payload.get("media_id") or None,
			caption=payload.get("caption") or None,
			filename=payload.get("filename") or None,
			**common,
		)
	return text_message(to, payload.get("text") or "", preview_url=bool(payload.get("preview_url")), **common)


def fallback_payload(payload: Mapping[str, Any]) -> dict[str, Any] | None:
	"""The template send that replaces a free-form one when the window is closed, if configured."""
	fallback = payload.get("fallback_template")
	if not isinstance(fallback, Mapping) or not fallback.get("template"):
		return None
	return {"to": payload.get("to"), "mode": "template", **dict(fallback)}


def content_fingerprint(payload: Mapping[str, Any]) -> str:
	"""What makes two sends "the same message" for the dedup window (recipient excluded)."""
	mode = send_mode(payload)
	if mode == "template":
		parts: list[Any] = [
			"template",
			payload.get("template"),
			payload.get("parameters"),
			payload.get("header"),
		]
	elif media_type_of(payload):
		parts = [
			mode,
			payload.get("url") or payload.get("media_id") or payload.get("file"),
			payload.get("caption"),
		]
	else:
		parts = [mode, payload.get("text"), _choices_of(payload)]
	return repr(parts)


def dedup_minutes(payload: Mapping[str, Any]) -> float:
	"""The dedup window of a send in minutes (0: off)."""
	value = payload.get("dedup_minutes")
	return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


# --- ask --------------------------------------------------------------------------------------
def ask_choices(payload: Mapping[str, Any]) -> dict[str, str]:
	"""{id: title} of the question's buttons or list rows, in order (empty for free text)."""
	choices: dict[str, str] = {}
	for choice in _choices_of(payload):
		choice_id, title = _choice_fields(choice)
		if choice_id:
			choices[choice_id] = title or choice_id
	return choices


def ask_branches(payload: Mapping[str, Any]) -> tuple[str, ...]:
	"""The branches an `ask` offers: one per button / list row id, then answered, invalid, timeout."""
	return (*ask_choices(payload), *ASK_OUTCOME_BRANCHES)


def ask_timeout(payload: Mapping[str, Any]) -> dt.timedelta:
	"""How long an `ask` waits (timeout_minutes + timeout_hours + timeout_days; default 24 hours)."""
	total = dt.timedelta(
		minutes=_number(payload.get("timeout_minutes")),
		hours=_number(payload.get("timeout_hours")),
		days=_number(payload.get("timeout_days")),
	)
	return total if total > dt.timedelta(0) else dt.timedelta(hours=DEFAULT_ASK_TIMEOUT_HOURS)


def _number(value: Any) -> float:
	if isinstance(value, int | float) and not isinstance(value, bool):
		return float(value)
	try:
		return float(value) if isinstance(value, str) and value.strip() else 0.0
	except ValueError:
		return 0.0


def question_payload(payload: Mapping[str, Any], text: str | None = None) -> dict[str, Any]:
	"""The `send_whatsapp` payload that asks an `ask` step's question (or re-asks it with `text`)."""
	question: dict[str, Any] = {"to": payload.get("to"), "text": text or payload.get("text")}
	if payload.get("buttons") is not None:
		question.update(mode="buttons", buttons=list(payload["buttons"]))
	elif payload.get("list") is not None:
		question.update(mode="list", list=dict(payload["list"]))
	else:
		question["mode"] = "text"
	for key in ("header", "footer"):
		if payload.get(key) and question["mode"] != "text":
			question[key] = payload[key]
	if payload.get("account"):
		question["account"] = payload["account"]
	return question


def check_ask(payload: Mapping[str, Any]) -> Problems:
	"""Problems of an `ask` payload beyond its schema: choices, limits, regex, names."""
	problems = _check_recipient(payload.get("to"))
	has_buttons, has_list = payload.get("buttons") is not None, payload.get("list") is not None
	expect = payload.get("expect") if isinstance(payload.get("expect"), Mapping) else {}
	if has_buttons and has_list:
		problems.append(("/list", "give either buttons or a list, not both"))
	elif has_buttons or has_list:
		problems += _check_interactive(payload)
		if expect.get("regex"):
			problems.append(
				("/expect/regex", "a regex applies to free-text questions, not to buttons or lists")
			)
		for i, choice in enumerate(_choices_of(payload)):
			choice_id, _ = _choice_fields(choice)
			if choice_id in RESERVED_BRANCHES:
				pointer = f"/buttons/{i}/id" if has_buttons else "/list"
				problems.append((pointer, f"id {choice_id!r} is reserved for the ask's own branches"))
	else:
		problems += _moved(check_text(_literal(payload.get("text"), "x")), {"/body": "/text"})
	regex = expect.get("regex")
	if isinstance(regex, str) and not is_template(regex):
		try:
			re.compile(regex)
		except re.error as e:
			problems.append(("/expect/regex", f"not a valid regular expression: {e}"))
	save_as = payload.get("save_as")
	if isinstance(save_as, str) and not catalog.IDENTIFIER.match(save_as):
		problems.append(("/save_as", f"variable name {save_as!r} is not valid (letters, digits and _ only)"))
	return problems


def ask_wait(
	payload: Mapping[str, Any],
	now: dt.datetime,
	*,
	to: str,
	account: str | None = None,
	key: str = "",
	wamid: str | None = None,
	output: Mapping[str, Any] | None = None,
) -> Outcome:
	"""The waiting Outcome of an `ask` whose question was sent (shared by every host).

	The wait data holds everything a reply needs to be judged and a re-ask to be sent, so
	resuming never needs the payload again.
	"""
	expect = payload.get("expect") if isinstance(payload.get("expect"), Mapping) else {}
	choices = ask_choices(payload)
	retries = expect.get("retries")
	if not isinstance(retries, int) or isinstance(retries, bool):
		retries = DEFAULT_CHOICE_RETRIES if (choices or expect.get("regex")) else 0
	default_text = DEFAULT_CHOICE_RETRY_TEXT if choices else DEFAULT_RETRY_TEXT
	until = now + ask_timeout(payload)
	return Outcome.waiting(
		REPLY_WAIT,
		until=until,
		output={**dict(output or {}), "to": to, "wamid": wamid, "until": until.isoformat(sep=" ")},
		to=to,
		account=account,
		key=key,
		question_wamid=wamid,
		choices=choices,
		regex=expect.get("regex"),
		retries=min(max(retries, 0), MAX_ASK_RETRIES),
		retries_used=0,
		retry_text=expect.get("retry_text") or default_text,
		save_as=payload.get("save_as"),
		question=question_payload(payload),
	)


def reply_data(data: Any) -> dict[str, Any]:
	"""An inbound reply as {text, reply_id, reply_title, ...}; a bare string is typed text."""
	if isinstance(data, Mapping):
		return dict(data)
	if data is None:
		return {}
	return {"text": str(data)}


def judge_reply(wait: Mapping[str, Any], data: Any) -> tuple[str | None, str | None]:
	"""(branch, answer) for a reply, or (None, None) if it does not answer the question.

	A tapped button / row answers with its id. Typed text answers a choice question when it
	equals a choice's id or title (ignoring case), and a free-text question when it is not
	empty and matches the regex, if any.
	"""
	reply = reply_data(data)
	choices: Mapping[str, str] = wait.get("choices") or {}
	text = reply.get("text")
	text = text.strip() if isinstance(text, str) else ""
	if choices:
		reply_id = reply.get("reply_id")
		if reply_id in choices:
			return str(reply_id), str(reply_id)
		wanted = (text or str(reply.get("reply_title") or "")).strip().casefold()
		for choice_id, title in choices.items():
			if wanted and wanted in (choice_id.casefold(), str(title).strip().casefold()):
				return choice_id, choice_id
		return None, None
	if not text:
		return None, None
	regex = wait.get("regex")
	if regex:
		try:
			if not re.search(regex, text):
				return None, None
		except re.error:
			return None, None
	return ANSWERED, text


def resume_ask(wait: Mapping[str, Any], event: Any, context: Mapping[str, Any]) -> Outcome:
	"""What a reply (or the timeout) means for a waiting `ask` (the kind's `resume`)."""
	release = {"type": "release", "to": wait.get("to"), "account": wait.get("account")}
	if event.type == "timeout":
		return Outcome.done({"timed_out": True, "to": wait.get("to")}, branch=TIMEOUT, effects=(release,))
	reply = reply_data(event.data)
	branch, answer = judge_reply(wait, reply)
	heard = {
		"text": reply.get("text"),
		"id": reply.get("reply_id"),
		"title": reply.get("reply_title"),
		"wamid": reply.get("wamid"),
	}
	used = int(wait.get("retries_used") or 0)
	save_as = wait.get("save_as")
	if branch is not None:
		variables = {save_as: answer} if save_as else {}
		return Outcome.done(
			{"answer": answer, **heard, "retries_used": used},
			branch=branch,
			variables=variables,
			effects=(release,),
		)
	if used < int(wait.get("retries") or 0):
		used += 1
		reprompt = {
			"type": "reprompt",
			"to": wait.get("to"),
			"account": wait.get("account"),
			"text": wait.get("retry_text") or DEFAULT_RETRY_TEXT,
			"question": dict(wait.get("question") or {}),
			"key": f"{wait.get('key') or ''}:retry:{used}",
		}
		return Outcome(
			"waiting",
			output={"invalid_answer": heard, "retries_used": used},
			wait_data={"retries_used": used},
			effects=(reprompt,),
		)
	variables = {save_as: None} if save_as else {}
	return Outcome.done(
		{"answer": None, "invalid": True, **heard, "retries_used": used},
		branch=INVALID,
		variables=variables,
		effects=(release,),
	)


catalog.register(
	catalog.StepKind(
		name="send_whatsapp",
		label="Send WhatsApp",
		group="Messaging",
		description=(
			"Send a WhatsApp message: text, an approved template, media, reply buttons or a list. "
			"Free-form messages only within 24 hours of the contact's last message (else an error, "
			"or fallback_template); never to contacts who opted out; sent once per step."
		),
		payload_schema=SEND_SCHEMA,
		output="{wamid, to, account, message, mode, status, deduplicated, fallback}",
		example={
			"to": "{{ doc.mobile_no }}",
			"mode": "template",
			"template": "order_confirmation",
			"language": "{{ doc.language or 'en' }}",
			"parameters": ["{{ doc.customer_name }}", "{{ doc.name }}"],
		},
		check=check_send,
		preflight=preflight_send,
		quiet_hours=True,
	)
)

catalog.register(
	catalog.StepKind(
		name="ask",
		label="Ask on WhatsApp",
		group="Messaging",
		description=(
			"Ask the contact a question (reply buttons, a list or free text) and wait for the answer: "
			"one branch per button / row id, answered (free text), invalid (retries used up), timeout."
		),
		payload_schema=ASK_SCHEMA,
		output="{answer, id, title, text, wamid, retries_used} (saved to variables.<save_as>)",
		example={
			"to": "{{ contact.number }}",
			"text": "Did the delivery arrive?",
			"buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}],
			"save_as": "delivered",
			"timeout_hours": 24,
		},
		branches=ask_branches,
		fixed_branches=ASK_OUTCOME_BRANCHES,
		payload_branches="one per button id or list row id",
		branch_paths=("buttons[].id", "list.rows[].id", "list.sections[].rows[].id"),
		waits=lambda payload: True,
		preflight=lambda payload: preflight_send(question_payload(payload)),
		check=check_ask,
		resume=resume_ask,
		quiet_hours=True,
	)
)
