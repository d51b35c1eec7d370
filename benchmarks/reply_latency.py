"""How long a WhatsApp bot takes to answer, tried as a new user would: "menu" in, the menu out.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/reply_latency.py [conversations] [ask]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The script serves the site with
the bench's gunicorn (2 sync workers, 127.0.0.1 only, as webhook.py does), starts one real RQ
worker (Frappe's start_worker) and a loopback fake Graph API standing in for Meta
(channels/whatsapp/fake_graph.py) that notes when each message send arrives. Every job the
web workers and the RQ worker enqueue, whichever standard queue it names ("short" for the
webhook's processing job, "default" for a run's start job), goes to a private RQ queue that
only this worker reads (_site.use_queue_for_all). It commits a WhatsApp Account of its own
whose base_url is the fake, and the gallery's "WhatsApp Menu Bot" (fixtures/) under a name of
its own, bound to that account with a high keyword priority (so no other template answers).

Then, one conversation at a time (`conversations`, default 30, each from a new contact number,
a short pause between them): it POSTs a signed inbound "menu" to
/api/method/flow_automation.whatsapp.api.webhook, notes when the 200 came back, and waits for
the first send to that contact at the fake Graph API. latency = that send's arrival - the 200.
lost = conversations with no reply within 15 s (or a webhook answer other than 200).

With `ask` (default 1; 0 skips it) each conversation goes on as the user would: it answers
the menu (a list reply, "Order status") and then the order-number question ("SO-1234"), and
the time from each answer's 200 to the next message sent to the contact is printed
separately: the reply to a waiting question.

Where the time goes is read back afterwards from the rows' own timestamps (the inbound
message, the run, the outbound message) and from RQ's record of the private queue's jobs
(enqueued, started in the work horse, ended), so it says whether the reply came through
background jobs or straight from the web worker.

Prints figures, asserts nothing; the last line is
`p50_ms=<n> p95_ms=<n> conversations=<n> lost=<n>`. Everything it made (account, template,
runs, messages, conversations, jobs, the send markers in Redis) is deleted at the end.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

GUNICORN_WORKERS = 2
REPLY_TIMEOUT = 15.0  # seconds a conversation waits for the bot's message before it counts as lost
PAUSE = 0.5  # seconds between conversations
THINK = 0.3  # seconds the user takes before answering a question
WEBHOOK = "/api/method/flow_automation.whatsapp.api.webhook"
PING = "/api/method/ping"
TEMPLATE_FILE = "whatsapp_menu_bot.json"
ORDER_ROW = ("order", "Order status")
ORDER_NUMBER = "SO-1234"
# A work horse needs longer than this to init Frappe, connect and import the app before a step
# can write anything (a start job that finds nothing to do still runs ~0.5 s here).
HORSE_SETUP_FLOOR = 0.1


class Arrivals:
	"""Message sends that reached the fake Graph API, per recipient, with their arrival time."""

	def __init__(self):
		self.cond = threading.Condition()
		self.sends: dict[str, list[tuple[float, dict[str, Any]]]] = {}

	def on_request(self, request) -> None:
		arrived = time.time()
		body = request.json
		if not (
			request.method == "POST"
			and request.path.endswith("/messages")
			and isinstance(body, dict)
			and body.get("status") != "read"
			and body.get("to")
		):
			return
		with self.cond:
			self.sends.setdefault(str(body["to"]).lstrip("+"), []).append((arrived, body))
			self.cond.notify_all()

	def count(self, wa_id: str) -> int:
		with self.cond:
			return len(self.sends.get(wa_id, ()))

	def wait_next(self, wa_id: str, seen: int, deadline: float) -> tuple[float, dict[str, Any]] | None:
		"""The first send to `wa_id` after the first `seen` ones, or None at `deadline`."""
		with self.cond:
			while len(self.sends.get(wa_id, ())) <= seen:
				left = deadline - time.time()
				if left <= 0:
					return None
				self.cond.wait(left)
			return self.sends[wa_id][seen]


def percentile(values: list[float], q: float) -> float:
	"""Nearest rank."""
	ordered = sorted(values)
	if not ordered:
		return float("nan")
	return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def describe(values: list[float]) -> str:
	if not values:
		return "no samples"
	return (
		f"p50 {percentile(values, 0.5):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
		f"max {max(values):.0f} ms, min {min(values):.0f} ms ({len(values)} samples)"
	)


def make_account(frappe, name: str, graph, phone_number_id: str, token: str, secret: str) -> str:
	from flow_automation.whatsapp import accounts

	doc = frappe.get_doc(
		{
			"doctype": "WhatsApp Account",
			"account_name": name,
			"enabled": 1,
			"is_default": 0,
			"phone_number_id": phone_number_id,
			"display_phone_number": "15550" + phone_number_id[-6:],
			"waba_id": "8" + phone_number_id[1:],
			"access_token": token,
			"app_secret": secret,
			"base_url": graph.base_url,
			"recipient_gap_seconds": 0,
			"download_media": 0,
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	accounts.clear_account_cache()
	return doc.name


def make_menu_bot(name: str, account: str) -> str:
	"""The gallery's WhatsApp Menu Bot, under our name, answering only our account's messages."""
	from flow_automation.portable import fixtures_path

	with open(os.path.join(fixtures_path(), TEMPLATE_FILE), encoding="utf-8") as f:
		data = json.load(f)
	trigger = {**data["trigger"], "account": account, "priority": 1000}
	return _site.make_template(name, data["definition"]["steps"], trigger=trigger).name


def contact_numbers(frappe, count: int) -> list[str]:
	"""`count` fictional +1 555 numbers in a block no conversation uses yet."""
	for _ in range(50):
		block = random.randrange(100, 1000)
		if block == 99:
			continue
		numbers = [f"+1555{block:03d}{i:04d}" for i in range(count)]
		if not frappe.db.count("WhatsApp Conversation", {"name": ("like", f"+1555{block:03d}%")}):
			return numbers
	raise SystemExit("no free block of +1 555 numbers")


def fixtures_exist(frappe, account: str, template: str) -> bool:
	frappe.db.rollback()
	return bool(frappe.db.exists("WhatsApp Account", account) and frappe.db.exists("Flow Template", template))


def post(session, base: str, body: dict[str, Any], secret: str) -> tuple[int, float]:
	from flow_automation.channels.whatsapp import sign

	raw = json.dumps(body).encode()
	headers = {
		"Host": _site.SITE,
		"Content-Type": "application/json",
		"X-Hub-Signature-256": sign(raw, secret),
	}
	response = session.post(base + WEBHOOK, data=raw, headers=headers, timeout=30)
	return response.status_code, time.time()


def to_epoch(value) -> float | None:
	"""A naive system-time datetime from the database as a Unix time."""
	from zoneinfo import ZoneInfo

	from frappe.utils import get_datetime, get_system_timezone

	if not value:
		return None
	return get_datetime(value).replace(tzinfo=ZoneInfo(get_system_timezone())).timestamp()


def utc_epoch(value) -> float | None:
	"""RQ's naive UTC datetime as a Unix time."""
	return value.replace(tzinfo=dt.timezone.utc).timestamp() if value else None


