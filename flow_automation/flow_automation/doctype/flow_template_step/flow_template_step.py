# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

from frappe.model.document import Document


class FlowTemplateStep(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		backoff_seconds: DF.Float
		branch: DF.Data | None
		delay_days: DF.Float
		delay_hours: DF.Float
		delay_minutes: DF.Float
		depends_on: DF.Data | None
		kind: DF.Autocomplete
		label: DF.Data | None
		max_attempts: DF.Int
		on_error: DF.Literal["fail", "continue", "branch"]
		parent: DF.Data
		parent_id: DF.Data | None
		parentfield: DF.Data
		parenttype: DF.Data
		payload: DF.Code | None
		step_id: DF.Data
		trigger_at: DF.Data | None
		trigger_type: DF.Literal[
			"", "on_flow_start", "on_prev_complete", "after_delay", "on_date", "on_webhook", "manual"
		]
	# end: auto-generated types

	pass
