// Copyright (c) 2026, flow_automation developers
// For license information, please see license.txt

frappe.ui.form.on("WhatsApp Account", {
	refresh(frm) {
		if (frm.is_new() || !frm.doc.waba_id) return;
		frm.add_custom_button(__("Sync Templates"), () => {
			frappe
				.call({
					method: "flow_automation.whatsapp.api.sync_templates",
					args: { account: frm.doc.name },
					freeze: true,
					freeze_message: __("Fetching templates from Meta…"),
				})
				.then(({ message }) => {
					const result = (message || {})[frm.doc.name] || {};
					frappe.show_alert({
						message: __("{0} created, {1} updated, {2} unchanged, {3} marked deleted", [
							result.created || 0,
							result.updated || 0,
							result.unchanged || 0,
							result.deleted || 0,
						]),
						indicator: "green",
					});
					frm.reload_doc();
				});
		});
		frm.add_custom_button(__("Templates"), () =>
			frappe.set_route("List", "WhatsApp Template", { account: frm.doc.name })
		);
	},
});
