// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

frappe.ui.form.on("Flow Template Version", {
	refresh(frm) {
		frm.add_custom_button(__("Runs of this Version"), () =>
			frappe.set_route("List", "Flow Run", { template_version: frm.doc.name })
		);
	},
});
