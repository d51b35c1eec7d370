"""Dry runs: walk a flow with time fast-forwarded and record what every step would do.

`simulate` drives `planner.advance` with a host. The CLI uses `RecordingHost` (nothing
leaves the process); the Frappe adapter passes its own host in dry-run mode, which
executes document steps for real inside a savepoint and records outbound calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flow_automation.engine.data_kinds import simulated_lookup
from flow_automation.engine.definition import Definition, Step
from flow_automation.engine.fanout_kinds import fan_out, simulated_outcome
from flow_automation.engine.outcome import Outcome
from flow_automation.engine.output_kinds import pdf_file_name
from flow_automation.engine.planner import (
	FINISHED_RUN_STATUSES,
	GATE,
	SCHEDULED,
	SKIPPED,
	SUB_FLOW,
	WAITING_STATUS,
	AdvanceResult,
	Event,
	Host,
	advance,
)
from flow_automation.engine.render import format_datetime
from flow_automation.engine.whatsapp_kinds import ask_wait, send_mode

MAX_SIMULATION_ROUNDS = 2_000


@dataclass
class TimelineEntry:
	at: dt.datetime
	step_id: str
	kind: str
	action: str  # executed | waiting | resumed | scheduled | skipped | failed
	status: str = ""
	payload: Any = None
	output: Any = None
	branch: str | None = None
	error: str | None = None
	note: str = ""

	def as_dict(self) -> dict[str, Any]:
		return {
			"at": format_datetime(self.at),
			"step": self.step_id,
			"kind": self.kind,
			"action": self.action,
			"status": self.status,
			"payload": self.payload,
			"output": self.output,
			"branch": self.branch,
			"error": self.error,
			"note": self.note,
		}


@dataclass
class SimulationResult:
	status: str
	started_at: dt.datetime
	ended_at: dt.datetime
	timeline: list[TimelineEntry] = field(default_factory=list)
	variables: dict[str, Any] = field(default_factory=dict)
	step_state: dict[str, Any] = field(default_factory=dict)
	error: str | None = None
	calls: list[dict[str, Any]] = field(default_factory=list)

	def as_dict(self) -> dict[str, Any]:
		return {
			"status": self.status,
			"started_at": format_datetime(self.started_at),
			"ended_at": format_datetime(self.ended_at),
			"error": self.error,
			"variables": self.variables,
			"timeline": [entry.as_dict() for entry in self.timeline],
			"calls": self.calls,
		}


class RecordingHost:
	"""A host that performs nothing: it records each call and answers plausibly."""

	def __init__(self, doc: Mapping[str, Any] | None = None):
		self.doc = dict(doc or {})
		self.calls: list[dict[str, Any]] = []
		self.counter = 0

	def execute(
		self, step: Step, payload: Mapping[str, Any], context: Mapping[str, Any], attempt: int
	) -> Outcome:
		self.counter += 1
		self.calls.append({"step": step.id, "kind": step.kind, "attempt": attempt, "payload": payload})
		handler = getattr(self, f"_{step.kind}", None)
		if handler is None:
			return Outcome.done({"simulated": True})
		return handler(step, payload, context)

	def reload_document(self) -> Mapping[str, Any] | None:
		return self.doc

	def perform(self, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]) -> None:
		self.calls.append({"step": step.id, "kind": step.kind, "effect": dict(effect)})

	# plausible outputs per kind
	def _create_document(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		return Outcome.done(
			{"doctype": payload["doctype"], "name": f"new-{payload['doctype'].lower()}-{self.counter}"}
		)

	def _update_document(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		doc = context.get("doc") or {}
		doctype = payload.get("doctype") or doc.get("doctype")
		name = payload.get("name") or doc.get("name")
		return Outcome.done(
			{"doctype": doctype, "name": name, "changed": sorted(payload.get("fields") or {})}
		)

	def _assign(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		return Outcome.done({"assigned_to": list(payload.get("assign_to") or [])})

	def _notify(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		return Outcome.done(
			{"channel": payload.get("channel") or "email", "recipients": list(payload.get("to") or [])}
		)

	def _webhook(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		return Outcome.done({"status_code": 200, "body": None, "simulated": True})

	def _lookup(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		output, branch = simulated_lookup(payload, self.counter)
		return Outcome.done(output, branch=branch)

	def _generate_pdf(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		# where a real run would keep the file, so later steps' attachments render
		doc = context.get("doc") or {}
		doctype = payload.get("doctype") or doc.get("doctype") or "Document"
		name = payload.get("name") or doc.get("name") or f"simulated-{self.counter}"
		file_name = pdf_file_name(payload, name)
		return Outcome.done(
			{
				"simulated": True,
				"name": f"simulated-file-{self.counter}",
				"file_url": f"/private/files/{file_name}",
				"file_name": file_name,
				"attached_to_doctype": doctype,
				"attached_to_name": name,
				"print_format": payload.get("print_format") or "Standard",
			}
		)

	def _start_flow(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		run = f"simulated-run-{self.counter}"
		if payload.get("wait"):
			return Outcome.waiting(SUB_FLOW, output={"run": run}, run=run, template=payload["template"])
		return Outcome.done({"run": run, "status": "Started"})

	def _for_each(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		# the real list and its checks; every child started (and, with wait, completed)
		return simulated_outcome(fan_out(payload, context))

	def _send_whatsapp(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		return Outcome.done(
			{
				"simulated": True,
				"to": payload.get("to"),
				"mode": send_mode(payload),
				"wamid": f"wamid.SIMULATED.{self.counter}",
				"status": "sent",
			}
		)

	def _ask(self, step: Step, payload: Mapping, context: Mapping) -> Outcome:
		now = context.get("now") or dt.datetime(2000, 1, 1)
		wamid = f"wamid.SIMULATED.{self.counter}"
		return ask_wait(
			payload, now, to=str(payload.get("to") or ""), wamid=wamid, output={"simulated": True}
		)


def simulate(
	definition: Definition,
	*,
	host: Host | None = None,
	doc: Mapping[str, Any] | None = None,
	variables: Mapping[str, Any] | None = None,
	answers: Mapping[str, Any] | None = None,
	trigger: Mapping[str, Any] | None = None,
	contact: Mapping[str, Any] | None = None,
	start: dt.datetime | None = None,
	seed: str = "simulation",
	extra_context: Mapping[str, Any] | None = None,
	time_zone: str | None = None,
) -> SimulationResult:
	"""Run the flow to its end with time fast-forwarded from `start`.

	`answers` maps a step id to what completes it when it waits: a manual/webhook step's
	result, an `ask` step's reply (a list gives successive replies), a sub-flow's outcome
	(default: the child completes). A waiting step without an answer waits for its timeout,
	or — with none — leaves the run Waiting at the end. `extra_context` adds names the
	templates may use besides `doc`, `trigger` and `contact` (a host's `run`, `linked`, ...);
	without a `run`, the run is named `seed` (what a split step hashes). `time_zone` is the
	site's, in which `start` and every time of the trace are read (quiet hours; default UTC).
	"""
	start = (start or dt.datetime(2000, 1, 1)).replace(microsecond=0)
	host = host or RecordingHost(doc)
	answers = {k: (list(v) if isinstance(v, list) else [v]) for k, v in (answers or {}).items()}
	context = {
		"run": {"name": seed},
		**dict(extra_context or {}),
		"doc": dict(doc or {}),
		"trigger": dict(trigger or {}),
		"contact": dict(contact or {}),
	}
	if time_zone:
		context["site"] = {**dict(context.get("site") or {}), "time_zone": time_zone}
	state: dict[str, Any] = {}
	current_vars = {**dict(definition.variables), **dict(variables or {})}
	now = start
	result = SimulationResult(status="Running", started_at=start, ended_at=start)
	events: list[Event] = []
	for _ in range(MAX_SIMULATION_ROUNDS):
		advanced = advance(definition, state, current_vars, context, now, host, events=events, seed=seed)
		_record(result, definition, state, advanced, now)
		state, current_vars = advanced.step_state, advanced.variables
		result.status, result.error = advanced.status, advanced.error
		if advanced.status in FINISHED_RUN_STATUSES:
			break
		events = _answer_waiting_steps(definition, state, answers)
		if events:
			continue
		due = advanced.next_due
		if due is None:
			break
		now = max(due, now)
	result.ended_at = now
	result.variables = current_vars
	result.step_state = state
	result.calls = list(getattr(host, "calls", []))
	return result


def _answer_waiting_steps(
	definition: Definition, state: Mapping[str, Any], answers: dict[str, list]
) -> list[Event]:
	events = []
	for step_id, entry in state.items():
		if entry.get("status") != WAITING_STATUS:
			continue
		wait = entry.get("wait") or {}
		if answers.get(step_id):
			value = answers[step_id].pop(0)
			events.append(Event(step_id, "reply" if wait.get("type") == "reply" else "complete", value))
		elif wait.get("type") == SUB_FLOW:
			events.append(Event(step_id, "complete", {"status": "Completed", "run": wait.get("run")}))
	return events


def _record(
	result: SimulationResult,
	definition: Definition,
	before: Mapping[str, Any],
	advanced: AdvanceResult,
	now: dt.datetime,
) -> None:
	for attempt in advanced.attempts:
		action = {"Success": "executed", "Failed": "failed", "Waiting": "waiting", "Resumed": "resumed"}[
			attempt.status
		]
		note = f"retry at {format_datetime(attempt.retry_at)}" if attempt.retry_at else ""
		result.timeline.append(
			TimelineEntry(
				at=now,
				step_id=attempt.step_id,
				kind=attempt.kind,
				action=action,
				status=attempt.status,
				payload=attempt.input,
				output=attempt.output,
				branch=attempt.branch,
				error=attempt.error,
				note=note,
			)
		)
	for step_id, entry in advanced.step_state.items():
		old_entry = before.get(step_id) or {}
		old = old_entry.get("status")
		new = entry.get("status")
		# a step held for quiet hours when it came due stays scheduled, for a new time
		rescheduled = new == SCHEDULED and entry.get("due_at") != old_entry.get("due_at")
		if new == old and not rescheduled:
			continue
		step = definition.step(step_id)
		if new == SKIPPED:
			result.timeline.append(
				TimelineEntry(now, step_id, step.kind, "skipped", note=entry.get("reason", ""))
			)
		elif new == SCHEDULED and entry.get("scheduled_for") != "retry":
			result.timeline.append(
				TimelineEntry(
					now,
					step_id,
					step.kind,
					"scheduled",
					note=f"due {entry.get('due_at')} ({entry.get('scheduled_for')})",
				)
			)
		elif new == WAITING_STATUS and (entry.get("wait") or {}).get("type") == GATE:
			result.timeline.append(
				TimelineEntry(
					now,
					step_id,
					step.kind,
					"waiting",
					note=f"waits for {(entry['wait']).get('trigger')} completion",
				)
			)
