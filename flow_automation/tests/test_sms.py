"""notify channel `sms` on a real site: Frappe's SMS Settings and send_sms against a real HTTP
server on 127.0.0.1 playing the gateway (GET, POST form, JSON), its failures, and dry runs.

Each test configures SMS Settings for its gateway and puts the previous settings back.
"""

from __future__ import annotations

import html
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import frappe
from frappe.utils import add_to_date, now_datetime

from flow_automation import runtime
from flow_automation.tests.utils import FlowTestCase, RecordingServer, make_template, state

API_KEY = "gw-secret-4c1d9e"  # a static parameter: must never show in a step's error
SETTINGS_FIELDS = ("sms_gateway_url", "message_parameter", "receiver_parameter", "use_post")


def closed_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def configure_sms(url: str, *, use_post: bool = False, json_body: bool = False) -> None:
	settings = frappe.get_doc("SMS Settings")
	settings.sms_gateway_url = url
	settings.message_parameter = "text"
	settings.receiver_parameter = "to"
	settings.use_post = int(use_post or json_body)
	settings.set("parameters", [])
	settings.append("parameters", {"parameter": "api_key", "value": API_KEY, "header": 0})
	settings.append("parameters", {"parameter": "X-Gateway-Token", "value": "token-1", "header": 1})
	if json_body:
		settings.append("parameters", {"parameter": "Content-Type", "value": "application/json", "header": 1})
	settings.save(ignore_permissions=True)


@contextmanager
def gateway_settings(**options: Any) -> Iterator[RecordingServer]:
	"""A gateway on loopback and SMS Settings pointing at it; the old settings afterwards."""
	before = frappe.get_doc("SMS Settings")
	old = {field: before.get(field) for field in SETTINGS_FIELDS}
	old_parameters = [
		{"parameter": p.parameter, "value": p.value, "header": p.header} for p in before.parameters
	]
	with RecordingServer() as gateway:
		configure_sms(f"{gateway.url}/sms/send", **options)
		try:
			yield gateway
		finally:
			settings = frappe.get_doc("SMS Settings")
			settings.update(old)
			settings.set("parameters", old_parameters)
			settings.flags.ignore_mandatory = True  # a site that never had a gateway
			settings.save(ignore_permissions=True)


def sms_flow(to: list[str], body: str = "Hi {{ variables.name }}", **step: Any) -> str:
	return make_template(
		[{"id": "sms", "kind": "notify", "payload": {"channel": "sms", "to": to, "body": body}, **step}]
	).name


def start(template: str, **variables: Any) -> str:
	return runtime.start_run(template, variables={"name": "Ana", **variables}, advance="now")


def query(request: dict) -> dict[str, str]:
	return {k: v[0] for k, v in parse_qs(urlsplit(request["path"]).query).items()}


