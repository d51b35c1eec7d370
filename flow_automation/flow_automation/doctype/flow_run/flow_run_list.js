// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.listview_settings["Flow Run"] = {
	add_fields: ["status", "reference_doctype", "error"],
	has_indicator_for_draft: true,
	get_indicator(doc) {
		const colour = {
			Queued: "gray",
			Running: "blue",
			Waiting: "orange",
			Completed: "green",
			Failed: "red",
			Cancelled: "darkgrey",
		}[doc.status];
		return [__(doc.status), colour || "gray", `status,=,${doc.status}`];
	},
};
