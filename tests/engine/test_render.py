"""Payload rendering: plain data in, text out; no way to reach Python internals, run code
or make one render eat a worker's memory."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from typing import Any

import pytest

from flow_automation.engine.render import (
	MAX_OUTPUT_CHARS,
	RenderError,
	compile_template,
	render_string,
	render_value,
	template_syntax_error,
)

CONTEXT: dict[str, Any] = {
	"doc": {
		"name": "QTN-0001",
		"customer_name": "Acme",
		"grand_total": 1500.5,
		"language": "",
		"items": [{"item_code": "A", "qty": 3}, {"item_code": "B", "qty": 7}],
		"transaction_date": dt.date(2024, 1, 30),
		"modified": dt.datetime(2024, 1, 30, 10, 0, 0),
		"valid_till": "2024-01-30",
		"creation": "2024-01-30 10:00:00",
	},
	"variables": {"team": "Support Team"},
	"steps": {"lookup": {"output": {"customer": {"email": "c@example.com"}}}},
	"trigger": {"event": "production_run.assigned"},
	"contact": {"language": "de"},
	"now": dt.datetime(2024, 3, 1, 9, 0, 0),
}

MAX_PEAK_BYTES = 50 * 1024 * 1024


def render(source: str) -> str:
	return render_string(source, CONTEXT)


# --- reading the context -----------------------------------------------------------------


@pytest.mark.parametrize(
	("source", "expected"),
	[
		("Quotation {{ doc.name }} for {{ doc.customer_name }}", "Quotation QTN-0001 for Acme"),
		("{{ variables.team }}", "Support Team"),
		("{{ steps.lookup.output.customer.email }}", "c@example.com"),
		("{{ trigger.event }}", "production_run.assigned"),
		("{{ doc.language or contact.language or 'en' }}", "de"),
		("{{ doc.items[1].item_code }}", "B"),
		("{{ doc.items.0.qty }}", "3"),
		("{{ doc.grand_total }}", "1500.5"),
		("{{ now }}", "2024-03-01 09:00:00"),
		("no template here {not one}", "no template here {not one}"),
	],
)
def test_paths_into_the_context(source, expected):
	assert render(source) == expected


def test_doc_items_is_the_child_table_not_dict_items():
	assert render("{{ doc.items | length }}") == "2"
	assert render("{% for row in doc.items %}{{ row.item_code }}x{{ row.qty }};{% endfor %}") == "Ax3;Bx7;"


@pytest.mark.parametrize(
	"source",
	["{{ doc.nope }}", "{{ doc.nope.deeper.still }}", "{{ steps.never_ran.output.x }}", "{{ unknown_root }}"],
)
def test_unknown_paths_render_empty(source):
	assert render(source) == ""


def test_render_value_renders_every_string_and_keeps_structure():
	value = {
		"to": ["{{ steps.lookup.output.customer.email }}"],
		"n": 3,
		"flag": True,
		"body": {"x": "{{ doc.name }}"},
	}
	assert render_value(value, CONTEXT) == {
		"to": ["c@example.com"],
		"n": 3,
		"flag": True,
		"body": {"x": "QTN-0001"},
	}


def test_render_value_errors_name_the_json_pointer():
	with pytest.raises(RenderError, match=r"^/body/items/1: "):
		render_value({"body": {"items": ["ok", "{{ 'a' * 10**8 }}"]}}, CONTEXT)
	with pytest.raises(RenderError, match=r"^/payload/a~1b: "):
		render_value({"a/b": "{{ doc.x | add_days('x') }}"}, CONTEXT, "/payload")


# --- filters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
	("source", "expected"),
	[
		("{{ doc.valid_till | add_days(2) }}", "2024-02-01"),
		("{{ doc.transaction_date | add_days(2) }}", "2024-02-01"),
		("{{ doc.modified | add_days(2) }}", "2024-02-01 10:00:00"),
		("{{ doc.creation | add_days(-30) }}", "2023-12-31 10:00:00"),
		("{{ doc.creation | add_hours(15) }}", "2024-01-31 01:00:00"),
		("{{ doc.modified | add_hours(1.5) }}", "2024-01-30 11:30:00"),
		("{{ doc.modified | add_minutes(90) }}", "2024-01-30 11:30:00"),
		("{{ doc.creation | add_minutes(-10) }}", "2024-01-30 09:50:00"),
		("{{ now | add_days(2) }}", "2024-03-03 09:00:00"),
		("{{ doc.transaction_date | format_date }}", "30-01-2024"),
		("{{ doc.valid_till | format_date('%d/%m/%Y') }}", "30/01/2024"),
		("{{ doc.creation | format_date('%Y-%m-%d %H:%M') }}", "2024-01-30 10:00"),
		("{{ doc.modified | format_date('%H:%M') }}", "10:00"),
		("{{ doc.nope | add_days(1) }}", ""),
		("{{ 'not a date' | format_date }}", ""),
	],
)
def test_date_filters(source, expected):
	assert render(source) == expected


@pytest.mark.parametrize("source", ["{{ doc.valid_till | add_days('soon') }}", "{{ now | add_days(10**9) }}"])
def test_date_filters_refuse_bad_amounts(source):
	with pytest.raises(RenderError):
		render(source)


def test_compiled_templates_are_cached():
	source = "{{ doc.name }} cached-template-check"
	assert compile_template(source) is compile_template(source)
	assert compile_template(source) is not compile_template(source + "!")


def test_syntax_errors():
	assert template_syntax_error("{{ doc.name }}") is None
	assert template_syntax_error("plain text") is None
	assert "syntax error" in template_syntax_error("{{ doc.name ")
	with pytest.raises(RenderError, match="syntax error"):
		render("{% if doc.name %}unclosed")


# --- injection: nothing harmful renders, nothing executes --------------------------------

HARMFUL_MARKERS = ("<class", "<module", "<function", "<built-in", "<bound", "__", "subclasses", "builtins")

INJECTIONS = [
	"{{ ''.__class__.__mro__[1].__subclasses__() }}",
	"{{ cycler.__init__.__globals__.os }}",
	"{{ joiner.__init__.__globals__ }}",
	"{{ lipsum.__globals__ }}",
	"{{ self.__init__.__globals__ }}",
	"{{ self._TemplateReference__context }}",
	"{{ request }}",
	"{{ config }}",
	"{{ ''['__class__'] }}",
	"{{ doc.__class__ }}",
	"{{ doc['__class__'] }}",
	"{{ doc.items.__class__.__base__ }}",
	"{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
	"{{ ''|attr('__class__') }}",
	"{{ (''|attr('__class__')|attr('__mro__'))[1] }}",
	"{{ doc|attr('__class__')|attr('__init__')|attr('__globals__') }}",
	"{{ now.__class__.__init__.__globals__ }}",
	"{{ doc.update({'name': 'X'}) }}{{ doc.name }}",
	"{{ doc['items'].append(1) }}",
	"{{ doc.items.pop() }}",
	"{{ namespace.__init__.__globals__ }}",
	"{{ range.__globals__ }}",
	"{% import 'os' as os %}",
	"{% include '/etc/passwd' %}",
]


@pytest.mark.parametrize("source", INJECTIONS)
def test_injection_payloads_render_nothing_harmful(source):
	context = {**CONTEXT, "doc": {**CONTEXT["doc"], "items": list(CONTEXT["doc"]["items"])}}
	try:
		output = render_string(source, context)
	except RenderError:
		output = ""
	for marker in HARMFUL_MARKERS:
		assert marker not in output, f"{source!r} rendered {output!r}"
	# the data the template saw is unchanged
	assert context["doc"]["name"] == "QTN-0001"
	assert len(context["doc"]["items"]) == 2


def test_injection_payload_does_not_run_code(tmp_path):
	marker = tmp_path / "pwned"
	attempts = [
		f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
		f"{{{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}}}",
		f"{{{{ ''.__class__.__mro__[1].__subclasses__()[0].__init__.__globals__.__builtins__.exec('open(\"{marker}\", \"w\")') }}}}",
		f"{{{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}}}",
	]
	for source in attempts:
		try:
			render(source)
		except RenderError:
			pass
	assert not marker.exists()


# --- memory caps -------------------------------------------------------------------------


def doubling(operator: str, levels: int = 30) -> str:
	steps = "".join(f"{{% set s{i + 1} = s{i} {operator} s{i} %}}" for i in range(levels))
	return "{% set s0 = 'abcdefgh' %}" + steps + f"{{{{ s{levels} }}}}"


MEMORY_BOMBS = [
	"{{ 'a' * 10**8 }}",
	"{{ 10**8 * 'a' }}",
	"{{ [0] * 10**8 }}",
	"{{ range(10**9) | list }}",
	"{{ 'x'.ljust(10**9) }}",
	"{{ 'x'.rjust(10**9) }}",
	"{{ 'x'.center(10**9) }}",
	"{{ 'x'.zfill(10**9) }}",
	"{{ ('\t' * 1000).expandtabs(10**6) }}",
	"{{ '{:>999999999}'.format('x') }}",
	"{{ '{0:>999999999}'.format_map({}) }}",
	"{{ '%999999999s' % 'x' }}",
	"{{ 'x' | center(10**9) }}",
	"{{ 'x' | indent(10**9) }}",
	"{{ ('a' * 1000) | replace('a', 'a' * 1000) }}",
	"{{ ('a' * 1000).replace('a', 'a' * 1000) }}",
	"{{ ('a' * 1000) | replace('a', 'aaaa') | replace('a', 'aaaa') | replace('a', 'aaaa') | replace('a', 'aaaa') }}",
	"{{ ('x' * 1000).join(['y'] * 1000) }}",
	"{{ (['x' * 1000] * 1000) | join(',') }}",
	"{{ 9**200 }}",
	"{{ ((9**100)**100)**100 }}",
	"{{ (2**4000) * (2**4000) }}",
	doubling("~"),
	doubling("+"),
	"{% for i in range(1000) %}{% for j in range(1000) %}xx{% endfor %}{% endfor %}",
	"{% for i in range(1000) %}{% for j in range(1000) %}{{ doc.customer_name }}{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("source", MEMORY_BOMBS, ids=range(len(MEMORY_BOMBS)))
def test_memory_bombs_are_refused_within_a_small_memory_budget(source):
	tracemalloc.start()
	try:
		with pytest.raises(RenderError) as raised:
			render(source)
		_, peak = tracemalloc.get_traced_memory()
	finally:
		tracemalloc.stop()
	assert peak < MAX_PEAK_BYTES, f"peak {peak / 1e6:.0f} MB"
	message = str(raised.value)
	assert (
		"limit" in message or "refused" in message or "not available" in message or "longer than" in message
	)


def test_output_limit_is_named_in_the_error():
	with pytest.raises(RenderError, match=f"longer than {MAX_OUTPUT_CHARS}"):
		render("{% for i in range(1000) %}{% for j in range(1000) %}xx{% endfor %}{% endfor %}")


def test_templates_below_the_limits_still_work():
	assert render("{{ 'ab' * 3 }}") == "ababab"
	assert render("{{ 'x'.ljust(5, '.') }}") == "x...."
	assert render("{{ range(3) | list | join(',') }}") == "0,1,2"
	assert render("{{ 2**10 }}") == "1024"
	assert len(render("{% for i in range(100) %}{{ 'x' * 100 }}{% endfor %}")) == 10_000


@pytest.mark.parametrize(
	"source",
	[
		"{% set a = 'x' * 10000 %}{% set b = [a] * 10000 %}{{ b }}",
		"{% set a = 'x' * 10000 %}{% set b = [a] * 10000 %}{{ b | string | length }}",
		"{% set a = 'x' * 10000 %}{% set b = [a] * 10000 %}{{ 'z' ~ b }}",
	],
)
def test_printing_a_big_list_of_big_strings_stays_within_the_memory_budget(source):
	tracemalloc.start()
	try:
		try:
			render(source)
		except RenderError:
			pass
		_, peak = tracemalloc.get_traced_memory()
	finally:
		tracemalloc.stop()
	assert peak < MAX_PEAK_BYTES, f"peak {peak / 1e6:.0f} MB"


def test_templates_over_large_documents_still_work():
	# a big child table is normal data: only turning a huge value into text is refused
	doc = {"items": [{"item_code": f"ITEM-{i:05d}", "description": "d" * 200} for i in range(2000)]}
	assert render_string("{{ doc.items|length }}", {"doc": doc}) == "2000"
	codes = render_string("{{ (doc.items|map(attribute='item_code')|list)[:3]|join(', ') }}", {"doc": doc})
	assert codes == "ITEM-00000, ITEM-00001, ITEM-00002"
	assert render_string("{{ doc.items|list|last|attr('item_code') }}", {"doc": doc}) == ""
	assert render_string("{{ (doc.items|list)[-1].item_code }}", {"doc": doc}) == "ITEM-01999"
