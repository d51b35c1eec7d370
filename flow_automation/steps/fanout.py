"""The for_each step: a sub-flow per item, through the same mechanism as a schedule's "for each
matching document" (the runtime's batch start, reached through the run's host).

What the payload means (the list, the items, the bounds, what a child's ending does) is the
engine's (`engine/fanout_kinds.py`); these handlers only connect it to the site: the template
must exist and be enabled, the children are written and let start N at a time, and the
results are read back when the last one ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import frappe

from flow_automation.engine import (
	Outcome,
	Step,
	StepError,
	fan_out,
	fan_out_started,
	results_output,
	simulated_outcome,
)
from flow_automation.steps.base import StepCall, check_child_depth, handles


class FanOutHost(Protocol):
	"""What these handlers ask of the run executing them (the runtime's FrappeHost)."""

	def start_children(
		self,
		step: Step,
		template: str,
		children: Sequence[tuple[str | None, str | None, Mapping[str, Any]]],
		*,
		batch: str,
		concurrency: int,
	) -> list[str]: ...

	def release_children(self, step: Step, batch: str, indexes: Sequence[int]) -> list[str]: ...

	def children_of_batch(self, step: Step, batch: str) -> list[dict[str, Any]]: ...


def _host(call: StepCall) -> FanOutHost:
	return call.host  # type: ignore[return-value]


@handles("for_each")
def for_each(call: StepCall) -> Outcome:
	fan = fan_out(call.payload, call.context)
	enabled = frappe.db.get_value("Flow Template", fan.template, "enabled")
	if enabled is None:
		raise StepError(f"template: flow template {fan.template!r} does not exist", retryable=False)
	if not enabled:
		raise StepError(f"template: flow template {fan.template!r} is disabled", retryable=False)
	check_child_depth(call)
	if call.dry_run:
		call.record(
			"start sub-flows",
			template=fan.template,
			count=fan.total,
			items=fan.preview(),
			concurrency=fan.concurrency,
			wait=fan.wait,
		)
		return simulated_outcome(fan)
	# one batch per attempt group: a manual retry of the step starts a new one
	batch = call.idempotency_key
	runs = _host(call).start_children(
		call.step,
		fan.template,
		[(child.doctype, child.name, child.variables) for child in fan.children],
		batch=batch,
		concurrency=fan.concurrency,
	)
	return fan_out_started(fan, batch=batch, released=min(fan.concurrency, len(runs)))


@handles("for_each:release")
def release(call: StepCall) -> None:
	"""Effect `for_each:release`: earlier children ended, let these start."""
	_host(call).release_children(call.step, call.payload["batch"], call.payload["indexes"])


@handles("for_each:collect")
def collect(call: StepCall) -> dict[str, Any]:
	"""Effect `for_each:collect`: the last child ended; its batch's results, in item order."""
	children = _host(call).children_of_batch(call.step, call.payload["batch"])
	return results_output(children, call.payload["total"], call.payload.get("collect"))
