"""After a run finishes: what other parts of the app (and other apps) want to know.

Callbacks are registered in hooks.py under `flow_run_finished` (dotted paths, like
`doc_events`), so the runtime never imports what sits above it: failure alerts and the
circuit breaker (`flow_automation.failures`), WhatsApp conversation bookkeeping, and any
other app's code. Each callback gets a `FinishedRun` and runs in its own savepoint: a
failing callback is logged and never undoes the run it was told about.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import frappe

from flow_automation.engine import RunStatus
from flow_automation.transaction import isolated

HOOK = "flow_run_finished"


@dataclass(frozen=True)
class FinishedRun:
	name: str
	template: str
	status: RunStatus
	error: str | None
	trigger_event: str | None
	reference_doctype: str | None
	reference_name: str | None
	parent_run: str | None
	contact: str | None

	@classmethod
	def of(cls, run: Any, status: str, error: str | None) -> FinishedRun:
		return cls(
			name=run.name,
			template=run.template,
			status=RunStatus(status),
			error=error,
			trigger_event=run.trigger_event,
			reference_doctype=run.reference_doctype,
			reference_name=run.reference_name,
			parent_run=run.parent_run,
			contact=run.contact,
		)

	def as_dict(self) -> dict[str, Any]:
		return asdict(self)


def notify_finished(run: FinishedRun) -> None:
	"""Call every `flow_run_finished` hook with the run; each failure is logged, none raised."""
	for path in frappe.get_hooks(HOOK):
		with isolated() as block:
			frappe.get_attr(path)(run)
		if block.failed:
			frappe.log_error(
				title=f"Flow Run {run.name}: {path} failed after the run ended {run.status}",
				message=block.traceback,
				reference_doctype="Flow Run",
				reference_name=run.name,
			)
