// The Flow Builder's graph model (public/js/flow_builder/graph.js): definitions to canvas
// edges, the edits the canvas makes, and layouts. Run by tests/test_builder_graph.py with
// the real step catalog in FLOW_KINDS (a JSON file of each kind's describe()); every
// definition an edit produces is also written to FLOW_EDITED for the engine to validate.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";

globalThis.__ = (text, args = []) => text.replace(/\{(\d+)\}/g, (_, i) => String(args[i]));
const g = await import("../../flow_automation/public/js/flow_builder/graph.js");

const kinds = Object.fromEntries(
	JSON.parse(fs.readFileSync(process.env.FLOW_KINDS, "utf8")).map((k) => [k.name, k])
);
const edited = {}; // name → definition, for the engine to validate afterwards
process.on("exit", () => {
	if (process.env.FLOW_EDITED) fs.writeFileSync(process.env.FLOW_EDITED, JSON.stringify(edited));
});

function step(id, kind, extra = {}) {
	return {
		...g.new_step({ steps: [] }, kinds[kind]),
		id,
		...extra,
	};
}

/** trigger → check (condition) → yes: mail; no: wait → after both: done */
function sample() {
	return {
		version: 1,
		variables: {},
		steps: [
			step("check", "condition"),
			step("mail", "notify", { parent_id: "check", branch: "yes" }),
			step("pause", "wait", { parent_id: "check", branch: "no" }),
			step("done", "set_variables", { depends_on: ["mail", "pause"] }),
		],
	};
}

const edge_set = (definition) =>
	g
		.edges_of(definition)
		.map((e) => `${e.source}:${e.sourceHandle}->${e.target}`)
		.sort();

test("edges: roots hang off the trigger, branches off their handle, joins off each source", () => {
	assert.deepEqual(edge_set(sample()), [
		"__trigger__:next->check",
		"check:b:no->pause",
		"check:b:yes->mail",
		"mail:next->done",
		"pause:next->done",
	]);
	const labels = Object.fromEntries(g.edges_of(sample()).map((e) => [e.id, e.data.label]));
	assert.equal(labels["check->mail"], "yes");
	assert.equal(labels["mail->done"], null);
});

test("branch handles come from the catalog: fixed ones, payload paths, and error", () => {
	assert.deepEqual(g.branches_of(step("c", "condition"), kinds.condition), ["yes", "no"]);
	const sw = step("s", "switch", {
		payload: { value: "{{ doc.status }}", cases: ["Open", "Won"] },
	});
	assert.deepEqual(g.branches_of(sw, kinds.switch), ["Open", "Won", "default"]);
	const ask = step("a", "ask", {
		on_error: "branch",
		payload: {
			to: "x",
			text: "?",
			buttons: [
				{ id: "yes", title: "Yes" },
				{ id: "no", title: "No" },
			],
		},
	});
	assert.deepEqual(g.branches_of(ask, kinds.ask), [
		"yes",
		"no",
		"answered",
		"invalid",
		"timeout",
		"error",
	]);
	const listed = step("l", "ask", {
		payload: { list: { sections: [{ rows: [{ id: "r1" }, { id: "r2" }] }] } },
	});
	assert.deepEqual(g.branches_of(listed, kinds.ask).slice(0, 2), ["r1", "r2"]);
	// a node is wide enough for a label under every handle
	assert.ok(g.node_width(ask, kinds.ask) > g.node_width(step("w", "wait"), kinds.wait));
});

test("connect: a branch handle moves the step into that branch, next makes a join", () => {
	const d = sample();
	d.steps.push(step("extra", "wait"));
	assert.ok(g.connect(d, "check", "b:no", "extra"));
	let extra = g.steps_by_id(d).extra;
	assert.equal(extra.parent_id, "check");
	assert.equal(extra.branch, "no");
	assert.ok(g.connect(d, "mail", g.NEXT, "extra"));
	extra = g.steps_by_id(d).extra;
	assert.deepEqual(extra.depends_on, ["mail"]);
	assert.ok(g.connect(d, g.TRIGGER_ID, g.NEXT, "extra"), "back to a root");
	extra = g.steps_by_id(d).extra;
	assert.deepEqual([extra.parent_id, extra.branch, extra.depends_on], [null, null, []]);
	edited.connect = d;
});

