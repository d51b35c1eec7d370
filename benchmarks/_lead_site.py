"""Shared by the site benchmarks: find the bench, re-exec with its Python, connect."""

from __future__ import annotations

import os
import sys

BENCH = os.environ.get("FRAPPE_BENCH", "/opt/frappe-bench")
SITE = os.environ.get("FRAPPE_TEST_SITE", "test_site")


def ensure_bench_python() -> None:
	"""Re-run this script with the bench's interpreter (Frappe lives there)."""
	python = os.path.join(BENCH, "env", "bin", "python")
	# compare environments, not interpreters: venvs share the same python binary
	if os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(BENCH, "env")) and not os.environ.get("FLOW_BENCH_REEXEC"):
		if not os.path.exists(python):
			sys.exit(f"no bench at {BENCH} (set FRAPPE_BENCH)")
		os.environ["FLOW_BENCH_REEXEC"] = "1"
		os.execv(python, [python, *sys.argv])


def connect():
	import frappe

	os.chdir(os.path.join(BENCH, "sites"))  # Frappe writes its logs relative to sites/
	frappe.init(site=SITE, sites_path=".")
	frappe.connect()
	frappe.set_user("Administrator")
	return frappe
