"""Whitelisted API: `/api/method/flow_automation.api.<name>`.

Every method checks the caller's role and document permissions first. Flow User starts,
advances, completes, cancels and retries runs; Flow Manager (and System Manager) also
validates and dry-runs templates. Bad input raises a ValidationError that names the field.
"""

from __future__ import annotations

import json
from typing import Any

import frappe
from frappe import _
from frappe.rate_limiter import rate_limit

from flow_automation import runtime
from flow_automation.engine import STEP_TRIGGERS, all_kinds, definition_json_schema, extract_definition
from flow_automation.engine import validate_definition as _validate
from flow_automation.roles import FLOW_MANAGER_ROLES, FLOW_USER_ROLES, requires_roles
from flow_automation.triggers import dispatch_event as dispatch
from flow_automation.triggers import queue_run


def _require_run(run: str, ptype: str = "read") -> None:
	if not run or not isinstance(run, str):
		frappe.throw(_("run: give the name of a Flow Run"), frappe.ValidationError)
	if not frappe.db.exists("Flow Run", run):
		frappe.throw(_("run: Flow Run {0} does not exist").format(frappe.bold(run)), frappe.DoesNotExistError)
	frappe.has_permission("Flow Run", ptype, run, throw=True)


def _require_template(template: Any) -> None:
	"""A template argument: given, existing and readable by the caller."""
	if not template or not isinstance(template, str):
		frappe.throw(_("template: give the name of a Flow Template"), frappe.ValidationError)
	if not frappe.db.exists("Flow Template", template):
		frappe.throw(
			_("template: Flow Template {0} does not exist").format(frappe.bold(template)),
			frappe.ValidationError,
		)
	frappe.has_permission("Flow Template", "read", template, throw=True)


def _require_document(reference_doctype: str | None, reference_name: str | None) -> bool:
	"""Check an optional document argument pair: both or neither, existing, readable by the caller."""
	if bool(reference_doctype) != bool(reference_name):
		frappe.throw(_("reference_doctype and reference_name go together"), frappe.ValidationError)
	if not reference_doctype:
		return False
	if not frappe.db.exists("DocType", reference_doctype):
		frappe.throw(
			_("reference_doctype: {0} is not a DocType").format(reference_doctype), frappe.ValidationError
		)
	if not frappe.db.exists(reference_doctype, reference_name):
		frappe.throw(
			_("reference_name: {0} {1} does not exist").format(_(reference_doctype), reference_name),
			frappe.ValidationError,
		)
	frappe.has_permission(reference_doctype, "read", reference_name, throw=True)
	return True


def _json_arg(value: Any, name: str, expected: type | tuple[type, ...] = dict) -> Any:
	if value is None or value == "":
		return None
	if isinstance(value, str):
		try:
			value = json.loads(value)
		except ValueError as e:
			frappe.throw(_("{0}: not valid JSON ({1})").format(name, e), frappe.ValidationError)
	if not isinstance(value, expected):
		kind = "an object" if expected is dict else "a list"
		frappe.throw(_("{0}: must be {1}").format(name, kind), frappe.ValidationError)
	return value


