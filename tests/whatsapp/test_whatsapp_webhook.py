"""Webhook: signatures over raw bytes, the subscription handshake, and parsing every sample."""

from __future__ import annotations

import copy
import json

import pytest
from wa_testkit import APP_SECRET, DATA, raw_sample

from flow_automation.channels.whatsapp import (
	InboundMessage,
	MediaRef,
	Reaction,
	StatusUpdate,
	UndeliverableError,
	WindowClosedError,
	parse_webhook,
	sign,
	verify_signature,
	verify_subscription,
)

SAMPLES = sorted(path.name for path in DATA.glob("*.json"))
PNID = "106540352242922"
WABA = "102290129340398"


def parse(name: str):
	return parse_webhook(json.loads(raw_sample(name)))


def only_message(name: str) -> InboundMessage:
	batch = parse(name)
	assert batch.problems == [] and batch.statuses == []
	assert len(batch.messages) == 1
	return batch.messages[0]


def only_status(name: str) -> StatusUpdate:
	batch = parse(name)
	assert batch.problems == [] and batch.messages == []
	assert len(batch.statuses) == 1
	return batch.statuses[0]


# --- signatures --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_verifies_over_its_raw_bytes(name):
	raw = raw_sample(name)
	header = sign(raw, APP_SECRET)
	assert header.startswith("sha256=") and len(header) == 7 + 64
	assert verify_signature(raw, header, APP_SECRET)
	assert not verify_signature(raw + b" ", header, APP_SECRET)
	assert not verify_signature(raw, header, APP_SECRET + "x")


def test_signature_is_over_raw_bytes_not_reserialised_json():
	raw = raw_sample("inbound_text_non_ascii_escaped.json")
	assert b"\\u00fc" in raw and b"\\/" in raw  # Meta escapes non-ASCII and slashes
	header = sign(raw, APP_SECRET)
	payload = json.loads(raw)
	reserialised = [
		json.dumps(payload).encode(),
		json.dumps(payload, ensure_ascii=False).encode("utf-8"),
		json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
		json.dumps(payload, separators=(",", ":")).encode(),
	]
	for body in reserialised:
		assert body != raw
		assert not verify_signature(body, header, APP_SECRET)
	assert verify_signature(raw, header, APP_SECRET)
	assert verify_signature(bytearray(raw), header, APP_SECRET)
	message = parse_webhook(payload).messages[0]
	assert message.text == "Grüße 😀 — see https://example.com/a"
	assert message.contact_name == "José Müller"


@pytest.mark.parametrize(
	"header",
	[
		None,
		"",
		"sha256=",
		"sha256=zz" + "0" * 62,
		"sha256=" + "0" * 63,
		"sha1=" + "0" * 40,
		"0" * 64,
		"sha256=" + "0" * 64,
	],
)
def test_malformed_or_wrong_headers_fail(header):
	assert verify_signature(raw_sample("inbound_text.json"), header, APP_SECRET) is False


def test_header_is_case_insensitive_in_prefix_and_hex():
	raw = raw_sample("inbound_text.json")
	digest = sign(raw, APP_SECRET)[7:]
	assert verify_signature(raw, "SHA256=" + digest.upper(), APP_SECRET)
	assert verify_signature(raw, "  sha256=" + digest + "\n", APP_SECRET)


def test_empty_secret_never_verifies():
	raw = raw_sample("inbound_text.json")
	assert not verify_signature(raw, sign(raw, ""), "")


def test_decoded_body_is_refused():
	raw = raw_sample("inbound_text.json")
	with pytest.raises(TypeError):
		verify_signature(raw.decode(), sign(raw, APP_SECRET), APP_SECRET)  # type: ignore[arg-type]


# --- subscription ------------------------------------------------------------------------------
def test_verify_subscription():
	params = {"hub.mode": "subscribe", "hub.verify_token": "my-verify-token", "hub.challenge": "1158201444"}
	assert verify_subscription(params, "my-verify-token") == "1158201444"
	assert verify_subscription({**params, "hub.verify_token": "wrong"}, "my-verify-token") is None
	assert verify_subscription({**params, "hub.mode": "unsubscribe"}, "my-verify-token") is None
	assert (
		verify_subscription({k: v for k, v in params.items() if k != "hub.challenge"}, "my-verify-token")
		is None
	)
	assert (
		verify_subscription({k: v for k, v in params.items() if k != "hub.verify_token"}, "my-verify-token")
		is None
	)
	assert verify_subscription(params, "") is None
	assert (
		verify_subscription({**params, "hub.challenge": "<script>alert(1)</script>"}, "my-verify-token")
		is None
	)
	assert verify_subscription("hub.mode=subscribe", "x") is None  # type: ignore[arg-type]


