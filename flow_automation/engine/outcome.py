"""What one execution of a step produced; the planner turns it into step state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DONE = "done"
FAILED = "failed"
WAITING = "waiting"


class StepError(Exception):
	"""Raised by a step handler: the step failed with a message for the operator.

	`retryable=False` skips the remaining attempts (bad input will not get better by waiting).
	"""

	def __init__(self, message: str, *, retryable: bool = True, code: str | int | None = None):
		super().__init__(message)
		self.retryable = retryable
		self.code = code


# Not frozen: one is made for every decision, and a frozen dataclass takes three times as long to
# make. Treated as a value all the same: nothing changes one once it is made.
@dataclass
class Outcome:
	status: str
	output: Any = None
	branch: str | None = None
	error: str | None = None
	retryable: bool = True
	# For WAITING: what the step waits for and until when (a timeout fires after `until`).
	wait_type: str | None = None
	until: dt.datetime | None = None
	wait_data: Mapping[str, Any] = field(default_factory=dict)
	# Run variables this step sets (set_variables, a saved answer).
	variables: Mapping[str, Any] = field(default_factory=dict)
	# Side effects the host must perform while resuming (e.g. re-ask after an invalid answer).
	effects: tuple[Mapping[str, Any], ...] = ()

	@classmethod
	def done(cls, output: Any = None, branch: str | None = None, **kw: Any) -> Outcome:
		return cls(DONE, output=output, branch=branch, **kw)

	@classmethod
	def failed(cls, error: str, retryable: bool = True, **kw: Any) -> Outcome:
		return cls(FAILED, error=error, retryable=retryable, **kw)

	@classmethod
	def waiting(
		cls, wait_type: str, until: dt.datetime | None = None, output: Any = None, **wait_data: Any
	) -> Outcome:
		return cls(WAITING, output=output, wait_type=wait_type, until=until, wait_data=wait_data)
