// Copyright (c) 2026, flow_automation developers
// For license information, please see license.txt

frappe.query_reports["Flow Analytics"] = {
	filters: [
		{
			fieldname: "from_date",
			label: __("From Date"),
			fieldtype: "Date",
			default: frappe.datetime.add_days(frappe.datetime.get_today(), -29),
			reqd: 1,
			on_change: (report) =>
				frappe.query_reports["Flow Analytics"].refresh_if_in_order(report),
		},
		{
			fieldname: "to_date",
			label: __("To Date"),
			fieldtype: "Date",
			default: frappe.datetime.get_today(),
			reqd: 1,
			on_change: (report) =>
				frappe.query_reports["Flow Analytics"].refresh_if_in_order(report),
		},
		{
			fieldname: "template",
			label: __("Template"),
			fieldtype: "Link",
			options: "Flow Template",
		},
		{
			fieldname: "status",
			label: __("Status"),
			fieldtype: "Select",
			options: ["", "Queued", "Running", "Waiting", "Completed", "Failed", "Cancelled"].map(
				(value) => ({ value, label: value ? __(value) : "" })
			),
		},
	],

	// Cells that open the Flow Run list filtered to their runs: the row field with the route.
	drill_down: {
		template: "runs_url",
		runs: "runs_url",
		completed: "completed_url",
		failed: "failed_url",
		cancelled: "cancelled_url",
		active: "active_url",
	},

	formatter(value, row, column, data, default_formatter) {
		const route =
			data && data[frappe.query_reports["Flow Analytics"].drill_down[column.fieldname]];
		if (!route || (column.fieldname !== "template" && !value)) {
			return default_formatter(value, row, column, data);
		}
		// the template cell is a Link: its text, not the default link to the template's form
		const text =
			column.fieldname === "template"
				? frappe.utils.escape_html(value)
				: default_formatter(value, row, column, data);
		const title = __("Show these runs");
		return `<a href="${frappe.utils.escape_html(route)}" title="${title}">${text}</a>`;
	},

	// Desk refreshes the report on every filter change; an inverted range only gets a warning
	// (the server refuses it, and Frappe makes a report whose run raised a prepared report).
	refresh_if_in_order(report) {
		const from_date = report.get_filter_value("from_date");
		const to_date = report.get_filter_value("to_date");
		if (from_date && to_date && from_date > to_date) {
			frappe.show_alert({ message: __("From Date is after To Date"), indicator: "orange" });
			return;
		}
		report.refresh(true);
	},
};
