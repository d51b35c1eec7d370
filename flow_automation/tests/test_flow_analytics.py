"""The Flow Analytics report through Frappe's report path (frappe.desk.query_report.run), on runs
seeded with known statuses, days and durations: its counts, rates, percentiles, chart, filters,
drill-down routes and who may run it; then in a real Desk (Chromium, see tests/browser.py):
the report page draws the table and the chart, and a cell's link opens exactly its runs.

Percentiles are nearest-rank (the report's docstring): the p-th of n ascending durations is the
one at rank ceil(p * n / 100).
"""

from __future__ import annotations

import datetime
import json
import unittest
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import frappe
from frappe.desk.query_report import run as run_report
from frappe.utils import add_days, getdate, today

from flow_automation.flow_automation.report.flow_analytics.flow_analytics import execute
from flow_automation.tests.browser import Browser, DeskServer, missing_browser_tools
from flow_automation.tests.utils import FlowTestCase, make_template, unique

REPORT = "Flow Analytics"
PREFIX = "flow-analytics-test"
USERS = {"user": ["Flow User"], "norole": []}
# Days far from anything else on the site (tests elsewhere use today's date).
DAY1, DAY2, DAY3 = datetime.date(2001, 3, 1), datetime.date(2001, 3, 2), datetime.date(2001, 3, 3)
RANGE = {"from_date": "2001-03-01", "to_date": "2001-03-03"}
COUNTED = ("runs", "completed", "failed", "cancelled", "active")


def email(key: str) -> str:
	return f"{PREFIX}-{key}@example.com"


def ensure_users() -> None:
	for key, roles in USERS.items():
		if not frappe.db.exists("User", email(key)):
			frappe.get_doc(
				{
					"doctype": "User",
					"email": email(key),
					"first_name": key,
					"send_welcome_email": 0,
					"user_type": "System User",
				}
			).insert(ignore_permissions=True)
		user = frappe.get_doc("User", email(key))
		user.set("roles", [{"role": role} for role in roles])
		user.save(ignore_permissions=True)


def seed_run(
	template: str,
	status: str,
	day: datetime.date,
	seconds: float | None = None,
	*,
	started: bool = True,
	hour: int = 10,
) -> str:
	"""A Flow Run created on `day` at `hour`, started 2 s later; finished after `seconds`."""
	name = frappe.generate_hash(length=12)
	creation = datetime.datetime.combine(day, datetime.time(hour))
	started_at = creation + datetime.timedelta(seconds=2) if started else None
	completed_at = (
		(started_at or creation) + datetime.timedelta(seconds=seconds) if seconds is not None else None
	)
	fields = ["name", "creation", "modified", "owner", "modified_by", "template", "status"]
	values = [name, creation, creation, "Administrator", "Administrator", template, status]
	frappe.db.bulk_insert(
		"Flow Run", [*fields, "started_at", "completed_at"], [[*values, started_at, completed_at]]
	)
	return name


