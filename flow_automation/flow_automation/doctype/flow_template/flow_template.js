// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

// Shared helpers, inlined by Frappe when it serves this form script (render_include).
{% include "flow_automation/public/js/flow_diagram.js" %}
{% include "flow_automation/public/js/payload_editor.js" %}
// Form scripts run as global <script> tags: keep our names out of the global scope.
(() => {
	// Step fields whose change alters the diagram.
	const DIAGRAM_FIELDS = [
		"step_id",
		"kind",
		"label",
		"parent_id",
		"branch",
		"depends_on",
		"trigger_type",
		"delay_days",
		"delay_hours",
		"delay_minutes",
		"trigger_at",
	];
	const NO_VALUE_TYPES = ["Table", "Table MultiSelect", ...frappe.model.no_value_type];
	const FLOW_USER_ROLES = ["Flow User", "Flow Manager", "System Manager"];
	const FLOW_MANAGER_ROLES = ["Flow Manager", "System Manager"];

	frappe.ui.form.on("Flow Template", {
		onload(frm) {
			flow_template.normalise_time_of_day(frm);
			flow_template.load_catalog(frm);
		},

		refresh(frm) {
			flow_template.show_intro(frm);
			flow_template.add_buttons(frm);
			flow_template.set_trigger_field_options(frm);
			flow_template.load_catalog(frm).then(() => {
				flow_template.apply_kind_options(frm);
				flow_template.render_diagram(frm);
			});
		},

		reference_doctype(frm) {
			flow_template.set_trigger_field_options(frm);
		},
	});

	const step_events = {
		kind(frm, cdt, cdn) {
			flow_template.prefill_example(frm, cdt, cdn);
			flow_template.describe_kind(frm, cdn);
			flow_template.render_diagram_soon(frm);
		},
		form_render(frm, cdt, cdn) {
			flow_template.describe_kind(frm, cdn);
			flow_template.add_row_payload_button(frm, cdn);
		},
		steps_add: (frm) => flow_template.render_diagram_soon(frm),
		steps_remove: (frm) => flow_template.render_diagram_soon(frm),
		steps_move: (frm) => flow_template.render_diagram_soon(frm),
		steps_delete: (frm) => flow_template.render_diagram_soon(frm),
	};
	for (const field of DIAGRAM_FIELDS) {
		if (!step_events[field])
			step_events[field] = (frm) => flow_template.render_diagram_soon(frm);
	}
	frappe.ui.form.on("Flow Template Step", step_events);

	const flow_template = {
		/**
		 * Frappe's new_doc stamps every Time field with nowtime() (microseconds, unpadded
		 * seconds such as "19:54:4.346807"); the Time control drops the seconds on render and
		 * the form opens as "Not Saved". Give the control the value it would write anyway.
		 */
		normalise_time_of_day(frm) {
			const value = frm.doc.time_of_day;
			if (!value || /^\d{2}:\d{2}:00$/.test(value)) return;
			const [h = 0, m = 0] = value.split(":").map((part) => Math.floor(flt(part)));
			frm.doc.time_of_day = [h, m, 0].map((n) => String(n).padStart(2, "0")).join(":");
		},

		// --- the step catalog ---------------------------------------------------------------

		/** The catalog, fetched once per form load and cached on the form. */
		load_catalog(frm) {
			if (!frm.flow_catalog) {
				frm.flow_catalog = frappe
					.xcall("flow_automation.api.get_step_catalog")
					.then((catalog) => {
						catalog.by_name = Object.fromEntries(
							catalog.kinds.map((k) => [k.name, k])
						);
						return catalog;
					})
					// Without the catalog (no role) the form still works, with plain kind names.
					.catch(() => ({ kinds: [], by_name: {}, triggers: [] }))
					.then((catalog) => (frm._catalog = catalog));
			}
			return frm.flow_catalog;
		},

		kind_of(frm, row) {
			return frm._catalog && row ? frm._catalog.by_name[row.kind] : null;
		},

		apply_kind_options(frm) {
			frm.flow_catalog.then((catalog) => {
				if (!catalog.kinds.length) return;
				const options = catalog.kinds.map((k) => ({
					value: k.name,
					label: k.name,
					description: `${__(k.label)} · ${__(k.group)}`,
				}));
				frm.fields_dict.steps.grid.update_docfield_property("kind", "options", options);
			});
		},

		/** A new step gets the kind's example payload, so the user edits instead of guessing. */
		prefill_example(frm, cdt, cdn) {
			const row = locals[cdt][cdn];
			const kind = flow_template.kind_of(frm, row);
			const current = (row.payload || "").trim();
			if (kind && (!current || current === "{}")) {
				frappe.model.set_value(
					cdt,
					cdn,
					"payload",
					JSON.stringify(kind.example || {}, null, 1)
				);
			}
		},

		/** The kind's description, output and branches under the row's Payload field. */
		describe_kind(frm, cdn) {
			const grid_row = frm.fields_dict.steps.grid.get_row(cdn);
			const field = grid_row && grid_row.grid_form && grid_row.grid_form.fields_dict.payload;
			if (!field) return;
			const kind = flow_template.kind_of(frm, grid_row.doc);
			field.set_description(kind ? flow_template.kind_help_html(kind) : "");
		},

		kind_help_html(kind) {
			const esc = frappe.utils.escape_html;
			const lines = [`<b>${esc(__(kind.label))}</b>: ${esc(__(kind.description))}`];
			if (kind.output) lines.push(`${__("Output")}: <code>${esc(kind.output)}</code>`);
			const branches = kind.branches || {};
			if ((branches.fixed && branches.fixed.length) || branches.from_payload) {
				const parts = (branches.fixed || []).map((b) => `<code>${esc(b)}</code>`);
				if (branches.from_payload) parts.push(esc(__(branches.from_payload)));
				lines.push(
					`${__("Branches")}: ${parts.join(", ")} <span class="text-muted">${__(
						"(children choose one in their Branch field)"
					)}</span>`
				);
			}
			if (kind.waits) lines.push(__("Waits after it runs until it is completed."));
			return `<div class="flow-kind-help">${lines.join("<br>")}</div>`;
		},

		add_row_payload_button(frm, cdn) {
			const grid_row = frm.fields_dict.steps.grid.get_row(cdn);
			const field = grid_row.grid_form.fields_dict.payload;
			if (!field || field.$wrapper.find(".btn-edit-payload").length) return;
			$(`<button type="button" class="btn btn-xs btn-secondary btn-edit-payload">
					${frappe.utils.icon("edit", "xs")} ${__("Edit Payload")}
				</button>`)
				.on("click", () => flow_template.edit_payload(frm, grid_row.doc.name))
				.prependTo(field.$wrapper);
		},

		edit_payload(frm, cdn) {
			frm.flow_catalog.then((catalog) => {
				const row = locals["Flow Template Step"][cdn];
				flow_automation.payload_editor.open(catalog.by_name[row.kind], row, (payload) => {
					frappe.model.set_value(row.doctype, row.name, "payload", payload);
					frm.refresh_field("steps");
				});
			});
		},

		/** Grid button: edit the payload of the one selected (ticked) row. */
		edit_selected_payload(frm) {
			const selected = frm.fields_dict.steps.grid.get_selected_children();
			if (selected.length !== 1) {
				frappe.msgprint(__("Tick exactly one step row to edit its payload."));
				return;
			}
			flow_template.edit_payload(frm, selected[0].name);
		},

		// --- diagram ------------------------------------------------------------------------

		render_diagram_soon(frm) {
			clearTimeout(frm._flow_diagram_timer);
			frm._flow_diagram_timer = setTimeout(() => flow_template.render_diagram(frm), 150);
		},

		render_diagram(frm) {
			const field = frm.fields_dict.builder_html;
			if (!field) return;
			const describe = (row) => {
				const kind = flow_template.kind_of(frm, row);
				const kind_label = kind ? __(kind.label) : row.kind || __("no kind");
				return `${kind_label} · ${flow_template.trigger_summary(row)}`;
			};
			const svg = flow_automation.diagram.render(frm.doc.steps || [], describe);
			field.$wrapper.html(`<div class="flow-diagram-wrapper">
				<div class="flow-diagram-caption text-muted small">
					${__("Flow diagram")} · ${__(
				"arrows run from a step to the steps that follow it; branch arrows are labelled; click a step to edit it"
			)}
				</div>
				<div class="flow-diagram-scroll">${svg}</div>
			</div>`);
			field.$wrapper.find(".flow-node").on("click", function () {
				const grid_row = frm.fields_dict.steps.grid.get_row($(this).attr("data-row"));
				grid_row && grid_row.toggle_view(true);
			});
		},

		trigger_summary(row) {
			switch (row.trigger_type) {
				case "after_delay": {
					const parts = [
						[row.delay_days, __("d")],
						[row.delay_hours, __("h")],
						[row.delay_minutes, __("m")],
					]
						.filter(([v]) => flt(v))
						.map(([v, unit]) => `${flt(v)}${unit}`);
					return __("after {0}", [parts.join(" ") || "0"]);
				}
				case "on_date":
					return __("on {0}", [row.trigger_at || __("a date")]);
				case "on_webhook":
					return __("waits for webhook");
				case "manual":
					return __("manual gate");
				case "on_flow_start":
					return __("at start");
				default:
					return row.parent_id || row.depends_on ? __("after previous") : __("at start");
			}
		},

		// --- trigger section ----------------------------------------------------------------

		/** Value Change / Days Before-After pick a field of the reference doctype. */
		set_trigger_field_options(frm) {
			const doctype = frm.doc.reference_doctype;
			const apply = (fields) => {
				const date_fields = fields.filter((df) =>
					["Date", "Datetime"].includes(df.fieldtype)
				);
				frm.set_df_property(
					"value_changed_field",
					"options",
					flow_template.select_options(fields, frm.doc.value_changed_field)
				);
				frm.set_df_property(
					"date_field",
					"options",
					flow_template.select_options(date_fields, frm.doc.date_field)
				);
			};
			if (!doctype) return apply([]);
			frappe.model.with_doctype(doctype, () => {
				const fields = frappe.meta
					.get_docfields(doctype)
					.filter((df) => !NO_VALUE_TYPES.includes(df.fieldtype) && df.fieldname);
				apply(fields);
			});
		},

		select_options(fields, current) {
			const options = [{ value: "", label: "" }].concat(
				fields.map((df) => ({
					value: df.fieldname,
					label: `${__(df.label || df.fieldname)} (${df.fieldname})`,
				}))
			);
			// Keep a saved value visible even if the doctype no longer has that field.
			if (current && !fields.some((df) => df.fieldname === current)) {
				options.push({ value: current, label: current });
			}
			return options;
		},

		// --- intro and buttons -------------------------------------------------------------

		show_intro(frm) {
			if (frm.doc.is_system) {
				frm.set_intro(
					__(
						"This is a system template shipped with the app: it cannot be deleted or renamed, and re-seeding the app's templates overwrites its steps. Use Duplicate to make your own copy to customise."
					),
					"blue"
				);
			} else {
				frm.set_intro("");
			}
		},

		add_buttons(frm) {
			frm.fields_dict.steps.grid.add_custom_button(__("Edit Payload"), () =>
				flow_template.edit_selected_payload(frm)
			);
			if (frm.is_new()) return;

			if (frappe.user.has_role(FLOW_USER_ROLES)) {
				frm.add_custom_button(__("Open in Builder"), () => {
					frappe.set_route("flow-builder", frm.doc.name);
				});
			}
			// Mirror the server's role checks (api.simulate: managers; api.start: users).
			if (frappe.user.has_role(FLOW_MANAGER_ROLES)) {
				frm.add_custom_button(__("Test (Dry Run)"), () =>
					flow_template.dry_run_dialog(frm)
				);
			}
			const manual = frm.doc.trigger_type === "Manual" && frm.doc.enabled;
			if (manual && frappe.user.has_role(FLOW_USER_ROLES)) {
				frm.add_custom_button(__("Start Run"), () => flow_template.start_run_dialog(frm));
			}
			frm.add_custom_button(
				__("Runs"),
				() => frappe.set_route("List", "Flow Run", { template: frm.doc.name }),
				__("View")
			);
			frm.add_custom_button(
				__("Versions"),
				() =>
					frappe.set_route("List", "Flow Template Version", { template: frm.doc.name }),
				__("View")
			);
			if (frappe.model.can_create("Flow Template")) {
				frm.add_custom_button(
					__("Duplicate"),
					() => flow_template.duplicate(frm),
					__("Actions")
				);
			}
			if (frappe.model.can_export("Flow Template")) {
				frm.add_custom_button(
					__("Export"),
					() => flow_template.export(frm),
					__("Actions")
				);
			}
		},

		duplicate(frm) {
			frappe.prompt(
				{
					fieldname: "new_name",
					fieldtype: "Data",
					label: __("New Template Name"),
					reqd: 1,
					default: __("{0} (copy)", [frm.doc.template_name]),
				},
				({ new_name }) => {
					frappe
						.xcall(
							"flow_automation.flow_automation.doctype.flow_template.flow_template.duplicate_template",
							{ template: frm.doc.name, new_name }
						)
						.then((name) => {
							frappe.show_alert({
								message: __("Copied to {0}", [name]),
								indicator: "green",
							});
							frappe.set_route("Form", "Flow Template", name);
						});
				},
				__("Duplicate Template"),
				__("Duplicate")
			);
		},

		export(frm) {
			frappe
				.xcall("flow_automation.desk.export_template", { name: frm.doc.name })
				.then((data) => {
					const blob = new Blob([JSON.stringify(data, null, 1) + "\n"], {
						type: "application/json",
					});
					const link = document.createElement("a");
					link.href = URL.createObjectURL(blob);
					link.download = `${frappe.scrub(frm.doc.name)}.json`;
					document.body.appendChild(link);
					link.click();
					setTimeout(() => {
						URL.revokeObjectURL(link.href);
						link.remove();
					}, 1000);
				});
		},

		/** Document Type + Document (Dynamic Link) fields, defaulting to the template's doctype. */
		document_fields(frm, reqd) {
			return [
				{
					fieldname: "reference_doctype",
					fieldtype: "Link",
					label: __("Document Type"),
					options: "DocType",
					default: frm.doc.reference_doctype,
					reqd: reqd && frm.doc.reference_doctype ? 1 : 0,
				},
				{
					fieldname: "reference_name",
					fieldtype: "Dynamic Link",
					label: __("Document"),
					options: "reference_doctype",
					reqd: reqd && frm.doc.reference_doctype ? 1 : 0,
				},
			];
		},

		start_run_dialog(frm) {
			const dialog = new frappe.ui.Dialog({
				title: __("Start Run · {0}", [frm.doc.name]),
				fields: [
					...flow_template.document_fields(frm, true),
					{
						fieldname: "variables",
						fieldtype: "Code",
						options: "JSON",
						label: __("Variables"),
						description: __(
							"Optional JSON object, merged over the template's variables."
						),
					},
				],
				primary_action_label: __("Start"),
				primary_action(values) {
					frappe
						.xcall("flow_automation.api.start", {
							template: frm.doc.name,
							reference_doctype: values.reference_name
								? values.reference_doctype
								: null,
							reference_name: values.reference_name || null,
							variables: values.variables || null,
							run_now: 1,
						})
						.then((result) => {
							dialog.hide();
							frappe.set_route("Form", "Flow Run", result.run);
						});
				},
			});
			dialog.show();
		},

		dry_run_dialog(frm) {
			if (frm.is_dirty()) {
				frappe.msgprint(
					__("Save the template first: the dry run uses the saved version.")
				);
				return;
			}
			const dialog = new frappe.ui.Dialog({
				title: __("Test (Dry Run) · {0}", [frm.doc.name]),
				size: "extra-large",
				fields: [
					...flow_template.document_fields(frm, false),
					{ fieldtype: "Column Break" },
					{
						fieldname: "variables",
						fieldtype: "Code",
						options: "JSON",
						label: __("Variables"),
						max_height: "6rem",
						description: __("Optional JSON object."),
					},
					{
						fieldname: "answers",
						fieldtype: "Code",
						options: "JSON",
						label: __("Answers"),
						max_height: "6rem",
						description: __(
							"Optional JSON object: step id → what a waiting step receives (a reply, a completion result)."
						),
					},
					{ fieldtype: "Section Break" },
					{ fieldname: "result", fieldtype: "HTML" },
				],
				primary_action_label: __("Run Dry Run"),
				primary_action(values) {
					const $result = dialog.fields_dict.result.$wrapper;
					$result.html(`<div class="text-muted">${__("Running…")}</div>`);
					frappe
						.xcall("flow_automation.api.simulate", {
							template: frm.doc.name,
							reference_doctype: values.reference_name
								? values.reference_doctype
								: null,
							reference_name: values.reference_name || null,
							variables: values.variables || null,
							answers: values.answers || null,
						})
						.then((result) => $result.html(flow_template.dry_run_html(result)))
						.catch(() => $result.empty());
				},
			});
			dialog.$wrapper.addClass("flow-dry-run-dialog");
			dialog.show();
		},

		dry_run_html(result) {
			const esc = frappe.utils.escape_html;
			const is_empty = (v) =>
				v === null || v === undefined || (typeof v === "object" && !Object.keys(v).length);
			// Payload and output fold away: a trace is read step by step, details on demand.
			const json_block = (title, value) =>
				is_empty(value)
					? ""
					: `${title ? `<div class="text-muted small">${title}</div>` : ""}<pre>${esc(
							JSON.stringify(value, null, 1)
					  )}</pre>`;
			const details = (summary, ...blocks) =>
				blocks.join("")
					? `<details><summary>${summary}</summary>${blocks.join("")}</details>`
					: "";
			const call_details = (c) =>
				Object.fromEntries(
					Object.entries(c).filter(([k]) => !["step", "kind", "action"].includes(k))
				);

			const rows = (result.timeline || [])
				.map(
					(t) => `<tr class="flow-dry-run-row" data-step="${esc(t.step)}">
					<td class="text-nowrap">${esc(t.at || "")}</td>
					<td><b>${esc(t.step)}</b></td>
					<td>${esc(t.kind)}</td>
					<td>${esc(t.action)}${t.note ? `<div class="text-muted small">${esc(t.note)}</div>` : ""}</td>
					<td>${esc(t.branch || "")}</td>
					<td>${t.error ? `<div class="text-danger">${esc(t.error)}</div>` : ""}${details(
						__("payload / output"),
						json_block(__("Payload"), t.payload),
						json_block(__("Output"), t.output)
					)}</td>
				</tr>`
				)
				.join("");
			const calls = (result.calls || [])
				.map(
					(c) => `<tr><td><b>${esc(c.step)}</b></td><td>${esc(c.kind)}</td>
					<td>${esc(c.action || "")}</td>
					<td>${details(__("details"), json_block("", call_details(c)))}</td></tr>`
				)
				.join("");
			const colour =
				{ Completed: "green", Failed: "red", Waiting: "orange" }[result.status] || "blue";
			return `<div class="flow-dry-run-result">
				<p><span class="indicator-pill ${colour}">${__(result.status)}</span>
					<span class="text-muted small">${esc(result.started_at || "")} → ${esc(
				result.ended_at || ""
			)}</span></p>
				${result.error ? `<div class="alert alert-danger">${esc(result.error)}</div>` : ""}
				<table class="table table-bordered table-sm flow-dry-run-timeline">
					<thead><tr><th>${__("Time")}</th><th>${__("Step")}</th><th>${__("Kind")}</th>
					<th>${__("Action")}</th><th>${__("Branch")}</th><th>${__("Payload / Error")}</th></tr></thead>
					<tbody>${rows || `<tr><td colspan="6" class="text-muted">${__("No steps ran.")}</td></tr>`}</tbody>
				</table>
				<h6>${__("Recorded outbound calls (not sent)")}</h6>
				${
					calls
						? `<table class="table table-bordered table-sm flow-dry-run-calls">
					<thead><tr><th>${__("Step")}</th><th>${__("Kind")}</th><th>${__("Action")}</th><th>${__(
								"Details"
						  )}</th></tr></thead>
					<tbody>${calls}</tbody></table>`
						: `<p class="text-muted">${__("None.")}</p>`
				}
			</div>`;
		},
	};
})();
