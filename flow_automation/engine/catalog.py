"""The step catalog: every step kind, in one place.

Validation, the published JSON schema and the Desk step editor all read this module, so a
kind's label, payload schema, branches and waiting behaviour are written exactly once.
Kinds whose work is pure data (`wait`, `condition`, `switch`, `set_variables`) are
evaluated here; the others are executed by the host (the Frappe adapter or the simulator).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flow_automation.engine import conditions
from flow_automation.engine.outcome import Outcome
from flow_automation.engine.render import is_template, render_string

Problems = list[tuple[str, str]]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_WEBHOOK_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class StepKind:
	name: str
	label: str
	group: str
	description: str
	payload_schema: Mapping[str, Any]
	output: str = ""
	example: Mapping[str, Any] = field(default_factory=dict)
	# Branch names this kind offers for a given payload (children pick one with `branch`).
	branches: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda payload: ()
	# Whether a step of this kind waits for something outside the run after it executes.
	waits: Callable[[Mapping[str, Any]], bool] = lambda payload: False
	# Extra checks the schema cannot express, as (pointer relative to the payload, message).
	check: Callable[[Mapping[str, Any]], Problems] = lambda payload: []
	# Pure kinds are evaluated by the engine: (payload, context) -> Outcome.
	evaluate: Callable[[Mapping[str, Any], Mapping[str, Any]], Outcome] | None = None
	# Kinds that wait after executing decide what a reply/completion/timeout means:
	# (wait data, Event, context) -> Outcome. None = the planner's default resume.
	resume: Callable[[Mapping[str, Any], Any, Mapping[str, Any]], Outcome] | None = None
	# False when the kind renders its own templates (conditions render only their values).
	render_payload: bool = True
	# Flags a payload key that makes the planner reload the trigger document first.
	reloads_document: bool = False
	# Branches every step of this kind offers whatever its payload, and what the payload
	# adds (e.g. "one per value in cases"); for the catalog's readers (CLI, Desk, builder).
	fixed_branches: tuple[str, ...] = ()
	payload_branches: str = ""
	# Where in a payload those added branches are, for clients that draw them as it is edited:
	# "cases[]" = each value of cases; "buttons[].id" = each button's id (a plain string
	# entry is its own id). The engine itself always asks `branches(payload)`.
	branch_paths: tuple[str, ...] = ()
	# Checks of the *rendered* payload, made before the host executes the step (a real run
	# and a dry run alike): values that only turn out empty or malformed once rendered.
	preflight: Callable[[Mapping[str, Any]], Problems] = lambda payload: []
	# A message to a person: held outside the flow's (or the step's) quiet hours.
	quiet_hours: bool = False

	@property
	def is_pure(self) -> bool:
		return self.evaluate is not None

	def rendered_problems(self, payload: Mapping[str, Any]) -> Problems:
		"""What makes a rendered payload impossible to carry out: a required value that rendered
		empty (a variable was missing), then the kind's own `preflight` checks."""
		problems: Problems = []
		schema = self.payload_schema
		for key, spec in (schema.get("properties") or {}).items():
			if key not in payload or not isinstance(spec, Mapping):
				continue
			value = payload[key]
			if spec.get("minLength") and isinstance(value, str) and not value.strip():
				problems.append((f"/{key}", "rendered to an empty value"))
			elif (
				spec.get("minItems")
				and isinstance(value, list)
				and value
				and not any(not isinstance(v, str) or v.strip() for v in value)
			):
				problems.append((f"/{key}", "rendered to no values (every entry is empty)"))
		if problems:
			return problems
		return list(self.preflight(payload))

	def describe(self) -> dict[str, Any]:
		"""The kind as JSON for the Desk editor and the API."""
		return {
			"name": self.name,
			"label": self.label,
			"group": self.group,
			"description": self.description,
			"payload_schema": self.payload_schema,
			"output": self.output,
			"example": self.example,
			"branches": {
				"fixed": list(self.fixed_branches),
				"from_payload": self.payload_branches,
				"paths": list(self.branch_paths),
			},
			"waits": self.waits(self.example),
			"executed_by": "engine" if self.is_pure else "host",
			"quiet_hours": self.quiet_hours,
		}


_KINDS: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
	"""Add a kind to the catalog (channels add theirs the same way)."""
	_KINDS[kind.name] = kind
	return kind


def get_kind(name: Any) -> StepKind | None:
	return _KINDS.get(name) if isinstance(name, str) else None


def kind_names() -> tuple[str, ...]:
	return tuple(_KINDS)


def all_kinds() -> tuple[StepKind, ...]:
	return tuple(_KINDS.values())


# --- schema fragments --------------------------------------------------------------------

