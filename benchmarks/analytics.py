"""The Flow Analytics report on a million Flow Run rows.

Run with the bench's Python (the script re-execs itself with it):

	FRAPPE_TEST_SITE=<site> $FRAPPE_BENCH/env/bin/python benchmarks/analytics.py [rows] [repeats]
	FRAPPE_TEST_SITE=<site> $FRAPPE_BENCH/env/bin/python benchmarks/analytics.py --cleanup

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site. The script makes 20 Flow
Templates ("Benchmark Analytics 01" ... "20") and inserts `rows` (default 1,000,000) Flow Run
rows for them straight into `tabFlow Run`, 10,000 rows an INSERT statement, spread over the
last 90 days: a few busy templates and many quiet ones (Zipf), more runs in working hours,
about 85 % Completed, 9 % Failed, 4 % Cancelled and 2 % still Queued/Running/Waiting (30 % of
the last day's), durations log-normal around a median that depends on the template (2 s for
the busiest to about an hour for the quietest).

Then it runs the report through Frappe's report path (frappe.desk.query_report.run, as
Administrator) for the last 30 days, `repeats` times (default 7), after one warm-up run, and
prints each time, the time of each kind of query (the SQL statements timed one by one), the
EXPLAIN of one query of each kind (the index it reads), and the same report filtered to the
busiest template and to Failed runs.

Every row it writes is named "bench-analytics-<n>"; those rows and its templates are deleted
at the end in chunks of 20,000 rows with a commit each, and the script checks that none is
left and that no table's row count changed. An interrupted run is cleaned up by the next
run, which starts with the clean-up, or by `--cleanup` alone (`--keep` leaves the rows, for
looking at query plans by hand). Prints figures; asserts nothing. The last line is:

	report_ms   median time of the report over the 30 days (all templates)
	runs        the runs it counted (the rows created in those 30 days)
	counts_ms / percentiles_ms / chart_ms   median time of each kind of query in one report
	one_template_ms   median time with the template filter (the busiest template)
	seed_s      seconds the INSERTs took; left: benchmark rows left after the clean-up
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()

TEMPLATE_PREFIX = "Benchmark Analytics"
ROW_PREFIX = "bench-analytics-"
TEMPLATES = 20
DAYS = 90
WINDOW_DAYS = 30
CHUNK = 10_000
REPORT = "Flow Analytics"


def template_names() -> list[str]:
	return [f"{TEMPLATE_PREFIX} {i:02d}" for i in range(1, TEMPLATES + 1)]


def make_templates(frappe) -> list[str]:
	names = []
	for name in template_names():
		if not frappe.db.exists("Flow Template", name):
			_site.make_template(name, [{"id": "wait", "kind": "wait", "payload": {}}])
		names.append(name)
	frappe.db.commit()
	return names


def status_for(age_days: float, rng: random.Random) -> str:
	"""Old runs have nearly all finished; among the last day's, more are still going."""
	r = rng.random()
	active = 0.30 if age_days < 1 else 0.02
	if r < active:
		return rng.choices(("Queued", "Running", "Waiting"), weights=(1, 2, 7))[0]
	r = rng.random()
	if r < 0.87:
		return "Completed"
	if r < 0.96:
		return "Failed"
	return "Cancelled"


def rows(frappe, templates: list[str], count: int, seed: int = 7):
	"""`count` Flow Run rows in creation order (so their names, the primary key, are too)."""
	rng = random.Random(seed)
	now = frappe.utils.now_datetime()
	start = now - dt.timedelta(days=DAYS)
	weights = [1 / (i + 1) for i in range(len(templates))]  # Zipf: a few busy templates
	medians = {t: 2 * 1.5**i for i, t in enumerate(templates)}  # 2 s ... ~1 h
	span = DAYS * 86400
	offsets = sorted(rng.random() for _ in range(count))
	for n, fraction in enumerate(offsets):
		creation = start + dt.timedelta(seconds=fraction * span)
		# more runs in working hours: move a night run into the day, now and then
		if creation.hour < 7 and rng.random() < 0.5:
			creation = min(creation + dt.timedelta(hours=9), now)
		template = rng.choices(templates, weights)[0]
		age_days = (now - creation).total_seconds() / 86400
		status = status_for(age_days, rng)
		started_at = creation + dt.timedelta(milliseconds=rng.randint(5, 2000))
		completed_at = None
		if status in ("Completed", "Failed", "Cancelled"):
			seconds = rng.lognormvariate(math.log(medians[template]), 1.0)
			if status == "Failed":
				seconds /= 3
			completed_at = started_at + dt.timedelta(seconds=seconds)
		elif status == "Queued":
			started_at = None
		yield (
			f"{ROW_PREFIX}{n:07d}",
			creation,
			completed_at or started_at or creation,
			"Administrator",
			"Administrator",
			template,
			status,
			1,
			"Benchmark",
			started_at,
			completed_at,
		)


