// The flow as a graph: pure functions from a definition (the same steps the form's table
// holds) to canvas nodes and edges, and the edits the canvas makes to a definition.
// Nothing here talks to the server or to Vue Flow; the store calls these.
import dagre from "@dagrejs/dagre";

export const TRIGGER_ID = "__trigger__";
export const NEXT = "next"; // the handle for "runs after this step" (depends_on)
export const NODE_WIDTH = 240;
const BRANCH_SPACING = 64; // room for one branch label under a node
export const NODE_HEIGHT = 84;

const GROUP_STYLE = {
	Documents: { color: "blue", icon: "file" },
	Messaging: { color: "green", icon: "mail" },
	Integrations: { color: "purple", icon: "integration" },
	Logic: { color: "orange", icon: "branch" },
};
const KIND_ICON = {
	create_document: "file",
	update_document: "edit",
	assign: "assign",
	notify: "mail",
	webhook: "integration",
	wait: "calendar",
	condition: "branch",
	switch: "branch",
	set_variables: "setting",
	start_flow: "workflow",
	for_each: "list",
	send_whatsapp: "message",
	ask: "reply",
	split: "branch",
	lookup: "search",
	run_script: "tool",
	generate_pdf: "printer",
};

export function style_of(kind_info, kind) {
	const group = (kind_info && GROUP_STYLE[kind_info.group]) || { color: "gray", icon: "tool" };
	return { color: group.color, icon: KIND_ICON[kind] || group.icon };
}

export function clone(value) {
	return JSON.parse(JSON.stringify(value));
}

export function steps_by_id(definition) {
	return Object.fromEntries((definition.steps || []).map((step) => [step.id, step]));
}

// --- branches --------------------------------------------------------------------------

function values_at(value, path) {
	// "cases[]" → each value of cases; "list.sections[].rows[].id" → every row id
	let current = [value];
	for (const part of path.split(".")) {
		const many = part.endsWith("[]");
		const key = many ? part.slice(0, -2) : part;
		const next = [];
		for (const item of current) {
			if (item === null || item === undefined) continue;
			// a plain string entry is its own id
			const got = typeof item === "string" ? (key === "id" ? item : undefined) : item[key];
			if (got === undefined || got === null) continue;
			if (many) next.push(...(Array.isArray(got) ? got : []));
			else next.push(got);
		}
		current = next;
	}
	return current
		.filter((v) => v !== null && v !== undefined && typeof v !== "object")
		.map(String);
}

/** The branch handles of a step: what its kind offers for this payload, then "error" when on_error is branch. */
export function branches_of(step, kind_info) {
	const spec = (kind_info && kind_info.branches) || {};
	const names = [];
	for (const path of spec.paths || []) {
		for (const value of values_at(step.payload || {}, path)) {
			if (!names.includes(value)) names.push(value);
		}
	}
	for (const fixed of spec.fixed || []) if (!names.includes(fixed)) names.push(fixed);
	if (step.on_error === "branch" && !names.includes("error")) names.push("error");
	return names;
}

/** A node's width: wide enough for every branch handle to have room for its label. */
export function node_width(step, kind_info) {
	return Math.max(NODE_WIDTH, (branches_of(step, kind_info).length + 1) * BRANCH_SPACING);
}

// --- what a node says ------------------------------------------------------------------

