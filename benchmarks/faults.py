"""Faults against the real site and real processes: is anything lost, is anything done twice?

Run with the bench's Python (the script re-execs itself with it):

	FRAPPE_BENCH=/opt/frappe-bench $FRAPPE_BENCH/env/bin/python benchmarks/faults.py [scenario ...]

$FRAPPE_TEST_SITE picks the site (default test_site). Scenarios (all by default, in this order):

redis_down    The site's processes (gunicorn, 2 RQ workers on `default,short`, a cron) use two
              private redis-servers on loopback ports, one as redis_queue and one as
              redis_cache (FRAPPE_REDIS_QUEUE / FRAPPE_REDIS_CACHE: Frappe reads them before the
              site config); the bench's own Redis is not touched. With both killed, Notes are
              saved through /api/resource (a Document Event template makes a ToDo for each) and
              signed WhatsApp deliveries are posted to the webhook (a keyword template answers
              each with a text message, through a WhatsApp Account on a loopback Graph API at
              5 messages/s). Then the queue comes back while the cache stays down (sends must
              not go out: pacing cannot count), then the cache. The cron is the minute cron's
              three sweeps restricted to this scenario's templates and account (Queued runs,
              Pending inbound messages, due timers), so other sessions' rows are left alone.
db_kill       Runs whose delayed first step (a Note) is followed by an HTTP call to a loopback
              server; on each run's first call the server KILLs the worker's MariaDB connection
              (found through /proc and information_schema.processlist), then answers. Leases of
              15 s on the benchmark clock run out for real; the cron claims the rows again.
whatsapp_kill Runs whose delayed first step sends a WhatsApp template (the loopback Graph API
              answers after 0.8 s), then make a Note; workers are SIGKILLed (with their work
              horse) while a send is in flight or just after it. Leases as in db_kill.
clock_jump    300 runs with four parallel delays (1 h, 2 h, 5 h, 20 h, defined out of order), a
              chained delay (30 min after the 2 h one) and an HTTP step that fails twice (retry
              backoff 600 s); the cron (`run_due(now, inline=True)`, as `bench ... run-due`)
              then sees the benchmark clock jump 26 hours at once, and later 1 hour more.
event_flood   One Note saved 1,000 times by 8 processes as fast as they can (each save loads
              the Note FOR UPDATE, changes `content`, saves, commits) while a Value Change
              template with one active run per document updates that Note and calls a slow
              loopback server.

Rows are due, and crons claim, on a benchmark clock in the 20th century (see _site.py): other
sessions' rows are never claimed here; a row of ours is due for a cron on the real clock from
its insert to its claim, and (db_kill, whatsapp_kill) while a short lease holds it. Workers and
crons use private RQ queues (redis_down: private Redis servers). Everything made is deleted at
the end. Prints one line per scenario and, last, `scenarios=<n> lost=<n> duplicated=<n>`;
asserts nothing.

lost: something that should have happened and did not (a save without its run, a delivery not
stored or not processed, a run not Completed, a timer not fired); duplicated: something done
twice (a run, a document, a WhatsApp message per run and step, a timer fired twice, two active
runs of one document at once). A send interrupted in flight is not sent again (it may have
reached Meta): its run fails saying so; such runs are counted as `uncertain`, not lost.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

ENTRY = os.path.abspath(__file__)
SCENARIOS = ("redis_down", "db_kill", "whatsapp_kill", "clock_jump", "event_flood")
INTERRUPTED = "stopped while talking to WhatsApp"  # outbound.py's error for an interrupted send


# --- loopback servers ---------------------------------------------------------------------------


class Receiver:
	"""An HTTP server on loopback standing in for a webhook target. Records every request's
	Idempotency-Key, arrival time and client port; `behave(key, port, repeat)` returns
	(status, seconds to wait before answering)."""

	def __init__(self, behave=None):
		self.lock = threading.Lock()
		self.keys: collections.Counter[str] = collections.Counter()
		self.arrivals: list[tuple[str, float, int]] = []
		self.behave = behave or (lambda key, port, repeat: (200, 0.0))
		server = self

		class Handler(BaseHTTPRequestHandler):
			def do_POST(self):
				length = int(self.headers.get("Content-Length") or 0)
				if length:
					self.rfile.read(length)
				key = self.headers.get("Idempotency-Key") or ""
				port = self.client_address[1]
				with server.lock:
					repeat = key in server.keys
					server.keys[key] += 1
					server.arrivals.append((key, time.time(), port))
				status, delay = server.behave(key, port, repeat)
				time.sleep(delay)
				data = b'{"ok": true}'
				with contextlib.suppress(OSError):
					self.send_response(status)
					self.send_header("Content-Type", "application/json")
					self.send_header("Content-Length", str(len(data)))
					self.end_headers()
					self.wfile.write(data)

			def log_message(self, *args):
				pass

		self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		self.httpd.daemon_threads = True
		self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
		threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

	def close(self) -> None:
		self.httpd.shutdown()
		self.httpd.server_close()


def watched_graph(delay: float = 0.0):
	"""The app's loopback Graph API (FakeGraphAPI), also noting for every message send its
	arrival time and client port, and answering sends after `delay` seconds."""
	from http.server import ThreadingHTTPServer as Server

	from flow_automation.channels.whatsapp import FakeGraphAPI
	from flow_automation.channels.whatsapp.fake_graph import _make_handler

	class WatchedGraph(FakeGraphAPI):
		def __init__(self):
			super().__init__()
			self.sends: list[dict[str, Any]] = []
			self.local = threading.local()

		def start(self):
			if self._server is None:
				graph = self

				class Handler(_make_handler(self)):
					def _handle(self):
						graph.local.port = self.client_address[1]
						super()._handle()

				self._server = Server(self._address, Handler)
				self._server.daemon_threads = True
				self._thread = threading.Thread(
					target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
				)
				self._thread.start()
			return self

		def _record(self, request):
			super()._record(request)
			body = request.json if isinstance(request.json, dict) else {}
			if request.path.endswith("/messages") and body.get("status") != "read":
				with self._lock:
					self.sends.append(
						{
							"t": time.time(),
							"port": getattr(self.local, "port", 0),
							"to": body.get("to"),
							"callback": body.get("biz_opaque_callback_data") or "",
						}
					)
				time.sleep(delay)

	return WatchedGraph().start()


def sends_per_step(graph) -> collections.Counter:
	"""Message sends per `run=...;step=...` (what the app puts in biz_opaque_callback_data)."""
	return collections.Counter(s["callback"] for s in graph.sends if s["callback"])


# --- fixtures -------------------------------------------------------------------------------------


def make_account(frappe, prefix: str, base_url: str, rate: int) -> dict[str, Any]:
	from flow_automation.whatsapp import accounts

	secret = hashlib.sha1(prefix.encode()).hexdigest()
	phone_number_id = "9" + str(int(hashlib.sha1(prefix.encode()).hexdigest(), 16))[:14]
	doc = frappe.get_doc(
		{
			"doctype": "WhatsApp Account",
			"account_name": f"{prefix} WA",
			"enabled": 1,
			"is_default": 0,
			"phone_number_id": phone_number_id,
			"waba_id": phone_number_id[::-1],
			"access_token": "fault-token",
			"app_secret": secret,
			"verify_token": prefix,
			"base_url": base_url,
			"messages_per_second": rate,
			"recipient_gap_seconds": 0,
			"download_media": 0,
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	accounts.clear_account_cache()
	return {"name": doc.name, "phone_number_id": phone_number_id, "secret": secret}


def numbers(count: int) -> list[str]:
	"""Fictional US numbers (555-01xx range style) unique to this benchmark run."""
	base = random.randrange(10**4) * 10**3
	return [f"+1555{(base + i) % 10**7:07d}" for i in range(count)]


def delete_whatsapp(frappe, account: str | None, contacts: list[str]) -> None:
	from flow_automation.whatsapp import accounts

	if account:
		frappe.db.delete("WhatsApp Message", {"account": account})
		if frappe.db.exists("WhatsApp Account", account):
			frappe.delete_doc("WhatsApp Account", account, force=True, ignore_permissions=True)
	for start in range(0, len(contacts), 500):
		frappe.db.delete("WhatsApp Conversation", {"name": ("in", contacts[start : start + 500])})
	frappe.db.commit()
	accounts.clear_account_cache()


def delete_notes(frappe, prefix: str) -> None:
	notes = frappe.get_all("Note", filters={"title": ("like", f"{prefix}%")}, pluck="name")
	for start in range(0, len(notes), 500):
		batch = notes[start : start + 500]
		frappe.db.delete("Note Seen By", {"parenttype": "Note", "parent": ("in", batch)})
		frappe.db.delete("Version", {"ref_doctype": "Note", "docname": ("in", batch)})
		frappe.db.delete("Note", {"name": ("in", batch)})
	todos = frappe.get_all("ToDo", filters={"description": ("like", f"{prefix}%")}, pluck="name")
	for start in range(0, len(todos), 500):
		frappe.db.delete("ToDo", {"name": ("in", todos[start : start + 500])})
	frappe.db.commit()


def note_counts(frappe, prefix: str) -> collections.Counter:
	frappe.db.rollback()
	return collections.Counter(
		dict(
			frappe.db.sql(
				"select title, count(*) from `tabNote` where title like %s group by title", f"{prefix}%"
			)
		)
	)


def run_statuses(frappe, template: str) -> collections.Counter:
	frappe.db.rollback()
	return collections.Counter(
		dict(
			frappe.db.sql(
				"select status, count(*) from `tabFlow Run` where template = %s group by status", template
			)
		)
	)


def row_statuses(frappe, template: str) -> collections.Counter:
	frappe.db.rollback()
	return collections.Counter(
		dict(
			frappe.db.sql(
				"select status, count(*) from `tabFlow Step Pending` where template = %s group by status",
				template,
			)
		)
	)


def wait_until(check, timeout: float, interval: float = 0.5) -> bool:
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		if check():
			return True
		time.sleep(interval)
	return bool(check())


def start_due_runs(
	frappe, template: str, count: int, offset: float, spread_s: float, **variables
) -> list[str]:
	"""Runs whose first step (after_delay 1 minute) comes due on the benchmark clock one after
	another over `spread_s` seconds from now (so the cron claims a few at a time)."""
	from frappe.utils import add_to_date

	from flow_automation import runtime

	runs = []
	for i in range(count):
		name = runtime.start_run(
			template,
			advance="none",
			variables={k: v[i] if isinstance(v, list) else v for k, v in variables.items()},
		)
		at = add_to_date(_site.bench_now(offset), minutes=-1, seconds=spread_s * i / max(count, 1))
		runtime.advance_run(name, now=at)
		runs.append(name)
	frappe.db.commit()
	return runs


class Bench:
	"""What the scenarios share: the site connection, a prefix, a private queue, processes."""

	def __init__(self, frappe):
		self.frappe = frappe
		self.prefix = _site.unique_prefix("faults")
		self.queue = _site.queue_name("faults")
		self.tmp = tempfile.mkdtemp(prefix="flow-faults-")
		self.procs = _site.Processes(self.tmp)
		self.templates: list[str] = []
		self.accounts: list[str] = []
		self.contacts: list[str] = []
		self.servers: list[Any] = []
		self.redis: list[_site.RedisServer] = []

	def template(self, suffix: str, steps: list[dict], trigger: dict | None = None, **fields) -> str:
		name = _site.make_template(f"{self.prefix} {suffix}", steps, trigger, **fields).name
		self.templates.append(name)
		self.frappe.db.commit()
		return name

	def file(self, name: str) -> str:
		return os.path.join(self.tmp, name)

	def stop_processes(self) -> None:
		self.procs.stop_all()
		self.procs = _site.Processes(self.tmp)

	def cleanup(self) -> int:
		frappe = self.frappe
		self.procs.stop_all()
		alive = self.procs.alive()
		for server in self.servers:
			with contextlib.suppress(Exception):
				server.close() if hasattr(server, "close") else server.stop()
		for server in self.redis:
			server.stop()
		with contextlib.suppress(Exception):
			_site.purge_queue(self.queue)
		frappe.db.rollback()
		delete_notes(frappe, self.prefix)
		for account in self.accounts:
			delete_whatsapp(frappe, account, [])
		delete_whatsapp(frappe, None, self.contacts)
		_site.delete_templates(self.templates)
		return alive


# --- 1. Redis down --------------------------------------------------------------------------------

SAVES = 20
DELIVERIES = 40  # keyword messages: each starts a run that answers
PLAIN = 10  # messages no flow answers: they wait for the processing job, or the sweep
RATE = 5  # the scenario's WhatsApp Account: messages per second


def delivery(number: str, text: str, phone_number_id: str) -> tuple[str, bytes]:
	wamid = f"wamid.FAULTS.{random.randrange(10**12)}.{number.lstrip('+')}"
	body = {
		"object": "whatsapp_business_account",
		"entry": [
			{
				"id": "0",
				"changes": [
					{
						"field": "messages",
						"value": {
							"messaging_product": "whatsapp",
							"metadata": {
								"display_phone_number": "15550000000",
								"phone_number_id": phone_number_id,
							},
							"contacts": [{"profile": {"name": "Fault"}, "wa_id": number.lstrip("+")}],
							"messages": [
								{
									"from": number.lstrip("+"),
									"id": wamid,
									"timestamp": str(int(time.time())),
									"type": "text",
									"text": {"body": text},
								}
							],
						},
					}
				],
			}
		],
	}
	return wamid, json.dumps(body).encode()


def scenario_redis_down(b: Bench) -> dict[str, Any]:
	import requests

	from flow_automation.channels.whatsapp import sign

	frappe = b.frappe
	queue_redis = _site.RedisServer(b.tmp, "queue").start()
	cache_redis = _site.RedisServer(b.tmp, "cache").start()
	b.redis += [queue_redis, cache_redis]
	env = _site.RedisServer.env(queue=queue_redis, cache=cache_redis)
	graph = watched_graph()
	b.servers.append(graph)
	account = make_account(frappe, b.prefix, graph.base_url, RATE)
	b.accounts.append(account["name"])
	keyword = f"ping{frappe.generate_hash(length=6)}"
	docs = b.template(
		"docs",
		[
			{
				"id": "todo",
				"kind": "create_document",
				"payload": {"doctype": "ToDo", "fields": {"description": f"{b.prefix} {{{{ run.name }}}}"}},
			}
		],
		{
			"type": "Document Event",
			"doctype": "Note",
			"event": "New",
			"condition": {"field": "doc.title", "op": "starts_with", "value": f"{b.prefix} "},
		},
	)
	replies = b.template(
		"replies",
		[
			{
				"id": "reply",
				"kind": "send_whatsapp",
				"payload": {
					"to": "{{ contact.number }}",
					"mode": "text",
					"text": "pong",
					"account": account["name"],
				},
				"retry": {"max_attempts": 25, "backoff_seconds": 4, "max_backoff_seconds": 4},
			}
		],
		{"type": "WhatsApp Message", "keywords": [keyword], "account": account["name"]},
	)
	contacts = numbers(DELIVERIES + PLAIN + 1)
	b.contacts += contacts

	port = _site.free_port()
	base = f"http://127.0.0.1:{port}"
	b.procs.gunicorn(port, "gunicorn.log", **env)
	permits = b.file("rd-permits.log")
	for i in range(2):
		b.procs.start(
			[_site.PYTHON, ENTRY, "worker", "default,short"],
			f"rd-worker{i}.log",
			FLOW_BENCH_PERMIT_LOG=permits,
			**env,
		)
	stop_cron = b.file("rd-cron.stop")
	b.procs.start(
		[
			_site.PYTHON,
			ENTRY,
			"cron",
			stop_cron,
			f"{docs},{replies}",
			account["name"],
			b.file("rd-cron.json"),
		],
		"rd-cron.log",
		**env,
	)
	if not _site.wait_http(base + "/api/method/ping", Host=_site.SITE):
		raise SystemExit("gunicorn did not answer /api/method/ping")
	session = requests.Session()
	session.headers["Host"] = _site.SITE
	session.post(base + "/api/method/login", data={"usr": "Administrator", "pwd": "admin"}, timeout=30)

	latencies: list[float] = []

	def save(i: int) -> int:
		t = time.monotonic()
		try:
			return session.post(
				base + "/api/resource/Note",
				json={"title": f"{b.prefix} note {i}", "content": "x"},
				timeout=60,
			).status_code
		except requests.RequestException:
			return 0
		finally:
			latencies.append(time.monotonic() - t)

	def post(i: int, text: str = keyword) -> tuple[str, int]:
		wamid, raw = delivery(contacts[i], text, account["phone_number_id"])
		headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, account["secret"])}
		t = time.monotonic()
		try:
			return wamid, session.post(
				base + "/api/method/flow_automation.whatsapp.api.webhook",
				data=raw,
				headers=headers,
				timeout=60,
			).status_code
		except requests.RequestException:
			return wamid, 0
		finally:
			latencies.append(time.monotonic() - t)

	# warm-up with Redis up: every process has its connections and caches
	warm = [save(0), post(DELIVERIES)[1]]
	wait_until(lambda: run_statuses(frappe, docs).get("Completed", 0) >= 1, 60)
	wait_until(lambda: run_statuses(frappe, replies).get("Completed", 0) >= 1, 60)

	# both Redis servers die
	latencies.clear()
	queue_redis.stop()
	cache_redis.stop()
	started = time.monotonic()
	saved = [save(i) for i in range(1, SAVES + 1)]
	posted = [post(i) for i in range(DELIVERIES)]
	plain = [post(DELIVERIES + 1 + i, f"hello {i}") for i in range(PLAIN)]
	down_s = time.monotonic() - started
	frappe.db.rollback()
	wamids = [w for w, status in posted if status == 200]
	plain_wamids = [w for w, status in plain if status == 200]
	queued_while_down = run_statuses(frappe, docs).get("Queued", 0)
	stored_while_down = frappe.db.count("WhatsApp Message", {"wamid": ("in", wamids + plain_wamids or [""])})
	# the messages no flow answers wait for a processing job that could not be queued
	unprocessed_while_down = frappe.db.count(
		"WhatsApp Message", {"wamid": ("in", plain_wamids or [""]), "processing_status": "Pending"}
	)

	# the queue comes back, the cache does not: runs start, messages are processed, nothing is sent
	sends_before = len(graph.sends)
	queue_redis.start()
	wait_until(
		lambda: run_statuses(frappe, docs).get("Completed", 0) >= 1 + saved.count(200)
		and frappe.db.count(
			"WhatsApp Message", {"wamid": ("in", wamids or [""]), "processing_status": "Done"}
		)
		== len(wamids),
		90,
	)
	time.sleep(8)  # sends attempted, throttled, retried at least once
	sent_while_cache_down = len(graph.sends) - sends_before
	throttled = frappe.db.count(
		"Flow Step Log", {"template": replies, "status": ("!=", "Success"), "error": ("like", "%Redis%")}
	)

	# the cache comes back: the retries go out, paced
	cache_sends_from = len(graph.sends)
	cache_redis.start()
	expected_replies = 1 + len(wamids)
	wait_until(lambda: run_statuses(frappe, replies).get("Completed", 0) >= expected_replies, 120)
	wait_until(lambda: run_statuses(frappe, docs).get("Completed", 0) >= 1 + saved.count(200), 30)
	open(stop_cron, "w").close()
	with contextlib.suppress(Exception):
		session.post(base + "/api/method/logout", timeout=10)
	wait_until(lambda: os.path.exists(b.file("rd-cron.json")), 30)
	cron = json.load(open(b.file("rd-cron.json"))) if os.path.exists(b.file("rd-cron.json")) else {}

	frappe.db.rollback()
	per_second = collections.Counter(int(s["t"]) for s in graph.sends[cache_sends_from:])
	max_per_s = max(per_second.values(), default=0)
	with open(permits) if os.path.exists(permits) else contextlib.nullcontext([]) as f:
		permitted = collections.Counter(int(float(t)) for t in f if t.strip())
	doc_runs = collections.Counter(
		dict(
			frappe.db.sql(
				"select reference_name, count(*) from `tabFlow Run` where template = %s group by reference_name",
				docs,
			)
		)
	)
	notes = frappe.get_all("Note", filters={"title": ("like", f"{b.prefix} note %")}, pluck="name")
	todos = collections.Counter(
		t.split(" ")[-1]
		for t in frappe.get_all(
			"ToDo", filters={"description": ("like", f"{b.prefix} %")}, pluck="description"
		)
	)
	doc_completed = run_statuses(frappe, docs).get("Completed", 0)
	reply_runs = frappe.get_all(
		"Flow Run", filters={"template": replies}, fields=["name", "status", "contact"], limit=0
	)
	runs_per_contact = collections.Counter(r.contact for r in reply_runs)
	sent = sends_per_step(graph)
	inbound = frappe.get_all(
		"WhatsApp Message",
		filters={"wamid": ("in", wamids + plain_wamids or [""])},
		fields=["processing_status"],
		limit=0,
	)
	lost = (
		sum(1 for n in notes if doc_runs.get(n, 0) == 0)  # a saved Note without its run
		+ (len(notes) - doc_completed)  # runs not Completed
		+ sum(
			1
			for r in frappe.get_all("Flow Run", filters={"template": docs}, pluck="name")
			if not todos.get(r)
		)
		+ (len(wamids) + len(plain_wamids) - len(inbound))  # acknowledged, not stored
		+ sum(1 for m in inbound if m.processing_status != "Done")
		+ (expected_replies - len(reply_runs))  # a processed message without its run
		+ sum(1 for r in reply_runs if r.status != "Completed")
		+ sum(1 for r in reply_runs if r.status == "Completed" and not sent.get(f"run={r.name};step=reply"))
	)
	duplicated = (
		sum(n - 1 for n in doc_runs.values() if n > 1)
		+ sum(n - 1 for n in todos.values() if n > 1)
		+ sum(n - 1 for n in runs_per_contact.values() if n > 1)
		+ sum(n - 1 for n in sent.values() if n > 1)
	)
	return {
		"saves": len(saved),
		"save_errors": sum(1 for s in saved if s != 200),
		"webhooks": len(posted) + len(plain),
		"webhook_non_200": sum(1 for _w, s in posted + plain if s != 200),
		"down_s": round(down_s, 1),
		"queued_while_down": queued_while_down,
		"stored_while_down": stored_while_down,
		"unprocessed_while_down": unprocessed_while_down,
		"sent_while_cache_down": sent_while_cache_down,
		"throttled_attempts": throttled,
		"max_sends_per_s": max_per_s,
		"max_permits_per_s": max(permitted.values(), default=0),
		"rate": RATE,
		"warmup_ok": int(warm == [200, 200]),
		"slowest_request_s": round(max(latencies, default=0), 1),
		"cron_kicks": cron.get("kicked"),
		"cron_processed": cron.get("processed"),
		"cron_claimed": cron.get("claimed"),
		"runs": len(notes) + len(reply_runs),
		"lost": lost,
		"duplicated": duplicated,
	}


def cron_main(stop_file: str, templates: str, account: str, out_file: str) -> None:
	"""The minute cron's sweeps for this scenario's templates and account only, every second:
	Queued runs are kicked (drain_outbox), Pending inbound messages processed (routing.drain),
	due timers claimed and handed to fire jobs (run_due; on the real clock, but only our rows)."""
	import frappe

	ours = tuple(templates.split(","))
	calls = errors = kicked = processed = claimed = 0
	while not os.path.exists(stop_file):
		try:
			_site.connect()
			from frappe.utils import add_to_date, now_datetime

			from flow_automation.runtime import enqueue_start
			from flow_automation.transaction import enqueue
			from flow_automation.whatsapp import routing

			now = now_datetime()
			for run in frappe.get_all(
				"Flow Run",
				filters={
					"template": ("in", ours),
					"status": "Queued",
					"creation": ("<=", add_to_date(now, seconds=-3)),
				},
				pluck="name",
			):
				enqueue_start(run)
				kicked += 1
			for name in frappe.get_all(
				"WhatsApp Message",
				filters={
					"account": account,
					"direction": "Inbound",
					"processing_status": "Pending",
					"creation": ("<=", add_to_date(now, seconds=-3)),
				},
				order_by="creation asc",
				pluck="name",
			):
				routing.process_message(name)
				processed += 1
			frappe.db.commit()
			rows = frappe.db.sql(
				"""select name, run from `tabFlow Step Pending`
				where template in %(ours)s and status = 'Pending' and trigger_at <= %(now)s
				order by trigger_at limit 200 for update skip locked""",
				{"ours": ours, "now": now},
				as_dict=True,
			)
			if rows:
				frappe.db.sql(
					"""update `tabFlow Step Pending` set status = 'Running', attempt = attempt + 1,
					lease_until = %(lease)s where name in %(names)s""",
					{"lease": add_to_date(now, seconds=600), "names": tuple(r.name for r in rows)},
				)
				frappe.db.commit()
				by_run = collections.defaultdict(list)
				for row in rows:
					by_run[row.run].append(row.name)
				batches = list(by_run.items())
				for start in range(0, len(batches), 100):  # as run_due: up to 100 runs a job
					enqueue(
						"flow_automation.scheduler.fire_due_many",
						job_id=f"faults:fire:{batches[start][1][0]}:{time.time()}",
						batch=batches[start : start + 100],
					)
				claimed += len(rows)
			frappe.db.commit()
			calls += 1
		except Exception as e:
			errors += 1
			print(f"cron failed: {type(e).__name__}: {e}", flush=True)
		finally:
			frappe.destroy()
		time.sleep(1)
	with open(out_file, "w") as f:
		json.dump(
			{"calls": calls, "errors": errors, "kicked": kicked, "processed": processed, "claimed": claimed},
			f,
		)


def worker_main(queues: str) -> None:
	"""An RQ worker on Frappe's standard queues of a private Redis (FRAPPE_REDIS_QUEUE).

	With FLOW_BENCH_PERMIT_LOG, the moment pacing lets each send go is appended to that file
	(the rate as the pacing sees it; the Graph API sees each send a few milliseconds later)."""
	import frappe
	from frappe.utils.background_jobs import start_worker

	os.chdir(_site.SITES)
	if os.environ.get("FLOW_BENCH_PERMIT_LOG"):
		from flow_automation.whatsapp import pacing

		wait_for_turn = pacing.wait_for_turn

		def logged(*args, **kwargs):
			waited = wait_for_turn(*args, **kwargs)
			with open(os.environ["FLOW_BENCH_PERMIT_LOG"], "a") as f:
				f.write(f"{time.time()}\n")
			return waited

		pacing.wait_for_turn = logged
	start_worker(queue=queues, quiet=True)
	frappe.destroy()


# --- 2. the database connection is killed mid-advance -------------------------------------------


def db_connections(pid: int) -> list[int]:
	"""Local ports of `pid`'s TCP connections to MariaDB (port 3306)."""
	inodes = set()
	try:
		for fd in os.listdir(f"/proc/{pid}/fd"):
			with contextlib.suppress(OSError):
				target = os.readlink(f"/proc/{pid}/fd/{fd}")
				if target.startswith("socket:["):
					inodes.add(target[8:-1])
	except OSError:
		return []
	ports = []
	with open("/proc/net/tcp") as f:
		for line in f.readlines()[1:]:
			parts = line.split()
			if int(parts[2].split(":")[1], 16) == 3306 and parts[9] in inodes:
				ports.append(int(parts[1].split(":")[1], 16))
	return ports


