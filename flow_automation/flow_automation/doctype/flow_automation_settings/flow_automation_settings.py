# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe.model.document import Document

from flow_automation.settings import clear_settings_cache


class FlowAutomationSettings(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		claim_batch_size: DF.Int
		failure_alert_recipients: DF.SmallText | None
		lease_seconds: DF.Int
		log_retention_days: DF.Int
		max_recursion_depth: DF.Int
		pause_all: DF.Check
		pending_retention_days: DF.Int
		redact_pii: DF.Check
		run_retention_days: DF.Int
	# end: auto-generated types

	def validate(self) -> None:
		if not self.lease_seconds:
			self.lease_seconds = 1800  # left empty: the default, as for the claim batch below
		if self.lease_seconds < 60:
			frappe.throw(frappe._("Lease Seconds must be at least 60"))
		if (self.claim_batch_size or 0) < 1:
			self.claim_batch_size = 200

	def on_update(self) -> None:
		clear_settings_cache()
		# again after commit: another process may have cached the old values meanwhile
		frappe.db.after_commit.add(clear_settings_cache)
