"""Send pacing shared by every worker through Redis: a per-number rate and a per-contact gap.

Meta throttles a business number (130429, default 80 messages/s) and a (business, contact)
pair (131056). Waiting here for a moment is cheaper than a refused send: each number gets a
one-second counter (INCR + EXPIRE), each contact a key that lives for the minimum gap
(SET NX PX). A send that would wait longer than `max_wait` seconds gives up with a
retryable error, and the step's retry policy tries again later.

Without Redis there is no shared count, so nothing is sent: a send that cannot take its turn
fails the same retryable way (never a burst past the rate while Redis is away), and its retries
are paced again once Redis is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import frappe
from redis.exceptions import RedisError

from flow_automation.engine import StepError

DEFAULT_MAX_WAIT_SECONDS = 5.0


class Throttled(StepError):
	"""The send would have to wait too long for its turn; try again later."""

	def __init__(self, message: str):
		super().__init__(message, retryable=True, code="throttled")


def _key(*parts: object) -> str:
	return frappe.cache.make_key("flow_automation:whatsapp:" + ":".join(str(p) for p in parts))


def wait_for_turn(
	phone_number_id: str,
	recipient: str,
	*,
	per_second: int,
	gap_seconds: float,
	max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
	clock: Callable[[], float] = time.time,
	sleep: Callable[[float], None] = time.sleep,
) -> float:
	"""Block until this number may send to `recipient` now; return the seconds waited.

	Raises `Throttled` when the turn is more than `max_wait` seconds away, or cannot be counted
	(Redis unreachable).
	"""
	try:
		return _wait(phone_number_id, recipient, per_second, gap_seconds, max_wait, clock, sleep)
	except RedisError as e:
		raise Throttled(
			f"sending from {phone_number_id} is paced through Redis, which is unreachable "
			f"({type(e).__name__}); nothing was sent, will retry"
		) from e


def _wait(
	phone_number_id: str,
	recipient: str,
	per_second: int,
	gap_seconds: float,
	max_wait: float,
	clock: Callable[[], float],
	sleep: Callable[[float], None],
) -> float:
	redis = frappe.cache
	waited = 0.0
	while True:
		now = clock()
		second = int(now)
		rate_key = _key("rate", phone_number_id, second)
		count = redis.incr(rate_key)
		if count == 1:
			redis.expire(rate_key, 2)
		if per_second and count > per_second:
			pause = second + 1 - now
		elif gap_seconds > 0 and not redis.set(
			_key("pace", phone_number_id, recipient), 1, nx=True, px=max(1, int(gap_seconds * 1000))
		):
			pause = max(redis.pttl(_key("pace", phone_number_id, recipient)), 1) / 1000
		else:
			return waited
		if waited + pause > max_wait:
			raise Throttled(
				f"sending to {recipient} from {phone_number_id} must wait {waited + pause:.1f} s "
				f"(rate {per_second}/s, {gap_seconds:g} s between messages to one contact); will retry"
			)
		sleep(pause)
		waited += pause