def kill_connections(ports: list[int]) -> int:
	"""KILL the MariaDB connections whose client side is one of these local ports."""
	import pymysql

	killed = 0
	admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
	try:
		with admin.cursor() as cursor:
			for port in ports:
				cursor.execute(
					"select id from information_schema.processlist where host like %s", (f"%:{port}",)
				)
				for (conn_id,) in cursor.fetchall():
					with contextlib.suppress(pymysql.MySQLError):
						cursor.execute(f"kill connection {int(conn_id)}")
						killed += 1
	finally:
		admin.close()
	return killed


def scenario_db_kill(b: Bench, runs_wanted: int = 6) -> dict[str, Any]:
	from crash import Workers, socket_owner

	frappe = b.frappe
	workers: list[Workers] = []
	kills: list[dict[str, Any]] = []

	def behave(key: str, port: int, repeat: bool) -> tuple[int, float]:
		if repeat or not workers:
			return 200, 0.0
		horses = workers[0].horses()
		horse = socket_owner(port, list(horses))
		killed = kill_connections(db_connections(horse)) if horse else 0
		kills.append({"key": key, "horse": horse, "killed": killed})
		return 200, 0.3  # answer once the connection is gone: the step "succeeds", the commit cannot

	receiver = Receiver(behave)
	b.servers.append(receiver)

	def note(step: str) -> dict:
		return {"doctype": "Note", "fields": {"title": f"{b.prefix} {{{{ run.name }}}} {step}"}}

	template = b.template(
		"dbkill",
		[
			{
				"id": "note_a",
				"kind": "create_document",
				"trigger": {"type": "after_delay", "minutes": 1},
				"payload": note("note_a"),
			},
			{
				"id": "call",
				"kind": "webhook",
				"depends_on": ["note_a"],
				"payload": {"method": "POST", "url": receiver.url, "body": {"run": "{{ run.name }}"}},
			},
			{"id": "note_b", "kind": "create_document", "depends_on": ["call"], "payload": note("note_b")},
		],
	)
	offset = _site.clock_offset()
	runs = start_due_runs(frappe, template, runs_wanted, offset, spread_s=runs_wanted * 2)
	workers.append(Workers(b.procs, b.queue))
	stop = b.file("dbkill.stop")
	b.procs.scheduler(
		b.queue,
		stop,
		b.file("dbkill-cron.json"),
		"dbkill-cron.log",
		offset,
		1,
		FLOW_BENCH_LEASE_SECONDS="15",
		FLOW_BENCH_RUNS_PER_JOB="1",
	)
	done = wait_until(
		lambda: run_statuses(frappe, template).get("Completed", 0) == len(runs)
		and not row_statuses(frappe, template).get("Running"),
		240,
		1,
	)
	open(stop, "w").close()
	time.sleep(1)
	b.stop_processes()

	notes = note_counts(frappe, b.prefix)
	statuses = run_statuses(frappe, template)
	rows = row_statuses(frappe, template)
	reclaimed = frappe.db.count("Flow Step Pending", {"template": template, "attempt": (">", 1)})
	completed = statuses.get("Completed", 0)
	return {
		"runs": len(runs),
		"kills": sum(1 for k in kills if k["killed"]),
		"kill_misses": sum(1 for k in kills if not k["killed"]),
		"rows_reclaimed": reclaimed,
		"http_keys": len(receiver.keys),
		"http_repeats": sum(1 for n in receiver.keys.values() if n > 1),
		"notes": sum(notes.values()),
		"settled": int(done),
		"lost": (len(runs) - completed)
		+ sum(n for s, n in rows.items() if s != "Done")
		+ (2 * completed - len(notes))
		+ (len(runs) - len(receiver.keys)),
		"duplicated": sum(n - 1 for n in notes.values() if n > 1),
	}


