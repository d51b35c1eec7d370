# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document
from frappe.utils import now_datetime

from flow_automation.channels.whatsapp import InvalidPhoneNumber, normalize_number


class WhatsAppConversation(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		account: DF.Link | None
		contact: DF.Link | None
		contact_name: DF.Data | None
		contact_number: DF.Data
		language: DF.Data | None
		last_inbound_account: DF.Link | None
		last_inbound_at: DF.Datetime | None
		last_outbound_at: DF.Datetime | None
		opted_out: DF.Check
		opted_out_at: DF.Datetime | None
		undeliverable: DF.Check
		undeliverable_since: DF.Datetime | None
		wa_id: DF.Data | None
		waiting_run: DF.Link | None
		waiting_since: DF.Datetime | None
		waiting_step: DF.Data | None
		waiting_until: DF.Datetime | None

	# end: auto-generated types
	def before_insert(self) -> None:
		self.normalize_number()

	def validate(self) -> None:
		self.stamp_flags()

	def normalize_number(self) -> None:
		# before naming: the E.164 number is the name, so each contact has one conversation
		try:
			self.contact_number = normalize_number(self.contact_number or "")
		except InvalidPhoneNumber as e:
			frappe.throw(_("Contact Number: {0}").format(e))

	def stamp_flags(self) -> None:
		if self.opted_out and not self.opted_out_at:
			self.opted_out_at = now_datetime()
		elif not self.opted_out:
			self.opted_out_at = None
		if self.undeliverable and not self.undeliverable_since:
			self.undeliverable_since = now_datetime()
		elif not self.undeliverable:
			self.undeliverable_since = None


def on_doctype_update() -> None:
	# a finished run releases the conversations still pointing at it: WHERE waiting_run = ?
	frappe.db.add_index("WhatsApp Conversation", ["waiting_run"])
