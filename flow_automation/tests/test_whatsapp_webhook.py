"""The webhook through Frappe's real request path (WSGI app, guest, raw body, signature header).

Requests run in their own thread and database connection, as Meta's would, so the account
is committed here and everything the requests stored is removed in tearDownClass. The
processing job they enqueue (no worker runs in tests) is run here directly, then removed
from the queue.
"""

from __future__ import annotations

import json

import frappe
from frappe.tests.test_api import make_request
from frappe.utils import get_test_client
from frappe.utils.background_jobs import get_queue, get_redis_conn
from frappe.utils.password import set_encrypted_password

from flow_automation import kept_connection, transaction
from flow_automation.channels.whatsapp import FakeGraphAPI
from flow_automation.tests.utils import FlowTestCase, make_template
from flow_automation.tests.whatsapp_utils import (
	APP_SECRET,
	SAMPLES,
	TOKEN,
	VERIFY_TOKEN,
	inbound_message,
	make_account,
	signed,
	status_update,
)
from flow_automation.triggers import clear_trigger_cache
from flow_automation.whatsapp import accounts, routing

URL = "/api/method/flow_automation.whatsapp.api.webhook"
NUMBER = "+16505550199"
ACCOUNT = "WA Webhook Test"
JOB = routing.PROCESS_PENDING


