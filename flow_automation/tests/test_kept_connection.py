"""The webhook's database connection, kept open between requests (`kept_connection`): through
Frappe's real request path, with MariaDB's own connection ids as the witness."""

from __future__ import annotations

import time
from contextlib import contextmanager
from unittest.mock import patch

import frappe
from frappe.database import get_db

from flow_automation import kept_connection
from flow_automation.tests.test_whatsapp_webhook import WebhookCase


def kept() -> list[int]:
	"""MariaDB's ids of the connections this process keeps for the test site."""
	pool = kept_connection._kept.get((frappe.local.site, frappe.conf.db_name), [])
	return [conn.thread_id() for _, conn in pool]


def open_connections() -> set[int]:
	return set(frappe.db.sql_list("select id from information_schema.processlist"))


def site_db():
	"""A `frappe.db` of its own for the test site, as `frappe.connect` makes one."""
	conf = frappe.conf
	return get_db(
		socket=conf.db_socket,
		host=conf.db_host,
		port=conf.db_port,
		user=conf.db_user or conf.db_name,
		password=conf.db_password,
		cur_db_name=conf.db_name,
	)


@contextmanager
def as_frappe_db(db):
	saved = frappe.local.db
	frappe.local.db = db
	try:
		yield db
	finally:
		frappe.local.db = saved


class TestKeptConnection(WebhookCase):
	def setUp(self):
		super().setUp()
		kept_connection.forget()

	def tearDown(self):
		kept_connection.forget()
		super().tearDown()

	def stored(self, *message_ids: str) -> int:
		frappe.db.rollback()  # see what the requests committed
		return frappe.db.count("WhatsApp Message", {"wamid": ("in", message_ids)})

	def test_the_next_delivery_takes_up_the_connection_the_last_one_left(self):
		first = self.deliver("one")
		[connection] = kept()
		second = self.deliver("two")
		third = self.deliver("three")
		self.assertEqual(kept(), [connection], "taken up and handed back, not a new one")
		self.assertEqual(self.stored(first, second, third), 3, "each committed")
		self.assertIn(connection, open_connections())

	def test_a_connection_the_server_closed_is_not_taken_up(self):
		self.deliver("one")
		[connection] = kept()
		frappe.db.sql(f"kill {int(connection)}")
		for _ in range(100):  # until MariaDB has closed it
			if connection not in open_connections():
				break
			time.sleep(0.05)
		second = self.deliver("two")
		self.assertEqual(self.stored(second), 1)
		[new] = kept()
		self.assertNotEqual(new, connection)

	def test_a_connection_idle_too_long_is_closed_not_taken_up(self):
		self.deliver("one")
		[connection] = kept()
		with patch.object(kept_connection, "IDLE_SECONDS", 0):
			second = self.deliver("two")
		self.assertEqual(self.stored(second), 1)
		self.assertNotEqual(kept(), [connection])
		self.assertNotIn(connection, open_connections(), "closed, not left open")

	def test_a_connection_is_kept_only_when_nothing_ran_after_its_last_commit(self):
		db = site_db()
		with as_frappe_db(db):
			db.sql("select 1")
			kept_connection._keep()
			self.assertIsNotNone(db._conn, "a statement after the last commit: not kept")
			self.assertEqual(kept(), [])
			connection = db._conn.thread_id()
			db.commit()
			kept_connection._keep()
			self.assertIsNone(db._conn, "handed back")
			self.assertEqual(kept(), [connection])

	def test_what_counts_as_a_clean_end(self):
		clean = ("START TRANSACTION", "start transaction ", "START TRANSACTION /* FRAPPE_TRACE_ID: abc */")
		for statement in clean:
			self.assertTrue(kept_connection._ends_clean(statement), statement)
		for statement in ("START TRANSACTION READ ONLY", "insert into `tabNote` values (1)", "commit", None):
			self.assertFalse(kept_connection._ends_clean(statement), statement)

	def test_a_process_keeps_at_most_its_pool_size_per_site(self):
		dbs = [site_db(), site_db()]
		ids = []
		with patch.object(kept_connection, "POOL_SIZE", 1):
			for db in dbs:
				with as_frappe_db(db):
					db.commit()
					ids.append(db._conn.thread_id())
					kept_connection._keep()
		self.assertEqual(kept(), [ids[1]], "the newest is kept")
		for _ in range(100):
			if ids[0] not in open_connections():
				break
			time.sleep(0.05)
		self.assertNotIn(ids[0], open_connections(), "the other is closed")
