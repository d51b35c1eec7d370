"""WhatsApp endpoints: the Meta webhook (guests, signed) and whitelisted helpers for Desk.

Webhook URL: `/api/method/flow_automation.whatsapp.api.webhook` (the same for every account;
the signature and the delivery's phone_number_id say which account it is for).
"""

from __future__ import annotations

from typing import Any

import frappe
from werkzeug.wrappers import Response

from flow_automation.kept_connection import reuse
from flow_automation.roles import FLOW_MANAGER_ROLES, requires_roles
from flow_automation.whatsapp import templates
from flow_automation.whatsapp.webhook import receive, subscribe

SIGNATURE_HEADER = "X-Hub-Signature-256"


def _text(status: int, body: str) -> Response:
	return Response(body, status=status, mimetype="text/plain")


@frappe.whitelist(allow_guest=True, xss_safe=True, methods=["GET", "POST"])
def webhook() -> Response:
	"""Meta's webhook: GET answers the subscription handshake, POST receives deliveries.

	Never a 500: Meta retries non-200 answers for days, so anything unexpected after the
	signature check is logged and acknowledged; the stored rows say what was kept.
	"""
	if frappe.request.method == "GET":
		try:
			return _text(*subscribe(dict(frappe.form_dict)))
		except Exception:
			frappe.log_error(title="WhatsApp webhook: subscription check failed")
			return _text(403, "Forbidden")
	reuse()  # the connection an earlier delivery to this process left open, if any
	try:
		return _text(*receive(frappe.request.get_data(), frappe.get_request_header(SIGNATURE_HEADER)))
	except Exception:
		frappe.db.rollback()
		# Acknowledged but not stored: the raw body goes to the Error Log so nothing is lost.
		frappe.log_error(
			title="WhatsApp webhook: delivery could not be stored",
			message=frappe.get_traceback(with_context=False)
			+ "\n\nBody:\n"
			+ frappe.request.get_data()[:100_000].decode("utf-8", "replace"),
		)
		frappe.db.commit()
		return _text(200, "OK")


@frappe.whitelist(methods=["POST"])
@requires_roles(FLOW_MANAGER_ROLES)
def sync_templates(account: str | None = None) -> dict[str, Any]:
	"""Sync message templates from Meta for one account (or all); counts per account."""
	if account:
		frappe.has_permission("WhatsApp Account", "write", account, throw=True)
	return templates.sync(account=account)
