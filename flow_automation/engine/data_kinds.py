"""Step kinds that read and compute: `lookup` (read documents) and `run_script` (a Server
Script through the host's safe_exec). Registered into the catalog on import.

Frappe-free, like the rest of the engine: what a payload may say, the branches a lookup
takes and the limits live here. Reading (as which user, with which permissions) and
running scripts are the host's business (`steps/data.py` on a site, `RecordingHost` in the
simulator).

`lookup` reads one document by `name`, or a list by `filters` (Frappe's filter syntax,
values rendered from templates), and continues on `found` or `not_found`.

`run_script` runs a Server Script of type API (by name) or inline `code`. Like an API
Server Script it takes its arguments from `frappe.form_dict` (here: the rendered `args`)
and gives its result in `frappe.response["message"]` (or, as Frappe's API handler does, in
`frappe.flags` when the script sets any); that result is the step's output.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from flow_automation.engine import catalog
from flow_automation.engine.outcome import Outcome
from flow_automation.engine.planner import MAX_STORED_OUTPUT_CHARS
from flow_automation.engine.render import is_template

Problems = list[tuple[str, str]]

LOOKUP = "lookup"
RUN_SCRIPT = "run_script"
FOUND = "found"
NOT_FOUND = "not_found"

DEFAULT_LOOKUP_LIMIT = 20  # frappe.get_list's own default page length
MAX_LOOKUP_LIMIT = 500
DEFAULT_SCRIPT_SECONDS = 10
MAX_SCRIPT_SECONDS = 30
# What a step's output may weigh as JSON: the planner stores at most this much of an output
# (more is kept as a truncated preview), so a larger read or result fails the step instead.
MAX_OUTPUT_CHARS = MAX_STORED_OUTPUT_CHARS

# Frappe's filter operators (frappe.utils.data.get_filter, v15).
FILTER_OPERATORS = (
	"=",
	"!=",
	">",
	"<",
	">=",
	"<=",
	"like",
	"not like",
	"in",
	"not in",
	"is",
	"between",
	"timespan",
	"previous",
	"next",
	"ancestors of",
	"descendants of",
	"not ancestors of",
	"not descendants of",
	"descendants of (inclusive)",
)
_ORDER_PART = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)
_LINE = re.compile(r"^Line (\d+):")

_TEXT = {"type": "string"}

LOOKUP_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["doctype"],
	"properties": {
		"doctype": {"type": "string", "minLength": 1, "description": "the DocType to read"},
		"name": {
			**_TEXT,
			"description": "read one document by name, e.g. {{ doc.customer }} (an empty name is not_found)",
		},
		"filters": {
			"type": ["object", "array"],
			"description": (
				'read a list, with Frappe filters: {"status": "Open", "grand_total": [">", "{{ doc.amount }}"]} '
				'or [["status", "=", "Open"]]; {} for every document'
			),
		},
		"fields": {
			"type": "array",
			"items": {"type": "string", "minLength": 1},
			"description": "fields to read (default: the whole document by name, only name for a list; * for all)",
		},
		"order_by": {**_TEXT, "description": "a list's order, e.g. modified desc"},
		"limit": {
			"type": "integer",
			"minimum": 1,
			"maximum": MAX_LOOKUP_LIMIT,
			"description": f"a list's size: at most {MAX_LOOKUP_LIMIT} documents (default {DEFAULT_LOOKUP_LIMIT})",
		},
	},
	"additionalProperties": False,
}

RUN_SCRIPT_SCHEMA: dict[str, Any] = {
	"type": "object",
	"properties": {
		"script": {
			"type": "string",
			"minLength": 1,
			"description": "a Server Script of type API, by name (not a template)",
		},
		"code": {
			"type": "string",
			"minLength": 1,
			"description": (
				"inline server script (as in a Server Script; not a template): it reads doc, variables, "
				"steps, trigger and args, and sets frappe.response['message'] to its result"
			),
		},
		"args": {
			"type": "object",
			"description": "values for the script, rendered: frappe.form_dict (and args) in the script",
		},
		"timeout_seconds": {
			"type": "number",
			"exclusiveMinimum": 0,
			"maximum": MAX_SCRIPT_SECONDS,
			"description": f"time cap (default {DEFAULT_SCRIPT_SECONDS} s, at most {MAX_SCRIPT_SECONDS} s)",
		},
	},
	"additionalProperties": False,
}


# --- lookup --------------------------------------------------------------------------------
def _field_name_problem(name: Any, pointer: str, *, star: bool = False) -> Problems:
	if star and name == "*":
		return []
	if isinstance(name, str) and is_template(name):
		return [(pointer, "a field name cannot be a template")]
	if not isinstance(name, str) or not catalog.IDENTIFIER.match(name):
		return [(pointer, f"{name!r} is not a field name (letters, digits and _ only)")]
	return []


def _operator_problem(operator: Any, pointer: str) -> Problems:
	if isinstance(operator, str) and (is_template(operator) or operator.strip().lower() in FILTER_OPERATORS):
		return []
	return [(pointer, f"{operator!r} is not a filter operator; allowed: {', '.join(FILTER_OPERATORS)}")]


def _check_filters(filters: Any) -> Problems:
	problems: Problems = []
	if isinstance(filters, Mapping):
		for field, value in filters.items():
			pointer = f"/filters/{field}"
			problems += _field_name_problem(field, pointer)
			if isinstance(value, Mapping):
				problems.append((pointer, "a filter is a value or [operator, value], not an object"))
			elif isinstance(value, list):
				if len(value) != 2:
					problems.append((pointer, "a filter with an operator is [operator, value]"))
				else:
					problems += _operator_problem(value[0], f"{pointer}/0")
	elif isinstance(filters, list):
		for i, item in enumerate(filters):
			pointer = f"/filters/{i}"
			if not isinstance(item, list) or len(item) not in (3, 4):
				problems.append(
					(
						pointer,
						"each filter is [field, operator, value] (or [doctype, field, operator, value])",
					)
				)
				continue
			offset = len(item) - 3
			problems += _field_name_problem(item[offset], f"{pointer}/{offset}")
			problems += _operator_problem(item[offset + 1], f"{pointer}/{offset + 1}")
	return problems


def order_by_problem(order_by: Any) -> str | None:
	"""Why `order_by` is not "field [asc|desc], ...", or None."""
	if not isinstance(order_by, str):
		return None
	for part in order_by.split(","):
		if not _ORDER_PART.match(part):
			return f"{order_by!r} is not 'field [asc|desc], ...'"
	return None


def check_lookup(payload: Mapping[str, Any]) -> Problems:
	"""Problems of a `lookup` payload beyond its schema: name or filters, field names, operators."""
	problems: Problems = []
	has_name, has_filters = "name" in payload, "filters" in payload
	if has_name and has_filters:
		problems.append(("/filters", "give either name (one document) or filters (a list), not both"))
	elif not has_name and not has_filters:
		problems.append(("/name", "give name (one document) or filters (a list; {} for every document)"))
	if has_name:
		name = payload.get("name")
		if isinstance(name, str) and not name.strip():
			problems.append(("/name", "must not be empty"))
		for key in ("order_by", "limit"):
			if key in payload:
				problems.append(
					(f"/{key}", f"'{key}' applies to a list (filters), not to one document by name")
				)
	problems += _check_filters(payload.get("filters"))
	fields = payload.get("fields")
	if isinstance(fields, list):
		for i, field in enumerate(fields):
			if isinstance(field, str) and field:
				problems += _field_name_problem(field, f"/fields/{i}", star=True)
	if isinstance(payload.get("order_by"), str) and not is_template(payload["order_by"]):
		message = order_by_problem(payload["order_by"])
		if message:
			problems.append(("/order_by", message))
	return problems


def preflight_lookup(payload: Mapping[str, Any]) -> Problems:
	"""A rendered order_by must still be 'field [asc|desc]' (it may come from a template)."""
	message = order_by_problem(payload.get("order_by"))
	return [("/order_by", message)] if message else []


def lookup_request(payload: Mapping[str, Any]) -> dict[str, Any]:
	"""A rendered `lookup` payload as the host reads it: {doctype, name (None for a list),
	filters, fields, order_by, limit, filter_fields, order_fields}. An empty name stays "" (the
	host answers not_found); `filter_fields` are (pointer, field, doctype or None) for every
	field a filter names, `order_fields` the fields order_by sorts on, for the host to check
	against the DocType."""
	one = "name" in payload
	name = payload.get("name")
	filters = payload.get("filters") if not one else None
	fields = [str(f).strip() for f in payload.get("fields") or () if str(f).strip()]
	limit = payload.get("limit")
	order_by = (payload.get("order_by") or "").strip() or None
	return {
		"doctype": str(payload.get("doctype") or "").strip(),
		"name": (str(name).strip() if name is not None else "") if one else None,
		"filters": filters,
		"fields": fields,
		"order_by": order_by,
		"limit": min(int(limit), MAX_LOOKUP_LIMIT)
		if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
		else DEFAULT_LOOKUP_LIMIT,
		"filter_fields": _filter_fields(filters),
		"order_fields": [
			m.group(1) for part in (order_by or "").split(",") if (m := _ORDER_PART.match(part))
		],
	}


def _filter_fields(filters: Any) -> list[tuple[str, str, str | None]]:
	out: list[tuple[str, str, str | None]] = []
	if isinstance(filters, Mapping):
		out = [(f"filters/{field}", str(field), None) for field in filters]
	elif isinstance(filters, list):
		for i, item in enumerate(filters):
			if isinstance(item, list | tuple) and len(item) in (3, 4):
				doctype = str(item[0]) if len(item) == 4 else None
				out.append((f"filters/{i}", str(item[len(item) - 3]), doctype))
	return out


def lookup_outcome(output: Mapping[str, Any]) -> Outcome:
	"""A lookup's result: found when it read a document (or a list with any), else not_found;
	a read too large to be kept as the step's output fails the step, saying why."""
	problem = output_too_large(output, "the documents read")
	if problem:
		return Outcome.failed(f"{problem}: read fewer fields or fewer documents (limit)", retryable=False)
	found = bool(output.get("docs")) if "docs" in output else bool(output.get("doc"))
	return Outcome.done(dict(output), branch=FOUND if found else NOT_FOUND)


