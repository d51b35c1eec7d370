"""Phone numbers: E.164 in, digits-only wa_id out, the same phone recognised in any spelling."""

from __future__ import annotations

import pytest

from flow_automation.channels.whatsapp import (
	InvalidPhoneNumber,
	from_wa_id,
	normalize_number,
	same_number,
	to_wa_id,
)


@pytest.mark.parametrize(
	("raw", "region", "expected"),
	[
		("+1 650-555-1234", None, "+16505551234"),
		("(650) 555-1234", "US", "+16505551234"),
		("16505551234", None, "+16505551234"),  # wa_id as Meta sends it
		("16505551234", "IN", "+16505551234"),  # not an Indian number: read as international
		("0044 7911 123456", "US", "+447911123456"),  # "00" prefix even where IDD is 011
		("00447911123456", None, "+447911123456"),
		("07911 123456", "GB", "+447911123456"),
		("447911123456", "GB", "+447911123456"),
		("98765 43210", "in", "+919876543210"),
		("919876543210", "IN", "+919876543210"),
		("919876543210", None, "+919876543210"),
		("+49 151 12345678", None, "+4915112345678"),
		("0151 12345678", "DE", "+4915112345678"),
		("11 98765-4321", "BR", "+5511987654321"),
		("5215512345678", None, "+525512345678"),  # Mexican wa_id with the old mobile "1"
		("+15550783881", None, "+15550783881"),  # Meta's test numbers are +1 555
		(" +971 50 123 4567 ", None, "+971501234567"),
		("+86 138 1234 5678", None, "+8613812345678"),
		("138 1234 5678", "CN", "+8613812345678"),
	],
)
def test_normalize_number(raw, region, expected):
	assert normalize_number(raw, region) == expected


@pytest.mark.parametrize(
	("raw", "region"),
	[
		("", None),
		("   ", None),
		("abc", None),
		("+1 650 FLOWERS", None),
		("12", "US"),
		("+", None),
		("6505551234", None),  # national number and no region to read it in
		("+999 1234 5678", None),
		("1+2", None),
		("12345678901234567890", None),
	],
)
def test_garbage_raises_invalid_phone_number_naming_the_input(raw, region):
	with pytest.raises(InvalidPhoneNumber) as info:
		normalize_number(raw, region)
	assert repr(raw) in str(info.value)
	assert isinstance(info.value, ValueError)
	assert info.value.raw == raw


def test_non_string_raises():
	with pytest.raises(InvalidPhoneNumber):
		normalize_number(None)  # type: ignore[arg-type]


def test_wa_id_round_trip():
	assert to_wa_id("+16505551234") == "16505551234"
	assert to_wa_id("16505551234") == "16505551234"
	assert from_wa_id("16505551234") == "+16505551234"
	# A 10-digit wa_id (Singapore) is still international.
	assert from_wa_id("6591234567") == "+6591234567"
	for bad in ("+1 650 555 1234", "", "abc", "+12"):
		with pytest.raises(InvalidPhoneNumber):
			to_wa_id(bad)
	with pytest.raises(InvalidPhoneNumber):
		from_wa_id("0000000")


@pytest.mark.parametrize(
	("a", "b", "region", "same"),
	[
		("+16505551234", "16505551234", None, True),
		("(650) 555-1234", "+1 650 555 1234", "US", True),
		("98765 43210", "919876543210", "IN", True),
		("5215512345678", "+52 55 1234 5678", None, True),  # Mexico: old "1" in wa_ids
		("+5511987654321", "551187654321", None, True),  # Brazil: wa_id without the ninth digit
		("+5491123456789", "+54 11 2345-6789", None, True),  # Argentina: mobile "9"
		("+16505551234", "+16505551235", None, False),
		("+5511987654321", "+5511987654322", None, False),
		("garbage", "garbage", None, False),
	],
)
def test_same_number(a, b, region, same):
	assert same_number(a, b, region) is same
	assert same_number(b, a, region) is same
