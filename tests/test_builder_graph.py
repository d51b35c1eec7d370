"""The Flow Builder's graph model (public/js/flow_builder/graph.js), under Node's test runner.

It runs against the real step catalog (each kind's describe(), as the page receives it),
and every definition its edits produce must pass the engine's own validation: the canvas
never hands the server a flow the engine would refuse.

Needs node (18+) and the app's node_modules (`yarn install`, which the test command runs);
without them the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from shared_examples import PROJECT_ROOT

from flow_automation.engine import all_kinds, validate_definition

NODE = shutil.which("node")
DAGRE = PROJECT_ROOT / "node_modules" / "@dagrejs" / "dagre"

pytestmark = pytest.mark.skipif(
	not NODE or not DAGRE.is_dir(),
	reason="needs node and the app's node_modules (yarn install in the project root)",
)


@pytest.fixture(scope="module")
def node_run(tmp_path_factory):
	folder = tmp_path_factory.mktemp("graph")
	kinds = folder / "kinds.json"
	kinds.write_text(json.dumps([kind.describe() for kind in all_kinds()]))
	edited = folder / "edited.json"
	result = subprocess.run(
		[NODE, "--experimental-detect-module", "--test", "--test-reporter=tap", "tests/js/"],
		cwd=PROJECT_ROOT,
		env={"PATH": "/usr/bin:/bin", "FLOW_KINDS": str(kinds), "FLOW_EDITED": str(edited)},
		capture_output=True,
		text=True,
		timeout=120,
	)
	return result, json.loads(edited.read_text()) if edited.exists() else {}


def test_graph_model_passes_its_node_tests(node_run):
	result, _ = node_run
	summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
	assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
	assert "# fail 0" in summary, summary
	passed = next(int(line.split()[-1]) for line in summary if line.startswith("# pass"))
	assert passed >= 14, summary


def test_every_edit_yields_a_definition_the_engine_accepts(node_run):
	_, edited = node_run
	assert {"connect", "delete_in_branch", "delete_branching", "insert", "paste", "rename", "big"} <= set(
		edited
	)
	for name, definition in edited.items():
		issues = validate_definition(definition)
		assert not issues, f"{name}: {[str(issue) for issue in issues]}"