FIELDS = [
	"name",
	"creation",
	"modified",
	"owner",
	"modified_by",
	"template",
	"status",
	"version",
	"trigger_type",
	"started_at",
	"completed_at",
]


def literal(frappe, value) -> str:
	if value is None:
		return "NULL"
	if isinstance(value, dt.datetime):
		return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
	if isinstance(value, int):
		return str(value)
	return frappe.db.escape(value)


def seed(frappe, templates: list[str], count: int) -> float:
	"""Insert the rows, CHUNK a statement; returns the seconds it took.

	The statements are written here, not with frappe.db.bulk_insert: pypika takes a second to
	build one of 10,000 rows, longer than the database takes to insert them."""
	started = time.monotonic()
	head = f"insert into `tabFlow Run` ({', '.join(f'`{f}`' for f in FIELDS)}) values "
	batch: list[str] = []
	for row in rows(frappe, templates, count):
		batch.append(f"({', '.join(literal(frappe, v) for v in row)})")
		if len(batch) == CHUNK:
			frappe.db.sql(head + ", ".join(batch))
			frappe.db.commit()
			batch = []
	if batch:
		frappe.db.sql(head + ", ".join(batch))
	frappe.db.commit()
	return time.monotonic() - started


def ours(frappe) -> int:
	return frappe.db.count("Flow Run", {"name": ("like", f"{ROW_PREFIX}%")})


def cleanup(frappe) -> int:
	"""Delete every row and template of this benchmark (also those an interrupted run left), in
	chunks of 20,000 rows a transaction; returns the rows deleted."""
	found = ours(frappe)
	while frappe.db.exists("Flow Run", {"name": ("like", f"{ROW_PREFIX}%")}):
		frappe.db.sql("delete from `tabFlow Run` where name like %s limit 20000", (f"{ROW_PREFIX}%",))
		frappe.db.commit()
	templates = frappe.get_all(
		"Flow Template", filters={"name": ("like", f"{TEMPLATE_PREFIX} %")}, pluck="name"
	)
	_site.delete_templates(templates)
	return found


@contextlib.contextmanager
def timed_queries():
	"""Every statement sent through frappe.db.sql, with its milliseconds."""
	import frappe

	queries: list[tuple[str, tuple, float]] = []
	original = frappe.db.__class__.sql

	def timed(self, query, values=(), *args, **kwargs):
		started = time.perf_counter()
		result = original(self, query, values, *args, **kwargs)
		queries.append((str(query), values, (time.perf_counter() - started) * 1000))
		return result

	frappe.db.__class__.sql = timed
	try:
		yield queries
	finally:
		frappe.db.__class__.sql = original


def kind_of(query: str) -> str:
	"""Which of the report's queries this is (the benchmark's own name for it)."""
	text = " ".join(query.split()).lower()
	if "`tabflow run`" not in text:
		return "other"
	if text.startswith("select distinct"):
		return "templates"
	if "row_number()" in text:
		return "percentiles"
	if "date(" in text:
		return "chart"
	if "interval(" in text:
		return "counts"
	return "other"


def explain(frappe, query: str, values) -> str:
	plan = frappe.db.sql(f"explain {query}", values, as_dict=True)
	return "; ".join(f"{p.type} on {p.key} ({p.Extra})" for p in plan)


def run_report(frappe, filters: dict) -> tuple[float, dict]:
	from frappe.desk.query_report import run

	started = time.perf_counter()
	result = run(REPORT, filters=filters, ignore_prepared_report=True)
	return (time.perf_counter() - started) * 1000, result


def measure(frappe, filters: dict, repeats: int) -> tuple[list[float], dict[str, list[float]], list, dict]:
	"""Run the report `repeats` times: the times, the time of each kind of query, the queries
	of the last run and its result."""
	times: list[float] = []
	per_kind: dict[str, list[float]] = {kind: [] for kind in ("templates", "counts", "percentiles", "chart")}
	for _ in range(repeats):
		with timed_queries() as queries:
			ms, result = run_report(frappe, filters)
		times.append(ms)
		for kind, values in per_kind.items():
			values.append(sum(q[2] for q in queries if kind_of(q[0]) == kind))
	return times, per_kind, queries, result


