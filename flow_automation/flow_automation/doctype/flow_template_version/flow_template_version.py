# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe import _
from frappe.model.document import Document


class FlowTemplateVersion(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		definition: DF.Code | None
		definition_hash: DF.Data | None
		template: DF.Link
		version: DF.Int
	# end: auto-generated types

	def validate(self) -> None:
		if not self.is_new():
			frappe.throw(_("Flow Template Versions are immutable: edit the template instead."))

	def on_trash(self) -> None:
		if frappe.db.exists("Flow Run", {"template_version": self.name}):
			frappe.throw(
				_("Version {0} is pinned by flow runs and cannot be deleted.").format(frappe.bold(self.name)),
				frappe.LinkExistsError,
			)
