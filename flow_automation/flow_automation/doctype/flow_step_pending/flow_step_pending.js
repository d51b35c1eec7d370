// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.ui.form.on("Flow Step Pending", {
	refresh(frm) {
		const colour = {
			Pending: "orange",
			Running: "blue",
			Done: "green",
			Failed: "red",
			Cancelled: "darkgrey",
		}[frm.doc.status];
		frm.page.set_indicator(__(frm.doc.status), colour || "gray");
		frm.add_custom_button(__("Flow Run"), () =>
			frappe.set_route("Form", "Flow Run", frm.doc.run)
		);
	},
});
