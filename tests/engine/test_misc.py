"""Retry policy, PII redaction, and the engine's independence from Frappe."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flow_automation.engine.definition import RetryPolicy
from flow_automation.engine.pii import redact
from flow_automation.engine.retry import backoff_seconds, has_attempts_left

ENGINE = Path(__file__).resolve().parents[2] / "flow_automation" / "engine"


# --- retry policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
	("attempt", "low", "high"), [(1, 30, 60), (2, 60, 120), (3, 120, 240), (4, 240, 480)]
)
def test_backoff_doubles_per_attempt_with_equal_jitter(attempt, low, high):
	policy = RetryPolicy(max_attempts=5, backoff_seconds=60)
	delays = [backoff_seconds(policy, attempt, f"run-{i}") for i in range(50)]
	assert all(low <= d <= high for d in delays)
	# the random half really varies between runs
	assert max(delays) - min(delays) > (high - low) / 4


def test_backoff_is_capped():
	policy = RetryPolicy(max_attempts=25, backoff_seconds=60, max_backoff_seconds=300)
	for attempt in range(1, 26):
		assert backoff_seconds(policy, attempt, "seed") <= 300
	assert backoff_seconds(policy, 20, "seed") >= 150


def test_backoff_is_deterministic_per_seed_and_attempt():
	policy = RetryPolicy(max_attempts=5, backoff_seconds=60)
	assert backoff_seconds(policy, 2, "run-1:send:1") == backoff_seconds(policy, 2, "run-1:send:1")
	assert backoff_seconds(policy, 2, "run-1:send:1") != backoff_seconds(policy, 2, "run-2:send:1")


def test_zero_backoff_retries_immediately():
	assert backoff_seconds(RetryPolicy(max_attempts=3, backoff_seconds=0), 1, "x") == 0


def test_attempts_left():
	policy = RetryPolicy(max_attempts=3)
	assert [has_attempts_left(policy, a) for a in (1, 2, 3)] == [True, True, False]
	assert has_attempts_left(RetryPolicy(), 1) is False  # one attempt by default


# --- redaction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
	("text", "hidden", "kept"),
	[
		("+16505551234", "6505551", "1234"),
		("call +91 98765 43210 today", "98765", "3210"),
		("whatsapp 0049 151 2345 6789", "2345", "6789"),
		("mail john.doe@example.com now", "john.doe", "@example.com"),
		("Authorization: Bearer abcdef1234567890XYZ", "abcdef1234567890XYZ", "Bearer"),
	],
)
def test_pii_in_text_is_masked(text, hidden, kept):
	masked, changed = redact(text)
	assert changed is True
	assert hidden not in masked
	assert kept in masked


def test_secret_named_keys_are_masked_anywhere_in_the_structure():
	value = {
		"headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "k-123"},
		"body": {"password": "hunter2", "access_token": "EAAG...", "otp": "123456", "name": "QTN-1"},
		"rows": [{"app_secret": "s3cr3t"}],
		"token": None,
	}
	masked, changed = redact(value)
	assert changed is True
	assert masked["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
	assert masked["body"] == {"password": "***", "access_token": "***", "otp": "***", "name": "QTN-1"}
	assert masked["rows"] == [{"app_secret": "***"}]
	assert masked["token"] is None  # nothing to hide
	assert value["body"]["password"] == "hunter2"  # the input is not modified


@pytest.mark.parametrize(
	"value",
	[
		"2024-01-15",
		"2024-01-15 10:30:00",
		"2024-01-15T10:30:00",
		"Total 1,234.50 INR",
		"12,34,567.00",
		"qty 12",
		1234567.89,
		9876543210,
		{"grand_total": 1234567.89, "posting_date": "2024-01-15", "qty": 3},
		["2024-01-15", 100],
	],
)
def test_dates_and_amounts_are_untouched(value):
	masked, changed = redact(value)
	assert masked == value
	assert changed is False


@pytest.mark.parametrize("value", ["Due 15-01-2024", "15.01.2024", "Grand total: 1234567.89"])
def test_day_first_dates_and_large_amounts_are_untouched(value):
	masked, changed = redact(value)
	assert masked == value
	assert changed is False


def test_document_names_are_untouched():
	masked, changed = redact({"name": "SINV-2024-00012", "body": "Invoice SINV-2024-00012 is due"})
	assert masked == {"name": "SINV-2024-00012", "body": "Invoice SINV-2024-00012 is due"}
	assert changed is False


def test_redact_reports_no_change_for_clean_data():
	assert redact({"status": "Open", "items": [{"qty": 2}]}) == (
		{"status": "Open", "items": [{"qty": 2}]},
		False,
	)


# --- architecture ------------------------------------------------------------------------


def frappe_imports(path: Path) -> list[str]:
	found = []
	for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
		if isinstance(node, ast.Import):
			found += [a.name for a in node.names if a.name == "frappe" or a.name.startswith("frappe.")]
		elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
			if node.module == "frappe" or node.module.startswith("frappe."):
				found.append(node.module)
		elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
			args = [a.value for a in node.args if isinstance(a, ast.Constant)]
			found += [a for a in args if isinstance(a, str) and a.split(".")[0] == "frappe"]
	return found


def test_engine_modules_never_import_frappe():
	modules = sorted(ENGINE.rglob("*.py"))
	assert len(modules) >= 10
	offenders = {str(p.relative_to(ENGINE)): frappe_imports(p) for p in modules if frappe_imports(p)}
	assert offenders == {}


def test_frappe_import_detector_catches_every_form(tmp_path):
	sample = tmp_path / "sample.py"
	sample.write_text(
		"import frappe\nfrom frappe.utils import now\nimport frappe.model.document as d\n"
		"def f():\n\tfrom frappe import _\n\t__import__('frappe.utils')\nimport frappeish\n"
	)
	assert frappe_imports(sample) == [
		"frappe",
		"frappe.utils",
		"frappe.model.document",
		"frappe",
		"frappe.utils",
	]
