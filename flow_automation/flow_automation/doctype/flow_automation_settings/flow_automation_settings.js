// Copyright (c) 2026, flow_automation developers and contributors
// For license information, please see license.txt

// Delays, dates and retries only fire when Frappe's scheduler runs the minute cron; a
// disabled, paused or dormant scheduler stalls them silently, so say so here.

// Form scripts run as global <script> tags: keep our names out of the global scope.
(() => {
	frappe.ui.form.on("Flow Automation Settings", {
		refresh(frm) {
			render_scheduler_status(frm);
			frm.add_custom_button(__("Pending Rows"), () =>
				frappe.set_route("List", "Flow Step Pending", { status: "Pending" })
			);
		},
	});

	const esc = (text) => frappe.utils.escape_html(text == null ? "" : String(text));

	function render_scheduler_status(frm) {
		const $field = frm.fields_dict.scheduler_status.$wrapper;
		$field.html(`<div class="text-muted">${__("Checking the scheduler…")}</div>`);
		frappe
			.xcall("flow_automation.desk.get_scheduler_status")
			.then((status) => $field.html(status_html(status)))
			.catch(() =>
				$field.html(`<div class="text-muted">${__("Scheduler status unavailable.")}</div>`)
			);
	}

	function status_html(s) {
		const pill = (ok, yes, no) =>
			`<span class="indicator-pill ${ok ? "green" : "red"}">${ok ? yes : no}</span>`;
		const oldest = s.oldest_overdue
			? __("oldest: step {0} of run {1}, due {2}", [
					`<b>${esc(s.oldest_overdue.step_id)}</b>`,
					`<a href="/app/flow-run/${encodeURIComponent(s.oldest_overdue.run)}">${esc(
						s.oldest_overdue.run
					)}</a>`,
					esc(frappe.datetime.comment_when(s.oldest_overdue.trigger_at)),
			  ])
			: "";
		const problems = (s.problems || [])
			.map(
				(p) => `<div class="alert alert-warning flow-scheduler-problem">
					<b>${esc(p.title)}</b><div>${esc(p.detail)}</div>
					${p.fix ? `<div class="small">${__("Fix")}: <code>${esc(p.fix)}</code></div>` : ""}
				</div>`
			)
			.join("");
		return `<div class="flow-scheduler-status">
			<div class="mb-2">
				${pill(s.scheduler_enabled && !s.scheduler_paused, __("Scheduler enabled"), __("Scheduler off"))}
				${pill(!s.dormant, __("Site active"), __("Site dormant"))}
				${pill(!s.pending_overdue, __("Nothing overdue"), __("{0} overdue", [s.pending_overdue]))}
			</div>
			<div class="small text-muted mb-2">
				${__("Pending rows: {0} due now, {1} overdue, {2} upcoming.", [
					s.pending_due,
					s.pending_overdue,
					s.pending_upcoming,
				])}
				${oldest}
				<br>${
					s.developer_mode
						? __("Developer mode: Frappe never treats this site as dormant.")
						: __(
								"A site nobody uses for {0} days turns dormant and runs jobs once a day.",
								[s.dormant_days]
						  )
				}
				<br>${__("Flow jobs go to the {0} queue; workers listening: {1}.", [
					`<b>${esc(s.queue)}</b>`,
					s.queue_workers == null ? __("unknown (Redis unreachable)") : s.queue_workers,
				])}
				<br>${__("Minute cron last ran: {0}", [
					s.last_cron_run
						? esc(frappe.datetime.comment_when(s.last_cron_run))
						: __("never"),
				])}
			</div>
			${problems || `<div class="text-success small">${__("Delayed steps will fire on time.")}</div>`}
		</div>`;
	}
})();
