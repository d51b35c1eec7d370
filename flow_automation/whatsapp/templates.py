"""WhatsApp Templates: Meta's message templates, mirrored per account.

`sync` reads every template of an account's WhatsApp Business Account from the Graph API
and upserts one row per (account, name, language); templates gone from Meta are kept with
status DELETED (old runs and messages still name them). `plan` computes the same changes
without writing (the dry run). `upsert` writes templates given as Graph JSON without calling
Meta (offline sites, fixtures).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import frappe
from frappe import _
from frappe.utils import now_datetime

from flow_automation.whatsapp import accounts

DOCTYPE = "WhatsApp Template"
DELETED = "DELETED"
COMPARED = ("status", "category", "meta_id", "body_text", "parameter_count", "button_titles", "components")


def template_row_name(account: str, template_name: str, language: str) -> str:
	"""One row per account, template and language, as Meta keys them."""
	return f"{template_name}:{language}:{account}"


def row_values(account: str, template: Mapping[str, Any]) -> dict[str, Any]:
	"""The WhatsApp Template fields for one template as the Graph API lists it."""
	components = [c for c in template.get("components") or [] if isinstance(c, Mapping)]
	body = next((c.get("text") for c in components if str(c.get("type")).upper() == "BODY"), None) or ""
	titles = [
		button.get("text")
		for c in components
		if str(c.get("type")).upper() == "BUTTONS"
		for button in c.get("buttons") or []
		if isinstance(button, Mapping) and button.get("text")
	]
	return {
		"account": account,
		"template_name": str(template.get("name") or ""),
		"language": str(template.get("language") or ""),
		"status": str(template.get("status") or ""),
		"category": str(template.get("category") or ""),
		"meta_id": str(template.get("id") or ""),
		"body_text": body,
		"parameter_count": body.count("{{"),
		"button_titles": "\n".join(titles),
		"components": json.dumps(components, indent=1, sort_keys=True, ensure_ascii=False),
	}


def plan(
	account: str, templates: Iterable[Mapping[str, Any]], *, remove_missing: bool = True
) -> dict[str, list]:
	"""What a sync would change: {create, update, unchanged, delete} lists of row values / names."""
	existing = {
		row.name: row
		for row in frappe.get_all(DOCTYPE, filters={"account": account}, fields=["name", *COMPARED])
	}
	changes: dict[str, list] = {"create": [], "update": [], "unchanged": [], "delete": []}
	incoming: dict[str, dict[str, Any]] = {}
	for template in templates:
		values = row_values(account, template)
		if values["template_name"] and values["language"]:
			# a template listed twice (paging overlap) counts once, as last listed
			incoming[template_row_name(account, values["template_name"], values["language"])] = values
	seen = set(incoming)
	for name, values in incoming.items():
		current = existing.get(name)
		if current is None:
			changes["create"].append(values)
		elif any(str(current.get(f) or "") != str(values[f] or "") for f in COMPARED):
			changes["update"].append({"name": name, **values})
		else:
			changes["unchanged"].append(name)
	if remove_missing:
		changes["delete"] = sorted(
			n for n, row in existing.items() if n not in seen and row.status != DELETED
		)
	return changes


def apply(account: str, changes: Mapping[str, list]) -> None:
	now = now_datetime()
	for values in changes["create"]:
		frappe.get_doc({"doctype": DOCTYPE, **values, "last_synced_at": now}).insert(ignore_permissions=True)
	for values in changes["update"]:
		name = values["name"]
		frappe.db.set_value(
			DOCTYPE, name, {**{k: v for k, v in values.items() if k != "name"}, "last_synced_at": now}
		)
	for name in changes["delete"]:
		frappe.db.set_value(DOCTYPE, name, {"status": DELETED, "last_synced_at": now})


def fetch(account: str) -> list[dict[str, Any]]:
	"""Every template of the account's WhatsApp Business Account, from the Graph API."""
	waba_id = frappe.db.get_value("WhatsApp Account", account, "waba_id")
	if not waba_id:
		frappe.throw(
			_("WhatsApp Account {0} has no WhatsApp Business Account ID; set it to sync templates").format(
				account
			)
		)
	with accounts.client_for(account) as client:
		return list(client.list_templates(waba_id))


def _accounts(account: str | None) -> list[str]:
	if account:
		if not frappe.db.exists("WhatsApp Account", account):
			frappe.throw(_("WhatsApp Account {0} does not exist").format(account), frappe.DoesNotExistError)
		return [account]
	return frappe.get_all("WhatsApp Account", filters={"enabled": 1, "waba_id": ("is", "set")}, pluck="name")


def summary(changes: Mapping[str, list]) -> dict[str, Any]:
	return {
		"created": len(changes["create"]),
		"updated": len(changes["update"]),
		"unchanged": len(changes["unchanged"]),
		"deleted": len(changes["delete"]),
		"changes": {
			"create": [f"{v['template_name']}:{v['language']}" for v in changes["create"]],
			"update": [v["name"] for v in changes["update"]],
			"delete": list(changes["delete"]),
		},
	}


def sync(account: str | None = None, *, dry_run: bool = False) -> dict[str, Any]:
	"""Sync templates from Meta for one account (or every enabled one with a WABA id)."""
	results = {}
	for name in _accounts(account):
		changes = plan(name, fetch(name))
		if not dry_run:
			apply(name, changes)
			frappe.db.set_value("WhatsApp Account", name, "last_template_sync", now_datetime())
		results[name] = summary(changes)
	return results


def upsert(account: str, templates: list[Mapping[str, Any]]) -> dict[str, Any]:
	"""Write templates given as Graph JSON (a list, or {"data": [...]}) without calling Meta."""
	if isinstance(templates, Mapping):
		templates = list(templates.get("data") or [])
	_accounts(account)
	changes = plan(account, templates, remove_missing=False)
	apply(account, changes)
	return {account: summary(changes)}
