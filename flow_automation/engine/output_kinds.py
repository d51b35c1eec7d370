"""Step kinds that produce documents: `generate_pdf` (a Print Format as a private File).
Registered into the catalog on import.

A `generate_pdf` step prints the trigger document (or a named one) with a Print Format, or
the doctype's default, through Frappe's own PDF path, with the permissions of the run's user,
and keeps the PDF as a private File attached to that document (`steps/pdf.py` on a site).
Later steps use its output: `{{ steps.<id>.output.file_url }}` as an email attachment
(`notify`) or a WhatsApp document (`send_whatsapp` mode `document`, `file`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flow_automation.engine import catalog
from flow_automation.engine.render import is_template

Problems = list[tuple[str, str]]

PDF_EXTENSION = ".pdf"
# A file name is one path segment: separators and control characters become "-".
_NOT_IN_FILE_NAME = re.compile(r"[/\\\x00-\x1f]")
# Frappe's language codes: "de", "pt-BR", "zh-TW", "sr-BA".
_LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z]{2,4})?$")

_TEXT = {"type": "string", "minLength": 1}

PDF_SCHEMA: dict[str, Any] = {
	"type": "object",
	"properties": {
		**catalog._TARGET_PROPERTIES,
		"print_format": {
			**_TEXT,
			"description": "Print Format to use (default: the doctype's default print format, else Standard)",
		},
		"letterhead": {**_TEXT, "description": "Letter Head (default: the document's, else the default one)"},
		"no_letterhead": {"type": "boolean", "description": "print without a letter head"},
		"language": {**_TEXT, "description": "print language, e.g. de (default: the run's)"},
		"file_name": {**_TEXT, "description": "name of the PDF file (default: <document name>.pdf)"},
	},
	"additionalProperties": False,
}


def pdf_file_name(payload: Mapping[str, Any], name: str) -> str:
	"""The PDF's file name: the payload's `file_name` or the document's name, one path segment,
	ending in .pdf."""
	base = _NOT_IN_FILE_NAME.sub("-", str(payload.get("file_name") or name or "document").strip())
	return base if base.lower().endswith(PDF_EXTENSION) else base + PDF_EXTENSION


def _check_file_name(value: Any, pointer: str) -> Problems:
	if isinstance(value, str) and not is_template(value) and _NOT_IN_FILE_NAME.search(value):
		return [(pointer, f"{value!r} is not a file name (no '/', '\\' or control characters)")]
	return []


def _check_language(value: Any) -> Problems:
	if isinstance(value, str) and value and not is_template(value) and not _LANGUAGE.match(value):
		return [("/language", f"{value!r} is not a language code (e.g. de, pt-BR)")]
	return []


def check_pdf(payload: Mapping[str, Any]) -> Problems:
	"""Problems of a `generate_pdf` payload beyond its schema."""
	problems = catalog._check_target(payload)
	if payload.get("letterhead") and payload.get("no_letterhead") is True:
		problems.append(("/letterhead", "give a letterhead or no_letterhead, not both"))
	problems += _check_file_name(payload.get("file_name"), "/file_name")
	problems += _check_language(payload.get("language"))
	return problems


def preflight_pdf(payload: Mapping[str, Any]) -> Problems:
	"""The rendered language must still be a language code (a file name is made safe instead)."""
	return _check_language(payload.get("language"))


catalog.register(
	catalog.StepKind(
		name="generate_pdf",
		label="Generate PDF",
		group="Documents",
		description=(
			"Print the trigger document (or a named one) with a Print Format, or its doctype's "
			"default, as a PDF kept as a private File attached to it; later steps attach or send "
			"it via steps.<id>.output.file_url."
		),
		payload_schema=PDF_SCHEMA,
		output="{name, file_url, file_name, file_size, attached_to_doctype, attached_to_name, print_format}",
		example={"print_format": "Standard", "file_name": "{{ doc.name }}.pdf"},
		check=check_pdf,
		preflight=preflight_pdf,
	)
)
