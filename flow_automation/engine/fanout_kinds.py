"""The `for_each` step kind: a sub-flow per item of a list, bounded, optionally waiting for all.
Registered into the catalog on import.

Frappe-free, like the rest of the engine: what a payload may say, how its list is read, how
many children may run at once and what a child's ending means live here. Creating the child
runs is the host's business (`steps/fanout.py` through the runtime's batch start on a site,
`RecordingHost` in the simulator).

**The list.** `items` is a JSON list written in the payload, or a template. A template that
is exactly one expression, `{{ steps.find.output.docs }}`, is *evaluated* in the same
sandbox as every other template and gives the value itself (a real list of documents),
where rendering would print it to text. Any other template is rendered, and its text must
be a JSON list (`{{ names | tojson }}`, `["a", "b"]`).

**Items.** Each item starts one run of `template`: as its document (`item_as: document`,
the default: `{doctype, name}`, a document with a `name` plus the payload's `doctype`, or a
name plus `doctype`), or as `variables.item` (`item_as: variable`, no document). Every
child also gets the payload's `variables`, rendered per item with `item` and `index` in
scope. More than `max_items` items (default 1000, at most 10000) is a step error, and
nothing starts.

**Bounded.** The host writes every child at once (Queued, so cancelling the parent reaches
them all) and lets the first `concurrency` start; the step then waits (`fan_out`) and each
child's ending lets the next one start, so never more than `concurrency` run at once. With
`wait: true` the step waits for every child and ends on branch `done` (or `some_failed` when
any failed or was cancelled) with their results in item order; without it, it ends as soon
as the last child has been let start (at once when they all fit).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from flow_automation.engine import catalog
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.planner import EngineError
from flow_automation.engine.render import (
	RenderError,
	is_template,
	iter_template_strings,
	render_as_value,
	render_string,
	render_value,
	weight,
)
from flow_automation.engine.state import FAN_OUT, RunStatus

Problems = list[tuple[str, str]]

DONE = "done"
SOME_FAILED = "some_failed"
ITEM_AS = ("document", "variable")
DEFAULT_MAX_ITEMS = 1_000
HARD_MAX_ITEMS = 10_000
DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 100
PREVIEW_ITEMS = 5
# The results must fit the step's stored output (the planner keeps 64 000 characters).
MAX_RESULTS_CHARS = 48_000

_REQUIRED_TEXT = {"type": "string", "minLength": 1}

FOR_EACH_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["items", "template"],
	"properties": {
		"items": {
			"type": ["array", "string"],
			"description": "the list: {{ steps.find.output.docs }}, a JSON list, or a list written here",
		},
		"template": {**_REQUIRED_TEXT, "description": "the Flow Template each item starts"},
		"item_as": {
			"enum": list(ITEM_AS),
			"description": "document (default): the item is the child's document; variable: variables.item",
		},
		"doctype": {**_REQUIRED_TEXT, "description": "the DocType of items given by name (item_as document)"},
		"variables": {
			"type": "object",
			"description": "variables of every child, rendered per item: {{ item.name }}, {{ index }}",
		},
		"concurrency": {
			"type": "integer",
			"minimum": 1,
			"maximum": MAX_CONCURRENCY,
			"description": f"children running at once (default {DEFAULT_CONCURRENCY})",
		},
		"max_items": {
			"type": "integer",
			"minimum": 1,
			"maximum": HARD_MAX_ITEMS,
			"description": f"more items than this is an error and starts nothing (default {DEFAULT_MAX_ITEMS})",
		},
		"wait": {"type": "boolean", "description": "wait for every child and collect their results"},
		"collect": {
			"type": "array",
			"items": _REQUIRED_TEXT,
			"description": "with wait: the child variables kept in the results (default: all)",
		},
	},
	"additionalProperties": False,
}


# --- the list --------------------------------------------------------------------------------


def _as_list(value: Any, source: Any) -> list[Any]:
	shown = source if isinstance(source, str) else "the list"
	if isinstance(value, str):
		text = value.strip()
		if not text:
			raise StepError(f"items: {shown} rendered to nothing (is the path right?)", retryable=False)
		try:
			value = json.loads(text)
		except ValueError:
			raise StepError(
				f"items: {shown} rendered to {_short(text)}, which is not a list; give a template "
				"that is a list ({{ steps.find.output.docs }}) or a JSON list",
				retryable=False,
			)
	if value is None:
		raise StepError(f"items: {shown} rendered to nothing (is the path right?)", retryable=False)
	if isinstance(value, tuple) or isinstance(value, Iterator):
		# a filter's lazy result ({{ docs | map(attribute='name') }}): read up to one past the cap
		value = list(itertools.islice(value, HARD_MAX_ITEMS + 1))
	if isinstance(value, Mapping):
		raise StepError(
			f"items: {shown} is an object, not a list (keys {', '.join(map(str, list(value)[:5]))})",
			retryable=False,
		)
	if not isinstance(value, list):
		raise StepError(f"items: {shown} is {_short(value)}, not a list", retryable=False)
	return value


def items_of(payload: Mapping[str, Any], context: Mapping[str, Any]) -> list[Any]:
	"""The payload's list, read at run time (StepError naming `items` when it is not one)."""
	source = payload.get("items")
	try:
		if isinstance(source, list):
			return render_value(source, context, "/items")
		if isinstance(source, str):
			return _as_list(render_as_value(source, context), source)
	except RenderError as e:
		raise StepError(f"items: {e}", retryable=False)
	raise StepError("items: give a list, or a template that is one", retryable=False)


