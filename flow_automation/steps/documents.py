"""Document steps: create_document, update_document, assign."""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _

from flow_automation.engine import StepError
from flow_automation.steps.base import StepCall, handles

# Fields a flow must never set directly.
PROTECTED_FIELDS = frozenset(
	{"name", "doctype", "owner", "creation", "modified", "modified_by", "docstatus", "idx"}
)


def _check_fields(doctype: str, fields: dict[str, Any]) -> None:
	try:
		meta = frappe.get_meta(doctype)  # cached: no query per step
	except frappe.DoesNotExistError:
		raise StepError(f"doctype {doctype!r} does not exist", retryable=False)
	for fieldname in fields:
		if fieldname in PROTECTED_FIELDS:
			raise StepError(f"fields/{fieldname}: {fieldname!r} cannot be set by a flow", retryable=False)
		if not meta.get_field(fieldname):
			raise StepError(f"fields/{fieldname}: {doctype} has no field {fieldname!r}", retryable=False)


def target_document(call: StepCall) -> tuple[str, str]:
	payload = call.payload
	if payload.get("target") == "document" or payload.get("doctype"):
		return payload["doctype"], payload["name"]
	run = call.run
	if not run.reference_doctype or not run.reference_name:
		raise StepError("target is the trigger document, but this run has none", retryable=False)
	return run.reference_doctype, run.reference_name


@handles("create_document")
def create_document(call: StepCall) -> dict[str, Any]:
	doctype = call.payload["doctype"]
	fields = dict(call.payload["fields"])
	_check_fields(doctype, fields)
	doc = frappe.get_doc({"doctype": doctype, **fields})
	doc.insert()
	if call.payload.get("submit"):
		if not frappe.get_meta(doctype).is_submittable:
			raise StepError(f"submit: {doctype} is not submittable", retryable=False)
		doc.submit()
	return {"doctype": doctype, "name": doc.name}


@handles("update_document")
def update_document(call: StepCall) -> dict[str, Any]:
	doctype, name = target_document(call)
	fields = dict(call.payload["fields"])
	_check_fields(doctype, fields)
	if not frappe.db.exists(doctype, name):
		raise StepError(f"{doctype} {name!r} does not exist", retryable=False)
	# locked as it is read: the document as it is now, not as this job's snapshot saw it (someone
	# saving it meanwhile would make the save fail with "Document has been modified")
	doc = frappe.get_doc(doctype, name, for_update=True)
	changed = [f for f, v in fields.items() if str(doc.get(f) if doc.get(f) is not None else "") != str(v)]
	doc.update(fields)
	doc.save()
	return {"doctype": doctype, "name": name, "changed": changed}


@handles("assign")
def assign(call: StepCall) -> dict[str, Any]:
	from frappe.desk.form.assign_to import add

	doctype, name = target_document(call)
	users = [u.strip() for u in call.payload["assign_to"] if u and u.strip()]  # never empty (preflight)
	for user in users:
		if not frappe.db.exists("User", user):
			raise StepError(f"assign_to: user {user!r} does not exist", retryable=False)
	add(
		{
			"assign_to": users,
			"doctype": doctype,
			"name": name,
			"description": call.payload.get("description")
			or _("Assigned by flow {0}").format(call.run.template),
			"date": call.payload.get("date") or None,
			"priority": call.payload.get("priority") or "Medium",
		}
	)
	todos = frappe.get_all(
		"ToDo",
		filters={
			"reference_type": doctype,
			"reference_name": name,
			"allocated_to": ("in", users),
			"status": "Open",
		},
		pluck="name",
	)
	return {"doctype": doctype, "name": name, "assigned_to": users, "todos": todos}
