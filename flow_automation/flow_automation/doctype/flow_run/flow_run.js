// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

// The run's timeline comes from the server (FlowRun.onload → runtime.run_timeline) and is
// re-rendered on every refresh; runtime writes use db_set(notify=True), so an open form
// reloads by itself through Frappe's doc_update realtime event.

// Form scripts run as global <script> tags: keep our names out of the global scope.
(() => {
	const ACTIVE = ["Queued", "Running", "Waiting"];
	const FLOW_USER_ROLES = ["Flow User", "Flow Manager", "System Manager"];
	// Step statuses (engine/planner.py) → Frappe indicator colours.
	const STEP_COLOURS = {
		done: "green",
		failed: "red",
		waiting: "orange",
		scheduled: "blue",
		ready: "cyan",
		skipped: "gray",
		cancelled: "gray",
		pending: "light-blue",
	};
	const ATTEMPT_COLOURS = {
		Success: "green",
		Failed: "red",
		Waiting: "orange",
		Resumed: "blue",
	};

	frappe.ui.form.on("Flow Run", {
		refresh(frm) {
			// Only the runtime writes a run; operators act through the buttons below.
			frm.disable_save();
			flow_run.render_timeline(frm);
			flow_run.add_links(frm);
			if (frappe.user.has_role(FLOW_USER_ROLES)) flow_run.add_actions(frm);
		},
	});

	const esc = (text) => frappe.utils.escape_html(text == null ? "" : String(text));

	const flow_run = {
		timeline(frm) {
			return (frm.doc.__onload && frm.doc.__onload.timeline) || [];
		},

		// --- timeline ---------------------------------------------------------------

		render_timeline(frm) {
			const field = frm.fields_dict.timeline_html;
			const steps = flow_run.timeline(frm);
			if (!steps.length) {
				field.$wrapper.html(
					`<div class="text-muted">${__(
						"No steps yet: the run has not been advanced."
					)}</div>`
				);
				return;
			}
			const depth = flow_run.depths(steps);
			field.$wrapper.html(`<div class="flow-timeline">
				${steps.map((step) => flow_run.step_html(step, depth[step.id])).join("")}
			</div>`);
		},

		/** Indentation: a step sits one level under its parent (condition, switch, ...). */
		depths(steps) {
			const by_id = Object.fromEntries(steps.map((s) => [s.id, s]));
			const depth = {};
			const of = (step, seen = new Set()) => {
				if (depth[step.id] !== undefined) return depth[step.id];
				const parent = by_id[step.parent_id];
				const d = parent && !seen.has(parent.id) ? of(parent, seen.add(step.id)) + 1 : 0;
				return (depth[step.id] = d);
			};
			steps.forEach((s) => of(s));
			return depth;
		},

		step_html(step, depth) {
			const colour = STEP_COLOURS[step.status] || "gray";
			const branch_of_parent = step.branch_of_parent
				? `<span class="flow-branch-tag" title="${__("Branch of {0}", [
						esc(step.parent_id),
				  ])}">${esc(step.branch_of_parent)}</span>`
				: "";
			const taken = step.branch
				? `<span class="text-muted small">→ ${__("branch")} <b>${esc(
						step.branch
				  )}</b></span>`
				: "";
			return `<div class="flow-step flow-step-${esc(step.status)}" data-step="${esc(
				step.id
			)}"
					data-status="${esc(step.status)}" style="--flow-depth: ${depth || 0}">
				<div class="flow-step-head">
					${branch_of_parent}
					<span class="flow-step-title">${esc(step.label)}</span>
					<span class="text-muted small">#${esc(step.id)} · ${esc(step.kind)}</span>
					<span class="indicator-pill ${colour} flow-step-status">${__(
				frappe.model.unscrub(step.status)
			)}</span>
					${taken}
					${flow_run.when_html(step)}
				</div>
				${
					step.error
						? `<div class="flow-step-error text-danger">${esc(
								flow_run.first_line(step.error)
						  )}</div>`
						: ""
				}
				${step.reason ? `<div class="text-muted small">${esc(step.reason)}</div>` : ""}
				${flow_run.attempts_html(step.attempts || [])}
			</div>`;
		},

		when_html(step) {
			const parts = [];
			if (step.due_at) {
				parts.push(
					`${__("due")} <span title="${esc(
						frappe.datetime.str_to_user(step.due_at)
					)}">${esc(
						frappe.datetime.comment_when(step.due_at, true) ||
							frappe.datetime.str_to_user(step.due_at)
					)}</span>`
				);
			}
			const wait = step.wait;
			if (step.status === "waiting" && wait) {
				const what =
					wait.type === "gate"
						? __("waiting for completion ({0})", [esc(wait.trigger || "manual")])
						: __("waiting for {0}", [esc(frappe.model.unscrub(wait.type || ""))]);
				parts.push(what);
			}
			return parts.length
				? `<span class="text-muted small">${parts.join(" · ")}</span>`
				: "";
		},

		attempts_html(attempts) {
			if (!attempts.length) return "";
			const rows = attempts
				.map(
					(a) => `<tr class="flow-attempt">
					<td>${__("#{0}", [a.attempt])}</td>
					<td><span class="indicator-pill ${ATTEMPT_COLOURS[a.status] || "gray"}">${__(a.status)}</span></td>
					<td class="text-nowrap">${esc(a.started_at ? frappe.datetime.str_to_user(a.started_at) : "")}</td>
					<td class="text-nowrap">${esc(flow_run.duration(a.duration_ms))}</td>
					<td>${flow_run.attempt_error_html(a)}</td>
					<td><a href="/app/flow-step-log/${encodeURIComponent(a.name)}" class="text-muted small">${__(
						"log"
					)}</a></td>
				</tr>`
				)
				.join("");
			return `<table class="flow-attempts table table-sm"><tbody>${rows}</tbody></table>`;
		},

		/** The error's first line; the rest (often a traceback) folds away. */
		attempt_error_html(attempt) {
			const parts = [];
			if (attempt.error) {
				const first = flow_run.first_line(attempt.error);
				const rest = attempt.error.slice(first.length).trim();
				parts.push(`<span class="text-danger">${esc(first)}</span>`);
				if (rest) {
					parts.push(`<details class="flow-traceback"><summary>${__(
						"Traceback"
					)}</summary>
						<pre>${esc(rest)}</pre></details>`);
				}
			}
			if (attempt.retry_at) {
				parts.push(
					`<div class="text-muted small">${__("retry at {0}", [
						esc(frappe.datetime.str_to_user(attempt.retry_at)),
					])}</div>`
				);
			}
			return parts.join("");
		},

		first_line(text) {
			return String(text).split("\n")[0];
		},

		duration(ms) {
			if (ms === null || ms === undefined) return "";
			if (ms < 1000) return `${Math.round(ms)} ms`;
			if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
			return `${(ms / 60000).toFixed(1)} min`;
		},

		// --- links ------------------------------------------------------------------

		add_links(frm) {
			const view = __("View");
			if (frm.doc.reference_doctype && frm.doc.reference_name) {
				frm.add_custom_button(
					__("{0} {1}", [__(frm.doc.reference_doctype), frm.doc.reference_name]),
					() =>
						frappe.set_route(
							"Form",
							frm.doc.reference_doctype,
							frm.doc.reference_name
						),
					view
				);
			}
			if (frm.doc.parent_run) {
				frm.add_custom_button(
					__("Parent Run"),
					() => frappe.set_route("Form", "Flow Run", frm.doc.parent_run),
					view
				);
			}
			frm.add_custom_button(
				__("Child Runs"),
				() => frappe.set_route("List", "Flow Run", { parent_run: frm.doc.name }),
				view
			);
			frm.add_custom_button(
				__("Step Logs"),
				() => frappe.set_route("List", "Flow Step Log", { run: frm.doc.name }),
				view
			);
			frm.add_custom_button(
				__("Pending Rows"),
				() => frappe.set_route("List", "Flow Step Pending", { run: frm.doc.name }),
				view
			);
			if (frm.doc.template) {
				frm.add_custom_button(__("Open on Canvas"), () =>
					frappe.router.push_state(
						`/app/flow-builder/${encodeURIComponent(frm.doc.template)}` +
							`?run=${encodeURIComponent(frm.doc.name)}`
					)
				);
				frm.add_custom_button(
					__("Template"),
					() => frappe.set_route("Form", "Flow Template", frm.doc.template),
					view
				);
			}
		},

		// --- actions ----------------------------------------------------------------

		add_actions(frm) {
			const steps = flow_run.timeline(frm);
			const active = ACTIVE.includes(frm.doc.status);
			const failed = steps.filter((s) => s.status === "failed");
			const gates = steps.filter(
				(s) => s.status === "waiting" && s.wait && s.wait.type === "gate"
			);

			if (failed.length && frm.doc.status !== "Cancelled") {
				frm.add_custom_button(__("Retry Failed Steps"), () =>
					flow_run.retry_dialog(frm, failed)
				);
			}
			if (active && gates.length) {
				frm.add_custom_button(__("Complete Step"), () =>
					flow_run.complete_dialog(frm, gates)
				);
			}
			if (active) {
				frm.add_custom_button(__("Advance Now"), () =>
					flow_run.call(frm, "flow_automation.api.advance", {}, __("Advanced"))
				);
				frm.add_custom_button(__("Cancel Run"), () => flow_run.cancel_prompt(frm));
			}
		},

		/** Call an api.* method for this run, then reload the form. */
		call(frm, method, args, message) {
			return frappe.xcall(method, { run: frm.doc.name, ...args }).then((summary) => {
				frappe.show_alert({
					message: `${message}: ${__(summary.status)}`,
					indicator: summary.status === "Failed" ? "red" : "green",
				});
				frm.reload_doc();
			});
		},

		retry_dialog(frm, failed) {
			const dialog = new frappe.ui.Dialog({
				title: __("Retry Failed Steps"),
				fields: [
					{
						fieldname: "steps",
						fieldtype: "MultiCheck",
						label: __("Steps to retry"),
						reqd: 1,
						options: failed.map((s) => ({
							label: `${s.label} (#${s.id})`,
							value: s.id,
							checked: 1,
						})),
					},
				],
				primary_action_label: __("Retry"),
				primary_action(values) {
					if (!values.steps || !values.steps.length) {
						frappe.msgprint(__("Pick at least one step."));
						return;
					}
					dialog.hide();
					flow_run.call(
						frm,
						"flow_automation.api.retry",
						{ steps: JSON.stringify(values.steps) },
						__("Retried")
					);
				},
			});
			dialog.show();
		},

		complete_dialog(frm, gates) {
			const dialog = new frappe.ui.Dialog({
				title: __("Complete Step"),
				fields: [
					{
						fieldname: "step",
						fieldtype: "Select",
						label: __("Waiting Step"),
						reqd: 1,
						options: gates.map((s) => ({
							label: `${s.label} (#${s.id})`,
							value: s.id,
						})),
						default: gates[0].id,
					},
					{
						fieldname: "result",
						fieldtype: "Code",
						options: "JSON",
						label: __("Result"),
						description: __(
							"Optional JSON object; later steps read it as steps.<id>.output."
						),
					},
				],
				primary_action_label: __("Complete"),
				primary_action(values) {
					dialog.hide();
					flow_run.call(
						frm,
						"flow_automation.api.complete",
						{ step: values.step, result: values.result || null },
						__("Completed {0}", [values.step])
					);
				},
			});
			dialog.show();
		},

		cancel_prompt(frm) {
			frappe.prompt(
				{
					fieldname: "reason",
					fieldtype: "Small Text",
					label: __("Reason"),
					description: __(
						"Saved as the run's error; open steps and sub-flows are cancelled too."
					),
				},
				({ reason }) =>
					flow_run.call(
						frm,
						"flow_automation.api.cancel",
						{ reason: reason || null },
						__("Cancelled")
					),
				__("Cancel Run"),
				__("Cancel Run")
			);
		},
	};
})();
