"""Inbound webhook: subscription handshake, signature check, and payload parsing.

Meta posts to one callback URL for every phone number of an app. One POST may carry
several ``entry`` items (one per WhatsApp Business Account), each with several
``changes``, each with both ``messages`` and ``statuses``. ``parse_webhook`` walks all of
them and never raises on a body that is JSON but not what it expected: whatever it cannot
use is skipped and described in ``WebhookBatch.problems``.

The signature (``X-Hub-Signature-256: sha256=<hex>``) is an HMAC-SHA256 of the exact bytes
Meta sent, keyed with the app secret. Meta escapes non-ASCII characters (``\\u00e9``) in
those bytes, so re-serialising the parsed JSON does not reproduce them: always verify the
raw body, before parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import limits
from .errors import WhatsAppError, error_from_status_item
from .status import normalize_status, to_frappe_status

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Meta's hub.challenge is a number; anything else is not echoed (the endpoint writes it
# back verbatim, so it must not become a reflection vector).
_CHALLENGE = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")


# --- signatures and the subscription handshake -------------------------------------------------
def sign(raw_body: bytes, app_secret: str) -> str:
	"""Return the ``X-Hub-Signature-256`` value Meta would send for ``raw_body``."""
	digest = hmac.new(app_secret.encode("utf-8"), bytes(raw_body), hashlib.sha256).hexdigest()
	return limits.SIGNATURE_PREFIX + digest


def verify_signature(raw_body: bytes, signature_header: str | None, app_secret: str) -> bool:
	"""Return True only if ``signature_header`` is ``sha256=<hex>`` of ``raw_body`` keyed by ``app_secret``."""
	if isinstance(raw_body, str):
		# A decoded body has lost the exact bytes that were signed; refuse loudly rather
		# than fail some deliveries quietly.
		raise TypeError("verify_signature needs the raw request bytes, not a decoded string")
	if not app_secret or not isinstance(signature_header, str):
		return False
	header = signature_header.strip()
	prefix_length = len(limits.SIGNATURE_PREFIX)
	if header[:prefix_length].lower() != limits.SIGNATURE_PREFIX:
		return False
	given = header[prefix_length:]
	if not _HEX_SHA256.match(given):
		return False
	expected = sign(raw_body, app_secret)[prefix_length:]
	return hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii"))


def verify_subscription(params: Mapping[str, Any], verify_token: str) -> str | None:
	"""Return ``hub.challenge`` if ``hub.mode`` is "subscribe" and ``hub.verify_token`` matches, else None."""
	if not verify_token or not isinstance(params, Mapping):
		return None
	mode, token, challenge = (params.get(key) for key in ("hub.mode", "hub.verify_token", "hub.challenge"))
	if mode != "subscribe" or not isinstance(token, str) or not isinstance(challenge, str):
		return None
	if not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
		return None
	return challenge if _CHALLENGE.match(challenge) else None


# --- parsed objects --------------------------------------------------------------------------
@dataclass(frozen=True)
class MediaRef:
	"""Media attached to an inbound message; fetch it with ``CloudAPIClient.get_media(id)``."""

	id: str
	kind: str  # image, video, audio, document, sticker
	mime_type: str | None = None
	sha256: str | None = None
	caption: str | None = None
	filename: str | None = None
	voice: bool = False  # an audio recorded as a voice note
	animated: bool = False  # an animated sticker


class Reaction(NamedTuple):
	"""A reaction to one of our messages; ``emoji`` is "" when the user removed it."""

	emoji: str
	message_id: str


@dataclass(frozen=True)
class InboundMessage:
	"""One message a WhatsApp user sent to one of our numbers."""

	wamid: str
	phone_number_id: str
	display_phone_number: str | None
	waba_id: str | None
	from_number: str  # wa_id as Meta sent it: digits, no "+"
	contact_name: str | None
	timestamp: int  # Unix seconds
	type: str
	text: str | None = None
	reply_id: str | None = None
	reply_title: str | None = None
	reply_description: str | None = None
	reply_kind: str | None = None  # button_reply, list_reply, quick_reply, nfm_reply
	context_wamid: str | None = None  # the message this one answers or quotes
	forwarded: bool = False
	media: MediaRef | None = None
	location: dict[str, Any] | None = None
	contacts: list[dict[str, Any]] | None = None
	reaction: Reaction | None = None
	errors: list[dict[str, Any]] = field(default_factory=list)
	raw: dict[str, Any] = field(default_factory=dict, repr=False)

	@property
	def from_e164(self) -> str:
		"""The sender as E.164 ("+16505551234")."""
		return "+" + self.from_number

	@property
	def answer_id(self) -> str | None:
		"""The id of the button or list row the user chose, if the message is such a reply."""
		return self.reply_id

	@property
	def answer_text(self) -> str | None:
		"""What the user typed, or the title of what they tapped; None for media, location, ..."""
		if self.text is not None:
			return self.text
		return self.reply_title

	@property
	def error(self) -> WhatsAppError | None:
		"""The first error Meta attached (e.g. 131051 for an unsupported message), typed."""
		return error_from_status_item(self.errors[0]) if self.errors else None


@dataclass(frozen=True)
class StatusUpdate:
	"""A delivery status callback for one of our outbound messages."""

	wamid: str
	status: str  # lower-case as Meta sends it: sent, delivered, read, failed (or others)
	timestamp: int
	recipient_id: str | None
	phone_number_id: str | None
	display_phone_number: str | None = None
	waba_id: str | None = None
	errors: list[dict[str, Any]] = field(default_factory=list)
	error_code: int | None = None
	error_title: str | None = None
	error_details: str | None = None
	conversation_id: str | None = None
	conversation_category: str | None = None  # conversation.origin.type
	pricing_category: str | None = None
	billable: bool | None = None
	callback_data: str | None = None  # biz_opaque_callback_data we sent with the message
	raw: dict[str, Any] = field(default_factory=dict, repr=False)

	@property
	def is_known_status(self) -> bool:
		"""Whether ``status`` is one of the statuses the delivery order knows."""
		return normalize_status(self.status) is not None

	@property
	def frappe_status(self) -> str | None:
		"""The Frappe Select option for ``status``, or None for statuses outside the order."""
		return to_frappe_status(self.status) if self.is_known_status else None

	@property
	def error(self) -> WhatsAppError | None:
		"""The first error of a failed status, typed (e.g. ``WindowClosedError`` for 131047)."""
		return error_from_status_item(self.errors[0]) if self.errors else None


@dataclass(frozen=True)
class TemplateStatusUpdate:
	"""A ``message_template_status_update``: a template was approved, rejected, paused, ..."""

	waba_id: str | None
	event: str  # APPROVED, REJECTED, PENDING, PAUSED, DISABLED, FLAGGED, ...
	message_template_id: str | None
	message_template_name: str | None
	message_template_language: str | None
	reason: str | None
	timestamp: int | None = None
	raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class WebhookBatch:
	"""Everything usable in one webhook delivery, plus what was skipped and why."""

	messages: list[InboundMessage] = field(default_factory=list)
	statuses: list[StatusUpdate] = field(default_factory=list)
	template_updates: list[TemplateStatusUpdate] = field(default_factory=list)
	# ``errors`` at change level: Meta's way of reporting app- or account-wide problems.
	errors: list[dict[str, Any]] = field(default_factory=list)
	problems: list[str] = field(default_factory=list)

	@property
	def is_empty(self) -> bool:
		"""Whether the delivery carried nothing to act on."""
		return not (self.messages or self.statuses or self.template_updates or self.errors)


# --- parsing helpers ------------------------------------------------------------------------------
def _dict(value: Any) -> dict[str, Any]:
	return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
	return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
	if isinstance(value, str):
		return value or None
	if isinstance(value, int | float) and not isinstance(value, bool):
		# Meta sends most ids as strings, but template ids arrive as JSON numbers.
		return str(int(value)) if float(value).is_integer() else str(value)
	return None


def _int(value: Any) -> int | None:
	if isinstance(value, bool):
		return None
	if isinstance(value, int):
		return value
	if isinstance(value, str) and value.strip().isdigit():
		return int(value.strip())
	return None


def _error_items(value: Any) -> list[dict[str, Any]]:
	return [item for item in _list(value) if isinstance(item, dict)]


_MEDIA_KINDS = frozenset(limits.MEDIA_TYPES)


class _Context(NamedTuple):
	phone_number_id: str | None
	display_phone_number: str | None
	waba_id: str | None


def _parse_message(
	message: dict[str, Any], context: _Context, names: dict[str, str], where: str, problems: list[str]
) -> InboundMessage | None:
	wamid = _str(message.get("id"))
	sender = _str(message.get("from"))
	if not wamid or not sender:
		problems.append(f"{where}: message without {'id' if not wamid else 'from'}; skipped")
		return None
	if not context.phone_number_id:
		problems.append(f"{where}: message {wamid} has no metadata.phone_number_id; skipped")
		return None
	timestamp = _int(message.get("timestamp"))
	if timestamp is None:
		problems.append(f"{where}: message {wamid} has no usable timestamp; using 0")
	kind = _str(message.get("type")) or "unknown"
	body = _dict(message.get(kind))
	fields: dict[str, Any] = {}

	if kind == "text":
		fields["text"] = _str(body.get("body")) or ""
	elif kind == "interactive":
		reply_kind = _str(body.get("type"))
		reply = _dict(body.get(reply_kind)) if reply_kind else {}
		if reply_kind in ("button_reply", "list_reply"):
			fields.update(
				reply_kind=reply_kind,
				reply_id=_str(reply.get("id")),
				reply_title=_str(reply.get("title")),
				reply_description=_str(reply.get("description")),
			)
		elif reply_kind == "nfm_reply":
			# A WhatsApp Flow was completed; its answers are JSON in response_json (kept in raw).
			fields.update(reply_kind=reply_kind, reply_title=_str(reply.get("body")))
		else:
			problems.append(f"{where}: interactive message {wamid} of unknown type {reply_kind!r}")
	elif kind == "button":
		# A tap on a template's quick-reply button: payload is what we sent with it.
		fields.update(
			reply_kind="quick_reply",
			reply_id=_str(body.get("payload")),
			reply_title=_str(body.get("text")),
		)
	elif kind in _MEDIA_KINDS:
		media_id = _str(body.get("id"))
		if media_id:
			fields["media"] = MediaRef(
				id=media_id,
				kind=kind,
				mime_type=_str(body.get("mime_type")),
				sha256=_str(body.get("sha256")),
				caption=_str(body.get("caption")),
				filename=_str(body.get("filename")),
				voice=body.get("voice") is True,
				animated=body.get("animated") is True,
			)
		else:
			problems.append(f"{where}: {kind} message {wamid} has no media id")
	elif kind == "location":
		fields["location"] = dict(body)
	elif kind == "contacts":
		fields["contacts"] = [item for item in _list(message.get("contacts")) if isinstance(item, dict)]
	elif kind == "reaction":
		fields["reaction"] = Reaction(
			emoji=_str(body.get("emoji")) or "", message_id=_str(body.get("message_id")) or ""
		)
	elif kind == "system":
		# e.g. "User A changed from 1555... to 1555...": keep the sentence as text.
		fields["text"] = _str(body.get("body"))

	message_context = _dict(message.get("context"))
	return InboundMessage(
		wamid=wamid,
		phone_number_id=context.phone_number_id,
		display_phone_number=context.display_phone_number,
		waba_id=context.waba_id,
		from_number=sender,
		contact_name=names.get(sender) or (next(iter(names.values())) if len(names) == 1 else None),
		timestamp=timestamp or 0,
		type=kind,
		context_wamid=_str(message_context.get("id")),
		forwarded=bool(message_context.get("forwarded") or message_context.get("frequently_forwarded")),
		errors=_error_items(message.get("errors")),
		raw=message,
		**fields,
	)


def _parse_status(
	status: dict[str, Any], context: _Context, where: str, problems: list[str]
) -> StatusUpdate | None:
	wamid = _str(status.get("id"))
	value = _str(status.get("status"))
	if not wamid or not value:
		problems.append(f"{where}: status without {'id' if not wamid else 'status'}; skipped")
		return None
	timestamp = _int(status.get("timestamp"))
	if timestamp is None:
		problems.append(f"{where}: status for {wamid} has no usable timestamp; using 0")
	errors = _error_items(status.get("errors"))
	first_error = errors[0] if errors else {}
	conversation = _dict(status.get("conversation"))
	pricing = _dict(status.get("pricing"))
	billable = pricing.get("billable")
	return StatusUpdate(
		wamid=wamid,
		status=value.lower(),
		timestamp=timestamp or 0,
		recipient_id=_str(status.get("recipient_id")),
		phone_number_id=context.phone_number_id,
		display_phone_number=context.display_phone_number,
		waba_id=context.waba_id,
		errors=errors,
		error_code=_int(first_error.get("code")),
		error_title=_str(first_error.get("title")) or _str(first_error.get("message")),
		error_details=_str(_dict(first_error.get("error_data")).get("details")),
		conversation_id=_str(conversation.get("id")),
		conversation_category=_str(_dict(conversation.get("origin")).get("type")),
		pricing_category=_str(pricing.get("category")),
		billable=billable if isinstance(billable, bool) else None,
		callback_data=_str(status.get("biz_opaque_callback_data")),
		raw=status,
	)


def _parse_template_update(
	value: dict[str, Any], waba_id: str | None, timestamp: int | None, where: str, problems: list[str]
) -> TemplateStatusUpdate | None:
	event = _str(value.get("event"))
	if not event:
		problems.append(f"{where}: template status update without event; skipped")
		return None
	return TemplateStatusUpdate(
		waba_id=waba_id,
		event=event,
		message_template_id=_str(value.get("message_template_id")),
		message_template_name=_str(value.get("message_template_name")),
		message_template_language=_str(value.get("message_template_language")),
		reason=_str(value.get("reason")),
		timestamp=timestamp,
		raw=value,
	)


def parse_webhook(payload: Mapping[str, Any] | bytes | str | Any) -> WebhookBatch:
	"""Return every message, status and template update in one delivery; never raises.

	``payload`` is the decoded JSON object (or the raw body, which is decoded here).
	"""
	batch = WebhookBatch()
	problems = batch.problems
	if isinstance(payload, bytes | bytearray | str):
		try:
			payload = json.loads(payload)
		except (ValueError, UnicodeDecodeError):
			problems.append("body is not JSON")
			return batch
	if not isinstance(payload, Mapping):
		problems.append(f"body is a JSON {type(payload).__name__}, not an object")
		return batch
	if payload.get("object") != limits.WEBHOOK_OBJECT:
		problems.append(f"object is {payload.get('object')!r}, not {limits.WEBHOOK_OBJECT!r}; skipped")
		return batch
	entries = payload.get("entry")
	if not isinstance(entries, list):
		problems.append("no entry list")
		return batch

	for e, entry in enumerate(entries):
		if not isinstance(entry, dict):
			problems.append(f"entry[{e}]: not an object; skipped")
			continue
		waba_id = _str(entry.get("id"))
		entry_time = _int(entry.get("time"))
		for c, change in enumerate(_list(entry.get("changes"))):
			where = f"entry[{e}].changes[{c}]"
			if not isinstance(change, dict):
				problems.append(f"{where}: not an object; skipped")
				continue
			change_field = change.get("field")
			value = change.get("value")
			if not isinstance(value, dict):
				problems.append(f"{where}: field {change_field!r} has no value object; skipped")
				continue
			if change_field == "message_template_status_update":
				update = _parse_template_update(value, waba_id, entry_time, where, problems)
				if update:
					batch.template_updates.append(update)
				continue
			if change_field != "messages":
				problems.append(f"{where}: field {change_field!r} is not handled; skipped")
				continue

			metadata = _dict(value.get("metadata"))
			context = _Context(
				phone_number_id=_str(metadata.get("phone_number_id")),
				display_phone_number=_str(metadata.get("display_phone_number")),
				waba_id=waba_id,
			)
			names: dict[str, str] = {}
			for contact in _list(value.get("contacts")):
				wa_id, name = (
					_str(_dict(contact).get("wa_id")),
					_str(_dict(_dict(contact).get("profile")).get("name")),
				)
				if wa_id and name:
					names[wa_id] = name
			for m, message in enumerate(_list(value.get("messages"))):
				if not isinstance(message, dict):
					problems.append(f"{where}.messages[{m}]: not an object; skipped")
					continue
				parsed = _parse_message(message, context, names, f"{where}.messages[{m}]", problems)
				if parsed:
					batch.messages.append(parsed)
			for s, status in enumerate(_list(value.get("statuses"))):
				if not isinstance(status, dict):
					problems.append(f"{where}.statuses[{s}]: not an object; skipped")
					continue
				parsed_status = _parse_status(status, context, f"{where}.statuses[{s}]", problems)
				if parsed_status:
					batch.statuses.append(parsed_status)
			batch.errors.extend(_error_items(value.get("errors")))
			if not any(key in value for key in ("messages", "statuses", "errors")):
				problems.append(f"{where}: messages change with no messages, statuses or errors")
	return batch
