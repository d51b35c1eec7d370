"""The 24-hour customer service window: when a free-form message may be sent.

Meta delivers non-template messages (text, media, interactive, reactions) only within 24
hours of the contact's last message to the business; outside it, only an approved
template can open the conversation (otherwise the send fails with 131047, after Meta has
accepted it). Checking before sending turns that late, asynchronous failure into a clear
step error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import limits

Moment = float | int | datetime


def _seconds_between(earlier: Moment, later: Moment) -> float:
	if isinstance(earlier, datetime) and isinstance(later, datetime):
		# Both naive (Frappe's system-time datetimes) or both aware: subtract directly.
		return (later - earlier).total_seconds()
	start = earlier.timestamp() if isinstance(earlier, datetime) else float(earlier)
	end = later.timestamp() if isinstance(later, datetime) else float(later)
	return end - start


def needs_open_window(message: Mapping[str, Any] | str) -> bool:
	"""Return whether a message body (or its ``type``) may only be sent inside the window."""
	kind = message if isinstance(message, str) else message.get("type")
	return kind != "template"


def window_open(last_inbound_at: Moment | None, now: Moment | None = None) -> bool:
	"""Return whether the contact's last message (Unix seconds or datetime) was under 24 hours ago."""
	if last_inbound_at is None:
		return False
	elapsed = _seconds_between(last_inbound_at, time.time() if now is None else now)
	return elapsed < limits.CUSTOMER_SERVICE_WINDOW_SECONDS


def window_problem(
	message: Mapping[str, Any] | str, last_inbound_at: Moment | None, now: Moment | None = None
) -> str | None:
	"""Return why ``message`` cannot be sent now (window closed), or None if it can."""
	if not needs_open_window(message) or window_open(last_inbound_at, now):
		return None
	kind = message if isinstance(message, str) else message.get("type")
	if last_inbound_at is None:
		since = "the contact has never written to this number"
	else:
		hours = _seconds_between(last_inbound_at, time.time() if now is None else now) / 3600
		since = f"the contact last wrote {hours:.0f} hours ago"
	return (
		f"cannot send a {kind} message: {since}, and WhatsApp allows free-form messages only within "
		"24 hours of the contact's last message; send an approved template instead"
	)
