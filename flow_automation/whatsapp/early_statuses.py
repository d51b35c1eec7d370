"""Delivery reports that beat their send's commit, kept in Redis until the send commits.

Meta can call back within milliseconds of accepting a message, before the transaction that
stored its wamid has committed. The webhook keeps such a report here for an hour; when the
send commits it enqueues `delivery_status.apply_early_statuses`, which takes them.
"""

from __future__ import annotations

from typing import Any

import frappe
from redis.exceptions import RedisError

from flow_automation.transaction import enqueue

EARLY_STATUS_SECONDS = 3600
MAX_KEPT = 10


def _key(wamid: str) -> str:
	return f"flow_automation:whatsapp:early_status:{wamid}"


def keep(wamid: str, item: dict[str, Any]) -> None:
	key = _key(wamid)
	kept = frappe.cache.get_value(key, expires=True) or []
	kept.append(item)
	frappe.cache.set_value(key, kept[-MAX_KEPT:], expires_in_sec=EARLY_STATUS_SECONDS)


def take(wamid: str) -> list[dict[str, Any]]:
	"""The reports kept for `wamid` (removed from Redis)."""
	key = _key(wamid)
	kept = frappe.cache.get_value(key, expires=True) or []
	frappe.cache.delete_value(key)
	return kept


def after_send(wamid: str) -> None:
	"""Called when a send's transaction commits: apply reports that arrived before it did.

	After a commit nothing may raise: without Redis there are no kept reports to apply anyway."""
	try:
		if frappe.cache.get_value(_key(wamid), expires=True):
			enqueue(
				"flow_automation.whatsapp.delivery_status.apply_early_statuses", queue="short", wamid=wamid
			)
	except RedisError as e:
		frappe.logger("flow_automation").error(f"early statuses of {wamid} not checked: Redis ({e})")