def _short(value: Any, limit: int = 60) -> str:
	text = repr(value)
	return text if len(text) <= limit else text[: limit - 1] + "…"


# --- what a step starts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
	"""One run a for_each step starts: its document (or none) and its variables."""

	index: int
	doctype: str | None
	name: str | None
	variables: dict[str, Any]


@dataclass(frozen=True)
class FanOut:
	"""Everything a for_each step starts, read from its payload at run time."""

	template: str
	children: tuple[Child, ...]
	items: tuple[Any, ...]
	concurrency: int
	wait: bool
	collect: tuple[str, ...] | None = None

	@property
	def total(self) -> int:
		return len(self.children)

	def preview(self, count: int = PREVIEW_ITEMS) -> list[Any]:
		"""The first few items, as a dry run shows them."""
		return list(self.items[:count])


def item_as(payload: Mapping[str, Any]) -> str:
	return payload.get("item_as") or "document"


def max_items(payload: Mapping[str, Any]) -> int:
	value = payload.get("max_items")
	if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= HARD_MAX_ITEMS:
		return value
	return DEFAULT_MAX_ITEMS


def concurrency_of(payload: Mapping[str, Any]) -> int:
	value = payload.get("concurrency")
	if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_CONCURRENCY:
		return value
	return DEFAULT_CONCURRENCY


def fan_out(payload: Mapping[str, Any], context: Mapping[str, Any]) -> FanOut:
	"""The children a for_each payload starts, rendered against the run's context.

	Raises StepError (not retryable) naming the field: a list that is not one, more items
	than `max_items`, an item that is not a document, a template name that rendered empty.
	"""
	try:
		template = render_string(str(payload.get("template") or ""), context).strip()
	except RenderError as e:
		raise StepError(f"template: {e}", retryable=False)
	if not template:
		raise StepError("template: rendered to an empty value", retryable=False)
	items = items_of(payload, context)
	limit = max_items(payload)
	if len(items) > limit:
		raise StepError(
			f"items: {len(items)} items is more than max_items ({limit}); nothing was started",
			retryable=False,
		)
	mode = item_as(payload)
	doctype = payload.get("doctype")
	if isinstance(doctype, str) and is_template(doctype):
		try:
			doctype = render_string(doctype, context).strip()
		except RenderError as e:
			raise StepError(f"doctype: {e}", retryable=False)
	variables = payload.get("variables") or {}
	# rendered once when no value is a template, else once per item (with `item` and `index`)
	per_item = any(True for _ in iter_template_strings(variables))
	shared = _render_variables(variables, context) if not per_item else None
	children = []
	for index, item in enumerate(items):
		values = (
			dict(shared)
			if shared is not None
			else _render_variables(variables, {**context, "item": item, "index": index})
		)
		if mode == "variable":
			children.append(Child(index, None, None, {**values, "item": item}))
		else:
			item_doctype, name = document_of(item, doctype or None, index)
			children.append(Child(index, item_doctype, name, values))
	collect = payload.get("collect")
	return FanOut(
		template=template,
		children=tuple(children),
		items=tuple(items),
		concurrency=concurrency_of(payload),
		wait=bool(payload.get("wait")),
		collect=tuple(collect) if isinstance(collect, list) else None,
	)


