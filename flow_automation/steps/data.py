"""The lookup and run_script steps: read documents as the run's user; run a Server Script
through Frappe's safe_exec.

`lookup` reads with the permissions of the template's Run As user, or else of the trigger
document's owner, never as Administrator unless Run As says so. A dry run reads for real
(reads change nothing) and notes that it read.

`run_script` runs only when server scripts are enabled on the site, with commit and rollback
taken away, under a time cap and an output cap. A dry run executes it inside the dry run's
rollback with its outbound calls (HTTP, mail, jobs) recorded instead of made, and only when
the script is the one saved on the template.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import frappe
from frappe.utils import strip_html
from frappe.utils.safe_exec import (
	SERVER_SCRIPT_FILE_PREFIX,
	get_safe_globals,
	is_safe_exec_enabled,
	safe_exec,
)

from flow_automation.engine import (
	Outcome,
	StepError,
	lookup_outcome,
	lookup_request,
	output_too_large,
	script_error_line,
	script_fingerprints,
	script_timeout,
)
from flow_automation.steps.base import StepCall, handles

ADMINISTRATOR = "Administrator"
# Columns every document has, besides its DocType's fields (frappe.model.optional_fields that
# always exist; `_seen` only with track_seen).
EXTRA_COLUMNS = ("_assign", "_user_tags", "_comments", "_liked_by")
# RestrictedPython's compile errors start so.
LINE_PREFIX = re.compile(r"^Line \d+: ")
# What a script may not do from a dry run, because a rollback cannot undo it: these are
# recorded (call.record) and return None.
DRY_RUN_OUTBOUND = (
	"make_get_request",
	"make_post_request",
	"make_put_request",
	"make_patch_request",
	"make_delete_request",
	"sendmail",
	"enqueue",
)


# --- lookup --------------------------------------------------------------------------------
@handles("lookup")
def lookup(call: StepCall) -> Outcome:
	request = lookup_request(call.payload)
	doctype = request["doctype"]
	meta = doctype_meta(doctype)
	one = request["name"] is not None
	if meta.issingle and not one:
		raise StepError(
			f"doctype: {doctype} is a Single DocType: read it by name (its own name)", retryable=False
		)
	check_columns(meta, request, one)
	reader = reader_of(call)
	with reading_as(reader):
		output = read_one(meta, request, reader) if one else read_list(meta, request, reader)
	if call.dry_run:
		read = (
			{"name": request["name"]} if one else {"filters": request["filters"], "limit": request["limit"]}
		)
		found = bool(output.get("doc")) if one else output.get("count")
		call.record("read", doctype=doctype, user=reader, found=found, **read)
	return lookup_outcome(output)


def doctype_meta(doctype: str) -> Any:
	if not doctype or not frappe.db.exists("DocType", doctype):
		raise StepError(f"doctype: DocType {doctype!r} does not exist", retryable=False)
	meta = frappe.get_meta(doctype)
	if meta.istable:
		raise StepError(
			f"doctype: {doctype} is a child table: look up its parent document instead", retryable=False
		)
	return meta


def check_columns(meta: Any, request: Mapping[str, Any], one: bool) -> None:
	"""Every field the lookup names exists: a clear error naming the field, never a SQL error."""
	doctype = meta.name
	columns = set(meta.get_valid_columns()) | set(EXTRA_COLUMNS)
	for i, field in enumerate(request["fields"]):
		if field == "*" or field in columns:
			continue
		if one and meta.has_field(field):
			continue  # a table: its rows come with the document
		if meta.has_field(field):
			raise StepError(
				f"fields/{i}: {field!r} is not a column of {doctype} (a table or layout field): "
				"read the document by name to get a table's rows",
				retryable=False,
			)
		raise StepError(f"fields/{i}: {doctype} has no field {field!r}", retryable=False)
	children = {df.options: frappe.get_meta(df.options) for df in meta.get_table_fields()}
	for pointer, field, filter_doctype in request["filter_fields"]:
		if filter_doctype and filter_doctype != doctype and filter_doctype not in children:
			raise StepError(
				f"{pointer}: {filter_doctype!r} is neither {doctype} nor one of its child tables",
				retryable=False,
			)
		if filter_doctype and filter_doctype != doctype:
			known = field in set(children[filter_doctype].get_valid_columns())
		else:
			known = field in columns or any(field in set(c.get_valid_columns()) for c in children.values())
		if not known:
			raise StepError(f"{pointer}: {filter_doctype or doctype} has no field {field!r}", retryable=False)
	for field in request["order_fields"]:
		if field not in columns:
			raise StepError(f"order_by: {doctype} has no field {field!r} to sort on", retryable=False)


def read_one(meta: Any, request: Mapping[str, Any], reader: str) -> dict[str, Any]:
	doctype, name = meta.name, request["name"]
	if meta.issingle:
		name = doctype
	elif not name or not frappe.db.exists(doctype, name):
		return {"doctype": doctype, "doc": None}
	doc = frappe.get_doc(doctype, name)
	if not doc.has_permission("read"):
		raise StepError(f"name: {reader} may not read {doctype} {name!r}", retryable=False)
	doc.apply_fieldlevel_read_permissions()
	data = as_data(doc.as_dict(convert_dates_to_str=True))
	fields = request["fields"]
	if fields and "*" not in fields:
		data = {key: data.get(key) for key in ("doctype", "name", *fields)}
	return {"doctype": doctype, "doc": data}


def read_list(meta: Any, request: Mapping[str, Any], reader: str) -> dict[str, Any]:
	doctype = meta.name
	query: dict[str, Any] = {
		"filters": request["filters"] or None,
		"fields": request["fields"] or ["name"],
		"limit": request["limit"],
	}
	if request["order_by"]:
		query["order_by"] = request["order_by"]
	try:
		rows = frappe.get_list(doctype, **query)
	except frappe.PermissionError:
		raise StepError(f"doctype: {reader} may not read {doctype} documents", retryable=False)
	except frappe.ValidationError as e:
		raise StepError(f"filters: {strip_html(str(e)) or type(e).__name__}", retryable=False)
	docs = as_data(rows)
	return {"doctype": doctype, "docs": docs, "count": len(docs)}


def as_data(value: Any) -> Any:
	"""Documents and rows as plain JSON data (dates as strings), what templates see."""
	return json.loads(frappe.as_json(value))


def reader_of(call: StepCall) -> str:
	"""Whose permissions a lookup reads with: the template's Run As user, else the trigger
	document's owner. Never Administrator unless Run As names it."""
	run = call.run
	run_as = run.get("run_as")
	# a run stores Administrator when its template had no Run As: explicit only if it still says so
	if run_as and (
		run_as != ADMINISTRATOR or frappe.db.get_value("Flow Template", run.template, "run_as") == run_as
	):
		return run_as
	owner, what = trigger_owner(call)
	if not owner:
		raise StepError(
			"a lookup reads with the permissions of the template's Run As user, or else of the trigger "
			"document's owner; this run has neither: set Run As on the template",
			retryable=False,
		)
	if owner == ADMINISTRATOR:
		raise StepError(
			f"{what} is owned by Administrator, whom a lookup never reads as by default: "
			"set Run As on the template (Administrator too, if that is what you mean)",
			retryable=False,
		)
	if not frappe.db.get_value("User", owner, "enabled"):
		raise StepError(
			f"{what} is owned by {owner}, who is not an enabled user: set Run As on the template",
			retryable=False,
		)
	return owner


