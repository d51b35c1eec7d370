// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

// frappe.ui.form.on("WhatsApp Message", {
// 	refresh(frm) {

// 	},
// });