def simulated_lookup(payload: Mapping[str, Any], counter: int) -> tuple[dict[str, Any], str]:
	"""What the Frappe-free simulator answers for a lookup: one plausible document, found."""
	request = lookup_request(payload)
	doc = {"doctype": request["doctype"], "name": request["name"] or f"simulated-{counter}"}
	if request["name"] is not None:
		return {"simulated": True, "doctype": request["doctype"], "doc": doc}, FOUND
	return {"simulated": True, "doctype": request["doctype"], "docs": [doc], "count": 1}, FOUND


# --- run_script ----------------------------------------------------------------------------
def check_run_script(payload: Mapping[str, Any]) -> Problems:
	"""Problems of a `run_script` payload beyond its schema: one source, never a template, and
	inline code that at least parses as Python (Frappe's restrictions are checked when it runs)."""
	problems: Problems = []
	has_script, has_code = "script" in payload, "code" in payload
	if has_script and has_code:
		problems.append(("/code", "give either script (a Server Script's name) or code, not both"))
	elif not has_script and not has_code:
		problems.append(("/code", "give code (an inline script) or script (a Server Script of type API)"))
	for key in ("script", "code"):
		if is_template(payload.get(key)):
			problems.append(
				(
					f"/{key}",
					f"'{key}' is not a template: pass values in args, or read doc / variables / steps "
					"in the script ({{, {% and {# are not allowed here)",
				)
			)
	code = payload.get("code")
	if isinstance(code, str) and code.strip() and not is_template(code):
		try:
			ast.parse(code)
		except SyntaxError as e:
			problems.append(("/code", f"syntax error on line {e.lineno}: {e.msg}"))
	args = payload.get("args")
	if isinstance(args, Mapping):
		problems += [
			(f"/args/{key}", f"argument name {key!r} is not valid (letters, digits and _ only)")
			for key in args
			if not catalog.IDENTIFIER.match(str(key))
		]
	return problems


