"""Retry policy: exponential backoff with deterministic jitter."""

from __future__ import annotations

import random

from flow_automation.engine.definition import RetryPolicy


def backoff_seconds(policy: RetryPolicy, attempt: int, seed: str = "") -> float:
	"""Seconds to wait after failed attempt number `attempt` (1-based).

	Doubles per attempt from `backoff_seconds`, capped at `max_backoff_seconds`, then
	"equal jitter": half fixed, half random. The random half is seeded by (seed, attempt) so
	the planner stays deterministic while runs that failed together spread out.
	"""
	base = policy.backoff_seconds * (2 ** max(attempt - 1, 0))
	capped = min(base, policy.max_backoff_seconds)
	jitter = random.Random(f"{seed}:{attempt}").random()
	return capped / 2 + capped / 2 * jitter


def has_attempts_left(policy: RetryPolicy, attempt: int) -> bool:
	return attempt < policy.max_attempts
