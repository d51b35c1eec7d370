"""Typed errors for the WhatsApp Cloud API, chosen by Meta's numeric error code.

Meta reports errors in two shapes:

* a Graph API response body: ``{"error": {"message", "type", "code", "error_subcode",
  "error_data": {"details"}, "error_user_title", "fbtrace_id"}}``;
* an item of ``errors`` in a status or inbound-message webhook: ``{"code", "title",
  "message", "error_data": {"details"}}``.

Both become a ``WhatsAppError`` subclass. The class says what a caller can do about it;
``retryable`` says whether sending the same request again later may succeed.

Note that Meta labels almost every Graph error ``"type": "OAuthException"`` (even an
invalid parameter, code 100), so the type is never used to classify; the code is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple


class WhatsAppError(Exception):
	"""An error reported by (or while talking to) the WhatsApp Cloud API."""

	default_retryable: bool = False

	def __init__(
		self,
		message: str,
		*,
		code: int | None = None,
		title: str | None = None,
		details: str | None = None,
		http_status: int | None = None,
		fbtrace_id: str | None = None,
		error_subcode: int | None = None,
		error_type: str | None = None,
		retryable: bool | None = None,
		retry_after: float | None = None,
	) -> None:
		super().__init__(message)
		self.message = message
		self.code = code
		self.title = title
		self.details = details
		self.http_status = http_status
		self.fbtrace_id = fbtrace_id
		self.error_subcode = error_subcode
		self.error_type = error_type
		self.retryable = self.default_retryable if retryable is None else retryable
		# Seconds the server asked us to wait (``Retry-After``), when it said so.
		self.retry_after = retry_after

	def __str__(self) -> str:
		parts = []
		# Meta's messages usually start with "(#131047)" already.
		if self.code is not None and not self.message.startswith(f"(#{self.code})"):
			parts.append(f"(#{self.code})")
		parts.append(self.message)
		if self.details and self.details not in self.message:
			parts.append(f"- {self.details}")
		if self.http_status is not None:
			parts.append(f"[HTTP {self.http_status}]")
		return " ".join(parts)

	def __repr__(self) -> str:
		return (
			f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
			f"http_status={self.http_status!r}, retryable={self.retryable!r})"
		)

	def as_dict(self) -> dict[str, Any]:
		"""Return the fields worth storing on a message or step log (JSON-serialisable)."""
		return {
			"error_class": type(self).__name__,
			"code": self.code,
			"title": self.title,
			"message": self.message,
			"details": self.details,
			"http_status": self.http_status,
			"fbtrace_id": self.fbtrace_id,
			"error_subcode": self.error_subcode,
			"retryable": self.retryable,
		}


class RateLimitError(WhatsAppError):
	"""Too many requests or messages: wait and send again (except spam limits, 131048)."""

	default_retryable = True


class WindowClosedError(WhatsAppError):
	"""The 24-hour customer service window is closed: only a template can be sent."""


class UndeliverableError(WhatsAppError):
	"""Meta will not deliver to this recipient (not on WhatsApp, opted out of marketing, ...)."""


class AuthError(WhatsAppError):
	"""The access token is invalid, expired or lacks a permission."""


class AccountError(WhatsAppError):
	"""The business account or phone number cannot send (locked, unpaid, not registered)."""


class TemplateError(WhatsAppError):
	"""The template is missing, paused, disabled or its parameters do not fit it."""


class InvalidRequestError(WhatsAppError):
	"""Meta rejected the request as malformed or inapplicable; resending it will not help."""


class ServerError(WhatsAppError):
	"""A temporary failure on Meta's side: send again later."""

	default_retryable = True


class TransportError(WhatsAppError):
	"""The HTTP exchange itself failed (connection, timeout, unreadable response)."""

	def __init__(self, message: str, *, maybe_sent: bool, **kwargs: Any) -> None:
		# A POST that failed after the request was written may have been acted on by
		# Meta; retrying it blindly could send the message twice.
		kwargs.setdefault("retryable", not maybe_sent)
		super().__init__(message, **kwargs)
		self.maybe_sent = maybe_sent


