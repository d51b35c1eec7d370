// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.listview_settings["Flow Step Pending"] = {
	add_fields: ["status", "trigger_at"],
	has_indicator_for_draft: true,
	get_indicator(doc) {
		// A Pending row past its due time means the minute cron is not firing (see Settings).
		if (
			doc.status === "Pending" &&
			doc.trigger_at &&
			doc.trigger_at < frappe.datetime.now_datetime()
		) {
			return [__("Overdue"), "red", "status,=,Pending"];
		}
		const colour = {
			Pending: "orange",
			Running: "blue",
			Done: "green",
			Failed: "red",
			Cancelled: "darkgrey",
		}[doc.status];
		return [__(doc.status), colour || "gray", `status,=,${doc.status}`];
	},
};
