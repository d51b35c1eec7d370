"""Copies of cached facts that a process keeps for a few seconds, for the webhook's hot path.

Frappe's `site_cache(ttl=…)` does the same job, but on every call it builds a JSON key and
reads the clock through pytz (about 20 µs, four calls per webhook delivery); a copy here
takes no arguments and costs a dict lookup and a monotonic clock read. Copies are per site,
per process: `clear()` forgets this process's, the others' expire on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import frappe

T = TypeVar("T")


class ProcessCopy:
	"""What `process_copy` returns: call it for the value, `clear()` it to read afresh."""

	def __init__(self, load: Callable[[], Any], seconds: float) -> None:
		self.load = load
		self.seconds = seconds
		self.copies: dict[str, tuple[float, Any]] = {}
		wraps(load)(self)

	def __call__(self) -> Any:
		site = frappe.local.site
		now = time.monotonic()
		held = self.copies.get(site)
		if held is None or held[0] <= now:
			held = (now + self.seconds, self.load())
			self.copies[site] = held
		return held[1]

	def clear(self) -> None:
		self.copies.clear()


def process_copy(seconds: float) -> Callable[[Callable[[], T]], ProcessCopy]:
	"""Keep what the decorated loader returns for `seconds` in this process, per site."""

	def decorate(load: Callable[[], T]) -> ProcessCopy:
		return ProcessCopy(load, seconds)

	return decorate