test("connect refuses a loop and a step onto itself", () => {
	const d = sample();
	const before = JSON.stringify(d);
	assert.equal(g.connect(d, "done", g.NEXT, "check"), false);
	assert.equal(g.connect(d, "mail", g.NEXT, "mail"), false);
	assert.equal(JSON.stringify(d), before);
});

test("disconnect removes one edge and leaves the others", () => {
	const d = sample();
	g.disconnect(d, "mail", "done");
	assert.deepEqual(g.steps_by_id(d).done.depends_on, ["pause"]);
	edited.disconnect = d;
});

test("delete: what came after a deleted step comes after what came before it", () => {
	const d = sample();
	g.delete_steps(d, ["mail"]);
	assert.deepEqual(
		d.steps.map((s) => s.id),
		["check", "pause", "done"]
	);
	// done came after mail (in check's yes branch) and pause: it now comes after check and pause
	assert.deepEqual(edge_set(d), [
		"__trigger__:next->check",
		"check:b:no->pause",
		"check:next->done",
		"pause:next->done",
	]);
	edited.delete_in_branch = d;

	const chain = {
		version: 1,
		steps: [
			step("a", "wait"),
			step("b", "wait", { depends_on: ["a"] }),
			step("c", "wait", { depends_on: ["b"] }),
		],
	};
	g.delete_steps(chain, ["b"]);
	assert.deepEqual(g.steps_by_id(chain).c.depends_on, ["a"]);
	edited.delete_in_chain = chain;
});

test("delete keeps a follower inside the branch its deleted predecessor was in", () => {
	const d = sample();
	d.steps.push(step("after_mail", "wait", { depends_on: ["mail"] }));
	g.delete_steps(d, ["mail"]);
	const follower = g.steps_by_id(d).after_mail;
	assert.deepEqual(
		[follower.parent_id, follower.branch, follower.depends_on],
		["check", "yes", []]
	);
	edited.delete_keeps_branch = d;
});

test("delete of a branching step hands its branches to its own parent", () => {
	const d = sample();
	g.delete_steps(d, ["check"]);
	assert.deepEqual(edge_set(d), [
		"__trigger__:next->mail",
		"__trigger__:next->pause",
		"mail:next->done",
		"pause:next->done",
	]);
	edited.delete_branching = d;
});

test("insert on an edge: source → new → target, on a branch and on the trigger's edge", () => {
	const d = sample();
	const inserted = g.new_step(d, kinds.notify);
	g.insert_on_edge(d, "check", "b:yes", "mail", inserted);
	assert.equal(inserted.id, "notify_1");
	assert.deepEqual(
		edge_set(d).filter((e) => e.includes("notify_1")),
		["check:b:yes->notify_1", "notify_1:next->mail"]
	);
	const first = g.new_step(d, kinds.wait);
	g.insert_on_edge(d, g.TRIGGER_ID, g.NEXT, "check", first);
	assert.deepEqual(
		edge_set(d).filter((e) => e.includes(first.id)),
		[`__trigger__:next->${first.id}`, `${first.id}:next->check`]
	);
	edited.insert = d;
});

test("copies get fresh ids; links among them follow, links to the rest are dropped", () => {
	const d = sample();
	const picked = d.steps.filter((s) => ["check", "mail"].includes(s.id));
	const { copies, ids } = g.copies_of(d, picked);
	assert.deepEqual(
		copies.map((s) => s.id),
		["condition_1", "notify_1"]
	);
	assert.equal(ids.get("check"), "condition_1");
	assert.deepEqual([copies[0].parent_id, copies[0].depends_on], [null, []]);
	assert.deepEqual([copies[1].parent_id, copies[1].branch], ["condition_1", "yes"]);
	d.steps.push(...copies);
	edited.paste = d;
});

