"""Delivery status only moves forward, whatever order Meta's callbacks arrive in."""

from __future__ import annotations

import functools
import itertools

import pytest

from flow_automation.channels.whatsapp import (
	FRAPPE_STATUS,
	STATUSES,
	advance_status,
	from_frappe_status,
	to_frappe_status,
)
from flow_automation.channels.whatsapp.status import is_final, normalize_status


def settle(events, start="queued"):
	return functools.reduce(advance_status, events, start)


@pytest.mark.parametrize(
	("events", "expected"),
	[
		(["sent", "delivered", "read"], "read"),
		(["sent", "delivered"], "delivered"),
		(["sent"], "sent"),
		(["sent", "failed"], "failed"),
		(["sent", "delivered", "failed"], "failed"),
		(["sent", "delivered", "read", "failed"], "failed"),
		(["delivered", "read", "read", "delivered", "sent"], "read"),
	],
)
def test_every_arrival_order_ends_in_the_same_state(events, expected):
	for order in itertools.permutations(events):
		assert settle(order) == expected, order


def test_examples_of_the_rules():
	assert advance_status("read", "delivered") == "read"
	assert advance_status("delivered", "sent") == "delivered"
	assert advance_status("sent", "failed") == "failed"
	assert advance_status("failed", "delivered") == "failed"
	assert advance_status("failed", "sent") == "failed"
	assert advance_status("read", "failed") == "failed"
	assert advance_status("failed", "read") == "failed"


def test_unknown_values():
	assert advance_status("delivered", "deleted") == "delivered"
	assert advance_status("sent", "warning") == "sent"
	assert advance_status(None, "sent") == "sent"
	assert advance_status("", None) == "queued"
	assert advance_status("bogus", "delivered") == "delivered"


def test_frappe_spellings():
	assert advance_status("Delivered", "READ") == "read"
	assert FRAPPE_STATUS == {
		"queued": "Queued",
		"sent": "Sent",
		"delivered": "Delivered",
		"read": "Read",
		"failed": "Failed",
	}
	for status in STATUSES:
		assert from_frappe_status(to_frappe_status(status)) == status
	assert to_frappe_status("nonsense") == "Queued"
	assert normalize_status(" Sent ") == "sent"


def test_is_final():
	assert is_final("failed") and not is_final("read") and not is_final("delivered")
