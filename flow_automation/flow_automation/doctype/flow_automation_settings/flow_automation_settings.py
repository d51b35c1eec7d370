# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


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
		if (self.lease_seconds or 0) < 60:
			frappe.throw(frappe._("Lease Seconds must be at least 60"))
		if (self.claim_batch_size or 0) < 1:
			self.claim_batch_size = 200

	def on_update(self) -> None:
		clear_settings_cache()
		# again after commit: another process may have cached the old values meanwhile
		frappe.db.after_commit.add(clear_settings_cache)


def clear_settings_cache() -> None:
	frappe.cache.delete_value(["flow_automation:paused", "flow_automation:settings"])


def is_paused() -> bool:
	"""The kill switch: site_config `flow_automation_paused` overrides the setting."""
	if frappe.conf.get("flow_automation_paused") is not None:
		return bool(frappe.conf.get("flow_automation_paused"))
	return bool(
		frappe.cache.get_value(
			"flow_automation:paused",
			lambda: int(frappe.db.get_single_value("Flow Automation Settings", "pause_all") or 0),
		)
	)


def get_settings() -> dict:
	"""Flow Automation Settings as a dict, cached (cleared on save)."""
	return frappe.cache.get_value(
		"flow_automation:settings",
		lambda: frappe.get_cached_doc("Flow Automation Settings").as_dict(),
	)


def redact_pii_enabled() -> bool:
	return bool(get_settings().get("redact_pii"))