class MessageValidationError(ValueError):
	"""A message breaks one of Meta's limits; raised by the builders before sending."""

	def __init__(
		self,
		message: str,
		*,
		field: str,
		limit: int | None = None,
		problems: list[Problem] | None = None,
	) -> None:
		super().__init__(message)
		self.message = message
		self.field = field
		self.limit = limit
		# Every problem found in the message, the first of which is this error's own.
		self.problems: list[Problem] = problems if problems is not None else [Problem(field, message, limit)]


class Problem(NamedTuple):
	"""One limit broken by a message: a JSON-pointer-ish ``field`` and a sentence."""

	field: str
	message: str
	limit: int | None = None


# --- classification ----------------------------------------------------------------------
# Codes from Meta's "Error codes" page for the Cloud API and the Graph API. One table, so
# the client's retry decision and the Frappe side's reaction read the same facts.
_CODE_CLASS: dict[int, type[WhatsAppError]] = {
	# throttling
	4: RateLimitError,  # application request limit
	17: RateLimitError,  # user request limit
	32: RateLimitError,  # page request limit
	613: RateLimitError,  # calls exceeded the rate limit
	80007: RateLimitError,  # WABA rate limit
	130429: RateLimitError,  # Cloud API throughput reached
	131048: RateLimitError,  # spam rate limit (not retryable, see _NOT_RETRYABLE)
	131056: RateLimitError,  # (business, consumer) pair rate limit
	# customer service window
	131047: WindowClosedError,  # re-engagement message: more than 24 h since last reply
	# recipient
	130472: UndeliverableError,  # recipient is part of an experiment
	131026: UndeliverableError,  # message undeliverable (not on WhatsApp, old app, ...)
	131049: UndeliverableError,  # Meta chose not to deliver (marketing per-user limit)
	131050: UndeliverableError,  # user stopped marketing messages
	# auth and permissions
	0: AuthError,  # AuthException: unable to authenticate the app user
	3: AuthError,  # capability or permission issue
	10: AuthError,  # permission denied
	190: AuthError,  # access token expired or invalid
	131005: AuthError,  # access denied
	# account / phone number
	368: AccountError,  # temporarily blocked for policy violations
	130497: AccountError,  # business restricted from messaging users in this country
	131031: AccountError,  # business account locked
	131037: AccountError,  # display name not approved
	131042: AccountError,  # business eligibility / payment issue
	131045: AccountError,  # incorrect certificate (phone number not registered)
	# request
	33: InvalidRequestError,  # object does not exist (wrong phone_number_id)
	100: InvalidRequestError,  # invalid parameter
	131008: InvalidRequestError,  # required parameter missing
	131009: InvalidRequestError,  # parameter value not valid
	131021: InvalidRequestError,  # recipient cannot be sender
	131030: InvalidRequestError,  # recipient not in allowed list (test numbers)
	131051: InvalidRequestError,  # unsupported message type
	131052: InvalidRequestError,  # media download error (inbound media)
	131053: InvalidRequestError,  # media upload error
	131055: InvalidRequestError,  # method not allowed
	135000: InvalidRequestError,  # generic user error
	# Meta's side
	1: ServerError,  # API unknown: invalid request or possible server error
	2: ServerError,  # API service: temporary downtime
	131000: ServerError,  # something went wrong
	131016: ServerError,  # service unavailable
	131057: ServerError,  # account in maintenance mode (throughput upgrade)
	133004: ServerError,  # server temporarily unavailable
}
# Rate limits that waiting a few seconds will not lift.
_NOT_RETRYABLE = frozenset({131048})

RETRYABLE_CODES: frozenset[int] = frozenset(
	code for code, cls in _CODE_CLASS.items() if cls.default_retryable and code not in _NOT_RETRYABLE
)


