"""Validation of a flow definition: JSON schema (jsonschema) plus graph checks.

Every problem is reported at once, each naming the step, the field as a JSON pointer,
what is wrong and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from flow_automation.engine import catalog, quiet_hours
from flow_automation.engine.definition import (
	DEFINITION_VERSION,
	DELAY_UNITS,
	ERROR_BRANCH,
	GATE_TRIGGERS,
	ON_ERROR,
	STEP_TRIGGERS,
	Definition,
)
from flow_automation.engine.render import iter_template_strings, template_syntax_error

MAX_STEPS = 500
MAX_DELAY_DAYS = 5 * 366
MAX_ATTEMPTS = 25
MAX_BACKOFF_SECONDS = 7 * 86400
STEP_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"

TRIGGER_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["type"],
	"properties": {
		"type": {"enum": list(STEP_TRIGGERS)},
		**{unit: {"type": "number", "minimum": 0} for unit in DELAY_UNITS},
		"at": {"type": "string", "minLength": 1, "description": "date/datetime, may be a template"},
	},
	"additionalProperties": False,
}

RETRY_SCHEMA: dict[str, Any] = {
	"type": "object",
	"properties": {
		"max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
		"backoff_seconds": {"type": "number", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS},
		"max_backoff_seconds": {"type": "number", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS},
	},
	"additionalProperties": False,
}

STEP_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["id", "kind"],
	"properties": {
		"id": {"type": "string", "pattern": STEP_ID_PATTERN},
		"kind": {"type": "string"},
		"label": {"type": ["string", "null"]},
		"description": {"type": ["string", "null"]},
		"parent_id": {"type": ["string", "null"]},
		"branch": {"type": ["string", "number", "null"]},
		"depends_on": {"type": "array", "items": {"type": "string"}},
		"trigger": TRIGGER_SCHEMA,
		"payload": {"type": "object"},
		"retry": RETRY_SCHEMA,
		"on_error": {"enum": list(ON_ERROR)},
		# checked in full by quiet_hours.check_window (its own messages), published in full
		"quiet_hours": {
			"type": ["object", "boolean", "null"],
			"description": "message steps: true = the flow's quiet hours (default), false/null = none, or a window",
		},
	},
	"additionalProperties": False,
}

DEFINITION_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["steps"],
	"properties": {
		"version": {"const": DEFINITION_VERSION},
		"variables": {"type": "object"},
		"quiet_hours": {
			"type": ["object", "null"],
			"description": "the hours message steps may run in (a window); null = any hour",
		},
		"steps": {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": MAX_STEPS},
	},
	"additionalProperties": False,
}


@dataclass(frozen=True)
class ValidationIssue:
	"""One problem: which step (id and index), which field (JSON pointer) and what is wrong."""

	message: str
	step_id: str | None = None
	pointer: str = ""
	index: int | None = None

	def __str__(self) -> str:
		where = (
			f"step '{self.step_id}'"
			if self.step_id
			else (f"step #{self.index + 1}" if self.index is not None else "flow")
		)
		return f"{where} {self.pointer or '/'}: {self.message}"

	def as_dict(self) -> dict[str, Any]:
		return {"step": self.step_id, "index": self.index, "pointer": self.pointer, "message": self.message}


class FlowValidationError(ValueError):
	"""A definition is invalid; `issues` lists every problem."""

	def __init__(self, issues: list[ValidationIssue]):
		self.issues = issues
		super().__init__("\n".join(str(i) for i in issues))


@lru_cache(maxsize=64)
def _validator_for(schema_key: str) -> Draft202012Validator:
	if schema_key == "__definition__":
		return Draft202012Validator(DEFINITION_SCHEMA)
	if schema_key == "__step__":
		return Draft202012Validator(STEP_SCHEMA)
	kind = catalog.get_kind(schema_key)
	assert kind is not None
	return Draft202012Validator(dict(kind.payload_schema))


def schema_problems(validator: Draft202012Validator, instance: Any, base: str = "") -> list[tuple[str, str]]:
	"""jsonschema errors as (JSON pointer, readable message), every error, in document order."""
	problems = []
	for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
		problems.extend(_explain(error, base))
	return problems


def _pointer(base: str, path: Iterable[Any]) -> str:
	return base + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _explain(error: SchemaError, base: str) -> list[tuple[str, str]]:
	where = _pointer(base, error.absolute_path)
	schema = error.schema if isinstance(error.schema, Mapping) else {}
	validator, value = error.validator, error.validator_value
	if validator == "required":
		missing = [p for p in value if isinstance(error.instance, Mapping) and p not in error.instance]
		return [(f"{where}/{p}", f"'{p}' is required") for p in missing]
	if validator == "additionalProperties" and isinstance(error.instance, Mapping):
		allowed = sorted(schema.get("properties", {}))
		extra = [k for k in error.instance if k not in schema.get("properties", {})]
		hint = f"; allowed: {', '.join(allowed)}" if allowed else "; this object takes no fields"
		return [(f"{where}/{k}", f"unknown field '{k}'{hint}") for k in extra]
	if validator == "enum":
		return [(where, f"{error.instance!r} is not allowed; allowed: {', '.join(map(str, value))}")]
	if validator == "const":
		return [(where, f"{error.instance!r} is not supported; use {value!r}")]
	if validator == "type":
		expected = " or ".join(value) if isinstance(value, list) else value
		return [
			(where, f"must be of type {expected}, got {type(error.instance).__name__} {error.instance!r}")
		]
	if validator == "pattern":
		return [(where, f"{error.instance!r} does not match {value} (letters, digits, _ . - ; up to 64)")]
	if validator in ("minimum", "exclusiveMinimum"):
		return [
			(
				where,
				f"{error.instance!r} is too small; the minimum is {value}"
				+ (" (exclusive)" if validator == "exclusiveMinimum" else ""),
			)
		]
	if validator in ("maximum", "exclusiveMaximum"):
		return [(where, f"{error.instance!r} is too large; the maximum is {value}")]
	if validator == "minLength":
		return [(where, "must not be empty" if value == 1 else f"must be at least {value} characters")]
	if validator == "maxLength":
		return [(where, f"is {len(error.instance)} characters; the limit is {value}")]
	if validator == "minItems":
		return [(where, f"needs at least {value} item(s)")]
	if validator == "maxItems":
		return [(where, f"has {len(error.instance)} items; the limit is {value}")]
	if validator == "minProperties":
		return [(where, f"needs at least {value} field(s)")]
	return [(where, error.message)]


def validate_definition(raw: Any) -> list[ValidationIssue]:
	"""Every problem of a definition; an empty list means it is valid."""
	issues: list[ValidationIssue] = []
	if not isinstance(raw, Mapping):
		return [ValidationIssue("a flow definition must be a JSON object with a 'steps' list")]
	for pointer, message in schema_problems(_validator_for("__definition__"), raw):
		issues.append(ValidationIssue(message, pointer=pointer))
	steps = raw.get("steps")
	if not isinstance(steps, list):
		return issues
	for pointer, message in _variable_problems(raw.get("variables")):
		issues.append(ValidationIssue(message, pointer=pointer))
	if isinstance(raw.get("quiet_hours"), Mapping):
		for pointer, message in quiet_hours.check_window(raw["quiet_hours"], "/quiet_hours"):
			issues.append(ValidationIssue(message, pointer=pointer))

	by_id: dict[str, tuple[int, Mapping[str, Any]]] = {}
	for index, step in enumerate(steps):
		if not isinstance(step, Mapping):
			continue
		step_id = step.get("id")
		if isinstance(step_id, str):
			if step_id in by_id:
				first = by_id[step_id][0] + 1
				issues.append(
					ValidationIssue(
						f"duplicate id: step #{first} already uses '{step_id}'", step_id, "/id", index
					)
				)
			else:
				by_id[step_id] = (index, step)

	for index, step in enumerate(steps):
		issues += _step_issues(step, index, by_id)
	issues += _graph_issues(steps, by_id)
	return issues


def _variable_problems(variables: Any) -> list[tuple[str, str]]:
	if not isinstance(variables, Mapping):
		return []
	return [
		(f"/variables/{k}", f"variable name {k!r} is not valid (letters, digits and _ only)")
		for k in variables
		if not catalog.IDENTIFIER.match(str(k))
	]


def _step_issues(step: Any, index: int, by_id: Mapping[str, tuple[int, Mapping]]) -> list[ValidationIssue]:
	if not isinstance(step, Mapping):
		return [ValidationIssue("a step must be a JSON object", None, "", index)]
	step_id = step.get("id") if isinstance(step.get("id"), str) else None
	issues = []

	def add(pointer: str, message: str) -> None:
		issues.append(ValidationIssue(message, step_id, pointer, index))

	for pointer, message in schema_problems(_validator_for("__step__"), step):
		add(pointer, message)

	kind_name = step.get("kind")
	kind = catalog.get_kind(kind_name) if isinstance(kind_name, str) else None
	payload = step.get("payload") if isinstance(step.get("payload"), Mapping) else {}
	if isinstance(kind_name, str) and kind is None:
		add("/kind", f"unknown kind {kind_name!r}; allowed: {', '.join(catalog.kind_names())}")
	if kind is not None:
		schema_pointers = set()
		for pointer, message in schema_problems(_validator_for(kind.name), payload, "/payload"):
			schema_pointers.add(pointer)
			add(pointer, message)
		for pointer, message in kind.check(payload):
			if f"/payload{pointer}" not in schema_pointers:  # the schema already said it
				add(f"/payload{pointer}", message)
	for pointer, source in iter_template_strings(payload, "/payload"):
		error = template_syntax_error(source)
		if error:
			add(pointer, error)

	trigger = step.get("trigger") if isinstance(step.get("trigger"), Mapping) else {}
	for pointer, message in _trigger_problems(trigger, step):
		add(pointer, message)
	if "quiet_hours" in step and kind is not None:
		for pointer, message in _quiet_hours_problems(step["quiet_hours"], kind):
			add(pointer, message)

	# references to other steps
	parent_id = step.get("parent_id")
	depends_on = step.get("depends_on") if isinstance(step.get("depends_on"), list) else []
	if parent_id:
		if parent_id == step_id:
			add("/parent_id", "a step cannot be its own parent")
		elif parent_id not in by_id:
			add("/parent_id", f"parent step '{parent_id}' does not exist")
	for i, dep in enumerate(depends_on):
		if dep == step_id:
			add(f"/depends_on/{i}", "a step cannot depend on itself")
		elif isinstance(dep, str) and dep not in by_id:
			add(f"/depends_on/{i}", f"step '{dep}' does not exist")
		elif depends_on.index(dep) != i:
			add(f"/depends_on/{i}", f"'{dep}' is listed twice")

	branch = step.get("branch")
	if branch not in (None, ""):
		if not parent_id:
			add("/branch", "a branch needs a parent_id: the step whose result chooses it")
		elif (
			parent_id in by_id and parent_id != step_id and catalog.get_kind(by_id[parent_id][1].get("kind"))
		):
			offered = offered_branches(by_id[parent_id][1])
			if str(branch) not in offered:
				allowed = ", ".join(offered) if offered else "none (that step does not branch)"
				add("/branch", f"'{parent_id}' has no branch {str(branch)!r}; allowed: {allowed}")

	if (
		step.get("on_error") == "branch"
		and step_id
		and not any(
			isinstance(s, Mapping) and s.get("parent_id") == step_id and str(s.get("branch")) == ERROR_BRANCH
			for _, s in by_id.values()
		)
	):
		add("/on_error", "on_error is 'branch' but no step has this parent with branch 'error'")
	return issues


def _quiet_hours_problems(setting: Any, kind: catalog.StepKind) -> list[tuple[str, str]]:
	if not kind.quiet_hours:
		senders = ", ".join(k.name for k in catalog.all_kinds() if k.quiet_hours)
		return [
			(
				"/quiet_hours",
				f"quiet hours apply only to message steps ({senders}); a {kind.name} step runs at any hour",
			)
		]
	if isinstance(setting, Mapping):
		return quiet_hours.check_window(setting, "/quiet_hours")
	return []


def offered_branches(step: Mapping[str, Any]) -> tuple[str, ...]:
	"""The branch names a step offers to its children (kind branches, plus 'error')."""
	kind = catalog.get_kind(step.get("kind")) if isinstance(step.get("kind"), str) else None
	payload = step.get("payload") if isinstance(step.get("payload"), Mapping) else {}
	branches = tuple(kind.branches(payload)) if kind else ()
	if step.get("on_error") == "branch":
		branches += (ERROR_BRANCH,)
	return branches


def _trigger_problems(trigger: Mapping[str, Any], step: Mapping[str, Any]) -> list[tuple[str, str]]:
	problems = []
	has_predecessors = bool(step.get("parent_id") or step.get("depends_on"))
	trigger_type = trigger.get("type") or ("on_prev_complete" if has_predecessors else "on_flow_start")
	units = {u: trigger.get(u) for u in DELAY_UNITS if trigger.get(u) is not None}
	if trigger_type == "after_delay":
		numeric = {u: v for u, v in units.items() if isinstance(v, int | float) and not isinstance(v, bool)}
		if not units:
			problems.append(("/trigger", "after_delay needs minutes, hours or days"))
		elif numeric and len(numeric) == len(units):
			total_days = (
				numeric.get("days", 0) + numeric.get("hours", 0) / 24 + numeric.get("minutes", 0) / 1440
			)
			if total_days > MAX_DELAY_DAYS:
				problems.append(
					(
						"/trigger",
						f"a delay of {total_days:.0f} days is too long; the limit is {MAX_DELAY_DAYS} days",
					)
				)
			if total_days <= 0 and all(v >= 0 for v in numeric.values()):
				problems.append(("/trigger", "the delay is zero; use on_prev_complete instead"))
	elif units:
		for unit in units:
			problems.append((f"/trigger/{unit}", f"'{unit}' only applies to after_delay, not {trigger_type}"))
	if trigger_type == "on_date":
		if not trigger.get("at"):
			problems.append(
				("/trigger/at", "on_date needs 'at': a date or a template such as {{ doc.due_date }}")
			)
		else:
			error = template_syntax_error(trigger["at"])
			if error:
				problems.append(("/trigger/at", error))
	elif trigger.get("at"):
		problems.append(("/trigger/at", f"'at' only applies to on_date, not {trigger_type}"))
	if trigger_type == "on_flow_start" and has_predecessors:
		problems.append(
			(
				"/trigger/type",
				"on_flow_start steps start with the flow and cannot have parent_id or depends_on; use on_prev_complete",
			)
		)
	if trigger_type == "on_prev_complete" and not has_predecessors:
		problems.append(
			(
				"/trigger/type",
				"on_prev_complete needs a previous step (parent_id or depends_on); use on_flow_start",
			)
		)
	if trigger_type in GATE_TRIGGERS and step.get("kind") in ("condition", "switch"):
		pass  # allowed: a gate before a decision
	return problems


def _graph_issues(steps: list[Any], by_id: Mapping[str, tuple[int, Mapping]]) -> list[ValidationIssue]:
	"""Cycles, and steps that can never start because they hang off one."""
	edges: dict[str, list[str]] = {}
	for step_id, (_, step) in by_id.items():
		preds = []
		if isinstance(step.get("parent_id"), str) and step["parent_id"] in by_id:
			preds.append(step["parent_id"])
		for dep in step.get("depends_on") or []:
			if isinstance(dep, str) and dep in by_id:
				preds.append(dep)
		edges[step_id] = [p for p in preds if p != step_id]

	# Kahn's algorithm: whatever is never released sits on or behind a cycle.
	remaining = {s: len(set(p)) for s, p in edges.items()}
	successors: dict[str, set[str]] = {s: set() for s in edges}
	for step_id, preds in edges.items():
		for p in set(preds):
			successors[p].add(step_id)
	ready = [s for s, n in remaining.items() if n == 0]
	released = set()
	while ready:
		current = ready.pop()
		released.add(current)
		for succ in successors[current]:
			remaining[succ] -= 1
			if remaining[succ] == 0:
				ready.append(succ)
	stuck = [s for s in edges if s not in released]
	if not stuck:
		return []
	on_cycle = _cycle_members(stuck, edges)
	issues = []
	for step_id in stuck:
		index = by_id[step_id][0]
		if step_id in on_cycle:
			cycle = " → ".join(on_cycle[step_id])
			issues.append(ValidationIssue(f"cycle: {cycle}", step_id, "/depends_on", index))
		else:
			issues.append(
				ValidationIssue(
					"can never start: it waits on a step inside a cycle", step_id, "/depends_on", index
				)
			)
	return issues


def _cycle_members(stuck: list[str], edges: Mapping[str, list[str]]) -> dict[str, list[str]]:
	"""For each step on a cycle, the cycle as a path starting and ending at it."""
	stuck_set = set(stuck)
	result: dict[str, list[str]] = {}
	for start in stuck:
		# depth-first search back to `start` through stuck predecessors
		stack = [(start, [start])]
		seen = set()
		while stack:
			node, path = stack.pop()
			for pred in edges[node]:
				if pred == start:
					result[start] = list(reversed([*path, start]))
					stack.clear()
					break
				if pred in stuck_set and pred not in seen:
					seen.add(pred)
					stack.append((pred, [*path, pred]))
	return result


def parse_definition(raw: Any) -> Definition:
	"""Validate and build a Definition; raises FlowValidationError listing every problem."""
	issues = validate_definition(raw)
	if issues:
		raise FlowValidationError(issues)
	return Definition.from_dict(raw)


def definition_json_schema() -> dict[str, Any]:
	"""The published JSON schema of a definition, one `if kind then payload` rule per kind."""
	step_schema = dict(STEP_SCHEMA)
	step_schema["properties"] = {
		**STEP_SCHEMA["properties"],
		"kind": {"enum": list(catalog.kind_names())},
		"quiet_hours": {"anyOf": [quiet_hours.WINDOW_SCHEMA, {"type": ["boolean", "null"]}]},
	}
	defs: dict[str, Any] = {}
	rules = []
	for kind in catalog.all_kinds():
		payload_schema = dict(kind.payload_schema)
		defs.update(payload_schema.pop("$defs", {}))
		rules.append(
			{
				"if": {"properties": {"kind": {"const": kind.name}}},
				"then": {"properties": {"payload": payload_schema}},
			}
		)
	step_schema["allOf"] = rules
	schema = dict(DEFINITION_SCHEMA)
	schema["properties"] = {
		**DEFINITION_SCHEMA["properties"],
		"quiet_hours": {"anyOf": [quiet_hours.WINDOW_SCHEMA, {"type": "null"}]},
		"steps": {**DEFINITION_SCHEMA["properties"]["steps"], "items": step_schema},
	}
	schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	schema["$defs"] = defs
	return schema
