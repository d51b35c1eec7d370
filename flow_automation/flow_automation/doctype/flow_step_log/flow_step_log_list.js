// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.listview_settings["Flow Step Log"] = {
	add_fields: ["status", "attempt", "kind"],
	has_indicator_for_draft: true,
	get_indicator(doc) {
		const colour = { Success: "green", Failed: "red", Waiting: "orange", Resumed: "blue" }[
			doc.status
		];
		return [__(doc.status), colour || "gray", `status,=,${doc.status}`];
	},
};
