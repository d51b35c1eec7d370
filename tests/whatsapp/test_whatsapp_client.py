"""CloudAPIClient against FakeGraphAPI over real loopback HTTP (no mocking of requests)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from wa_testkit import PHONE_NUMBER_ID, TOKEN, WABA_ID

from flow_automation.channels.whatsapp import (
	AuthError,
	CloudAPIClient,
	FakeGraphAPI,
	InvalidRequestError,
	MediaInfo,
	RateLimitError,
	ServerError,
	TransportError,
	UndeliverableError,
	WhatsAppError,
	WindowClosedError,
	buttons_message,
	template_message,
	text_message,
)

TO = "+16505551234"
MESSAGES_PATH = f"/v21.0/{PHONE_NUMBER_ID}/messages"


def make_client(graph: FakeGraphAPI, sleeps: list[float], **kwargs) -> CloudAPIClient:
	kwargs.setdefault("base_url", graph.base_url)
	return CloudAPIClient(PHONE_NUMBER_ID, TOKEN, sleep=sleeps.append, **kwargs)


# --- sending ---------------------------------------------------------------------------------
def test_send_returns_wamid_and_server_got_exact_body_and_auth(graph, client, sleeps):
	message = buttons_message(
		TO, "Start run PR-0042?", [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]
	)
	result = client.send(message)
	assert result.wamid.startswith("wamid.") and result.wa_id == "16505551234"
	assert result.raw["messages"][0]["id"] == result.wamid
	(request,) = graph.requests
	assert (request.method, request.path) == ("POST", MESSAGES_PATH)
	assert request.headers["authorization"] == f"Bearer {TOKEN}"
	assert request.headers["content-type"] == "application/json"
	assert request.json == message
	assert json.loads(request.body) == message
	assert sleeps == []


def test_wamids_are_unique_and_template_status_reported(client):
	first = client.send_text(TO, "one")
	second = client.send_template(TO, "hello_world", "en_US")
	assert first.wamid != second.wamid
	assert first.message_status is None and second.message_status == "accepted"


def test_api_version_and_base_url_shape_the_path(graph, sleeps):
	with make_client(graph, sleeps, api_version="v19.0", base_url=graph.base_url + "/") as api:
		api.send(text_message(TO, "x"))
	assert graph.requests[0].path == f"/v19.0/{PHONE_NUMBER_ID}/messages"


def test_mark_read(graph, client):
	assert client.mark_read("wamid.IN1", typing_indicator=True) is True
	assert graph.requests[0].json == {
		"messaging_product": "whatsapp",
		"status": "read",
		"message_id": "wamid.IN1",
		"typing_indicator": {"type": "text"},
	}
	assert graph.sent_messages == []


def test_concurrent_sends_share_one_client(graph, client):
	results: list[str] = []
	lock = threading.Lock()

	def send(i: int) -> None:
		wamid = client.send_text(TO, f"message {i}").wamid
		with lock:
			results.append(wamid)

	threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
	for thread in threads:
		thread.start()
	for thread in threads:
		thread.join()
	assert len(set(results)) == 16 and len(graph.sent_messages) == 16


# --- retries ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
	("status", "code"),
	[
		(500, None),
		(503, None),
		(429, None),
		(400, 130429),
		(400, 131056),
		(400, 80007),
		(400, 4),
		(500, 131000),
	],
)
def test_retries_temporary_failures_then_succeeds(graph, client, sleeps, status, code):
	graph.fail_next(2, status=status, code=code)
	result = client.send(text_message(TO, "retry me"))
	assert result.wamid.startswith("wamid.")
	assert len(graph.requests) == 3
	assert len(sleeps) == 2
	# every attempt carried the same body
	assert all(r.json == graph.requests[0].json for r in graph.requests)


def test_backoff_is_exponential_with_jitter(graph, client, sleeps):
	graph.fail_next(3, status=400, code=130429)
	client.send(text_message(TO, "x"))
	assert len(sleeps) == 3
	for attempt, delay in enumerate(sleeps, start=1):
		ceiling = 1.0 * 2 ** (attempt - 1)
		assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


def test_backoff_is_capped(graph, sleeps):
	api = make_client(graph, sleeps, backoff_seconds=10, max_backoff_seconds=12, max_attempts=4)
	graph.fail_next(3, status=500, code=None)
	api.send(text_message(TO, "x"))
	assert all(delay <= 12 for delay in sleeps) and sleeps[-1] >= 6


def test_retry_after_header_is_honoured(graph, client, sleeps):
	graph.fail_next(1, status=429, code=None, retry_after=3)
	client.send(text_message(TO, "x"))
	assert sleeps == [3.0]


def test_retry_after_http_date_is_honoured(graph, client, sleeps):
	graph.fail_next(1, status=503, code=None, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
	client.send(text_message(TO, "x"))
	assert sleeps == [0.0]  # a date in the past: retry at once


def test_long_retry_after_goes_back_to_the_caller(graph, client, sleeps):
	graph.fail_next(1, status=429, code=130429, retry_after=3600)
	with pytest.raises(RateLimitError) as info:
		client.send(text_message(TO, "x"))
	assert info.value.retry_after == 3600 and info.value.retryable
	assert sleeps == [] and len(graph.requests) == 1


@pytest.mark.parametrize(
	("code", "cls"),
	[
		(131047, WindowClosedError),
		(131026, UndeliverableError),
		(100, InvalidRequestError),
		(131048, RateLimitError),
	],
)
def test_no_retry_on_permanent_errors(graph, client, sleeps, code, cls):
	graph.fail_next(1, status=400, code=code, details="from the fake")
	with pytest.raises(cls) as info:
		client.send(text_message(TO, "x"))
	assert info.value.code == code and info.value.http_status == 400
	assert info.value.details == "from the fake" and info.value.fbtrace_id
	assert info.value.retryable is False
	assert len(graph.requests) == 1 and sleeps == []


def test_exhausted_retries_raise_the_last_typed_error(graph, client, sleeps):
	graph.fail_next(3, status=400, code=130429)
	graph.fail_next(1, status=400, code=131056)
	with pytest.raises(RateLimitError) as info:
		client.send(text_message(TO, "x"))
	assert info.value.code == 131056
	assert len(graph.requests) == 4 and len(sleeps) == 3


def test_exhausted_on_plain_500(graph, sleeps):
	api = make_client(graph, sleeps, max_attempts=2)
	graph.fail_next(5, status=502, code=None)
	with pytest.raises(ServerError) as info:
		api.send(text_message(TO, "x"))
	assert info.value.http_status == 502 and info.value.code is None
	assert len(graph.requests) == 2 and len(sleeps) == 1


def test_max_attempts_one_never_retries(graph, sleeps):
	api = make_client(graph, sleeps, max_attempts=1)
	graph.fail_next(1, status=500, code=131000)
	with pytest.raises(ServerError):
		api.send(text_message(TO, "x"))
	assert len(graph.requests) == 1 and sleeps == []


def test_wrong_token_is_auth_error_without_retry(graph, sleeps):
	api = CloudAPIClient(PHONE_NUMBER_ID, "wrong-token", base_url=graph.base_url, sleep=sleeps.append)
	with pytest.raises(AuthError) as info:
		api.send(text_message(TO, "x"))
	assert info.value.code == 190 and info.value.http_status == 401
	assert len(graph.requests) == 1 and sleeps == []


# --- transport failures: never a hidden second POST --------------------------------------------
def test_dropped_connection_after_post_is_not_resent(graph, client, sleeps):
	graph.disconnect_next(1)
	with pytest.raises(TransportError) as info:
		client.send(text_message(TO, "x"))
	assert info.value.maybe_sent is True and info.value.retryable is False
	assert len(graph.requests) == 1


def test_read_timeout_on_post_is_not_resent(graph, sleeps):
	api = make_client(graph, sleeps, timeout=(2, 0.2))
	graph.delay_next(1, 0.6)
	with pytest.raises(TransportError) as info:
		api.send(text_message(TO, "x"))
	assert info.value.maybe_sent is True
	assert len(graph.requests) == 1


def test_idempotent_get_is_retried_by_the_transport(graph, client):
	media_id = graph.add_media(b"abc", "image/png")
	graph.disconnect_next(1)
	assert client.get_media(media_id).file_size == 3
	assert len(graph.requests) == 2


def test_connection_refused_is_safe_to_retry(sleeps):
	with socket.socket() as probe:
		probe.bind(("127.0.0.1", 0))
		port = probe.getsockname()[1]
	api = CloudAPIClient(
		PHONE_NUMBER_ID, TOKEN, base_url=f"http://127.0.0.1:{port}", sleep=sleeps.append, connect_retries=0
	)
	with pytest.raises(TransportError) as info:
		api.send(text_message(TO, "x"))
	assert info.value.maybe_sent is False and info.value.retryable is True


# --- media ------------------------------------------------------------------------------------
def test_get_media_and_download(graph, client):
	data = bytes(range(256)) * 40
	media_id = graph.add_media(data, "application/pdf")
	info = client.get_media(media_id)
	assert isinstance(info, MediaInfo)
	assert (info.id, info.mime_type, info.file_size) == (media_id, "application/pdf", len(data))
	assert client.download_media(info.url) == data
	get_info, download = graph.requests
	assert get_info.path == f"/v21.0/{media_id}" and get_info.query == {"phone_number_id": [PHONE_NUMBER_ID]}
	assert download.headers["authorization"] == f"Bearer {TOKEN}"


def test_download_refuses_more_than_max_bytes(graph, client):
	media_id = graph.add_media(b"x" * 5000, "video/mp4")
	url = client.get_media(media_id).url
	with pytest.raises(WhatsAppError) as info:
		client.download_media(url, max_bytes=4999)
	assert "5000 bytes" in str(info.value)
	assert len(client.download_media(url, max_bytes=5000)) == 5000


def test_download_never_sends_the_token_elsewhere(graph, client):
	for url in (
		"https://attacker.example/steal",
		"http://lookaside.fbsbx.com/x",
		"https://fbsbx.com.evil.test/x",
	):
		with pytest.raises(ValueError):
			client.download_media(url)
	assert graph.requests == []


def test_missing_media_is_invalid_request(graph, client):
	with pytest.raises(InvalidRequestError) as info:
		client.get_media("123456")
	assert info.value.code == 100 and info.value.error_subcode == 33


def test_upload_media(graph, client):
	media_id = client.upload_media(b"%PDF-1.4 test", "application/pdf", "DN-42.pdf")
	(request,) = graph.requests
	assert request.path == f"/v21.0/{PHONE_NUMBER_ID}/media"
	assert request.form["messaging_product"] == "whatsapp" and request.form["type"] == "application/pdf"
	assert request.form["file"] == ("DN-42.pdf", b"%PDF-1.4 test", "application/pdf")
	info = client.get_media(media_id)
	assert client.download_media(info.url) == b"%PDF-1.4 test"
	assert client.delete_media(media_id) is True


# --- templates --------------------------------------------------------------------------------
def test_list_templates_follows_paging(graph, client):
	graph.add_templates(
		WABA_ID, [{"name": f"template_{i}", "language": "en_US", "status": "APPROVED"} for i in range(7)]
	)
	names = [template["name"] for template in client.list_templates(WABA_ID, limit=3)]
	assert names == [f"template_{i}" for i in range(7)]
	assert len(graph.requests) == 3
	assert graph.requests[0].query["limit"] == ["3"] and "fields" in graph.requests[0].query
	assert graph.requests[1].query["after"] == ["3"]


def test_list_templates_strips_token_from_paging_urls(sleeps):
	with FakeGraphAPI(access_token=TOKEN, paging_token_in_url=True) as graph:
		graph.add_templates(WABA_ID, [{"name": f"t{i}"} for i in range(5)])
		api = make_client(graph, sleeps)
		assert len(list(api.list_templates(WABA_ID, limit=2))) == 5
		for request in graph.requests[1:]:
			assert "access_token" not in request.query
			assert request.authorization == f"Bearer {TOKEN}"


def test_list_templates_empty(client):
	assert list(client.list_templates("999")) == []


def test_list_templates_error_mid_way(graph, client, sleeps):
	graph.add_templates(WABA_ID, [{"name": f"t{i}"} for i in range(4)])
	pages = client.list_templates(WABA_ID, limit=2)
	assert next(pages)["name"] == "t0"
	graph.fail_next(1, status=400, code=100)
	with pytest.raises(InvalidRequestError):
		list(pages)


# --- the token stays secret ----------------------------------------------------------------------
def test_token_never_appears_in_errors_or_repr(graph, sleeps):
	api = make_client(graph, sleeps, max_attempts=2)
	assert TOKEN not in repr(api) and "***" in repr(api)
	graph.fail_next(1, status=400, code=131047)
	graph.fail_next(2, status=500, code=None)
	graph.disconnect_next(1)
	errors: list[Exception] = []
	for _ in range(3):
		with pytest.raises(WhatsAppError) as info:
			api.send(text_message(TO, "x"))
		errors.append(info.value)
	with pytest.raises(AuthError) as info:
		CloudAPIClient(PHONE_NUMBER_ID, TOKEN + "x", base_url=graph.base_url).send(text_message(TO, "x"))
	errors.append(info.value)
	with socket.socket() as probe:
		probe.bind(("127.0.0.1", 0))
		port = probe.getsockname()[1]
	with pytest.raises(TransportError) as info:
		CloudAPIClient(PHONE_NUMBER_ID, TOKEN, base_url=f"http://127.0.0.1:{port}", connect_retries=0).send(
			text_message(TO, "x")
		)
	errors.append(info.value)
	assert [type(e).__name__ for e in errors] == [
		"WindowClosedError",
		"ServerError",
		"TransportError",
		"AuthError",
		"TransportError",
	]
	for error in errors:
		for text in (str(error), repr(error), json.dumps(error.as_dict()), str(error.args)):
			assert TOKEN not in text
		assert error.__cause__ is None or TOKEN not in str(error.__cause__)


def test_client_requires_credentials():
	with pytest.raises(ValueError):
		CloudAPIClient("", TOKEN)
	with pytest.raises(ValueError):
		CloudAPIClient(PHONE_NUMBER_ID, "")


# --- the fake itself ------------------------------------------------------------------------------
def test_fake_rejects_malformed_sends(graph, client):
	with pytest.raises(InvalidRequestError):
		client.send({"to": "1"})
	with pytest.raises(InvalidRequestError) as info:
		client.send({"messaging_product": "whatsapp", "to": "1", "type": "text"})
	assert info.value.code == 131008


def test_fake_path_filtered_failure(graph, client):
	media_id = graph.add_media(b"abc")
	graph.fail_next(1, status=400, code=100, path_contains="/messages")
	assert client.get_media(media_id).file_size == 3
	with pytest.raises(InvalidRequestError):
		client.send(template_message(TO, "hello_world", "en_US"))
