// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.listview_settings["Flow Template"] = {
	add_fields: ["enabled", "trigger_type"],
	onload(listview) {
		listview.page.add_inner_button(__("New in Builder"), () =>
			frappe.set_route("flow-builder", "new")
		);
	},
	button: {
		show: () => true,
		get_label: () => __("Builder"),
		get_description: (doc) => __("Open {0} in the Flow Builder", [doc.name]),
		action: (doc) => frappe.set_route("flow-builder", doc.name),
	},
	has_indicator_for_draft: true,
	// The trigger type has its own list column (and filter); the indicator says whether it fires.
	get_indicator(doc) {
		return doc.enabled
			? [__("Enabled"), "green", "enabled,=,1"]
			: [__("Disabled"), "gray", "enabled,=,0"];
	},
};