# --- 3. a worker is killed during a WhatsApp send ---------------------------------------------------


def scenario_whatsapp_kill(b: Bench, runs_wanted: int = 40, kills_wanted: int = 12) -> dict[str, Any]:
	from crash import Workers, socket_owner

	frappe = b.frappe
	delay = 0.8
	graph = watched_graph(delay)
	b.servers.append(graph)
	account = make_account(frappe, b.prefix + "k", graph.base_url, 80)
	b.accounts.append(account["name"])
	contacts = numbers(runs_wanted)
	b.contacts += contacts
	template = b.template(
		"wakill",
		[
			{
				"id": "send",
				"kind": "send_whatsapp",
				"trigger": {"type": "after_delay", "minutes": 1},
				"payload": {
					"to": "{{ variables.phone }}",
					"mode": "template",
					"template": "fault_notice",
					"language": "en",
					"account": account["name"],
				},
				"retry": {"max_attempts": 3, "backoff_seconds": 5},
			},
			{
				"id": "note_b",
				"kind": "create_document",
				"depends_on": ["send"],
				"payload": {"doctype": "Note", "fields": {"title": f"{b.prefix} {{{{ run.name }}}} note_b"}},
			},
		],
	)
	offset = _site.clock_offset()
	runs = start_due_runs(frappe, template, runs_wanted, offset, spread_s=runs_wanted * 0.7, phone=contacts)
	workers = Workers(b.procs, b.queue)
	stop = b.file("wakill.stop")
	b.procs.scheduler(
		b.queue,
		stop,
		b.file("wakill-cron.json"),
		"wakill-cron.log",
		offset,
		1,
		FLOW_BENCH_LEASE_SECONDS="15",
		FLOW_BENCH_RUNS_PER_JOB="1",
	)
	kills: list[str] = []
	seen = 0
	deadline = time.monotonic() + 300
	while len(kills) < kills_wanted and time.monotonic() < deadline:
		with graph._lock:
			fresh = graph.sends[seen:]
			seen = len(graph.sends)
		if not fresh:
			if run_statuses(frappe, template).get("Completed", 0) + run_statuses(frappe, template).get(
				"Failed", 0
			) >= len(runs):
				break
			time.sleep(0.05)
			continue
		arrival = random.choice(fresh)
		horses = workers.horses()
		horse = socket_owner(arrival["port"], list(horses))
		if horse is None:
			continue
		kill_at = arrival["t"] + random.uniform(0.1, delay + 0.5)
		time.sleep(max(0.0, kill_at - time.time()))
		if horse not in _site.children(workers.slots[horses[horse]].pid):
			continue  # its job ended first
		kills.append("in_flight" if time.time() < arrival["t"] + delay else "after_answer")
		workers.kill(horses[horse])
		time.sleep(random.uniform(0.3, 1.0))
		with graph._lock:
			seen = len(graph.sends)
	settled = wait_until(
		lambda: sum(
			n for s, n in run_statuses(frappe, template).items() if s in ("Completed", "Failed", "Cancelled")
		)
		== len(runs)
		and not row_statuses(frappe, template).get("Running"),
		240,
		1,
	)
	open(stop, "w").close()
	time.sleep(1)
	b.stop_processes()

	frappe.db.rollback()
	sent = sends_per_step(graph)
	all_runs = frappe.get_all(
		"Flow Run", filters={"template": template}, fields=["name", "status", "error"], limit=0
	)
	uncertain = [
		r.name
		for r in all_runs
		if r.status == "Failed"
		and INTERRUPTED in (frappe.db.get_value("Flow Run", r.name, "step_state") or "")
	]
	notes = note_counts(frappe, b.prefix)
	completed = [r.name for r in all_runs if r.status == "Completed"]
	rows = row_statuses(frappe, template)
	return {
		"runs": len(runs),
		"kills": len(kills),
		"in_flight": kills.count("in_flight"),
		"after_answer": kills.count("after_answer"),
		"sends": sum(sent.values()),
		"completed": len(completed),
		"uncertain": len(uncertain),
		"uncertain_sent_once": sum(1 for r in uncertain if sent.get(f"run={r};step=send") == 1),
		"rows_reclaimed": frappe.db.count("Flow Step Pending", {"template": template, "attempt": (">", 1)}),
		"settled": int(settled),
		"lost": sum(1 for r in all_runs if r.status != "Completed" and r.name not in uncertain)
		+ sum(1 for r in completed if not sent.get(f"run={r};step=send"))
		+ sum(1 for r in completed if not notes.get(f"{b.prefix} {r} note_b"))
		+ rows.get("Running", 0)
		+ rows.get("Pending", 0),
		"duplicated": sum(n - 1 for n in sent.values() if n > 1)
		+ sum(n - 1 for n in notes.values() if n > 1),
	}


