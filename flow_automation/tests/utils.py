"""Factories and helpers for the integration tests (real site, real MariaDB and Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import frappe
from frappe.tests.utils import FrappeTestCase

from flow_automation.portable import template_values_from_export
from flow_automation.settings import clear_settings_cache
from flow_automation.triggers import clear_trigger_cache
from flow_automation.whatsapp.accounts import clear_account_cache

TEST_EMAIL_ACCOUNT = "Flow Automation Test Outgoing"


# What the code under test may write and commit (jobs, the cron and the webhook own their
# transactions, as in production): deleted after every test, committed or not.
WRITTEN_BY_TESTS = (
	"Flow Template",
	"Flow Template Step",
	"Flow Template Version",
	"Flow Run",
	"Flow Step Log",
	"Flow Step Pending",
	"WhatsApp Account",
	"WhatsApp Message",
	"WhatsApp Template",
	"WhatsApp Conversation",
	"Flow Test Order",
	"ToDo",
	"Note",
	"Notification Log",
	"Email Queue",
	"Email Queue Recipient",
	"Email Unsubscribe",
	"Error Log",
	"Comment",
	"Communication",
	"File",
	"Contact",
	"Contact Phone",
	"Contact Email",
	"Version",
)


def table_rows() -> dict[str, set[str]]:
	"""The names of every row of `WRITTEN_BY_TESTS` now (what a test's clean-up keeps)."""
	return {
		doctype: set(frappe.db.sql_list(f"select name from `tab{doctype}`"))
		for doctype in WRITTEN_BY_TESTS
		if frappe.db.table_exists(doctype)
	}


def delete_rows_added_since(before: dict[str, set[str]]) -> None:
	"""Remove every row of `WRITTEN_BY_TESTS` not in `before`, and the caches built on them.

	By name, not by time: tests travel in time (freeze_time) and their rows with them.
	"""
	frappe.db.rollback()
	for doctype, kept in before.items():
		added = [name for name in frappe.db.sql_list(f"select name from `tab{doctype}`") if name not in kept]
		for start in range(0, len(added), 500):
			frappe.db.sql(f"delete from `tab{doctype}` where name in %s", (added[start : start + 500],))
	frappe.db.commit()
	clear_trigger_cache()
	clear_account_cache()
	clear_settings_cache()


# This app's tables on the test site hold only what tests wrote: emptied once per test
# process, so rows a killed test run left behind cannot disturb this one.
OWN_TABLES = tuple(d for d in WRITTEN_BY_TESTS if d.startswith(("Flow ", "WhatsApp ")))
_slate_cleaned = False


def clean_slate() -> None:
	global _slate_cleaned
	if _slate_cleaned:
		return
	frappe.db.rollback()
	for doctype in OWN_TABLES:
		if frappe.db.table_exists(doctype):
			frappe.db.sql(f"delete from `tab{doctype}`")
	frappe.db.commit()
	_slate_cleaned = True


class FlowTestCase(FrappeTestCase):
	"""A test on a real site whose code under test may commit, as background jobs, the cron
	and the webhook do in production: whatever a test (or its class set-up) writes is deleted
	afterwards, committed or not."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		clean_slate()
		ensure_email_account()
		cls.addClassCleanup(delete_rows_added_since, table_rows())

	def setUp(self):
		super().setUp()
		self._rows_before = table_rows()
		frappe.db.rollback()  # no snapshot held over from here: the test sees what other processes commit

	def tearDown(self):
		frappe.set_user("Administrator")
		delete_rows_added_since(self._rows_before)
		super().tearDown()


def unique(prefix: str = "Test Flow") -> str:
	return f"{prefix} {frappe.generate_hash(length=8)}"


def make_template(
	steps: list[dict[str, Any]],
	*,
	name: str | None = None,
	variables: dict[str, Any] | None = None,
	trigger: dict[str, Any] | None = None,
	options: dict[str, Any] | None = None,
	enabled: bool = True,
	**fields: Any,
):
	"""Insert a Flow Template built from definition steps (the export shape)."""
	data = {
		"template_name": name or unique(),
		"enabled": enabled,
		"trigger": trigger or {"type": "Manual"},
		"options": options or {},
		"definition": {"version": 1, "variables": variables or {}, "steps": steps},
	}
	doc = frappe.get_doc({"doctype": "Flow Template", **template_values_from_export(data), **fields})
	doc.insert()
	return doc


def failing_step(step_id: str = "boom", **extra: Any) -> dict[str, Any]:
	"""A step that always fails, with bad input (it updates a ToDo that does not exist)."""
	return {
		"id": step_id,
		"kind": "update_document",
		"payload": {"target": "document", "doctype": "ToDo", "name": "nope", "fields": {"status": "Closed"}},
		**extra,
	}


def make_todo(description: str = "flow test", **fields: Any):
	return frappe.get_doc({"doctype": "ToDo", "description": description, **fields}).insert()


def ensure_email_account() -> None:
	"""frappe.sendmail needs a default outgoing account; nothing is sent (the queue is not flushed)."""
	if frappe.db.exists("Email Account", TEST_EMAIL_ACCOUNT):
		return
	frappe.get_doc(
		{
			"doctype": "Email Account",
			"email_account_name": TEST_EMAIL_ACCOUNT,
			"email_id": "flows@example.com",
			"enable_outgoing": 1,
			"default_outgoing": 1,
			"smtp_server": "127.0.0.1",
			"smtp_port": 2525,
			"password": "unused",
			"awaiting_password": 0,
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()


def state(run: str) -> dict[str, Any]:
	return json.loads(frappe.db.get_value("Flow Run", run, "step_state") or "{}")


def step_status(run: str) -> dict[str, str]:
	return {step: entry.get("status") for step, entry in state(run).items()}


def logs(run: str) -> list[Any]:
	return frappe.get_all(
		"Flow Step Log",
		filters={"run": run},
		fields=["step_id", "status", "attempt", "branch", "error", "input", "output", "duration_ms"],
		order_by="creation asc, started_at asc",
	)


def pending(run: str, status: str | None = "Pending") -> list[Any]:
	filters: dict[str, Any] = {"run": run}
	if status:
		filters["status"] = status
	return frappe.get_all(
		"Flow Step Pending",
		filters=filters,
		fields=["name", "step_id", "trigger_at", "status", "purpose", "attempt"],
		order_by="trigger_at asc",
	)


class RecordingServer:
	"""A real HTTP server on loopback that records requests and answers as told.

	`on_request(request)`, if given, runs on each recorded request before it is answered (to
	hold it, for one)."""

	def __init__(self, on_request: Callable[[dict[str, Any]], None] | None = None):
		self.requests: list[dict[str, Any]] = []
		self.responses: list[tuple[int, Any]] = []
		server = self

		class Handler(BaseHTTPRequestHandler):
			def _handle(self):
				length = int(self.headers.get("Content-Length") or 0)
				body = self.rfile.read(length) if length else b""
				request = {
					"method": self.command,
					"path": self.path,
					"headers": dict(self.headers),
					"body": body,
				}
				server.requests.append(request)
				if on_request:
					on_request(request)
				status, payload = server.responses.pop(0) if server.responses else (200, {"ok": True})
				data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
				self.send_response(status)
				self.send_header("Content-Type", "application/json")
				self.send_header("Content-Length", str(len(data)))
				self.end_headers()
				self.wfile.write(data)

			do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

			def log_message(self, *args):
				pass

		self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
		self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

	def __enter__(self) -> RecordingServer:
		self.thread.start()
		return self

	def __exit__(self, *exc) -> None:
		self.httpd.shutdown()
		self.httpd.server_close()

	def json_bodies(self) -> list[Any]:
		return [json.loads(r["body"]) if r["body"] else None for r in self.requests]


@contextmanager
def site_config(**values: Any):
	"""Temporarily set site config keys for this process."""
	old = {k: frappe.conf.get(k) for k in values}
	frappe.conf.update(values)
	try:
		yield
	finally:
		for k, v in old.items():
			if v is None:
				frappe.conf.pop(k, None)
			else:
				frappe.conf[k] = v


@contextmanager
def count_queries():
	"""Count every SQL statement sent through frappe.db.sql (exact, unlike assertQueryCount's <=)."""
	queries: list[str] = []
	original = frappe.db.__class__.sql

	def counted(self, *args, **kwargs):
		result = original(self, *args, **kwargs)
		queries.append(str(self.last_query))
		return result

	frappe.db.__class__.sql = counted
	try:
		yield queries
	finally:
		frappe.db.__class__.sql = original


TEST_DOCTYPE = "Flow Test Order"


def ensure_test_doctype() -> str:
	"""A submittable custom doctype of our own for document-event tests (created once, committed)."""
	if not frappe.db.exists("DocType", TEST_DOCTYPE):
		frappe.get_doc(
			{
				"doctype": "DocType",
				"name": TEST_DOCTYPE,
				"module": "Flow Automation",
				"custom": 1,
				"is_submittable": 1,
				"autoname": "hash",
				"fields": [
					{"fieldname": "customer_name", "fieldtype": "Data", "label": "Customer Name"},
					{
						"fieldname": "status",
						"fieldtype": "Select",
						"label": "Status",
						"options": "Open\nReplied\nClosed",
						"default": "Open",
						"allow_on_submit": 1,
					},
					{
						"fieldname": "priority",
						"fieldtype": "Select",
						"label": "Priority",
						"options": "Low\nHigh",
						"default": "Low",
					},
					{"fieldname": "mobile_no", "fieldtype": "Data", "label": "Mobile"},
					{"fieldname": "contact_email", "fieldtype": "Data", "label": "Email"},
					{"fieldname": "due_date", "fieldtype": "Date", "label": "Due Date"},
					{"fieldname": "grand_total", "fieldtype": "Currency", "label": "Grand Total"},
				],
				"permissions": [
					{
						"role": "System Manager",
						"read": 1,
						"write": 1,
						"create": 1,
						"submit": 1,
						"cancel": 1,
						"delete": 1,
					}
				],
			}
		).insert(ignore_permissions=True)
		frappe.db.commit()
	return TEST_DOCTYPE


def make_order(**fields: Any):
	return frappe.get_doc({"doctype": ensure_test_doctype(), "customer_name": "ACME", **fields}).insert()


def runs_of(template: str, **filters: Any) -> list[Any]:
	return frappe.get_all(
		"Flow Run",
		filters={"template": template, **filters},
		fields=["name", "status", "trigger_event", "reference_name", "trigger_data", "depth"],
		order_by="creation asc",
	)


def bench_command(*args: str) -> subprocess.CompletedProcess:
	"""`bench --site <this site> ...` as a user runs it: a separate process through Frappe's CLI."""
	return subprocess.run(
		[sys.executable, "-m", "frappe.utils.bench_helper", "frappe", "--site", frappe.local.site, *args],
		cwd=os.path.abspath(frappe.local.sites_path),
		capture_output=True,
		text=True,
		timeout=300,
	)
