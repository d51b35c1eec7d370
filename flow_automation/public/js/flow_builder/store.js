// The builder's state: the flow being edited (template fields, definition, layout), its
// history for undo/redo, live validation, and the test run / run overlay / statistics
// drawn on the canvas. Every edit goes through `edit()`, so undo, the unsaved marker and
// validation follow every change the same way.
import { defineStore } from "pinia";
import { computed, reactive, ref, shallowRef, watch } from "vue";
import * as graph from "./graph";

const CLIPBOARD_KEY = "flow_automation:builder:clipboard";
const HISTORY_LIMIT = 100;
const VALIDATE_DELAY_MS = 350;
// a dry run's timeline action → the state drawn on the node
const TIMELINE_STATE = {
	executed: "done",
	failed: "failed",
	skipped: "skipped",
	waiting: "waiting",
	scheduled: "scheduled",
};

const call = (method, args) => frappe.xcall(method, args);
// a null argument would arrive as "" (form encoding): leave it out instead
const without_empty = (args) =>
	Object.fromEntries(
		Object.entries(args).filter(([, v]) => v !== null && v !== undefined && v !== "")
	);

export const useStore = defineStore("flow-builder", () => {
	const name = ref(null); // the Flow Template's name (null for a new flow)
	const template = ref({});
	const definition = ref({ version: 1, variables: {}, steps: [] });
	const layout = ref({});
	const catalog = shallowRef({ kinds: [], by_name: {}, triggers: [] });
	const can_edit = ref(false);
	const can_run = ref(false);
	const problems = ref([]);
	const loading = ref(true);
	const saving = ref(false);
	const dirty = ref(false);
	const selected = ref(null); // a step id, or graph.TRIGGER_ID
	const doc_fields = ref([]);
	const missing_doctype = ref(null); // the template's DocType when this site has none such
	const template_fields = ref([]); // the editable Flow Template fields, from its meta
	const mode = ref("edit"); // edit | test | run
	const test_result = ref(null);
	const run = ref(null);
	const stats = ref(null);
	const focus_request = ref(null); // {id}: the canvas brings this step into view
	const history = { past: [], future: [] };
	const history_size = ref({ past: 0, future: 0 });
	let validate_timer = null;
	let fields_for = null;

	// --- reading ------------------------------------------------------------------------
	const read_only = computed(() => !can_edit.value || mode.value !== "edit");
	const by_id = computed(() => graph.steps_by_id(definition.value));
	const selected_step = computed(() => by_id.value[selected.value] || null);
	// Per node, what it shows of the selection and of validation: kept key by key, so a new
	// selection or a new validation result redraws only the nodes it concerns (Vue 3.3
	// recomputes every reader of a computed object, whatever changed in it).
	const problems_by_step = reactive({});
	const is_selected = reactive({});
	watch(problems, (list) => {
		const grouped = {};
		for (const problem of list) {
			const key = problem.step || graph.TRIGGER_ID;
			(grouped[key] = grouped[key] || []).push(problem);
		}
		for (const key of Object.keys(problems_by_step)) {
			if (!grouped[key]) delete problems_by_step[key];
		}
		for (const [key, entries] of Object.entries(grouped)) {
			if (JSON.stringify(problems_by_step[key]) !== JSON.stringify(entries)) {
				problems_by_step[key] = entries;
			}
		}
	});
	watch(selected, (now, before) => {
		if (before) delete is_selected[before];
		if (now) is_selected[now] = true;
	});
	const shown_steps = computed(() => {
		// a run is drawn on the definition of the version it ran
		return mode.value === "run" && run.value ? run.value.definition : definition.value;
	});

	function kind(name_) {
		return catalog.value.by_name[name_] || null;
	}

	// --- loading --------------------------------------------------------------------------
	async function load(template_name, run_name, prefetched = null) {
		loading.value = true;
		try {
			const [data, kinds] = await Promise.all([
				prefetched ||
					call(
						"flow_automation.builder.get_builder",
						without_empty({ template: template_name, run: run_name })
					),
				catalog.value.kinds.length
					? catalog.value
					: call("flow_automation.api.get_step_catalog"),
			]);
			if (!kinds.by_name)
				kinds.by_name = Object.fromEntries(kinds.kinds.map((k) => [k.name, k]));
			catalog.value = kinds;
			apply_loaded(data);
			mode.value = data.run ? "run" : "edit";
			run.value = data.run || null;
			test_result.value = null;
			history.past = [];
			history.future = [];
			sync_history_size();
			load_doc_fields(); // for the variable picker: the canvas need not wait for it
		} finally {
			loading.value = false;
		}
	}

	function apply_loaded(data) {
		name.value = data.template.name || null;
		template.value = data.template;
		definition.value = data.definition;
		layout.value = graph.complete_layout(
			data.definition,
			data.layout || {},
			catalog.value.by_name
		);
		missing_doctype.value = data.missing_doctype || null;
		template_fields.value = data.fields || template_fields.value;
		can_edit.value = !!data.can_edit;
		can_run.value = !!data.can_run;
		problems.value = data.problems || [];
		dirty.value = false;
	}

	async function load_doc_fields() {
		const doctype = template.value.reference_doctype;
		if (fields_for === doctype) return;
		fields_for = doctype;
		// a template may name a DocType this site does not have (an app not installed): then
		// the picker simply has no document fields
		doc_fields.value =
			doctype && doctype !== missing_doctype.value
				? await new Promise((resolve) =>
						frappe.call({
							method: "flow_automation.builder.doc_fields",
							args: { doctype },
							silent: true,
							callback: (r) => resolve(r.message || []),
							error: () => resolve([]),
						})
				  )
				: [];
	}

	// --- editing --------------------------------------------------------------------------
	function snapshot() {
		return JSON.stringify({
			template: template.value,
			definition: definition.value,
			layout: layout.value,
		});
	}

	function restore(text) {
		const state = JSON.parse(text);
		template.value = state.template;
		definition.value = keep_unchanged(definition.value, state.definition);
		layout.value = keep_unchanged_positions(layout.value, state.layout);
		if (
			selected.value &&
			selected.value !== graph.TRIGGER_ID &&
			!by_id.value[selected.value]
		) {
			selected.value = null;
		}
	}

	// An edit changes a step or two: the others keep their objects, so the canvas redraws only
	// the nodes that changed (a 200-step flow stays responsive).
	function keep_unchanged(old_definition, new_definition) {
		const old_steps = Object.fromEntries((old_definition.steps || []).map((s) => [s.id, s]));
		new_definition.steps = (new_definition.steps || []).map((step) => {
			const old = old_steps[step.id];
			return old && JSON.stringify(old) === JSON.stringify(step) ? old : step;
		});
		return new_definition;
	}

	function keep_unchanged_positions(old_layout, new_layout) {
		for (const [id, position] of Object.entries(new_layout)) {
			const old = old_layout[id];
			if (old && old.x === position.x && old.y === position.y) new_layout[id] = old;
		}
		return new_layout;
	}

	function sync_history_size() {
		history_size.value = { past: history.past.length, future: history.future.length };
	}

	/** Change the flow: `change(draft)` edits copies; the result becomes the new state, undoable. */
	function edit(change) {
		if (read_only.value) return false;
		const before = snapshot();
		const draft = JSON.parse(before);
		const result = change(draft);
		if (result === false) return false;
		const after = JSON.stringify(draft);
		if (after === before) return false;
		history.past.push(before);
		if (history.past.length > HISTORY_LIMIT) history.past.shift();
		history.future = [];
		sync_history_size();
		restore(after);
		dirty.value = true;
		schedule_validation();
		return true;
	}

	function undo() {
		if (!history.past.length || read_only.value) return;
		history.future.push(snapshot());
		restore(history.past.pop());
		sync_history_size();
		dirty.value = true;
		schedule_validation();
	}

	function redo() {
		if (!history.future.length || read_only.value) return;
		history.past.push(snapshot());
		restore(history.future.pop());
		sync_history_size();
		dirty.value = true;
		schedule_validation();
	}

	function add_step(kind_name, { position = null, on_edge = null, from_handle = null } = {}) {
		const info = kind(kind_name);
		if (!info) return null;
		let id = null;
		edit((draft) => {
			const step = graph.new_step(draft.definition, info);
			id = step.id;
			if (on_edge) {
				graph.insert_on_edge(
					draft.definition,
					on_edge.source,
					on_edge.sourceHandle,
					on_edge.target,
					step
				);
				const below = draft.layout[on_edge.target];
				draft.layout[step.id] = below
					? { x: below.x, y: below.y }
					: position || { x: 0, y: 0 };
				draft.layout = { ...draft.layout, ...shift_below(draft, on_edge.target) };
			} else {
				draft.definition.steps.push(step);
				if (from_handle) {
					graph.connect(draft.definition, from_handle.node, from_handle.handle, step.id);
				}
				draft.layout[step.id] = position || next_free_position(draft, from_handle);
			}
		});
		selected.value = id;
		if (id) focus_request.value = { id, reveal: true };
		return id;
	}

	function shift_below(draft, from_id) {
		// make room under an inserted step: everything downstream moves down a row
		const moved = {};
		const start = draft.layout[from_id];
		if (!start) return moved;
		for (const [id, position] of Object.entries(draft.layout)) {
			if (id !== graph.TRIGGER_ID && position.y >= start.y) {
				moved[id] = { x: position.x, y: position.y + graph.NODE_HEIGHT + 60 };
			}
		}
		return moved;
	}

	function next_free_position(draft, from_handle) {
		// under the step it comes after (or under everything), then right until nothing is there
		const anchor = from_handle && draft.layout[from_handle.node];
		const ys = Object.values(draft.layout).map((p) => p.y);
		let x = anchor ? anchor.x : 0;
		const y = anchor
			? anchor.y + graph.NODE_HEIGHT + 70
			: (ys.length ? Math.max(...ys) : 0) + graph.NODE_HEIGHT + 70;
		const taken = (cx) =>
			Object.values(draft.layout).some(
				(p) =>
					Math.abs(p.y - y) < graph.NODE_HEIGHT + 20 &&
					Math.abs(p.x - cx) < graph.NODE_WIDTH + 20
			);
		while (taken(x)) x += graph.NODE_WIDTH + 40;
		return { x, y };
	}

	function update_step(id, change) {
		return edit((draft) => {
			const step = draft.definition.steps.find((s) => s.id === id);
			if (!step) return false;
			return change(step, draft);
		});
	}

	function rename_step(old_id, new_id) {
		new_id = (new_id || "").trim();
		if (!new_id || new_id === old_id) return false;
		if (by_id.value[new_id]) {
			frappe.show_alert({
				message: __("A step {0} already exists", [new_id]),
				indicator: "red",
			});
			return false;
		}
		const done = edit((draft) => {
			graph.rename_step(draft.definition, old_id, new_id);
			draft.layout[new_id] = draft.layout[old_id];
			delete draft.layout[old_id];
		});
		if (done) selected.value = new_id;
		return done;
	}

	function delete_steps(ids) {
		ids = ids.filter((id) => id !== graph.TRIGGER_ID && by_id.value[id]);
		if (!ids.length) return;
		const done = edit((draft) => {
			graph.delete_steps(draft.definition, ids);
			for (const id of ids) delete draft.layout[id];
		});
		if (done && ids.includes(selected.value)) selected.value = null;
	}

	function duplicate_steps(ids) {
		const steps = ids.map((id) => by_id.value[id]).filter(Boolean);
		if (!steps.length) return [];
		return paste_steps(steps, { x: 40, y: 40 });
	}

	function copy_steps(ids) {
		const steps = ids.map((id) => by_id.value[id]).filter(Boolean);
		if (!steps.length) return 0;
		const positions = Object.fromEntries(steps.map((s) => [s.id, layout.value[s.id]]));
		localStorage.setItem(CLIPBOARD_KEY, JSON.stringify({ steps, positions }));
		return steps.length;
	}

	function paste() {
		let data;
		try {
			data = JSON.parse(localStorage.getItem(CLIPBOARD_KEY) || "null");
		} catch (e) {
			data = null;
		}
		if (!data || !data.steps || !data.steps.length) return [];
		return paste_steps(data.steps, { x: 60, y: 60 }, data.positions || {});
	}

	function paste_steps(steps, offset, positions = null) {
		let created = [];
		edit((draft) => {
			const { copies, ids } = graph.copies_of(draft.definition, steps);
			draft.definition.steps.push(...copies);
			for (const [old_id, id] of ids) {
				const at = (positions && positions[old_id]) ||
					layout.value[old_id] || { x: 0, y: 0 };
				draft.layout[id] = { x: at.x + offset.x, y: at.y + offset.y };
			}
			created = copies.map((c) => c.id);
		});
		return created;
	}

	function connect(source, handle, target) {
		return edit((draft) => graph.connect(draft.definition, source, handle, target));
	}

	function disconnect(source, target) {
		return edit((draft) => graph.disconnect(draft.definition, source, target));
	}

	function move(positions) {
		// a drag: one undoable change for every node moved together
		return edit((draft) => {
			for (const [id, position] of Object.entries(positions)) {
				draft.layout[id] = { x: Math.round(position.x), y: Math.round(position.y) };
			}
		});
	}

	function tidy_up() {
		return edit((draft) => {
			draft.layout = graph.tidy(draft.definition, catalog.value.by_name);
		});
	}

	function set_template_fields(values) {
		const doctype_before = template.value.reference_doctype;
		const done = edit((draft) => Object.assign(draft.template, values));
		if (done && template.value.reference_doctype !== doctype_before) load_doc_fields();
		return done;
	}

	function set_variables(variables) {
		return edit((draft) => {
			draft.definition.variables = variables;
		});
	}

	// --- validation -------------------------------------------------------------------------
	function schedule_validation() {
		clearTimeout(validate_timer);
		validate_timer = setTimeout(validate, VALIDATE_DELAY_MS);
	}

	async function validate() {
		const sent = JSON.stringify(definition.value);
		const result = await call("flow_automation.api.validate_definition", { definition: sent });
		if (JSON.stringify(definition.value) === sent) problems.value = result.errors;
	}

	// --- saving -------------------------------------------------------------------------------
	async function save() {
		if (read_only.value || saving.value) return null;
		saving.value = true;
		try {
			const saved = await frappe.call({
				method: "flow_automation.builder.save_builder",
				args: {
					...without_empty({ template: name.value }),
					doc: JSON.stringify({
						template: template.value,
						definition: definition.value,
						layout: layout.value,
					}),
				},
				freeze: true,
				freeze_message: __("Saving..."),
				error_handlers: {
					TimestampMismatchError: () => offer_reload(),
				},
			});
			if (!saved || !saved.message) return null;
			const was_new = !name.value;
			apply_loaded(saved.message);
			frappe.show_alert({ message: __("Saved"), indicator: "green" });
			return { name: name.value, was_new };
		} finally {
			saving.value = false;
		}
	}

	function offer_reload() {
		frappe.confirm(
			__(
				"Someone saved this flow after you opened it. Reload it to see their version? (Your changes here are lost.) Or keep editing and copy what you need first."
			),
			() => load(name.value)
		);
	}

	// --- test runs, runs, statistics -------------------------------------------------------------
	async function test_run({ reference_name = null, doc = null, variables = {}, answers = {} }) {
		const args = {
			template: name.value,
			variables: JSON.stringify(variables || {}),
			answers: JSON.stringify(answers || {}),
			definition: JSON.stringify(definition.value),
		};
		if (reference_name) {
			args.reference_doctype = template.value.reference_doctype;
			args.reference_name = reference_name;
		} else if (doc) {
			args.doc = JSON.stringify(doc);
		}
		const result = await call("flow_automation.api.simulate", args);
		test_result.value = result;
		mode.value = "test";
		return result;
	}

	function back_to_editing() {
		mode.value = "edit";
		test_result.value = null;
		if (run.value) {
			run.value = null;
			frappe.set_route("flow-builder", name.value);
		}
	}

	async function reload_run() {
		await load(name.value, run.value && run.value.name);
	}

	async function load_stats(days = 30) {
		stats.value = await call("flow_automation.builder.step_stats", {
			template: name.value,
			days,
		});
		return stats.value;
	}

	/** What the canvas shows of a step in a test run or a run: its state and its attempts. */
	function overlay_of(step_id) {
		if (mode.value === "run" && run.value) {
			const entry = run.value.steps[step_id];
			if (!entry) return { state: "pending" };
			return { state: state_name(entry.status), due_at: entry.due_at, entry };
		}
		if (mode.value === "test" && test_result.value) {
			const events = (test_result.value.timeline || []).filter((e) => e.step === step_id);
			let state = "pending";
			for (const event of events) state = TIMELINE_STATE[event.action] || state; // the last one tells
			return { state, events };
		}
		return null;
	}

	function state_name(status) {
		if (status === "done") return "done";
		if (status === "failed") return "failed";
		if (status === "skipped" || status === "cancelled") return "skipped";
		if (status === "scheduled") return "scheduled";
		if (status === "waiting" || status === "ready") return "waiting";
		return "pending";
	}

	return {
		name,
		template,
		definition,
		layout,
		catalog,
		can_edit,
		can_run,
		problems,
		problems_by_step,
		is_selected,
		loading,
		saving,
		dirty,
		selected,
		selected_step,
		doc_fields,
		missing_doctype,
		template_fields,
		mode,
		test_result,
		run,
		stats,
		focus_request,
		history_size,
		read_only,
		by_id,
		shown_steps,
		kind,
		load,
		edit,
		undo,
		redo,
		add_step,
		update_step,
		rename_step,
		delete_steps,
		duplicate_steps,
		copy_steps,
		paste,
		connect,
		disconnect,
		move,
		tidy_up,
		set_template_fields,
		set_variables,
		validate,
		save,
		test_run,
		back_to_editing,
		reload_run,
		load_stats,
		overlay_of,
	};
});
