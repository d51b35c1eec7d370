"""`flow-automation`: validate and dry-run flow files without Frappe.

    flow-automation validate FILE...
    flow-automation simulate FILE [--doc JSON] [--variables JSON] [--answers JSON] [--start DATETIME] [--json]
    flow-automation schema          # the JSON schema of a definition
    flow-automation catalog         # the step kinds
    flow-automation fake-graph      # a stand-in for Meta's Graph API on loopback

A FILE holds a bare definition or a template export (`{"template_name", "trigger",
"definition"}`). JSON options take inline JSON or `@path/to/file.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flow_automation.channels.whatsapp import FakeGraphAPI
from flow_automation.engine import catalog
from flow_automation.engine.definition import extract_definition
from flow_automation.engine.render import format_datetime, parse_datetime
from flow_automation.engine.simulator import simulate
from flow_automation.engine.validation import (
	FlowValidationError,
	definition_json_schema,
	parse_definition,
	validate_definition,
)


def _load_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
	try:
		text = Path(path).read_text(encoding="utf-8")
	except OSError as e:
		raise ValueError(f"cannot read {path}: {e.strerror or e}")
	try:
		document = json.loads(text)
	except json.JSONDecodeError as e:
		raise ValueError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
	return extract_definition(document)


def _json_option(value: str | None, name: str) -> Any:
	if value is None:
		return None
	text = value
	if value.startswith("@"):
		try:
			text = Path(value[1:]).read_text(encoding="utf-8")
		except OSError as e:
			raise ValueError(f"--{name}: cannot read {value[1:]}: {e.strerror or e}")
	try:
		return json.loads(text)
	except json.JSONDecodeError as e:
		raise ValueError(f"--{name} is not valid JSON: {e.msg}")


def cmd_validate(args: argparse.Namespace) -> int:
	failed = 0
	for path in args.files:
		try:
			definition, meta = _load_file(path)
		except ValueError as e:
			print(f"{path}: {e}")
			failed += 1
			continue
		issues = validate_definition(definition)
		name = meta.get("template_name") or Path(path).stem
		if issues:
			failed += 1
			print(f"{path}: INVALID ({name}): {len(issues)} problem(s)")
			for issue in issues:
				print(f"  - {issue}")
		else:
			print(f"{path}: valid ({name}, {len(definition.get('steps') or [])} steps)")
	return 1 if failed else 0


def _compact(value: Any, limit: int = 160) -> str:
	if value in (None, {}, []):
		return ""
	text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
	return text if len(text) <= limit else text[: limit - 1] + "…"


def _offset(start: dt.datetime, at: dt.datetime) -> str:
	delta = at - start
	days, seconds = delta.days, delta.seconds
	return f"+{days}d {seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def cmd_simulate(args: argparse.Namespace) -> int:
	try:
		raw, meta = _load_file(args.file)
		doc = _json_option(args.doc, "doc")
		variables = _json_option(args.variables, "variables")
		answers = _json_option(args.answers, "answers")
		trigger = _json_option(args.trigger, "trigger")
		contact = _json_option(args.contact, "contact")
	except ValueError as e:
		print(f"error: {e}", file=sys.stderr)
		return 2
	try:
		definition = parse_definition(raw)
	except FlowValidationError as e:
		print(f"{args.file}: INVALID, cannot simulate:")
		for issue in e.issues:
			print(f"  - {issue}")
		return 1
	start = parse_datetime(args.start) if args.start else dt.datetime.now().replace(microsecond=0)
	if start is None:
		print(f"error: --start {args.start!r} is not a date/time", file=sys.stderr)
		return 2
	if trigger is None and isinstance(meta.get("trigger"), dict):
		trigger = {
			"type": meta["trigger"].get("type"),
			"event": meta["trigger"].get("event_pattern") or meta["trigger"].get("event"),
		}
	result = simulate(
		definition,
		doc=doc,
		variables=variables,
		answers=answers,
		trigger=trigger,
		contact=contact,
		start=start,
	)
	if args.json:
		print(json.dumps(result.as_dict(), indent=1, default=str, ensure_ascii=False))
		return 0 if result.status != "Failed" else 1
	title = meta.get("template_name") or Path(args.file).stem
	print(f"Simulating {title}: {len(definition.steps)} steps, start {format_datetime(start)}")
	width = max(len(s.id) for s in definition.steps)
	for entry in result.timeline:
		detail = entry.note
		if entry.action in ("executed", "waiting", "failed") and entry.payload not in (None, {}):
			detail = _compact(entry.payload)
		if entry.action == "resumed" or (entry.action in ("executed", "failed") and entry.payload is None):
			detail = detail or _compact(entry.output)
		if entry.branch:
			detail = f"→ branch {entry.branch!r}  {detail}"
		if entry.error:
			detail = f"ERROR {entry.error}" + (f"  ({entry.note})" if entry.note else "")
		print(
			f"  {_offset(start, entry.at):>11}  {format_datetime(entry.at)}  {entry.step_id:<{width}}  "
			f"{entry.kind:<15} {entry.action:<9} {detail}".rstrip()
		)
	print(
		f"Final status: {result.status} at {format_datetime(result.ended_at)} ({_offset(start, result.ended_at)})"
	)
	if result.error:
		print(f"Error: {result.error}")
	if result.variables:
		print(f"Variables: {_compact(result.variables, 400)}")
	return 0 if result.status != "Failed" else 1


def cmd_schema(args: argparse.Namespace) -> int:
	print(json.dumps(definition_json_schema(), indent=1))
	return 0


def cmd_catalog(args: argparse.Namespace) -> int:
	for kind in catalog.all_kinds():
		# what a step of this kind offers: its fixed branches and what its payload adds
		parts = [*kind.fixed_branches, *([f"({kind.payload_branches})"] if kind.payload_branches else [])]
		branches = ", ".join(parts) or "-"
		print(f"{kind.name:<16} {kind.label:<18} {kind.group:<13} branches: {branches}")
		print(f"{'':<16} {kind.description}")
	return 0


def cmd_fake_graph(args: argparse.Namespace) -> int:
	"""Serve a stand-in for Meta's Graph API on loopback and print every request it receives."""

	def show(request: Any) -> None:
		body = (
			request.json
			if request.json is not None
			else (request.form or request.body.decode("utf-8", "replace"))
		)
		print(
			json.dumps({"method": request.method, "path": request.path, "body": body}, default=str),
			flush=True,
		)

	graph = FakeGraphAPI(host=args.host, port=args.port, on_request=show)
	if args.templates:
		data = json.loads(Path(args.templates).read_text())
		graph.add_templates(args.waba, list(data.get("data", data) if isinstance(data, dict) else data))
	with graph:
		print(
			f"Fake Graph API on {graph.base_url}: set a WhatsApp Account's Base URL to it. "
			"Sends answer with a wamid; Ctrl+C stops.",
			file=sys.stderr,
			flush=True,
		)
		try:
			while True:
				time.sleep(3600)
		except KeyboardInterrupt:
			return 0


