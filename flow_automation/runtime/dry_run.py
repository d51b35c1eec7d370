"""Dry runs: execute a template for real inside a savepoint, with outbound calls recorded
instead of made and delays fast-forwarded, then roll everything back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import frappe
from frappe.utils import now_datetime

from flow_automation.engine import SimulationResult, simulate
from flow_automation.runtime.context import acting_as, document_context
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
) -> SimulationResult:
	"""The trace a real run of `template` would produce now, against a real document.

	The document must be of the template's DocType and exist (as for a real start); disabled
	templates may be dry-run.
	"""
	info = template_info(template, must_be_enabled=False)
	check_document(info, reference_doctype, reference_name)
	definition = load_definition(version_name(info.name, info.version))
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
	host = FrappeHost(run, definition, dry_run=True)
	with rolled_back(), acting_as(info.run_as):
		result = simulate(
			definition,
			host=host,
			doc=document_context(reference_doctype, reference_name),
			variables=variables,
			answers=answers,
			trigger=trigger or {"type": "Dry Run"},
			contact=contact,
			start=now_datetime(),
			seed=run.name,
		)
	result.calls = host.recorded
	return result
