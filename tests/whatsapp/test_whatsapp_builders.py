"""Message builders: exact Graph API JSON, and every Meta limit named by field and number."""

from __future__ import annotations

import pytest

from flow_automation.channels.whatsapp import (
	MessageValidationError,
	buttons_message,
	check_buttons,
	check_list,
	check_media,
	check_template,
	check_text,
	limits,
	list_message,
	media_message,
	read_receipt,
	template_message,
	text_message,
)

TO = "+16505551234"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234"}


def raises(field: str, limit: int | None = None):
	"""Context manager asserting a MessageValidationError on ``field`` (and ``limit``)."""

	class _Check:
		def __enter__(self):
			self.ctx = pytest.raises(MessageValidationError)
			self.info = self.ctx.__enter__()
			return self.info

		def __exit__(self, *exc):
			handled = self.ctx.__exit__(*exc)
			error = self.info.value
			assert error.field == field, (error.field, error.message)
			if limit is not None:
				assert error.limit == limit
				assert f"at most {limit}" in error.message or str(limit) in error.message
			return handled

	return _Check()


def three_buttons():
	return [
		{"id": "accept", "title": "Accept"},
		{"id": "decline", "title": "Decline"},
		{"id": "later", "title": "Later"},
	]


# --- text -----------------------------------------------------------------------------
def test_text_message_shape():
	assert text_message(TO, "Hello") == {
		**ENVELOPE,
		"type": "text",
		"text": {"preview_url": False, "body": "Hello"},
	}


def test_text_message_reply_to_and_callback_data():
	message = text_message(TO, "Hi", preview_url=True, reply_to=WAMID, callback_data="run=1")
	assert message["context"] == {"message_id": WAMID}
	assert message["biz_opaque_callback_data"] == "run=1"
	assert message["text"]["preview_url"] is True


def test_text_body_limit():
	assert text_message(TO, "x" * limits.TEXT_BODY_MAX)["text"]["body"] == "x" * 4096
	with raises("/body", 4096) as info:
		text_message(TO, "x" * 4097)
	assert "4097 characters; WhatsApp allows at most 4096" in info.value.message


def test_text_body_required():
	with raises("/body"):
		text_message(TO, "   ")
	assert check_text("") and check_text("ok") == []


def test_callback_data_limit():
	text_message(TO, "x", callback_data="c" * 512)
	with raises("/callback_data", 512):
		text_message(TO, "x", callback_data="c" * 513)


@pytest.mark.parametrize("to", ["+16505551234", "16505551234"])
def test_recipient_forms_become_wa_id(to):
	assert text_message(to, "x")["to"] == "16505551234"


@pytest.mark.parametrize("to", ["+1 650 555 1234", "", "phone", "+"])
def test_recipient_must_be_normalised(to):
	with raises("/to"):
		text_message(to, "x")


def test_validation_error_is_value_error_and_lists_all_problems():
	with pytest.raises(ValueError) as info:
		text_message("bad", "x" * 5000, callback_data="c" * 600)
	fields = [problem.field for problem in info.value.problems]
	assert fields == ["/to", "/callback_data", "/body"]


# --- reply buttons --------------------------------------------------------------------
def test_buttons_message_shape():
	message = buttons_message(
		TO, "Can you start run PR-0042?", three_buttons(), header="Run", footer="Reply below"
	)
	assert message == {
		**ENVELOPE,
		"type": "interactive",
		"interactive": {
			"type": "button",
			"header": {"type": "text", "text": "Run"},
			"body": {"text": "Can you start run PR-0042?"},
			"footer": {"text": "Reply below"},
			"action": {
				"buttons": [
					{"type": "reply", "reply": {"id": "accept", "title": "Accept"}},
					{"type": "reply", "reply": {"id": "decline", "title": "Decline"}},
					{"type": "reply", "reply": {"id": "later", "title": "Later"}},
				]
			},
		},
	}


def test_buttons_string_shorthand():
	message = buttons_message(TO, "Body", ["Yes", "No"])
	assert message["interactive"]["action"]["buttons"][1] == {
		"type": "reply",
		"reply": {"id": "No", "title": "No"},
	}


def test_buttons_media_header():
	header = {"type": "image", "link": "https://example.com/a.jpg"}
	message = buttons_message(TO, "Body", three_buttons(), header=header)
	assert message["interactive"]["header"] == {
		"type": "image",
		"image": {"link": "https://example.com/a.jpg"},
	}
	document = {"type": "document", "id": "123", "filename": "a.pdf"}
	message = buttons_message(TO, "Body", three_buttons(), header=document)
	assert message["interactive"]["header"] == {
		"type": "document",
		"document": {"id": "123", "filename": "a.pdf"},
	}