def main() -> None:
	_site.on_signals()
	frappe = _site.connect()
	args = [a for a in sys.argv[1:] if not a.startswith("--")]
	cleaned = False
	try:
		leftover = cleanup(frappe)
		if "--cleanup" in sys.argv:
			cleaned = True
			print(f"deleted={leftover} left={ours(frappe)}")
			return
		if leftover:
			print(f"deleted {leftover} rows an interrupted run had left")
		count = int(args[0]) if args else 1_000_000
		repeats = int(args[1]) if len(args) > 1 else 7
		before = _site.counts()
		templates = make_templates(frappe)
		seconds = seed(frappe, templates, count)
		print(f"seeded {count} Flow Run rows for {len(templates)} templates in {seconds:.1f} s")
		frappe.db.sql("analyze table `tabFlow Run`")  # fresh index statistics, as a live table has

		to_date = frappe.utils.getdate()
		window = {"from_date": str(frappe.utils.add_days(to_date, 1 - WINDOW_DAYS)), "to_date": str(to_date)}
		start = dt.datetime.combine(frappe.utils.getdate(window["from_date"]), dt.time.min)
		end = dt.datetime.combine(to_date + dt.timedelta(days=1), dt.time.min)
		in_window = frappe.db.count("Flow Run", [["creation", ">=", start], ["creation", "<", end]])
		run_report(frappe, window)  # warm-up: the report's module, the index pages in the buffer pool
		times, per_kind, queries, result = measure(frappe, window, repeats)
		report_ms = statistics.median(times)
		rows = result["result"]
		runs = sum(r["runs"] for r in rows)
		print(
			f"Flow Analytics, last {WINDOW_DAYS} days, {repeats} runs: {', '.join(f'{t:.0f}' for t in times)} ms"
		)
		print(f"    {len(rows)} templates, {runs} runs (runs created in the window: {in_window})")
		for kind, values in per_kind.items():
			n = sum(1 for q in queries if kind_of(q[0]) == kind)
			print(f"    {kind:<11} {n:3d} queries {statistics.median(values):6.0f} ms")
		print("EXPLAIN (one query of each kind):")
		seen = set()
		for query, values, _ms in queries:
			kind = kind_of(query)
			if kind != "other" and kind not in seen:
				seen.add(kind)
				print(f"    {kind:<11} {explain(frappe, query, values)}")
		busiest = rows[0]
		print(
			f"busiest template: {busiest['template']}: {busiest['runs']} runs, "
			f"median {busiest['median_duration']} s, p95 {busiest['p95_duration']} s"
		)
		one_times, _, _, _ = measure(frappe, {**window, "template": busiest["template"]}, repeats)
		failed_times, _, _, _ = measure(frappe, {**window, "status": "Failed"}, repeats)
		print(
			f"filtered: template={busiest['template']} {statistics.median(one_times):.0f} ms, "
			f"status=Failed {statistics.median(failed_times):.0f} ms"
		)

		if "--keep" in sys.argv:
			print(f"kept the rows: clean up with {sys.argv[0]} --cleanup")
			return
		deleted = cleanup(frappe)
		cleaned = True
		left = ours(frappe)
		changes = _site.count_changes(before, _site.counts())
		print(f"clean-up: deleted {deleted} rows, {left} left, row counts changed: {changes or 'none'}")
		print(
			f"report_ms={report_ms:.0f} runs={runs} rows={count} templates={len(rows)} "
			f"counts_ms={statistics.median(per_kind['counts']):.0f} "
			f"percentiles_ms={statistics.median(per_kind['percentiles']):.0f} "
			f"chart_ms={statistics.median(per_kind['chart']):.0f} "
			f"one_template_ms={statistics.median(one_times):.0f} "
			f"seed_s={seconds:.0f} left={left}"
		)
	finally:
		if not cleaned and "--keep" not in sys.argv:
			# interrupted, perhaps in the middle of a statement: a new connection for the clean-up
			with contextlib.suppress(Exception):
				frappe.db.close()
			frappe.destroy()
			frappe = _site.connect()
			deleted = cleanup(frappe)
			print(f"interrupted: deleted {deleted} rows, {ours(frappe)} left", file=sys.stderr)
		frappe.destroy()


if __name__ == "__main__":
	main()