class WebhookCase(FlowTestCase):
	"""A committed account on a loopback Graph API, a test client, and no processing job on
	its way (nor a rung doorbell) when each test starts."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.client = get_test_client(use_cookies=False)
		cls.graph = FakeGraphAPI(access_token=TOKEN).start()
		make_account(cls.graph, ACCOUNT)
		frappe.db.commit()
		cls.wamids: list[str] = []

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		frappe.db.delete("WhatsApp Message", {"contact_number": NUMBER})
		frappe.db.delete("WhatsApp Message", {"wamid": ("in", cls.wamids or ["-"])})
		frappe.db.delete("WhatsApp Conversation", {"name": NUMBER})
		frappe.delete_doc("WhatsApp Account", ACCOUNT, force=True, ignore_permissions=True)
		frappe.db.commit()
		accounts.clear_account_cache()
		_remove_jobs()
		kept_connection.forget()  # the requests' connection, kept by this process
		cls.graph.stop()
		super().tearDownClass()

	def setUp(self):
		super().setUp()
		_remove_jobs()

	def message(self, text: str) -> tuple[dict, str]:
		"""A webhook body with one text from NUMBER, and its wamid (removed after the class)."""
		body = inbound_message(text, number=NUMBER)
		message_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.wamids.append(message_id)
		return body, message_id

	def deliver(self, text: str) -> str:
		"""Deliver a signed text from NUMBER, answered 200; its wamid."""
		body, message_id = self.message(text)
		raw, signature = signed(body)
		response = make_request(
			target=self.client.post,
			args=(URL,),
			# buffered: the response is read and closed in the request's thread, as a server does
			# once it has sent it; that is when Frappe runs after_response
			kwargs={
				"data": raw,
				"headers": {"Content-Type": "application/json", "X-Hub-Signature-256": signature},
				"buffered": True,
			},
		)
		self.assertEqual(response.status_code, 200)
		frappe.db.rollback()  # see what the request's own connection committed
		return message_id


class TestWebhookRequests(WebhookCase):
	def get(self, query: str):
		return make_request(target=self.client.get, args=(f"{URL}?{query}",))

	def post(self, raw: bytes, signature: str | None, content_type: str = "application/json"):
		headers = {"Content-Type": content_type}
		if signature:
			headers["X-Hub-Signature-256"] = signature
		return make_request(target=self.client.post, args=(URL,), kwargs={"data": raw, "headers": headers})

	def stored(self, message_id: str) -> int:
		frappe.db.rollback()  # see what the request's own connection committed
		return frappe.db.count("WhatsApp Message", {"wamid": message_id})

	def test_subscription_handshake(self):
		ok = self.get(f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444")
		self.assertEqual(ok.status_code, 200)
		self.assertEqual(ok.get_data(as_text=True), "1158201444")
		self.assertTrue(ok.headers["Content-Type"].startswith("text/plain"))
		for query in (
			"hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
			f"hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
			"hub.challenge=1",
			f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=<script>",
		):
			with self.subTest(query=query):
				self.assertEqual(self.get(query).status_code, 403)

	def test_signed_delivery_is_stored_once_and_acknowledged(self):
		body, message_id = self.message("hello from the request path")
		raw, signature = signed(body)
		response = self.post(raw, signature)
		self.assertEqual((response.status_code, response.get_data(as_text=True)), (200, "OK"))
		self.assertEqual(self.stored(message_id), 1)
		self.assertEqual(self.post(raw, signature).status_code, 200)  # Meta redelivers
		self.assertEqual(self.stored(message_id), 1)
		row = frappe.db.get_value(
			"WhatsApp Message", {"wamid": message_id}, ["processing_status", "account"], as_dict=True
		)
		self.assertEqual((row.processing_status, row.account), ("Pending", ACCOUNT))
		self.assertEqual(len(_queued_jobs()), 1)  # one job, though the message came twice
		routing.process_pending()  # what the worker does with that job
		self.assertEqual(
			frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, "processing_status"), "Done"
		)
		self.assertTrue(frappe.db.get_value("WhatsApp Conversation", NUMBER, "last_inbound_at"))

	def test_a_burst_of_deliveries_queues_one_job_and_a_started_job_lets_the_next_ring(self):
		first = []
		for n in range(5):
			body, message_id = self.message(f"burst {n}")
			self.assertEqual(self.post(*signed(body)).status_code, 200)
			first.append(message_id)
		self.assertEqual(len(_queued_jobs()), 1)
		self.assertEqual(routing.process_pending(), 5)  # the job routes everything Pending
		for message_id in first:
			self.assertEqual(
				frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, "processing_status"), "Done"
			)
		_queued_jobs()[0].delete()  # the worker took it
		body, later = self.message("after the job started")
		self.assertEqual(self.post(*signed(body)).status_code, 200)
		self.assertEqual(len(_queued_jobs()), 1, "a message after the job looked rings for a new job")
		self.assertEqual(self.stored(later), 1)

	def test_a_lost_job_is_replaced_once_its_doorbell_expires(self):
		body, message_id = self.message("the job for this one is lost")
		self.assertEqual(self.post(*signed(body)).status_code, 200)
		_queued_jobs()[0].delete()  # lost with its worker, never started: the doorbell still rings
		body, second = self.message("still ringing")
		self.assertEqual(self.post(*signed(body)).status_code, 200)
		self.assertEqual(_queued_jobs(), [], "the doorbell is held: no second job yet")
		get_redis_conn().expire(transaction._doorbell_key(routing.INBOUND_DOORBELL), 0)  # it expires
		body, third = self.message("rings again")
		self.assertEqual(self.post(*signed(body)).status_code, 200)
		self.assertEqual(len(_queued_jobs()), 1)
		self.assertEqual(routing.process_pending(), 3)  # and that job routes all three

	def test_a_secret_changed_by_another_process_is_taken_at_once(self):
		accounts.webhook_accounts()  # this process holds its copy of the accounts
		# another process saves a new app secret: the row, the Redis cache, not our copy
		set_encrypted_password("WhatsApp Account", ACCOUNT, "rotated-secret", "app_secret")
		frappe.db.set_value("WhatsApp Account", ACCOUNT, "modified", frappe.utils.now_datetime())
		frappe.db.commit()
		frappe.cache.delete_value(accounts.ACCOUNTS_KEY)
		try:
			body, message_id = self.message("signed with the new secret")
			self.assertEqual(self.post(*signed(body, "rotated-secret")).status_code, 200)
			self.assertEqual(self.stored(message_id), 1)
			body, old = self.message("signed with the old secret")
			self.assertEqual(self.post(*signed(body)).status_code, 403)
			self.assertEqual(self.stored(old), 0)
		finally:
			set_encrypted_password("WhatsApp Account", ACCOUNT, APP_SECRET, "app_secret")
			frappe.db.set_value("WhatsApp Account", ACCOUNT, "modified", frappe.utils.now_datetime())
			frappe.db.commit()
			accounts.clear_account_cache()

	def test_bad_or_missing_signatures_get_403_and_store_nothing(self):
		body, message_id = self.message("forged")
		raw, signature = signed(body)
		self.assertEqual(self.post(raw, None).status_code, 403)
		self.assertEqual(self.post(raw, "sha256=" + "f" * 64).status_code, 403)
		self.assertEqual(self.post(raw + b" ", signature).status_code, 403)  # the bytes changed
		self.assertEqual(self.stored(message_id), 0)

	def test_malformed_but_signed_bodies_are_acknowledged_never_500(self):
		for raw in ((SAMPLES / "malformed_signed.json").read_bytes(), b"[]", b'{"object": 1}', b""):
			with self.subTest(raw=raw[:20]):
				self.assertEqual(self.post(raw, signed(raw)[1]).status_code, 200)
		# Frappe itself parses an application/json body before any app code runs, so a body
		# that is not JSON at all can only reach the endpoint under another content type.
		self.assertEqual(self.post(b"{not json", signed(b"{not json")[1], "text/plain").status_code, 200)
		self.wamids.extend(["wamid.MALFORMED.BADTS", "wamid.MALFORMED.NOBODY"])
		self.assertEqual(self.stored("wamid.MALFORMED.BADTS"), 1)

	def test_statuses_for_unknown_wamids_are_ignored(self):
		raw, signature = signed(status_update("wamid.UNKNOWN.TO.US", "read", recipient=NUMBER))
		self.assertEqual(self.post(raw, signature).status_code, 200)
		self.assertEqual(self.stored("wamid.UNKNOWN.TO.US"), 0)

	def test_non_ascii_escaped_sample_verifies_over_the_raw_bytes(self):
		raw = (SAMPLES / "inbound_text_non_ascii_escaped.json").read_bytes()
		message_id = json.loads(raw)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
		self.wamids.append(message_id)
		self.assertEqual(self.post(raw, signed(raw)[1]).status_code, 200)
		self.assertEqual(self.stored(message_id), 1)


class TestAnsweredAfterTheResponse(WebhookCase):
	"""A message a flow will answer is routed, and its run started, right after the webhook's
	200 in the web worker that stored it (Frappe's after_response): no background job and no
	worker stand between the message and the reply. No worker runs here, so a reply at all
	proves it."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		cls.template = make_template(
			[
				{
					"id": "reply",
					"kind": "send_whatsapp",
					"payload": {"to": "{{ contact.number }}", "mode": "text", "text": "Here is the menu"},
				}
			],
			trigger={"type": "WhatsApp Message", "keywords": ["menu"]},
		)
		cls.quiz = make_template(
			[
				{
					"id": "q",
					"kind": "ask",
					"payload": {
						"to": "{{ contact.number }}",
						"text": "Favourite colour?",
						"save_as": "colour",
					},
				},
				{
					"id": "thanks",
					"kind": "send_whatsapp",
					"parent_id": "q",
					"branch": "answered",
					"payload": {
						"to": "{{ contact.number }}",
						"mode": "text",
						"text": "{{ variables.colour }} it is",
					},
				},
			],
			trigger={"type": "WhatsApp Message", "keywords": ["quiz"]},
		)
		frappe.db.commit()
		clear_trigger_cache()

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		templates = [cls.template.name, cls.quiz.name]
		runs = frappe.get_all("Flow Run", filters={"template": ("in", templates)}, pluck="name")
		for doctype in ("Flow Step Log", "Flow Step Pending", "WhatsApp Message"):
			frappe.db.delete(doctype, {"run": ("in", runs or ["-"])})
		frappe.db.delete("Flow Run", {"template": ("in", templates)})
		for template in templates:
			frappe.delete_doc("Flow Template", template, force=True, ignore_permissions=True)
		frappe.db.commit()
		clear_trigger_cache()
		for run in runs:
			job = get_queue("default").fetch_job(f"{frappe.local.site}::flow_automation:start:{run}")
			if job:
				job.delete()
		super().tearDownClass()

	def test_a_keyword_is_answered_right_after_the_200_without_a_job(self):
		message_id = self.deliver("menu")
		replies = [m for m in self.graph.sent_messages if m.get("to") == NUMBER.lstrip("+")]
		self.assertEqual([m["text"]["body"] for m in replies], ["Here is the menu"])
		row = frappe.db.get_value(
			"WhatsApp Message", {"wamid": message_id}, ["processing_status", "run"], as_dict=True
		)
		self.assertEqual(row.processing_status, "Done")
		self.assertEqual(frappe.db.get_value("Flow Run", row.run, "status"), "Completed")
		self.assertFalse(_queued_jobs())  # no processing job: it was done in the request
		start_job = f"{frappe.local.site}::flow_automation:start:{row.run}"
		self.assertIsNone(get_queue("default").fetch_job(start_job))  # nor a job to start its run

	def test_a_reply_to_a_waiting_question_is_answered_right_after_the_200_without_a_job(self):
		self.deliver("quiz")
		run = frappe.db.get_value("Flow Run", {"template": self.quiz.name}, "name")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Waiting")
		self.assertEqual(frappe.db.get_value("WhatsApp Conversation", NUMBER, "waiting_run"), run)
		message_id = self.deliver("teal")
		replies = [m["text"]["body"] for m in self.graph.sent_messages if m.get("to") == NUMBER.lstrip("+")]
		self.assertEqual(replies[-2:], ["Favourite colour?", "teal it is"])
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(
			frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, ["processing_status", "run"]),
			("Done", run),
		)
		self.assertFalse(_queued_jobs())

	def test_a_message_no_flow_answers_is_left_to_the_job(self):
		message_id = self.deliver("just saying hello")
		self.assertEqual(
			frappe.db.get_value("WhatsApp Message", {"wamid": message_id}, "processing_status"), "Pending"
		)
		self.assertEqual(len(_queued_jobs()), 1)


def _queued_jobs() -> list:
	"""This site's queued `process_pending` jobs."""
	return [
		job
		for job in get_queue("short").jobs
		if (job.kwargs or {}).get("method") == JOB and (job.kwargs or {}).get("site") == frappe.local.site
	]


def _remove_jobs() -> None:
	for job in _queued_jobs():
		job.delete()
	transaction.doorbell_answered(routing.INBOUND_DOORBELL)