def _render_variables(variables: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
	try:
		return dict(render_value(dict(variables), context, "/variables"))
	except RenderError as e:
		raise StepError(str(e).lstrip("/"), retryable=False)


def document_of(item: Any, doctype: str | None, index: int) -> tuple[str, str]:
	"""(doctype, name) of an item that stands for a document; StepError naming the item."""
	where = f"items/{index}"
	if isinstance(item, Mapping):
		name = item.get("name")
		own = item.get("doctype")
		if own and doctype and own != doctype:
			raise StepError(f"{where}: a {own}, but doctype says {doctype}", retryable=False)
		item_doctype = own or doctype
	elif isinstance(item, str | int) and not isinstance(item, bool):
		name, item_doctype = item, doctype
	else:
		raise StepError(
			f"{where}: {_short(item)} is not a document: give a name or {{doctype, name}} "
			"(or item_as: variable)",
			retryable=False,
		)
	if name is None or isinstance(name, bool) or not str(name).strip():
		raise StepError(f"{where}: the item has no document name", retryable=False)
	if not item_doctype or not isinstance(item_doctype, str):
		raise StepError(
			f"{where}: {str(name)!r} needs a DocType: give doctype in the payload, or items "
			"as {doctype, name}",
			retryable=False,
		)
	return item_doctype, str(name)


# --- started, resumed, finished ------------------------------------------------------------


def _counts(total: int, started: int, completed: Sequence[int], failed: Sequence[int]) -> dict[str, int]:
	return {"total": total, "started": started, "completed": len(completed), "failed": len(failed)}


def fan_out_started(fan: FanOut, *, batch: str, released: int) -> Outcome:
	"""The step's outcome once its children exist and the first `released` may start: done
	when nothing is left to wait for, else waiting (`fan_out`) for its children."""
	total = fan.total
	counts = _counts(total, released, (), ())
	if total == 0:
		return Outcome.done({**counts, "results": []} if fan.wait else counts, branch=DONE)
	if not fan.wait and released >= total:
		return Outcome.done(counts, branch=DONE)
	return Outcome.waiting(
		FAN_OUT,
		output=counts,
		batch=batch,
		template=fan.template,
		total=total,
		concurrency=fan.concurrency,
		wait_for_all=fan.wait,
		collect=list(fan.collect) if fan.collect is not None else None,
		released=released,
		completed=[],
		failed=[],
	)


def resume_for_each(wait: Mapping[str, Any], event: Any, context: Mapping[str, Any]) -> Outcome:
	"""A child of the batch ended (the kind's `resume`): count it, let the next ones start
	(`release` effect), and end the step once it has nothing left to wait for.

	A child's ending counts once, however often it is told (a failed child that is retried
	and completes moves from failed to completed).
	"""
	data = event.data if isinstance(event.data, Mapping) else {}
	total = int(wait.get("total") or 0)
	index = data.get("index")
	if (
		event.type != "complete"
		or data.get("batch") != wait.get("batch")
		or not isinstance(index, int)
		or not 0 <= index < total
	):
		raise EngineError(
			f"step '{event.step_id}' waits for its {total} sub-flow runs to finish; "
			"it cannot be completed from outside"
		)
	completed = [i for i in wait.get("completed") or () if i != index]
	failed = [i for i in wait.get("failed") or () if i != index]
	(completed if data.get("status") == RunStatus.COMPLETED else failed).append(index)
	finished = set(completed) | set(failed)
	concurrency = int(wait.get("concurrency") or DEFAULT_CONCURRENCY)
	released = int(wait.get("released") or 0)
	running = sum(1 for i in range(released) if i not in finished)
	to_release = []
	while released < total and running + len(to_release) < concurrency:
		if released not in finished:  # a child cancelled before it started never starts
			to_release.append(released)
		released += 1
	while released < total and released in finished:
		released += 1
	effects: tuple[dict[str, Any], ...] = ()
	if to_release:
		effects = ({"type": "release", "batch": wait.get("batch"), "indexes": to_release},)
	counts = _counts(total, released, completed, failed)
	if wait.get("wait_for_all"):
		if len(finished) >= total:
			collect = {"type": "collect", "batch": wait.get("batch"), "total": total}
			collect["collect"] = wait.get("collect")
			return Outcome.done(counts, branch=SOME_FAILED if failed else DONE, effects=(*effects, collect))
	elif released >= total:
		return Outcome.done(counts, branch=DONE, effects=effects)
	return Outcome(
		"waiting",
		output=counts,
		wait_data={"released": released, "completed": sorted(completed), "failed": sorted(failed)},
		effects=effects,
	)


def results_output(
	children: Sequence[Mapping[str, Any]], total: int, collect: Sequence[str] | None = None
) -> dict[str, Any]:
	"""`results` for the step's output: per item, in item order, `{run, status, variables,
	error}` of its child (`children` carry their `index`). Kept under MAX_RESULTS_CHARS: past
	it the variables are left out, then the list is cut, and `results_truncated` says so."""
	results: list[dict[str, Any]] = [
		{"run": None, "status": None, "variables": {}, "error": None} for _ in range(total)
	]
	for child in children:
		index = child.get("index")
		if not isinstance(index, int) or not 0 <= index < total:
			continue
		variables = dict(child.get("variables") or {})
		if collect is not None:
			variables = {key: variables.get(key) for key in collect}
		results[index] = {
			"run": child.get("run"),
			"status": child.get("status"),
			"variables": variables,
			"error": child.get("error"),
		}
	if weight(results, MAX_RESULTS_CHARS) <= MAX_RESULTS_CHARS:
		return {"results": results}
	slim = [{key: r[key] for key in ("run", "status", "error")} for r in results]
	note = "the results were too large to keep their variables (name them in collect)"
	if weight(slim, MAX_RESULTS_CHARS) > MAX_RESULTS_CHARS:
		kept = []
		for result in slim:
			kept.append(result)
			if weight(kept, MAX_RESULTS_CHARS) > MAX_RESULTS_CHARS:
				kept.pop()
				break
		note = f"the results were too large: the first {len(kept)} of {total} are kept, without variables"
		slim = kept
	return {"results": slim, "results_truncated": note}


def simulated_outcome(fan: FanOut) -> Outcome:
	"""What a dry run shows: every child started and, with wait, completed (nothing starts)."""
	counts = _counts(fan.total, fan.total, range(fan.total) if fan.wait else (), ())
	output: dict[str, Any] = {**counts, "dry_run": True, "items": fan.preview()}
	if fan.wait:
		simulated = [
			{"index": c.index, "run": None, "status": RunStatus.COMPLETED.value, "variables": {}}
			for c in fan.children
		]
		output.update(results_output(simulated, fan.total))
	return Outcome.done(output, branch=DONE)


# --- saved payloads ---------------------------------------------------------------------------


def check_for_each(payload: Mapping[str, Any]) -> Problems:
	"""Problems of a for_each payload beyond its schema."""
	problems: Problems = []
	mode = item_as(payload)
	items = payload.get("items")
	limit = max_items(payload)
	literal: list[Any] | None = items if isinstance(items, list) else None
	if isinstance(items, str) and not is_template(items):
		try:
			parsed = json.loads(items)
		except ValueError:
			parsed = None
		if not isinstance(parsed, list):
			problems.append(
				("/items", "give a list: a template such as {{ steps.find.output.docs }}, or a JSON list")
			)
		else:
			literal = parsed
	if literal is not None:
		if len(literal) > limit:
			problems.append(("/items", f"{len(literal)} items is more than max_items ({limit})"))
		elif mode == "document":
			doctype = payload.get("doctype") or None
			for index, item in enumerate(literal):
				if isinstance(item, str) and is_template(item):
					continue  # known once rendered
				try:
					document_of(item, doctype, index)
				except StepError as e:
					problems.append((f"/items/{index}", str(e).split(": ", 1)[-1]))
	if mode == "variable" and payload.get("doctype"):
		problems.append(("/doctype", "'doctype' only applies with item_as 'document'"))
	variables = payload.get("variables")
	if isinstance(variables, Mapping):
		for key in variables:
			if not catalog.IDENTIFIER.match(str(key)):
				problems.append(
					(
						f"/variables/{key}",
						f"variable {key!r} is not a valid name (letters, digits and _ only)",
					)
				)
		if mode == "variable" and "item" in variables:
			problems.append(("/variables/item", "'item' is the item itself with item_as 'variable'"))
	collect = payload.get("collect")
	if collect is not None and not payload.get("wait"):
		problems.append(("/collect", "'collect' applies with wait: true"))
	for index, key in enumerate(collect if isinstance(collect, list) else ()):
		if isinstance(key, str) and not catalog.IDENTIFIER.match(key):
			problems.append((f"/collect/{index}", f"variable {key!r} is not a valid name"))
	return problems


# Both always (the builder draws a kind's fixed branches): without wait the step always ends
# on `done`, since its children's endings are not waited for.
BRANCHES = (DONE, SOME_FAILED)


catalog.register(
	catalog.StepKind(
		name="for_each",
		label="For Each",
		group="Logic",
		description=(
			"Start a sub-flow for each item of a list (as its document, or as variables.item), at "
			"most `concurrency` at once. With wait, wait for them all and collect their results: "
			"branch some_failed when any failed, else done."
		),
		payload_schema=FOR_EACH_SCHEMA,
		output="{total, started, completed, failed, results: [{run, status, variables, error}] (with wait)}",
		example={
			"items": "{{ steps.find.output.docs }}",
			"doctype": "Sales Invoice",
			"template": "Payment Reminder",
			"concurrency": 5,
			"wait": True,
		},
		branches=lambda payload: BRANCHES,
		fixed_branches=BRANCHES,
		waits=lambda payload: bool(payload.get("wait")),
		check=check_for_each,
		resume=resume_for_each,
		# `items` is evaluated to a value, not printed: the host reads the payload with `fan_out`
		render_payload=False,
	)
)
