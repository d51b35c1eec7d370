"""Server methods only the Desk UI needs: template export, scheduler health, workspace cards.

The run and template operations themselves live in `flow_automation.api`; these methods
read and report, and each checks the caller's role and document permission first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import frappe
from frappe import _
from frappe.utils import add_days, add_to_date, cint, flt, now_datetime, nowdate
from frappe.utils.background_jobs import get_queue, get_workers

from flow_automation.roles import FLOW_MANAGER_ROLES, FLOW_USER_ROLES, requires_roles
from flow_automation.transaction import flow_queue

# The minute cron, as hooks.py registers it (its Scheduled Job Type has this method).
CRON_METHOD = "flow_automation.scheduler.every_minute"

# Overdue = still Pending this long after its due time: the minute cron should have fired it.
OVERDUE_GRACE_MINUTES = 5


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def export_template(name: str) -> dict[str, Any]:
	"""The template as a portable JSON file (Flow Template `as_export()`), for download."""
	if not name or not frappe.db.exists("Flow Template", name):
		frappe.throw(
			_("Flow Template {0} does not exist").format(frappe.bold(name)), frappe.DoesNotExistError
		)
	frappe.has_permission("Flow Template", "export", name, throw=True)
	return frappe.get_doc("Flow Template", name).as_export()


@frappe.whitelist()
@requires_roles(FLOW_MANAGER_ROLES)
def get_scheduler_status() -> dict[str, Any]:
	"""Whether delayed steps will fire on time on this site, and what to do if not.

	The minute cron (`CRON_METHOD`) only runs when the scheduler is enabled and not paused,
	and a dormant site runs scheduled jobs once a day (DESIGN §10).
	"""
	frappe.has_permission("Flow Automation Settings", "read", throw=True)
	from frappe.utils.scheduler import is_dormant, is_scheduler_disabled

	status: dict[str, Any] = {
		"site": frappe.local.site,
		"scheduler_enabled": not is_scheduler_disabled(verbose=False),
		"scheduler_paused": bool(frappe.conf.pause_scheduler),
		"maintenance_mode": bool(frappe.conf.maintenance_mode),
		"dormant": is_dormant(),
		# Frappe reads System Settings "dormant_days" (0 means its default, 4), not site config.
		"dormant_days": cint(frappe.get_system_settings("dormant_days")) or 4,
		# Frappe never treats a developer-mode site as dormant, so the check above is moot there.
		"developer_mode": bool(frappe.conf.developer_mode),
		"last_cron_run": frappe.db.get_value("Scheduled Job Type", {"method": CRON_METHOD}, "last_execution"),
		**pending_counts(now_datetime()),
		**queue_status(),
	}
	status["problems"] = scheduler_problems(status)
	status["healthy"] = not status["problems"]
	return status


def queue_status() -> dict[str, Any]:
	"""The RQ queue flow jobs go to and how many workers listen on it (None: Redis unreachable)."""
	queue = flow_queue()
	try:
		workers = len(get_workers(get_queue(queue)))
	except Exception:
		workers = None
	return {"queue": queue, "queue_workers": workers}


def pending_counts(now: datetime) -> dict[str, Any]:
	"""Pending rows due now, overdue (past the grace period) and upcoming, plus the oldest overdue."""
	overdue_before = add_to_date(now, minutes=-OVERDUE_GRACE_MINUTES)
	pending = {"status": "Pending"}
	oldest = frappe.get_all(
		"Flow Step Pending",
		filters={**pending, "trigger_at": ("<", overdue_before)},
		fields=["name", "run", "step_id", "trigger_at"],
		order_by="trigger_at asc",
		limit=1,
	)
	return {
		"pending_due": frappe.db.count("Flow Step Pending", {**pending, "trigger_at": ("<=", now)}),
		"pending_overdue": frappe.db.count(
			"Flow Step Pending", {**pending, "trigger_at": ("<", overdue_before)}
		),
		"pending_upcoming": frappe.db.count("Flow Step Pending", {**pending, "trigger_at": (">", now)}),
		"oldest_overdue": oldest[0] if oldest else None,
	}


def scheduler_problems(status: dict[str, Any]) -> list[dict[str, str]]:
	"""What stops the minute cron from running on time, each with the command that fixes it."""
	site = status["site"]
	problems = []
	if not status["scheduler_enabled"]:
		problems.append(
			{
				"title": _("The scheduler is disabled"),
				"detail": _("Delayed, dated and retried steps never fire."),
				"fix": f"bench --site {site} enable-scheduler",
			}
		)
	if status["scheduler_paused"]:
		problems.append(
			{
				"title": _("The scheduler is paused (site config pause_scheduler)"),
				"detail": _("No scheduled job runs until it is resumed."),
				"fix": f"bench --site {site} scheduler resume",
			}
		)
	if status["maintenance_mode"]:
		problems.append(
			{
				"title": _("The site is in maintenance mode"),
				"detail": _("No scheduled job runs in maintenance mode."),
				"fix": f"bench --site {site} set-maintenance-mode off",
			}
		)
	if status["dormant"]:
		# Dormant = no Activity Log row (a login, for example) for dormant_days days.
		problems.append(
			{
				"title": _("The site is dormant"),
				"detail": _(
					"Nobody has used the site for {0} days, so Frappe runs scheduled jobs only once a day "
					"and delays can be a day late. Any login wakes it up; to keep it awake on quiet sites, "
					"raise System Settings › Run Jobs only Daily if Inactive For (Days)."
				).format(status["dormant_days"]),
				"fix": (
					f"bench --site {site} execute frappe.db.set_single_value "
					"--args \"['System Settings', 'dormant_days', 3650]\""
				),
			}
		)
	if status["pending_overdue"] and not problems:
		problems.append(
			{
				"title": _("Steps are overdue although the scheduler is on"),
				"detail": _(
					"Check that the bench's scheduler process and a worker for the {0} queue are running."
				).format(status["queue"]),
				"fix": "bench doctor",
			}
		)
	return problems


@frappe.whitelist()
@requires_roles(FLOW_USER_ROLES)
def failure_rate_card(filters: str | dict | None = None) -> dict[str, Any]:
	"""Number Card (type Custom): share of runs of the last 7 days that failed, in percent."""
	frappe.has_permission("Flow Run", "read", throw=True)
	since = add_days(nowdate(), -7)
	finished = frappe.get_all(
		"Flow Run",
		filters={"creation": (">=", since), "status": ("in", ("Completed", "Failed"))},
		fields=["status", "count(name) as runs"],
		group_by="status",
	)
	counts = {row.status: row.runs for row in finished}
	total = sum(counts.values())
	rate = flt(100.0 * counts.get("Failed", 0) / total, 1) if total else 0
	return {
		"value": rate,
		"fieldtype": "Percent",
		"route": ["List", "Flow Run"],
		"route_options": {"status": "Failed"},
	}