# --- the shared samples ------------------------------------------------------------------------
def test_inbound_text():
	message = only_message("inbound_text.json")
	assert message.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
	assert (message.phone_number_id, message.display_phone_number, message.waba_id) == (
		PNID,
		"15550783881",
		WABA,
	)
	assert (message.from_number, message.from_e164, message.contact_name) == (
		"16505551234",
		"+16505551234",
		"Sheena Nelson",
	)
	assert (message.timestamp, message.type, message.text) == (1749416383, "text", "menu")
	assert message.answer_text == "menu" and message.answer_id is None and message.reply_kind is None
	assert message.raw["text"] == {"body": "menu"}


def test_inbound_button_reply():
	message = only_message("inbound_button_reply.json")
	assert (message.type, message.reply_kind, message.reply_id, message.reply_title) == (
		"interactive",
		"button_reply",
		"decline",
		"Decline",
	)
	assert message.context_wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3QjQ0QjYyQzY4RTNBRjJDMkEA"
	assert message.answer_id == "decline" and message.answer_text == "Decline" and message.text is None


def test_inbound_list_reply():
	message = only_message("inbound_list_reply.json")
	assert (message.reply_kind, message.reply_id, message.reply_title, message.reply_description) == (
		"list_reply",
		"reason_material",
		"Material shortage",
		"Fabric not available",
	)
	assert message.context_wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCNUQ5REI3RDVGQzQ4ODI0OUIA"


def test_inbound_template_quick_reply():
	message = only_message("inbound_template_quick_reply.json")
	assert (message.type, message.reply_kind, message.reply_id, message.reply_title) == (
		"button",
		"quick_reply",
		"accept_run",
		"Accept",
	)
	assert message.answer_id == "accept_run" and message.answer_text == "Accept"


def test_inbound_image():
	message = only_message("inbound_image.json")
	assert message.media == MediaRef(
		id="1003383421387256",
		kind="image",
		mime_type="image/jpeg",
		sha256="m2kDKxvPZyU0K4pqZ3qCV6uQ6eXqk1Q3iC2qVx3n4rY=",
		caption="Finished batch",
	)
	assert message.answer_text is None


def test_status_delivered():
	status = only_status("status_delivered.json")
	assert (status.wamid, status.status, status.timestamp, status.recipient_id) == (
		"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3QjQ0QjYyQzY4RTNBRjJDMkEA",
		"delivered",
		1749416395,
		"16505551234",
	)
	assert (status.phone_number_id, status.waba_id) == (PNID, WABA)
	assert (
		status.conversation_id,
		status.conversation_category,
		status.pricing_category,
		status.billable,
	) == (
		"6ceb9d929c4e4c3bd4a1d2e5b7c1a0f2",
		"utility",
		"utility",
		True,
	)
	assert status.errors == [] and status.error_code is None and status.error is None
	assert status.frappe_status == "Delivered"


def test_status_failed():
	status = only_status("status_failed.json")
	assert (status.status, status.error_code, status.error_title) == (
		"failed",
		131047,
		"Re-engagement message",
	)
	assert status.error_details.startswith("Message failed to send because more than 24 hours")
	assert isinstance(status.error, WindowClosedError) and status.error.code == 131047
	assert status.frappe_status == "Failed"


# --- our own samples ---------------------------------------------------------------------------
def test_inbound_location():
	message = only_message("inbound_location.json")
	assert message.type == "location"
	assert message.location["latitude"] == 37.483307 and message.location["name"] == "Pablo Morales"


def test_inbound_contacts():
	message = only_message("inbound_contacts.json")
	assert message.contacts[0]["name"]["formatted_name"] == "Barbara Johnson"
	assert message.contacts[0]["phones"][0]["wa_id"] == "19405551234"


def test_inbound_reaction():
	message = only_message("inbound_reaction.json")
	assert message.reaction == Reaction(
		emoji="👍", message_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3QjQ0QjYyQzY4RTNBRjJDMkEA"
	)
	assert message.reaction.emoji == message.reaction[0]


def test_inbound_unsupported_keeps_errors():
	message = only_message("inbound_unsupported.json")
	assert message.type == "unsupported"
	assert message.errors[0]["code"] == 131051
	assert message.error.code == 131051 and message.answer_text is None


@pytest.mark.parametrize(
	("name", "kind", "mime_type", "caption", "filename", "voice"),
	[
		("inbound_sticker.json", "sticker", "image/webp", None, None, False),
		("inbound_video.json", "video", "video/mp4", "Line 3 jam", None, False),
		(
			"inbound_document.json",
			"document",
			"application/pdf",
			"Signed delivery note",
			"DN-00042.pdf",
			False,
		),
		("inbound_audio.json", "audio", "audio/ogg; codecs=opus", None, None, True),
	],
)
def test_inbound_media(name, kind, mime_type, caption, filename, voice):
	message = only_message(name)
	assert message.type == kind
	media = message.media
	assert (media.kind, media.mime_type, media.caption, media.filename, media.voice) == (
		kind,
		mime_type,
		caption,
		filename,
		voice,
	)
	assert media.id.startswith("10033834213873")


def test_document_reply_context():
	assert only_message("inbound_document.json").context_wamid.startswith("wamid.")


