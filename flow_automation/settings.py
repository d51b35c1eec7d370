"""Flow Automation Settings, read in one place: cached in Redis, cleared when they are saved."""

from __future__ import annotations

from typing import Any

import frappe

SETTINGS_KEY = "flow_automation:settings"
PAUSED_KEY = "flow_automation:paused"
PAUSED_CONFIG_KEY = "flow_automation_paused"

DEFAULT_MAX_RECURSION_DEPTH = 5


def get_settings() -> dict[str, Any]:
	"""The settings as a dict (cached; cleared when the settings are saved)."""
	return frappe.cache.get_value(
		SETTINGS_KEY, lambda: frappe.get_cached_doc("Flow Automation Settings").as_dict()
	)


def setting(fieldname: str, default: Any = None) -> Any:
	return get_settings().get(fieldname) or default


def is_paused() -> bool:
	"""The kill switch: site_config `flow_automation_paused` overrides the setting."""
	if frappe.conf.get(PAUSED_CONFIG_KEY) is not None:
		return bool(frappe.conf.get(PAUSED_CONFIG_KEY))
	return bool(
		frappe.cache.get_value(
			PAUSED_KEY,
			lambda: int(frappe.db.get_single_value("Flow Automation Settings", "pause_all") or 0),
		)
	)


def max_recursion_depth() -> int:
	return int(setting("max_recursion_depth", DEFAULT_MAX_RECURSION_DEPTH))


def redact_pii_enabled() -> bool:
	return bool(setting("redact_pii"))


def clear_settings_cache() -> None:
	frappe.cache.delete_value([PAUSED_KEY, SETTINGS_KEY])