# --- 4. the clock jumps 26 hours ---------------------------------------------------------------------

JUMP_RUNS = 300
BACKOFF = 600


def scenario_clock_jump(b: Bench) -> dict[str, Any]:
	from flow_automation import runtime
	from flow_automation.scheduler import batch_size

	frappe = b.frappe
	succeed = threading.Event()
	receiver = Receiver(lambda key, port, repeat: (200 if succeed.is_set() else 500, 0.0))
	b.servers.append(receiver)

	def delay(step_id: str, **after) -> dict:
		return {"id": step_id, "kind": "wait", "trigger": {"type": "after_delay", **after}, "payload": {}}

	template = b.template(
		"jump",
		[
			delay("late", hours=20),
			delay("mid", hours=5),
			delay("c1", hours=2),
			{**delay("c2", minutes=30), "depends_on": ["c1"]},
			delay("early", hours=1),
			{
				"id": "call",
				"kind": "webhook",
				"payload": {"method": "POST", "url": receiver.url, "body": {"run": "{{ run.name }}"}},
				"retry": {"max_attempts": 4, "backoff_seconds": BACKOFF, "max_backoff_seconds": 3600},
			},
		],
	)
	offset = _site.clock_offset()
	t0 = _site.bench_now(offset).replace(microsecond=0)
	runs = []
	for _ in range(JUMP_RUNS):
		name = runtime.start_run(template, advance="none")
		runtime.advance_run(name, now=t0)  # the call fails once: a retry timer 300-600 s later
		runs.append(name)
	frappe.db.commit()
	overdue_rows = frappe.db.count("Flow Step Pending", {"template": template, "status": "Pending"})

	clock = b.file("jump.clock")
	with open(clock, "w") as f:
		f.write(str(offset))
	stop = b.file("jump.stop")
	out = b.file("jump-cron.json")
	b.procs.start([_site.PYTHON, ENTRY, "jump-cron", stop, clock, out], "jump-cron.log")
	time.sleep(4)
	fired_before_jump = frappe.db.count(
		"Flow Step Pending", {"template": template, "status": ("!=", "Pending")}
	)

	def settle(timeout: float) -> bool:
		def calm():
			frappe.db.rollback()
			due = frappe.db.sql(
				"""select count(*) from `tabFlow Step Pending` where template = %s
				and ((status = 'Pending' and trigger_at <= %s) or status = 'Running')""",
				(template, _site.bench_now(float(open(clock).read()))),
			)[0][0]
			return due == 0

		return wait_until(calm, timeout, 1) and wait_until(calm, 5, 1)

	with open(clock, "w") as f:
		f.write(str(offset - 26 * 3600))  # the jump: 26 hours at once
	settled_1 = settle(300)
	frappe.db.rollback()
	logs = frappe.db.sql(
		"""select run, step_id, attempt, status, started_at from `tabFlow Step Log`
		where template = %s order by run, creation""",
		template,
		as_dict=True,
	)
	by_run = collections.defaultdict(list)
	for log in logs:
		by_run[log.run].append(log)
	due_order = ["early", "c1", "mid", "late"]
	out_of_order = sum(
		1
		for entries in by_run.values()
		if [e.step_id for e in entries if e.step_id in due_order] != due_order
	)
	calls_after_jump = collections.Counter(e.run for e in logs if e.step_id == "call" and e.attempt > 1)
	retries_early = sum(n - 1 for n in calls_after_jump.values() if n > 1)  # a retry fired before its backoff
	chained_early = sum(1 for e in logs if e.step_id == "c2")

	succeed.set()
	with open(clock, "w") as f:
		f.write(str(offset - 27 * 3600))  # one hour later: c2 and the retries are due
	settled_2 = settle(300)
	open(stop, "w").close()
	deadline = time.monotonic() + 60
	while not os.path.exists(out) and time.monotonic() < deadline:
		time.sleep(0.2)
	cron = json.load(open(out)) if os.path.exists(out) else {"claims": [], "errors": -1}
	b.stop_processes()

	frappe.db.rollback()
	executed = collections.Counter(
		(r, s)
		for r, s in frappe.db.sql(
			"select run, step_id from `tabFlow Step Log` where template = %s and status = 'Success'", template
		)
	)
	steps = ("late", "mid", "c1", "c2", "early", "call")
	statuses = run_statuses(frappe, template)
	rows = row_statuses(frappe, template)
	gaps = frappe.db.sql(
		"""select a.run, timestampdiff(second, a.started_at, b.started_at) from `tabFlow Step Log` a
		join `tabFlow Step Log` b on b.run = a.run and b.step_id = a.step_id and b.attempt = a.attempt + 1
		where a.template = %s and a.step_id = 'call'""",
		template,
	)
	short_gaps = sum(1 for _run, gap in gaps if gap is not None and gap < BACKOFF / 2)
	claims = cron.get("claims") or []
	return {
		"runs": len(runs),
		"overdue_rows": overdue_rows,
		"fired_before_jump": fired_before_jump,
		"fired_once": sum(1 for n in executed.values() if n == 1),
		"fired_twice": sum(1 for n in executed.values() if n > 1),
		"out_of_order_runs": out_of_order,
		"retries_early": retries_early + short_gaps,
		"chained_early": chained_early,
		"claims": len(claims),
		"max_claim": max(claims, default=0),
		"batch": batch_size(),
		"settled": int(settled_1 and settled_2),
		"cron_errors": cron.get("errors", 0),
		"lost": (len(runs) - statuses.get("Completed", 0))
		+ sum(1 for r in runs for s in steps if not executed.get((r, s)))
		+ rows.get("Pending", 0)
		+ rows.get("Running", 0),
		"duplicated": sum(n - 1 for n in executed.values() if n > 1),
	}


