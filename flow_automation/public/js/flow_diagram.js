// Read-only flow diagram for the Flow Template form: steps as boxes laid out in layers
// (topological depth), edges from parent_id (labelled with the branch) and depends_on.
// Plain inline SVG: Frappe v15 desk forms have no graph library we can rely on without a build.

frappe.provide("flow_automation.diagram");

flow_automation.diagram = {
	NODE_W: 210,
	NODE_H: 64,
	GAP_X: 36,
	GAP_Y: 58,
	PAD: 16,

	/** Steps of the form (child rows) as graph nodes with their incoming edges. */
	nodes_from_rows(rows) {
		const ids = new Set(rows.map((r) => (r.step_id || "").trim()).filter(Boolean));
		return rows
			.filter((r) => (r.step_id || "").trim())
			.map((r) => {
				const id = r.step_id.trim();
				const parent = (r.parent_id || "").trim();
				const deps = (r.depends_on || "")
					.split(",")
					.map((d) => d.trim())
					.filter((d) => d && d !== parent);
				const edges = [];
				// Dangling references are left out here; server validation names them.
				if (parent && ids.has(parent)) {
					edges.push({
						from: parent,
						to: id,
						label: (r.branch || "").trim(),
						kind: "branch",
					});
				}
				for (const dep of deps) {
					if (ids.has(dep))
						edges.push({ from: dep, to: id, label: "", kind: "depends" });
				}
				return { id, row: r, edges };
			});
	},

	/** Depth of each node = longest chain of predecessors; cycles are cut, not followed. */
	layers(nodes) {
		const by_id = Object.fromEntries(nodes.map((n) => [n.id, n]));
		const depth = {};
		const visiting = new Set();
		const visit = (id) => {
			if (depth[id] !== undefined) return depth[id];
			if (visiting.has(id)) return 0; // a cycle: validation reports it, we just stop
			visiting.add(id);
			let d = 0;
			for (const e of by_id[id].edges) d = Math.max(d, visit(e.from) + 1);
			visiting.delete(id);
			depth[id] = d;
			return d;
		};
		nodes.forEach((n) => visit(n.id));

		const layers = [];
		nodes.forEach((n) => (layers[depth[n.id]] = layers[depth[n.id]] || []).push(n));
		return this.order_layers(layers.filter(Boolean));
	},

	/** Order each layer by the mean position of its predecessors, to reduce crossings. */
	order_layers(layers) {
		const position = {};
		layers.forEach((layer, li) => {
			if (li > 0) {
				const score = (n) => {
					const xs = n.edges.map((e) => position[e.from]).filter((x) => x !== undefined);
					return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
				};
				layer.sort((a, b) => score(a) - score(b));
			}
			layer.forEach((n, i) => (position[n.id] = i - (layer.length - 1) / 2));
		});
		return layers;
	},

	/** The diagram as an SVG string. `describe(row)` gives the box's second line. */
	render(rows, describe) {
		const nodes = this.nodes_from_rows(rows || []);
		if (!nodes.length) {
			return `<div class="flow-diagram-empty text-muted">${__(
				"Add steps to see the flow diagram."
			)}</div>`;
		}
		const layers = this.layers(nodes);
		const widest = Math.max(...layers.map((l) => l.length));
		const width = widest * (this.NODE_W + this.GAP_X) - this.GAP_X + 2 * this.PAD;
		const height = layers.length * (this.NODE_H + this.GAP_Y) - this.GAP_Y + 2 * this.PAD;

		const box = {};
		layers.forEach((layer, li) => {
			const row_width = layer.length * (this.NODE_W + this.GAP_X) - this.GAP_X;
			const x0 = (width - row_width) / 2;
			layer.forEach((n, i) => {
				box[n.id] = {
					x: x0 + i * (this.NODE_W + this.GAP_X),
					y: this.PAD + li * (this.NODE_H + this.GAP_Y),
				};
			});
		});

		const edges = nodes.flatMap((n) => n.edges).map((e) => this.edge_svg(e, box));
		const boxes = nodes.map((n) => this.node_svg(n, box[n.id], describe));
		return `<svg class="flow-diagram" xmlns="http://www.w3.org/2000/svg"
			viewBox="0 0 ${width} ${height}" width="${width}" height="${height}"
			role="img" aria-label="${__("Flow diagram")}">
			<defs>
				<marker id="flow-arrow" viewBox="0 0 10 10" refX="9" refY="5"
					markerWidth="7" markerHeight="7" orient="auto-start-reverse">
					<path d="M 0 0 L 10 5 L 0 10 z" class="flow-arrow-head"></path>
				</marker>
			</defs>
			<g class="flow-edges">${edges.join("")}</g>
			<g class="flow-nodes">${boxes.join("")}</g>
		</svg>`;
	},

	node_svg(node, pos, describe) {
		const esc = frappe.utils.escape_html;
		const row = node.row;
		const title = row.label || node.id;
		const subtitle = describe ? describe(row) : row.kind || "";
		const clip = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);
		return `<g class="flow-node" data-step="${esc(node.id)}" data-row="${esc(row.name)}"
				transform="translate(${pos.x}, ${pos.y})">
			<title>${esc(node.id)}: ${esc(title)}</title>
			<rect class="flow-node-box" width="${this.NODE_W}" height="${this.NODE_H}" rx="8"></rect>
			<rect class="flow-node-accent" data-kind="${esc(row.kind || "")}" width="4"
				height="${this.NODE_H - 16}" x="0" y="8" rx="2"></rect>
			<text class="flow-node-title" x="14" y="22">${esc(clip(title, 26))}</text>
			<text class="flow-node-kind" x="14" y="40">${esc(clip(subtitle, 32))}</text>
			<text class="flow-node-id" x="14" y="55">#${esc(clip(node.id, 30))}</text>
		</g>`;
	},

	edge_svg(edge, box) {
		const a = box[edge.from];
		const b = box[edge.to];
		const x1 = a.x + this.NODE_W / 2;
		const y1 = a.y + this.NODE_H;
		const x2 = b.x + this.NODE_W / 2;
		const y2 = b.y;
		const bend = Math.max(24, (y2 - y1) / 2);
		const path = `M ${x1} ${y1} C ${x1} ${y1 + bend}, ${x2} ${y2 - bend}, ${x2} ${y2}`;
		let label = "";
		if (edge.label) {
			const esc = frappe.utils.escape_html;
			const mx = (x1 + x2) / 2;
			const my = (y1 + y2) / 2;
			const w = 12 + 7 * edge.label.length;
			label = `<g class="flow-edge-label" transform="translate(${mx}, ${my})">
				<rect x="${-w / 2}" y="-10" width="${w}" height="20" rx="10"></rect>
				<text text-anchor="middle" y="4">${esc(edge.label)}</text>
			</g>`;
		}
		return `<g class="flow-edge flow-edge-${edge.kind}" data-from="${frappe.utils.escape_html(
			edge.from
		)}" data-to="${frappe.utils.escape_html(edge.to)}">
			<path d="${path}" marker-end="url(#flow-arrow)"></path>${label}
		</g>`;
	},
};