def test_at_most_three_buttons():
	buttons = [*three_buttons(), {"id": "four", "title": "Four"}]
	with raises("/buttons", 3) as info:
		buttons_message(TO, "Body", buttons)
	assert "4 buttons" in info.value.message


def test_button_title_limit_message_names_button_and_limit():
	buttons = three_buttons()
	buttons[2] = {"id": "confirm", "title": "Confirm the order now!"}
	with raises("/buttons/2/title", 20) as info:
		buttons_message(TO, "Body", buttons)
	assert info.value.message == (
		"button 3 title 'Confirm the order now!' is 22 characters; WhatsApp allows at most 20"
	)


def test_button_id_limit_and_uniqueness():
	with raises("/buttons/0/id", 256):
		buttons_message(TO, "Body", [{"id": "i" * 257, "title": "A"}])
	buttons_message(TO, "Body", [{"id": "i" * 256, "title": "A"}])
	with raises("/buttons/1/id") as info:
		buttons_message(TO, "Body", [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}])
	assert "unique" in info.value.message


def test_button_titles_unique_and_required():
	with raises("/buttons/1/title"):
		buttons_message(TO, "Body", [{"id": "a", "title": "Yes"}, {"id": "b", "title": "yes"}])
	with raises("/buttons/0/title"):
		buttons_message(TO, "Body", [{"id": "a", "title": ""}])


def test_buttons_required():
	with raises("/buttons"):
		buttons_message(TO, "Body", [])


@pytest.mark.parametrize(
	("kwargs", "field", "limit"),
	[
		({"body": "b" * 1025}, "/body", 1024),
		({"header": "h" * 61}, "/header", 60),
		({"footer": "f" * 61}, "/footer", 60),
		({"header": {"type": "video"}}, "/header", None),
		({"header": {"type": "sticker", "id": "1"}}, "/header/type", None),
	],
)
def test_buttons_frame_limits(kwargs, field, limit):
	args = {"body": "Body", **kwargs}
	body = args.pop("body")
	with raises(field, limit):
		buttons_message(TO, body, three_buttons(), **args)


def test_check_buttons_reports_without_raising():
	assert check_buttons(three_buttons()) == []
	problems = check_buttons([{"id": "a", "title": "A title that is far too long"}] * 4)
	fields = {problem.field for problem in problems}
	assert {"/buttons", "/buttons/0/title", "/buttons/1/id"} <= fields
	assert all(isinstance(problem.message, str) for problem in problems)
	assert check_buttons(three_buttons(), body="") == [("/body", "body is empty; WhatsApp requires it", None)]


# --- lists --------------------------------------------------------------------------------
def rows(n, prefix="r"):
	return [{"id": f"{prefix}{i}", "title": f"Row {i}"} for i in range(n)]


def test_list_message_rows_shape():
	message = list_message(
		TO,
		"Why is the run late?",
		"Choose reason",
		[
			{"id": "material", "title": "Material shortage", "description": "Fabric not available"},
			{"id": "other", "title": "Other"},
		],
		header="Run PR-0042",
		footer="Thanks",
	)
	assert message == {
		**ENVELOPE,
		"type": "interactive",
		"interactive": {
			"type": "list",
			"header": {"type": "text", "text": "Run PR-0042"},
			"body": {"text": "Why is the run late?"},
			"footer": {"text": "Thanks"},
			"action": {
				"button": "Choose reason",
				"sections": [
					{
						"rows": [
							{
								"id": "material",
								"title": "Material shortage",
								"description": "Fabric not available",
							},
							{"id": "other", "title": "Other"},
						]
					}
				],
			},
		},
	}


def test_list_message_sections_shape():
	sections = [{"title": "Machines", "rows": rows(2, "m")}, {"title": "People", "rows": rows(1, "p")}]
	action = list_message(TO, "Body", "Pick", sections=sections)["interactive"]["action"]
	assert action["sections"] == [
		{"title": "Machines", "rows": [{"id": "m0", "title": "Row 0"}, {"id": "m1", "title": "Row 1"}]},
		{"title": "People", "rows": [{"id": "p0", "title": "Row 0"}]},
	]


def test_list_ten_rows_across_sections():
	list_message(
		TO,
		"Body",
		"Pick",
		sections=[{"title": "A", "rows": rows(5, "a")}, {"title": "B", "rows": rows(5, "b")}],
	)
	with raises("/sections", 10) as info:
		list_message(
			TO,
			"Body",
			"Pick",
			sections=[{"title": "A", "rows": rows(6, "a")}, {"title": "B", "rows": rows(5, "b")}],
		)
	assert "11 rows" in info.value.message
	with raises("/rows", 10):
		list_message(TO, "Body", "Pick", rows(11))


def test_list_at_most_ten_sections():
	sections = [{"title": f"S{i}", "rows": [{"id": f"r{i}", "title": "R"}]} for i in range(11)]
	problems = check_list("Pick", sections=sections)
	assert ("/sections", "11 sections; WhatsApp allows at most 10", 10) in problems


