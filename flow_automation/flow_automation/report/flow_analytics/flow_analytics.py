# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt
"""Flow Analytics: per template, the runs started in a date range, how they ended and how long
the finished ones took, with a chart of runs per day by status.

Definitions (the tests hold the report to them):
- a run belongs to the range when its `creation` falls on one of its days (both ends included);
- finished = Completed, Failed or Cancelled; active = Queued, Running or Waiting;
- success rate = completed / finished, in percent (blank without finished runs);
- duration = completed_at - started_at of a finished run that has both, in seconds;
- median and p95 are nearest-rank percentiles: with the n durations in ascending order, the
  p-th percentile is the one at rank ceil(p * n / 100) (so the median of an even count is the
  lower of the two middle values). Every value reported is one real run's duration.

The database does the counting, and every query reads a covering index of Flow Run (made in
its `on_doctype_update`), so the cost follows the runs in the range, not the table, and no
query returns more than a few hundred rows. Per template:
1. one grouped query counts its runs by status and its finished runs by duration bucket
   (DURATION_BOUNDS: about 280 bounds 10 % apart, from 100 µs to 400 days);
2. one query reads the median and the p95 exactly: only the runs of the one or two buckets
   that hold them are sorted (ROW_NUMBER over them), at the ranks left after the buckets below.
Then one grouped query counts runs per day and status for the chart. Statuses are grouped by
their position in STATUSES: a small integer is a much cheaper grouping key than the column.
`benchmarks/analytics.py` measures all this on a million runs. The SQL is MariaDB's.
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

import frappe
from frappe import _
from frappe.query_builder import CustomFunction
from frappe.query_builder.functions import Count, Date, Function
from frappe.query_builder.utils import PseudoColumn
from frappe.utils import add_days, date_diff, format_date, getdate, today
from pypika.analytics import RowNumber

from flow_automation.engine import ACTIVE_RUN_STATUSES, FINISHED_RUN_STATUSES, RunStatus
from flow_automation.roles import FLOW_USER_ROLES, require_roles

DEFAULT_DAYS = 30
PERCENTILES = (50, 95)
STATUSES = tuple(str(s) for s in RunStatus)
FINISHED = tuple(s for s in STATUSES if s in FINISHED_RUN_STATUSES)
ACTIVE = tuple(s for s in STATUSES if s in ACTIVE_RUN_STATUSES)
# One colour per status in the chart, in STATUSES order (Frappe's indicator colours).
STATUS_COLORS = ("#98A1A9", "#2490EF", "#ECAD4B", "#48BB74", "#E24C4C", "#4B5563")
# Bucket i of a duration (µs) holds [DURATION_BOUNDS[i - 1], DURATION_BOUNDS[i]), the first and
# the last open-ended: 100 µs, then 10 % more each time, up to 400 days.
DURATION_BOUNDS = tuple(round(100 * 1.1**i) for i in range(280) if 100 * 1.1**i < 400 * 86400e6)

TimestampDiff = CustomFunction("TIMESTAMPDIFF", ["unit", "start", "end"])


def execute(filters: dict | None = None):
	require_roles(FLOW_USER_ROLES)
	window = Window.from_filters(filters or {})
	rows = [template_row(window, template) for template in templates_with_runs(window)]
	rows = sorted((r for r in rows if r["runs"]), key=lambda r: (-r["runs"], r["template"]))
	return columns(), rows, None, runs_per_day_chart(window), summary(rows)


class Window:
	"""The report's filters, checked: the days (both included), a template, a status."""

	def __init__(
		self, from_date: datetime.date, to_date: datetime.date, template: str | None, status: str | None
	):
		self.from_date, self.to_date, self.template, self.status = from_date, to_date, template, status
		self.start = datetime.datetime.combine(from_date, datetime.time.min)
		self.end = datetime.datetime.combine(add_days(to_date, 1), datetime.time.min)

	@classmethod
	def from_filters(cls, filters: dict) -> Window:
		to_date = getdate(filters.get("to_date") or today())
		from_date = getdate(filters.get("from_date") or add_days(to_date, 1 - DEFAULT_DAYS))
		if from_date > to_date:
			frappe.throw(
				_("From Date {0} is after To Date {1}").format(from_date, to_date),
				frappe.ValidationError,
				title=_("Invalid Filter"),
			)
		status = filters.get("status") or None
		if status and status not in STATUSES:
			frappe.throw(
				_("Status: {0} is not one of {1}").format(status, ", ".join(STATUSES)),
				frappe.ValidationError,
				title=_("Invalid Filter"),
			)
		return cls(from_date, to_date, filters.get("template") or None, status)

	def statuses(self, among: tuple[str, ...] = STATUSES) -> tuple[str, ...]:
		"""The statuses to count among `among` (listed even when all are: the index ranges need them)."""
		return tuple(s for s in among if not self.status or s == self.status)

	def days(self) -> list[datetime.date]:
		return [add_days(self.from_date, i) for i in range(date_diff(self.to_date, self.from_date) + 1)]

	def runs_url(self, template: str, statuses: tuple[str, ...] = STATUSES) -> str | None:
		"""The Flow Run list filtered to the template's runs of the range with one of `statuses`
		(Desk's list view reads filters from the query string); None if the filter excludes them."""
		statuses = self.statuses(statuses)
		if not statuses:
			return None
		options: dict[str, str] = {
			"template": template,
			"creation": json.dumps(["Between", [str(self.from_date), str(self.to_date)]]),
		}
		if len(statuses) == 1:
			options["status"] = statuses[0]
		elif statuses != STATUSES:
			options["status"] = json.dumps(["in", list(statuses)])
		return "/app/flow-run?" + urlencode(options)