function short(value, length = 48) {
	const text = typeof value === "string" ? value : JSON.stringify(value ?? "");
	return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

/** A one-line summary of what a step does, from its payload. */
export function summary_of(step) {
	const p = step.payload || {};
	const to = Array.isArray(p.to) ? p.to.join(", ") : p.to;
	switch (step.kind) {
		case "create_document":
			return __("New {0}", [p.doctype || "?"]);
		case "update_document":
			return __("Set {0} on {1}", [
				Object.keys(p.fields || {}).join(", ") || "?",
				p.target === "document" || p.doctype
					? `${p.doctype} ${p.name || ""}`
					: __("the document"),
			]);
		case "assign":
			return __("Assign to {0}", [short((p.assign_to || []).join(", "))]);
		case "notify": {
			if (p.channel === "sms") {
				return `${__("SMS")} ${short(to || "?", 24)}: ${short(p.body || "", 28)}`;
			}
			const attached = (p.attachments || []).length;
			const files = attached ? " " + __("(+{0} attached)", [attached]) : "";
			return `${p.channel === "system" ? __("Notify") : __("Email")} ${short(
				to || "?",
				24
			)}: ${short(p.subject || "", 28)}${files}`;
		}
		case "generate_pdf":
			return __("PDF of {0} ({1})", [
				p.target === "document" || p.doctype
					? `${p.doctype || "?"} ${p.name || ""}`.trim()
					: __("the document"),
				p.print_format || __("default format"),
			]);
		case "webhook":
			return `${p.method || "POST"} ${short(p.url || "?", 40)}`;
		case "wait":
			return __("Wait");
		case "condition":
			return p.field
				? `${p.field} ${p.op || "=="} ${short(p.value ?? "", 20)}`
				: __("Condition: {0}", [short(p.condition || {}, 36)]);
		case "switch":
			return __("On {0}", [short(p.value || "?", 40)]);
		case "set_variables":
			return __("Set {0}", [Object.keys(p.variables || {}).join(", ") || "?"]);
		case "start_flow":
			return `${__("Start")} ${short(p.template || "?", 30)}${
				p.wait ? " " + __("(wait)") : ""
			}`;
		case "send_whatsapp":
			return `${p.mode || "text"} → ${short(to || "?", 24)}${
				p.template ? ": " + p.template : p.text ? ": " + short(p.text, 24) : ""
			}`;
		case "ask":
			return __("Ask: {0}", [short(p.text || "", 40)]);
		case "for_each":
			return `${__("For each of {0}: {1}", [
				short(p.items ?? "?", 28),
				short(p.template || "?", 24),
			])}${p.concurrency ? " " + __("({0} at once)", [p.concurrency]) : ""}`;
		case "split":
			return __("Split {0}", [
				short(
					(p.branches || []).map((b) => `${b.name} ${b.weight ?? "?"}%`).join(" / ") ||
						"?",
					40
				),
			]);
		case "lookup":
			return "name" in p
				? __("Read {0} {1}", [p.doctype || "?", short(p.name || "", 28)])
				: __("Read {0} list ({1})", [
						p.doctype || "?",
						short(Object.keys(p.filters || {}).length ? p.filters : __("all"), 28),
				  ]);
		case "run_script":
			return p.script
				? __("Run script {0}", [short(p.script, 36)])
				: __("Run script: {0}", [short((p.code || "").split("\n")[0], 34)]);
		default:
			return short(p, 48);
	}
}

/** The badge for when a step runs: "after 3 days", "on …", "manual", "waits for reply". */
export function badge_of(step, kind_info) {
	const trigger = step.trigger || {};
	const type = trigger.type;
	if (type === "after_delay") {
		const parts = [];
		for (const unit of ["days", "hours", "minutes"]) {
			if (trigger[unit]) parts.push(`${trigger[unit]} ${__(unit)}`);
		}
		return __("after {0}", [parts.join(" ") || "0"]);
	}
	if (type === "on_date") return __("on {0}", [trigger.at || "?"]);
	if (type === "manual") return __("manual");
	if (type === "on_webhook") return __("webhook");
	if (step.kind === "ask") return __("waits for reply");
	if (step.kind === "start_flow" && (step.payload || {}).wait) return __("waits for sub-flow");
	if (step.kind === "for_each" && (step.payload || {}).wait) return __("waits for sub-flows");
	return quiet_hours_badge(step, kind_info);
}

/** A message step's own quiet hours: "09:00–19:00", or "any hour" when it keeps none. */
export function quiet_hours_badge(step, kind_info) {
	if (!kind_info || !kind_info.quiet_hours || !("quiet_hours" in step)) return "";
	const q = step.quiet_hours;
	if (q === false || q === null) return __("any hour");
	if (q && typeof q === "object") return `${q.start || "?"}–${q.end || "?"}`;
	return "";
}

// --- nodes and edges -------------------------------------------------------------------

/** Canvas edges for a definition: branches (parent_id + branch), joins (depends_on), roots. */
export function edges_of(definition) {
	const edges = [];
	for (const step of definition.steps || []) {
		const depends = (step.depends_on || []).filter((d) => d !== step.parent_id);
		if (step.parent_id) {
			const branch =
				step.branch === null || step.branch === undefined ? null : String(step.branch);
			edges.push(
				edge(step.parent_id, branch === null ? NEXT : `b:${branch}`, step.id, branch)
			);
		}
		for (const source of depends) edges.push(edge(source, NEXT, step.id, null));
		if (!step.parent_id && !depends.length) edges.push(edge(TRIGGER_ID, NEXT, step.id, null));
	}
	return edges;
}

function edge(source, handle, target, label) {
	return {
		id: `${source}->${target}`,
		source,
		sourceHandle: handle,
		target,
		targetHandle: "in",
		type: "branch",
		data: { label },
	};
}

/** Every step a step comes after (parents and dependencies, transitively). */
export function upstream_of(definition, step_id) {
	const by_id = steps_by_id(definition);
	const seen = new Set();
	const stack = [step_id];
	while (stack.length) {
		const step = by_id[stack.pop()];
		if (!step) continue;
		for (const source of [step.parent_id, ...(step.depends_on || [])]) {
			if (source && !seen.has(source) && by_id[source]) {
				seen.add(source);
				stack.push(source);
			}
		}
	}
	return (definition.steps || []).filter((s) => seen.has(s.id));
}

// --- edits -----------------------------------------------------------------------------

export function new_step_id(definition, kind) {
	const taken = new Set((definition.steps || []).map((s) => s.id));
	let n = 1;
	while (taken.has(`${kind}_${n}`)) n++;
	return `${kind}_${n}`;
}

export function new_step(definition, kind_info) {
	return {
		id: new_step_id(definition, kind_info.name),
		kind: kind_info.name,
		label: "",
		parent_id: null,
		branch: null,
		depends_on: [],
		payload: clone(kind_info.example || {}),
		retry: { max_attempts: 1, backoff_seconds: 60 },
		on_error: "fail",
	};
}

/** Make `target` run after `source` through `handle` (a branch "b:<name>" or NEXT). */
export function connect(definition, source, handle, target) {
	const by_id = steps_by_id(definition);
	const step = by_id[target];
	if (!step || source === target) return false;
	if (source === TRIGGER_ID) {
		// a root: runs when the flow starts
		step.parent_id = null;
		step.branch = null;
		step.depends_on = [];
		return true;
	}
	if (!by_id[source] || creates_cycle(definition, source, target)) return false;
	if (handle && handle.startsWith("b:")) {
		// one branch of the source: the step lives in it (a step lives in one branch at most)
		step.parent_id = source;
		step.branch = handle.slice(2);
		step.depends_on = (step.depends_on || []).filter((d) => d !== source);
	} else if (step.parent_id !== source && !(step.depends_on || []).includes(source)) {
		// after the source; with several, a join: it runs when they have all finished
		step.depends_on = [...(step.depends_on || []), source];
	}
	return true;
}

function creates_cycle(definition, source, target) {
	return source === target || upstream_of(definition, source).some((s) => s.id === target);
}

/** Remove one edge (source → target). */
export function disconnect(definition, source, target) {
	const step = steps_by_id(definition)[target];
	if (!step) return;
	if (step.parent_id === source) {
		step.parent_id = null;
		step.branch = null;
	}
	step.depends_on = (step.depends_on || []).filter((d) => d !== source);
}

/** Delete steps; what came after a deleted step now comes after what came before it. */
export function delete_steps(definition, ids) {
	const doomed = new Set(ids);
	const by_id = steps_by_id(definition);
	for (const step of definition.steps) {
		if (doomed.has(step.id)) continue;
		// a step that came only after a deleted one inside a branch stays in that branch
		const only =
			!step.parent_id && (step.depends_on || []).length === 1
				? by_id[step.depends_on[0]]
				: null;
		if (only && doomed.has(only.id) && only.parent_id && !(only.depends_on || []).length) {
			step.parent_id = only.parent_id;
			step.branch = only.branch;
			step.depends_on = [];
		}
		let parent = step.parent_id;
		let branch = step.branch;
		while (parent && doomed.has(parent)) {
			const gone = by_id[parent];
			branch = gone.parent_id ? gone.branch : null;
			parent = gone.parent_id;
		}
		step.parent_id = parent || null;
		step.branch = parent ? branch : null;
		const depends = [];
		for (const dep of step.depends_on || []) {
			const queue = [dep];
			while (queue.length) {
				const id = queue.shift();
				if (!doomed.has(id)) {
					if (!depends.includes(id) && id !== step.parent_id) depends.push(id);
					continue;
				}
				const gone = by_id[id];
				queue.push(...[gone.parent_id, ...(gone.depends_on || [])].filter(Boolean));
			}
		}
		step.depends_on = depends;
	}
	definition.steps = definition.steps.filter((s) => !doomed.has(s.id));
}

/** Put a new step on an edge: source → new → target. */
export function insert_on_edge(definition, source, handle, target, step) {
	definition.steps.push(step);
	const after = steps_by_id(definition)[target];
	if (source !== TRIGGER_ID) connect(definition, source, handle, step.id);
	if (after) {
		// the step that came after the source now comes after the new one
		if (after.parent_id === source) {
			after.parent_id = null;
			after.branch = null;
			after.depends_on = [...(after.depends_on || []).filter((d) => d !== source), step.id];
		} else if (source === TRIGGER_ID && !after.parent_id && !(after.depends_on || []).length) {
			after.depends_on = [step.id];
		} else {
			after.depends_on = (after.depends_on || []).map((d) => (d === source ? step.id : d));
		}
	}
}

/** Copies of steps with fresh ids; links among the copied steps follow, links outside are dropped. */
export function copies_of(definition, steps) {
	const ids = new Map();
	const scratch = clone(definition);
	const copies = steps.map((s) => clone(s));
	for (const step of copies) {
		const id = new_step_id(scratch, step.kind);
		ids.set(step.id, id);
		scratch.steps.push({ id });
	}
	for (const step of copies) {
		step.id = ids.get(step.id);
		step.parent_id = ids.get(step.parent_id) || null;
		if (!step.parent_id) step.branch = null;
		step.depends_on = (step.depends_on || []).filter((d) => ids.has(d)).map((d) => ids.get(d));
	}
	return { copies, ids };
}

/** Rename a step and every reference to it (parents, joins, `steps.<id>.` in templates). */
export function rename_step(definition, old_id, new_id) {
	const pattern = new RegExp(`steps\\.${old_id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\b`, "g");
	for (const step of definition.steps) {
		if (step.id === old_id) step.id = new_id;
		if (step.parent_id === old_id) step.parent_id = new_id;
		step.depends_on = (step.depends_on || []).map((d) => (d === old_id ? new_id : d));
		step.payload = JSON.parse(
			JSON.stringify(step.payload || {}).replace(pattern, `steps.${new_id}`)
		);
	}
}

// --- layout ----------------------------------------------------------------------------

/** Top-down positions for every node (the trigger first), with dagre. */
export function tidy(definition, kinds = {}) {
	const graph = new dagre.graphlib.Graph();
	graph.setGraph({ rankdir: "TB", nodesep: 40, ranksep: 70, marginx: 20, marginy: 20 });
	graph.setDefaultEdgeLabel(() => ({}));
	graph.setNode(TRIGGER_ID, { width: NODE_WIDTH, height: 64 });
	for (const step of definition.steps || []) {
		graph.setNode(step.id, { width: node_width(step, kinds[step.kind]), height: NODE_HEIGHT });
	}
	for (const e of edges_of(definition)) graph.setEdge(e.source, e.target);
	dagre.layout(graph);
	const layout = {};
	for (const id of graph.nodes()) {
		const node = graph.node(id);
		layout[id] = {
			x: Math.round(node.x - node.width / 2),
			y: Math.round(node.y - node.height / 2),
		};
	}
	return layout;
}

/**
 * A quick top-down layout (rows by longest path from the trigger, each row ordered by where
 * its parents are): linear time, for opening large flows that have no layout yet; "Tidy up"
 * uses dagre, which also untangles crossings.
 */
export function quick_layout(definition, kinds = {}) {
	const steps = definition.steps || [];
	const incoming = new Map(steps.map((s) => [s.id, []]));
	for (const e of edges_of(definition)) {
		if (incoming.has(e.target)) incoming.get(e.target).push(e.source);
	}
	const rank = new Map([[TRIGGER_ID, 0]]);
	const rank_of = (id, seen = new Set()) => {
		if (rank.has(id)) return rank.get(id);
		if (seen.has(id)) return 0; // a cycle (an invalid flow): place it anyway
		seen.add(id);
		const value = 1 + Math.max(0, ...(incoming.get(id) || []).map((s) => rank_of(s, seen)));
		rank.set(id, value);
		return value;
	};
	const rows = [];
	for (const step of steps) {
		const r = rank_of(step.id);
		(rows[r] = rows[r] || []).push(step);
	}
	const layout = { [TRIGGER_ID]: { x: 0, y: 0 } };
	const center = new Map([[TRIGGER_ID, NODE_WIDTH / 2]]);
	rows.forEach((row, r) => {
		if (!row) return;
		const parents_at = (step) => {
			const xs = (incoming.get(step.id) || [])
				.map((p) => center.get(p))
				.filter((x) => x !== undefined);
			return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
		};
		row.sort((a, b) => parents_at(a) - parents_at(b));
		const widths = row.map((s) => node_width(s, kinds[s.kind]));
		const total = widths.reduce((a, b) => a + b, 0) + 40 * (row.length - 1);
		const middle = row.reduce((sum, s) => sum + parents_at(s), 0) / row.length;
		let x = middle - total / 2;
		row.forEach((step, i) => {
			layout[step.id] = { x: Math.round(x), y: r * (NODE_HEIGHT + 70) };
			center.set(step.id, x + widths[i] / 2);
			x += widths[i] + 40;
		});
	});
	return layout;
}

const QUICK_LAYOUT_ABOVE = 80; // steps: beyond this dagre takes a noticeable moment

/** Positions for steps the layout does not place yet (new or imported steps). */
export function complete_layout(definition, layout, kinds = {}) {
	const ids = [TRIGGER_ID, ...(definition.steps || []).map((s) => s.id)];
	if (!ids.some((id) => !layout[id])) return layout;
	const large = ids.length > QUICK_LAYOUT_ABOVE && !Object.keys(layout).length;
	return { ...(large ? quick_layout(definition, kinds) : tidy(definition, kinds)), ...layout };
}