def script_timeout(payload: Mapping[str, Any]) -> float:
	"""The step's time cap in seconds (default 10, at most 30)."""
	value = payload.get("timeout_seconds")
	if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
		return float(min(value, MAX_SCRIPT_SECONDS))
	return float(DEFAULT_SCRIPT_SECONDS)


def script_error_line(messages: Any) -> int | None:
	"""The line RestrictedPython names in its compile errors ("Line 3: ..."), if any."""
	for message in messages if isinstance(messages, list | tuple) else [messages]:
		match = _LINE.match(str(message))
		if match:
			return int(match.group(1))
	return None


def output_too_large(value: Any, what: str = "the output") -> str | None:
	"""Why `value` is too large to be a step's output (its JSON over MAX_OUTPUT_CHARS), or None."""
	size = len(json.dumps(value, default=str))
	if size <= MAX_OUTPUT_CHARS:
		return None
	return f"{what} is {size} characters of JSON; a step's output may hold at most {MAX_OUTPUT_CHARS}"


def _fingerprint(payload: Any) -> str:
	if isinstance(payload, str):
		return payload  # not JSON: compared as written
	return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def script_fingerprints(steps: Iterable[Mapping[str, Any]]) -> Counter[str]:
	"""The payloads of the steps that run code (run_script), counted: a template may keep the
	ones it had, while adding or changing one needs a System Manager. A step's id, place and
	retry policy do not count; its payload (code or script, args, time cap) does."""
	return Counter(
		_fingerprint(step.get("payload"))
		for step in steps
		if isinstance(step, Mapping) and step.get("kind") == RUN_SCRIPT
	)


