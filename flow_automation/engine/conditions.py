"""Conditions as data: `{field, op, value}` leaves and `all` / `any` / `not` groups.

Nothing here evaluates user text as code. `field` is a dotted path into the run context
(`doc.status`, `variables.choice`, `steps.check.output.total`, `trigger.event`); `value`
is a literal or a template string rendered in the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flow_automation.engine.render import RenderError, is_template, parse_datetime, render_string

MAX_REGEX_CHARS = 500
MAX_MATCH_INPUT_CHARS = 10_000

OPERATORS: tuple[str, ...] = (
	"==",
	"!=",
	"<",
	">",
	"<=",
	">=",
	"in",
	"not_in",
	"empty",
	"not_empty",
	"contains",
	"starts_with",
	"ends_with",
	"matches",
)
UNARY_OPERATORS = frozenset({"empty", "not_empty"})
LIST_OPERATORS = frozenset({"in", "not_in"})
GROUP_KEYS = ("all", "any", "not")

# The JSON schema of a condition; `check_condition` adds the structural rules
# (exactly one form per object) with clearer messages than `oneOf` would give.
CONDITION_SCHEMA: dict[str, Any] = {
	"type": "object",
	"properties": {
		"field": {"type": "string", "minLength": 1, "description": "dotted path, e.g. doc.status"},
		"op": {"enum": list(OPERATORS)},
		"value": {"description": "literal or template string; a list for in / not_in"},
		"all": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
		"any": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
		"not": {"$ref": "#/$defs/condition"},
	},
	"additionalProperties": False,
}


class ConditionError(ValueError):
	"""A condition is malformed (caught at validation) or cannot be evaluated."""


def check_condition(condition: Any, pointer: str = "") -> list[tuple[str, str]]:
	"""Structural problems of a condition as (JSON pointer, message) pairs; empty when valid.

	Pointers are relative to where the condition sits ("" is the condition itself).
	"""
	problems: list[tuple[str, str]] = []
	if not isinstance(condition, Mapping):
		return [(pointer, 'a condition must be an object such as {"field": ..., "op": ..., "value": ...}')]
	groups = [key for key in GROUP_KEYS if key in condition]
	is_leaf = "field" in condition or "op" in condition
	if (groups and is_leaf) or len(groups) > 1:
		found = ", ".join(groups + (["field/op"] if is_leaf else []))
		return [
			(
				pointer,
				f"a condition is either a {{field, op, value}} test or one of all/any/not, not {found}",
			)
		]
	if groups:
		key = groups[0]
		inner = condition[key]
		if key == "not":
			return check_condition(inner, f"{pointer}/not")
		if not isinstance(inner, list):
			return [(f"{pointer}/{key}", f"'{key}' must be a list of conditions")]
		for i, item in enumerate(inner):
			problems += check_condition(item, f"{pointer}/{key}/{i}")
		return problems
	field, op = condition.get("field"), condition.get("op")
	if not isinstance(field, str) or not field.strip():
		problems.append((f"{pointer}/field", "'field' is required: a dotted path such as doc.status"))
	if op not in OPERATORS:
		problems.append((f"{pointer}/op", f"{op!r} is not an operator; allowed: {', '.join(OPERATORS)}"))
		return problems
	if op not in UNARY_OPERATORS and "value" not in condition:
		problems.append((f"{pointer}/value", f"operator '{op}' needs a 'value'"))
	value = condition.get("value")
	if (
		op in LIST_OPERATORS
		and "value" in condition
		and not isinstance(value, list)
		and not is_template(value)
	):
		problems.append(
			(f"{pointer}/value", f'operator \'{op}\' needs a list value, e.g. ["Open", "Replied"]')
		)
	if op == "matches" and isinstance(value, str) and not is_template(value):
		problems += _check_regex(value, f"{pointer}/value")
	return problems


def _check_regex(pattern: str, pointer: str) -> list[tuple[str, str]]:
	if len(pattern) > MAX_REGEX_CHARS:
		return [(pointer, f"regular expression is {len(pattern)} characters; the limit is {MAX_REGEX_CHARS}")]
	try:
		re.compile(pattern)
	except re.error as e:
		return [(pointer, f"invalid regular expression: {e}")]
	return []


def resolve_path(context: Mapping[str, Any], path: str) -> Any:
	"""The value at a dotted path (`doc.items.0.qty`); None when any part is missing."""
	current: Any = context
	for part in path.strip().split("."):
		if isinstance(current, Mapping):
			current = current.get(part)
		elif isinstance(current, list | tuple) and part.lstrip("-").isdigit():
			index = int(part)
			current = current[index] if -len(current) <= index < len(current) else None
		else:
			return None
		if current is None:
			return None
	return current


def evaluate(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
	"""Evaluate a condition against the run context."""
	if "all" in condition:
		return all(evaluate(c, context) for c in condition["all"])
	if "any" in condition:
		return any(evaluate(c, context) for c in condition["any"])
	if "not" in condition:
		return not evaluate(condition["not"], context)
	problems = check_condition(condition)
	if problems:
		raise ConditionError("; ".join(f"{p or '/'}: {m}" for p, m in problems))
	left = resolve_path(context, condition["field"])
	op = condition["op"]
	right = _render_operand(condition.get("value"), context)
	return _OPERATOR_FUNCS[op](left, right)


def _render_operand(value: Any, context: Mapping[str, Any]) -> Any:
	try:
		if isinstance(value, str):
			return render_string(value, context)
		if isinstance(value, list):
			return [_render_operand(v, context) for v in value]
	except RenderError as e:
		raise ConditionError(f"value: {e}")
	return value


# --- comparison with the coercions a Frappe user expects ---------------------------------


def _as_number(value: Any) -> float | None:
	if isinstance(value, bool):
		return float(value)
	if isinstance(value, int | float):
		return float(value)
	if isinstance(value, str):
		try:
			return float(value.strip())
		except ValueError:
			return None
	return None


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
	"""Both sides as numbers, else both as datetimes, else both as strings; None if one is missing."""
	if left is None or right is None:
		return None
	a, b = _as_number(left), _as_number(right)
	if a is not None and b is not None:
		return a, b
	da, db = parse_datetime(left), parse_datetime(right)
	if da is not None and db is not None:
		return da, db
	return str(left), str(right)


def _equals(left: Any, right: Any) -> bool:
	if left is None or right is None:
		# Frappe stores unset Data fields as NULL or "": treat both as the same empty value.
		return (left in (None, "")) and (right in (None, ""))
	pair = _comparable(left, right)
	return pair is not None and pair[0] == pair[1]


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
	def op(left: Any, right: Any) -> bool:
		pair = _comparable(left, right)
		return pair is not None and compare(*pair)

	return op


def _is_empty(value: Any) -> bool:
	return value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def _in(left: Any, right: Any) -> bool:
	options = right if isinstance(right, list | tuple) else [right]
	return any(_equals(left, option) for option in options)


def _contains(left: Any, right: Any) -> bool:
	if left is None:
		return False
	if isinstance(left, list | tuple):
		return any(_equals(item, right) for item in left)
	return str(right) in str(left)


def _matches(left: Any, right: Any) -> bool:
	if left is None or not isinstance(right, str):
		return False
	if _check_regex(right, "/value"):
		raise ConditionError(f"invalid regular expression {right!r}")
	return re.search(right, str(left)[:MAX_MATCH_INPUT_CHARS]) is not None


_OPERATOR_FUNCS: dict[str, Callable[[Any, Any], bool]] = {
	"==": _equals,
	"!=": lambda l, r: not _equals(l, r),
	"<": _ordered(lambda a, b: a < b),
	">": _ordered(lambda a, b: a > b),
	"<=": _ordered(lambda a, b: a <= b),
	">=": _ordered(lambda a, b: a >= b),
	"in": _in,
	"not_in": lambda l, r: not _in(l, r),
	"empty": lambda l, r: _is_empty(l),
	"not_empty": lambda l, r: not _is_empty(l),
	"contains": _contains,
	"starts_with": lambda l, r: l is not None and str(l).startswith(str(r)),
	"ends_with": lambda l, r: l is not None and str(l).endswith(str(r)),
	"matches": _matches,
}