_TEXT = {"type": "string"}
_REQUIRED_TEXT = {"type": "string", "minLength": 1}
_TEXT_LIST = {"type": "array", "items": _REQUIRED_TEXT, "minItems": 1}
_TARGET_PROPERTIES = {
	"target": {
		"enum": ["trigger_document", "document"],
		"description": "trigger_document (default) or document (give doctype and name)",
	},
	"doctype": {"type": "string", "minLength": 1},
	"name": {"type": "string", "minLength": 1},
}
_RELOAD = {"type": "boolean", "description": "reload the trigger document before this step"}


def _check_target(payload: Mapping[str, Any]) -> Problems:
	target = payload.get("target") or ("document" if payload.get("doctype") else "trigger_document")
	problems: Problems = []
	if target == "document":
		for key in ("doctype", "name"):
			if not payload.get(key):
				problems.append((f"/{key}", f"'{key}' is required when the target is a named document"))
	elif payload.get("name"):
		problems.append(("/name", "'name' only applies with target 'document'"))
	return problems


def _check_field_names(mapping: Any, pointer: str, what: str) -> Problems:
	if not isinstance(mapping, Mapping):
		return []
	return [
		(f"{pointer}/{key}", f"{what} {key!r} is not a valid name (letters, digits and _ only)")
		for key in mapping
		if not IDENTIFIER.match(str(key))
	]


def _check_literal_url(url: Any, pointer: str) -> Problems:
	if isinstance(url, str) and not is_template(url) and not re.match(r"^https?://[^\s/]+", url):
		return [(pointer, f"{url!r} is not an http(s) URL")]
	return []


# --- notify: channels and SMS numbers ------------------------------------------------------

NOTIFY_CHANNELS = ("email", "system", "sms")
# Keys each notify channel reads besides `to` and `channel`.
_NOTIFY_KEYS = {
	"email": ("subject", "body", "cc", "attachments"),
	"system": ("subject", "body", "cc"),
	"sms": ("body",),
}
# What SMS gateways take: an optional +, then 3 to 15 digits (short codes included); Frappe's
# send_sms strips spaces, dashes and brackets the same way before calling the gateway.
_SMS_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")
_SMS_SEPARATORS = re.compile(r"[\s\-().]")


def sms_number(raw: Any) -> str | None:
	"""A recipient as an SMS gateway takes it ('+49 (30) 123-45' -> '+493012345'), or None when
	it is not a phone number."""
	if not isinstance(raw, str | int) or isinstance(raw, bool):
		return None
	number = _SMS_SEPARATORS.sub("", str(raw))
	return number if _SMS_NUMBER.match(number) else None


def notify_channel(payload: Mapping[str, Any]) -> str:
	return payload.get("channel") or "email"


def _check_notify(payload: Mapping[str, Any]) -> Problems:
	channel = notify_channel(payload)
	if channel not in NOTIFY_CHANNELS:
		return []  # the schema's enum names the channels
	problems: Problems = []
	for key in payload:
		if key not in ("to", "channel", *_NOTIFY_KEYS[channel]):
			problems.append((f"/{key}", f"'{key}' does not apply to channel '{channel}'"))
	if channel == "sms":  # (the schema requires its body; a subject for the other channels)
		for i, to in enumerate(payload.get("to") or ()):
			if isinstance(to, str) and to and not is_template(to) and not sms_number(to):
				problems.append((f"/to/{i}", f"{to!r} is not a phone number"))
	return problems


def _preflight_notify(payload: Mapping[str, Any]) -> Problems:
	"""A rendered SMS that could never go: a recipient that is not a number, an empty text."""
	if notify_channel(payload) != "sms":
		return []
	problems: Problems = []
	for i, to in enumerate(payload.get("to") or ()):
		if isinstance(to, str) and to.strip() and not sms_number(to):
			problems.append((f"/to/{i}", f"{to!r} is not a phone number"))
	body = payload.get("body")
	if not isinstance(body, str) or not body.strip():
		problems.append(("/body", "rendered to an empty value"))
	return problems


# --- pure evaluators ---------------------------------------------------------------------


def _condition_part(payload: Mapping[str, Any]) -> dict[str, Any]:
	if "condition" in payload:
		return dict(payload["condition"])
	return {k: v for k, v in payload.items() if k in ("field", "op", "value", "all", "any", "not")}


