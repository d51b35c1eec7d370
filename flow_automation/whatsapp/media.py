"""Inbound media: downloaded from Meta into a private File attached to the message (a job)."""

from __future__ import annotations

import mimetypes
from typing import Any

import frappe

from flow_automation.roles import as_system
from flow_automation.transaction import commit, enqueue
from flow_automation.whatsapp import accounts

MESSAGE = "WhatsApp Message"
MAX_MEDIA_BYTES = 100 * 1024 * 1024


def enqueue_media_download(message: Any) -> None:
	"""Queue the download of a message's media, if its account keeps media."""
	info = accounts.account_info(message.account)
	if not info or not info.get("download_media"):
		return
	enqueue(
		"flow_automation.whatsapp.media.download_media",
		queue="long",
		after_commit=True,
		message=message.name,
	)


def download_media(message: str) -> str | None:
	"""Download an inbound message's media into a private File attached to it; its file_url."""
	as_system()
	row = frappe.db.get_value(
		MESSAGE,
		message,
		["name", "account", "media_id", "media_mime_type", "media_file", "wamid"],
		as_dict=True,
	)
	if not row or not row.media_id or row.media_file:
		return row.media_file if row else None
	try:
		with accounts.client_for(row.account) as client:
			info = client.get_media(row.media_id)
			content = client.download_media(info.url, max_bytes=MAX_MEDIA_BYTES)
		mime = info.mime_type or row.media_mime_type or "application/octet-stream"
		extension = mimetypes.guess_extension(mime.split(";")[0].strip()) or ""
		file = frappe.get_doc(
			{
				"doctype": "File",
				"file_name": f"whatsapp-{row.media_id}{extension}",
				"attached_to_doctype": MESSAGE,
				"attached_to_name": row.name,
				"attached_to_field": "media_file",
				"is_private": 1,
				"content": content,
			}
		).insert(ignore_permissions=True)
	except Exception as e:
		frappe.db.set_value(
			MESSAGE, row.name, "processing_error", f"media download: {type(e).__name__}: {e}"[:1000]
		)
		frappe.log_error(title=f"WhatsApp: media of {row.name} could not be downloaded")
		commit()
		return None
	frappe.db.set_value(MESSAGE, row.name, "media_file", file.file_url)
	commit()
	return file.file_url
