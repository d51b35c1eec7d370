# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

from __future__ import annotations

from frappe.model.document import Document

from flow_automation.whatsapp.templates import template_row_name


class WhatsAppTemplate(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		account: DF.Link
		body_text: DF.Text | None
		button_titles: DF.SmallText | None
		category: DF.Data | None
		components: DF.Code | None
		language: DF.Data
		last_synced_at: DF.Datetime | None
		meta_id: DF.Data | None
		parameter_count: DF.Int
		status: DF.Data | None
		template_name: DF.Data

	# end: auto-generated types
	def autoname(self) -> None:
		self.name = template_row_name(self.account, self.template_name, self.language)