@pytest.mark.parametrize(
	("row", "field", "limit"),
	[
		({"id": "r", "title": "t" * 25}, "/rows/0/title", 24),
		({"id": "r", "title": "t", "description": "d" * 73}, "/rows/0/description", 72),
		({"id": "r" * 201, "title": "t"}, "/rows/0/id", 200),
		({"id": "", "title": "t"}, "/rows/0/id", None),
		({"id": "r"}, "/rows/0/title", None),
	],
)
def test_list_row_limits(row, field, limit):
	with raises(field, limit):
		list_message(TO, "Body", "Pick", [row])


def test_list_row_at_limits_is_fine():
	row = {"id": "r" * 200, "title": "t" * 24, "description": "d" * 72}
	assert check_list("b" * 20, [row]) == []


def test_list_button_and_section_titles():
	with raises("/button", 20):
		list_message(TO, "Body", "b" * 21, rows(1))
	with raises("/sections/0/title", 24):
		list_message(TO, "Body", "Pick", sections=[{"title": "s" * 25, "rows": rows(1)}])
	with raises("/sections/1/title"):
		list_message(
			TO, "Body", "Pick", sections=[{"title": "A", "rows": rows(1, "a")}, {"rows": rows(1, "b")}]
		)
	# one section needs no title
	list_message(TO, "Body", "Pick", sections=[{"rows": rows(1)}])


def test_list_row_ids_unique_across_sections():
	with raises("/sections/1/rows/0/id") as info:
		list_message(
			TO, "Body", "Pick", sections=[{"title": "A", "rows": rows(1)}, {"title": "B", "rows": rows(1)}]
		)
	assert "repeats section 1 row 1" in info.value.message


def test_list_shape_problems():
	with raises("/rows"):
		list_message(TO, "Body", "Pick")
	with raises("/rows"):
		list_message(TO, "Body", "Pick", rows(1), sections=[{"rows": rows(1)}])
	with raises("/header/type"):
		list_message(TO, "Body", "Pick", rows(1), header={"type": "image", "link": "https://x.test/a.png"})
	with raises("/sections/0/rows"):
		list_message(TO, "Body", "Pick", sections=[{"title": "Empty", "rows": []}])


# --- media ---------------------------------------------------------------------------------
def test_media_message_shapes():
	assert media_message(TO, "image", link="https://example.com/a.jpg", caption="Batch") == {
		**ENVELOPE,
		"type": "image",
		"image": {"link": "https://example.com/a.jpg", "caption": "Batch"},
	}
	document = media_message(
		TO, "document", media_id="1003383421387256", caption="Note", filename="DN-42.pdf"
	)
	assert document["document"] == {"id": "1003383421387256", "caption": "Note", "filename": "DN-42.pdf"}
	assert media_message(TO, "audio", media_id="1")["audio"] == {"id": "1"}
	assert media_message(TO, "sticker", media_id="2", reply_to=WAMID)["context"] == {"message_id": WAMID}


@pytest.mark.parametrize(
	("media_type", "kwargs", "field"),
	[
		("audio", {"media_id": "1", "caption": "no"}, "/caption"),
		("sticker", {"media_id": "1", "caption": "no"}, "/caption"),
		("image", {"media_id": "1", "filename": "a.jpg"}, "/filename"),
		("image", {"media_id": "1", "link": "https://x.test/a.jpg"}, "/media"),
		("image", {}, "/media"),
		("image", {"link": "ftp://x.test/a.jpg"}, "/media/link"),
		("image", {"link": "not a url"}, "/media/link"),
		("image", {"link": "http://[::1/a.png"}, "/media/link"),
		("gif", {"media_id": "1"}, "/media_type"),
	],
)
def test_media_problems(media_type, kwargs, field):
	with raises(field):
		media_message(TO, media_type, **kwargs)


def test_media_caption_limit():
	media_message(TO, "video", media_id="1", caption="c" * 1024)
	with raises("/caption", 1024):
		media_message(TO, "video", media_id="1", caption="c" * 1025)
	assert check_media("image", link="https://x.test/a.png") == []


# --- templates ---------------------------------------------------------------------------
def test_template_message_full_shape():
	message = template_message(
		TO,
		"run_assigned",
		"en_US",
		header_params=["PR-0042"],
		body_params=["Sheena", "Line 3", 12],
		buttons=[{"id": "accept"}, {"id": "decline"}],
		callback_data="run=FR-1;step=notify",
	)
	assert message == {
		**ENVELOPE,
		"type": "template",
		"template": {
			"name": "run_assigned",
			"language": {"code": "en_US"},
			"components": [
				{"type": "header", "parameters": [{"type": "text", "text": "PR-0042"}]},
				{
					"type": "body",
					"parameters": [
						{"type": "text", "text": "Sheena"},
						{"type": "text", "text": "Line 3"},
						{"type": "text", "text": "12"},
					],
				},
				{
					"type": "button",
					"sub_type": "quick_reply",
					"index": "0",
					"parameters": [{"type": "payload", "payload": "accept"}],
				},
				{
					"type": "button",
					"sub_type": "quick_reply",
					"index": "1",
					"parameters": [{"type": "payload", "payload": "decline"}],
				},
			],
		},
		"biz_opaque_callback_data": "run=FR-1;step=notify",
	}


