// Step payload editor: a frappe.ui.Dialog whose fields are generated from the step kind's
// `payload_schema` in the step catalog (flow_automation.api.get_step_catalog). The catalog
// is the only source of kinds and fields; nothing here lists them by hand.

frappe.provide("flow_automation.payload_editor");

flow_automation.payload_editor = {
	/** The Frappe field type for one JSON-schema property. */
	fieldtype_for(prop, current) {
		if (Array.isArray(prop.enum)) return "Select";
		switch (prop.type) {
			case "string":
				// Long or multi-line values deserve a text area.
				return typeof current === "string" &&
					(current.length > 60 || current.includes("\n"))
					? "Small Text"
					: "Data";
			case "boolean":
				return "Check";
			case "integer":
				return "Int";
			case "number":
				return "Float";
			default:
				return "Code"; // object, array, a union of types, or anything: edit as JSON
		}
	},

	/** Dialog fields for a schema, prefilled from `payload`. */
	fields_for(schema, payload) {
		const properties = (schema && schema.properties) || {};
		const required = new Set((schema && schema.required) || []);
		return Object.entries(properties).map(([key, prop]) => {
			const current = payload[key];
			const fieldtype = this.fieldtype_for(prop, current);
			const df = {
				fieldname: key,
				label: frappe.model.unscrub(key),
				fieldtype,
				reqd: required.has(key) ? 1 : 0,
				description: this.describe_property(prop, fieldtype),
			};
			if (fieldtype === "Select") df.options = ["", ...prop.enum.map(String)];
			if (fieldtype === "Code") {
				df.options = "JSON";
				df.max_height = "10rem";
			}
			df.default = this.to_field_value(current, fieldtype);
			return df;
		});
	},

	describe_property(prop, fieldtype) {
		const parts = [];
		if (prop.description) parts.push(frappe.utils.escape_html(prop.description));
		if (fieldtype === "Code") {
			parts.push(__("JSON; plain text is kept as a string."));
		} else if (fieldtype === "Data" || fieldtype === "Small Text") {
			parts.push(__("May use templates such as {0}", ["<code>{{ doc.name }}</code>"]));
		}
		return parts.join(" ");
	},

	to_field_value(value, fieldtype) {
		if (value === undefined || value === null) return fieldtype === "Check" ? 0 : undefined;
		if (fieldtype === "Code") return JSON.stringify(value, null, 2);
		if (fieldtype === "Check") return value ? 1 : 0;
		return value;
	},

	/** Dialog values back to a payload; keys the schema does not know are kept as they were. */
	payload_from(values, fields, original) {
		const payload = { ...original };
		for (const df of fields) {
			const key = df.fieldname;
			let value = values[key];
			const was_set = Object.prototype.hasOwnProperty.call(original, key);
			if (df.fieldtype === "Check") {
				if (value || was_set) payload[key] = !!value;
				continue;
			}
			if (df.fieldtype === "Code" && typeof value === "string" && value.trim()) {
				value = this.parse_json_or_text(value);
			}
			const empty = value === undefined || value === null || value === "";
			const unset_number =
				["Int", "Float"].includes(df.fieldtype) && value === 0 && !was_set;
			if (empty || unset_number) {
				delete payload[key];
			} else {
				payload[key] = value;
			}
		}
		return payload;
	},

	parse_json_or_text(text) {
		try {
			return JSON.parse(text);
		} catch (e) {
			return text.trim();
		}
	},

	/** Open the editor for a step row; `on_save(payload_json)` writes the result back. */
	open(kind, row, on_save) {
		if (!kind) {
			frappe.msgprint(__("Pick the step's Kind first."));
			return;
		}
		let original = {};
		if ((row.payload || "").trim()) {
			try {
				original = JSON.parse(row.payload);
			} catch (e) {
				frappe.msgprint({
					title: __("Payload is not valid JSON"),
					message: __("Fix the JSON in the Payload field first: {0}", [e.message]),
					indicator: "red",
				});
				return;
			}
		}
		const fields = this.fields_for(kind.payload_schema, original);
		const intro = `<p>${frappe.utils.escape_html(__(kind.description))}</p>
			${
				kind.output
					? `<p class="text-muted small">${__(
							"Output"
					  )}: <code>${frappe.utils.escape_html(kind.output)}</code></p>`
					: ""
			}`;
		const dialog = new frappe.ui.Dialog({
			title: __("{0} payload · {1}", [__(kind.label), row.step_id || __("new step")]),
			size: "large",
			fields: [
				{ fieldtype: "HTML", fieldname: "kind_intro", options: intro },
				...(fields.length
					? fields
					: [
							{
								fieldtype: "HTML",
								fieldname: "no_fields",
								options: `<p class="text-muted">${__(
									"This kind takes no payload."
								)}</p>`,
							},
					  ]),
			],
			primary_action_label: __("Update Payload"),
			primary_action: (values) => {
				const payload = this.payload_from(values, fields, original);
				on_save(JSON.stringify(payload, null, 1));
				dialog.hide();
			},
		});
		dialog.$wrapper.addClass("flow-payload-dialog").attr("data-kind", kind.name);
		dialog.show();
		return dialog;
	},
};
