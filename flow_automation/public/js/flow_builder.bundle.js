// The Flow Builder: a Vue 3 + Vue Flow app on the Desk page `flow-builder` (the page's own
// script in flow_automation/flow_automation/page/flow_builder/ loads this bundle).
import { createApp, watch } from "vue";
import { createPinia } from "pinia";
import FlowBuilder from "./flow_builder/FlowBuilder.vue";
import { useStore } from "./flow_builder/store";
import { export_flow, open_import_dialog, open_starter_dialog } from "./flow_builder/dialogs";

class FlowBuilderPage {
	constructor(wrapper) {
		this.wrapper = wrapper;
		this.page = wrapper.page;
		const parent = $(wrapper).find(".layout-main-section").get(0);
		const pinia = createPinia();
		this.app = createApp(FlowBuilder);
		SetVueGlobals(this.app);
		this.app.use(pinia);
		this.store = useStore(pinia);
		this.view = this.app.mount(parent);
		this.watch_state();
		guard_leaving(this.store);
	}

	async show(name, run, prefetched = null) {
		this.page.set_title(name || __("New Flow"));
		await this.store.load(name, run, prefetched);
		this.setup_actions();
		this.set_indicator();
	}

	setup_actions() {
		const page = this.page;
		const store = this.store;
		page.clear_actions();
		page.clear_menu();
		page.clear_custom_actions();
		if (store.can_edit) {
			page.set_primary_action(__("Save"), () => this.save(), "save");
		}
		if (store.name) {
			page.add_menu_item(__("Open the form"), () =>
				frappe.set_route("Form", "Flow Template", store.name)
			);
			page.add_menu_item(__("Export JSON"), () => export_flow(store.name));
			page.add_menu_item(__("Runs of this flow"), () =>
				frappe.set_route("List", "Flow Run", { template: store.name })
			);
		}
		page.add_menu_item(__("Keyboard shortcuts"), () => this.view.toggle_help());
		if (frappe.model.can_create("Flow Template")) {
			page.add_menu_item(__("New flow"), () => frappe.set_route("flow-builder", "new"));
			page.add_menu_item(__("New from a template"), () =>
				open_starter_dialog((name) => frappe.set_route("flow-builder", name))
			);
			page.add_menu_item(__("Import JSON"), () =>
				open_import_dialog((name) => frappe.set_route("flow-builder", name))
			);
		}
	}

	async save() {
		const saved = await this.store.save();
		if (saved && saved.was_new) frappe.set_route("flow-builder", saved.name);
		this.set_indicator();
	}

	watch_state() {
		watch(
			() => [this.store.dirty, this.store.can_edit, this.store.mode, this.store.loading],
			() => this.set_indicator()
		);
	}

	set_indicator() {
		const store = this.store;
		if (store.loading) return;
		if (store.mode === "run") this.page.set_indicator(__("Run"), "blue");
		else if (store.mode === "test") this.page.set_indicator(__("Test run"), "purple");
		else if (!store.can_edit) this.page.set_indicator(__("Read only"), "gray");
		else if (store.dirty) this.page.set_indicator(__("Not Saved"), "orange");
		else if (!store.template.enabled) this.page.set_indicator(__("Disabled"), "gray");
		else this.page.set_indicator(__("Enabled"), "green");
	}
}

let guarded = false;

/** Leaving the builder with unsaved changes asks first: in Desk, and when the tab closes. */
function guard_leaving(store) {
	if (guarded) return;
	guarded = true;
	const on_builder = () => frappe.get_route()[0] === "flow-builder";
	window.addEventListener("beforeunload", (event) => {
		if (on_builder() && store.dirty) {
			event.preventDefault();
			event.returnValue = "";
		}
	});
	const push_state = frappe.router.push_state.bind(frappe.router);
	frappe.router.push_state = function (url) {
		if (
			on_builder() &&
			store.dirty &&
			!String(url).includes(`flow-builder/${store.name || "new"}`)
		) {
			frappe.confirm(__("This flow has unsaved changes. Leave without saving them?"), () => {
				store.dirty = false;
				push_state(url);
			});
			return;
		}
		return push_state(url);
	};
}

frappe.provide("flow_automation");
flow_automation.FlowBuilderPage = FlowBuilderPage;
export default FlowBuilderPage;
