// The catalog's kinds grouped for the palette and the "+" picker, filtered by a search.
import { style_of } from "../graph";

export const GROUP_ORDER = ["Messaging", "Documents", "Logic", "Integrations"];

export function grouped_kinds(catalog, search) {
	const query = (search || "").trim().toLowerCase();
	const groups = {};
	for (const kind of catalog.kinds || []) {
		const haystack = `${kind.name} ${__(kind.label)} ${__(kind.description)} ${__(
			kind.group
		)}`.toLowerCase();
		if (query && !haystack.includes(query)) continue;
		(groups[kind.group] = groups[kind.group] || []).push({
			...kind,
			look: style_of(kind, kind.name),
		});
	}
	return Object.keys(groups)
		.sort(
			(a, b) => ((GROUP_ORDER.indexOf(a) + 99) % 99) - ((GROUP_ORDER.indexOf(b) + 99) % 99)
		)
		.map((group) => ({ group, kinds: groups[group] }));
}