def breakdown(frappe, conversations: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> list[str]:
	"""Where the time between the 200 and the reply went (medians over the answered conversations)."""
	pending_jobs = []  # routing.process_pending: whatever was Pending when it ran
	start_jobs = {}
	for job in jobs:
		method = job["method"] or ""
		if method.endswith("process_pending"):
			pending_jobs.append(job)
		elif method.endswith("start_queued_run"):
			start_jobs[job["kwargs"].get("run")] = job
	stages: dict[str, list[float]] = {}
	paths = {"delivery_job": 0, "start_job": 0, "sent_by_start_job": 0, "answered": 0}

	def add(stage: str, start: float | None, end: float | None) -> None:
		if start is not None and end is not None:
			stages.setdefault(stage, []).append((end - start) * 1000)

	for c in conversations:
		if c.get("arrived") is None:
			continue
		paths["answered"] += 1
		inbound = frappe.db.get_value(
			"WhatsApp Message", {"wamid": c["wamid"]}, ["creation", "run", "modified"], as_dict=True
		)
		run = (
			frappe.db.get_value("Flow Run", inbound.run, ["creation", "started_at"], as_dict=True)
			if (inbound and inbound.run)
			else None
		)
		outbound = (
			frappe.db.get_value(
				"WhatsApp Message",
				{"run": inbound.run, "direction": "Outbound", "step_id": "menu"},
				["creation", "sent_at"],
				as_dict=True,
			)
			if run
			else None
		)
		t200, arrived = c["t200"], c["arrived"]
		add("webhook stored the message, before its 200", to_epoch(inbound and inbound.creation), t200)
		add("200 -> run row written (routed, keyword matched)", t200, to_epoch(run and run.creation))
		add(
			"run row -> outbound row queued (run started, ask step built)",
			to_epoch(run and run.creation),
			to_epoch(outbound and outbound.creation),
		)
		add("outbound row -> send arrives at Meta", to_epoch(outbound and outbound.creation), arrived)
		routed_at = to_epoch(inbound and inbound.modified)
		job = next(
			(
				j
				for j in pending_jobs
				if routed_at
				and utc_epoch(j["started_at"])
				and utc_epoch(j["started_at"]) <= routed_at <= (utc_epoch(j["ended_at"]) or routed_at)
			),
			None,
		)
		if job:
			paths["delivery_job"] += 1
			add(
				"  process_pending: 200 -> horse started (queue wait + fork)",
				t200,
				utc_epoch(job["started_at"]),
			)
			add(
				"  process_pending: ran (frappe.init + imports + routing + commit)",
				utc_epoch(job["started_at"]),
				utc_epoch(job["ended_at"]),
			)
		start = start_jobs.get(inbound.run) if inbound else None
		if start:
			paths["start_job"] += 1
			queued_at = to_epoch(outbound and outbound.creation)
			horse = utc_epoch(start["started_at"])
			if queued_at and horse and queued_at - horse >= HORSE_SETUP_FLOOR:
				paths["sent_by_start_job"] += 1
			add(
				"  start job: enqueued -> horse started (queue wait + fork)",
				utc_epoch(start["enqueued_at"]),
				utc_epoch(start["started_at"]),
			)
			add("  start job: horse started -> send arrives at Meta", utc_epoch(start["started_at"]), arrived)
			add("  start job: ran in all", utc_epoch(start["started_at"]), utc_epoch(start["ended_at"]))
	lines = [
		f"path: {paths['delivery_job']} of {paths['answered']} answered messages were routed by a "
		f"process_pending job (the others in the web worker, after its response); "
		f"{paths['start_job']} of their runs had a start job, {paths['sent_by_start_job']} of which "
		f"queued the reply itself (its outbound row written >= {HORSE_SETUP_FLOOR * 1000:.0f} ms after "
		"the horse started; earlier than that a horse is still setting up, so the run had been "
		"started elsewhere)"
	]
	for stage, values in stages.items():
		lines.append(f"  {stage}: median {statistics.median(values):.0f} ms, max {max(values):.0f} ms")
	return lines


def cleanup(frappe, account: str | None, template: str | None, numbers: list[str], wamid_prefix: str) -> str:
	from flow_automation.whatsapp import accounts, outbound

	frappe.db.rollback()
	filters = [["account", "=", account]] if account else [["wamid", "like", f"{wamid_prefix}%"]]
	keys = frappe.get_all("WhatsApp Message", filters=filters, pluck="idempotency_key")
	keys = [k for k in keys if k]
	for key in keys:  # the send markers (14 days in Redis)
		frappe.cache.delete_value(outbound._marker_key(key))
		if hasattr(outbound, "_began_key"):
			frappe.cache.delete(outbound._began_key(key))
	messages = frappe.db.count("WhatsApp Message", filters)
	frappe.db.delete("WhatsApp Message", {"wamid": ("like", f"{wamid_prefix}%")})
	if account:
		frappe.db.delete("WhatsApp Message", {"account": account})
	conversations = 0
	for start in range(0, len(numbers), 500):
		batch = numbers[start : start + 500]
		conversations += frappe.db.count("WhatsApp Conversation", {"name": ("in", batch)})
		frappe.db.delete("WhatsApp Conversation", {"name": ("in", batch)})
	frappe.db.commit()
	runs = frappe.db.count("Flow Run", {"template": template}) if template else 0
	if template:
		_site.delete_templates([template])
	if account and frappe.db.exists("WhatsApp Account", account):
		frappe.delete_doc("WhatsApp Account", account, force=True, ignore_permissions=True)
	frappe.db.commit()
	accounts.clear_account_cache()
	return (
		f"{messages} messages, {conversations} conversations, {runs} runs with their logs and rows, "
		f"{len(keys)} send markers in Redis, the template and the account"
	)


def main() -> None:
	count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
	ask = (sys.argv[2] if len(sys.argv) > 2 else "1") != "0"
	_site.on_signals()
	frappe = _site.connect()
	import requests

	from flow_automation.channels.whatsapp import FakeGraphAPI
	from flow_automation.tests.whatsapp_utils import inbound_message

	prefix = _site.unique_prefix("reply")
	queue = _site.queue_name("reply")
	_site.use_queue_for_all(queue)  # (this process enqueues nothing; for symmetry with the workers)
	tmp = tempfile.mkdtemp(prefix="flow-reply-")
	procs = _site.Processes(tmp)
	token = "bench-token-" + frappe.generate_hash(length=16)
	secret = "bench-secret-" + frappe.generate_hash(length=20)
	phone_number_id = "9" + "".join(random.choice("0123456789") for _ in range(14))
	wamid_prefix = f"wamid.BENCH.{prefix}."
	arrivals = Arrivals()
	graph = FakeGraphAPI(access_token=token, on_request=arrivals.on_request).start()
	run_start = frappe.utils.now_datetime()
	started = time.monotonic()
	account = template = None
	numbers: list[str] = []
	results: list[dict[str, Any]] = []
	asks: list[float] = []
	unanswered: list[str] = []  # wamids of answers no message followed
	interrupted = False
	warmup = None
	latencies: list[float] = []
	lost = count
	keep_logs = True
	try:
		account = make_account(frappe, f"{prefix} WA", graph, phone_number_id, token, secret)
		template = make_menu_bot(prefix, account)
		frappe.db.commit()
		numbers = contact_numbers(frappe, count + 1)

		port = _site.free_port()
		base = f"http://127.0.0.1:{port}"
		procs.start([_site.PYTHON, os.path.join(_site.HERE, "_site.py"), "worker-all", queue], "worker.log")
		procs.start(
			[
				os.path.join(_site.BENCH, "env", "bin", "gunicorn"),
				"-b",
				f"127.0.0.1:{port}",
				"-w",
				str(GUNICORN_WORKERS),
				"-t",
				"120",
				"--preload",
				"--log-level",
				"warning",
				"--pythonpath",
				_site.HERE,
				"_site:wsgi_app()",
			],
			"gunicorn.log",
			FLOW_BENCH_QUEUE=queue,
		)
		if not _site.wait_http(base + PING, Host=_site.SITE):
			raise SystemExit(f"gunicorn did not answer {PING} within 60 s (see {tmp})")
		from rq import Worker

		deadline = time.monotonic() + 60
		while not Worker.all(queue=_site.rq_queue(queue)) and time.monotonic() < deadline:
			time.sleep(0.2)
		print(
			f"gunicorn -w {GUNICORN_WORKERS} on 127.0.0.1:{port}, 1 RQ worker on private queue {queue}, "
			f"fake Graph API at {graph.base_url}; template {template!r} on account {account!r}"
		)
		session = requests.Session()

		def converse(i: int, number: str) -> dict[str, Any]:
			wa_id = number.lstrip("+")
			wamid = f"{wamid_prefix}{i}.menu"
			body = inbound_message(
				"menu", number=number, name=f"Bench {i}", message_id=wamid, phone_number_id=phone_number_id
			)
			seen = arrivals.count(wa_id)
			status, t200 = post(session, base, body, secret)
			reply = arrivals.wait_next(wa_id, seen, t200 + REPLY_TIMEOUT) if status == 200 else None
			result = {"number": number, "wamid": wamid, "status": status, "t200": t200, "arrived": None}
			if reply is None:
				return result
			result["arrived"] = reply[0]
			result["kind"] = reply[1].get("type")
			if not ask:
				return result
			answers = [
				inbound_message(
					number=number,
					name=f"Bench {i}",
					message_id=f"{wamid_prefix}{i}.row",
					row=ORDER_ROW,
					phone_number_id=phone_number_id,
				),
				inbound_message(
					ORDER_NUMBER,
					number=number,
					name=f"Bench {i}",
					message_id=f"{wamid_prefix}{i}.order",
					phone_number_id=phone_number_id,
				),
			]
			for answer in answers:
				time.sleep(THINK)
				seen = arrivals.count(wa_id)
				status, t = post(session, base, answer, secret)
				nxt = arrivals.wait_next(wa_id, seen, t + REPLY_TIMEOUT) if status == 200 else None
				if nxt is None:
					unanswered.append(answer["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
					break
				asks.append((nxt[0] - t) * 1000)
			return result

		warmup = converse(count, numbers[count])  # the first request of each kind in fresh processes
		asks.clear()
		unanswered.clear()
		for i in range(count):
			results.append(converse(i, numbers[i]))
			if results[-1]["arrived"] is None and not fixtures_exist(frappe, account, template):
				# another session's test clean-up deletes rows it did not write (tests/utils.py)
				interrupted = True
				print(f"WARNING: our account or template was deleted by someone else; stopped after {i + 1}")
				break
			time.sleep(PAUSE)
		time.sleep(2)  # the last jobs end and RQ records them

		latencies = [(r["arrived"] - r["t200"]) * 1000 for r in results if r["arrived"] is not None]
		lost = sum(1 for r in results if r["arrived"] is None)
		bad_status = collections.Counter(r["status"] for r in results if r["status"] != 200)
		first = f"{(warmup['arrived'] - warmup['t200']) * 1000:.0f} ms" if warmup["arrived"] else "no reply"
		print(f"warm-up conversation (not counted): {first}")
		print(
			f"'menu' -> first reply at Meta, {len(results)} conversations: {describe(latencies)}; lost {lost}"
			f" (webhook answers other than 200: {dict(bad_status) or 'none'})"
		)
		kinds = sorted({r.get("kind") for r in results if r.get("kind")})
		print(f"first replies were of type {', '.join(kinds) or '-'}")
		frappe.db.rollback()
		jobs = _site.job_records(queue)
		for line in breakdown(frappe, results, jobs):
			print(line)
		print(f"RQ jobs the private queue ran: {len(jobs)} ({', '.join(job_summary(jobs)) or 'none'})")
		if ask:
			print(
				f"answer to a waiting question -> next message at Meta ({ORDER_ROW[1]!r}, then {ORDER_NUMBER!r}): "
				f"{describe(asks)}; lost {len(unanswered)}"
			)
			for wamid in unanswered[:5]:
				row = frappe.db.get_value(
					"WhatsApp Message",
					{"wamid": wamid},
					["processing_status", "outcome", "processing_error"],
					as_dict=True,
				)
				print(f"  unanswered {wamid.rsplit('.', 2)[-2:]}: {row}")
		runs = dict(
			frappe.db.sql(
				"select status, count(*) from `tabFlow Run` where template = %s group by status", template
			)
		)
		print(f"runs by status: {runs}")
		errors = frappe.db.count("Error Log", {"creation": (">=", run_start)})
		print(f"Error Logs on the site since the start (any session's): {errors}")
		if not interrupted and not fixtures_exist(frappe, account, template):
			print("WARNING: our template or account disappeared during the run (another session's clean-up?)")
		keep_logs = False
	finally:
		procs.stop_all()
		graph.stop()
		removed = cleanup(frappe, account, template, numbers, wamid_prefix)
		purged = _site.purge_queue(queue)  # after: deleting the fixtures queues Frappe's link clean-up jobs
		left = frappe.db.count("WhatsApp Message", {"wamid": ("like", f"{wamid_prefix}%")})
		print(
			f"clean-up: {procs.alive()} of our processes alive, {purged} RQ jobs purged; removed {removed}; "
			f"{left} of our inbound messages left"
		)
		frappe.destroy()
		_site.keep_or_remove_logs(tmp, keep_logs)
	print(f"run time {time.monotonic() - started:.0f} s")
	print(
		f"p50_ms={percentile(latencies, 0.5):.0f} p95_ms={percentile(latencies, 0.95):.0f} "
		f"conversations={len(results)} lost={lost}"
	)


def job_summary(jobs: list[dict[str, Any]]) -> list[str]:
	counts: dict[str, int] = {}
	for job in jobs:
		key = f"{job['method'].rsplit('.', 1)[-1]} {job['status']}"
		counts[key] = counts.get(key, 0) + 1
	return [f"{n} {key}" for key, n in sorted(counts.items())]


if __name__ == "__main__":
	main()
