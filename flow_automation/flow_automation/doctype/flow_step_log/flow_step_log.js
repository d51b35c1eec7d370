// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.ui.form.on("Flow Step Log", {
	refresh(frm) {
		const colour = { Success: "green", Failed: "red", Waiting: "orange", Resumed: "blue" }[
			frm.doc.status
		];
		frm.page.set_indicator(__(frm.doc.status), colour || "gray");
		frm.add_custom_button(__("Flow Run"), () =>
			frappe.set_route("Form", "Flow Run", frm.doc.run)
		);
	},
});
