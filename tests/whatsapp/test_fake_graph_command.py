"""`flow-automation fake-graph`: Meta's Graph API stand-in as a command, for trying flows locally."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import wa_testkit  # makes the repository importable

from flow_automation.channels.whatsapp import CloudAPIClient

ROOT = Path(wa_testkit.ROOT)


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def test_fake_graph_answers_sends_and_prints_every_request(tmp_path):
	templates = tmp_path / "templates.json"
	templates.write_text(json.dumps({"data": [{"name": "hello_v1", "language": "en", "status": "APPROVED"}]}))
	port = free_port()
	process = subprocess.Popen(
		[
			sys.executable,
			"-m",
			"flow_automation.engine.cli",
			"fake-graph",
			"--port",
			str(port),
			"--templates",
			str(templates),
			"--waba",
			"555",
		],
		cwd=ROOT,
		stdout=subprocess.PIPE,
		stderr=subprocess.PIPE,
		text=True,
	)
	try:
		banner = process.stderr.readline()
		assert f"Fake Graph API on http://127.0.0.1:{port}" in banner
		client = CloudAPIClient("106540352242922", "any-token", base_url=f"http://127.0.0.1:{port}")
		result = client.send_text("+16505551234", "Hello from a flow")
		assert result.wamid.startswith("wamid.")
		printed = json.loads(process.stdout.readline())
		assert printed["method"] == "POST"
		assert printed["path"].endswith("/106540352242922/messages")
		assert printed["body"]["text"]["body"] == "Hello from a flow"
		assert [t["name"] for t in client.list_templates("555")] == ["hello_v1"]
	finally:
		process.terminate()
		process.wait(timeout=10)  # it stops on a signal, without hanging