class TestFlowAnalytics(FlowTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		ensure_users()
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		frappe.set_user("Administrator")
		for key in USERS:
			frappe.delete_doc("User", email(key), force=True, ignore_permissions=True)
		frappe.db.commit()
		super().tearDownClass()

	def setUp(self):
		super().setUp()
		self.alpha = make_template([{"id": "w", "kind": "wait", "payload": {}}], name=unique("Analytics A"))
		self.beta = make_template([{"id": "w", "kind": "wait", "payload": {}}], name=unique("Analytics B"))
		self.runs: dict[str, list[str]] = {}  # "<template>:<status>" -> names
		alpha, beta = self.alpha.name, self.beta.name
		# alpha: 6 finished runs, durations 5, 10, 20, 30, 40, 100 s -> median (rank 3) 20 s,
		# p95 (rank 6) 100 s; success rate 4 / 6; three active runs.
		self.seed(alpha, "Completed", DAY1, 10)
		self.seed(alpha, "Completed", DAY1, 20)
		self.seed(alpha, "Failed", DAY1, 5)
		self.seed(alpha, "Completed", DAY2, 30)
		self.seed(alpha, "Completed", DAY3, 40)
		self.seed(alpha, "Cancelled", DAY3, 100)
		self.seed(alpha, "Running", DAY2)
		self.seed(alpha, "Waiting", DAY3)
		self.seed(alpha, "Queued", DAY3, started=False)
		# beta: one completed in 0.25 s, one cancelled before it started (no duration)
		self.seed(beta, "Completed", DAY2, 0.25)
		self.seed(beta, "Cancelled", DAY2, started=False)
		# outside the range: the day before and the day after
		self.seed(alpha, "Failed", add_days(DAY1, -1), 1, hour=23)
		self.seed(beta, "Completed", add_days(DAY3, 1), 1, hour=0)

	def seed(self, template: str, status: str, day: datetime.date, seconds: float | None = None, **kw) -> str:
		name = seed_run(template, status, day, seconds, **kw)
		self.runs.setdefault(f"{template}:{status}", []).append(name)
		return name

	def report(self, user: str = "Administrator", **filters) -> dict:
		"""The report as Desk runs it. `ignore_prepared_report`: Frappe switches a report to
		"prepared" (background jobs) when one of its runs raised in a process that lived 15 s
		longer (Report.execute_script_report's watcher is not cancelled on errors); these tests
		must not depend on what an earlier process did."""
		frappe.set_user(user)
		try:
			return run_report(
				REPORT, filters=json.dumps(filters or RANGE), user=user, ignore_prepared_report=True
			)
		finally:
			frappe.set_user("Administrator")

	def rows(self, result: dict) -> dict[str, dict]:
		return {row["template"]: row for row in result["result"]}

	def test_counts_success_rate_and_percentiles_per_template(self):
		result = self.report()
		self.assertEqual([c["fieldname"] for c in result["columns"]][:2], ["template", "runs"])
		rows = self.rows(result)
		self.assertEqual(set(rows), {self.alpha.name, self.beta.name})
		alpha, beta = rows[self.alpha.name], rows[self.beta.name]
		self.assertEqual([alpha[k] for k in COUNTED], [9, 4, 1, 1, 3])
		self.assertEqual(alpha["success_rate"], round(100 * 4 / 6, 2))
		self.assertEqual((alpha["median_duration"], alpha["p95_duration"]), (20.0, 100.0))
		self.assertEqual([beta[k] for k in COUNTED], [2, 1, 0, 1, 0])
		self.assertEqual(beta["success_rate"], 50.0)
		# the cancelled run never started: it counts as finished but has no duration
		self.assertEqual((beta["median_duration"], beta["p95_duration"]), (0.25, 0.25))
		self.assertEqual([r["template"] for r in result["result"]], [self.alpha.name, self.beta.name])
		summary = {s["label"]: s["value"] for s in result["report_summary"]}
		self.assertEqual(
			summary,
			{"Runs": 11, "Completed": 5, "Failed": 1, "Active": 3, "Success Rate": round(100 * 5 / 8, 2)},
		)

	def test_percentiles_are_nearest_rank_over_many_runs(self):
		"""100 durations 1..100 s plus one of 10,000 s: median = rank 51 -> 51 s, p95 = rank 96 -> 96 s;
		the long one lands in a bucket of its own and changes neither."""
		template = make_template([{"id": "w", "kind": "wait", "payload": {}}], name=unique("Analytics C"))
		for seconds in [*range(100, 0, -1), 10_000]:
			self.seed(template.name, "Completed", DAY2, seconds)
		row = self.rows(self.report(template=template.name, **RANGE))[template.name]
		self.assertEqual((row["runs"], row["median_duration"], row["p95_duration"]), (101, 51.0, 96.0))
		# 20 runs: median = rank 10, p95 = rank 19, in microseconds
		other = make_template([{"id": "w", "kind": "wait", "payload": {}}], name=unique("Analytics D"))
		for i in range(20):
			self.seed(other.name, "Failed", DAY1, 0.000123 * (i + 1))
		row = self.rows(self.report(template=other.name, **RANGE))[other.name]
		self.assertEqual((row["median_duration"], row["p95_duration"]), (0.00123, 0.002337))

	def test_chart_counts_runs_per_day_and_status(self):
		chart = self.report()["chart"]
		self.assertEqual(chart["type"], "bar")
		self.assertEqual(chart["data"]["labels"], ["1 Mar", "2 Mar", "3 Mar"])
		series = {d["name"]: d["values"] for d in chart["data"]["datasets"]}
		self.assertEqual(
			series,
			{
				"Queued": [0, 0, 1],
				"Running": [0, 1, 0],
				"Waiting": [0, 0, 1],
				"Completed": [2, 2, 1],
				"Failed": [1, 0, 0],
				"Cancelled": [0, 1, 1],
			},
		)

	def test_filters_by_template_status_and_days(self):
		only_beta = self.report(template=self.beta.name, **RANGE)
		self.assertEqual(list(self.rows(only_beta)), [self.beta.name])
		series = {d["name"]: d["values"] for d in only_beta["chart"]["data"]["datasets"]}
		self.assertEqual((series["Completed"], series["Cancelled"]), ([0, 1, 0], [0, 1, 0]))

		failed = self.report(status="Failed", **RANGE)
		self.assertEqual(list(self.rows(failed)), [self.alpha.name])
		row = self.rows(failed)[self.alpha.name]
		self.assertEqual([row[k] for k in COUNTED], [1, 0, 1, 0, 0])
		self.assertEqual((row["success_rate"], row["median_duration"], row["p95_duration"]), (0.0, 5.0, 5.0))
		self.assertEqual([d["name"] for d in failed["chart"]["data"]["datasets"]], ["Failed"])

		day2 = self.rows(self.report(from_date="2001-03-02", to_date="2001-03-02"))
		self.assertEqual([day2[self.alpha.name][k] for k in COUNTED], [2, 1, 0, 0, 1])
		self.assertEqual(day2[self.alpha.name]["median_duration"], 30.0)
		self.assertEqual([day2[self.beta.name][k] for k in COUNTED], [2, 1, 0, 1, 0])

		nothing = self.report(from_date="2001-04-01", to_date="2001-04-30")
		self.assertEqual(nothing["result"], [])
		self.assertEqual(len(nothing["chart"]["data"]["labels"]), 30)

	def test_the_default_range_is_the_last_30_days(self):
		day = getdate(today())
		self.seed(self.alpha.name, "Completed", day, 3, hour=0)
		self.seed(self.alpha.name, "Completed", add_days(day, -29), 3, hour=0)
		self.seed(self.alpha.name, "Completed", add_days(day, -30), 3, hour=23)
		result = run_report(REPORT, filters={}, ignore_prepared_report=True)
		self.assertEqual(self.rows(result)[self.alpha.name]["runs"], 2)
		labels = result["chart"]["data"]["labels"]
		first, last = add_days(day, -29), day
		self.assertEqual(
			(len(labels), labels[0], labels[-1]), (30, f"{first.day} {first:%b}", f"{last.day} {last:%b}")
		)

	def test_bad_filters_are_a_clear_validation_error(self):
		# execute() itself: through the report path, an error leaves Frappe's prepared-report
		# watcher running (see report()), and 15 s later it would switch the report for the site
		with self.assertRaisesRegex(frappe.ValidationError, "is after To Date"):
			execute(frappe._dict(from_date="2001-03-03", to_date="2001-03-01"))
		with self.assertRaisesRegex(frappe.ValidationError, "Status: Done is not one of"):
			execute(frappe._dict(status="Done", **RANGE))

	def test_each_count_links_to_exactly_its_runs(self):
		"""The routes the cells link to, read as Desk's list view reads them (a JSON value is
		[operator, value], anything else is equality), select the runs the cell counts."""
		for filters in (RANGE, {**RANGE, "status": "Completed"}):
			for row in self.report(**filters)["result"]:
				template = row["template"]
				statuses = {
					"runs_url": ("Queued", "Running", "Waiting", "Completed", "Failed", "Cancelled"),
					"completed_url": ("Completed",),
					"failed_url": ("Failed",),
					"cancelled_url": ("Cancelled",),
					"active_url": ("Queued", "Running", "Waiting"),
				}
				for key, among in statuses.items():
					with self.subTest(filters=filters, template=template, cell=key):
						if filters.get("status") and filters["status"] not in among:
							self.assertIsNone(row[key])
							continue
						expected = {
							name
							for status in among
							if status == filters.get("status", status)
							for name in self.runs.get(f"{template}:{status}", [])
							if frappe.db.get_value("Flow Run", name, "creation").date() in (DAY1, DAY2, DAY3)
						}
						self.assertEqual(set(self.list_view(row[key])), expected)
						cell = "runs" if key == "runs_url" else key.removesuffix("_url")
						self.assertEqual(len(expected), row[cell])

	def list_view(self, url: str) -> list[str]:
		parts = urlsplit(url)
		self.assertEqual(parts.path, "/app/flow-run")
		filters = []
		for field, value in parse_qsl(parts.query):
			if value.startswith("[") and value.endswith("]"):
				operator, operand = json.loads(value)
				filters.append(["Flow Run", field, operator, operand])
			else:
				filters.append(["Flow Run", field, "=", value])
		return frappe.get_list("Flow Run", filters=filters, pluck="name")

	def test_flow_users_may_run_it_users_without_a_flow_role_may_not(self):
		rows = self.rows(self.report(email("user")))
		self.assertEqual(rows[self.alpha.name]["runs"], 9)
		with self.assertRaises(frappe.PermissionError):
			self.report(email("norole"))
		# and its execute() refuses them too, should anything call it directly
		frappe.set_user(email("norole"))
		with self.assertRaises(frappe.PermissionError):
			execute(frappe._dict(RANGE))


class TestFlowAnalyticsInDesk(FlowTestCase):
	"""The report page in a real browser against `frappe serve` (committed fixtures: the server
	is another process; FlowTestCase deletes them after each test)."""

	@classmethod
	def setUpClass(cls):
		reason = missing_browser_tools()
		if reason:
			raise unittest.SkipTest(f"SKIPPING the Flow Analytics browser test: {reason}")
		super().setUpClass()
		cls.server = DeskServer(frappe.local.site)
		cls.server.start()
		try:
			cls.browser = Browser(cls.server)
		except Exception:
			cls.server.stop()
			raise

	@classmethod
	def tearDownClass(cls):
		cls.browser.close()
		cls.server.stop()
		super().tearDownClass()

	def test_the_page_draws_the_report_and_a_count_opens_its_runs(self):
		template = make_template([{"id": "w", "kind": "wait", "payload": {}}], name=unique("Analytics UI"))
		for status, day, seconds in [
			("Completed", DAY1, 10),
			("Completed", DAY2, 20),
			("Failed", DAY2, 5),
			("Waiting", DAY3, None),
		]:
			seed_run(template.name, status, day, seconds)
		seed_run(template.name, "Failed", add_days(DAY3, 1), 1)  # outside the range
		frappe.db.commit()

		_context, page = self.browser.context()
		query = "&".join(f"{k}={v}" for k, v in {**RANGE, "template": quote(template.name)}.items())
		page.goto(f"{self.server.url}/app/query-report/{quote(REPORT)}?{query}")
		page.wait_for_function(
			"() => frappe.query_report && frappe.query_report.data && frappe.query_report.data.length"
		)
		cells = page.locator(".dt-scrollable a[title='Show these runs']")
		self.assertEqual(cells.first.inner_text(), template.name)
		self.assertTrue(page.locator(".report-wrapper .chart-container svg, .frappe-chart").count())
		runs = page.locator(".report-summary .summary-item").filter(
			has=page.locator(".summary-label", has_text="Runs")
		)
		self.assertEqual(runs.locator(".summary-value").inner_text().strip(), "4")

		# the Failed count (1) opens the list of that one run
		page.locator(".dt-scrollable a[title='Show these runs'][href*='status=Failed']").click()
		page.wait_for_function(
			"() => window.cur_list && cur_list.doctype === 'Flow Run' && cur_list.data"
			" && !cur_list.list_view_settings_loading && cur_list.filter_area"
		)
		page.wait_for_function("() => cur_list.data.length === 1")
		filters = page.evaluate("() => cur_list.filter_area.get().map(f => f.slice(1, 4))")
		self.assertIn(["template", "=", template.name], filters)
		self.assertIn(["status", "=", "Failed"], filters)
		self.assertIn(["creation", "Between", ["2001-03-01", "2001-03-03"]], filters)

	def test_the_workspace_links_to_it(self):
		_context, page = self.browser.context()
		page.goto(f"{self.server.url}/app/flow-automation")
		link = page.locator("a.link-item[title='Flow Analytics']")
		# the workspace is drawn (its route set) before the click, else Desk may still swallow it
		page.wait_for_function("() => frappe.get_route_str().startsWith('Workspaces/')")
		link.wait_for(state="visible")
		self.assertIn("query-report/Flow Analytics", unquote(link.get_attribute("href") or ""))
		from playwright.sync_api import TimeoutError as PlaywrightTimeout

		for _attempt in range(3):  # a click while the workspace's widgets still render is lost
			if not page.evaluate("() => frappe.get_route_str().startsWith('Workspaces/')"):
				break  # it went somewhere: the wait below says whether it is the report
			link.click()
			try:
				page.wait_for_function(
					"() => frappe.get_route_str() === 'query-report/Flow Analytics'", timeout=10_000
				)
				break
			except PlaywrightTimeout:
				continue
		page.wait_for_function("() => frappe.get_route_str() === 'query-report/Flow Analytics'")
		page.wait_for_function(
			"() => frappe.query_report && frappe.query_report.report_name === 'Flow Analytics'"
		)
