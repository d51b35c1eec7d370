"""Dry runs: execute a template for real inside a savepoint, with outbound calls recorded
instead of made and delays fast-forwarded, then roll everything back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime

from flow_automation.engine import (
	Definition,
	SimulationResult,
	extract_definition,
	simulate,
	validate_definition,
)
from flow_automation.runtime.context import LinkedDocuments, acting_as, document_context, site_context
from flow_automation.runtime.host import FrappeHost
from flow_automation.runtime.start import check_document, template_info
from flow_automation.runtime.store import load_definition, version_name
from flow_automation.transaction import rolled_back


def simulate_template(
	template: str,
	*,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: Mapping[str, Any] | None = None,
	answers: Mapping[str, Any] | None = None,
	trigger: Mapping[str, Any] | None = None,
	contact: Mapping[str, Any] | None = None,
	definition: Mapping[str, Any] | None = None,
	doc: Mapping[str, Any] | None = None,
) -> SimulationResult:
	"""The trace a real run of `template` would produce now, against a real document.

	The document must be of the template's DocType and exist (as for a real start); disabled
	templates may be dry-run. `definition` dry-runs that definition (unsaved edits; validated
	first) instead of the template's current version; `doc` is a document given as data
	instead of a stored one (then no reference_doctype / reference_name).
	"""
	info = template_info(template, must_be_enabled=False)
	if doc is not None:
		if reference_doctype or reference_name:
			frappe.throw(
				_(
					"doc: give either a stored document (reference_doctype and reference_name) or doc, not both"
				),
				frappe.ValidationError,
			)
		doc = typed_document(info, doc)
	else:
		check_document(info, reference_doctype, reference_name)
		doc = document_context(reference_doctype, reference_name)
	if definition is not None:
		flow = checked_definition(definition)
	elif not info.version:
		frappe.throw(
			_("Flow Template {0} has no valid version yet: dry-run its definition instead").format(
				frappe.bold(info.name)
			),
			frappe.ValidationError,
		)
	else:
		flow = load_definition(version_name(info.name, info.version))
	run = frappe._dict(
		name=f"dry-run-{frappe.generate_hash(length=6)}",
		template=info.name,
		version=info.version,
		reference_doctype=reference_doctype,
		reference_name=reference_name,
		step_state="{}",
		depth=0,
		contact=(contact or {}).get("number"),
		run_as=info.run_as,
	)
	host = FrappeHost(run, flow, dry_run=True)
	doctype = reference_doctype or info.reference_doctype or doc.get("doctype")
	with rolled_back(), acting_as(info.run_as):
		result = simulate(
			flow,
			host=host,
			doc=doc,
			variables=variables,
			answers=answers,
			trigger=trigger or {"type": "Dry Run"},
			contact=contact,
			start=now_datetime(),
			seed=run.name,
			extra_context={
				"linked": LinkedDocuments(doctype, doc),
				"run": {"name": run.name, "template": run.template, "version": run.version},
			},
			time_zone=site_context()["time_zone"],
		)
	result.calls = host.recorded
	return result


def checked_definition(raw: Mapping[str, Any]) -> Definition:
	"""A definition given as data (or a template export): ValidationError listing every problem."""
	try:
		definition, _meta = extract_definition(raw)
	except ValueError as e:
		frappe.throw(_("definition: {0}").format(e), frappe.ValidationError)
	issues = validate_definition(definition)
	if issues:
		frappe.throw(
			_("definition: the flow has {0} problem(s): {1}").format(
				len(issues), "; ".join(str(issue) for issue in issues)
			),
			frappe.ValidationError,
			title=_("Invalid flow"),
		)
	return Definition.from_dict(definition)


def typed_document(info: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
	"""A document given as data: of the template's DocType (named, or assumed when not)."""
	expected = info.get("reference_doctype")
	given = doc.get("doctype")
	if expected and given and given != expected:
		frappe.throw(
			_("doc: Flow Template {0} works on {1} documents, not on {2}").format(
				frappe.bold(info["name"]), _(expected), _(given)
			),
			frappe.ValidationError,
		)
	data = dict(doc)
	if expected and not given:
		data["doctype"] = expected
	return data