catalog.register(
	catalog.StepKind(
		name=LOOKUP,
		label="Look Up Documents",
		group="Documents",
		description=(
			"Read one document by name, or a list by filters (fields, order, at most "
			f"{MAX_LOOKUP_LIMIT}), with the permissions of the template's Run As user, else the "
			"trigger document's owner; continue on found or not_found."
		),
		payload_schema=LOOKUP_SCHEMA,
		output="{doctype, doc} by name, {doctype, docs, count} for a list",
		example={
			"doctype": "ToDo",
			"filters": {"reference_name": "{{ doc.name }}", "status": "Open"},
			"fields": ["name", "description", "allocated_to"],
			"order_by": "modified desc",
			"limit": 20,
		},
		branches=lambda payload: (FOUND, NOT_FOUND),
		fixed_branches=(FOUND, NOT_FOUND),
		check=check_lookup,
		preflight=preflight_lookup,
	)
)

catalog.register(
	catalog.StepKind(
		name=RUN_SCRIPT,
		label="Run Script",
		group="Logic",
		description=(
			"Compute with a Server Script (type API, by name) or inline code, through Frappe's "
			"safe_exec when server scripts are enabled: it reads the run's doc, variables, steps and "
			"trigger, and what it sets in frappe.response['message'] is the step's output. "
			"Only System Managers may add or change it."
		),
		payload_schema=RUN_SCRIPT_SCHEMA,
		output="the script's result (frappe.response['message'], or frappe.flags when set)",
		example={
			"code": (
				"open_todos = frappe.db.count('ToDo', {'status': 'Open', 'allocated_to': args.user})\n"
				"frappe.response['message'] = {'open_todos': open_todos}"
			),
			"args": {"user": "{{ doc.owner }}"},
		},
		check=check_run_script,
	)
)
