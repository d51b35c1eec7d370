"""Payload rendering: Jinja templates in a sandbox that cannot run code or eat memory.

Payload strings are Jinja templates, as in Frappe's Notification messages. They see only
plain data (dicts, lists, strings, numbers, dates) — never a Frappe document object — so
a template can read values but never call a method that changes anything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Limits that keep one render from eating a worker's memory or CPU.
MAX_TEMPLATE_CHARS = 20_000
MAX_OUTPUT_CHARS = 100_000
MAX_STRING_CHARS = 100_000
MAX_RANGE = 1_000
MAX_INT_BITS = 4_096
TEMPLATE_CACHE_SIZE = 2_048


class RenderError(ValueError):
	"""A template could not be rendered; the message says why in the user's terms."""


def is_template(value: Any) -> bool:
	"""True when `value` is a string holding Jinja syntax."""
	# three `in` tests, no generator: this runs for every string of every step
	return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


# --- date helpers (shared with filters and the planner) -----------------------------------

_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_datetime(value: Any) -> dt.datetime | None:
	"""Read a date/datetime from a datetime, date or Frappe/ISO string; None if it is none of them."""
	if isinstance(value, dt.datetime):
		return value.replace(tzinfo=None) if value.tzinfo else value
	if isinstance(value, dt.date):
		return dt.datetime(value.year, value.month, value.day)
	if not isinstance(value, str):
		return None
	text = value.strip().replace("T", " ")
	if text.endswith("Z"):
		text = text[:-1]
	text = re.sub(r"[+-]\d{2}:?\d{2}$", "", text) if len(text) > 10 else text
	for fmt in _DATE_FORMATS:
		try:
			return dt.datetime.strptime(text, fmt)
		except ValueError:
			continue
	return None


def format_datetime(value: dt.datetime) -> str:
	"""The storage format Frappe uses for Datetime fields."""
	return value.strftime("%Y-%m-%d %H:%M:%S")


def _shift(value: Any, delta: dt.timedelta) -> Any:
	parsed = parse_datetime(value)
	if parsed is None:
		return ""
	shifted = parsed + delta
	is_date_only = (isinstance(value, dt.date) and not isinstance(value, dt.datetime)) or (
		isinstance(value, str) and len(value.strip()) == 10
	)
	if is_date_only:
		return shifted.date().isoformat()
	return format_datetime(shifted)


def _number(value: Any, name: str) -> float:
	try:
		number = float(value)
	except (TypeError, ValueError):
		raise RenderError(f"{name} must be a number, got {value!r}")
	if abs(number) > 100_000:
		raise RenderError(f"{name} {value!r} is out of range")
	return number


def add_days(value: Any, days: Any = 1) -> Any:
	return _shift(value, dt.timedelta(days=_number(days, "add_days")))


def add_hours(value: Any, hours: Any = 1) -> Any:
	return _shift(value, dt.timedelta(hours=_number(hours, "add_hours")))


def add_minutes(value: Any, minutes: Any = 1) -> Any:
	return _shift(value, dt.timedelta(minutes=_number(minutes, "add_minutes")))


def format_date(value: Any, fmt: str = "%d-%m-%Y") -> str:
	parsed = parse_datetime(value)
	if parsed is None:
		return ""
	if not isinstance(fmt, str) or len(fmt) > 64:
		raise RenderError("format_date: the format must be a short string such as '%d-%m-%Y'")
	return parsed.strftime(fmt)


# --- the sandbox -------------------------------------------------------------------------


def _check_size(value: Any) -> Any:
	if isinstance(value, str | list | tuple) and len(value) > MAX_STRING_CHARS:
		raise SecurityError(f"a value longer than {MAX_STRING_CHARS} items was refused")
	if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
		raise SecurityError("a number too large to handle was refused")
	return value


def weight(value: Any, budget: int = MAX_STRING_CHARS) -> int:
	"""Roughly how many characters printing `value` makes; stops counting past `budget`.

	A list can hold one long string many times at almost no memory cost, and only turning
	it into text makes it big: every place that does that checks this first.
	"""
	total = 0
	stack = [value]
	while stack and total <= budget:
		item = stack.pop()
		if isinstance(item, str):
			total += len(item)
		elif isinstance(item, Mapping):
			total += 2 + 2 * len(item)
			stack.extend(item.keys())
			stack.extend(item.values())
		elif isinstance(item, list | tuple | set | frozenset):
			total += 2 + 2 * len(item)
			stack.extend(item)
		else:
			total += 8
	return total


def _check_weight(value: Any, limit: int = MAX_STRING_CHARS) -> Any:
	if isinstance(value, list | tuple | set | frozenset | Mapping) and weight(value, limit) > limit:
		raise SecurityError(f"a value that prints to more than {limit} characters was refused")
	return value


