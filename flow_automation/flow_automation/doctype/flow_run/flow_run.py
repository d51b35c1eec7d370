# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe.model.document import Document
from frappe.query_builder import Interval
from frappe.query_builder.functions import Now

from flow_automation.engine import FINISHED_RUN_STATUSES
from flow_automation.runtime import run_timeline


class FlowRun(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		advance_count: DF.Int
		completed_at: DF.Datetime | None
		contact: DF.Data | None
		dedup_key: DF.Data | None
		depth: DF.Int
		error: DF.LongText | None
		next_due_at: DF.Datetime | None
		parent_run: DF.Link | None
		parent_step: DF.Data | None
		reference_doctype: DF.Link | None
		reference_name: DF.DynamicLink | None
		run_as: DF.Link | None
		started_at: DF.Datetime | None
		status: DF.Literal["Queued", "Running", "Waiting", "Completed", "Failed", "Cancelled"]
		step_state: DF.JSON | None
		template: DF.Link | None
		template_version: DF.Link | None
		trigger_data: DF.JSON | None
		trigger_event: DF.Data | None
		trigger_type: DF.Data | None
		variables: DF.JSON | None
		version: DF.Int
	# end: auto-generated types

	def onload(self) -> None:
		self.set_onload("timeline", run_timeline(self))

	@staticmethod
	def clear_old_logs(days: int = 90) -> None:
		"""Delete finished runs older than `days`, with their logs and pending rows (Log Settings)."""
		run = frappe.qb.DocType("Flow Run")
		old_runs = (
			frappe.qb.from_(run)
			.select(run.name)
			.where(
				run.status.isin(tuple(FINISHED_RUN_STATUSES)) & (run.modified < (Now() - Interval(days=days)))
			)
			.limit(50_000)
			.run(pluck=True)
		)
		for chunk_start in range(0, len(old_runs), 1000):
			chunk = old_runs[chunk_start : chunk_start + 1000]
			for doctype in ("Flow Step Log", "Flow Step Pending"):
				table = frappe.qb.DocType(doctype)
				frappe.db.delete(table, filters=table.run.isin(chunk))
			frappe.db.delete(run, filters=run.name.isin(chunk))


def on_doctype_update() -> None:
	frappe.db.add_index("Flow Run", ["template", "status"])
	frappe.db.add_index("Flow Run", ["reference_doctype", "reference_name"])
	frappe.db.add_index("Flow Run", ["status", "modified"])
	frappe.db.add_index("Flow Run", ["parent_run"])
	frappe.db.add_index("Flow Run", ["template", "creation"])
	# Flow Analytics reads only these two, as covering indexes: per template and status over a
	# range of creation, with the timestamps of the durations; per status and day for its chart.
	frappe.db.add_index("Flow Run", ["template", "status", "creation", "started_at", "completed_at"])
	frappe.db.add_index("Flow Run", ["status", "creation"])
