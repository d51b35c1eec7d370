"""The architecture, checked on every run of the test command (no Frappe needed).

- `lint-imports` keeps the contracts in pyproject.toml: the Frappe layer imports one way,
  the engine and the channels never import Frappe, only the engine's and the runtime's
  public surfaces are imported from outside them, entry points and step handlers stay
  independent.
- No import cycle among the app's modules, counting imports inside functions.
- No path of one machine in code or tests; production code never branches on Frappe's
  test flag (outside the one helper that passes Frappe's own convention on).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flow_automation"


@pytest.fixture(scope="module")
def graph():
	sys.path.insert(0, str(ROOT))
	try:
		return grimp.build_graph("flow_automation", cache_dir=None)
	finally:
		sys.path.remove(str(ROOT))


def test_import_contracts_are_kept():
	lint_imports = Path(sys.executable).with_name("lint-imports")
	result = subprocess.run(
		[str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
	)
	assert result.returncode == 0, result.stdout + result.stderr
	assert "0 broken" in result.stdout


def import_cycles(graph) -> list[list[str]]:
	"""Strongly connected components of more than one module (Tarjan, iterative)."""
	index: dict[str, int] = {}
	low: dict[str, int] = {}
	on_stack: set[str] = set()
	stack: list[str] = []
	cycles = []
	counter = 0
	for root in sorted(graph.modules):
		if root in index:
			continue
		work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
		index[root] = low[root] = counter
		counter += 1
		stack.append(root)
		on_stack.add(root)
		while work:
			node, children = work[-1]
			for child in children:
				if child not in index:
					index[child] = low[child] = counter
					counter += 1
					stack.append(child)
					on_stack.add(child)
					work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
					break
				if child in on_stack:
					low[node] = min(low[node], index[child])
			else:
				work.pop()
				if work:
					low[work[-1][0]] = min(low[work[-1][0]], low[node])
				if low[node] == index[node]:
					component = []
					while True:
						member = stack.pop()
						on_stack.discard(member)
						component.append(member)
						if member == node:
							break
					if len(component) > 1:
						cycles.append(sorted(component))
	return cycles


def test_no_import_cycles_among_the_apps_modules(graph):
	assert len(graph.modules) > 100
	assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function():
	class Graph:
		def __init__(self):
			self.modules = {"a", "b", "c"}
			self.edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}  # c imports a inside a function, say

		def find_modules_directly_imported_by(self, module):
			return self.edges.get(module, set())

	assert import_cycles(Graph()) == [["a", "b", "c"]]


def source_files(*folders: str, suffixes=(".py", ".js", ".sh")) -> list[Path]:
	return [
		path
		for folder in folders
		for path in (ROOT / folder).rglob("*")
		if path.suffix in suffixes and "__pycache__" not in path.parts
	]


def test_no_path_of_one_machine_in_code_or_tests():
	machine_path = re.compile(r"""["'](/[A-Za-z0-9_.-]+)+/(shared|frappe-bench)(/|["'])""")
	offenders = [
		f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
		for path in source_files("flow_automation", "tests", "scripts", "benchmarks")
		for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
		if machine_path.search(line)
	]
	assert offenders == []


def test_production_code_never_branches_on_the_test_flag():
	readers = sorted(
		str(path.relative_to(ROOT))
		for path in source_files("flow_automation", suffixes=(".py",))
		if "flags.in_test" in path.read_text()
		and "/tests/" not in str(path)
		and not path.name.startswith("test_")
	)
	assert readers == ["flow_automation/transaction.py"]
