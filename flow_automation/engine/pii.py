"""PII redaction for stored step input/output: phone numbers, emails, tokens and secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECRET_KEY = re.compile(r"(secret|token|password|passwd|authorization|api[_-]?key|signature|otp)", re.I)
EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# 8 to 15 digits, optionally with + and separators, not part of a longer word or number
# not inside a word, a document name (SINV-2024-00012), a decimal amount or a date
PHONE = re.compile(r"(?<![\w.\-/])\+?\d(?:[\s().-]{0,2}\d){7,14}(?!\w|\.\d|[-/]\w)")
DECIMAL = re.compile(r"^\d+\.\d{1,2}$")
BEARER = re.compile(r"\b(Bearer|Basic|token)\s+[A-Za-z0-9._~+/=-]{8,}", re.I)
DATE_LIKE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(\D|$)")
MASK = "***"


def _mask_phone(match: re.Match) -> str:
	digits = re.sub(r"\D", "", match.group(0))
	if len(digits) < 8 or DATE_LIKE.match(match.group(0)) or DECIMAL.match(match.group(0)):
		return match.group(0)
	prefix = "+" if match.group(0).startswith("+") else ""
	return f"{prefix}{'*' * (len(digits) - 4)}{digits[-4:]}"


def redact_text(text: str) -> str:
	text = BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
	text = EMAIL.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", text)
	return PHONE.sub(_mask_phone, text)


def redact(value: Any) -> tuple[Any, bool]:
	"""A copy of `value` with PII masked, and whether anything changed."""
	if isinstance(value, str):
		masked = redact_text(value)
		return masked, masked != value
	if isinstance(value, Mapping):
		out: dict[str, Any] = {}
		changed = False
		for key, item in value.items():
			if SECRET_KEY.search(str(key)) and item not in (None, "", {}, []):
				out[key] = MASK
				changed = True
				continue
			out[key], item_changed = redact(item)
			changed = changed or item_changed
		return out, changed
	if isinstance(value, list | tuple):
		items = [redact(v) for v in value]
		return [v for v, _ in items], any(c for _, c in items)
	return value, False