def _capped_join(parts: Iterable[Any]) -> str:
	"""`~` concatenation, checked so repeated doubling cannot grow a string without bound."""
	total = 0
	out = []
	for part in parts:
		_check_weight(part, MAX_STRING_CHARS - total)
		text = str(part)
		total += len(text)
		if total > MAX_STRING_CHARS:
			raise SecurityError(f"a string longer than {MAX_STRING_CHARS} characters was refused")
		out.append(text)
	return "".join(out)


class _CappedCodeGenerator(CodeGenerator):
	"""Routes `~` through `_capped_join`; Jinja's own join is not interceptable otherwise."""

	def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
		self.write("environment.capped_join((")
		for arg in node.nodes:
			self.visit(arg, frame)
			self.write(", ")
		self.write("))")


_GROWING_STR_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs"}
_BLOCKED_STR_METHODS = {"format", "format_map"}


class FlowSandbox(ImmutableSandboxedEnvironment):
	"""Jinja's immutable sandbox plus caps on every operation that can grow a value."""

	code_generator_class = _CappedCodeGenerator
	intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

	def __init__(self) -> None:
		super().__init__(
			undefined=ChainableUndefined,
			autoescape=False,
			keep_trailing_newline=True,
			finalize=lambda value: _check_weight(value, MAX_OUTPUT_CHARS),
		)
		self.capped_join = _capped_join
		for name in ("lipsum", "cycler", "joiner"):
			self.globals.pop(name, None)
		self.globals["range"] = _capped_range
		for name in ("random", "format"):
			self.filters.pop(name, None)
		self.filters.update(
			add_days=add_days,
			add_hours=add_hours,
			add_minutes=add_minutes,
			format_date=format_date,
			center=_capped_filter(self.filters["center"]),
			indent=_capped_filter(self.filters["indent"]),
			replace=_safe_replace,
			join=_safe_join,
			wordwrap=_capped_filter(self.filters["wordwrap"]),
			map=_budgeted_map(self.filters["map"]),
		)
		# filters that turn a whole structure into text
		for name in ("string", "pprint", "tojson", "e", "escape", "forceescape", "urlencode", "xmlattr"):
			self.filters[name] = _weighed_filter(self.filters[name])
		# list() of an existing list only copies references; of a lazy map it builds values
		self.filters["list"] = lambda value: (
			list(value)
			if isinstance(value, list | tuple | set | frozenset | Mapping | str)
			else _consume(value)
		)

	def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
		# A plain dict, not Jinja's ChainMap: every render copies its template's globals twice,
		# and a ChainMap makes that most of a short template's cost. Ours are set once, above.
		return {**self.globals, **(d or {})}

	def getattr(self, obj: Any, attribute: str) -> Any:
		# `doc.items` must be the child table, not dict.items.
		if isinstance(obj, Mapping) and attribute in obj:
			return obj[attribute]
		if isinstance(obj, str) and attribute in _BLOCKED_STR_METHODS:
			# Jinja's own str.format wrapper honours any field width: a memory bomb.
			raise SecurityError(f"str.{attribute} is not available in flow templates")
		return super().getattr(obj, attribute)

	def getitem(self, obj: Any, argument: Any) -> Any:
		if isinstance(obj, str) and argument in _BLOCKED_STR_METHODS:
			raise SecurityError(f"str.{argument} is not available in flow templates")
		return super().getitem(obj, argument)

	def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
		if operator == "%" and isinstance(left, str):
			raise SecurityError("'%' string formatting is not available in flow templates")
		if operator == "**":
			if isinstance(right, int | float) and abs(right) > 128:
				raise SecurityError("exponents above 128 are not available in flow templates")
			return _check_size(left**right)
		if operator == "*":
			for seq, count in ((left, right), (right, left)):
				if isinstance(seq, str | list | tuple) and isinstance(count, int):
					if len(seq) * count > MAX_STRING_CHARS:
						raise SecurityError(f"a value longer than {MAX_STRING_CHARS} items was refused")
			if isinstance(left, int) and isinstance(right, int):
				if left.bit_length() + right.bit_length() > MAX_INT_BITS:
					raise SecurityError("a number too large to handle was refused")
			return _check_size(left * right)
		if operator == "+":
			return _check_size(left + right)
		return super().call_binop(context, operator, left, right)

	def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
		owner = getattr(__obj, "__self__", None)
		name = getattr(__obj, "__name__", "")
		if isinstance(owner, str):
			if name in _BLOCKED_STR_METHODS:
				raise SecurityError(f"str.{name} is not available in flow templates")
			if name in _GROWING_STR_METHODS:
				sizes = [a for a in args if isinstance(a, int)]
				if any(size > MAX_STRING_CHARS for size in sizes) or (
					name == "expandtabs" and owner.count("\t") * max(sizes or [8]) > MAX_STRING_CHARS
				):
					raise SecurityError(f"str.{name} beyond {MAX_STRING_CHARS} characters was refused")
			if name == "replace" and len(args) >= 2:
				old, new = str(args[0]), str(args[1])
				growth = (owner.count(old) if old else len(owner) + 1) * len(new)
				if len(owner) + growth > MAX_STRING_CHARS:
					raise SecurityError(f"str.replace beyond {MAX_STRING_CHARS} characters was refused")
			if name == "join" and args:
				parts = list(args[0])
				if sum(len(str(p)) for p in parts) + len(owner) * len(parts) > MAX_STRING_CHARS:
					raise SecurityError(f"str.join beyond {MAX_STRING_CHARS} characters was refused")
				args = (parts, *args[1:])
		return _check_size(super().call(__context, __obj, *args, **kwargs))