class TestSMS(FlowTestCase):
	def test_one_request_per_number_with_the_settings_parameters(self):
		with gateway_settings() as gateway:
			run = start(sms_flow(["+1 (650) 555-1234", "{{ variables.phone }}"]), phone="+44 20 7946 0958")
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
		self.assertEqual([r["method"] for r in gateway.requests], ["GET", "GET"])
		self.assertEqual(
			[query(r) for r in gateway.requests],
			[
				{"text": "Hi Ana", "to": "+16505551234", "api_key": API_KEY},
				{"text": "Hi Ana", "to": "+442079460958", "api_key": API_KEY},
			],
		)
		self.assertEqual(urlsplit(gateway.requests[0]["path"]).path, "/sms/send")
		self.assertEqual(gateway.requests[0]["headers"]["X-Gateway-Token"], "token-1")
		output = state(run)["sms"]["output"]
		self.assertEqual(output["sent"], ["+16505551234", "+442079460958"])
		self.assertEqual(output["channel"], "sms")

	def test_post_and_json_gateways(self):
		with gateway_settings(use_post=True) as gateway:
			start(sms_flow(["+16505551234"]))
		[request] = gateway.requests
		self.assertEqual(request["method"], "POST")
		self.assertEqual(
			{k: v[0] for k, v in parse_qs(request["body"].decode()).items()},
			{"text": "Hi Ana", "to": "+16505551234", "api_key": API_KEY},
		)
		with gateway_settings(json_body=True) as gateway:
			start(sms_flow(["+16505551234"]))
		[request] = gateway.requests
		self.assertEqual(
			json.loads(request["body"]), {"text": "Hi Ana", "to": "+16505551234", "api_key": API_KEY}
		)

	def test_a_dry_run_records_the_sms_and_sends_nothing(self):
		with gateway_settings() as gateway:
			result = runtime.simulate_template(
				sms_flow(["{{ variables.phone }}"]), variables={"phone": "+16505551234", "name": "Bo"}
			)
		self.assertEqual(result.status, "Completed")
		[call] = result.calls
		self.assertEqual(
			{k: call[k] for k in ("action", "to", "body")},
			{"action": "sms", "to": ["+16505551234"], "body": "Hi Bo"},
		)
		self.assertEqual(gateway.requests, [])

	def test_a_gateway_that_is_down_fails_the_step_retryably_and_a_retry_sends(self):
		template = sms_flow(["+16505551234"], retry={"max_attempts": 3, "backoff_seconds": 60})
		with gateway_settings() as gateway:
			configure_sms(f"http://127.0.0.1:{closed_port()}/sms/send?key={API_KEY}")
			run = start(template)
			entry = state(run)["sms"]
			self.assertEqual(entry["status"], "scheduled")  # retried later
			self.assertRegex(
				entry["error"],
				r"^channel: the SMS gateway 127\.0\.0\.1:\d+ could not be reached \(ConnectionError\)$",
			)
			self.assertNotIn(API_KEY, entry["error"])
			configure_sms(f"{gateway.url}/sms/send")  # the gateway is back
			runtime.advance_run(run, now=add_to_date(now_datetime(), minutes=5))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(len(gateway.requests), 1)

	def test_an_http_error_fails_the_step_and_a_retry_sends_only_to_the_numbers_left(self):
		template = sms_flow(
			["+16505551234", "+442079460958"], retry={"max_attempts": 3, "backoff_seconds": 60}
		)
		with gateway_settings() as gateway:
			gateway.responses = [(200, {"ok": True}), (500, {"error": "boom"})]
			run = start(template)
			entry = state(run)["sms"]
			self.assertEqual(entry["status"], "scheduled")
			self.assertRegex(
				entry["error"],
				r"^to/1: the SMS gateway 127\.0\.0\.1:\d+ answered HTTP 500 Internal Server Error for "
				r"\+442079460958 \(already sent to \+16505551234; a retry skips them\)$",
			)
			self.assertNotIn(API_KEY, entry["error"])
			runtime.advance_run(run, now=add_to_date(now_datetime(), minutes=5))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed")
		self.assertEqual(
			[query(r)["to"] for r in gateway.requests], ["+16505551234", "+442079460958", "+442079460958"]
		)
		output = state(run)["sms"]["output"]
		self.assertEqual((output["sent"], output["already_sent"]), (["+442079460958"], ["+16505551234"]))

	def test_an_answer_that_is_neither_2xx_nor_an_http_error_is_not_taken_for_a_success(self):
		# Frappe's send_sms only skips logging such an answer; the step must notice
		with gateway_settings() as gateway:
			gateway.responses = [(302, {"moved": "nowhere"})]  # no Location: requests does not follow
			run = start(sms_flow(["+16505551234"]))
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertRegex(
			state(run)["sms"]["error"],
			r"^to/0: the SMS gateway 127\.0\.0\.1:\d+ did not accept the SMS to \+16505551234 \(no 2xx answer\)$",
		)

	def test_without_a_gateway_in_sms_settings_the_step_says_so(self):
		with gateway_settings() as gateway:
			frappe.db.set_single_value("SMS Settings", "sms_gateway_url", "")
			run = start(sms_flow(["+16505551234"], retry={"max_attempts": 3, "backoff_seconds": 60}))
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")  # not retried
			self.assertEqual(
				state(run)["sms"]["error"],
				"channel: SMS Settings has no SMS Gateway URL: set up the SMS gateway in SMS Settings",
			)
			result = runtime.simulate_template(sms_flow(["+16505551234"]), variables={"name": "x"})
			self.assertEqual(result.status, "Failed")  # a dry run makes the same check
			self.assertEqual(gateway.requests, [])

	def test_a_recipient_that_renders_to_no_number_fails_before_anything_is_sent(self):
		with gateway_settings() as gateway:
			run = start(sms_flow(["{{ variables.phone }}"]), phone="call me maybe")
		self.assertEqual(state(run)["sms"]["error"], "to/0: 'call me maybe' is not a phone number")
		self.assertEqual(gateway.requests, [])

	def test_an_sms_step_is_validated_when_the_flow_is_saved(self):
		with self.assertRaises(frappe.ValidationError) as caught:
			make_template(
				[
					{
						"id": "sms",
						"kind": "notify",
						"payload": {"channel": "sms", "to": ["not a number"], "subject": "x"},
					}
				]
			)
		message = html.unescape(str(caught.exception))
		for expected in (
			"Payload/to/0: 'not a number' is not a phone number",
			"Payload/body: 'body' is required",
			"Payload/subject: 'subject' does not apply to channel 'sms'",
		):
			self.assertIn(expected, message)


