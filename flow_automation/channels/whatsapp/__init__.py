"""WhatsApp Cloud API channel: message builders, HTTP client, webhook parsing, phone numbers.

Pure Python (``requests`` + ``phonenumbers``); never imports Frappe. The Frappe side
(WhatsApp Account / Message / Conversation doctypes, the webhook endpoint, the
``send_whatsapp`` and ``ask`` steps) calls only the names exported here.
"""

from __future__ import annotations

from . import limits
from .builders import (
	buttons_message,
	check_buttons,
	check_callback_data,
	check_list,
	check_media,
	check_media_size,
	check_template,
	check_text,
	list_message,
	media_message,
	read_receipt,
	template_message,
	text_message,
)
from .client import CloudAPIClient, MediaInfo, SendResult
from .errors import (
	AccountError,
	AuthError,
	InvalidRequestError,
	MessageValidationError,
	Problem,
	RateLimitError,
	ServerError,
	TemplateError,
	TransportError,
	UndeliverableError,
	WhatsAppError,
	WindowClosedError,
	error_from_response,
	error_from_status_item,
	is_retryable,
)
from .fake_graph import FakeGraphAPI, RecordedRequest
from .phone import InvalidPhoneNumber, from_wa_id, normalize_number, same_number, to_wa_id
from .status import FRAPPE_STATUS, STATUSES, advance_status, from_frappe_status, to_frappe_status
from .webhook import (
	InboundMessage,
	MediaRef,
	Reaction,
	StatusUpdate,
	TemplateStatusUpdate,
	WebhookBatch,
	parse_webhook,
	sign,
	verify_signature,
	verify_subscription,
)
from .window import needs_open_window, window_open, window_problem

__all__ = [
	"FRAPPE_STATUS",
	"STATUSES",
	"AccountError",
	"AuthError",
	"CloudAPIClient",
	"FakeGraphAPI",
	"InboundMessage",
	"InvalidPhoneNumber",
	"InvalidRequestError",
	"MediaInfo",
	"MediaRef",
	"MessageValidationError",
	"Problem",
	"RateLimitError",
	"Reaction",
	"RecordedRequest",
	"SendResult",
	"ServerError",
	"StatusUpdate",
	"TemplateError",
	"TemplateStatusUpdate",
	"TransportError",
	"UndeliverableError",
	"WebhookBatch",
	"WhatsAppError",
	"WindowClosedError",
	"advance_status",
	"buttons_message",
	"check_buttons",
	"check_callback_data",
	"check_list",
	"check_media",
	"check_media_size",
	"check_template",
	"check_text",
	"error_from_response",
	"error_from_status_item",
	"from_frappe_status",
	"from_wa_id",
	"is_retryable",
	"limits",
	"list_message",
	"media_message",
	"needs_open_window",
	"normalize_number",
	"parse_webhook",
	"read_receipt",
	"same_number",
	"sign",
	"template_message",
	"text_message",
	"to_frappe_status",
	"to_wa_id",
	"verify_signature",
	"verify_subscription",
	"window_open",
	"window_problem",
]
