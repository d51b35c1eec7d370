"""Who may do what: the app's roles and the check every whitelisted method makes first.

Flow Manager builds and edits templates; Flow User starts, completes and follows runs.
System Managers can do both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import frappe
from frappe import _

FLOW_MANAGER = "Flow Manager"
FLOW_USER = "Flow User"
SYSTEM_MANAGER = "System Manager"

# Created on install and migrate, with what each is for.
ROLES = {
	FLOW_MANAGER: "Builds and edits flow templates.",
	FLOW_USER: "Starts, completes and follows flow runs.",
}
FLOW_USER_ROLES = (FLOW_USER, FLOW_MANAGER, SYSTEM_MANAGER)
FLOW_MANAGER_ROLES = (FLOW_MANAGER, SYSTEM_MANAGER)

F = TypeVar("F", bound=Callable[..., Any])


def has_any_role(roles: Iterable[str], user: str | None = None) -> bool:
	user = user or frappe.session.user
	return user == "Administrator" or not set(roles).isdisjoint(frappe.get_roles(user))


def as_system() -> None:
	"""Jobs the webhook enqueues run as Guest; their work is the system's, not the guest's."""
	if frappe.session.user == "Guest":
		frappe.set_user("Administrator")


def require_roles(roles: tuple[str, ...]) -> None:
	"""PermissionError (403) unless the session user has one of `roles`.

	Not `frappe.only_for`: that one lets everything through while tests run.
	"""
	if not has_any_role(roles):
		frappe.throw(
			_("This action needs one of these roles: {0}").format(", ".join(roles)),
			frappe.PermissionError,
			title=_("Not Permitted"),
		)


def requires_roles(roles: tuple[str, ...]) -> Callable[[F], F]:
	"""For whitelisted methods, under `@frappe.whitelist()`: the role check first (403 whatever
	the arguments), then every required argument present (417 naming the missing one), never
	the bare TypeError (500) Frappe gives a call without them."""

	def decorator(fn: F) -> F:
		signature = inspect.signature(fn)
		required = [
			name
			for name, parameter in signature.parameters.items()
			if parameter.default is inspect.Parameter.empty
			and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
		]

		@functools.wraps(fn)
		def wrapper(*args: Any, **kwargs: Any) -> Any:
			require_roles(roles)
			missing = [name for name in required[len(args) :] if name not in kwargs]
			if missing:
				frappe.throw(
					_("{0}: this argument is required").format(", ".join(missing)),
					frappe.ValidationError,
					title=_("Missing argument"),
				)
			return fn(*args, **kwargs)

		return wrapper  # type: ignore[return-value]

	return decorator