def _evaluate_condition(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
	try:
		result = conditions.evaluate(_condition_part(payload), context)
	except conditions.ConditionError as e:
		return Outcome.failed(str(e), retryable=False)
	return Outcome.done({"result": result}, branch="yes" if result else "no")


def _evaluate_switch(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
	value = payload.get("value")
	value = render_string(value, context) if isinstance(value, str) else value
	cases = [str(c) for c in payload.get("cases") or ()]
	matched = str(value) if value is not None and str(value) in cases else None
	return Outcome.done({"value": value, "matched": matched}, branch=matched or "default")


def _evaluate_set_variables(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
	values = dict(payload.get("variables") or {})
	return Outcome.done(values, variables=values)


def _evaluate_wait(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
	return Outcome.done({})


def _check_condition_payload(payload: Mapping[str, Any]) -> Problems:
	if "condition" in payload:
		if any(k in payload for k in ("field", "op", "value", "all", "any", "not")):
			return [("/condition", "give either 'condition' or the test's fields inline, not both")]
		return conditions.check_condition(payload["condition"], "/condition")
	part = _condition_part(payload)
	if not part:
		return [("/field", "a condition needs 'field' and 'op' (or an all/any/not group)")]
	return conditions.check_condition(part, "")


def _check_switch(payload: Mapping[str, Any]) -> Problems:
	cases = [str(c) for c in payload.get("cases") or ()]
	problems: Problems = []
	seen: set[str] = set()
	for i, case in enumerate(cases):
		if case in seen:
			problems.append((f"/cases/{i}", f"case {case!r} is listed twice"))
		if case in ("default", "error"):
			problems.append((f"/cases/{i}", f"{case!r} is reserved for the switch's own branches"))
		seen.add(case)
	return problems


# --- the kinds ---------------------------------------------------------------------------

CONDITION_PAYLOAD_SCHEMA = {
	"type": "object",
	"properties": {
		**conditions.CONDITION_SCHEMA["properties"],
		"condition": {"$ref": "#/$defs/condition"},
		"reload_document": _RELOAD,
	},
	"additionalProperties": False,
	"$defs": {"condition": conditions.CONDITION_SCHEMA},
}

register(
	StepKind(
		name="create_document",
		label="Create Document",
		group="Documents",
		description="Insert a new document of any doctype with rendered field values.",
		payload_schema={
			"type": "object",
			"required": ["doctype", "fields"],
			"properties": {
				"doctype": _REQUIRED_TEXT,
				"fields": {"type": "object", "minProperties": 1},
				"submit": {"type": "boolean", "description": "submit after insert (submittable doctypes)"},
			},
			"additionalProperties": False,
		},
		output="{doctype, name}",
		example={"doctype": "ToDo", "fields": {"description": "Call {{ doc.name }}", "priority": "High"}},
		check=lambda p: _check_field_names(p.get("fields"), "/fields", "field"),
	)
)

register(
	StepKind(
		name="update_document",
		label="Update Document",
		group="Documents",
		description="Set fields on the trigger document or on a named document.",
		payload_schema={
			"type": "object",
			"required": ["fields"],
			"properties": {**_TARGET_PROPERTIES, "fields": {"type": "object", "minProperties": 1}},
			"additionalProperties": False,
		},
		output="{doctype, name, changed}",
		example={"target": "trigger_document", "fields": {"status": "Replied"}},
		check=lambda p: _check_target(p) + _check_field_names(p.get("fields"), "/fields", "field"),
	)
)

register(
	StepKind(
		name="assign",
		label="Assign",
		group="Documents",
		description="Assign the trigger document (or a named one) to users, like Desk's Assign To.",
		payload_schema={
			"type": "object",
			"required": ["assign_to"],
			"properties": {
				**_TARGET_PROPERTIES,
				"assign_to": _TEXT_LIST,
				"description": _TEXT,
				"date": _TEXT,
				"priority": {"enum": ["Low", "Medium", "High"]},
			},
			"additionalProperties": False,
		},
		output="{doctype, name, assigned_to}",
		example={
			"assign_to": ["{{ doc.owner }}"],
			"description": "Follow up",
			"date": "{{ now | add_days(2) }}",
		},
		check=_check_target,
	)
)

register(
	StepKind(
		name="notify",
		label="Notify",
		group="Messaging",
		description=(
			"Send an email (queued through Email Queue, with attachments), a Desk system "
			"notification, or an SMS through Frappe's SMS Settings."
		),
		payload_schema={
			"type": "object",
			"required": ["to"],
			"properties": {
				"channel": {"enum": list(NOTIFY_CHANNELS), "description": "email (default), system or sms"},
				"to": {**_TEXT_LIST, "description": "users or email addresses; phone numbers for sms"},
				"cc": {"type": "array", "items": _REQUIRED_TEXT},
				"subject": {**_REQUIRED_TEXT, "description": "required for email and system"},
				"body": {**_TEXT, "description": "the message; the SMS text for sms"},
				"attachments": {
					"type": "array",
					"items": _REQUIRED_TEXT,
					"description": "email only: Files (name or file_url), e.g. {{ steps.pdf.output.file_url }}",
				},
			},
			"additionalProperties": False,
			# an SMS is its body; an email or a system notification needs a subject
			"if": {"properties": {"channel": {"const": "sms"}}, "required": ["channel"]},
			"then": {"required": ["body"]},
			"else": {"required": ["subject"]},
		},
		output="{channel, recipients, attachments, sent}",
		example={
			"channel": "email",
			"to": ["{{ doc.owner }}"],
			"subject": "About {{ doc.name }}",
			"body": "Hi",
		},
		check=_check_notify,
		preflight=_preflight_notify,
		quiet_hours=True,
	)
)

register(
	StepKind(
		name="webhook",
		label="HTTP Call",
		group="Integrations",
		description="Call an HTTP endpoint with a rendered JSON body; a non-2xx answer fails the step.",
		payload_schema={
			"type": "object",
			"required": ["url"],
			"properties": {
				"method": {"enum": list(HTTP_METHODS)},
				"url": _REQUIRED_TEXT,
				"headers": {"type": "object", "additionalProperties": {"type": "string"}},
				"body": {},
				"timeout_seconds": {
					"type": "number",
					"exclusiveMinimum": 0,
					"maximum": MAX_WEBHOOK_TIMEOUT_SECONDS,
				},
			},
			"additionalProperties": False,
		},
		output="{status_code, body, truncated}",
		example={"method": "POST", "url": "https://example.com/hook", "body": {"name": "{{ doc.name }}"}},
		check=lambda p: _check_literal_url(p.get("url"), "/url"),
	)
)

register(
	StepKind(
		name="wait",
		label="Wait",
		group="Logic",
		description="Do nothing: a pause (with an after_delay or on_date trigger) or a gate (manual / on_webhook).",
		payload_schema={"type": "object", "properties": {}, "additionalProperties": False},
		output="{} (or the completion result)",
		example={},
		evaluate=_evaluate_wait,
	)
)

register(
	StepKind(
		name="condition",
		label="Condition",
		group="Logic",
		description="Test a condition on the run's data and continue on branch yes or no.",
		payload_schema=CONDITION_PAYLOAD_SCHEMA,
		output="{result}",
		example={"field": "doc.status", "op": "==", "value": "Open"},
		branches=lambda p: ("yes", "no"),
		fixed_branches=("yes", "no"),
		check=_check_condition_payload,
		evaluate=_evaluate_condition,
		render_payload=False,
		reloads_document=True,
	)
)

register(
	StepKind(
		name="switch",
		label="Switch",
		group="Logic",
		description="Render a value and continue on the branch of the case it equals, or 'default'.",
		payload_schema={
			"type": "object",
			"required": ["value", "cases"],
			"properties": {
				"value": _TEXT,
				"cases": {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
				"reload_document": _RELOAD,
			},
			"additionalProperties": False,
		},
		output="{value, matched}",
		example={"value": "{{ doc.status }}", "cases": ["Open", "Closed"]},
		branches=lambda p: (*(str(c) for c in p.get("cases") or ()), "default"),
		fixed_branches=("default",),
		payload_branches="one per value in cases",
		branch_paths=("cases[]",),
		check=_check_switch,
		evaluate=_evaluate_switch,
		render_payload=False,
		reloads_document=True,
	)
)

register(
	StepKind(
		name="set_variables",
		label="Set Variables",
		group="Logic",
		description="Set run variables from rendered values; later steps read them as variables.<name>.",
		payload_schema={
			"type": "object",
			"required": ["variables"],
			"properties": {"variables": {"type": "object", "minProperties": 1}},
			"additionalProperties": False,
		},
		output="the values set",
		example={"variables": {"total": "{{ doc.grand_total }}"}},
		check=lambda p: _check_field_names(p.get("variables"), "/variables", "variable"),
		evaluate=_evaluate_set_variables,
	)
)

register(
	StepKind(
		name="start_flow",
		label="Start Sub-flow",
		group="Logic",
		description="Start another flow template; optionally wait until it finishes.",
		payload_schema={
			"type": "object",
			"required": ["template"],
			"properties": {
				"template": _REQUIRED_TEXT,
				"wait": {"type": "boolean", "description": "wait for the child run to finish"},
				"variables": {"type": "object"},
				"document": {"enum": ["trigger_document", "none"]},
			},
			"additionalProperties": False,
		},
		output="{run, status, variables}",
		example={"template": "Other Flow", "wait": True, "variables": {"source": "{{ doc.name }}"}},
		waits=lambda p: bool(p.get("wait")),
		check=lambda p: _check_field_names(p.get("variables"), "/variables", "variable"),
	)
)