def jump_cron_main(stop_file: str, clock_file: str, out_file: str) -> None:
	"""`run_due(now, inline=True)` in a loop (as `bench ... flow-automation run-due` does), on the
	benchmark clock whose offset is read from `clock_file` before every call; records how many rows
	each claim took."""
	import frappe

	claims: list[int] = []
	errors = 0
	while not os.path.exists(stop_file):
		n = 0
		try:
			offset = float(open(clock_file).read())
			_site.connect()
			_site.real_time_leases(offset)
			from flow_automation import scheduler

			original = getattr(scheduler.claim_due, "original", scheduler.claim_due)

			def claim_due(now=None, limit=None, original=original):
				rows = original(now, limit)
				if rows:
					claims.append(len(rows))
				return rows

			claim_due.original = original
			scheduler.claim_due = claim_due
			n = scheduler.run_due(now=_site.bench_now(offset), inline=True)
			frappe.db.commit()
		except Exception as e:
			errors += 1
			print(f"run_due failed: {type(e).__name__}: {e}", flush=True)
		finally:
			frappe.destroy()
		if not n:
			time.sleep(0.5)
	with open(out_file, "w") as f:
		json.dump({"claims": claims, "errors": errors}, f)


# --- 5. an event flood from one document --------------------------------------------------------------

