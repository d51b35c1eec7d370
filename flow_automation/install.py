"""Install and migrate hooks: roles the app's permissions refer to."""

import frappe

ROLES = {
	"Flow Manager": "Builds and edits flow templates.",
	"Flow User": "Starts, completes and follows flow runs.",
}


def after_install() -> None:
	ensure_roles()


def after_migrate() -> None:
	ensure_roles()


def ensure_roles() -> None:
	for role_name in ROLES:
		if not frappe.db.exists("Role", role_name):
			frappe.get_doc({"doctype": "Role", "role_name": role_name, "desk_access": 1}).insert(
				ignore_permissions=True
			)
