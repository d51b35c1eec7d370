"""What a run's steps see and run as: the trigger document as data, the template context, the
Run As user, and the flow depth (so triggers a step causes know how deep they are)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import frappe

DEPTH_FLAG = "flow_automation_depth"


def document_context(doctype: str | None, name: str | None) -> dict[str, Any]:
	"""The trigger document as plain data for templates and conditions (never the object)."""
	if not doctype or not name:
		return {}
	try:
		doc = frappe.get_doc(doctype, name)
	except frappe.DoesNotExistError:
		return {"doctype": doctype, "name": name, "_missing": True}
	return json.loads(frappe.as_json(doc.as_dict(convert_dates_to_str=True)))


def json_field(value: Any) -> dict[str, Any]:
	if isinstance(value, dict):
		return value
	return json.loads(value) if value else {}


def build_context(run: Any) -> dict[str, Any]:
	"""`doc`, `trigger`, `contact` and `run` for a run's templates (the engine adds the rest)."""
	trigger = json_field(run.trigger_data)
	contact = dict(trigger.get("contact") or {})
	if run.contact:
		contact.setdefault("number", run.contact)
	doc = document_context(run.reference_doctype, run.reference_name)
	if doc.get("_missing") and isinstance(trigger.get("doc"), dict):
		doc = trigger["doc"]  # a Delete trigger: the document is gone, its snapshot is not
	return {
		"doc": doc,
		"trigger": trigger,
		"contact": contact,
		"run": {"name": run.name, "template": run.template, "version": run.version},
	}


@contextmanager
def flow_depth(depth: int) -> Iterator[None]:
	"""Mark that a flow's steps are running, so triggers they cause know their depth."""
	previous = frappe.local.flags.get(DEPTH_FLAG)
	frappe.local.flags[DEPTH_FLAG] = depth
	try:
		yield
	finally:
		frappe.local.flags[DEPTH_FLAG] = previous


def depth_of_caller() -> int | None:
	"""Depth of the flow whose step is running now, or None outside flows."""
	depth = frappe.local.flags.get(DEPTH_FLAG)
	return None if depth is None else int(depth)


@contextmanager
def acting_as(user: str | None) -> Iterator[None]:
	"""Run step side effects with the permissions of the template's Run As user."""
	previous = frappe.session.user
	user = user or "Administrator"
	if user == previous:
		yield
		return
	frappe.set_user(user)
	try:
		yield
	finally:
		frappe.set_user(previous)