def runs_in(window: Window, statuses: tuple[str, ...], template: str | None = None):
	"""(Flow Run, a query of its rows in the window with one of `statuses`, of `template` if given)."""
	run = frappe.qb.DocType("Flow Run")
	query = frappe.qb.from_(run).where(
		run.status.isin(statuses) & (run.creation >= window.start) & (run.creation < window.end)
	)
	if template:
		query = query.where(run.template == template)
	return run, query


def status_index(run):
	"""1 for STATUSES[0], 2 for the next... (FIELD: the status as a small integer)."""
	return Function("FIELD", run.status, *STATUSES).as_("status_index")


def duration_of(run):
	"""completed_at - started_at in microseconds (NULL unless both are set)."""
	return TimestampDiff(PseudoColumn("MICROSECOND"), run.started_at, run.completed_at)


def bucket_of(duration):
	"""The duration's bucket (INTERVAL: a binary search in DURATION_BOUNDS; -1 for NULL)."""
	# our own integers, written into the SQL as they are rather than as 280 parameters
	return Function("INTERVAL", duration, PseudoColumn(",".join(map(str, DURATION_BOUNDS)))).as_("bucket")


def bucket_bounds(bucket: int) -> tuple[int | None, int | None]:
	"""The durations (µs) of a bucket, both ends included; None: no bound."""
	low = DURATION_BOUNDS[bucket - 1] if bucket > 0 else None
	high = DURATION_BOUNDS[bucket] - 1 if bucket < len(DURATION_BOUNDS) else None
	return low, high


def templates_with_runs(window: Window) -> list[str]:
	if window.template:
		return [window.template]
	run = frappe.qb.DocType("Flow Run")
	# DISTINCT on an indexed column: a loose index scan, one step per template
	found = frappe.qb.from_(run).select(run.template).distinct().run(pluck=True)
	return sorted(t for t in found if t)


def template_row(window: Window, template: str) -> dict[str, Any]:
	run, query = runs_in(window, window.statuses(), template)
	status, bucket = status_index(run), bucket_of(duration_of(run))
	groups = query.select(status, bucket, Count("*").as_("runs")).groupby(status, bucket).run(as_dict=True)
	by_status: dict[str, int] = defaultdict(int)
	histogram: dict[int, int] = defaultdict(int)
	for group in groups:
		name = STATUSES[group.status_index - 1]
		by_status[name] += group.runs
		if name in FINISHED and group.bucket >= 0:
			histogram[group.bucket] += group.runs
	completed, failed, cancelled = (by_status[s] for s in FINISHED)
	finished = completed + failed + cancelled
	median, p95 = percentiles(window, template, histogram)
	return {
		"template": template,
		"runs": sum(by_status.values()),
		"completed": completed,
		"failed": failed,
		"cancelled": cancelled,
		"active": sum(by_status[s] for s in ACTIVE),
		"success_rate": round(100 * completed / finished, 2) if finished else None,
		"median_duration": median,
		"p95_duration": p95,
		"runs_url": window.runs_url(template),
		"completed_url": window.runs_url(template, (str(RunStatus.COMPLETED),)),
		"failed_url": window.runs_url(template, (str(RunStatus.FAILED),)),
		"cancelled_url": window.runs_url(template, (str(RunStatus.CANCELLED),)),
		"active_url": window.runs_url(template, ACTIVE),
	}


