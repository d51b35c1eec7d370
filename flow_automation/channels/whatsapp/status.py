"""Delivery status of an outbound message, and the one order it moves in.

Meta posts ``sent``, ``delivered``, ``read`` and ``failed`` callbacks and does not
promise to deliver them in order (a ``read`` can arrive before its ``delivered``, and a
retried webhook can repeat an old one). The stored status is therefore the *maximum*
of everything received so far, under this rank:

    queued < sent < delivered < read < failed

so the result does not depend on arrival order:

* status never moves backwards: ``read`` then ``delivered`` stays ``read``;
* ``failed`` is terminal: it overrides every other status and nothing undoes it (a
  late ``sent``, ``delivered`` or ``read`` leaves a failed message failed), so an
  operator never sees a failure disappear.

``queued`` is ours, not Meta's: the message is stored but Meta has not accepted it yet.
"""

from __future__ import annotations

QUEUED = "queued"
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"

STATUSES: tuple[str, ...] = (QUEUED, SENT, DELIVERED, READ, FAILED)
_RANK: dict[str, int] = {QUEUED: 0, SENT: 1, DELIVERED: 2, READ: 3, FAILED: 4}

# The options of the Select field "status" on the WhatsApp Message doctype.
FRAPPE_STATUS: dict[str, str] = {status: status.capitalize() for status in STATUSES}


def normalize_status(value: str | None) -> str | None:
	"""Return the lower-case status for ``value`` (Meta's or Frappe's spelling), or None if unknown."""
	if not isinstance(value, str):
		return None
	status = value.strip().lower()
	return status if status in _RANK else None


def advance_status(current: str | None, incoming: str | None) -> str:
	"""Return the status to keep after ``incoming`` arrives for a message now at ``current``.

	Unknown incoming values (Meta's ``deleted``/``warning``, typos) leave the status as it
	is; an empty or unknown current status counts as ``queued``.
	"""
	now = normalize_status(current) or QUEUED
	new = normalize_status(incoming)
	if new is None:
		return now
	return new if _RANK[new] > _RANK[now] else now


def is_final(status: str | None) -> bool:
	"""Return whether no later callback can change ``status`` (only ``failed`` is final)."""
	return normalize_status(status) == FAILED


def to_frappe_status(status: str | None) -> str:
	"""Return the Frappe Select option ("Queued", "Sent", ...) for a status."""
	return FRAPPE_STATUS[normalize_status(status) or QUEUED]


def from_frappe_status(option: str | None) -> str:
	"""Return the lower-case status for a Frappe Select option ("Delivered" -> "delivered")."""
	return normalize_status(option) or QUEUED
