"""Triggers: document events, named events, schedules and webhooks → Flow Runs."""

from __future__ import annotations

import datetime as dt

import frappe

TRIGGER_CACHE_KEY = "flow_automation:trigger_index"


def clear_trigger_cache() -> None:
	frappe.cache.delete_value(TRIGGER_CACHE_KEY)


def drain_outbox(now: dt.datetime) -> int:
	"""Queued runs whose after-commit job was lost get advanced (see the triggers issue)."""
	return 0