def test_template_without_parameters_has_no_components():
	assert template_message(TO, "hello_world", "en_US")["template"] == {
		"name": "hello_world",
		"language": {"code": "en_US"},
	}


def test_template_named_parameters():
	body = template_message(TO, "order_update", "en", body_params={"first_name": "Jo", "order_id": "SO-1"})
	assert body["template"]["components"] == [
		{
			"type": "body",
			"parameters": [
				{"type": "text", "parameter_name": "first_name", "text": "Jo"},
				{"type": "text", "parameter_name": "order_id", "text": "SO-1"},
			],
		}
	]
	listed = template_message(
		TO, "order_update", "en", body_params=[{"parameter_name": "first_name", "text": "Jo"}]
	)
	assert listed["template"]["components"][0]["parameters"] == [
		{"type": "text", "parameter_name": "first_name", "text": "Jo"}
	]


def test_template_media_header_and_url_button():
	message = template_message(
		TO,
		"invoice_ready",
		"pt_BR",
		header_params={"type": "document", "link": "https://example.com/i.pdf", "filename": "INV-1.pdf"},
		buttons=[
			{"index": 0, "sub_type": "url", "text": "INV-1"},
			{"index": "1", "sub_type": "quick_reply", "payload": "ok"},
		],
	)
	components = message["template"]["components"]
	assert components[0] == {
		"type": "header",
		"parameters": [
			{"type": "document", "document": {"link": "https://example.com/i.pdf", "filename": "INV-1.pdf"}}
		],
	}
	assert components[1] == {
		"type": "button",
		"sub_type": "url",
		"index": "0",
		"parameters": [{"type": "text", "text": "INV-1"}],
	}


def test_template_passthrough_parameter_objects():
	currency = {
		"type": "currency",
		"currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000},
	}
	message = template_message(TO, "pay", "en", body_params=[currency, "Jo"])
	assert message["template"]["components"][0]["parameters"][0] == currency


@pytest.mark.parametrize(
	("kwargs", "field", "limit"),
	[
		({"name": "Order Confirmation"}, "/name", None),
		({"name": "n" * 513}, "/name", 512),
		({"name": ""}, "/name", None),
		({"language": "english"}, "/language", None),
		({"language": "en-US"}, "/language", None),
		({"body_params": ["line one\nline two"]}, "/body/0", None),
		({"body_params": ["tab\there"]}, "/body/0", None),
		({"body_params": ["five     spaces"]}, "/body/0", None),
		({"body_params": ["ok", ""]}, "/body/1", None),
		({"body_params": ["ok", None]}, "/body/1", None),
		({"body_params": ["b" * 1025]}, "/body/0", 1024),
		({"header_params": ["h" * 61]}, "/header/0", 60),
		({"header_params": {"type": "image"}}, "/header", None),
		({"header_params": {"type": "audio", "id": "1"}}, "/header/type", None),
		({"body_params": [{"parameter_name": "First Name", "text": "x"}]}, "/body/0/parameter_name", None),
		({"body_params": ["a", {"parameter_name": "b", "text": "x"}]}, "/body", None),
		(
			{
				"buttons": [
					{"index": 0, "sub_type": "quick_reply", "payload": "a"},
					{"index": 0, "payload": "b"},
				]
			},
			"/buttons/1/index",
			None,
		),
		({"buttons": [{"index": 10, "payload": "a"}]}, "/buttons/0/index", None),
		({"buttons": [{"index": 0, "sub_type": "phone_number"}]}, "/buttons/0/sub_type", None),
		({"buttons": [{"index": 0, "sub_type": "url"}]}, "/buttons/0/text", None),
		({"buttons": [{"id": str(i)} for i in range(11)]}, "/buttons", 10),
	],
)
def test_template_problems(kwargs, field, limit):
	args = {"name": "order_update", "language": "en_US", **kwargs}
	with raises(field, limit):
		template_message(TO, args.pop("name"), args.pop("language"), **args)


def test_template_four_spaces_are_allowed():
	template_message(TO, "t", "en", body_params=["four    spaces"])
	assert check_template("t", "en", body_params=["x" * 1024]) == []


def test_read_receipt():
	assert read_receipt(WAMID) == {"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}
	with raises("/message_id"):
		read_receipt("")
