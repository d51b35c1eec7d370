"""WhatsApp Accounts: which number sends, its credentials, and a client for it.

The non-secret facts of every enabled account are cached in Redis (cleared when an account
changes), so the webhook finds the account of a delivery without a query; the webhook reads
them from a copy each process keeps for a few seconds (`webhook_accounts`), and reads Redis
again when that copy cannot verify a signature. Secrets never go to Redis (DESIGN §10): an
app secret is decrypted once per process and account version and kept in that process's
memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import frappe
from frappe import _
from frappe.utils.password import get_decrypted_password

from flow_automation.channels.whatsapp import CloudAPIClient
from flow_automation.engine import StepError
from flow_automation.process_copy import process_copy

ACCOUNTS_KEY = "flow_automation:whatsapp_accounts"
ACCOUNT_FIELDS = (
	"name",
	"phone_number_id",
	"display_phone_number",
	"waba_id",
	"is_default",
	"default_country",
	"messages_per_second",
	"recipient_gap_seconds",
	"download_media",
	"modified",
)
# Retries inside one send stay short: a worker should not sleep long, and the step's own
# retry policy (planner backoff) handles longer outages.
CLIENT_MAX_ATTEMPTS = 3
CLIENT_BACKOFF_SECONDS = 1.0
CLIENT_MAX_BACKOFF_SECONDS = 8.0
CLIENT_MAX_RETRY_AFTER_SECONDS = 10.0
# how long a process's copy of the accounts serves the webhook (see webhook_accounts)
WEBHOOK_COPY_SECONDS = 10

_secrets: dict[tuple[str, str, str], str | None] = {}


def clear_account_cache() -> None:
	frappe.cache.delete_value(ACCOUNTS_KEY)
	_accounts_copy.clear()  # this process's; the others' expire within WEBHOOK_COPY_SECONDS


def active_accounts() -> list[dict[str, Any]]:
	"""Enabled accounts' non-secret fields, default first (cached; never None)."""

	def load() -> list[dict[str, Any]]:
		rows = frappe.get_all(
			"WhatsApp Account",
			filters={"enabled": 1},
			fields=list(ACCOUNT_FIELDS),
			order_by="is_default desc, creation asc",
		)
		return [{**row, "modified": str(row.modified)} for row in rows]

	return frappe.cache.get_value(ACCOUNTS_KEY, load) or []


@process_copy(WEBHOOK_COPY_SECONDS)
def _accounts_copy() -> list[dict[str, Any]]:
	return active_accounts()


def webhook_accounts(*, fresh: bool = False) -> list[dict[str, Any]]:
	"""The enabled accounts as the webhook reads them on every delivery: this process's copy,
	at most WEBHOOK_COPY_SECONDS old (no Redis round trip per request), or, `fresh`, read
	again. A copy that is out of date errs only one way the webhook cannot put right at once:
	an account disabled seconds ago still takes deliveries for those seconds. A new account or
	a changed app secret fails the signature check against the copy, and the webhook then asks
	again with `fresh`.
	"""
	if fresh:
		_accounts_copy.clear()
	return _accounts_copy()


def account_info(name: str | None) -> dict[str, Any] | None:
	"""An enabled account's cached facts, by name."""
	return next((a for a in active_accounts() if a["name"] == name), None) if name else None


def account_for_phone_number_id(
	phone_number_id: str | None, among: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
	"""The enabled account that owns a Meta phone number id (from a webhook's metadata), among
	`among` (the webhook's copy) or the cached accounts."""
	if not phone_number_id:
		return None
	candidates = active_accounts() if among is None else among
	return next((a for a in candidates if a["phone_number_id"] == str(phone_number_id)), None)


def default_account() -> dict[str, Any] | None:
	"""The default enabled account (or the only one)."""
	accounts = active_accounts()
	return next((a for a in accounts if a["is_default"]), accounts[0] if len(accounts) == 1 else None)


def app_secret(account: Mapping[str, Any]) -> str | None:
	"""The account's app secret, decrypted once per process and account version."""
	key = (frappe.local.site, account["name"], str(account.get("modified")))
	if key not in _secrets:
		_secrets[key] = get_decrypted_password(
			"WhatsApp Account", account["name"], "app_secret", raise_exception=False
		)
	return _secrets[key]


def choose_account(explicit: str | None, pinned: str | None) -> dict[str, Any]:
	"""The account a send uses: the step's, else the contact's pinned one, else the default."""
	for name, what in ((explicit, "the step's account"), (pinned, None)):
		if not name:
			continue
		info = account_info(name)
		if info:
			return info
		if what:
			raise StepError(
				f"account: WhatsApp Account {name!r} does not exist or is disabled", retryable=False
			)
	info = default_account()
	if not info:
		raise StepError(
			"no WhatsApp Account to send from: add one (and mark it default) in WhatsApp Account",
			retryable=False,
		)
	return info


def client_for(account: Mapping[str, Any] | str) -> CloudAPIClient:
	"""A Cloud API client for an account (its access token is decrypted here, never cached)."""
	name = account if isinstance(account, str) else account["name"]
	values = frappe.db.get_value(
		"WhatsApp Account", name, ["phone_number_id", "base_url", "api_version"], as_dict=True
	)
	if not values:
		frappe.throw(_("WhatsApp Account {0} does not exist").format(name), frappe.DoesNotExistError)
	token = get_decrypted_password("WhatsApp Account", name, "access_token", raise_exception=False)
	if not token:
		raise StepError(f"WhatsApp Account {name!r} has no access token", retryable=False)
	return CloudAPIClient(
		values.phone_number_id,
		token,
		base_url=values.base_url or "https://graph.facebook.com",
		api_version=values.api_version or "v21.0",
		max_attempts=CLIENT_MAX_ATTEMPTS,
		backoff_seconds=CLIENT_BACKOFF_SECONDS,
		max_backoff_seconds=CLIENT_MAX_BACKOFF_SECONDS,
		max_retry_after_seconds=CLIENT_MAX_RETRY_AFTER_SECONDS,
	)


def keywords(account: str | None, fieldname: str, default: str) -> tuple[str, ...]:
	"""Opt-out / opt-in words of an account, upper-cased (the account's, else `default`)."""
	text = (frappe.db.get_value("WhatsApp Account", account, fieldname) if account else None) or default
	return tuple(word.strip().upper() for word in text.splitlines() if word.strip())
