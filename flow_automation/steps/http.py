"""The webhook step: one HTTP call with a rendered JSON body."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import frappe
import requests

from flow_automation.engine import StepError
from flow_automation.steps.base import StepCall, handles

MAX_RESPONSE_BYTES = 32 * 1024
DEFAULT_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 60
ALLOW_PRIVATE_CONFIG_KEY = "flow_automation_allow_private_webhook_targets"


def check_target(url: str) -> None:
	"""Refuse non-http(s) URLs and private, loopback, link-local or reserved targets.

	Site config `flow_automation_allow_private_webhook_targets: 1` allows private targets
	(tests and intranets). Checked on the resolved addresses, so a public name that points
	inside the network is refused as well.
	"""
	parts = urlsplit(url)
	if parts.scheme not in ("http", "https") or not parts.hostname:
		raise StepError(f"url: {url!r} is not an http(s) URL", retryable=False)
	if frappe.conf.get(ALLOW_PRIVATE_CONFIG_KEY):
		return
	try:
		infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
	except socket.gaierror as e:
		raise StepError(f"url: cannot resolve {parts.hostname!r}: {e}")
	for info in infos:
		address = ipaddress.ip_address(info[4][0])
		if (
			address.is_private
			or address.is_loopback
			or address.is_link_local
			or address.is_reserved
			or address.is_multicast
			or address.is_unspecified
		):
			raise StepError(
				f"url: {parts.hostname} resolves to {address}, a private/loopback/link-local address; "
				f"set {ALLOW_PRIVATE_CONFIG_KEY} in site_config to allow it",
				retryable=False,
			)


@handles("webhook")
def webhook(call: StepCall) -> dict[str, Any]:
	payload = call.payload
	method = (payload.get("method") or "POST").upper()
	url = payload["url"]
	timeout = min(float(payload.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS), MAX_TIMEOUT_SECONDS)
	headers = {str(k): str(v) for k, v in (payload.get("headers") or {}).items()}
	headers.setdefault("User-Agent", "flow_automation")
	# receivers can drop a repeat: the key is the same for every retry of this step
	headers["Idempotency-Key"] = call.idempotency_key
	body = payload.get("body")
	check_target(url)
	if call.dry_run:
		call.record("http", method=method, url=url, headers=headers, body=body)
		return {"status_code": None, "body": None, "dry_run": True}
	try:
		response = requests.request(
			method,
			url,
			json=body if method != "GET" and body is not None else None,
			params=body if method == "GET" and isinstance(body, dict) else None,
			headers=headers,
			timeout=timeout,
			allow_redirects=False,
			stream=True,
		)
	except requests.Timeout:
		raise StepError(f"{method} {url} timed out after {timeout:g} s")
	except requests.RequestException as e:
		raise StepError(f"{method} {url} failed: {type(e).__name__}: {e}")
	with response:
		raw = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
	truncated = len(raw) > MAX_RESPONSE_BYTES
	raw = raw[:MAX_RESPONSE_BYTES]
	text = raw.decode(response.encoding or "utf-8", errors="replace")
	parsed: Any = text
	if "json" in (response.headers.get("Content-Type") or "") and not truncated:
		try:
			parsed = json.loads(text)
		except ValueError:
			parsed = text
	if not 200 <= response.status_code < 300:
		retryable = response.status_code >= 500 or response.status_code in (408, 429)
		raise StepError(
			f"{method} {url} answered HTTP {response.status_code}: {text[:300]}", retryable=retryable
		)
	return {"status_code": response.status_code, "body": parsed, "truncated": truncated}
