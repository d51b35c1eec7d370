"""Bench commands: `bench --site S flow-automation <command>`.

The bench CLI imports every app's commands at start-up, before any site is chosen: each
command imports what it needs when it runs, so `bench` stays quick.
"""

from __future__ import annotations

import json

import click
import frappe
from frappe.commands import get_site, pass_context
from frappe.utils import strip_html


def _connect(context) -> None:
	frappe.init(site=get_site(context))
	frappe.connect()


@click.group("flow-automation")
def flow_automation() -> None:
	"""Flow Automation: seed templates, fire due steps, inspect and dry-run flows."""


@flow_automation.command("seed-templates")
@click.option("--path", help="folder of flow JSON files (default: the app's fixtures/)")
@pass_context
def seed_templates(context, path=None):
	"""Load flow files as templates (idempotent): the app's system templates, or --path's.

	Templates loaded this way are system templates (they cannot be deleted, only disabled or
	duplicated) unless the file says "is_system": false."""
	from flow_automation.portable import seed_templates as seed

	_connect(context)
	try:
		for name, action in seed(path):
			click.echo(f"{name}: {action}")
		frappe.db.commit()
	finally:
		frappe.destroy()


@flow_automation.command("run-due")
@pass_context
def run_due(context):
	"""Fire every due delayed step now, in this process."""
	from flow_automation.scheduler import run_due as fire

	_connect(context)
	try:
		count = fire(inline=True)
		frappe.db.commit()
		click.echo(f"fired {count} due row(s)")
	finally:
		frappe.destroy()


@flow_automation.command("inspect")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON")
@pass_context
def inspect(context, run, as_json=False):
	"""Show a run: status, every step with its state, attempts and errors."""
	from flow_automation.runtime import run_timeline

	_connect(context)
	try:
		if not frappe.db.exists("Flow Run", run):
			raise click.ClickException(f"Flow Run {run} does not exist")
		doc = frappe.get_doc("Flow Run", run)
		timeline = run_timeline(doc)
		if as_json:
			click.echo(json.dumps({"run": doc.as_dict(), "steps": timeline}, indent=1, default=str))
			return
		click.echo(f"Run {doc.name}: {doc.template} v{doc.version} — {doc.status}")
		if doc.reference_doctype:
			click.echo(f"  document: {doc.reference_doctype} {doc.reference_name}")
		click.echo(
			f"  started {doc.started_at or '-'}  completed {doc.completed_at or '-'}  next due {doc.next_due_at or '-'}"
		)
		if doc.error:
			click.echo(f"  error: {doc.error}")
		for step in timeline:
			extra = []
			if step["branch"]:
				extra.append(f"branch {step['branch']}")
			if step["due_at"]:
				extra.append(f"due {step['due_at']}")
			if step["reason"]:
				extra.append(step["reason"])
			click.echo(f"  {step['id']:<20} {step['kind']:<16} {step['status']:<10} {'; '.join(extra)}")
			for attempt in step["attempts"]:
				line = f"      #{attempt.attempt} {attempt.status:<8} {attempt.started_at} {attempt.duration_ms or 0:.1f} ms"
				if attempt.error:
					line += f"  {attempt.error.splitlines()[0][:160]}"
				click.echo(line)
	finally:
		frappe.destroy()


