"""The channel package is Frappe-free: no module imports frappe, and it imports without it."""

from __future__ import annotations

import ast
import subprocess
import sys

from wa_testkit import ROOT

CHANNELS = ROOT / "flow_automation" / "channels"


def imported_modules(source: str) -> set[str]:
	modules: set[str] = set()
	for node in ast.walk(ast.parse(source)):
		if isinstance(node, ast.Import):
			modules.update(alias.name for alias in node.names)
		elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
			modules.add(node.module)
		elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
			"__import__",
			"import_module",
		):
			modules.update(
				arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
			)
	return modules


def test_no_module_under_channels_imports_frappe():
	files = sorted(CHANNELS.rglob("*.py"))
	assert len(files) >= 9
	offenders = {
		str(path.relative_to(ROOT)): sorted(
			m for m in imported_modules(path.read_text()) if m.split(".")[0] == "frappe"
		)
		for path in files
	}
	assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_scanner_would_catch_it():
	assert "frappe" in imported_modules("import frappe")
	assert "frappe.utils" in imported_modules("from frappe.utils import now")
	assert "frappe" in imported_modules("importlib.import_module('frappe')")


def test_package_imports_with_frappe_unavailable():
	code = (
		"import sys; sys.modules['frappe'] = None\n"
		"import flow_automation.channels.whatsapp as w\n"
		"assert w.CloudAPIClient and w.parse_webhook and w.FakeGraphAPI\n"
		"assert not any(name == 'frappe' or name.startswith('frappe.') for name, m in sys.modules.items() if m)\n"
	)
	subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
