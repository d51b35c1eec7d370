# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe.model.document import Document
from frappe.query_builder import Interval
from frappe.query_builder.functions import Now


class FlowStepLog(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		attempt: DF.Int
		branch: DF.Data | None
		duration_ms: DF.Float
		error: DF.LongText | None
		input: DF.Code | None
		kind: DF.Data | None
		output: DF.Code | None
		pii_redacted: DF.Check
		retry_at: DF.Datetime | None
		run: DF.Link
		started_at: DF.Datetime | None
		status: DF.Literal["Success", "Failed", "Waiting", "Resumed"]
		step_id: DF.Data | None
		template: DF.Link | None
	# end: auto-generated types

	@staticmethod
	def clear_old_logs(days: int = 30) -> None:
		"""Delete step logs older than `days` (Log Settings)."""
		table = frappe.qb.DocType("Flow Step Log")
		frappe.db.delete(table, filters=(table.modified < (Now() - Interval(days=days))))


def on_doctype_update() -> None:
	frappe.db.add_index("Flow Step Log", ["run", "step_id"])
	# the builder's per-step statistics read a template's recent logs
	frappe.db.add_index("Flow Step Log", ["template", "creation"])