def build_parser() -> argparse.ArgumentParser:
	parser = argparse.ArgumentParser(
		prog="flow-automation", description="Validate and dry-run flow definitions."
	)
	sub = parser.add_subparsers(dest="command", required=True)
	p = sub.add_parser("validate", help="validate flow files; exit 1 if any is invalid")
	p.add_argument("files", nargs="+", metavar="FILE")
	p.set_defaults(func=cmd_validate)
	p = sub.add_parser("simulate", help="dry-run a flow with time fast-forwarded")
	p.add_argument("file", metavar="FILE")
	p.add_argument("--doc", help="the trigger document as JSON (or @file)")
	p.add_argument("--variables", help="run variables as JSON (or @file)")
	p.add_argument("--answers", help='answers for waiting steps, e.g. {"survey": "good"} (or @file)')
	p.add_argument("--trigger", help='trigger data, e.g. {"event": "production_run.assigned"}')
	p.add_argument("--contact", help='contact data, e.g. {"number": "+16505551234"}')
	p.add_argument("--start", help="simulated start time (default: now)")
	p.add_argument("--json", action="store_true", help="print the trace as JSON")
	p.set_defaults(func=cmd_simulate)
	p = sub.add_parser("schema", help="print the JSON schema of a flow definition")
	p.set_defaults(func=cmd_schema)
	p = sub.add_parser("catalog", help="list the step kinds")
	p.set_defaults(func=cmd_catalog)
	p = sub.add_parser(
		"fake-graph", help="serve a stand-in for Meta's Graph API on loopback, printing what it receives"
	)
	p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
	p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
	p.add_argument("--templates", help="message templates to list, as Graph JSON ({data: [...]} or a list)")
	p.add_argument("--waba", default="0", help="the WhatsApp Business Account id those templates belong to")
	p.set_defaults(func=cmd_fake_graph)
	return parser


def main(argv: Sequence[str] | None = None) -> int:
	args = build_parser().parse_args(argv)
	return args.func(args)


if __name__ == "__main__":
	sys.exit(main())