def percentiles(window: Window, template: str, histogram: dict[int, int]) -> list[float | None]:
	"""The nearest-rank PERCENTILES of the template's durations, in seconds, in one query: the
	runs of the buckets that hold them, numbered in order of duration."""
	count = sum(histogram.values())
	if not count:
		return [None] * len(PERCENTILES)
	buckets = sorted(histogram)
	wanted: dict[int, int] = {}  # percentile -> its bucket
	position: dict[int, int] = {}  # percentile -> its 1-based rank among those buckets' runs
	for p in PERCENTILES:
		rank = (p * count + 99) // 100  # ceil(p * count / 100), in integers
		below = 0
		for bucket in buckets:
			if rank <= below + histogram[bucket]:
				break
			below += histogram[bucket]
		wanted[p], position[p] = bucket, rank - below
	read = sorted(set(wanted.values()))
	for p in PERCENTILES:  # runs of the buckets read that sort before this one come first
		position[p] += sum(histogram[b] for b in read if b < wanted[p])

	run, query = runs_in(window, window.statuses(FINISHED), template)
	duration = duration_of(run)
	in_buckets = None
	for bucket in read:
		low, high = bucket_bounds(bucket)
		condition = (
			duration[low:high]
			if low is not None and high is not None
			else (duration <= high if low is None else duration >= low)
		)
		in_buckets = condition if in_buckets is None else in_buckets | condition
	candidates = query.select(duration.as_("duration"), RowNumber().orderby(duration).as_("position")).where(
		in_buckets
	)
	found = dict(
		frappe.qb.from_(candidates)
		.select(candidates.position, candidates.duration)
		.where(candidates.position.isin(sorted(set(position.values()))))
		.run()
	)
	# both queries read the request's one snapshot (REPEATABLE READ), so every rank is there
	return [found[position[p]] / 1_000_000 if position[p] in found else None for p in PERCENTILES]


def runs_per_day_chart(window: Window) -> dict[str, Any]:
	run, query = runs_in(window, window.statuses(), window.template)
	day, status = Date(run.creation).as_("day"), status_index(run)
	counts = {
		(getdate(r.day), STATUSES[r.status_index - 1]): r.runs
		for r in query.select(day, status, Count("*").as_("runs")).groupby(day, status).run(as_dict=True)
	}
	days = window.days()
	statuses = window.statuses()
	return {
		"data": {
			"labels": [format_date(d, "d MMM") for d in days],
			"datasets": [{"name": _(s), "values": [counts.get((d, s), 0) for d in days]} for s in statuses],
		},
		"type": "bar",
		"barOptions": {"stacked": 1},
		"axisOptions": {"xIsSeries": 1},
		"colors": [STATUS_COLORS[STATUSES.index(s)] for s in statuses],
	}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
	total = {key: sum(r[key] for r in rows) for key in ("runs", "completed", "failed", "cancelled", "active")}
	finished = total["completed"] + total["failed"] + total["cancelled"]
	return [
		{"value": total["runs"], "label": _("Runs"), "datatype": "Int", "indicator": "Blue"},
		{"value": total["completed"], "label": _("Completed"), "datatype": "Int", "indicator": "Green"},
		{"value": total["failed"], "label": _("Failed"), "datatype": "Int", "indicator": "Red"},
		{"value": total["active"], "label": _("Active"), "datatype": "Int", "indicator": "Orange"},
		{
			"value": round(100 * total["completed"] / finished, 2) if finished else None,
			"label": _("Success Rate"),
			"datatype": "Percent",
			"indicator": "Green",
		},
	]


def columns() -> list[dict[str, Any]]:
	return [
		{
			"fieldname": "template",
			"label": _("Template"),
			"fieldtype": "Link",
			"options": "Flow Template",
			"width": 240,
		},
		{"fieldname": "runs", "label": _("Runs"), "fieldtype": "Int", "width": 90},
		{"fieldname": "completed", "label": _("Completed"), "fieldtype": "Int", "width": 100},
		{"fieldname": "failed", "label": _("Failed"), "fieldtype": "Int", "width": 90},
		{"fieldname": "cancelled", "label": _("Cancelled"), "fieldtype": "Int", "width": 100},
		{"fieldname": "active", "label": _("Active"), "fieldtype": "Int", "width": 90},
		{"fieldname": "success_rate", "label": _("Success Rate"), "fieldtype": "Percent", "width": 120},
		{
			"fieldname": "median_duration",
			"label": _("Median Duration (s)"),
			"fieldtype": "Float",
			"precision": 3,
			"width": 160,
		},
		{
			"fieldname": "p95_duration",
			"label": _("P95 Duration (s)"),
			"fieldtype": "Float",
			"precision": 3,
			"width": 150,
		},
	]