def _capped_range(*args: int) -> range:
	rng = range(*args)
	if len(rng) > MAX_RANGE:
		raise SecurityError(f"range() is limited to {MAX_RANGE} items in flow templates")
	return rng


def _safe_replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
	text, old, new = str(value), str(old), str(new)
	growth = (text.count(old) if old else len(text) + 1) * len(new)
	if len(text) + growth > MAX_STRING_CHARS:
		raise SecurityError(f"replace beyond {MAX_STRING_CHARS} characters was refused")
	return text.replace(old, new) if count is None else text.replace(old, new, count)


def _safe_join(value: Any, separator: str = "", attribute: Any = None) -> str:
	parts = [(item.get(attribute) if isinstance(item, Mapping) else item) for item in value]
	if attribute is None:
		parts = list(value)
	return _capped_join(_interleave([str(p) for p in parts], str(separator)))


def _interleave(parts: list[str], separator: str) -> Iterable[str]:
	for i, part in enumerate(parts):
		if i:
			yield separator
		yield part


def _weighed_filter(filter_func: Callable) -> Callable:
	def weighed(*args: Any, **kwargs: Any) -> Any:
		if (
			args
			and not isinstance(args[0], list | tuple | set | frozenset | Mapping | str)
			and hasattr(args[0], "__iter__")
		):
			args = (_consume(args[0]), *args[1:])  # a lazy map/select: count while consuming
		for value in args:
			_check_weight(value)
		return _check_size(filter_func(*args, **kwargs))

	_copy_markers(filter_func, weighed)
	return weighed


def _consume(iterable: Iterable[Any]) -> list[Any]:
	items, total = [], 0
	for item in iterable:
		total += weight(item, MAX_STRING_CHARS - total)
		if total > MAX_STRING_CHARS:
			raise SecurityError(f"a sequence longer than {MAX_STRING_CHARS} characters was refused")
		items.append(item)
	return items


def _budgeted_map(map_filter: Callable) -> Callable:
	"""`map` is lazy: count what it produces so `|map('upper')|list` cannot build gigabytes."""

	def budgeted(*args: Any, **kwargs: Any) -> Iterable[Any]:
		total = 0
		for item in map_filter(*args, **kwargs):
			if isinstance(item, str):
				total += len(item)
				if total > MAX_STRING_CHARS * 10:
					raise SecurityError("map produced more than a million characters")
			yield item

	_copy_markers(map_filter, budgeted)
	return budgeted


def _copy_markers(source: Callable, target: Callable) -> None:
	# keep Jinja's pass_context / pass_eval_context / pass_environment markers
	if hasattr(source, "jinja_pass_arg"):
		target.jinja_pass_arg = source.jinja_pass_arg  # type: ignore[attr-defined]


def _capped_filter(filter_func: Callable) -> Callable:
	def capped(*args: Any, **kwargs: Any) -> Any:
		for value in list(args[1:]) + list(kwargs.values()):
			if isinstance(value, int) and value > MAX_STRING_CHARS:
				raise SecurityError(f"filter argument {value} is above the limit of {MAX_STRING_CHARS}")
		return _check_size(filter_func(*args, **kwargs))

	_copy_markers(filter_func, capped)
	return capped


_ENV = FlowSandbox()


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def compile_template(source: str):
	"""Compile once; later renders of the same source reuse the compiled template."""
	if len(source) > MAX_TEMPLATE_CHARS:
		raise RenderError(f"template is {len(source)} characters; the limit is {MAX_TEMPLATE_CHARS}")
	try:
		return _ENV.from_string(source)
	except TemplateSyntaxError as e:
		raise RenderError(f"template syntax error on line {e.lineno}: {e.message}")


