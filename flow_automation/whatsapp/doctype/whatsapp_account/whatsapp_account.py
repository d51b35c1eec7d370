# Copyright (c) 2026, flow_automation developers
# For license information, please see license.txt

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document

from flow_automation.whatsapp import accounts


class WhatsAppAccount(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		access_token: DF.Password
		account_name: DF.Data
		api_version: DF.Data | None
		app_secret: DF.Password | None
		base_url: DF.Data | None
		default_country: DF.Data | None
		display_phone_number: DF.Data | None
		download_media: DF.Check
		enabled: DF.Check
		is_default: DF.Check
		last_template_sync: DF.Datetime | None
		messages_per_second: DF.Int
		opt_in_keywords: DF.SmallText | None
		opt_in_reply: DF.SmallText | None
		opt_out_keywords: DF.SmallText | None
		opt_out_reply: DF.SmallText | None
		phone_number_id: DF.Data
		recipient_gap_seconds: DF.Float
		verify_token: DF.Data | None
		waba_id: DF.Data | None
		webhook_url: DF.SmallText | None

	# end: auto-generated types
	def validate(self) -> None:
		self.validate_numbers()
		self.set_verify_token()
		self.set_first_default()

	def on_update(self) -> None:
		self.unset_other_defaults()
		accounts.clear_account_cache()

	def on_trash(self) -> None:
		accounts.clear_account_cache()

	@property
	def webhook_url(self) -> str:
		return frappe.utils.get_url("/api/method/flow_automation.whatsapp.api.webhook")

	def validate_numbers(self) -> None:
		self.phone_number_id = (self.phone_number_id or "").strip()
		if not self.phone_number_id.isdigit():
			frappe.throw(
				_("Phone Number ID is the numeric id Meta shows for the number, not the number itself")
			)
		if self.default_country:
			self.default_country = self.default_country.strip().upper()
			if len(self.default_country) != 2 or not self.default_country.isalpha():
				frappe.throw(_("Default Country Code is a two-letter ISO code such as IN, DE or US"))
		if (self.messages_per_second or 0) < 1:
			self.messages_per_second = 80

	def set_verify_token(self) -> None:
		if not self.verify_token:
			self.verify_token = frappe.generate_hash(length=24)

	def set_first_default(self) -> None:
		# The first enabled account is the default: a single-number site needs no extra click.
		if self.enabled and not self.is_default:
			others = frappe.db.exists(
				"WhatsApp Account", {"is_default": 1, "enabled": 1, "name": ("!=", self.name or "")}
			)
			if not others:
				self.is_default = 1

	def unset_other_defaults(self) -> None:
		if self.is_default:
			table = frappe.qb.DocType("WhatsApp Account")
			frappe.qb.update(table).set(table.is_default, 0).where(
				(table.name != self.name) & (table.is_default == 1)
			).run()
