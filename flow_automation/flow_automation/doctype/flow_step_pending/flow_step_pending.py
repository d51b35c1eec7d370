# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe.model.document import Document
from frappe.query_builder import Interval
from frappe.query_builder.functions import Now


class FlowStepPending(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		attempt: DF.Int
		last_error: DF.SmallText | None
		lease_until: DF.Datetime | None
		purpose: DF.Literal["delay", "date", "retry", "timeout", "queued"]
		run: DF.Link
		status: DF.Literal["Pending", "Running", "Done", "Failed", "Cancelled"]
		step_id: DF.Data | None
		template: DF.Link | None
		trigger_at: DF.Datetime | None
	# end: auto-generated types

	@staticmethod
	def clear_old_logs(days: int = 7) -> None:
		"""Delete finished pending rows older than `days` (Log Settings)."""
		table = frappe.qb.DocType("Flow Step Pending")
		frappe.db.delete(
			table,
			filters=(
				table.status.isin(("Done", "Cancelled", "Failed"))
				& (table.modified < (Now() - Interval(days=days)))
			),
		)


def on_doctype_update() -> None:
	# the claim query: WHERE status = 'Pending' AND trigger_at <= now ORDER BY trigger_at
	frappe.db.add_index("Flow Step Pending", ["status", "trigger_at"])
	frappe.db.add_index("Flow Step Pending", ["run", "step_id"])
