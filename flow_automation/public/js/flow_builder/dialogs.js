// Dialogs of the builder (Frappe's own frappe.ui.Dialog): test runs, import, new from template.

function parse_json(text, label) {
	if (!text || !text.trim()) return {};
	try {
		return JSON.parse(text);
	} catch (e) {
		frappe.throw(__("{0} is not valid JSON: {1}", [label, e.message]));
	}
}

/** Steps a test run needs an answer for: questions, manual and webhook gates, sub-flows. */
function waiting_steps(store) {
	return (store.definition.steps || []).filter(
		(s) =>
			s.kind === "ask" ||
			(s.trigger && ["manual", "on_webhook"].includes(s.trigger.type)) ||
			(s.kind === "start_flow" && (s.payload || {}).wait)
	);
}

export function open_test_run_dialog(store) {
	const doctype = store.template.reference_doctype;
	const waiting = waiting_steps(store);
	const example = Object.fromEntries(
		waiting.map((s) => [
			s.id,
			s.kind === "ask" ? ((s.payload.buttons || [])[0] || {}).id || "yes" : {},
		])
	);
	const dialog = new frappe.ui.Dialog({
		title: __("Test run"),
		fields: [
			{
				fieldtype: "HTML",
				options: `<p class="text-muted small">${__(
					"Runs the flow as it is on the canvas (unsaved changes included) for real, with messages, emails and HTTP calls recorded instead of sent and delays fast-forwarded; then everything is rolled back."
				)}</p>`,
			},
			doctype
				? {
						fieldname: "reference_name",
						fieldtype: "Link",
						options: doctype,
						label: __("{0} to run on", [__(doctype)]),
				  }
				: null,
			{
				fieldname: "doc",
				fieldtype: "Code",
				options: "JSON",
				label: doctype
					? __("…or a document typed as JSON")
					: __("A document as JSON (optional)"),
				max_height: "120px",
			},
			{
				fieldname: "variables",
				fieldtype: "Code",
				options: "JSON",
				label: __("Variables"),
				max_height: "100px",
			},
			{
				fieldname: "answers",
				fieldtype: "Code",
				options: "JSON",
				label: __("Answers for steps that wait"),
				description: waiting.length
					? __("Steps that wait: {0}. A step without an answer waits for its timeout.", [
							waiting.map((s) => s.id).join(", "),
					  ])
					: __("No step waits in this flow."),
				default: waiting.length ? JSON.stringify(example, null, 1) : "",
				max_height: "120px",
			},
		].filter(Boolean),
		primary_action_label: __("Run"),
		async primary_action(values) {
			const args = {
				reference_name: values.reference_name || null,
				doc: values.reference_name
					? null
					: values.doc
					? parse_json(values.doc, __("Document"))
					: null,
				variables: parse_json(values.variables, __("Variables")),
				answers: parse_json(values.answers, __("Answers")),
			};
			dialog.hide();
			await store.test_run(args);
		},
	});
	dialog.show();
	return dialog;
}

export function open_import_dialog(on_done) {
	const dialog = new frappe.ui.Dialog({
		title: __("Import a flow"),
		fields: [
			{
				fieldname: "file",
				fieldtype: "Code",
				options: "JSON",
				label: __("Flow file (JSON)"),
				description: __(
					"A file exported from a Flow Template, or one from fixtures/. It becomes a new flow you can edit."
				),
				reqd: 1,
			},
			{ fieldname: "template_name", fieldtype: "Data", label: __("Name (optional)") },
		],
		primary_action_label: __("Import"),
		async primary_action(values) {
			const name = await frappe.xcall("flow_automation.builder.import_template", {
				data: values.file,
				template_name: values.template_name || null,
			});
			dialog.hide();
			on_done(name);
		},
	});
	dialog.show();
}

export async function open_starter_dialog(on_done) {
	const starters = await frappe.xcall("flow_automation.builder.starter_templates");
	const dialog = new frappe.ui.Dialog({
		title: __("New flow from a template"),
		fields: [
			{
				fieldname: "source",
				fieldtype: "Select",
				label: __("Template"),
				options: starters.map((s) => ({
					label: `${s.name}${s.category ? " · " + s.category : ""}`,
					value: s.name,
				})),
				reqd: 1,
			},
			{
				fieldname: "new_name",
				fieldtype: "Data",
				label: __("Name of the new flow"),
				reqd: 1,
			},
		],
		primary_action_label: __("Create"),
		async primary_action(values) {
			const name = await frappe.xcall(
				"flow_automation.flow_automation.doctype.flow_template.flow_template.duplicate_template",
				{ template: values.source, new_name: values.new_name }
			);
			dialog.hide();
			on_done(name);
		},
	});
	dialog.show();
}

export async function export_flow(name) {
	const data = await frappe.xcall("flow_automation.desk.export_template", { name });
	const blob = new Blob([JSON.stringify(data, null, 1)], { type: "application/json" });
	const link = document.createElement("a");
	link.href = URL.createObjectURL(blob);
	link.download = `${frappe.scrub(name)}.json`;
	document.body.appendChild(link);
	link.click();
	link.remove();
}
