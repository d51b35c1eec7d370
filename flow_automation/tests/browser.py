"""A real browser against a real Desk, for the Desk tests: `frappe serve` for the test site
on a free loopback port, and Debian's Chromium driven by Playwright.

Needs Debian's `chromium` and the `playwright` Python package in the bench env (the test
command installs both; never `playwright install`: the browser is the system one). Without
either, `missing_browser_tools()` says why and the test classes skip loudly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

import frappe

CHROMIUM = os.environ.get("FLOW_DESK_UI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
	"--no-sandbox",
	"--disable-gpu",
	"--disable-dev-shm-usage",
	"--disable-background-networking",
	"--disable-component-update",
	"--no-first-run",
]
ADMIN_PASSWORD = os.environ.get("FLOW_DESK_UI_ADMIN_PASSWORD", "admin")
TIMEOUT_MS = 30_000


def missing_browser_tools() -> str | None:
	"""Why the browser test cannot run here, or None."""
	try:
		import playwright.sync_api
	except ImportError:
		return "the Python package `playwright` is not installed in the bench env (env/bin/pip install playwright)"
	if not os.path.exists(CHROMIUM):
		return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
	return None


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


class DeskServer:
	"""`frappe serve` (werkzeug, serves /assets too) for a site on a free loopback port, in a
	process group of its own (stop ends it and anything it started)."""

	def __init__(self, site: str, log_path: str | None = None):
		self.site = site
		self.port = free_port()
		self.url = f"http://127.0.0.1:{self.port}"
		self.process: subprocess.Popen | None = None
		self.log_path = log_path or os.path.join(
			frappe.utils.get_bench_path(), "logs", "test_desk_ui_server.log"
		)

	def start(self) -> None:
		# a site whose setup wizard never ran opens the wizard instead of Desk's pages, with no
		# navbar; what the wizard's end does (frappe.desk.page.setup_wizard): both flags.
		# Frappe's test runner may mark setup complete and leave the home page on the wizard.
		if not frappe.db.get_single_value("System Settings", "setup_complete") or (
			frappe.db.get_default("desktop:home_page") == "setup-wizard"
		):
			frappe.db.set_single_value("System Settings", "setup_complete", 1)
			frappe.db.set_default("desktop:home_page", "workspace")
			frappe.db.commit()
			frappe.clear_cache()
		with open(self.log_path, "w") as log:
			self.process = subprocess.Popen(
				[
					sys.executable,
					"-m",
					"frappe.utils.bench_helper",
					"frappe",
					"--site",
					self.site,
					"serve",
					"--port",
					str(self.port),
					"--noreload",
				],
				cwd=os.path.join(frappe.utils.get_bench_path(), "sites"),
				stdout=log,
				stderr=subprocess.STDOUT,
				start_new_session=True,
			)
		deadline = time.monotonic() + 60
		while time.monotonic() < deadline:
			if self.process.poll() is not None:
				raise RuntimeError(f"frappe serve exited ({self.process.returncode}):\n{self.log_tail()}")
			try:
				with urllib.request.urlopen(f"{self.url}/api/method/ping", timeout=2) as response:
					if response.status == 200:
						return
			except OSError:
				time.sleep(0.3)
		raise RuntimeError(f"frappe serve did not answer within 60 s:\n{self.log_tail()}")

	def log_tail(self) -> str:
		with open(self.log_path, errors="replace") as f:
			return "".join(f.readlines()[-20:])

	def stop(self) -> None:
		if not self.process or self.process.poll() is not None:
			return
		os.killpg(self.process.pid, signal.SIGTERM)
		try:
			self.process.wait(timeout=10)
		except subprocess.TimeoutExpired:
			os.killpg(self.process.pid, signal.SIGKILL)
			self.process.wait(timeout=5)


class Browser:
	"""One Chromium with a logged-in context, against a DeskServer (start / stop)."""

	def __init__(self, server: DeskServer, viewport: dict | None = None):
		from playwright.sync_api import sync_playwright

		self.server = server
		self.playwright = sync_playwright().start()
		try:
			self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
		except Exception:
			self.playwright.stop()
			raise
		self.contexts = []

	def context(self, user: str = "Administrator", password: str = ADMIN_PASSWORD, viewport=None):
		"""A new browser context (its own cookies) logged in as `user`, and its page."""
		context = self.browser.new_context(viewport=viewport or {"width": 1400, "height": 1000})
		context.set_default_timeout(TIMEOUT_MS)
		response = context.request.post(
			f"{self.server.url}/api/method/login", form={"usr": user, "pwd": password}
		)
		assert response.ok, f"login as {user} failed: {response.status} {response.text()}"
		self.contexts.append(context)
		return context, context.new_page()

	def close(self) -> None:
		for context in self.contexts:
			context.close()
		self.browser.close()
		self.playwright.stop()


def skip_without_browser_tools() -> None:
	reason = missing_browser_tools()
	if reason:
		message = f"SKIPPING flow_automation Desk browser test: {reason}"
		print("\n" + "!" * len(message) + f"\n{message}\n" + "!" * len(message), file=sys.stderr)
		raise unittest.SkipTest(message)
