"""The generate_pdf step: a Print Format through Frappe's PDF path, kept as a private File.

The PDF is made the way Frappe's own "PDF" button and `frappe.attach_print` make it:
`frappe.get_print(..., as_pdf=True)` renders the print view (with the Print Settings, the
letter head and the print language) and wkhtmltopdf turns it into a PDF. It runs with the
permissions of the run's user: a document they may not read or print is refused before
anything is rendered. The kind (payload, checks, file name) is in `engine/output_kinds.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import frappe
from frappe.translate import print_language
from frappe.utils import get_url, strip_html

from flow_automation.engine import StepError, pdf_file_name
from flow_automation.steps.base import StepCall, handles

STANDARD = "Standard"


def _target(call: StepCall) -> tuple[str, str, str]:
	"""(doctype, name, the payload field to blame when it is wrong)."""
	payload = call.payload
	if payload.get("target") == "document" or payload.get("doctype"):
		return payload["doctype"], payload["name"], "name"
	run = call.run
	if not run.reference_doctype or not run.reference_name:
		raise StepError("target: the target is the trigger document, but this run has none", retryable=False)
	return run.reference_doctype, run.reference_name, "target"


def _document(doctype: str, name: str, field: str) -> Any:
	if not frappe.db.exists("DocType", doctype):
		raise StepError(f"doctype: there is no DocType {doctype!r}", retryable=False)
	if not frappe.db.exists(doctype, name):
		raise StepError(f"{field}: {doctype} {name!r} does not exist", retryable=False)
	doc = frappe.get_doc(doctype, name)
	# what Frappe's print view asks (printview.validate_print_permission): read or print
	if not (frappe.has_permission(doctype, "read", doc) or frappe.has_permission(doctype, "print", doc)):
		raise StepError(
			f"{field}: {frappe.session.user} may not print {doctype} {name!r} (no read or print permission)",
			retryable=False,
		)
	return doc


def _print_format(payload: Mapping[str, Any], doctype: str) -> tuple[str | None, str]:
	"""(the name to pass to Frappe, the name to report): None lets Frappe take the default."""
	wanted = payload.get("print_format")
	if not wanted:
		return None, frappe.get_meta(doctype).default_print_format or STANDARD
	if wanted == STANDARD:
		return STANDARD, STANDARD
	# Frappe's print view quietly prints Standard when the format does not exist: say so instead
	row = frappe.db.get_value(
		"Print Format", wanted, ["doc_type", "disabled", "raw_printing", "print_format_type"], as_dict=True
	)
	if row is None:
		raise StepError(f"print_format: there is no Print Format {wanted!r}", retryable=False)
	if row.doc_type != doctype:
		raise StepError(
			f"print_format: Print Format {wanted!r} is for {row.doc_type}, not {doctype}", retryable=False
		)
	if row.disabled:
		raise StepError(f"print_format: Print Format {wanted!r} is disabled", retryable=False)
	if row.raw_printing or row.print_format_type == "JS":
		raise StepError(
			f"print_format: Print Format {wanted!r} is not an HTML format (raw printing or JS)",
			retryable=False,
		)
	return wanted, wanted


def _check_references(payload: Mapping[str, Any]) -> None:
	letterhead = payload.get("letterhead")
	if letterhead and not frappe.db.get_value("Letter Head", {"name": letterhead, "disabled": 0}):
		raise StepError(f"letterhead: there is no enabled Letter Head {letterhead!r}", retryable=False)
	language = payload.get("language")
	if language and not frappe.db.exists("Language", language):
		raise StepError(f"language: there is no Language {language!r}", retryable=False)


@contextmanager
def _deferred_access_log() -> Iterator[None]:
	# The print view records an Access Log and commits it (access_log._make_access_log) unless
	# the request is read-only: a commit in a step would end the run's transaction half-way
	# (and its savepoint). In read-only mode Frappe queues the log instead (deferred_insert),
	# and its scheduler writes it a minute later.
	previous = frappe.flags.read_only
	frappe.flags.read_only = True
	try:
		yield
	finally:
		frappe.flags.read_only = previous


@contextmanager
def _language(language: str | None) -> Iterator[None]:
	# print_language restores the language only when its block does not raise: do it here
	lang, jenv = frappe.local.lang, frappe.local.jenv
	try:
		with print_language(language):
			yield
	finally:
		frappe.local.lang, frappe.local.jenv = lang, jenv


def render_pdf(doc: Any, print_format: str | None, payload: Any, field: str) -> bytes:
	"""The document as a PDF through `frappe.get_print`, or a StepError naming the field."""
	try:
		with _language(payload.get("language") or None), _deferred_access_log():
			return frappe.get_print(
				doc.doctype,
				doc.name,
				print_format=print_format,
				doc=doc,
				as_pdf=True,
				letterhead=payload.get("letterhead") or None,
				no_letterhead=1 if payload.get("no_letterhead") else 0,
			)
	except OSError as e:  # wkhtmltopdf: missing, crashed, or could not load the page's assets
		lines = [line.strip() for line in str(e).splitlines() if line.strip()]
		reason = lines[-1] if lines else type(e).__name__
		hint = ""
		if "network error" in reason.lower():
			hint = (
				f" (it loads the print stylesheet from {get_url()}: that address must be reachable "
				"from this server; set host_name in the site config)"
			)
		raise StepError(f"print_format: wkhtmltopdf could not make the PDF: {reason}{hint}", retryable=True)
	except frappe.PermissionError as e:  # e.g. Print Settings forbid printing drafts
		raise StepError(f"{field}: {strip_html(str(e))}", retryable=False)
	except frappe.ValidationError as e:  # an error in the print format's template, ...
		raise StepError(f"print_format: {strip_html(str(e))}", retryable=False)


@handles("generate_pdf")
def generate_pdf(call: StepCall) -> dict[str, Any]:
	"""Print the document and keep the PDF as a private File attached to it."""
	payload = call.payload
	doctype, name, field = _target(call)
	doc = _document(doctype, name, field)
	print_format, print_format_name = _print_format(payload, doctype)
	_check_references(payload)
	file_name = pdf_file_name(payload, name)
	described = {
		"attached_to_doctype": doctype,
		"attached_to_name": name,
		"print_format": print_format_name,
		"is_private": 1,
	}
	if call.dry_run:
		call.record(
			"pdf",
			doctype=doctype,
			name=name,
			print_format=print_format_name,
			letterhead=payload.get("letterhead"),
			no_letterhead=bool(payload.get("no_letterhead")),
			language=payload.get("language"),
			file_name=file_name,
		)
		# where the File would be (Frappe adds a suffix if the name is taken); nothing is written
		return {
			"name": None,
			"file_url": f"/private/files/{file_name}",
			"file_name": file_name,
			"file_size": None,
			**described,
			"dry_run": True,
		}

	pdf = render_pdf(doc, print_format, payload, field)
	file = frappe.get_doc(
		{
			"doctype": "File",
			"file_name": file_name,
			"attached_to_doctype": doctype,
			"attached_to_name": name,
			"is_private": 1,
			"content": pdf,
		}
	)
	file.insert()
	return {
		"name": file.name,
		"file_url": file.file_url,
		"file_name": file.file_name,
		"file_size": file.file_size,
		**described,
	}