def error_class_for(code: int | None, http_status: int | None = None) -> type[WhatsAppError]:
	"""Return the error class for Meta's numeric code, falling back to the HTTP status."""
	if code is not None:
		if code in _CODE_CLASS:
			return _CODE_CLASS[code]
		if 132000 <= code <= 132999:
			return TemplateError
		if 200 <= code <= 299:
			return AuthError
		if 133000 <= code <= 133999:
			return AccountError
	if http_status is not None:
		if http_status == 429:
			return RateLimitError
		if http_status >= 500:
			return ServerError
		if http_status in (401, 403):
			return AuthError
	return WhatsAppError


def is_retryable(code: int | None, http_status: int | None = None) -> bool:
	"""Return whether the same request may succeed if sent again after a pause."""
	if code in _NOT_RETRYABLE:
		return False
	return error_class_for(code, http_status).default_retryable


def _int_or_none(value: Any) -> int | None:
	# Some relays (BSPs, proxies) send the code as a string: "131056".
	if isinstance(value, bool):
		return None
	if isinstance(value, int):
		return value
	if isinstance(value, str) and value.strip().lstrip("-").isdigit():
		return int(value.strip())
	return None


def _str_or_none(value: Any) -> str | None:
	if value is None or value == "":
		return None
	return value if isinstance(value, str) else str(value)


def _details(error_data: Any) -> str | None:
	# ``error_data`` is an object with ``details`` for messaging errors but a plain string
	# for some template-management errors.
	if isinstance(error_data, Mapping):
		return _str_or_none(error_data.get("details"))
	return _str_or_none(error_data)


def error_from_response(
	http_status: int | None,
	body: Mapping[str, Any] | str | bytes | None,
	*,
	retry_after: float | None = None,
) -> WhatsAppError:
	"""Build the typed error for a failed Graph API response (body parsed or raw)."""
	parsed: Any = body
	if isinstance(body, bytes):
		body = body.decode("utf-8", errors="replace")
	if isinstance(body, str):
		try:
			parsed = json.loads(body) if body.strip() else None
		except ValueError:
			parsed = None
	error = parsed.get("error") if isinstance(parsed, Mapping) else None
	if not isinstance(error, Mapping):
		text = body.strip()[:200] if isinstance(body, str) and body.strip() else "no error details"
		cls = error_class_for(None, http_status)
		return cls(
			f"HTTP {http_status} from WhatsApp Cloud API: {text}",
			http_status=http_status,
			retryable=is_retryable(None, http_status),
			retry_after=retry_after,
		)
	code = _int_or_none(error.get("code"))
	cls = error_class_for(code, http_status)
	message = _str_or_none(error.get("error_user_msg")) or _str_or_none(error.get("message"))
	return cls(
		message or f"HTTP {http_status} from WhatsApp Cloud API",
		code=code,
		title=_str_or_none(error.get("error_user_title")) or _str_or_none(error.get("type")),
		details=_details(error.get("error_data")),
		http_status=http_status,
		fbtrace_id=_str_or_none(error.get("fbtrace_id")),
		error_subcode=_int_or_none(error.get("error_subcode")),
		error_type=_str_or_none(error.get("type")),
		retryable=is_retryable(code, http_status),
		retry_after=retry_after,
	)


def error_from_status_item(item: Mapping[str, Any] | Any) -> WhatsAppError:
	"""Build the typed error for one ``errors`` item of a status or message webhook."""
	if not isinstance(item, Mapping):
		return WhatsAppError(f"unreadable error item: {item!r}"[:200])
	code = _int_or_none(item.get("code"))
	cls = error_class_for(code)
	title = _str_or_none(item.get("title"))
	return cls(
		_str_or_none(item.get("message")) or title or "WhatsApp reported an error",
		code=code,
		title=title,
		details=_details(item.get("error_data")),
		retryable=is_retryable(code),
	)