SAVERS = 8
FLOOD_SAVES = 1000


def scenario_event_flood(b: Bench) -> dict[str, Any]:
	from crash import Workers

	frappe = b.frappe
	receiver = Receiver(lambda key, port, repeat: (200, 0.3))
	b.servers.append(receiver)
	template = b.template(
		"flood",
		[
			{
				"id": "mark",
				"kind": "update_document",
				"payload": {"fields": {"notify_on_login": 0}},
			},
			{
				"id": "call",
				"kind": "webhook",
				"depends_on": ["mark"],
				"payload": {"method": "POST", "url": receiver.url, "body": {"run": "{{ run.name }}"}},
			},
		],
		{
			"type": "Document Event",
			"doctype": "Note",
			"event": "Value Change",
			"field": "content",
			"condition": {"field": "doc.title", "op": "starts_with", "value": f"{b.prefix} "},
		},
		options={"one_active_run_per_document": True},
	)
	note = frappe.get_doc({"doctype": "Note", "title": f"{b.prefix} flood", "content": "start"}).insert(
		ignore_permissions=True
	)
	# the same flood on a Note the template's condition does not match: Frappe's own cost
	baseline = frappe.get_doc(
		{"doctype": "Note", "title": f"{b.prefix}-baseline", "content": "start"}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	Workers(b.procs, b.queue)

	def flood(name: str, tag: str) -> list[dict[str, Any]]:
		go = b.file(f"{tag}.go")
		outs = [b.file(f"{tag}{i}.json") for i in range(SAVERS)]
		for i, out in enumerate(outs):
			b.procs.start(
				[_site.PYTHON, ENTRY, "saver", name, str(FLOOD_SAVES // SAVERS), go, out, b.queue],
				f"{tag}{i}.log",
			)
		time.sleep(6)  # connected and waiting for the go file
		open(go, "w").close()
		wait_until(lambda: all(os.path.exists(o) for o in outs), 300, 0.5)
		return [json.load(open(o)) for o in outs if os.path.exists(o)]

	def span(savers: list[dict[str, Any]]) -> float:
		first = min((s["t_first"] for s in savers if s["t_first"]), default=0)
		return round(max((s["t_last"] for s in savers if s["t_last"]), default=0) - first, 1)

	baseline_s = span(flood(baseline.name, "base"))
	savers = flood(note.name, "saver")

	def finished():
		s = run_statuses(frappe, template)
		return not (s.get("Queued") or s.get("Running") or s.get("Waiting"))

	if not wait_until(finished, 60, 1):
		# a kick lost on the way: what the minute cron's drain_outbox would do, for our runs only
		from flow_automation.runtime import enqueue_start

		_site.use_queue(b.queue)
		for run in frappe.get_all(
			"Flow Run", filters={"template": template, "status": "Queued"}, pluck="name"
		):
			enqueue_start(run)
		wait_until(finished, 120, 1)
	b.stop_processes()

	frappe.db.rollback()
	runs = frappe.db.sql(
		"""select name, status, creation, modified, started_at, completed_at, error from `tabFlow Run`
		where template = %s order by creation""",
		template,
		as_dict=True,
	)
	# one active run per document: a run that started before the one started before it had
	# finished (a Queued run cancelled at its start as a duplicate never ran: counted apart)
	refused = [r for r in runs if r.status == "Cancelled" and (r.error or "").startswith("Not started")]
	ran = [r for r in runs if r not in refused]
	overlaps = [(a, c) for a, c in itertools.pairwise(ran) if c.creation < a.modified]
	for a, c in overlaps[:3]:
		print(
			f"  event_flood: {c.name} created {c.creation} before {a.name} ({a.status}) ended {a.modified}",
			flush=True,
		)
	overlapping = len(overlaps)
	errors: collections.Counter[str] = collections.Counter()
	for s in savers:
		errors.update(s["errors"])
	statuses = collections.Counter(r.status for r in runs)
	failed_errors = collections.Counter((r.error or "")[:80] for r in runs if r.status == "Failed")
	if failed_errors:
		print(f"  event_flood: failed runs' errors {dict(failed_errors)}")
	if errors:
		print(f"  event_flood: save errors {dict(errors)}")
	saves = sum(s["ok"] for s in savers) + sum(errors.values())
	return {
		"saves": saves,
		"seconds": span(savers),
		"baseline_seconds": baseline_s,
		"save_errors": sum(errors.values()),
		"lock_waits": sum(n for e, n in errors.items() if "Timeout" in e or "Deadlock" in e),
		"runs": len(runs),
		"refused_at_start": len(refused),
		"overlapping_runs": overlapping,
		"completed": statuses.get("Completed", 0),
		"failed": statuses.get("Failed", 0),
		"http_calls": sum(receiver.keys.values()),
		# a run that did not complete (a duplicate refused at its start excepted), a failed save
		"lost": sum(1 for r in ran if r.status != "Completed") + (saves - sum(s["ok"] for s in savers)),
		"duplicated": overlapping + sum(n - 1 for n in receiver.keys.values() if n > 1),
	}


def saver_main(note: str, count: str, go_file: str, out_file: str, queue: str) -> None:
	"""Save one Note `count` times as fast as possible: load it FOR UPDATE, change `content`,
	save, commit; every error (by type) is counted, none stops the loop."""
	import frappe

	_site.connect()
	_site.use_queue(queue)  # the runs' kicks go to the scenario's workers
	ok = 0
	errors: collections.Counter[str] = collections.Counter()
	frappe.db.commit()
	while not os.path.exists(go_file):
		time.sleep(0.01)
	t_first = time.time()
	for i in range(int(count)):
		try:
			doc = frappe.get_doc("Note", note, for_update=True)
			doc.content = f"{os.getpid()}-{i}"
			doc.save(ignore_permissions=True)
			frappe.db.commit()
			ok += 1
		except Exception as e:
			frappe.db.rollback()
			errors[type(e).__name__] += 1
	t_last = time.time()
	with open(out_file, "w") as f:
		json.dump({"ok": ok, "errors": errors, "t_first": t_first, "t_last": t_last}, f)
	frappe.destroy()


# --- main -------------------------------------------------------------------------------------------

RUNNERS = {
	"redis_down": scenario_redis_down,
	"db_kill": scenario_db_kill,
	"whatsapp_kill": scenario_whatsapp_kill,
	"clock_jump": scenario_clock_jump,
	"event_flood": scenario_event_flood,
}


def line(name: str, result: dict[str, Any]) -> str:
	return f"{name}: " + " ".join(f"{k}={v}" for k, v in result.items())


def main() -> None:
	wanted = [a for a in sys.argv[1:] if a in RUNNERS] or list(SCENARIOS)
	_site.on_signals()
	frappe = _site.connect()
	before = _site.counts()
	started = time.monotonic()
	results: dict[str, dict[str, Any]] = {}
	keep_logs = False
	for name in wanted:
		b = Bench(frappe)
		t = time.monotonic()
		try:
			with _site.site_config_value("flow_automation_allow_private_webhook_targets", 1):
				results[name] = RUNNERS[name](b)
			results[name]["s"] = round(time.monotonic() - t)
			print(line(name, results[name]), flush=True)
		except (Exception, KeyboardInterrupt) as e:
			keep_logs = True
			print(f"{name}: FAILED {type(e).__name__}: {e} (logs in {b.tmp})", flush=True)
			import traceback

			traceback.print_exc()
			if isinstance(e, KeyboardInterrupt):
				b.cleanup()
				raise
		finally:
			alive = b.cleanup()
			if alive:
				print(f"  {alive} of {name}'s processes still alive")
			if not keep_logs and not os.environ.get("FLOW_BENCH_KEEP_LOGS"):
				shutil.rmtree(b.tmp, ignore_errors=True)
	frappe.db.rollback()
	after = _site.counts()
	changes = _site.count_changes(before, after)
	print(
		f"clean-up: site row count changes {changes or 'none'}; run time {time.monotonic() - started:.0f} s"
	)
	frappe.destroy()
	print(
		f"scenarios={len(results)} lost={sum(r['lost'] for r in results.values())} "
		f"duplicated={sum(r['duplicated'] for r in results.values())}"
	)


if __name__ == "__main__":
	sys.path.insert(0, os.path.dirname(ENTRY))
	command = sys.argv[1:2]
	if command == ["worker"]:
		worker_main(sys.argv[2])
	elif command == ["cron"]:
		cron_main(*sys.argv[2:6])
	elif command == ["jump-cron"]:
		jump_cron_main(*sys.argv[2:5])
	elif command == ["saver"]:
		saver_main(*sys.argv[2:7])
	else:
		main()
