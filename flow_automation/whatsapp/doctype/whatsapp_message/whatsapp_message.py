# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

from __future__ import annotations

import frappe
from frappe.model.document import Document


class WhatsAppMessage(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		account: DF.Link | None
		body: DF.Text | None
		contact_name: DF.Data | None
		contact_number: DF.Data | None
		context_wamid: DF.Data | None
		dedup_key: DF.Data | None
		delivered_at: DF.Datetime | None
		direction: DF.Literal["Outbound", "Inbound"]
		error_code: DF.Int
		error_details: DF.SmallText | None
		error_title: DF.Data | None
		failed_at: DF.Datetime | None
		fallback_template: DF.Code | None
		idempotency_key: DF.Data | None
		media_file: DF.Attach | None
		media_id: DF.Data | None
		media_mime_type: DF.Data | None
		message_type: DF.Data | None
		outcome: DF.Data | None
		payload: DF.Code | None
		processing_error: DF.SmallText | None
		processing_status: DF.Literal["", "Pending", "Processing", "Done", "Failed"]
		read_at: DF.Datetime | None
		received_at: DF.Datetime | None
		reference_doctype: DF.Link | None
		reference_name: DF.DynamicLink | None
		reply_id: DF.Data | None
		reply_title: DF.Data | None
		run: DF.Link | None
		sent_at: DF.Datetime | None
		status: DF.Literal["Queued", "Sent", "Delivered", "Read", "Failed", "Received"]
		step_id: DF.Data | None
		template: DF.Data | None
		template_language: DF.Data | None
		wamid: DF.Data | None
	# end: auto-generated types

	@staticmethod
	def clear_old_logs(days: int = 180) -> None:
		"""Delete messages older than `days` (Log Settings); inbound rows still to process stay."""
		from frappe.query_builder import Interval
		from frappe.query_builder.functions import Now

		table = frappe.qb.DocType("WhatsApp Message")
		frappe.db.delete(
			table,
			filters=(table.modified < (Now() - Interval(days=days)))
			& (table.processing_status.isnull() | table.processing_status.isin(("", "Done", "Failed"))),
		)


def on_doctype_update() -> None:
	# the dedup window: WHERE dedup_key = ? AND creation >= ?
	frappe.db.add_index("WhatsApp Message", ["dedup_key", "creation"])
	# the inbound drain: WHERE direction = 'Inbound' AND processing_status = 'Pending'
	frappe.db.add_index("WhatsApp Message", ["direction", "processing_status", "creation"])
	frappe.db.add_index("WhatsApp Message", ["run", "step_id"])
	frappe.db.add_index("WhatsApp Message", ["contact_number", "creation"])