@flow_automation.command("simulate")
@click.argument("template")
@click.option("--doc", "doc", help="the trigger document as DOCTYPE/NAME")
@click.option("--variables", help="run variables as JSON")
@click.option("--answers", help="answers for waiting steps as JSON")
@click.option("--json", "as_json", is_flag=True, help="print the trace as JSON")
@pass_context
def simulate(context, template, doc=None, variables=None, answers=None, as_json=False):
	"""Dry-run TEMPLATE against a real document; everything is rolled back."""
	from flow_automation.runtime import simulate_template

	_connect(context)
	try:
		reference_doctype = reference_name = None
		if doc:
			if "/" not in doc:
				raise click.ClickException("--doc takes DOCTYPE/NAME, e.g. --doc ToDo/abc123")
			reference_doctype, reference_name = doc.split("/", 1)
		frappe.set_user("Administrator")
		try:
			result = simulate_template(
				template,
				reference_doctype=reference_doctype,
				reference_name=reference_name,
				variables=json.loads(variables) if variables else None,
				answers=json.loads(answers) if answers else None,
			)
		except (frappe.ValidationError, frappe.DoesNotExistError) as e:
			raise click.ClickException(strip_html(str(e)))
		frappe.db.rollback()
		if as_json:
			click.echo(json.dumps(result.as_dict(), indent=1, default=str))
			return
		click.echo(f"Dry run of {template}: {result.status}")
		for entry in result.timeline:
			detail = (
				entry.note or json.dumps(entry.payload, default=str)[:160] if entry.payload else entry.note
			)
			branch = f" → {entry.branch}" if entry.branch else ""
			error = f"  ERROR {entry.error}" if entry.error else ""
			click.echo(
				f"  {entry.at}  {entry.step_id:<20} {entry.kind:<16} {entry.action:<9}{branch} {detail or ''}{error}"
			)
		for call in result.calls:
			click.echo(f"  recorded: {json.dumps(call, default=str)[:200]}")
		if result.error:
			click.echo(f"Error: {result.error}")
	finally:
		frappe.destroy()


@flow_automation.command("purge")
@click.option(
	"--days", type=int, required=True, help="delete finished runs, logs and done pending rows older than this"
)
@pass_context
def purge(context, days):
	"""Delete old step logs, finished runs (with their logs) and finished pending rows."""
	from flow_automation.flow_automation.doctype.flow_run.flow_run import FlowRun
	from flow_automation.flow_automation.doctype.flow_step_log.flow_step_log import FlowStepLog
	from flow_automation.flow_automation.doctype.flow_step_pending.flow_step_pending import FlowStepPending

	if days < 1:
		raise click.BadParameter("--days must be at least 1")
	_connect(context)
	try:
		before = {dt: frappe.db.count(dt) for dt in ("Flow Run", "Flow Step Log", "Flow Step Pending")}
		FlowStepLog.clear_old_logs(days)
		FlowRun.clear_old_logs(days)
		FlowStepPending.clear_old_logs(days)
		frappe.db.commit()
		for doctype, count in before.items():
			click.echo(f"{doctype}: deleted {count - frappe.db.count(doctype)}")
	finally:
		frappe.destroy()


@flow_automation.group("whatsapp-templates")
def whatsapp_templates() -> None:
	"""WhatsApp message templates: sync from Meta, preview a sync, or load a JSON file."""


def _print_template_results(results: dict, verb: str) -> None:
	for account, result in results.items():
		click.echo(
			f"{account}: {result['created']} {verb}created, {result['updated']} {verb}updated, "
			f"{result['unchanged']} unchanged, {result['deleted']} {verb}marked DELETED"
		)
		for action, names in result["changes"].items():
			for name in names:
				click.echo(f"  {action}: {name}")


@whatsapp_templates.command("sync")
@click.option("--account", help="WhatsApp Account (default: every enabled one with a WABA id)")
@pass_context
def whatsapp_templates_sync(context, account=None):
	"""Fetch every template from Meta and update WhatsApp Template."""
	from flow_automation.whatsapp import templates

	_connect(context)
	try:
		_print_template_results(templates.sync(account), "")
		frappe.db.commit()
	finally:
		frappe.destroy()


@whatsapp_templates.command("dry-run")
@click.option("--account", help="WhatsApp Account (default: every enabled one with a WABA id)")
@pass_context
def whatsapp_templates_dry_run(context, account=None):
	"""Show what a sync would change, without writing anything."""
	from flow_automation.whatsapp import templates

	_connect(context)
	try:
		_print_template_results(templates.sync(account, dry_run=True), "would be ")
	finally:
		frappe.destroy()


@whatsapp_templates.command("upsert")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--account", required=True, help="WhatsApp Account the templates belong to")
@pass_context
def whatsapp_templates_upsert(context, path, account):
	"""Create or update templates from a JSON file in the Graph API's shape (no call to Meta)."""
	from flow_automation.whatsapp import templates

	with open(path, encoding="utf-8") as fh:
		data = json.load(fh)
	_connect(context)
	try:
		_print_template_results(templates.upsert(account, data), "")
		frappe.db.commit()
	finally:
		frappe.destroy()


commands = [flow_automation]
