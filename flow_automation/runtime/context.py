"""What a run's steps see and run as: the trigger document as data, the documents its Link
fields point at (`linked`), the template context, the Run As user, and the flow depth (so
triggers a step causes know how deep they are)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import frappe
from frappe.utils import get_system_timezone

DEPTH_FLAG = "flow_automation_depth"


def document_context(doctype: str | None, name: str | None) -> dict[str, Any]:
	"""The trigger document as plain data for templates and conditions (never the object)."""
	if not doctype or not name:
		return {}
	try:
		doc = frappe.get_doc(doctype, name)
	except frappe.DoesNotExistError:
		return {"doctype": doctype, "name": name, "_missing": True}
	return as_data(doc)


def as_data(doc: Any) -> dict[str, Any]:
	"""A document as plain JSON data (dates as strings), what templates and conditions see."""
	return json.loads(frappe.as_json(doc.as_dict(convert_dates_to_str=True)))


# Link fields every document has, besides those of its DocType.
STANDARD_LINKS = {"owner": "User", "modified_by": "User"}


class LinkedDocuments(Mapping):
	"""`linked.<link_field>` in templates and conditions: the document a Link field of the
	trigger document points at, as plain data, loaded on first use and kept for this advance.

	Read with the current user's permissions (a run advances as its Run As user): a document
	that user may not read, an empty link or a field that is not a Link all give `{}`.
	"""

	def __init__(self, doctype: str | None, doc: Mapping[str, Any] | None):
		self._doctype = doctype
		self._doc = doc or {}
		self._loaded: dict[str, dict[str, Any]] = {}
		self._links: dict[str, str] | None = None

	def link_fields(self) -> dict[str, str]:
		"""{link field: the DocType it points at} of the trigger document's DocType."""
		if self._links is None:
			self._links = {}
			if self._doctype and frappe.db.exists("DocType", self._doctype):
				meta = frappe.get_meta(self._doctype)
				self._links = {**STANDARD_LINKS}
				self._links.update({df.fieldname: df.options for df in meta.fields if df.fieldtype == "Link"})
		return self._links

	def __getitem__(self, field: Any) -> dict[str, Any]:
		if not isinstance(field, str):
			return {}
		if field not in self._loaded:
			self._loaded[field] = self._load(field)
		return self._loaded[field]

	def _load(self, field: str) -> dict[str, Any]:
		target = self.link_fields().get(field)
		name = self._doc.get(field)
		if not target or not name or not isinstance(name, str):
			return {}
		try:
			linked = frappe.get_doc(target, name)
		except frappe.DoesNotExistError:
			return {}
		if not linked.has_permission("read"):
			return {}
		linked.apply_fieldlevel_read_permissions()
		return as_data(linked)

	def __iter__(self) -> Iterator[str]:
		return iter(self.link_fields())

	def __len__(self) -> int:
		return len(self.link_fields())


def json_field(value: Any) -> dict[str, Any]:
	if isinstance(value, dict):
		return value
	return json.loads(value) if value else {}


def site_context() -> dict[str, Any]:
	"""`site`: what the engine reads naive times in (quiet hours), and templates may show."""
	return {"time_zone": get_system_timezone()}


def build_context(run: Any) -> dict[str, Any]:
	"""`doc`, `linked`, `trigger`, `contact`, `run` and `site` for a run's templates (the engine
	adds the rest). The contact's `time_zone`, when the trigger gave one, sets its quiet hours;
	else the engine reads it from the contact's number."""
	trigger = json_field(run.trigger_data)
	contact = dict(trigger.get("contact") or {})
	if run.contact:
		contact.setdefault("number", run.contact)
	doc = document_context(run.reference_doctype, run.reference_name)
	if doc.get("_missing") and isinstance(trigger.get("doc"), dict):
		doc = trigger["doc"]  # a Delete trigger: the document is gone, its snapshot is not
	return {
		"doc": doc,
		"linked": LinkedDocuments(run.reference_doctype or doc.get("doctype"), doc),
		"trigger": trigger,
		"contact": contact,
		"run": {"name": run.name, "template": run.template, "version": run.version},
		"site": site_context(),
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