def trigger_owner(call: StepCall) -> tuple[str | None, str]:
	"""(owner, which document) of the run's trigger document, or (None, "")."""
	run = call.run
	if run.get("reference_doctype") and run.get("reference_name"):
		owner = frappe.db.get_value(run.reference_doctype, run.reference_name, "owner")
		if owner:
			return owner, f"{run.reference_doctype} {run.reference_name}"
	if not call.dry_run:
		# a Delete trigger: the document is gone, the snapshot the trigger took is not (a dry
		# run's trigger data is the caller's, so it is not trusted for this)
		snapshot = (call.context.get("trigger") or {}).get("doc")
		if isinstance(snapshot, Mapping) and snapshot.get("owner"):
			return snapshot["owner"], f"{snapshot.get('doctype')} {snapshot.get('name')}"
	return None, ""


@contextmanager
def reading_as(user: str) -> Iterator[None]:
	"""Read with `user`'s permissions (permission checks, user permissions, field levels)."""
	previous = frappe.session.user
	if user == previous:
		yield
		return
	form_dict = frappe.local.form_dict  # set_user resets it
	frappe.set_user(user)
	try:
		yield
	finally:
		frappe.set_user(previous)
		frappe.local.form_dict = form_dict


# --- run_script ----------------------------------------------------------------------------
class ScriptTimeout(BaseException):
	"""Raised inside the script at its time cap. Not an Exception, so a script's own
	`except Exception:` does not swallow it."""


