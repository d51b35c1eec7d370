// The Flow Builder page: /app/flow-builder/<Flow Template> (or /new), and
// /app/flow-builder/<Flow Template>?run=<Flow Run> to see a run on the canvas.
frappe.pages["flow-builder"].on_page_load = function (wrapper) {
	frappe.ui.make_app_page({ parent: wrapper, title: __("Flow Builder"), single_column: true });
};

frappe.pages["flow-builder"].on_page_show = function (wrapper) {
	const route = frappe.get_route();
	const name = route[1] && route[1] !== "new" ? route.slice(1).join("/") : null;
	const run =
		new URLSearchParams(window.location.search).get("run") ||
		(frappe.route_options || {}).run ||
		null;
	frappe.route_options = null;
	// ask for the flow while the bundle loads: the two take about as long as each other
	const args = Object.assign({}, name ? { template: name } : {}, run ? { run } : {});
	const prefetched = frappe.xcall("flow_automation.builder.get_builder", args);
	prefetched.catch(() => {}); // reported when the builder awaits it
	frappe.require("flow_builder.bundle.js").then(() => {
		if (!wrapper.flow_builder) {
			wrapper.flow_builder = new flow_automation.FlowBuilderPage(wrapper);
		}
		wrapper.flow_builder.show(name, run, prefetched);
	});
};