def _run_summary(run: str) -> dict[str, Any]:
	values = frappe.db.get_value("Flow Run", run, ["name", "status", "error", "next_due_at"], as_dict=True)
	return {
		"run": values.name,
		"status": values.status,
		"error": values.error,
		"next_due_at": values.next_due_at,
	}


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def start(
	template: str,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: dict | str | None = None,
	contact: str | None = None,
	run_now: bool = False,
) -> dict[str, Any]:
	"""Start a run of `template`, optionally against a document; returns the run and its status.

	The run advances in a background job after commit, or in this request with `run_now`.
	"""
	_require_template(template)
	_require_document(reference_doctype, reference_name)
	name = runtime.start_run(
		template,
		reference_doctype=reference_doctype,
		reference_name=reference_name,
		variables=_json_arg(variables, "variables") or {},
		contact=contact,
		trigger={"type": "API", "user": frappe.session.user},
		advance="now" if frappe.utils.cint(run_now) else "async",
	)
	return _run_summary(name)


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def advance(run: str) -> dict[str, Any]:
	"""Advance a run now: fire whatever is due and execute ready steps."""
	_require_run(run, "read")
	runtime.advance_run(run)
	return _run_summary(run)


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def complete(run: str, step: str, result: dict | str | None = None) -> dict[str, Any]:
	"""Complete a waiting `manual` or `on_webhook` step; `result` becomes `steps.<step>.output`."""
	_require_run(run, "read")
	if not step or not isinstance(step, str):
		frappe.throw(_("step: give the id of the waiting step"), frappe.ValidationError)
	runtime.complete_step(run, step, _json_arg(result, "result") or {})
	return _run_summary(run)


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def cancel(run: str, reason: str | None = None) -> dict[str, Any]:
	"""Cancel a run, its open steps and its active sub-flows."""
	_require_run(run, "read")
	runtime.cancel_run(run, reason)
	return _run_summary(run)


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def retry(run: str, steps: list | str) -> dict[str, Any]:
	"""Retry the chosen failed steps of a run."""
	_require_run(run, "read")
	if isinstance(steps, str) and not steps.strip().startswith("["):
		steps = [s.strip() for s in steps.split(",") if s.strip()]
	step_ids = _json_arg(steps, "steps", list) or []
	if not step_ids or not all(isinstance(s, str) for s in step_ids):
		frappe.throw(_("steps: give a list of failed step ids"), frappe.ValidationError)
	runtime.retry_steps(run, step_ids)
	return _run_summary(run)


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def validate_definition(definition: dict | str) -> dict[str, Any]:
	"""Validate a definition (or a template export); returns every problem found."""
	raw = _json_arg(definition, "definition")
	if raw is None:
		frappe.throw(_("definition: give a flow definition as a JSON object"), frappe.ValidationError)
	raw, _meta = extract_definition(raw)
	issues = _validate(raw)
	return {"valid": not issues, "errors": [issue.as_dict() | {"text": str(issue)} for issue in issues]}


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_MANAGER_ROLES)
def simulate(
	template: str,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: dict | str | None = None,
	answers: dict | str | None = None,
	definition: dict | str | None = None,
	doc: dict | str | None = None,
) -> dict[str, Any]:
	"""Dry-run a template against a real document: executes inside a savepoint with outbound
	calls recorded, delays fast-forwarded, then rolls everything back. Returns the trace.

	`definition` dry-runs unsaved edits (validated first) instead of the template's current
	version; `doc` is a document typed as a JSON object instead of a stored one.
	"""
	_require_template(template)
	typed_doc = _json_arg(doc, "doc")
	if typed_doc is not None and (reference_doctype or reference_name):
		frappe.throw(
			_("doc: give either a stored document (reference_doctype and reference_name) or doc, not both"),
			frappe.ValidationError,
		)
	if typed_doc is None:
		_require_document(reference_doctype, reference_name)
	result = runtime.simulate_template(
		template,
		reference_doctype=reference_doctype,
		reference_name=reference_name,
		variables=_json_arg(variables, "variables") or {},
		answers=_json_arg(answers, "answers") or {},
		definition=_json_arg(definition, "definition"),
		doc=typed_doc,
	)
	return result.as_dict()


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def get_step_catalog() -> dict[str, Any]:
	"""The step kinds, step triggers and the definition JSON schema, for the Desk editor."""
	return {
		"kinds": [kind.describe() for kind in all_kinds()],
		"triggers": list(STEP_TRIGGERS),
		"schema": definition_json_schema(),
	}


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def dispatch_event(
	event: str,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	variables: dict | str | None = None,
	dedup_key: str | None = None,
) -> dict[str, Any]:
	"""Raise a named business event for external callers; returns the runs it queued."""
	doc = None
	if _require_document(reference_doctype, reference_name):
		doc = frappe.get_doc(reference_doctype, reference_name)
	runs = dispatch(event, doc=doc, variables=_json_arg(variables, "variables") or {}, dedup_key=dedup_key)
	return {"event": event, "runs": runs}


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_USER_ROLES)
def start_many(template: str, reference_doctype: str, names: list | str) -> dict[str, Any]:
	"""Start one run per document (the list view's bulk "Run Flow" action)."""
	_require_template(template)
	if isinstance(names, str) and not names.strip().startswith("["):
		names = [n.strip() for n in names.split(",") if n.strip()]
	names = _json_arg(names, "names", list) or []
	if len(names) > 500:
		frappe.throw(_("names: at most 500 documents per call"), frappe.ValidationError)
	info = runtime.template_info(template)
	# every document first: a bad one starts nothing
	for name in names:
		runtime.check_document(info, reference_doctype, name)
		frappe.has_permission(reference_doctype, "read", name, throw=True)
	runs = []
	for name in names:
		run = queue_run(
			template,
			reference_doctype=reference_doctype,
			reference_name=name,
			trigger={"type": "Manual", "user": frappe.session.user},
		)
		if run:
			runs.append(run)
	return {"runs": runs}


def _webhook_rate_limit() -> int:
	return int(frappe.conf.get("flow_automation_webhook_rate_limit") or 120)


@frappe.whitelist(allow_guest=True, xss_safe=True, methods=["POST"])
@rate_limit(limit=_webhook_rate_limit, seconds=60)
def webhook_trigger(**body_fields: Any) -> dict[str, Any]:
	"""Start a Webhook-triggered flow: POST JSON to the template's URL with its secret.

	The URL is `.../flow_automation.api.webhook_trigger?template=<name>`; the secret goes in
	the `X-Flow-Secret` header (or a `secret` query parameter). The JSON body becomes
	`trigger.payload`. Guests are let in only with the right secret; calls are limited per
	IP (site_config `flow_automation_webhook_rate_limit` per minute, default 120).
	"""
	import hmac

	from frappe.utils.password import get_decrypted_password

	# from the query string only: the JSON body is the caller's payload and may hold any keys
	args = frappe.request.args if frappe.request else {}
	template = args.get("template")
	given = frappe.get_request_header("X-Flow-Secret") or args.get("secret") or ""
	info = (
		frappe.db.get_value("Flow Template", template, ["name", "enabled", "trigger_type"], as_dict=True)
		if template
		else None
	)
	expected = (
		get_decrypted_password("Flow Template", info.name, "webhook_secret", raise_exception=False)
		if info and info.enabled and info.trigger_type == "Webhook"
		else None
	)
	if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
		# the same answer for an unknown template and a wrong secret: nothing to enumerate
		frappe.throw(_("Unknown webhook or wrong secret"), frappe.PermissionError)
	raw = frappe.request.get_data() if frappe.request else b""
	try:
		payload = json.loads(raw) if raw else {}
	except ValueError as e:
		frappe.throw(_("The body must be JSON: {0}").format(e), frappe.ValidationError)
	run = queue_run(info.name, trigger={"type": "Webhook", "event": "webhook", "payload": payload})
	frappe.local.response["http_status_code"] = 202
	return {"run": run, "status": "Queued"}
