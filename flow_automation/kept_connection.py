"""A database connection the WhatsApp webhook keeps open between requests, per process and site.

Frappe opens a new MariaDB connection in every request that runs a query and closes it when
the request ends. For Meta's webhook, a stream of small signed POSTs that each insert a row
or two, opening that connection (TCP, handshake, authentication, on both sides) was the
largest single cost of the request: by py-spy, 12 % of a web worker's time under load
(`benchmarks/webhook.py`, where keeping it took the webhook from 0.73 to 0.85-0.89 of
Frappe's own ping). So the webhook hands its connection back to this process when the
response has been sent, and the next delivery to the same site takes it up again:

- only a connection whose last statement was the `START TRANSACTION` Frappe issues after
  every commit and rollback is kept, so nothing written and not committed is ever carried
  into another request;
- a connection idle for IDLE_SECONDS is closed, not reused, as is one whose socket shows the
  server has closed it (restarted, killed the connection, timed it out);
- at most POOL_SIZE per site and process (threaded workers each take their own).

Nothing else in Frappe changes: the request's `frappe.db` is the usual object, it merely
starts with a connection instead of opening one at its first query.
"""

from __future__ import annotations

import select
import time
from typing import Any

import frappe

IDLE_SECONDS = 30
POOL_SIZE = 4

# (site, database) -> connections left by earlier requests, each with when it was left
_kept: dict[tuple[str, str], list[tuple[float, Any]]] = {}


def reuse() -> bool:
	"""Give this request's `frappe.db` a connection an earlier request of this process kept
	(if it has none yet), and keep its connection for the next once the response is sent.
	True when a kept connection was taken. Outside a web request nothing changes."""
	request = getattr(frappe.local, "request", None)
	after_response = getattr(request, "after_response", None)
	db = getattr(frappe.local, "db", None)
	if after_response is None or db is None:
		return False
	after_response.add(_keep)
	if db._conn is not None:
		return False
	pool = _kept.get(_key(db))
	now = time.monotonic()
	while pool:
		try:
			left_at, conn = pool.pop()
		except IndexError:  # another thread took the last one
			break
		if now - left_at < IDLE_SECONDS and _alive(conn):
			db._conn, db._cursor = conn, conn.cursor()
			return True
		_close(conn)
	return False


def _keep() -> None:
	# after the response: the request's transaction has been committed or rolled back
	db = getattr(frappe.local, "db", None)
	conn = getattr(db, "_conn", None)
	if conn is None:
		return
	if not _ends_clean(getattr(db, "last_query", None)):
		return  # something ran after the last commit or rollback: Frappe closes it as usual
	db._conn = db._cursor = None
	now = time.monotonic()
	pool = _kept.setdefault(_key(db), [])
	pool.append((now, conn))
	for other in list(_kept.values()):  # close what no request took up in time, for every site
		for item in list(other):
			if now - item[0] >= IDLE_SECONDS or len(other) > POOL_SIZE:
				try:
					other.remove(item)
				except ValueError:
					continue
				_close(item[1])


def _ends_clean(last_query: Any) -> bool:
	# Frappe's `begin()` after a commit or rollback, as the last statement: a plain
	# `START TRANSACTION` (not READ ONLY), with the trace id Frappe may append
	statement = str(last_query or "").split("/*", 1)[0]
	return " ".join(statement.split()).upper() == "START TRANSACTION"


def _key(db: Any) -> tuple[str, str]:
	return (frappe.local.site, db.cur_db_name or "")


def _alive(conn: Any) -> bool:
	# the server sends nothing to an idle connection unless it is closing it: a readable socket
	# means an error packet or the end of the stream
	sock = getattr(conn, "_sock", None)
	if sock is None:
		return False
	try:
		poller = select.poll()
		poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
		return not poller.poll(0)
	except (OSError, ValueError):
		return False


def _close(conn: Any) -> None:
	try:
		conn.close()
	except Exception:
		pass  # already closed by the server, or its socket is gone


def forget() -> None:
	"""Close every connection this process keeps (tests, and a site's database moving)."""
	for pool in list(_kept.values()):
		while pool:
			_close(pool.pop()[1])
