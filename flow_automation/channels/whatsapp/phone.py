"""Phone numbers for WhatsApp: E.164 for storage, digits-only wa_id for the API.

Meta sends numbers without the leading "+" (``"from": "16505551234"``, a *wa_id*) and
accepts ``to`` with or without it. Users type numbers every possible way. Everything is
normalised to E.164 (``"+16505551234"``) for storing and comparing.

Validity: a number is accepted when ``phonenumbers`` says it is valid, or failing that,
when its length is possible for its country. The second rule keeps working numbers from
new ranges that the bundled metadata does not know yet, and Meta's own test numbers
(``+1 555 ...``), which are not valid North American numbers.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

# What a human or a system writes around the digits; letters are refused on purpose
# (``phonenumbers`` would read "1-800-FLOWERS" as digits, which nobody means here).
_ALLOWED = re.compile(r"^\+?[\d\s()\-./]+$")
_WA_ID = re.compile(r"^\+?\d{6,15}$")
# A digit-only string this long without a usable national reading is taken as a number
# with its country code, the way Meta writes wa_ids.
_INTERNATIONAL_DIGITS_MIN = 11


class InvalidPhoneNumber(ValueError):
	"""A string that cannot be read as a WhatsApp-capable phone number."""

	def __init__(self, raw: object, reason: str) -> None:
		super().__init__(f"{raw!r} is not a usable phone number: {reason}")
		self.raw = raw
		self.reason = reason


def _parse(candidate: str, region: str | None) -> phonenumbers.PhoneNumber | None:
	try:
		return phonenumbers.parse(candidate, region)
	except phonenumbers.NumberParseException:
		return None


def _pick(candidates: list[tuple[str, str | None]]) -> phonenumbers.PhoneNumber | None:
	parsed = [number for number in (_parse(c, r) for c, r in candidates) if number is not None]
	if len(parsed) == 1:
		# One reading (every wa_id): valid or possible gives the same answer, and the length
		# check is cheap where validity is not (a +1 number is tried against 25 regions).
		number = parsed[0]
		return (
			number
			if phonenumbers.is_possible_number(number) or phonenumbers.is_valid_number(number)
			else None
		)
	for number in parsed:
		if phonenumbers.is_valid_number(number):
			return number
	for number in parsed:
		if phonenumbers.is_possible_number(number):
			return number
	return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
	return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_number(raw: str, default_region: str | None = None) -> str:
	"""Return ``raw`` as E.164 ("+16505551234") or raise ``InvalidPhoneNumber``.

	Accepts "+" or "00" international prefixes, spaces, dashes, dots and brackets, national
	numbers when ``default_region`` (ISO 3166 alpha-2, e.g. "IN") is given, and Meta's
	digit-only wa_ids.
	"""
	if not isinstance(raw, str):
		raise InvalidPhoneNumber(raw, "expected a string")
	text = raw.strip()
	if not text:
		raise InvalidPhoneNumber(raw, "it is empty")
	if not _ALLOWED.match(text):
		raise InvalidPhoneNumber(raw, "only digits, spaces, '+', '-', '.', '/' and brackets are allowed")
	digits = re.sub(r"\D", "", text)
	if not digits:
		raise InvalidPhoneNumber(raw, "it has no digits")
	region = default_region.upper() if default_region else None

	candidates: list[tuple[str, str | None]] = []
	if text.startswith("+"):
		candidates.append(("+" + digits, None))
	elif digits.startswith("00") and re.match(r"^[\s(]*00", text):
		# "00" is the international prefix almost everywhere; ``phonenumbers`` only reads
		# it when the default region uses it, so rewrite it.
		candidates.append(("+" + digits[2:], None))
	else:
		if region:
			candidates.append((digits, region))
		if len(digits) >= _INTERNATIONAL_DIGITS_MIN:
			candidates.append(("+" + digits, None))
		if not candidates:
			raise InvalidPhoneNumber(raw, "it has no country code and no default region was given")
	number = _pick([(_fold_mexican_mobile(text), r) for text, r in candidates])
	if number is None:
		where = f" for region {region}" if region and not text.startswith("+") else ""
		raise InvalidPhoneNumber(raw, f"not a possible phone number{where}")
	return _fold_mexican_mobile(_e164(number))


def _fold_mexican_mobile(e164: str) -> str:
	# Mexico dropped the "1" after +52 for mobiles in 2019, but WhatsApp wa_ids still carry
	# it ("5215512345678"). Older phonenumbers releases fold it, newer ones keep it: fold here.
	if e164.startswith("+521") and len(e164) == 14:
		return "+52" + e164[4:]
	return e164


def from_wa_id(wa_id: str) -> str:
	"""Return E.164 for a wa_id Meta sent ("16505551234"), always read as international."""
	if not isinstance(wa_id, str) or not _WA_ID.match(wa_id.strip()):
		raise InvalidPhoneNumber(wa_id, "a wa_id is 6 to 15 digits")
	return _from_digits(wa_id.strip().lstrip("+"))


@functools.lru_cache(maxsize=4096)
def _from_digits(digits: str) -> str:
	# Cached: parsed for every inbound message on the webhook's request path. An invalid
	# number raises again each time (exceptions are not cached).
	number = _pick([(_fold_mexican_mobile("+" + digits), None)])
	if number is None:
		raise InvalidPhoneNumber(digits, "not a possible phone number")
	return _fold_mexican_mobile(_e164(number))


def to_wa_id(e164: str) -> str:
	"""Return the digits-only form ("16505551234") the Cloud API's ``to`` takes."""
	if not isinstance(e164, str) or not _WA_ID.match(e164.strip()):
		raise InvalidPhoneNumber(e164, "expected E.164 such as '+16505551234'")
	return e164.strip().lstrip("+")


def _comparison_key(e164: str) -> str:
	# WhatsApp keeps pre-reform forms of some mobile numbers as the wa_id, so the same
	# phone can arrive in two spellings:
	# - Brazil: mobiles gained a leading 9 (11 9 8765-4321); older accounts' wa_ids lack it.
	# - Argentina: mobiles are +54 9 <area> <number>; people write them without the 9.
	# (Mexico's "521" wa_ids are folded to "+52" by ``normalize_number``.)
	if e164.startswith("+55"):
		national = e164[3:]
		if len(national) == 11 and national[2] == "9" and national[3] in "6789":
			return "+55" + national[:2] + national[3:]
	if e164.startswith("+549") and len(e164) == 14:
		return "+54" + e164[4:]
	return e164


def same_number(a: str, b: str, default_region: str | None = None) -> bool:
	"""Return whether two strings name the same WhatsApp number (False if either is invalid)."""
	try:
		first = normalize_number(a, default_region)
		second = normalize_number(b, default_region)
	except InvalidPhoneNumber:
		return False
	return _comparison_key(first) == _comparison_key(second)