def test_status_read_with_callback_data():
	status = only_status("status_read_with_callback.json")
	assert (status.status, status.callback_data) == ("read", "run=FR-0001;step=welcome")


def test_status_failed_undeliverable():
	status = only_status("status_failed_undeliverable.json")
	assert status.error_code == 131026 and isinstance(status.error, UndeliverableError)


def test_template_status_update():
	batch = parse("template_status_update.json")
	assert batch.messages == [] and batch.statuses == [] and batch.problems == []
	(update,) = batch.template_updates
	assert (
		update.waba_id,
		update.event,
		update.message_template_id,
		update.message_template_name,
		update.message_template_language,
		update.reason,
		update.timestamp,
	) == (WABA, "APPROVED", "1389046125534837", "order_confirmation", "en_US", "NONE", 1749416700)


def test_batch_two_entries_two_changes_each():
	batch = parse("batch_two_entries.json")
	assert batch.problems == []
	assert [m.wamid for m in batch.messages] == [
		"wamid.BATCH.E0C0.M0",
		"wamid.BATCH.E1C0.M0",
		"wamid.BATCH.E1C0.M1",
	]
	assert [(s.wamid, s.status) for s in batch.statuses] == [
		("wamid.BATCH.OUT.1", "sent"),
		("wamid.BATCH.OUT.1", "delivered"),
		("wamid.BATCH.OUT.2", "read"),
		("wamid.BATCH.OUT.3", "failed"),
	]
	first, ravi, ana = batch.messages
	assert (first.phone_number_id, first.waba_id, first.contact_name, first.text) == (
		PNID,
		WABA,
		"Sheena Nelson",
		"yes",
	)
	assert (ravi.phone_number_id, ravi.waba_id) == ("106540352299999", "102290129349999")
	assert (ravi.contact_name, ravi.reply_id, ravi.context_wamid) == (
		"Ravi Kumar",
		"accept",
		"wamid.BATCH.OUT.3",
	)
	assert (ana.contact_name, ana.text) == ("Ana Souza", "Olá")
	assert batch.statuses[0].conversation_category == "service" and batch.statuses[0].billable is False
	assert batch.statuses[3].phone_number_id == "106540352299999"
	assert isinstance(batch.statuses[3].error, WindowClosedError)


def test_malformed_but_signed_body():
	raw = raw_sample("malformed_signed.json")
	assert verify_signature(raw, sign(raw, APP_SECRET), APP_SECRET)
	batch = parse_webhook(raw)  # raw bytes are accepted too
	assert [m.wamid for m in batch.messages] == ["wamid.MALFORMED.BADTS", "wamid.MALFORMED.NOBODY"]
	assert batch.messages[0].timestamp == 0 and batch.messages[0].text == "kept"
	assert batch.messages[1].media is None
	assert batch.statuses == []
	problems = "\n".join(batch.problems)
	for expected in (
		"entry[0]: not an object",
		"entry[1].changes[0]: field 'messages' has no value object",
		"entry[1].changes[1]: field 'account_update' is not handled",
		"entry[1].changes[2].messages[0]: message without id",
		"entry[1].changes[2].messages[1]: message without from",
		"wamid.MALFORMED.BADTS has no usable timestamp",
		"image message wamid.MALFORMED.NOBODY has no media id",
		"entry[1].changes[2].messages[4]: not an object",
		"entry[1].changes[2].statuses[0]: status without id",
		"entry[1].changes[2].statuses[1]: status without status",
		"entry[1].changes[2].statuses[2]: not an object",
		"wamid.MALFORMED.NOPNID has no metadata.phone_number_id",
		"entry[1].changes[4]: not an object",
	):
		assert expected in problems, expected


@pytest.mark.parametrize(
	"payload",
	[
		None,
		[],
		42,
		"not json",
		b"\xff\xfe",
		"[1, 2]",
		{},
		{"object": "page", "entry": []},
		{"object": "whatsapp_business_account"},
	],
)
def test_parse_never_raises_on_junk(payload):
	batch = parse_webhook(payload)
	assert batch.is_empty and batch.problems


def _mutations(node, path=()):
	"""Yield (path, replacement) for every node of a JSON document."""
	for replacement in (None, [], {}, "x", 7, True):
		yield path, replacement
	children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
	for key, child in children:
		yield from _mutations(child, (*path, key))


def _replace(document, path, value):
	if not path:
		return value
	document = copy.deepcopy(document)
	target = document
	for key in path[:-1]:
		target = target[key]
	target[path[-1]] = value
	return document


@pytest.mark.parametrize("name", SAMPLES)
def test_parse_never_raises_on_any_single_mutation(name):
	document = json.loads(raw_sample(name))
	for path, value in _mutations(document):
		parse_webhook(_replace(document, path, value))


def test_parsed_objects_are_frozen():
	message = only_message("inbound_text.json")
	with pytest.raises(AttributeError):
		message.text = "changed"  # type: ignore[misc]
