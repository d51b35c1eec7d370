"""WhatsApp webhook ingest against Frappe's own request path, on this machine.

Serves the site with the bench's gunicorn on a free loopback port, then for DURATION seconds
at CONCURRENCY posts signed deliveries (one inbound text message each, a unique wamid) to
`/api/method/flow_automation.whatsapp.api.webhook`, and for as long calls Frappe's own
`/api/method/ping` on the same server: the ceiling of Frappe's request path here. The two
take turns in ROUNDS windows each, in A-B-B-A order, so a machine that speeds up or slows
down during the run (it is shared with MariaDB, Redis and this client) weighs on both
alike. `lost` counts deliveries answered 200 whose message is not in the table.

    FRAPPE_BENCH=path/to/frappe-bench FRAPPE_TEST_SITE=test_site python benchmarks/webhook.py

Re-executes itself with the bench's Python when Frappe is not importable. Commits a
WhatsApp Account fixture for the run and removes it, the stored messages and the queued
processing jobs afterwards. Prints figures, asserts nothing; the last line is
`webhook_rps=<n> ping_rps=<n> ratio=<x> p95_ms=<n> lost=<n>`.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _site import find_bench, one_at_a_time

BENCH = Path(find_bench())
SITE = os.environ.get("FRAPPE_TEST_SITE", "test_site")
DURATION = float(os.environ.get("WEBHOOK_BENCH_SECONDS", "60"))
ROUNDS = int(os.environ.get("WEBHOOK_BENCH_ROUNDS", "6"))
COUNTER = itertools.count()
CONCURRENCY = int(os.environ.get("WEBHOOK_BENCH_CONCURRENCY", "16"))
WORKERS = int(os.environ.get("WEBHOOK_BENCH_WORKERS", "2"))
ACCOUNT = "WA Benchmark"
PHONE_NUMBER_ID = "900000000000001"
APP_SECRET = "benchmark-app-secret-" + "0" * 16
WAMID_PREFIX = "wamid.BENCH."
WEBHOOK = "/api/method/flow_automation.whatsapp.api.webhook"
PING = "/api/method/ping"
SERVER_LOG = Path(tempfile.gettempdir()) / "flow_automation_webhook_bench_gunicorn.log"

try:
	import frappe
except ImportError:
	python = BENCH / "env" / "bin" / "python"
	os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])

import requests

from flow_automation.channels.whatsapp import sign


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def connect() -> None:
	os.chdir(BENCH / "sites")  # Frappe's logs and site paths are relative to sites/
	frappe.init(site=SITE, sites_path=".")
	frappe.connect()


def setup_account() -> None:
	from flow_automation.whatsapp import accounts

	if frappe.db.exists("WhatsApp Account", ACCOUNT):
		frappe.delete_doc("WhatsApp Account", ACCOUNT, force=True, ignore_permissions=True)
	frappe.get_doc(
		{
			"doctype": "WhatsApp Account",
			"account_name": ACCOUNT,
			"enabled": 1,
			"is_default": 0,
			"phone_number_id": PHONE_NUMBER_ID,
			"access_token": "benchmark-token",
			"app_secret": APP_SECRET,
			"base_url": "http://127.0.0.1:9",
			"download_media": 0,
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	accounts.clear_account_cache()


def cleanup() -> None:
	from flow_automation.whatsapp import accounts

	frappe.db.rollback()
	frappe.db.delete("WhatsApp Message", {"wamid": ("like", WAMID_PREFIX + "%")})
	frappe.db.delete("WhatsApp Conversation", {"name": ("like", "+1555099%")})
	if frappe.db.exists("WhatsApp Account", ACCOUNT):
		frappe.delete_doc("WhatsApp Account", ACCOUNT, force=True, ignore_permissions=True)
	frappe.db.commit()
	accounts.clear_account_cache()
	removed = remove_jobs()
	print(f"cleanup: removed the account, stored messages and {removed} queued processing jobs")


def remove_jobs() -> int:
	# No worker runs during the benchmark: drop the processing jobs its deliveries rang for
	# (one per doorbell, so one a minute at most) and the doorbell itself.
	from frappe.utils.background_jobs import get_queue
	from rq.job import Job

	from flow_automation.transaction import doorbell_answered
	from flow_automation.whatsapp.routing import INBOUND_DOORBELL, PROCESS_PENDING

	queue = get_queue("short")
	removed = 0
	ids = queue.get_job_ids()
	for start in range(0, len(ids), 500):
		for job in Job.fetch_many(ids[start : start + 500], connection=queue.connection):
			if job is None:
				continue
			if (job.kwargs or {}).get("method") == PROCESS_PENDING and (job.kwargs or {}).get("site") == SITE:
				queue.remove(job)
				job.delete()
				removed += 1
	doorbell_answered(INBOUND_DOORBELL)
	return removed


def delivery(n: int) -> tuple[str, bytes]:
	wamid = f"{WAMID_PREFIX}{os.getpid()}.{n}"
	number = f"1555099{n % 10000:04d}"
	body = {
		"object": "whatsapp_business_account",
		"entry": [
			{
				"id": "900000000000000",
				"changes": [
					{
						"field": "messages",
						"value": {
							"messaging_product": "whatsapp",
							"metadata": {
								"display_phone_number": "15550000001",
								"phone_number_id": PHONE_NUMBER_ID,
							},
							"contacts": [{"profile": {"name": "Bench"}, "wa_id": number}],
							"messages": [
								{
									"from": number,
									"id": wamid,
									"timestamp": str(int(time.time())),
									"type": "text",
									"text": {"body": f"benchmark {n}"},
								}
							],
						},
					}
				],
			}
		],
	}
	return wamid, json.dumps(body).encode()


def start_server(port: int) -> subprocess.Popen:
	server = subprocess.Popen(
		[
			str(BENCH / "env" / "bin" / "gunicorn"),
			"-b",
			f"127.0.0.1:{port}",
			"-w",
			str(WORKERS),
			"--preload",
			"--log-level",
			"warning",
			"frappe.app:application",
		],
		cwd=str(BENCH / "sites"),
		stdout=subprocess.DEVNULL,
		stderr=SERVER_LOG.open("wb"),  # read back at the end: a pipe nobody reads would block it
	)
	deadline = time.time() + 60
	while time.time() < deadline:
		try:
			if requests.get(f"http://127.0.0.1:{port}{PING}", headers={"Host": SITE}, timeout=2).ok:
				return server
		except requests.RequestException:
			time.sleep(0.3)
	server.kill()
	raise SystemExit("gunicorn did not answer /api/method/ping within 60 s")


def load(url: str, make_request, seconds: float) -> tuple[int, list[float], list[str], int]:
	"""Drive `make_request(n)` from CONCURRENCY threads; (count, latencies, acked, errors)."""
	deadline = time.perf_counter() + seconds
	lock = threading.Lock()
	latencies: list[float] = []
	acked: list[str] = []
	errors = [0]

	def worker() -> None:
		mine: list[float] = []
		ok: list[str] = []
		bad = 0
		while time.perf_counter() < deadline:
			with lock:
				n = next(COUNTER)  # one sequence for the whole run: every delivery's wamid is new
			started = time.perf_counter()
			try:
				status, key = make_request(n)
			except (OSError, http.client.HTTPException):
				status, key = 0, None
			mine.append(time.perf_counter() - started)
			if status == 200:
				if key:
					ok.append(key)
			else:
				bad += 1
		with lock:
			latencies.extend(mine)
			acked.extend(ok)
			errors[0] += bad

	with ThreadPoolExecutor(CONCURRENCY) as pool:
		for _ in range(CONCURRENCY):
			pool.submit(worker)
	return len(latencies), latencies, acked, errors[0]


def p95(values: list[float]) -> float:
	ordered = sorted(values)
	return ordered[int(0.95 * (len(ordered) - 1))] * 1000 if ordered else 0.0


def main() -> None:
	connect()
	setup_account()
	port = free_port()
	base = f"http://127.0.0.1:{port}"
	server = start_server(port)
	try:

		def call(method: str, path: str, body: bytes | None, headers: dict) -> int:
			# http.client rather than requests: the load generator shares the machine's two
			# cores with gunicorn, MariaDB and Redis, and requests took a third of them
			connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
			try:
				connection.request(method, path, body=body, headers=headers)
				response = connection.getresponse()
				response.read()
				return response.status
			finally:
				connection.close()

		def post_delivery(n: int):
			wamid, raw = delivery(n)
			headers = {
				"Host": SITE,
				"Content-Type": "application/json",
				"X-Hub-Signature-256": sign(raw, APP_SECRET),
			}
			return call("POST", WEBHOOK, raw, headers), wamid

		def get_ping(n: int):
			return call("GET", PING, None, {"Host": SITE}), None

		load(base, post_delivery, min(3.0, DURATION / 10))  # warm-up: imports, caches, connections
		load(base, get_ping, min(3.0, DURATION / 10))
		hooks = pings = hook_errors = ping_errors = 0
		hook_latencies: list[float] = []
		ping_latencies: list[float] = []
		acked: list[str] = []
		ratios: list[float] = []
		window = DURATION / ROUNDS
		for turn in range(ROUNDS):
			order = ("hook", "ping") if turn % 2 == 0 else ("ping", "hook")
			done = {}
			for which in order:
				if which == "hook":
					count, latencies, ok, errors = load(base, post_delivery, window)
					hooks, hook_errors = hooks + count, hook_errors + errors
					hook_latencies += latencies
					acked += ok
				else:
					count, latencies, _, errors = load(base, get_ping, window)
					pings, ping_errors = pings + count, ping_errors + errors
					ping_latencies += latencies
				done[which] = count
			ratios.append(done["hook"] / done["ping"] if done["ping"] else 0.0)
	finally:
		server.terminate()
		try:
			server.wait(timeout=20)
		except subprocess.TimeoutExpired:
			server.kill()

	frappe.db.rollback()
	stored = 0
	for start in range(0, len(acked), 1000):
		stored += frappe.db.count("WhatsApp Message", {"wamid": ("in", acked[start : start + 1000])})
	lost = len(acked) - stored
	webhook_rps = hooks / DURATION
	ping_rps = pings / DURATION
	print(
		f"site {SITE} on gunicorn -w {WORKERS}, {CONCURRENCY} concurrent clients, {DURATION:g} s each "
		f"in {ROUNDS} turns; ratio per turn: {' '.join(f'{r:.2f}' for r in ratios)}"
	)
	print(
		f"webhook: {hooks} requests, {len(acked)} acknowledged, {hook_errors} errors, p50 {p50(hook_latencies):.1f} ms, p95 {p95(hook_latencies):.1f} ms"
	)
	print(
		f"ping:    {pings} requests, {ping_errors} errors, p50 {p50(ping_latencies):.1f} ms, p95 {p95(ping_latencies):.1f} ms"
	)
	server_log = SERVER_LOG.read_text(errors="replace")
	if any(word in server_log for word in ("Traceback", "Error", "CRITICAL")):  # not import warnings
		print(
			f"gunicorn reported errors ({SERVER_LOG}); the last lines:",
			*server_log.splitlines()[-15:],
			sep="\n  ",
		)
	cleanup()
	ratio = webhook_rps / ping_rps if ping_rps else 0.0
	print(
		f"webhook_rps={webhook_rps:.1f} ping_rps={ping_rps:.1f} ratio={ratio:.2f} "
		f"p95_ms={p95(hook_latencies):.1f} lost={lost}"
	)


def p50(values: list[float]) -> float:
	ordered = sorted(values)
	return ordered[len(ordered) // 2] * 1000 if ordered else 0.0


if __name__ == "__main__":
	with one_at_a_time("webhook"):
		try:
			main()
		finally:
			frappe.destroy()
