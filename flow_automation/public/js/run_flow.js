// "Run Flow" for documents whose doctype has enabled Manual flow templates:
// a button group on the form and a bulk action in the list view (with Frappe's progress bar).
// The list of templates per doctype comes with the boot info (no request per form load).

frappe.provide("flow_automation");

flow_automation.manual_templates = (doctype) =>
	(frappe.boot.flow_automation_manual || {})[doctype] || [];

flow_automation.start_run = (template, doctype, name) =>
	frappe
		.call({
			method: "flow_automation.api.start",
			args: { template, reference_doctype: doctype, reference_name: name },
			freeze: true,
			freeze_message: __("Starting {0}...", [template]),
		})
		.then((r) => {
			const run = r.message.run;
			frappe.show_alert({
				message: __("Flow {0} started: {1}", [
					template,
					`<a href="/app/flow-run/${encodeURIComponent(run)}">${run}</a>`,
				]),
				indicator: "green",
			});
		});

// One call per chunk, so the progress bar moves and a long selection never times out.
flow_automation.start_many = async (template, doctype, names) => {
	const chunk = 20;
	const title = __("Starting {0}", [template]);
	let started = 0;
	for (let i = 0; i < names.length; i += chunk) {
		frappe.show_progress(title, i, names.length, __("{0} of {1}", [i, names.length]));
		const r = await frappe.call({
			method: "flow_automation.api.start_many",
			args: { template, reference_doctype: doctype, names: names.slice(i, i + chunk) },
		});
		started += (r.message.runs || []).length;
	}
	frappe.show_progress(title, names.length, names.length, __("Done"));
	frappe.hide_progress();
	frappe.show_alert({
		message: __("{0} runs of {1} started ({2} documents already had one, or were skipped)", [
			started,
			template,
			names.length - started,
		]),
		indicator: "green",
	});
};

flow_automation.pick_template = (doctype, action) => {
	const templates = flow_automation.manual_templates(doctype);
	if (templates.length === 1) return action(templates[0]);
	const dialog = new frappe.ui.Dialog({
		title: __("Run Flow"),
		fields: [
			{
				fieldname: "template",
				fieldtype: "Select",
				label: __("Flow Template"),
				options: templates,
				default: templates[0],
				reqd: 1,
			},
		],
		primary_action_label: __("Run"),
		primary_action: ({ template }) => {
			dialog.hide();
			action(template);
		},
	});
	dialog.show();
};

$(document).on("form-refresh", (event, frm) => {
	if (!frm || frm.is_new() || !frm.doc || !frm.doc.name) return;
	for (const template of flow_automation.manual_templates(frm.doctype)) {
		frm.add_custom_button(
			template,
			() => flow_automation.start_run(template, frm.doctype, frm.doc.name),
			__("Run Flow")
		);
	}
});

if (frappe.views && frappe.views.ListView) {
	const get_actions_menu_items = frappe.views.ListView.prototype.get_actions_menu_items;
	frappe.views.ListView.prototype.get_actions_menu_items = function () {
		const items = get_actions_menu_items.call(this);
		if (flow_automation.manual_templates(this.doctype).length) {
			items.push({
				label: __("Run Flow"),
				action: () => {
					const names = this.get_checked_items(true);
					if (!names.length) return frappe.msgprint(__("Select the documents first"));
					flow_automation.pick_template(this.doctype, (template) =>
						flow_automation.start_many(template, this.doctype, names)
					);
				},
				standard: false,
			});
		}
		return items;
	};
}