class TestSMSWhereSMSLogExists(FlowTestCase):
	"""With ERPNext's SMS Log doctype (or, on plain Frappe, a stand-in with its fields) send_sms
	logs every success: a logged number is sent, an unlogged answer is not."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		if not frappe.db.exists("DocType", "SMS Log"):
			fields = [
				("sent_on", "Date"),
				("message", "Small Text"),
				("no_of_requested_sms", "Int"),
				("requested_numbers", "Code"),
				("no_of_sent_sms", "Int"),
				("sent_to", "Code"),
			]
			frappe.get_doc(
				{
					"doctype": "DocType",
					"name": "SMS Log",
					"module": "Flow Automation",
					"custom": 1,
					"autoname": "hash",
					"fields": [{"fieldname": f, "fieldtype": t, "label": f} for f, t in fields],
					"permissions": [{"role": "System Manager", "read": 1, "write": 1, "create": 1}],
				}
			).insert(ignore_permissions=True)
			frappe.db.commit()
			cls.addClassCleanup(cls.drop_sms_log)

	@staticmethod
	def drop_sms_log():
		frappe.db.rollback()
		frappe.delete_doc("DocType", "SMS Log", force=True, ignore_permissions=True)
		frappe.db.delete("Deleted Document", {"deleted_doctype": "DocType", "deleted_name": "SMS Log"})
		frappe.db.commit()
		frappe.db.sql_ddl("drop table if exists `tabSMS Log`")  # Frappe keeps a deleted DocType's table

	def test_a_logged_number_is_sent_and_an_unlogged_answer_fails(self):
		with gateway_settings() as gateway:
			gateway.responses = [(200, {"ok": True}), (302, {"moved": "nowhere"})]
			run = start(sms_flow(["+16505551234"]))
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
			self.assertEqual(
				frappe.get_all("SMS Log", filters={"sent_to": "+16505551234"}, pluck="message"), ["Hi Ana"]
			)
			failed = start(sms_flow(["+442079460958"]))
		self.assertEqual(frappe.db.get_value("Flow Run", failed, "status"), "Failed")
		self.assertIn("did not accept the SMS to +442079460958", state(failed)["sms"]["error"])
		self.assertEqual(len(gateway.requests), 2)