def template_syntax_error(source: str) -> str | None:
	"""The syntax problem of a template, or None when it compiles."""
	if not is_template(source):
		return None
	try:
		compile_template(source)
	except RenderError as e:
		return str(e)
	return None


def render_string(source: str, context: Mapping[str, Any]) -> str:
	"""Render one template string; plain strings come back unchanged."""
	if not is_template(source):
		return source
	template = compile_template(source)
	size = 0
	chunks = []
	try:
		for chunk in template.generate(context):
			size += len(chunk)
			if size > MAX_OUTPUT_CHARS:
				raise RenderError(f"rendered output is longer than {MAX_OUTPUT_CHARS} characters")
			chunks.append(chunk)
	except Exception as e:
		_raise_render_error(e)
	return "".join(chunks)


_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expression>.*)\}\}\s*$", re.DOTALL)
_MARKERS = ("{{", "}}", "{%", "%}", "{#", "#}")


def render_as_value(source: str, context: Mapping[str, Any]) -> Any:
	"""A template as a value: `{{ expression }}` gives what the expression is (a list stays a
	list), in the templates' sandbox; any other template gives its rendered text."""
	expression = _one_expression(source)
	if expression is None:
		return render_string(source, context)
	try:
		return _compiled_expression(expression)(**context)
	except Exception as e:
		_raise_render_error(e)


@lru_cache(maxsize=512)
def _compiled_expression(expression: str):
	try:
		return _ENV.compile_expression(expression, undefined_to_none=True)
	except TemplateSyntaxError as e:
		raise RenderError(f"template syntax error: {e.message}")


def _one_expression(source: str) -> str | None:
	"""The expression of a template that is exactly `{{ expression }}`, else None."""
	match = _ONE_EXPRESSION.match(source)
	if not match or any(marker in match["expression"] for marker in _MARKERS):
		return None
	expression = match["expression"]
	# whitespace control, as Jinja reads it: `{{- x -}}` is `x`
	if expression[:1] in ("-", "+"):
		expression = expression[1:]
	if expression[-1:] in ("-", "+"):
		expression = expression[:-1]
	return expression


def _raise_render_error(e: Exception) -> NoReturn:
	"""Raise what rendering raised as a RenderError saying what went wrong (others as they are)."""
	if isinstance(e, RenderError):
		raise e
	if isinstance(e, SecurityError):
		raise RenderError(f"refused by the template sandbox: {e}")
	if isinstance(e, UndefinedError):
		raise RenderError(f"undefined value: {e.message}")
	if isinstance(e, TemplateError | TypeError | ValueError | ArithmeticError | LookupError):
		raise RenderError(f"template error: {e}")
	raise e


def render_value(value: Any, context: Mapping[str, Any], pointer: str = "") -> Any:
	"""Render every string inside a JSON-like value; keys and non-strings are left alone.

	Errors name the JSON pointer of the string that failed, e.g. `/body/contact`.
	"""
	try:
		return _render_value(value, context)
	except _Located as e:
		raise RenderError(f"{pointer + ''.join(reversed(e.path)) or '/'}: {e}")


class _Located(RenderError):
	"""A RenderError on its way up `_render_value`, collecting its JSON pointer (innermost
	part first): built only when rendering fails, not for every string that renders."""

	def __init__(self, error: RenderError) -> None:
		super().__init__(str(error))
		self.path: list[str] = []


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
	if isinstance(value, str):
		try:
			return render_string(value, context)
		except RenderError as e:
			raise _Located(e)
	if type(value) is dict or isinstance(value, Mapping):  # a dict first: the ABC check costs more
		rendered = {}
		for k, v in value.items():
			try:
				rendered[k] = _render_value(v, context)
			except _Located as e:
				e.path.append(f"/{_escape(k)}")
				raise
		return rendered
	if isinstance(value, list | tuple):
		items = []
		for i, v in enumerate(value):
			try:
				items.append(_render_value(v, context))
			except _Located as e:
				e.path.append(f"/{i}")
				raise
		return items
	return value


def iter_template_strings(value: Any, pointer: str = "") -> Iterable[tuple[str, str]]:
	"""(pointer, source) for every template string inside a JSON-like value."""
	if isinstance(value, str):
		if is_template(value):
			yield pointer or "/", value
	elif isinstance(value, Mapping):
		for k, v in value.items():
			yield from iter_template_strings(v, f"{pointer}/{_escape(k)}")
	elif isinstance(value, list | tuple):
		for i, v in enumerate(value):
			yield from iter_template_strings(v, f"{pointer}/{i}")


def _escape(key: Any) -> str:
	return str(key).replace("~", "~0").replace("/", "~1")
