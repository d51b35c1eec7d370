"""Meta error bodies become typed errors chosen by numeric code."""

from __future__ import annotations

import json

import pytest

from flow_automation.channels.whatsapp import (
	AccountError,
	AuthError,
	InvalidRequestError,
	RateLimitError,
	ServerError,
	TemplateError,
	UndeliverableError,
	WhatsAppError,
	WindowClosedError,
	error_from_response,
	error_from_status_item,
	is_retryable,
)
from flow_automation.channels.whatsapp.errors import RETRYABLE_CODES


def graph_body(code, message="(#x) msg", **extra):
	return {"error": {"message": message, "type": "OAuthException", "code": code, **extra}}


@pytest.mark.parametrize(
	("code", "http_status", "cls", "retryable"),
	[
		(130429, 400, RateLimitError, True),
		(131056, 400, RateLimitError, True),
		(80007, 400, RateLimitError, True),
		(4, 400, RateLimitError, True),
		(613, 400, RateLimitError, True),
		(131048, 400, RateLimitError, False),
		(131047, 400, WindowClosedError, False),
		(131026, 400, UndeliverableError, False),
		(131050, 400, UndeliverableError, False),
		(190, 401, AuthError, False),
		(0, 401, AuthError, False),
		(10, 403, AuthError, False),
		(200, 403, AuthError, False),
		(132000, 400, TemplateError, False),
		(132001, 404, TemplateError, False),
		(132015, 400, TemplateError, False),
		(132069, 400, TemplateError, False),
		(100, 400, InvalidRequestError, False),
		(131008, 400, InvalidRequestError, False),
		(131009, 400, InvalidRequestError, False),
		(131021, 400, InvalidRequestError, False),
		(131031, 400, AccountError, False),
		(133010, 400, AccountError, False),
		(1, 500, ServerError, True),
		(2, 503, ServerError, True),
		(131000, 500, ServerError, True),
		(131016, 503, ServerError, True),
		(133004, 503, ServerError, True),
	],
)
def test_codes_choose_class_and_retryability(code, http_status, cls, retryable):
	error = error_from_response(http_status, graph_body(code))
	assert type(error) is cls
	assert error.code == code
	assert error.retryable is retryable
	assert is_retryable(code, http_status) is retryable
	assert (code in RETRYABLE_CODES) is retryable


def test_all_fields_parsed():
	body = {
		"error": {
			"message": "(#131030) Recipient phone number not in allowed list",
			"type": "OAuthException",
			"code": 131030,
			"error_data": {
				"messaging_product": "whatsapp",
				"details": "Add recipient phone number to recipient list",
			},
			"error_subcode": 2494010,
			"fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
		}
	}
	error = error_from_response(400, json.dumps(body))
	assert isinstance(error, InvalidRequestError)
	assert (error.code, error.error_subcode, error.fbtrace_id, error.http_status) == (
		131030,
		2494010,
		"Az8or2yhqkZfEZ-_4Qn_Bam",
		400,
	)
	assert error.details == "Add recipient phone number to recipient list"
	assert error.title == "OAuthException" and error.error_type == "OAuthException"
	assert str(error) == (
		"(#131030) Recipient phone number not in allowed list"
		" - Add recipient phone number to recipient list [HTTP 400]"
	)
	assert error.as_dict()["error_class"] == "InvalidRequestError"
	json.dumps(error.as_dict())


def test_oauth_exception_type_does_not_mean_auth():
	# Meta labels an invalid parameter "OAuthException" too; only the code decides.
	assert type(error_from_response(400, graph_body(100))) is InvalidRequestError


def test_code_as_string_and_user_title():
	error = error_from_response(
		400, graph_body("131056", error_user_title="Slow down", error_user_msg="Too many")
	)
	assert isinstance(error, RateLimitError) and error.code == 131056
	assert error.title == "Slow down" and error.message == "Too many"


@pytest.mark.parametrize(
	("status", "body", "cls", "retryable"),
	[
		(502, "<html>Bad Gateway</html>", ServerError, True),
		(500, None, ServerError, True),
		(429, b"", RateLimitError, True),
		(401, "", AuthError, False),
		(400, "not json", WhatsAppError, False),
		(400, {"unexpected": True}, WhatsAppError, False),
		(400, graph_body(999999), WhatsAppError, False),
		(503, graph_body(999999), ServerError, True),
	],
)
def test_http_status_fallback(status, body, cls, retryable):
	error = error_from_response(status, body)
	assert type(error) is cls
	assert error.retryable is retryable
	assert error.http_status == status


def test_retry_after_is_kept():
	assert error_from_response(429, None, retry_after=7.0).retry_after == 7.0


def test_status_item_errors():
	item = {
		"code": 131047,
		"title": "Re-engagement message",
		"message": "Re-engagement message",
		"error_data": {"details": "more than 24 hours have passed"},
	}
	error = error_from_status_item(item)
	assert isinstance(error, WindowClosedError)
	assert (error.code, error.title, error.details, error.http_status) == (
		131047,
		"Re-engagement message",
		"more than 24 hours have passed",
		None,
	)
	assert type(error_from_status_item("garbage")) is WhatsAppError
	assert type(error_from_status_item({"title": "no code"})) is WhatsAppError


def test_details_may_be_a_string():
	error = error_from_response(400, graph_body(132000, error_data="Number of parameters does not match"))
	assert error.details == "Number of parameters does not match"


def test_no_duplicate_code_prefix():
	error = error_from_response(400, graph_body(131047, message="(#131047) Re-engagement message"))
	assert str(error).count("131047") == 1
