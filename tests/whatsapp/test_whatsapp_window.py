"""The 24-hour customer service window and per-type media size caps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flow_automation.channels.whatsapp import (
	check_media_size,
	needs_open_window,
	template_message,
	text_message,
	window_open,
	window_problem,
)

NOW = 1_749_416_383
HOUR = 3600


def test_window_open_for_24_hours():
	assert window_open(NOW - 23 * HOUR, NOW)
	assert window_open(NOW - (24 * HOUR - 1), NOW)
	assert not window_open(NOW - 24 * HOUR, NOW)
	assert not window_open(None, NOW)


def test_window_with_datetimes():
	now = datetime(2025, 6, 8, 12, 0)
	assert window_open(now - timedelta(hours=5), now)  # naive, as Frappe stores them
	aware = now.replace(tzinfo=timezone.utc)
	assert not window_open(aware - timedelta(days=2), aware)
	assert window_open(aware.timestamp() - 60, aware)  # mixed kinds


def test_only_templates_may_be_sent_outside_the_window():
	text = text_message("+16505551234", "hi")
	template = template_message("+16505551234", "hello_world", "en_US")
	assert needs_open_window(text) and not needs_open_window(template)
	assert window_problem(template, None, NOW) is None
	assert window_problem(text, NOW - HOUR, NOW) is None
	problem = window_problem(text, NOW - 30 * HOUR, NOW)
	assert "30 hours ago" in problem and "template" in problem
	assert "never written" in window_problem("interactive", None, NOW)


def test_media_size_caps():
	assert check_media_size("image", 5 * 1024 * 1024) == []
	(problem,) = check_media_size("image", 5 * 1024 * 1024 + 1)
	assert problem.field == "/media" and problem.limit == 5 * 1024 * 1024
	assert "at most 5 MB" in problem.message
	assert check_media_size("document", 99 * 1024 * 1024) == []
	assert check_media_size("unknown", 10**12) == []