test("rename follows every reference: parents, joins and steps.<id> in templates", () => {
	const d = sample();
	g.steps_by_id(d).mail.payload.subject =
		"Re: {{ steps.check.output.value }} / {{ steps.checks }}";
	g.rename_step(d, "check", "is_open");
	const by_id = g.steps_by_id(d);
	assert.ok(by_id.is_open && !by_id.check);
	assert.equal(by_id.mail.parent_id, "is_open");
	assert.equal(
		by_id.mail.payload.subject,
		"Re: {{ steps.is_open.output.value }} / {{ steps.checks }}"
	);
	g.rename_step(d, "mail", "greet");
	assert.deepEqual(g.steps_by_id(d).done.depends_on, ["greet", "pause"]);
	edited.rename = d;
});

test("summaries and badges say what a step does and when it runs", () => {
	const mail = step("m", "notify", {
		payload: { channel: "email", to: ["a@example.com"], subject: "Hello" },
		trigger: { type: "after_delay", days: 3, hours: 2 },
	});
	assert.equal(g.summary_of(mail), "Email a@example.com: Hello");
	assert.equal(g.badge_of(mail, kinds.notify), "after 3 days 2 hours");
	assert.equal(g.badge_of(step("q", "ask"), kinds.ask), "waits for reply");
	const cond = step("c", "condition", {
		payload: { field: "doc.status", op: "==", value: "Open" },
	});
	assert.equal(g.summary_of(cond), "doc.status == Open");
});

function boxes(definition, layout) {
	return [g.TRIGGER_ID, ...definition.steps.map((s) => s.id)].map((id) => {
		const s = g.steps_by_id(definition)[id];
		return {
			id,
			...layout[id],
			w: s ? g.node_width(s, kinds[s.kind]) : g.NODE_WIDTH,
			h: g.NODE_HEIGHT,
		};
	});
}

function overlaps(list) {
	const found = [];
	for (let i = 0; i < list.length; i++) {
		for (let j = i + 1; j < list.length; j++) {
			const a = list[i];
			const b = list[j];
			if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) {
				found.push(`${a.id}/${b.id}`);
			}
		}
	}
	return found;
}

/** A flow of n steps: a chain with a condition every tenth step, its "no" branch a side step. */
function big(n) {
	const steps = [];
	let previous = null;
	for (let i = 0; i < n; i++) {
		const kind = i % 10 === 0 ? "condition" : "notify";
		const s = step(`s${i}`, kind);
		if (previous) {
			const prev = steps.find((x) => x.id === previous);
			if (prev.kind === "condition")
				Object.assign(s, { parent_id: previous, branch: "yes" });
			else s.depends_on = [previous];
		}
		steps.push(s);
		if (kind === "condition") {
			steps.push(step(`s${i}_no`, "wait", { parent_id: `s${i}`, branch: "no" }));
		}
		previous = s.id;
	}
	return { version: 1, steps };
}

test("tidy places every node, the trigger above its steps, none overlapping", () => {
	const d = sample();
	const layout = g.tidy(d, kinds);
	const list = boxes(d, layout);
	assert.ok(list.every((b) => Number.isFinite(b.x) && Number.isFinite(b.y)));
	assert.deepEqual(overlaps(list), []);
	assert.ok(layout.check.y > layout[g.TRIGGER_ID].y);
	assert.ok(layout.done.y > layout.mail.y);
});

test("a large flow opens with the quick layout: rows by depth, none overlapping", () => {
	const d = big(200);
	const layout = g.complete_layout(d, {}, kinds);
	const list = boxes(d, layout);
	assert.equal(Object.keys(layout).length, d.steps.length + 1);
	assert.deepEqual(overlaps(list), []);
	for (const e of g.edges_of(d)) {
		assert.ok(layout[e.target].y > layout[e.source].y, `${e.source} above ${e.target}`);
	}
	// a saved layout is kept as it is; only missing nodes are placed
	const kept = g.complete_layout(d, { ...layout, s5: { x: 9999, y: 9999 } }, kinds);
	assert.deepEqual(kept.s5, { x: 9999, y: 9999 });
	edited.big = d;
});