@handles("run_script")
def run_script(call: StepCall) -> Any:
	if not is_safe_exec_enabled():
		raise StepError(
			"server scripts are disabled on this site; a System Manager enables them with "
			"`bench set-config -g server_script_enabled 1` (Frappe reads it from common_site_config.json)",
			retryable=False,
		)
	raw = call.step.payload  # never the rendered payload: code is not a template
	source, filename = script_source(raw, call)
	if call.dry_run:
		check_saved(call)
	seconds = script_timeout(call.payload)
	inputs = script_inputs(call.context)
	args = frappe._dict(as_data(call.payload.get("args") or {}))
	extra = dry_run_globals(call) if call.dry_run else {}
	response = frappe._dict(docs=[])
	saved_response = getattr(frappe.local, "response", None)
	saved_form = getattr(frappe.local, "form_dict", None)
	# an API Server Script reads its arguments from form_dict and answers in frappe.response
	frappe.local.response, frappe.local.form_dict = response, args
	started = time.monotonic()
	try:
		with time_cap(seconds):
			exec_globals, _ = safe_exec(
				source,
				{**inputs, **extra},
				restrict_commit_rollback=True,
				script_filename=filename,
			)
	except ScriptTimeout as e:
		line = error_line(e)
		raise StepError(
			f"the script ran longer than its cap of {seconds:g} s and was stopped"
			+ (f" on line {line}" if line else ""),
			retryable=False,
		)
	except Exception as e:
		raise StepError(error_message(e), retryable=isinstance(e, OSError))
	finally:
		frappe.local.response, frappe.local.form_dict = saved_response, saved_form
	elapsed = time.monotonic() - started
	if elapsed > seconds:
		# one long call (a slow query, a big read) cannot be stopped midway: it fails afterwards
		raise StepError(f"the script took {elapsed:.1f} s; its cap is {seconds:g} s", retryable=False)
	# as Frappe's API handler: flags the script set win over frappe.response["message"]
	namespace = exec_globals.get("frappe")
	flags = namespace.get("flags") if isinstance(namespace, Mapping) else None
	result = dict(flags) if isinstance(flags, Mapping) and flags else response.get("message")
	try:
		output = as_data(result)
	except TypeError as e:
		raise StepError(f"the script's result is not JSON data: {e}", retryable=False)
	problem = output_too_large(output, "the script's result")
	if problem:
		raise StepError(problem, retryable=False)
	return Outcome.done(output)


def script_source(raw: Mapping[str, Any], call: StepCall) -> tuple[str, str]:
	"""(source, file name for tracebacks) of the inline code or the named API Server Script."""
	if raw.get("code"):
		return raw["code"], f"{call.run.template} {call.step.id}"
	name = raw.get("script") or ""
	script = frappe.db.get_value("Server Script", name, ["script", "script_type", "disabled"], as_dict=True)
	if not script:
		raise StepError(f"script: Server Script {name!r} does not exist", retryable=False)
	if script.script_type != "API":
		raise StepError(
			f"script: Server Script {name!r} is of type {script.script_type}, not API", retryable=False
		)
	if script.disabled:
		raise StepError(f"script: Server Script {name!r} is disabled", retryable=False)
	return script.script or "", name


def check_saved(call: StepCall) -> None:
	"""A dry run executes only run_script steps as saved on the template (where only a System
	Manager may add or change them), never unsaved code sent along with the dry run."""
	stored = frappe.db.get_value("Flow Template", call.run.template, "definition")
	try:
		steps = json.loads(stored or "{}").get("steps") or []
	except ValueError:
		steps = []
	mine = script_fingerprints([{"kind": call.step.kind, "payload": call.step.payload}])
	if not mine & script_fingerprints(steps):
		raise StepError(
			"a test run executes a run_script step only as saved on the template: save the flow "
			"first (only a System Manager may add or change such a step)",
			retryable=False,
		)


def script_inputs(context: Mapping[str, Any]) -> dict[str, Any]:
	"""The run's context as the script's read-only input: copies (attribute access, as
	frappe._dict), so nothing the script changes reaches the run."""
	data = {key: context.get(key) for key in ("doc", "variables", "steps", "trigger", "contact", "run")}
	return {key: attribute_dicts(value) for key, value in as_data(plain(data)).items()}


def plain(value: Any) -> Any:
	if isinstance(value, Mapping):
		return {str(k): plain(v) for k, v in value.items()}
	if isinstance(value, list | tuple):
		return [plain(v) for v in value]
	if isinstance(value, dt.datetime | dt.date):
		return str(value)
	return value


def attribute_dicts(value: Any) -> Any:
	if isinstance(value, dict):
		return frappe._dict({k: attribute_dicts(v) for k, v in value.items()})
	if isinstance(value, list):
		return [attribute_dicts(v) for v in value]
	return value


def dry_run_globals(call: StepCall) -> dict[str, Any]:
	"""Frappe's script namespace with what a rollback cannot undo recorded instead of done."""
	namespace = get_safe_globals()["frappe"]
	for name in DRY_RUN_OUTBOUND:
		namespace[name] = recorder(call, name)
	return {"frappe": namespace, "FrappeClient": recorder(call, "FrappeClient")}


def recorder(call: StepCall, name: str) -> Callable[..., None]:
	def record(*args: Any, **kwargs: Any) -> None:
		call.record(f"script: {name}", args=as_data(plain(list(args))), kwargs=as_data(plain(kwargs)))

	return record


@contextmanager
def time_cap(seconds: float) -> Iterator[None]:
	"""Stop the script's own Python code once it has run `seconds`: checked between the lines
	of the script (frames compiled from it), so a loop is stopped where it is and Frappe's code
	is never interrupted halfway (a call the script makes finishes first)."""
	deadline = time.monotonic() + seconds

	def in_script(frame: Any, event: str, arg: Any) -> Any:
		if event == "line" and time.monotonic() > deadline:
			raise ScriptTimeout
		return in_script

	def on_call(frame: Any, event: str, arg: Any) -> Any:
		return in_script if frame.f_code.co_filename.startswith(SERVER_SCRIPT_FILE_PREFIX) else None

	previous = sys.gettrace()
	sys.settrace(on_call)
	try:
		yield
	finally:
		sys.settrace(previous)


def error_line(error: BaseException) -> int | None:
	"""The script's line an error came from: its compile errors' line, else the last frame of
	the script in the traceback (an error raised in Frappe code the script called is reported
	on the script's line that called it)."""
	if isinstance(error, SyntaxError) and error.args:
		line = script_error_line(error.args[0])
		if line:
			return line
	line = None
	tb = error.__traceback__
	while tb is not None:
		if tb.tb_frame.f_code.co_filename.startswith(SERVER_SCRIPT_FILE_PREFIX):
			line = tb.tb_lineno
		tb = tb.tb_next
	return line


def error_message(error: BaseException) -> str:
	line = error_line(error)
	where = f"script error on line {line}" if line else "script error"
	if isinstance(error, SyntaxError) and error.args and isinstance(error.args[0], list | tuple):
		# RestrictedPython's compile errors: a list of "Line N: ..." messages
		return f"{where}: " + "; ".join(LINE_PREFIX.sub("", str(m)) for m in error.args[0])
	text = strip_html(str(error))
	return f"{where}: {type(error).__name__}: {text}" if text else f"{where}: {type(error).__name__}"
